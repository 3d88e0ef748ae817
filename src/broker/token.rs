//! Answering a registry's `WWW-Authenticate` challenge: fetch the bearer token from the realm
//! with the ACR credential — only from an allow-listed realm, so a hostile registry cannot make
//! the broker send a credential to a server it controls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Answer, Broker, BrokerError, CredentialRequest};
use crate::challenge::Challenge;
use crate::secret::Secret;
use crate::upstream::Api;

/// A request to answer a registry challenge.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// `host[:port]` of the registry that sent the challenge.
    pub registry: String,
    /// The `WWW-Authenticate` header value, verbatim.
    pub challenge: String,
    /// Annotations, as for `/v1/credentials`.
    pub annotations: BTreeMap<String, String>,
}

/// A bearer token from the realm.
#[derive(Debug, Clone)]
pub struct RegistryBearer {
    /// The token.
    pub token: Secret,
    /// Lifetime in seconds as the realm gave it (at least 60, as docker clients assume).
    pub expires_in: u64,
    /// When it was issued.
    pub issued_at: SystemTime,
}

#[derive(Deserialize)]
struct RealmAnswer {
    token: Option<Secret>,
    access_token: Option<Secret>,
    expires_in: Option<u64>,
    issued_at: Option<String>,
}

/// The action name of realm calls in metrics and errors.
const REALM_ACTION: &str = "RegistryToken";

/// What the realm said to a credential.
enum RealmReply {
    /// 200 with this body.
    Token(bytes::Bytes),
    /// 401/403 (or another refusal status): the credential was not accepted.
    Refused(u16),
}

/// Largest realm answer accepted.
const MAX_REALM_BODY: usize = 64 * 1024;

impl Broker {
    /// One GET of the realm with `cred` as Basic auth.
    async fn realm_token(&self, url: &str, cred: &super::Issued) -> Result<RealmReply, Arc<BrokerError>> {
        let action = REALM_ACTION;
        let basic =
            data_encoding::BASE64.encode(format!("{}:{}", cred.username, cred.password.expose_secret()).as_bytes());
        let headers = [("authorization", format!("Basic {basic}"))];
        let live = self.live();
        let (status, _, body) = live
            .upstream
            .call(Api::Other, action, || live.client.transport().get(url, &headers))
            .await
            .map_err(|e| Arc::new(BrokerError::upstream(action, e)))?;
        match status {
            200 => Ok(RealmReply::Token(body)),
            429 | 500..=599 => Err(Arc::new(BrokerError::Unavailable {
                action,
                code: format!("HTTP{status}"),
                message: format!("the token realm is unavailable (HTTP {status})"),
                retry_after: Duration::from_secs(2),
            })),
            _ => Ok(RealmReply::Refused(status)),
        }
    }

    /// Fetches the registry bearer token the challenge asks for, with this node's ACR credential.
    pub async fn registry_token(
        self: &Arc<Self>,
        req: &TokenRequest,
    ) -> Result<(RegistryBearer, Answer), Arc<BrokerError>> {
        let bad = |code: &'static str, m: String| Arc::new(BrokerError::bad_request(code, m));
        let challenge =
            crate::challenge::parse(&req.challenge).map_err(|e| bad("invalid_challenge", format!("challenge: {e}")))?;
        let (realm, service, scopes) = match challenge {
            Challenge::Bearer { realm, service, scopes } => (realm, service, scopes),
            Challenge::Basic { .. } => {
                return Err(bad(
                    "basic_challenge",
                    String::from(
                        "the registry asks for Basic auth: use the username and password from /v1/credentials",
                    ),
                ))
            }
        };
        let realm_url = crate::challenge::realm_is_allowed(&realm, &self.config().allowed_realm_hosts)
            .map_err(|e| bad("realm_not_allowed", format!("realm {realm:?}: {e}")))?;
        let request = CredentialRequest {
            registry: req.registry.clone(),
            annotations: req.annotations.clone(),
            service_account_token: None,
        };
        let (mut answer, mut key) = self.credentials_keyed(&request).await?;
        let mut refetched = false;
        let body = loop {
            let cred = &answer.credential;
            let url = realm_url.token_url(service.as_deref(), &scopes, Some(&cred.username));
            match self.realm_token(&url, cred).await? {
                RealmReply::Token(body) => break body,
                RealmReply::Refused(status) => {
                    // The registry does not take a credential we still think valid (revoked,
                    // rotated upstream): drop it and fetch a new one — once per window, so a
                    // registry that refuses everything cannot make us hammer ACR.
                    if !refetched && self.refused.get(&key).is_none() {
                        self.refused.insert(key.clone(), ());
                        self.credentials.invalidate_value(&key, &answer.credential).await;
                        self.forget_answers();
                        tracing::warn!(registry = %req.registry, status, "the token realm refused a cached credential; fetching a new one");
                        (answer, key) = self.credentials_keyed(&request).await?;
                        refetched = true;
                        continue;
                    }
                    return Err(Arc::new(BrokerError::Denied {
                        action: REALM_ACTION,
                        code: format!("HTTP{status}"),
                        message: format!("the token realm refused the ACR credential (HTTP {status})"),
                    }));
                }
            }
        };
        let action = REALM_ACTION;
        let cred = &answer.credential;
        if body.len() > MAX_REALM_BODY {
            return Err(Arc::new(BrokerError::BadUpstream { action, message: String::from("realm answer too large") }));
        }
        let parsed: RealmAnswer = serde_json::from_slice(&body).map_err(|e| {
            Arc::new(BrokerError::BadUpstream { action, message: format!("realm answer is not token JSON: {e}") })
        })?;
        let token = parsed.token.or(parsed.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
            Arc::new(BrokerError::BadUpstream { action, message: String::from("realm answer has no token") })
        })?;
        let now = self.now();
        let issued_at = parsed.issued_at.as_deref().and_then(crate::clock::parse_rfc3339).unwrap_or(now);
        let expires_in = parsed.expires_in.unwrap_or(60).max(60);
        // Never hand out a token that ends after the credential it was obtained with.
        let cred_left = cred.expires_at.duration_since(now).unwrap_or(Duration::ZERO).as_secs();
        Ok((RegistryBearer { token, expires_in: expires_in.min(cred_left.max(1)), issued_at }, answer))
    }
}
