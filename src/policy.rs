//! The seed's pull policy as a pure function: registry host + annotations → a [`Plan`]
//! (which instance, which region, which role chains to try, in order).
//!
//! No I/O happens here. The broker walks the plan; this module only decides it.
//!
//! Rules (the README's "What gets served"):
//! - A request that carries any of the three annotations uses exactly those; the node defaults
//!   (config `[defaults]`) apply only to a request that carries none.
//! - EE default domain → `ListInstance` by name in the host's region; Personal → the host's region.
//! - Any other host is served only as an EE custom domain, and only when `acr-instance-ids` names
//!   candidate instances (the broker then checks `ListInstanceEndpoint`); otherwise it is not ours.
//! - Chains: no ARNs → the base identity alone; service ARNs only → one chain per service role;
//!   service and user ARNs → every (service, user) pair, service-major. User ARNs need a service ARN.
//!
//! The upstream documentation shows only single values and does not say how several service and
//! user ARNs pair up; trying every pair in order is our choice (not confirmed upstream).

use std::fmt;

use crate::ids::{IdError, InstanceId, InstanceRef, Region, RoleArn};
use crate::registry::{RegistryHost, RegistryKind};

/// Annotation naming EE instances (`cri-…` or `<region>:cri-…`), needed for custom domains.
pub const INSTANCE_IDS_KEY: &str = "k8s.aliyun.com/acr-instance-ids";
/// Annotation naming RAM roles in the node's account to assume first.
pub const SERVICE_ARNS_KEY: &str = "k8s.aliyun.com/acr-service-arns";
/// Annotation naming RAM roles in the registry's account, assumed from a service role.
pub const USER_ARNS_KEY: &str = "k8s.aliyun.com/acr-user-arns";
/// The three annotation keys acr-broker reads, in the order the docs list them.
pub const ANNOTATION_KEYS: [&str; 3] = [INSTANCE_IDS_KEY, SERVICE_ARNS_KEY, USER_ARNS_KEY];
/// The prefix the three keys share.
const ANNOTATION_PREFIX: &str = "k8s.aliyun.com/";
/// Most items one annotation list may hold.
pub const MAX_LIST_ITEMS: usize = 16;
/// Longest annotation value we read, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// How much of a rejected value an error repeats.
const MAX_ECHO: usize = 200;

/// Why no plan could be made; [`PolicyError::code`] is the stable code the API reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The host is not an ACR domain we may serve: the runtime should fall back to its secrets (404).
    #[error(
        "{host} is not an ACR default domain and no {INSTANCE_IDS_KEY} annotation names an \
         instance for it; not served (use an image pull secret, or name the instance)"
    )]
    NotAcrRegistry {
        /// The host that was asked for.
        host: RegistryHost,
    },
    /// An annotation value that does not parse (400).
    #[error("annotation {key} has an invalid value {value:?}: {reason}")]
    InvalidAnnotation {
        /// Which annotation.
        key: &'static str,
        /// Its value (shortened when long).
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `acr-user-arns` without `acr-service-arns`: a user role is assumed from a service role (400).
    #[error(
        "annotation {USER_ARNS_KEY} is {user_arns:?} but {SERVICE_ARNS_KEY} is missing: \
         a cross-account user role is assumed from a service role in the node's account"
    )]
    UserArnWithoutServiceArn {
        /// The user ARNs that were given, comma-joined.
        user_arns: String,
    },
    /// A key that looks meant for acr-broker but is none of the three (a typo, or a missing
    /// `k8s.aliyun.com/` prefix) (400): ignoring it would silently change the policy.
    #[error(
        "annotation key {key:?} is not one acr-broker reads; the keys are {INSTANCE_IDS_KEY}, \
         {SERVICE_ARNS_KEY} and {USER_ARNS_KEY}"
    )]
    UnknownAnnotation {
        /// The key as given (shortened when long).
        key: String,
    },
}

impl PolicyError {
    /// Stable machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::NotAcrRegistry { .. } => "not_acr_registry",
            PolicyError::InvalidAnnotation { .. } => "invalid_annotation",
            PolicyError::UserArnWithoutServiceArn { .. } => "user_arn_without_service_arn",
            PolicyError::UnknownAnnotation { .. } => "unknown_annotation",
        }
    }

    /// True when the caller sent something wrong (a 400); false for "not ours" (a 404).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, PolicyError::NotAcrRegistry { .. })
    }
}

