//! `WWW-Authenticate` parsing (RFC 7235 + the docker registry token authentication spec) and the
//! realm allow-list: the broker fetches a registry bearer token only from a realm it trusts,
//! because it sends the registry credential there.
//!
//! Parsing follows distribution's client: scheme and parameter names are case-insensitive,
//! values are tokens or quoted strings with backslash escapes, parameters are comma-separated,
//! and several challenges may share one header value (`Basic realm="x", Bearer realm="y"`);
//! Bearer wins over Basic. A `scope` may repeat and may hold several space-separated scopes.

use std::fmt;

use crate::registry::{region_label, RegistryHost};

/// Longest header value we parse.
pub const MAX_CHALLENGE_LEN: usize = 8192;
/// Longest realm URL we accept.
const MAX_REALM_LEN: usize = 2048;

/// A challenge the broker can answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Docker token auth: get a token from `realm` for `service` and `scopes`.
    Bearer {
        /// Token endpoint URL (check it with [`realm_is_allowed`] before use).
        realm: String,
        /// The `service` parameter to send back, when given.
        service: Option<String>,
        /// Requested scopes, one per resource, in order without repeats.
        scopes: Vec<String>,
    },
    /// HTTP Basic: send the registry credential directly.
    Basic {
        /// The realm label, when given.
        realm: Option<String>,
    },
}

/// Why a challenge or realm was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Empty or blank header value.
    #[error("empty WWW-Authenticate value")]
    Empty,
    /// Over [`MAX_CHALLENGE_LEN`] bytes.
    #[error("WWW-Authenticate value longer than {MAX_CHALLENGE_LEN} bytes")]
    TooLong,
    /// Not RFC 7235 syntax.
    #[error("malformed WWW-Authenticate value at byte {at}: {problem}")]
    Syntax {
        /// Byte offset of the problem.
        at: usize,
        /// What was expected or found.
        problem: &'static str,
    },
    /// Neither a Bearer nor a Basic challenge.
    #[error("no Bearer or Basic challenge (schemes offered: {schemes})")]
    UnsupportedScheme {
        /// The schemes that were offered, comma-joined.
        schemes: String,
    },
    /// A Bearer challenge without `realm` (or with an empty one).
    #[error("Bearer challenge has no realm")]
    MissingRealm,
    /// `realm` or `service` given twice in one challenge.
    #[error("parameter {name:?} given more than once")]
    DuplicateParam {
        /// The repeated parameter.
        name: String,
    },
    /// A realm that is not a usable URL.
    #[error("invalid realm {realm:?}: {reason}")]
    BadRealm {
        /// The realm (shortened when long).
        realm: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A well-formed realm on a host we do not send credentials to.
    #[error(
        "realm host {host} is not allow-listed (dockerauth*.aliyuncs.com or a configured \
         token realm host)"
    )]
    RealmNotAllowed {
        /// The realm's `host[:port]`.
        host: String,
    },
}

/// Parses a `WWW-Authenticate` value into the challenge to answer (Bearer preferred over Basic).
pub fn parse(value: &str) -> Result<Challenge, ChallengeError> {
    if value.len() > MAX_CHALLENGE_LEN {
        return Err(ChallengeError::TooLong);
    }
    if value.trim().is_empty() {
        return Err(ChallengeError::Empty);
    }
    let all = Lexer { s: value, pos: 0 }.challenges()?;
    let find = |name: &str| all.iter().find(|(scheme, _)| scheme.eq_ignore_ascii_case(name));
    if let Some((_, params)) = find("bearer") {
        return bearer(params);
    }
    if let Some((_, params)) = find("basic") {
        let realm = params.iter().find(|(n, _)| n == "realm").map(|(_, v)| v.clone());
        return Ok(Challenge::Basic { realm });
    }
    let schemes = all.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ");
    Err(ChallengeError::UnsupportedScheme { schemes })
}

fn bearer(params: &[(String, String)]) -> Result<Challenge, ChallengeError> {
    let (mut realm, mut service, mut scopes) = (None, None, Vec::<String>::new());
    for (name, value) in params {
        let slot = match name.as_str() {
            "realm" => &mut realm,
            "service" => &mut service,
            "scope" => {
                for s in value.split(' ').filter(|s| !s.is_empty()) {
                    if !scopes.iter().any(|have| have == s) {
                        scopes.push(s.to_owned());
                    }
                }
                continue;
            }
            _ => continue,
        };
        if slot.replace(value.clone()).is_some() {
            return Err(ChallengeError::DuplicateParam { name: name.clone() });
        }
    }
    let realm = realm.filter(|r| !r.is_empty()).ok_or(ChallengeError::MissingRealm)?;
    Ok(Challenge::Bearer { realm, service, scopes })
}

/// A challenge as parsed: the scheme as given, and parameters with lowercased names.
type RawChallenge = (String, Vec<(String, String)>);

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

