//! RRSA: exchange a projected service-account token (read from a file) via `AssumeRoleWithOIDC`.

use std::path::PathBuf;

use super::{FetchFuture, IdentitySource};
use crate::aliyun::sts::{validate_session_name, AssumeRoleWithOidcRequest};
use crate::aliyun::{Client, Credentials, Error};
use crate::secret::Secret;

/// Credentials from `AssumeRoleWithOIDC`; the token file is re-read on every fetch because
/// kubelet rotates projected tokens.
#[derive(Debug, Clone)]
pub struct OidcSource {
    client: Client,
    role_arn: String,
    provider_arn: String,
    token_file: PathBuf,
    session_name: String,
    duration_seconds: u32,
}

impl OidcSource {
    /// Builds the source; the session name is checked now, the ARNs on each exchange.
    pub fn new(
        client: Client,
        role_arn: String,
        provider_arn: String,
        token_file: PathBuf,
        session_name: String,
        duration_seconds: u32,
    ) -> Result<Self, Error> {
        validate_session_name(&session_name)?;
        Ok(OidcSource { client, role_arn, provider_arn, token_file, session_name, duration_seconds })
    }

    async fn fetch_now(&self) -> Result<Credentials, Error> {
        let raw = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| Error::Io {
                context: format!("reading OIDC token file {}", self.token_file.display()),
                source,
            })
            .map(zeroize::Zeroizing::new)?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(Error::InvalidInput(format!("OIDC token file {} is empty", self.token_file.display())));
        }
        let req = AssumeRoleWithOidcRequest {
            role_arn: self.role_arn.clone(),
            provider_arn: self.provider_arn.clone(),
            oidc_token: Secret::new(token.to_owned()),
            session_name: self.session_name.clone(),
            duration_seconds: self.duration_seconds,
        };
        Ok(self.client.assume_role_with_oidc(&req).await?.credentials)
    }
}

impl IdentitySource for OidcSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.fetch_now())
    }

    fn name(&self) -> &'static str {
        "oidc"
    }
}
