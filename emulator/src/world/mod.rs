//! The emulated cloud: accounts, users, roles, policies, OIDC providers, ACR instances.
//! Parsed from TOML (schema in `emulator/README.md`), validated once, then read-only.

pub mod arn;
mod build;
pub mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::keys::SigningKey;
use crate::knobs::Knobs;
use crate::policy::Policy;

/// Every problem found in a world file (all are reported, not just the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid world: {}", problems.join("; "))]
pub struct WorldError {
    /// One line per problem, naming the key and value.
    pub problems: Vec<String>,
}

/// A parsed, validated world. Cloning is cheap and keeps the same keys, so an emulator
/// restarted with a clone honours credentials issued before the restart.
#[derive(Debug, Clone)]
pub struct World {
    pub(crate) data: Arc<WorldData>,
}

impl World {
    /// Parses and validates a world file.
    pub fn from_toml(s: &str) -> Result<World, WorldError> {
        let file: schema::WorldFile =
            toml::from_str(s).map_err(|e| WorldError { problems: vec![format!("TOML: {e}")] })?;
        let data = build::build(file)?;
        Ok(World { data: Arc::new(data) })
    }

    /// The sample world of `acr-broker serve --dev` (same content as `worlds/dev.toml`).
    pub fn dev() -> World {
        // The file is part of the crate and checked by a unit test, so it always parses.
        #[allow(clippy::expect_used)]
        World::from_toml(DEV_WORLD).expect("worlds/dev.toml is valid")
    }

    /// Knobs the world file asked for.
    pub fn knobs(&self) -> Knobs {
        self.data.knobs.clone()
    }

    /// The realm's JWT issuer (docker-registry `auth.token.issuer`).
    pub fn realm_issuer(&self) -> &str {
        &self.data.realm.issuer
    }

    /// The self-signed certificate of the realm signing key (docker-registry `rootcertbundle`).
    pub fn token_signing_cert_pem(&self) -> &str {
        &self.data.realm.cert_pem
    }

    /// libtrust key id of the realm signing key (the JWT `kid`).
    pub fn token_signing_kid(&self) -> &str {
        &self.data.realm.kid
    }

    /// The `auth.token.service` of an instance, by id.
    pub fn instance_token_service(&self, instance_id: &str) -> Option<&str> {
        self.data.instances.iter().find(|i| i.id == instance_id).map(|i| i.token_service.as_str())
    }

    /// The `auth.token.service` of an account's personal registry in a region.
    pub fn personal_token_service(&self, account: &str, region: &str) -> Option<&str> {
        self.data.personal.iter().find(|p| p.account == account && p.region == region).map(|p| p.token_service.as_str())
    }
}

/// The text of `worlds/dev.toml`.
pub const DEV_WORLD: &str = include_str!("../../worlds/dev.toml");

/// Validated world content.
#[derive(Debug)]
pub(crate) struct WorldData {
    pub knobs: Knobs,
    pub realm: Realm,
    pub metadata: Option<Metadata>,
    pub users: Vec<User>,
    /// Keyed by canonical (lower-case) role ARN.
    pub roles: BTreeMap<String, Role>,
    /// Keyed by lower-case provider ARN.
    pub oidc_providers: BTreeMap<String, OidcProvider>,
    pub instances: Vec<Instance>,
    pub personal: Vec<PersonalRegistry>,
    pub static_sessions: BTreeMap<String, StaticSession>,
    /// HMAC key that makes issued STS tokens and ACR passwords self-verifying.
    pub token_key: Vec<u8>,
}

/// Registry token realm settings.
#[derive(Debug)]
pub(crate) struct Realm {
    pub issuer: String,
    pub token_ttl_seconds: u64,
    pub key: SigningKey,
    pub kid: String,
    pub cert_pem: String,
}

/// ECS metadata service settings.
#[derive(Debug)]
pub(crate) struct Metadata {
    pub role_arn: String,
    pub role_name: String,
    pub lifetime_seconds: u64,
}

/// A RAM user with a long-term access key.
#[derive(Debug)]
pub(crate) struct User {
    pub account: String,
    pub name: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    pub policy: Policy,
}

/// A RAM role.
#[derive(Debug)]
pub(crate) struct Role {
    pub account: String,
    pub name: String,
    pub max_session_duration: u64,
    pub policy: Policy,
    pub trust: Trust,
}

/// A role's trust policy.
#[derive(Debug, Default)]
pub(crate) struct Trust {
    pub services: Vec<String>,
    /// Lower-case role/user/root ARNs.
    pub ram: Vec<String>,
    pub oidc: Vec<OidcTrust>,
}

/// Trust of an OIDC provider with conditions.
#[derive(Debug)]
pub(crate) struct OidcTrust {
    pub provider_arn: String,
    pub audiences: Vec<String>,
    pub subjects: Vec<String>,
}

/// An OIDC identity provider.
#[derive(Debug)]
pub(crate) struct OidcProvider {
    pub arn: String,
    pub account: String,
    pub issuer_url: String,
    pub client_ids: Vec<String>,
    pub key: SigningKey,
}

/// An ACR Enterprise instance.
#[derive(Debug)]
pub(crate) struct Instance {
    pub account: String,
    pub id: String,
    pub name: String,
    pub region: String,
    pub status: String,
    pub specification: String,
    pub token_service: String,
    pub domains: Vec<Domain>,
}

/// A registry domain of an instance.
#[derive(Debug)]
pub(crate) struct Domain {
    pub domain: String,
    pub kind: String,
    pub endpoint: String,
}

/// An account's Personal Edition registry in one region.
#[derive(Debug)]
pub(crate) struct PersonalRegistry {
    pub account: String,
    pub region: String,
    pub token_service: String,
}

/// A pre-issued STS session with fixed credentials.
#[derive(Debug)]
pub(crate) struct StaticSession {
    pub access_key_secret: String,
    pub security_token: String,
    pub account: String,
    pub role_name: String,
    pub session_name: String,
    pub expiration: SystemTime,
}

impl WorldData {
    /// The role with this ARN (role name compared case-insensitively).
    pub fn role(&self, arn: &str) -> Option<&Role> {
        let (account, name) = arn::parse_role_arn(arn)?;
        self.roles.get(&arn::role_arn(&account, &name))
    }

    /// The user owning a long-term AccessKeyId.
    pub fn user_by_ak(&self, ak: &str) -> Option<&User> {
        self.users.iter().find(|u| u.access_key_id == ak)
    }

    /// The user `name` in `account`.
    pub fn user(&self, account: &str, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.account == account && u.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests;