// === impl Lexer ===

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn err(&self, problem: &'static str) -> ChallengeError {
        ChallengeError::Syntax { at: self.pos, problem }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_ows_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    /// Takes a run of bytes matching `ok`; `None` when the run is empty.
    fn take_while(&mut self, ok: impl Fn(u8) -> bool) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(&ok) {
            self.pos += 1;
        }
        // Only ASCII bytes are taken, so both ends are char boundaries.
        (self.pos > start).then(|| &self.s[start..self.pos])
    }

    fn token(&mut self) -> Option<&'a str> {
        self.take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }

    /// A quoted string after its opening quote; backslash escapes the next character.
    fn quoted(&mut self) -> Result<String, ChallengeError> {
        let mut out = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, c)) if !c.is_control() => out.push(c),
                    _ => break,
                },
                c if c.is_control() && c != '\t' => {
                    self.pos += i;
                    return Err(self.err("control character in quoted string"));
                }
                c => out.push(c),
            }
        }
        Err(self.err("unterminated quoted string"))
    }

    /// All challenges in the value, in order.
    fn challenges(mut self) -> Result<Vec<RawChallenge>, ChallengeError> {
        let mut out = Vec::new();
        self.skip_ows_and_commas();
        while self.peek().is_some() {
            let scheme = self.token().ok_or_else(|| self.err("expected an auth scheme"))?;
            if !matches!(self.peek(), None | Some(b' ' | b'\t' | b',')) {
                return Err(self.err("expected a space after the auth scheme"));
            }
            let params = self.params()?;
            out.push((scheme.to_owned(), params));
            self.skip_ows_and_commas();
        }
        Ok(out)
    }

    /// `name=value` pairs up to the end or the next scheme (a token not followed by `=`).
    fn params(&mut self) -> Result<Vec<(String, String)>, ChallengeError> {
        let mut params = Vec::new();
        loop {
            self.skip_ows_and_commas();
            if self.peek().is_none() {
                return Ok(params);
            }
            let start = self.pos;
            let name = self.token().ok_or_else(|| self.err("expected a parameter name"))?;
            self.skip_ows();
            if self.peek() != Some(b'=') {
                self.pos = start;
                return Ok(params);
            }
            self.pos += 1;
            self.skip_ows();
            let value = if self.peek() == Some(b'"') {
                self.pos += 1;
                self.quoted()?
            } else {
                let plain = |b: u8| b.is_ascii_graphic() && !b",\"\\".contains(&b);
                self.take_while(plain).ok_or_else(|| self.err("expected a parameter value"))?.to_owned()
            };
            params.push((name.to_ascii_lowercase(), value));
            self.skip_ows();
            if !matches!(self.peek(), None | Some(b',')) {
                return Err(self.err("expected ',' between parameters"));
            }
        }
    }
}

// === impl RealmUrl ===

/// A realm URL that passed [`realm_is_allowed`]: where to ask for a bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmUrl {
    /// `https` (or `http`, only for loopback hosts).
    pub https: bool,
    /// The realm's `host[:port]`, normalised.
    pub host: RegistryHost,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
}

impl RealmUrl {
    /// The token request URL: the realm plus `service`, each `scope`, and `account`
    /// (distribution's `GET <realm>?service=…&scope=…&account=…`).
    pub fn token_url(&self, service: Option<&str>, scopes: &[String], account: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        for scope in scopes {
            query.append_pair("scope", scope);
        }
        if let Some(account) = account {
            query.append_pair("account", account);
        }
        let query = query.finish();
        if query.is_empty() {
            return self.to_string();
        }
        let sep = if self.path_and_query.contains('?') { '&' } else { '?' };
        format!("{self}{sep}{query}")
    }
}

impl fmt::Display for RealmUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host, self.path_and_query)
    }
}

/// Checks that a realm is a URL the broker may send registry credentials to.
///
/// Allowed: `https://` on an Alibaba Cloud token host (`dockerauth.<region>.aliyuncs.com`,
/// `dockerauth-<suffix>.<region>.aliyuncs.com`, `dockerauth-<region>.aliyuncs.com`, default port
/// only), or on a host in `extra_hosts` (case-insensitive; an entry with a port must match it
/// exactly, an entry without one matches any port; entries that do not parse match nothing).
/// `http://` only for loopback hosts. No user info, no fragment.
pub fn realm_is_allowed(realm: &str, extra_hosts: &[String]) -> Result<RealmUrl, ChallengeError> {
    let bad = |reason: &str| {
        let mut shown: String = realm.chars().take(200).collect();
        if shown.len() < realm.len() {
            shown.push('…');
        }
        ChallengeError::BadRealm { realm: shown, reason: reason.to_owned() }
    };
    if realm.len() > MAX_REALM_LEN {
        return Err(bad("longer than 2048 bytes"));
    }
    if !realm.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("whitespace, control or non-ASCII character"));
    }
    let (scheme, rest) = realm.split_once("://").ok_or_else(|| bad("not an absolute URL"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("scheme must be https")),
    };
    if rest.contains('#') {
        return Err(bad("fragment is not allowed"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(bad("user info is not allowed"));
    }
    let host = RegistryHost::parse(authority).map_err(|e| bad(&e.kind.to_string()))?;
    let path_and_query = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    if !https && !host.is_loopback() {
        return Err(bad("http:// is allowed only for loopback hosts; use https"));
    }
    let default_port = host.port().is_none() || host.port() == Some(443);
    let allowed = (default_port && is_aliyun_token_host(host.host()))
        || extra_hosts.iter().any(|extra| extra_host_matches(extra, &host));
    if !allowed {
        return Err(ChallengeError::RealmNotAllowed { host: host.to_string() });
    }
    Ok(RealmUrl { https, host, path_and_query })
}

/// `dockerauth[-x].<region>.aliyuncs.com` or `dockerauth-<region>.aliyuncs.com` (the realms ACR's challenges name).
fn is_aliyun_token_host(host: &str) -> bool {
    let Some(rest) = host.strip_suffix(".aliyuncs.com") else {
        return false;
    };
    match rest.split_once('.') {
        Some((first, region)) => {
            !region.contains('.')
                && region_label(region).is_some()
                && (first == "dockerauth" || first.strip_prefix("dockerauth-").is_some_and(|s| !s.is_empty()))
        }
        None => rest.strip_prefix("dockerauth-").and_then(region_label).is_some(),
    }
}

fn extra_host_matches(extra: &str, realm: &RegistryHost) -> bool {
    match RegistryHost::parse(extra) {
        Ok(allowed) if allowed.port().is_some() => allowed == *realm,
        Ok(allowed) => allowed.host() == realm.host(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
