//! Where the node's own credentials come from: static keys, environment, ECS RAM role, OIDC,
//! the SDK credentials file.
//!
//! Each source answers "give me credentials now"; caching and refresh-ahead live in the broker's
//! cache, not here. [`DefaultChain::from_env`] picks a source the way the official SDKs do
//! (env AK → OIDC/RRSA → credentials file → ECS metadata, first configured wins, as in
//! aliyun/credentials-go `providers/default.go`; the aliyun-CLI `config.json` step is not
//! implemented). The STS address the OIDC exchange uses honours the SDK variables
//! [`StsEnv`] reads; the client is built with them in `crate::egress`.

mod ecs;
mod oidc;
mod profile;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use ecs::EcsRamRoleSource;
pub use oidc::OidcSource;
pub use profile::{profile_file_problem, validate_profile_name, ProfileSource, DEFAULT_FILES, DEFAULT_PROFILE};

use super::{Client, Credentials, Error};
use crate::secret::Secret;

/// The future a source returns: credentials or a typed error.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Credentials, Error>> + Send + 'a>>;

/// A source of the node's base credentials.
pub trait IdentitySource: Send + Sync + std::fmt::Debug {
    /// Fetches credentials now (no caching inside the source).
    fn fetch(&self) -> FetchFuture<'_>;
    /// Short name for logs and metrics (`static`, `env`, `ecs-ram-role`, `oidc`, `profile`).
    fn name(&self) -> &'static str;
}

/// An environment lookup (`std::env::var(..).ok()` in production, a map in tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Env variable names (same as the official SDKs).
pub mod env_vars {
    /// AccessKeyId.
    pub const ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
    /// AccessKeySecret.
    pub const ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
    /// Optional STS SecurityToken.
    pub const SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
    /// RRSA: role to assume with the OIDC token.
    pub const ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
    /// RRSA: the cluster's OIDC provider.
    pub const OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
    /// RRSA: file holding the projected service-account token.
    pub const OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
    /// Optional RoleSessionName for the OIDC exchange.
    pub const ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
    /// Fixed ECS RAM role name (skips discovery).
    pub const ECS_METADATA: &str = "ALIBABA_CLOUD_ECS_METADATA";
    /// `true` disables the ECS metadata source.
    pub const ECS_METADATA_DISABLED: &str = "ALIBABA_CLOUD_ECS_METADATA_DISABLED";
    /// `true` requires the hardened (token) metadata mode.
    pub const IMDSV1_DISABLED: &str = "ALIBABA_CLOUD_IMDSV1_DISABLED";
    /// Path of the SDK credentials file (INI); default `~/.alibabacloud/credentials`.
    pub const CREDENTIALS_FILE: &str = "ALIBABA_CLOUD_CREDENTIALS_FILE";
    /// Section of the credentials file to use; default `default`.
    pub const PROFILE: &str = "ALIBABA_CLOUD_PROFILE";
}

/// The official SDKs' STS address variables (`ALIBABA_CLOUD_STS_REGION`,
/// `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`), read as aliyun/credentials-go `providers/oidc.go` does:
/// a region gives `sts.{region}.aliyuncs.com`, and `true` (any case) makes it `sts-vpc.`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StsEnv {
    /// `ALIBABA_CLOUD_STS_REGION`, when set and non-empty.
    pub region: Option<String>,
    /// `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED=true`.
    pub vpc: bool,
}

impl StsEnv {
    /// Name of the STS region variable.
    pub const REGION: &'static str = "ALIBABA_CLOUD_STS_REGION";
    /// Name of the VPC switch variable.
    pub const VPC_ENABLED: &'static str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";

    /// Reads both variables.
    pub fn from_lookup(lookup: EnvLookup<'_>) -> StsEnv {
        StsEnv { region: non_empty(lookup, Self::REGION), vpc: is_true(lookup, Self::VPC_ENABLED) }
    }
}

/// Session name used when none is configured.
pub const DEFAULT_SESSION_NAME: &str = "acr-broker";

