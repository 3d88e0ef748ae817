//! Registry host grammar: what a runtime sends us (`host`, `host:port`, maybe with a scheme or
//! path) → a validated [`RegistryHost`] → which ACR edition, region and instance name it names.
//!
//! This is the only place that decides whether a host is ACR. Exactly two host shapes are
//! recognised (the domain shapes of Alibaba Cloud's Container Registry documentation):
//! - Enterprise Edition default domains `<name>-registry[-vpc].<region>.cr.aliyuncs.com`;
//! - Personal Edition `registry[-intl][-vpc|-internal].<region>.aliyuncs.com`.
//!
//! Everything else is [`RegistryKind::Custom`]: possibly an EE custom domain, served only when an
//! instance the caller names lists it. Nothing is guessed from suffixes or substrings.

use std::fmt;
use std::net::Ipv6Addr;

use crate::ids::Region;

/// Longest host name (DNS limit, without the trailing dot).
pub const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest input we look at; anything longer is not a registry reference.
const MAX_INPUT_LEN: usize = 2048;
/// The registry Docker uses for references without a registry part.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a registry host was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostErrorKind {
    /// Nothing but (maybe) a scheme or path.
    #[error("empty host")]
    Empty,
    /// Longer than any registry reference we accept.
    #[error("input longer than 2048 characters")]
    TooLong,
    /// Whitespace or control characters anywhere in the input.
    #[error("whitespace or control character in input")]
    Whitespace,
    /// Unicode in the host (look-alike letters); punycode must be used instead.
    #[error("non-ASCII host")]
    NonAscii,
    /// A scheme other than http or https.
    #[error("unsupported scheme (only https:// or http://)")]
    Scheme,
    /// `user:pass@host`.
    #[error("user info (user@host) is not allowed")]
    UserInfo,
    /// `?…` or `#…`.
    #[error("query or fragment is not allowed")]
    QueryOrFragment,
    /// `a..b`, a leading dot or more than one trailing dot.
    #[error("empty label in host")]
    EmptyLabel,
    /// A DNS label over 63 characters.
    #[error("label longer than 63 characters")]
    LabelTooLong,
    /// A host name over 253 characters.
    #[error("host longer than 253 characters")]
    HostTooLong,
    /// A character other than letters, digits, `-`, or a label starting or ending with `-`.
    #[error("invalid character in host label {0:?} (letters, digits and inner '-' only)")]
    BadLabel(String),
    /// Port missing after `:`, not a number, 0, above 65535 or with a leading zero.
    #[error("invalid port {0:?} (1-65535)")]
    BadPort(String),
    /// `[…]` that is not an IPv6 address, or an unbracketed IPv6 address.
    #[error("invalid IPv6 literal (use [addr]:port)")]
    BadIpv6,
}

/// A registry host that could not be parsed; names the input and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid registry host {input:?}: {kind}")]
pub struct HostError {
    /// The rejected input, shortened when long.
    pub input: String,
    /// What is wrong with it.
    pub kind: HostErrorKind,
}

impl HostError {
    fn new(input: &str, kind: HostErrorKind) -> Self {
        let input = if input.chars().count() > 128 {
            input.chars().take(128).chain(std::iter::once('…')).collect()
        } else {
            input.to_owned()
        };
        HostError { input, kind }
    }
}

/// A validated registry host: lowercased, no trailing dot, optional port; IPv6 in brackets.
///
/// `as_str()` is `host[:port]`, the key the docker credential helper and the kubelet use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryHost {
    /// `host[:port]`, normalised.
    key: String,
    /// Length of the host part of `key`.
    host_len: usize,
    port: Option<u16>,
}

/// Which network a Personal Edition domain is reached over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PersonalNetwork {
    /// `registry[-intl].<region>…`: the Internet.
    Public,
    /// `…-vpc.<region>…`: inside a VPC.
    Vpc,
    /// `…-internal.<region>…`: the classic network.
    Internal,
}

/// Which Personal Edition domain form a host uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PersonalVariant {
    /// `registry-intl…` (international site).
    pub intl: bool,
    /// Public, VPC or classic network.
    pub network: PersonalNetwork,
}

