//! Validated identifiers: regions, ACR instance ids, account ids, RAM role and OIDC provider ARNs.
//!
//! Each type is a newtype built only through `TryFrom<&str>` (or `FromStr`), so a value that
//! exists is valid: nothing downstream checks it again. A bad value gives an [`IdError`] that names
//! the kind of id, the value (quoted, shortened when long) and what is wrong with it. Nothing is
//! trimmed: `" cn-hangzhou"` is an error, not a region. Every type displays and serializes as the
//! string it was parsed from, and deserializes through the same validation.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Longest region id we accept (`cn-shanghai-finance-1` is 21).
pub const MAX_REGION_LEN: usize = 32;
/// Longest RAM role name (RAM limit: 64 characters).
pub const MAX_ROLE_NAME_LEN: usize = 64;
/// Longest RAM OIDC provider name (RAM limit: 128 characters).
pub const MAX_OIDC_PROVIDER_NAME_LEN: usize = 128;
/// Longest account id in digits (observed ids have 16; the documented length is unconfirmed).
pub const MAX_ACCOUNT_ID_LEN: usize = 32;
/// How many characters of a rejected value an error message repeats.
const MAX_ECHO: usize = 96;

/// A value that is not a valid id of the named kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct IdError {
    /// The kind of id: "region", "instance id", "account id", "role ARN", "OIDC provider ARN", "instance reference".
    pub what: &'static str,
    /// The rejected value, cut to a readable length.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl IdError {
    fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        let value = if value.chars().count() > MAX_ECHO {
            let mut cut: String = value.chars().take(MAX_ECHO).collect();
            cut.push('…');
            cut
        } else {
            value.to_owned()
        };
        IdError { what, value, reason: reason.into() }
    }
}

/// Implements Display, FromStr, TryFrom<String>, Serialize and Deserialize through `as_str` and
/// `TryFrom<&str>`, so all the string forms go through the one validation.
macro_rules! string_id {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $ty::try_from(s)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $ty::try_from(s.as_str())
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $ty::try_from(s.as_ref()).map_err(serde::de::Error::custom)
            }
        }
    };
}

// === impl Region ===

/// An Alibaba Cloud region id such as `cn-hangzhou`, `ap-southeast-1`, `cn-shanghai-finance-1`.
///
/// Grammar: `^[a-z]{2,}(-[a-z0-9]+){1,4}$`, at most [`MAX_REGION_LEN`] characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

impl Region {
    /// The region id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Region {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        let err = |reason: &str| IdError::new("region", s, reason);
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > MAX_REGION_LEN {
            return Err(err("longer than 32 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(err("only lowercase letters, digits and '-' are allowed"));
        }
        let mut parts = s.split('-');
        let first = parts.next().unwrap_or_default();
        if first.len() < 2 || !first.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(err("must start with at least two letters (like cn-hangzhou)"));
        }
        let rest: Vec<&str> = parts.collect();
        if rest.is_empty() || rest.len() > 4 {
            return Err(err("expected 2 to 5 '-'-separated parts (like cn-hangzhou)"));
        }
        if rest.iter().any(|p| p.is_empty()) {
            return Err(err("empty part between '-'"));
        }
        Ok(Region(s.to_owned()))
    }
}
string_id!(Region);

// === impl InstanceId ===

/// An ACR Enterprise Edition instance id: `cri-` followed by 8 to 32 of `[a-z0-9]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for InstanceId {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        let err = |reason: &str| IdError::new("instance id", s, reason);
        let Some(body) = s.strip_prefix("cri-") else {
            return Err(err("must start with \"cri-\""));
        };
        if !(8..=32).contains(&body.len()) {
            return Err(err("expected 8 to 32 characters after \"cri-\""));
        }
        if !body.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(err("only lowercase letters and digits are allowed after \"cri-\""));
        }
        Ok(InstanceId(s.to_owned()))
    }
}
string_id!(InstanceId);

// === impl AccountId ===

/// An Alibaba Cloud account (UID): 1 to [`MAX_ACCOUNT_ID_LEN`] decimal digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// The account id digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for AccountId {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        let err = |reason: &str| IdError::new("account id", s, reason);
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > MAX_ACCOUNT_ID_LEN {
            return Err(err("longer than 32 digits"));
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("only digits are allowed"));
        }
        Ok(AccountId(s.to_owned()))
    }
}
string_id!(AccountId);