/// A near miss of one of the three keys: `k8s.aliyun.com/…acr…` or a bare `acr-…`/`acr_…`.
fn looks_like_ours(key: &str) -> bool {
    // Kubernetes keys are case-sensitive and a prefix is lower-case: only the name is folded.
    match key.strip_prefix(ANNOTATION_PREFIX) {
        Some(name) => name.to_ascii_lowercase().contains("acr"),
        None => {
            let lower = key.to_ascii_lowercase();
            lower.starts_with("acr-") || lower.starts_with("acr_")
        }
    }
}

fn shorten(value: &str) -> String {
    if value.chars().count() > MAX_ECHO {
        value.chars().take(MAX_ECHO).chain(std::iter::once('…')).collect()
    } else {
        value.to_owned()
    }
}

// === impl Annotations ===

/// The three ACR annotations, parsed: each list trimmed per item, deduplicated in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    /// `k8s.aliyun.com/acr-instance-ids`.
    pub instance_ids: Vec<InstanceRef>,
    /// `k8s.aliyun.com/acr-service-arns`.
    pub service_arns: Vec<RoleArn>,
    /// `k8s.aliyun.com/acr-user-arns`.
    pub user_arns: Vec<RoleArn>,
}

impl Annotations {
    /// Reads the three keys from an annotation map; unrelated keys are ignored, but a key that
    /// looks meant for acr-broker and is not one of the three is an error
    /// ([`PolicyError::UnknownAnnotation`]): a `k8s.aliyun.com/` key mentioning `acr`, or an
    /// `acr-…` key without the prefix.
    ///
    /// `Ok(None)` when none of the three is present. A present key must have a non-empty value
    /// of at most [`MAX_LIST_ITEMS`] comma-separated items and [`MAX_VALUE_LEN`] bytes; an empty
    /// item (`a,,b`, a trailing comma), a bad id or a key given twice is an error naming the key
    /// and value.
    pub fn from_map<'a>(map: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Option<Annotations>, PolicyError> {
        let mut out = Annotations::default();
        let mut seen = [false; 3];
        for (key, value) in map {
            let slot = match key {
                INSTANCE_IDS_KEY => 0,
                SERVICE_ARNS_KEY => 1,
                USER_ARNS_KEY => 2,
                other if looks_like_ours(other) => return Err(PolicyError::UnknownAnnotation { key: shorten(other) }),
                _ => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(invalid(key_name(slot), value, "annotation given more than once".into()));
            }
            match slot {
                0 => out.instance_ids = parse_list(INSTANCE_IDS_KEY, value, |s| InstanceRef::try_from(s))?,
                1 => out.service_arns = parse_list(SERVICE_ARNS_KEY, value, |s| RoleArn::try_from(s))?,
                _ => out.user_arns = parse_list(USER_ARNS_KEY, value, |s| RoleArn::try_from(s))?,
            }
        }
        Ok(seen.contains(&true).then_some(out))
    }

    /// True when all three lists are empty.
    pub fn is_empty(&self) -> bool {
        self.instance_ids.is_empty() && self.service_arns.is_empty() && self.user_arns.is_empty()
    }
}

fn key_name(slot: usize) -> &'static str {
    [INSTANCE_IDS_KEY, SERVICE_ARNS_KEY, USER_ARNS_KEY][slot.min(2)]
}

fn invalid(key: &'static str, value: &str, reason: String) -> PolicyError {
    PolicyError::InvalidAnnotation { key, value: shorten(value), reason }
}

/// Splits a comma-separated list, trims each item, parses it, drops repeats (first one wins).
fn parse_list<T: PartialEq>(
    key: &'static str,
    value: &str,
    parse: impl Fn(&str) -> Result<T, IdError>,
) -> Result<Vec<T>, PolicyError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(key, value, format!("longer than {MAX_VALUE_LEN} bytes")));
    }
    if value.trim().is_empty() {
        return Err(invalid(key, value, "empty value (remove the annotation instead)".into()));
    }
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.len() > MAX_LIST_ITEMS {
        return Err(invalid(key, value, format!("more than {MAX_LIST_ITEMS} items")));
    }
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for (n, item) in items.iter().enumerate() {
        if item.is_empty() {
            return Err(invalid(key, value, format!("item {} is empty (stray comma?)", n + 1)));
        }
        let parsed = parse(item).map_err(|e| invalid(key, value, e.to_string()))?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

// === impl Plan ===

/// Roles to assume, in order, after the base identity; empty means the base identity itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoleChain(pub Vec<RoleArn>);

impl RoleChain {
    /// True when no role is assumed: the base (node or service-account) identity is used as is.
    pub fn is_base_identity(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for RoleChain {
    /// `identity -> acs:ram::A:role/x -> acs:ram::B:role/y`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("identity")?;
        for arn in &self.0 {
            write!(f, " -> {arn}")?;
        }
        Ok(())
    }
}

/// How the broker finds the EE instance behind a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceSelector {
    /// A default domain: resolve the instance id with `ListInstance(InstanceName)`.
    ByName(String),
    /// A known instance id. Not produced by [`plan`] today (default domains resolve by name);
    /// kept for callers that already know the id.
    ById(InstanceId),
    /// A custom domain: the first of these instances whose `ListInstanceEndpoint` lists the host.
    /// Every candidate's `region` is filled in (the node's default region when not given).
    CustomDomain {
        /// The instances named in `acr-instance-ids`, in order, without repeats.
        candidates: Vec<InstanceRef>,
    },
}

/// Which ACR API serves the credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Enterprise Edition (CR 2018-12-01 `GetAuthorizationToken` for an instance).
    Enterprise {
        /// Region of the CR endpoint to call; for custom domains, the first candidate's region.
        region: Region,
        /// How to find the instance.
        instance: InstanceSelector,
    },
    /// Personal Edition (CR 2016-06-07 `GET /tokens`) in a region.
    Personal {
        /// The registry's region.
        region: Region,
    },
}

