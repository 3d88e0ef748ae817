//! Identities and RAM semantics: who is calling, what they may do, whom a role trusts.

use std::time::SystemTime;

use crate::policy::Policy;
use crate::util::wildcard_match;
use crate::world::{arn, Role, WorldData};

/// A RAM identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A RAM user signing with a long-term key.
    User {
        /// Account id.
        account: String,
        /// User name.
        name: String,
    },
    /// A role session (STS credentials).
    Role {
        /// Account id of the role.
        account: String,
        /// Role name as declared in the world.
        role: String,
        /// RoleSessionName.
        session: String,
    },
}

impl Principal {
    /// The account the identity belongs to.
    pub fn account(&self) -> &str {
        match self {
            Principal::User { account, .. } | Principal::Role { account, .. } => account,
        }
    }

    /// A compact id (`user:<acct>:<name>` / `role:<acct>:<name>:<session>`) for tokens.
    pub fn encode(&self) -> String {
        match self {
            Principal::User { account, name } => format!("user:{account}:{name}"),
            Principal::Role { account, role, session } => format!("role:{account}:{role}:{session}"),
        }
    }

    /// Inverse of [`Principal::encode`].
    pub fn decode(s: &str) -> Option<Principal> {
        let mut it = s.splitn(4, ':');
        match (it.next()?, it.next()?, it.next()?, it.next()) {
            ("user", a, n, None) => Some(Principal::User { account: a.into(), name: n.into() }),
            ("role", a, r, Some(sess)) => {
                Some(Principal::Role { account: a.into(), role: r.into(), session: sess.into() })
            }
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// For STS credentials: when the session ends.
    pub session_expires: Option<SystemTime>,
    /// Session policy narrowing the role's permissions (AssumeRole `Policy`).
    pub session_policy: Option<String>,
}

impl Caller {
    /// True for STS role sessions (their AssumeRole calls are role chaining).
    pub fn is_role_session(&self) -> bool {
        matches!(self.principal, Principal::Role { .. })
    }
}

/// Whether `principal` (with an optional session policy) may do `action` on `resource`:
/// the identity's attached policies allow it and the session policy, if any, does too.
pub fn allows(
    world: &WorldData,
    principal: &Principal,
    session_policy: Option<&str>,
    action: &str,
    resource: &str,
) -> bool {
    let attached = match principal {
        Principal::User { account, name } => world.user(account, name).map(|u| &u.policy),
        Principal::Role { account, role, .. } => world.role(&arn::role_arn(account, role)).map(|r| &r.policy),
    };
    let Some(attached) = attached else {
        return false;
    };
    if !attached.allows(action, resource) {
        return false;
    }
    match session_policy {
        None => true,
        Some(text) => Policy::from_ram_json(text).is_ok_and(|p| p.allows(action, resource)),
    }
}

/// Whether the caller's identity policies mention `action` at all (any resource).
pub fn mentions_action(world: &WorldData, principal: &Principal, action: &str) -> bool {
    match principal {
        Principal::User { account, name } => {
            world.user(account, name).is_some_and(|u| u.policy.mentions_action(action))
        }
        Principal::Role { account, role, .. } => {
            world.role(&arn::role_arn(account, role)).is_some_and(|r| r.policy.mentions_action(action))
        }
    }
}

/// Whether `role`'s trust policy admits this RAM principal.
pub fn trusts_principal(role: &Role, principal: &Principal) -> bool {
    let candidates = match principal {
        Principal::User { account, name } => {
            vec![format!("acs:ram::{account}:user/{}", name.to_ascii_lowercase()), format!("acs:ram::{account}:root")]
        }
        Principal::Role { account, role: r, .. } => {
            vec![arn::role_arn(account, r), format!("acs:ram::{account}:root")]
        }
    };
    role.trust.ram.iter().any(|t| candidates.iter().any(|c| c == t))
}

/// Whether `role` trusts the OIDC provider for a token with this audience and subject.
pub fn trusts_oidc(role: &Role, provider_arn: &str, audiences: &[String], subject: &str) -> bool {
    let provider = provider_arn.to_ascii_lowercase();
    role.trust.oidc.iter().any(|t| {
        t.provider_arn == provider
            && (t.audiences.is_empty() || audiences.iter().any(|a| t.audiences.iter().any(|p| wildcard_match(p, a))))
            && (t.subjects.is_empty() || t.subjects.iter().any(|p| wildcard_match(p, subject)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::World;

    #[test]
    fn principal_round_trips() {
        let p = Principal::Role { account: "1".into(), role: "r".into(), session: "s:x".into() };
        assert_eq!(Principal::decode(&p.encode()), Some(p));
        let u = Principal::User { account: "1".into(), name: "u".into() };
        assert_eq!(Principal::decode(&u.encode()), Some(u));
        assert_eq!(Principal::decode("x:1:2"), None);
    }

    #[test]
    fn dev_world_trust_and_permissions() {
        let w = World::dev();
        let d = &w.data;
        let node =
            Principal::Role { account: "1111111111111111".into(), role: "node-role".into(), session: "s".into() };
        let svc = d.role("acs:ram::1111111111111111:role/eci-acr-service").unwrap();
        let user_role = d.role("acs:ram::2222222222222222:role/eci-acr-user").unwrap();
        assert!(trusts_principal(svc, &node));
        assert!(!trusts_principal(user_role, &node));
        assert!(svc.trust.services.iter().any(|s| s == "eci.aliyuncs.com"));
        assert!(allows(d, &node, None, "sts:AssumeRole", "acs:ram::1111111111111111:role/eci-acr-service"));
        assert!(allows(
            d,
            &node,
            None,
            "cr:GetAuthorizationToken",
            "acs:cr:cn-hangzhou:1111111111111111:instance/cri-devaaaaaaaaaaaa01"
        ));
        assert!(!allows(
            d,
            &node,
            None,
            "cr:GetAuthorizationToken",
            "acs:cr:cn-beijing:2222222222222222:instance/cri-devbbbbbbbbbbbb02"
        ));
        let narrow = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:*","Resource":"*"}]}"#;
        assert!(!allows(
            d,
            &node,
            Some(narrow),
            "cr:GetAuthorizationToken",
            "acs:cr:cn-hangzhou:1111111111111111:instance/cri-devaaaaaaaaaaaa01"
        ));
        let sa = d.role("acs:ram::1111111111111111:role/sa-acr-reader").unwrap();
        let aud = vec!["sts.aliyuncs.com".to_string()];
        assert!(trusts_oidc(
            sa,
            "acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev",
            &aud,
            "system:serviceaccount:ns:sa"
        ));
        assert!(!trusts_oidc(sa, "acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev", &aud, "user:bob"));
    }
}