/// Splits `acs:ram::<account>:<kind>/<name>` and checks the account; `what` names the ARN type.
fn split_ram_arn<'a>(s: &'a str, kind: &str, what: &'static str) -> Result<(AccountId, &'a str), IdError> {
    let err = |reason: String| IdError::new(what, s, reason);
    let rest = s
        .strip_prefix("acs:ram::")
        .ok_or_else(|| err(format!("must look like acs:ram::<account id>:{kind}/<name>")))?;
    let (account, resource) =
        rest.split_once(':').ok_or_else(|| err(format!("missing ':{kind}/<name>' after the account id")))?;
    let account =
        AccountId::try_from(account).map_err(|e| err(format!("bad account id {:?}: {}", e.value, e.reason)))?;
    let name = resource
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| err(format!("resource must be {kind}/<name>")))?;
    Ok((account, name))
}

// === impl RoleArn ===

/// A RAM role ARN `acs:ram::<account id>:role/<role name>`.
///
/// RAM role names are case-insensitive (STS reports them lowercased), so equality and hashing
/// compare the lowercased name, while [`RoleArn::as_str`] keeps the caller's spelling for the wire.
#[derive(Clone, Debug)]
pub struct RoleArn {
    original: String,
    account: AccountId,
    /// `acs:ram::<account>:role/<name lowercased>`: the identity for Eq and Hash.
    key: String,
}

impl RoleArn {
    /// The ARN as given, for `RoleArn` on the STS wire.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The account that owns the role.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The role name as given (after `role/`).
    pub fn role_name(&self) -> &str {
        let start = "acs:ram::".len() + self.account.as_str().len() + ":role/".len();
        self.original.get(start..).unwrap_or_default()
    }

    /// The lowercased ARN that equality and hashing use (a stable cache key).
    pub fn canonical(&self) -> &str {
        &self.key
    }
}

impl PartialEq for RoleArn {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for RoleArn {}
impl Hash for RoleArn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl TryFrom<&str> for RoleArn {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        let (account, name) = split_ram_arn(s, "role", "role ARN")?;
        let err = |reason: &str| IdError::new("role ARN", s, reason);
        if name.is_empty() {
            return Err(err("empty role name"));
        }
        if name.len() > MAX_ROLE_NAME_LEN {
            return Err(err("role name longer than 64 characters"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b)) {
            return Err(err("role name may contain only letters, digits and . _ @ -"));
        }
        let key = format!("acs:ram::{}:role/{}", account.as_str(), name.to_ascii_lowercase());
        Ok(RoleArn { original: s.to_owned(), account, key })
    }
}
string_id!(RoleArn);

// === impl OidcProviderArn ===

/// A RAM OIDC provider ARN `acs:ram::<account id>:oidc-provider/<name>` (the cluster's RRSA provider).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OidcProviderArn {
    original: String,
    account: AccountId,
}

impl OidcProviderArn {
    /// The ARN as given, for `OIDCProviderArn` on the STS wire.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The account that owns the provider.
    pub fn account(&self) -> &AccountId {
        &self.account
    }
}

impl TryFrom<&str> for OidcProviderArn {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        let what = "OIDC provider ARN";
        let (account, name) = split_ram_arn(s, "oidc-provider", what)?;
        let err = |reason: &str| IdError::new(what, s, reason);
        if name.is_empty() {
            return Err(err("empty provider name"));
        }
        if name.len() > MAX_OIDC_PROVIDER_NAME_LEN {
            return Err(err("provider name longer than 128 characters"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(err("provider name may contain only letters, digits and . _ -"));
        }
        Ok(OidcProviderArn { original: s.to_owned(), account })
    }
}
string_id!(OidcProviderArn);

// === impl InstanceRef ===

/// An instance named in `acr-instance-ids`: `cri-…` or, for another region than the node's,
/// `<region>:cri-…` (the ECI documentation's cross-region form).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceRef {
    /// The region prefix, when given.
    pub region: Option<Region>,
    /// The instance id.
    pub id: InstanceId,
}

impl InstanceRef {
    /// The same instance with `region` filled in from `default` when it was not given.
    pub fn with_default_region(&self, default: &Region) -> InstanceRef {
        InstanceRef { region: Some(self.region.clone().unwrap_or_else(|| default.clone())), id: self.id.clone() }
    }
}

impl fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.region {
            Some(region) => write!(f, "{region}:{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

impl TryFrom<&str> for InstanceRef {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        let err = |e: IdError| IdError::new("instance reference", s, format!("{}: {}", e.what, e.reason));
        match s.split_once(':') {
            None => Ok(InstanceRef { region: None, id: InstanceId::try_from(s).map_err(err)? }),
            Some((region, id)) => Ok(InstanceRef {
                region: Some(Region::try_from(region).map_err(err)?),
                id: InstanceId::try_from(id).map_err(err)?,
            }),
        }
    }
}

impl FromStr for InstanceRef {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        InstanceRef::try_from(s)
    }
}

impl serde::Serialize for InstanceRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for InstanceRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        InstanceRef::try_from(s.as_ref()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