impl Target {
    /// The region whose CR endpoint is called first.
    pub fn region(&self) -> &Region {
        match self {
            Target::Enterprise { region, .. } | Target::Personal { region } => region,
        }
    }

    /// `"enterprise"` or `"personal"`, as reported in the API's `edition` field.
    pub fn edition(&self) -> &'static str {
        match self {
            Target::Enterprise { .. } => "enterprise",
            Target::Personal { .. } => "personal",
        }
    }
}

/// What the broker should do for one request; built by [`plan`], walked by the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The registry host asked for.
    pub host: RegistryHost,
    /// Which edition, region and instance.
    pub target: Target,
    /// Role chains to try in order (never empty); the broker remembers the one that worked.
    pub chains: Vec<RoleChain>,
    /// The node's region (for instance refs without one, and STS).
    pub default_region: Region,
}

/// Applies the pull policy to one request.
///
/// `request` is the request's annotations (`None`, or an empty set, when it carries none of the
/// three keys); `node_defaults` come from the config and apply only in that case.
pub fn plan(
    host: &RegistryHost,
    request: Option<&Annotations>,
    node_defaults: &Annotations,
    default_region: &Region,
) -> Result<Plan, PolicyError> {
    let effective = request.filter(|a| !a.is_empty()).unwrap_or(node_defaults);
    let target = target_for(host, effective, default_region)?;
    let chains = role_chains(effective)?;
    Ok(Plan { host: host.clone(), target, chains, default_region: default_region.clone() })
}

fn target_for(host: &RegistryHost, annotations: &Annotations, default_region: &Region) -> Result<Target, PolicyError> {
    match host.kind() {
        RegistryKind::Enterprise { instance_name, region, .. } => {
            Ok(Target::Enterprise { region, instance: InstanceSelector::ByName(instance_name) })
        }
        RegistryKind::Personal { region, .. } => Ok(Target::Personal { region }),
        RegistryKind::Custom => {
            let mut candidates: Vec<InstanceRef> = Vec::new();
            for r in &annotations.instance_ids {
                let r = r.with_default_region(default_region);
                if !candidates.contains(&r) {
                    candidates.push(r);
                }
            }
            let region = match candidates.first() {
                Some(first) => first.region.clone().unwrap_or_else(|| default_region.clone()),
                None => return Err(PolicyError::NotAcrRegistry { host: host.clone() }),
            };
            Ok(Target::Enterprise { region, instance: InstanceSelector::CustomDomain { candidates } })
        }
    }
}

/// The ordered chains: base identity; one per service role; or every (service, user) pair.
fn role_chains(a: &Annotations) -> Result<Vec<RoleChain>, PolicyError> {
    match (a.service_arns.is_empty(), a.user_arns.is_empty()) {
        (true, true) => Ok(vec![RoleChain(Vec::new())]),
        (true, false) => {
            let user_arns = a.user_arns.iter().map(RoleArn::as_str).collect::<Vec<_>>().join(",");
            Err(PolicyError::UserArnWithoutServiceArn { user_arns: shorten(&user_arns) })
        }
        (false, true) => Ok(a.service_arns.iter().map(|s| RoleChain(vec![s.clone()])).collect()),
        (false, false) => Ok(a
            .service_arns
            .iter()
            .flat_map(|s| a.user_arns.iter().map(move |u| RoleChain(vec![s.clone(), u.clone()])))
            .collect()),
    }
}

#[cfg(test)]
mod tests;
