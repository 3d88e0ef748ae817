//! The world file as written (TOML, serde). `super` validates it into a [`super::World`].
//! Every key is documented in `emulator/README.md`.

use serde::Deserialize;

use crate::knobs::Knobs;
use crate::policy::Statement;

/// Top level of a world file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorldFile {
    /// Initial knobs.
    #[serde(default)]
    pub knobs: Option<Knobs>,
    /// Registry token realm settings.
    #[serde(default)]
    pub realm: RealmFile,
    /// ECS metadata service settings.
    #[serde(default)]
    pub metadata: Option<MetadataFile>,
    /// Cloud accounts.
    #[serde(default)]
    pub accounts: Vec<AccountFile>,
    /// Named permission policies.
    #[serde(default)]
    pub policies: Vec<PolicyFile>,
    /// RAM users with long-term access keys.
    #[serde(default)]
    pub users: Vec<UserFile>,
    /// RAM roles.
    #[serde(default)]
    pub roles: Vec<RoleFile>,
    /// OIDC identity providers (RRSA).
    #[serde(default)]
    pub oidc_providers: Vec<OidcProviderFile>,
    /// ACR Enterprise instances.
    #[serde(default)]
    pub instances: Vec<InstanceFile>,
    /// ACR Personal registries (one per account and region).
    #[serde(default)]
    pub personal_registries: Vec<PersonalFile>,
    /// Pre-issued STS sessions (fixed credentials, e.g. the reference test vectors).
    #[serde(default)]
    pub sts_sessions: Vec<StaticSessionFile>,
}

/// `[realm]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RealmFile {
    /// JWT `iss` (the registry's `auth.token.issuer`).
    pub issuer: Option<String>,
    /// `expires_in` of registry tokens, seconds.
    pub token_ttl_seconds: Option<u64>,
    /// PKCS#8 PEM (`PRIVATE KEY`) of a P-256 signing key; generated when absent.
    pub signing_key_pem: Option<String>,
}

/// `[metadata]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataFile {
    /// ARN of the node's ECS RAM role (must trust `ecs.aliyuncs.com`).
    pub role_arn: String,
    /// Lifetime of metadata-issued credentials, seconds (default 21600).
    pub lifetime_seconds: Option<u64>,
}

/// `[[accounts]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFile {
    /// Account id (digits).
    pub id: String,
    /// Free-form label.
    #[serde(default)]
    pub name: Option<String>,
}

/// `[[policies]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Owning account id.
    pub account: String,
    /// Name referenced by users and roles of that account.
    pub name: String,
    /// Statements.
    pub statements: Vec<Statement>,
}

/// `[[users]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// Owning account id.
    pub account: String,
    /// User name.
    pub name: String,
    /// Long-term AccessKeyId.
    pub access_key_id: String,
    /// Long-term AccessKeySecret.
    pub access_key_secret: String,
    /// Names of policies (same account) attached to the user.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// `[[roles]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    /// `acs:ram::<account>:role/<name>`.
    pub arn: String,
    /// MaxSessionDuration, 3600..=43200 (default 3600).
    pub max_session_duration: Option<u64>,
    /// Names of policies (same account) attached to the role.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Trust policy.
    #[serde(default)]
    pub trust: TrustFile,
}

/// `[roles.trust]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    /// Trusted cloud services, e.g. `ecs.aliyuncs.com`, `eci.aliyuncs.com`.
    #[serde(default)]
    pub services: Vec<String>,
    /// Trusted RAM principals: role ARNs, user ARNs (`acs:ram::<a>:user/<n>`), whole accounts
    /// (`acs:ram::<a>:root`).
    #[serde(default)]
    pub ram: Vec<String>,
    /// Trusted OIDC providers with conditions.
    #[serde(default)]
    pub oidc: Vec<OidcTrustFile>,
}

/// `[[roles.trust.oidc]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcTrustFile {
    /// Provider ARN.
    pub provider_arn: String,
    /// Allowed `aud` values (patterns); empty = any of the provider's client ids.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed `sub` values (patterns); empty = any.
    #[serde(default)]
    pub subjects: Vec<String>,
}

/// `[[oidc_providers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderFile {
    /// `acs:ram::<account>:oidc-provider/<name>`.
    pub arn: String,
    /// Expected `iss` of service-account tokens.
    pub issuer_url: String,
    /// Accepted `aud` values (default `["sts.aliyuncs.com"]`).
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// PKCS#8 PEM of the provider's signing key (P-256 → ES256, RSA → RS256); generated
    /// (ES256) when absent.
    pub private_key_pem: Option<String>,
}

/// `[[instances]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFile {
    /// Owning account id.
    pub account: String,
    /// `cri-` + 16 `[a-z0-9]`.
    pub id: String,
    /// Instance name.
    pub name: String,
    /// Region id, e.g. `cn-hangzhou`.
    pub region: String,
    /// InstanceStatus (default RUNNING).
    pub status: Option<String>,
    /// InstanceSpecification (default Enterprise_Basic).
    pub specification: Option<String>,
    /// The registry's `auth.token.service` (default `registry.aliyuncs.com:<region>:china:<id>`).
    pub token_service: Option<String>,
    /// Registry domains.
    #[serde(default)]
    pub domains: Vec<DomainFile>,
}

/// `[[instances.domains]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainFile {
    /// Host name.
    pub domain: String,
    /// `SYSTEM` or `USER`.
    #[serde(rename = "type")]
    pub kind: String,
    /// EndpointType it belongs to (`internet` default, or `vpc`).
    pub endpoint: Option<String>,
}

/// `[[personal_registries]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonalFile {
    /// Owning account id.
    pub account: String,
    /// Region id.
    pub region: String,
    /// The registry's `auth.token.service` (default `registry.aliyuncs.com:<region>:<account>`).
    pub token_service: Option<String>,
}

/// `[[sts_sessions]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSessionFile {
    /// `STS.` AccessKeyId.
    pub access_key_id: String,
    /// Its secret.
    pub access_key_secret: String,
    /// Its SecurityToken.
    pub security_token: String,
    /// Role the session belongs to.
    pub role_arn: String,
    /// RoleSessionName.
    pub session_name: Option<String>,
    /// Expiry, `YYYY-MM-DDTHH:MM:SSZ`.
    pub expiration: String,
}