/// What a registry host is, as far as the host name alone can tell.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegistryKind {
    /// An EE default domain `<instance_name>-registry[-vpc].<region>.cr.aliyuncs.com`.
    Enterprise {
        /// The instance name (resolve with `ListInstance`).
        instance_name: String,
        /// The instance's region.
        region: Region,
        /// The `-registry-vpc` form.
        vpc: bool,
    },
    /// A Personal Edition domain `registry[-intl][-vpc|-internal].<region>.aliyuncs.com`.
    Personal {
        /// The region of the Personal Edition registry.
        region: Region,
        /// Which domain form.
        variant: PersonalVariant,
    },
    /// Anything else: a candidate EE custom domain, or not ACR at all.
    Custom,
}

// === impl RegistryHost ===

impl RegistryHost {
    /// Parses `host`, `host:port`, `[v6]:port`, with an optional `http(s)://` and path.
    pub fn parse(input: &str) -> Result<RegistryHost, HostError> {
        let err = |kind| HostError::new(input, kind);
        if input.len() > MAX_INPUT_LEN {
            return Err(err(HostErrorKind::TooLong));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(HostErrorKind::Whitespace));
        }
        if input.contains(['?', '#']) {
            return Err(err(HostErrorKind::QueryOrFragment));
        }
        let rest = match input.find("://").filter(|&i| !input[..i].contains('/')) {
            Some(i) => {
                let scheme = &input[..i];
                if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
                    return Err(err(HostErrorKind::Scheme));
                }
                &input[i + 3..]
            }
            None => input,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if !authority.is_ascii() {
            return Err(err(HostErrorKind::NonAscii));
        }
        if authority.contains('@') {
            return Err(err(HostErrorKind::UserInfo));
        }
        if authority.is_empty() {
            return Err(err(HostErrorKind::Empty));
        }
        let (host, port) = split_host_port(authority).map_err(err)?;
        let port = port.map(parse_port).transpose().map_err(err)?;
        let host = if host.starts_with('[') {
            normalise_ipv6(host).map_err(err)?
        } else {
            normalise_dns(host).map_err(err)?
        };
        let host_len = host.len();
        let key = match port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        Ok(RegistryHost { key, host_len, port })
    }

    /// `host[:port]`, lowercased: the key runtimes use for this registry.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The host name (or `[v6]` literal) without the port.
    pub fn host(&self) -> &str {
        &self.key[..self.host_len]
    }

    /// The explicit port, if one was given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// True for `localhost`, 127.0.0.0/8 and `[::1]`: hosts where plain http is acceptable.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()) || host == "[::1]"
    }

    /// Which ACR edition, region and instance name this host names, if it is an ACR default domain.
    ///
    /// Only no port or `:443` qualifies; any other port makes the host [`RegistryKind::Custom`],
    /// and so does any punycode (`xn--`) label: ACR never issues internationalised names.
    pub fn kind(&self) -> RegistryKind {
        if self.port.is_some_and(|p| p != 443) || self.host().split('.').any(|l| l.starts_with("xn--")) {
            return RegistryKind::Custom;
        }
        enterprise_kind(self.host()).or_else(|| personal_kind(self.host())).unwrap_or(RegistryKind::Custom)
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl TryFrom<&str> for RegistryHost {
    type Error = HostError;
    fn try_from(s: &str) -> Result<Self, HostError> {
        RegistryHost::parse(s)
    }
}

impl std::str::FromStr for RegistryHost {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, HostError> {
        RegistryHost::parse(s)
    }
}

impl serde::Serialize for RegistryHost {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key)
    }
}

impl<'de> serde::Deserialize<'de> for RegistryHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RegistryHost::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Splits `host[:port]` / `[v6][:port]`; the port text is returned unparsed.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), HostErrorKind> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or(HostErrorKind::BadIpv6)?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => rest.strip_prefix(':').map(|p| (host, Some(p))).ok_or(HostErrorKind::BadIpv6),
        };
    }
    match authority.split_once(':') {
        None => Ok((authority, None)),
        Some((_, port)) if port.contains(':') => Err(HostErrorKind::BadIpv6),
        Some((host, port)) => Ok((host, Some(port))),
    }
}

