//! STS 2015-04-01: `AssumeRole` (V3-signed) and `AssumeRoleWithOIDC` (anonymous RPC).

use http::Method;
use serde_json::Value;

use super::client::SignedCall;
use super::{wire, Client, Credentials, Error};
use crate::clock::parse_rfc3339;
use crate::secret::Secret;

const VERSION: &str = "2015-04-01";

/// Parameters of `AssumeRole`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleRequest {
    /// `acs:ram::<account>:role/<name>`.
    pub role_arn: String,
    /// 2–64 of `[A-Za-z0-9.@_-]`; shows up in the assumed ARN and the audit trail.
    pub session_name: String,
    /// 900 up to the role's MaxSessionDuration (at most 43200).
    pub duration_seconds: u32,
    /// Optional JSON policy narrowing the session (1–2048 characters).
    pub policy: Option<String>,
    /// Optional ExternalId the role's trust policy may require (2–1224 characters).
    pub external_id: Option<String>,
}

/// Parameters of `AssumeRoleWithOIDC` (RRSA / service-account token exchange).
#[derive(Debug, Clone)]
pub struct AssumeRoleWithOidcRequest {
    /// Role to assume.
    pub role_arn: String,
    /// `acs:ram::<account>:oidc-provider/<name>`.
    pub provider_arn: String,
    /// The raw OIDC JWT.
    pub oidc_token: Secret,
    /// 2–64 of `[A-Za-z0-9.@_-]`.
    pub session_name: String,
    /// 900 up to the role's MaxSessionDuration (at most 43200).
    pub duration_seconds: u32,
}

/// Temporary credentials from STS and the ARN of the assumed role session.
#[derive(Debug, Clone)]
pub struct StsSession {
    /// STS AccessKeyId (`STS.…`), secret, token and expiry.
    pub credentials: Credentials,
    /// `AssumedRoleUser.Arn` (opaque).
    pub assumed_role_arn: String,
}

/// Checks a RoleSessionName: 2–64 characters of `A-Z a-z 0-9 . @ _ -`.
pub fn validate_session_name(name: &str) -> Result<(), Error> {
    let ok = (2..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "RoleSessionName {name:?} is invalid: need 2-64 characters of A-Z a-z 0-9 . @ _ -"
        )))
    }
}

fn validate_arn(what: &str, arn: &str, kind: &str) -> Result<(), Error> {
    let ok = arn.starts_with("acs:ram::")
        && arn.len() <= 1024
        && arn.contains(&format!(":{kind}/"))
        && !arn.ends_with('/')
        && !arn.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("{what} {arn:?} is invalid: expected acs:ram::<account-id>:{kind}/<name>")))
    }
}

fn validate_duration(seconds: u32) -> Result<(), Error> {
    if (900..=43200).contains(&seconds) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("DurationSeconds {seconds} is out of range 900..=43200")))
    }
}

impl AssumeRoleRequest {
    /// Validates every field; errors name the field and the value.
    pub fn validate(&self) -> Result<(), Error> {
        validate_arn("RoleArn", &self.role_arn, "role")?;
        validate_session_name(&self.session_name)?;
        validate_duration(self.duration_seconds)?;
        if let Some(p) = &self.policy {
            if p.is_empty() || p.chars().count() > 2048 {
                return Err(Error::InvalidInput(format!(
                    "Policy must be 1-2048 characters, got {}",
                    p.chars().count()
                )));
            }
        }
        if let Some(x) = &self.external_id {
            let ok = (2..=1224).contains(&x.len())
                && x.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b));
            if !ok {
                return Err(Error::InvalidInput(format!(
                    "ExternalId {x:?} is invalid: need 2-1224 characters of A-Z a-z 0-9 _ + = , . @ : / -"
                )));
            }
        }
        Ok(())
    }

    fn to_query(&self) -> Vec<(String, String)> {
        let mut q = vec![
            ("RoleArn".to_owned(), self.role_arn.clone()),
            ("RoleSessionName".to_owned(), self.session_name.clone()),
            ("DurationSeconds".to_owned(), self.duration_seconds.to_string()),
        ];
        if let Some(p) = &self.policy {
            q.push(("Policy".to_owned(), p.clone()));
        }
        if let Some(x) = &self.external_id {
            q.push(("ExternalId".to_owned(), x.clone()));
        }
        q
    }
}

impl AssumeRoleWithOidcRequest {
    /// Validates every field; errors name the field (and the value, except the token).
    pub fn validate(&self) -> Result<(), Error> {
        validate_arn("RoleArn", &self.role_arn, "role")?;
        validate_arn("OIDCProviderArn", &self.provider_arn, "oidc-provider")?;
        validate_session_name(&self.session_name)?;
        validate_duration(self.duration_seconds)?;
        let len = self.oidc_token.len();
        if !(4..=20000).contains(&len) {
            return Err(Error::InvalidInput(format!("OIDCToken must be 4-20000 characters, got {len}")));
        }
        Ok(())
    }
}

impl Client {
    /// `AssumeRole` as `caller`: V3-signed POST `/` with the parameters in the query.
    pub async fn assume_role(&self, caller: &Credentials, req: &AssumeRoleRequest) -> Result<StsSession, Error> {
        req.validate()?;
        let base = self.endpoints().sts.clone();
        let (_, body) = self
            .call_signed(
                caller,
                SignedCall {
                    base: &base,
                    method: Method::POST,
                    path: "/",
                    query: req.to_query(),
                    action: "AssumeRole",
                    version: VERSION,
                },
            )
            .await?;
        parse_session("AssumeRole", &body)
    }

    /// `AssumeRoleWithOIDC`: unsigned, the OIDC token is the proof of identity.
    pub async fn assume_role_with_oidc(&self, req: &AssumeRoleWithOidcRequest) -> Result<StsSession, Error> {
        req.validate()?;
        let base = self.endpoints().sts.clone();
        let duration = req.duration_seconds.to_string();
        let form = [
            ("RoleArn", req.role_arn.as_str()),
            ("OIDCProviderArn", req.provider_arn.as_str()),
            ("OIDCToken", req.oidc_token.expose_secret()),
            ("RoleSessionName", req.session_name.as_str()),
            ("DurationSeconds", duration.as_str()),
        ];
        let (_, body) = self.call_anonymous_rpc(&base, "AssumeRoleWithOIDC", VERSION, &form).await?;
        parse_session("AssumeRoleWithOIDC", &body)
    }
}

/// Reads `Credentials{…}` and `AssumedRoleUser.Arn` from an AssumeRole(-WithOIDC) answer.
pub(crate) fn parse_session(action: &str, body: &Value) -> Result<StsSession, Error> {
    let expiration = wire::req_str(body, action, "Credentials.Expiration")?;
    let expires_at = parse_rfc3339(&expiration).ok_or_else(|| {
        Error::decode(action, format!("Credentials.Expiration {expiration:?} is not an RFC 3339 time"))
    })?;
    Ok(StsSession {
        credentials: Credentials {
            access_key_id: wire::req_str(body, action, "Credentials.AccessKeyId")?,
            access_key_secret: wire::req_secret(body, action, "Credentials.AccessKeySecret")?,
            security_token: Some(wire::req_secret(body, action, "Credentials.SecurityToken")?),
            expires_at: Some(expires_at),
        },
        assumed_role_arn: wire::req_str(body, action, "AssumedRoleUser.Arn")?,
    })
}

#[cfg(test)]
#[path = "sts_tests.rs"]
mod tests;
