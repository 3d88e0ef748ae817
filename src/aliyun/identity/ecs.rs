//! ECS instance RAM role credentials from the metadata service (ECS "instance RAM role" docs).
//!
//! Hardened mode first: `PUT /latest/api/token`, then GETs carrying the token. When the PUT
//! fails the source falls back to plain GETs, unless IMDSv1 is disabled.

use bytes::Bytes;
use http::Method;

use super::{FetchFuture, IdentitySource};
use crate::aliyun::transport::{self, HttpResponse, Route};
use crate::aliyun::{wire, Credentials, Error, Transport};
use crate::clock::parse_rfc3339;
use crate::secret::Secret;

const TOKEN_PATH: &str = "/latest/api/token";
const ROLE_LIST_PATH: &str = "/latest/meta-data/ram/security-credentials/";
const TOKEN_TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";
/// Lifetime asked for the metadata token, as the SDKs do.
const TOKEN_TTL_SECONDS: &str = "21600";

/// Credentials of the RAM role attached to this ECS instance.
#[derive(Debug, Clone)]
pub struct EcsRamRoleSource {
    transport: Transport,
    base: String,
    role_name: Option<String>,
    imdsv1_disabled: bool,
}

fn validate_role_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "ECS RAM role name {name:?} is invalid: need 1-128 characters of A-Z a-z 0-9 . - _ @"
        )))
    }
}

impl EcsRamRoleSource {
    /// `base` is the metadata base URL (`http://100.100.100.200`); `role_name` skips discovery;
    /// `imdsv1_disabled` makes the hardened token mandatory.
    pub fn new(
        transport: Transport,
        base: &str,
        role_name: Option<String>,
        imdsv1_disabled: bool,
    ) -> Result<Self, Error> {
        transport::check_url(base, Route::Metadata)?;
        if let Some(r) = &role_name {
            validate_role_name(r)?;
        }
        Ok(EcsRamRoleSource { transport, base: base.trim_end_matches('/').to_owned(), role_name, imdsv1_disabled })
    }

    async fn call(&self, method: Method, path: &str, headers: &[(&str, String)]) -> Result<HttpResponse, Error> {
        let uri = transport::check_url(&format!("{}{path}", self.base), Route::Metadata)?;
        let action = format!("metadata {method} {path}");
        let headers = transport::to_header_list(headers)?;
        self.transport.execute(method, &uri, headers, Bytes::new(), &action, Route::Metadata).await
    }

    /// The hardened-mode token, `None` when falling back to plain GETs.
    async fn session_token(&self) -> Result<Option<Secret>, Error> {
        let result = self.call(Method::PUT, TOKEN_PATH, &[(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS.to_owned())]).await;
        let failure = match result {
            Ok(r) if r.status == 200 => {
                let token = String::from_utf8_lossy(&r.body).trim().to_owned();
                if !token.is_empty() {
                    return Ok(Some(Secret::new(token)));
                }
                Error::decode("metadata PUT /latest/api/token", "empty token")
            }
            Ok(r) => wire::upstream_error("metadata PUT /latest/api/token", r.status, &r.headers, &r.body),
            Err(e) => e,
        };
        if self.imdsv1_disabled {
            tracing::warn!(error = %failure, "metadata token request failed and IMDSv1 is disabled");
            return Err(failure);
        }
        tracing::debug!(error = %failure, "metadata token request failed; using plain GETs");
        Ok(None)
    }

    async fn get(&self, path: &str, token: &Option<Secret>) -> Result<HttpResponse, Error> {
        let headers: Vec<(&str, String)> = token.iter().map(|t| (TOKEN_HEADER, t.expose_secret().to_owned())).collect();
        self.call(Method::GET, path, &headers).await
    }

    async fn discover_role(&self, token: &Option<Secret>) -> Result<String, Error> {
        let r = self.get(ROLE_LIST_PATH, token).await?;
        if r.status == 404 {
            return Err(Error::NoIdentity(
                "no RAM role is attached to this ECS instance (metadata role list is 404)".to_owned(),
            ));
        }
        if r.status != 200 {
            return Err(wire::upstream_error("metadata GET role list", r.status, &r.headers, &r.body));
        }
        let text = String::from_utf8_lossy(&r.body);
        let role = text.lines().map(str::trim).find(|l| !l.is_empty()).ok_or_else(|| {
            Error::NoIdentity("no RAM role is attached to this ECS instance (empty role list)".to_owned())
        })?;
        validate_role_name(role)
            .map_err(|_| Error::decode("metadata GET role list", "role name has invalid characters"))?;
        Ok(role.to_owned())
    }

    async fn fetch_now(&self) -> Result<Credentials, Error> {
        let token = self.session_token().await?;
        let role = match &self.role_name {
            Some(r) => r.clone(),
            None => self.discover_role(&token).await?,
        };
        let path = format!("{ROLE_LIST_PATH}{role}");
        let r = self.get(&path, &token).await?;
        let action = "metadata GET role credentials";
        if r.status == 404 {
            return Err(Error::NoIdentity(format!(
                "the metadata service has no credentials for RAM role {role:?}; is it attached to this instance?"
            )));
        }
        if r.status != 200 {
            return Err(wire::upstream_error(action, r.status, &r.headers, &r.body));
        }
        parse_credentials(action, &r.body)
    }
}

/// Reads the metadata credentials JSON; requires `Code == "Success"`.
pub(crate) fn parse_credentials(action: &str, body: &[u8]) -> Result<Credentials, Error> {
    let v = wire::parse_json(action, body)?;
    let code = wire::opt_str(&v, "Code").unwrap_or_default();
    if code != "Success" {
        return Err(Error::Upstream {
            action: action.to_owned(),
            status: 200,
            code: if code.is_empty() { "MetadataNotSuccess".to_owned() } else { code },
            message: "the metadata service did not answer Code=Success".to_owned(),
            request_id: None,
            retry_after: None,
        });
    }
    let expiration = wire::req_str(&v, action, "Expiration")?;
    let expires_at = parse_rfc3339(&expiration)
        .ok_or_else(|| Error::decode(action, format!("Expiration {expiration:?} is not an RFC 3339 time")))?;
    Ok(Credentials {
        access_key_id: wire::req_str(&v, action, "AccessKeyId")?,
        access_key_secret: wire::req_secret(&v, action, "AccessKeySecret")?,
        security_token: Some(wire::req_secret(&v, action, "SecurityToken")?),
        expires_at: Some(expires_at),
    })
}

impl IdentitySource for EcsRamRoleSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.fetch_now())
    }

    fn name(&self) -> &'static str {
        "ecs-ram-role"
    }
}