fn non_empty(lookup: EnvLookup<'_>, name: &str) -> Option<String> {
    lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn is_true(lookup: EnvLookup<'_>, name: &str) -> bool {
    non_empty(lookup, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Fixed credentials from configuration.
#[derive(Debug, Clone)]
pub struct StaticSource {
    credentials: Credentials,
}

impl StaticSource {
    /// A source that always returns this key (and token, if given). Empty values are refused.
    pub fn new(
        access_key_id: String,
        access_key_secret: Secret,
        security_token: Option<Secret>,
    ) -> Result<Self, Error> {
        if access_key_id.trim().is_empty() || access_key_secret.is_empty() {
            return Err(Error::InvalidInput("static credentials need a non-empty access key id and secret".to_owned()));
        }
        Ok(StaticSource {
            credentials: Credentials {
                access_key_id,
                access_key_secret,
                security_token: security_token.filter(|t| !t.is_empty()),
                expires_at: None,
            },
        })
    }
}

impl IdentitySource for StaticSource {
    fn fetch(&self) -> FetchFuture<'_> {
        let c = self.credentials.clone();
        Box::pin(async move { Ok(c) })
    }

    fn name(&self) -> &'static str {
        "static"
    }
}

/// Credentials from `ALIBABA_CLOUD_ACCESS_KEY_ID`/`_SECRET`/`_SECURITY_TOKEN`, read once.
#[derive(Debug, Clone)]
pub struct EnvSource {
    inner: StaticSource,
}

impl EnvSource {
    /// `Ok(None)` when the key variables are unset; an error when only one of id/secret is set.
    pub fn from_lookup(lookup: EnvLookup<'_>) -> Result<Option<Self>, Error> {
        let id = non_empty(lookup, env_vars::ACCESS_KEY_ID);
        let secret = non_empty(lookup, env_vars::ACCESS_KEY_SECRET);
        match (id, secret) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) => {
                let token = non_empty(lookup, env_vars::SECURITY_TOKEN).map(Secret::new);
                Ok(Some(EnvSource { inner: StaticSource::new(id, Secret::new(secret), token)? }))
            }
            (Some(_), None) => Err(Error::InvalidInput(format!(
                "{} is set but {} is not",
                env_vars::ACCESS_KEY_ID,
                env_vars::ACCESS_KEY_SECRET
            ))),
            (None, Some(_)) => Err(Error::InvalidInput(format!(
                "{} is set but {} is not",
                env_vars::ACCESS_KEY_SECRET,
                env_vars::ACCESS_KEY_ID
            ))),
        }
    }
}

impl IdentitySource for EnvSource {
    fn fetch(&self) -> FetchFuture<'_> {
        self.inner.fetch()
    }

    fn name(&self) -> &'static str {
        "env"
    }
}

/// The SDK default chain, resolved once: the first configured source is used for every fetch.
#[derive(Debug)]
pub struct DefaultChain {
    selected: Option<Box<dyn IdentitySource>>,
}

impl DefaultChain {
    /// Picks env AK, else OIDC (only when role ARN, provider ARN and token file are all set),
    /// else the credentials file (only when it exists, see [`ProfileSource::from_lookup`]),
    /// else ECS RAM role (unless `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true`).
    pub fn from_env(lookup: EnvLookup<'_>, client: &Client) -> Result<DefaultChain, Error> {
        if let Some(env) = EnvSource::from_lookup(lookup)? {
            return Ok(DefaultChain::with(Box::new(env)));
        }
        let role = non_empty(lookup, env_vars::ROLE_ARN);
        let provider = non_empty(lookup, env_vars::OIDC_PROVIDER_ARN);
        let file = non_empty(lookup, env_vars::OIDC_TOKEN_FILE);
        if let (Some(role), Some(provider), Some(file)) = (role, provider, file) {
            let session =
                non_empty(lookup, env_vars::ROLE_SESSION_NAME).unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned());
            let source = OidcSource::new(client.clone(), role, provider, file.into(), session, 3600)?;
            return Ok(DefaultChain::with(Box::new(source)));
        }
        if let Some(profile) = ProfileSource::from_lookup(lookup)? {
            return Ok(DefaultChain::with(Box::new(profile)));
        }
        if is_true(lookup, env_vars::ECS_METADATA_DISABLED) {
            return Ok(DefaultChain { selected: None });
        }
        let source = EcsRamRoleSource::new(
            client.transport().clone(),
            &client.endpoints().metadata,
            non_empty(lookup, env_vars::ECS_METADATA),
            is_true(lookup, env_vars::IMDSV1_DISABLED),
        )?;
        Ok(DefaultChain::with(Box::new(source)))
    }

    fn with(source: Box<dyn IdentitySource>) -> Self {
        tracing::debug!(source = source.name(), "identity source selected");
        DefaultChain { selected: Some(source) }
    }
}

impl IdentitySource for DefaultChain {
    fn fetch(&self) -> FetchFuture<'_> {
        match &self.selected {
            Some(s) => s.fetch(),
            None => Box::pin(async {
                Err(Error::NoIdentity(format!(
                    "no credentials in the environment ({} / {}), no OIDC settings ({}, {}, {}), no credentials file ({} or ~/{}), and the ECS metadata source is disabled ({}=true)",
                    env_vars::ACCESS_KEY_ID,
                    env_vars::ACCESS_KEY_SECRET,
                    env_vars::ROLE_ARN,
                    env_vars::OIDC_PROVIDER_ARN,
                    env_vars::OIDC_TOKEN_FILE,
                    env_vars::CREDENTIALS_FILE,
                    DEFAULT_FILES[0],
                    env_vars::ECS_METADATA_DISABLED
                )))
            }),
        }
    }

    fn name(&self) -> &'static str {
        self.selected.as_ref().map_or("none", |s| s.name())
    }
}

/// The default chain from an environment lookup, as a shared source.
pub fn source_from_env(lookup: EnvLookup<'_>, client: &Client) -> Result<Arc<dyn IdentitySource>, Error> {
    Ok(Arc::new(DefaultChain::from_env(lookup, client)?))
}

#[cfg(test)]
mod tests;