fn parse_port(port: &str) -> Result<u16, HostErrorKind> {
    let bad = || HostErrorKind::BadPort(port.to_owned());
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if port.starts_with('0') {
        return Err(bad());
    }
    match port.parse::<u32>() {
        Ok(p @ 1..=65535) => u16::try_from(p).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// `[addr]` → `[canonical addr]`.
fn normalise_ipv6(bracketed: &str) -> Result<String, HostErrorKind> {
    let inner = bracketed.strip_prefix('[').and_then(|s| s.strip_suffix(']')).ok_or(HostErrorKind::BadIpv6)?;
    let ip: Ipv6Addr = inner.parse().map_err(|_| HostErrorKind::BadIpv6)?;
    Ok(format!("[{ip}]"))
}

/// Lowercases, strips one trailing dot, checks lengths and label characters.
fn normalise_dns(host: &str) -> Result<String, HostErrorKind> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() {
        return Err(HostErrorKind::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostErrorKind::HostTooLong);
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(HostErrorKind::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(HostErrorKind::LabelTooLong);
        }
        let chars_ok = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !chars_ok || label.starts_with('-') || label.ends_with('-') {
            return Err(HostErrorKind::BadLabel(label.to_owned()));
        }
    }
    Ok(host)
}

/// A host label that names an Alibaba Cloud region, as used in ACR and dockerauth domains.
///
/// Besides the [`Region`] grammar, labels starting `oss-` are refused: OSS puts customer-chosen
/// bucket names right before `oss-<region>.aliyuncs.com`, so `registry.oss-cn-hangzhou.aliyuncs.com`
/// or `dockerauth-x.oss-cn-hangzhou.aliyuncs.com` can belong to anyone.
pub fn region_label(label: &str) -> Option<Region> {
    if label.starts_with("oss-") {
        return None;
    }
    Region::try_from(label).ok()
}

/// `<name>-registry[-vpc].<region>.cr.aliyuncs.com`, exactly.
fn enterprise_kind(host: &str) -> Option<RegistryKind> {
    let (first, region) = host.strip_suffix(".cr.aliyuncs.com")?.split_once('.')?;
    let region = region_label(region)?;
    let (name, vpc) = match first.strip_suffix("-registry-vpc") {
        Some(name) => (name, true),
        None => (first.strip_suffix("-registry")?, false),
    };
    let mut bytes = name.bytes();
    let starts_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !starts_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return None;
    }
    Some(RegistryKind::Enterprise { instance_name: name.to_owned(), region, vpc })
}

/// `registry[-intl][-vpc|-internal].<region>.aliyuncs.com`, exactly.
fn personal_kind(host: &str) -> Option<RegistryKind> {
    let (first, region) = host.strip_suffix(".aliyuncs.com")?.split_once('.')?;
    let region = region_label(region)?;
    let rest = first.strip_prefix("registry")?;
    let (intl, rest) = match rest.strip_prefix("-intl") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let network = match rest {
        "" => PersonalNetwork::Public,
        "-vpc" => PersonalNetwork::Vpc,
        "-internal" => PersonalNetwork::Internal,
        _ => return None,
    };
    Some(RegistryKind::Personal { region, variant: PersonalVariant { intl, network } })
}

/// The registry host of a docker image reference (`nginx` → `docker.io`,
/// `demo-registry.cn-hangzhou.cr.aliyuncs.com/ns/app:1` → that host).
///
/// As in Docker's reference grammar, the part before the first `/` is a registry only when it
/// contains `.` or `:`, is `localhost`, or has an uppercase letter (repository paths are
/// lowercase); otherwise the image lives on Docker Hub.
pub fn host_from_image(image: &str) -> Result<RegistryHost, HostError> {
    if image.is_empty() {
        return Err(HostError::new(image, HostErrorKind::Empty));
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(HostError::new(image, HostErrorKind::Whitespace));
    }
    if image.contains("://") {
        return Err(HostError::new(image, HostErrorKind::Scheme));
    }
    let Some((first, _)) = image.split_once('/') else {
        return RegistryHost::parse(DOCKER_HUB);
    };
    let is_registry =
        first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase());
    if !is_registry {
        return RegistryHost::parse(DOCKER_HUB);
    }
    RegistryHost::parse(first).map_err(|e| HostError::new(image, e.kind))
}

#[cfg(test)]
mod tests;
