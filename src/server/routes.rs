//! Request routing, body validation and the mapping of broker errors to HTTP answers.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::json;

use super::{Peer, Role, State};
use crate::audit::AuditRecord;
use crate::broker::{Answer, BrokerError, CredentialRequest, TokenRequest};
use crate::cache::Outcome;
use crate::secret::Secret;

/// Time allowed for a request body to arrive once the headers did.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    reply_bytes(status, Bytes::from(body.to_string()))
}

fn reply_bytes(status: StatusCode, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

fn error_reply(status: StatusCode, code: &str, message: &str) -> Reply {
    reply(status, json!({"error": {"code": code, "message": message}}))
}

/// The HTTP status a broker error maps to.
pub fn error_status(e: &BrokerError) -> StatusCode {
    match e {
        BrokerError::BadRequest { .. } => StatusCode::BAD_REQUEST,
        BrokerError::NotOurs { .. } => StatusCode::NOT_FOUND,
        BrokerError::Denied { .. } => StatusCode::FORBIDDEN,
        BrokerError::BadUpstream { .. } => StatusCode::BAD_GATEWAY,
        BrokerError::Unavailable { .. } | BrokerError::NoIdentity(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn broker_error_reply(e: &BrokerError) -> Reply {
    let status = error_status(e);
    let mut r = error_reply(status, e.code(), &e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_GATEWAY {
        let secs = match e {
            BrokerError::Unavailable { retry_after, .. } => retry_after.as_secs_f64().ceil().max(1.0) as u64,
            _ => 5,
        };
        if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    registry: Option<String>,
    image: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    service_account_token: Option<Secret>,
    #[serde(default)]
    service_account_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    registry: String,
    challenge: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    registry: Option<String>,
    image: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The registry a body names, directly or through an image reference.
fn registry_of(registry: Option<String>, image: Option<&str>) -> Result<String, Box<Reply>> {
    let bad = |code: &str, message: &str| Box::new(error_reply(StatusCode::BAD_REQUEST, code, message));
    match (registry, image) {
        (Some(r), _) => Ok(r),
        (None, Some(image)) => crate::registry::host_from_image(image)
            .map(|h| h.as_str().to_owned())
            .map_err(|e| bad("invalid_image", &format!("image {image:?}: {e}"))),
        (None, None) => Err(bad("missing_registry", "body needs \"registry\" or \"image\"")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefetchBody {
    images: Vec<String>,
}

/// Most images one prefetch call may name.
const MAX_PREFETCH: usize = 256;

/// Routes one request; never fails (every error becomes a JSON answer).
pub async fn handle(req: Request<hyper::body::Incoming>, state: &Arc<State>, role: Role, peer: Peer) -> Reply {
    let started = Instant::now();
    let surface = surface_of(&req);
    if !peer.allowed {
        return error_reply(
            StatusCode::FORBIDDEN,
            "peer_not_allowed",
            "this uid/gid may not use the acr-broker socket",
        );
    }
    if role == Role::Api {
        if let Some(r) = host_refusal(&req, peer) {
            return r;
        }
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (role, &method, path.as_str()) {
        (_, &Method::GET, "/healthz") => reply(StatusCode::OK, json!({"status": "ok"})),
        (_, &Method::GET, "/readyz") => {
            let (ready, reason) = state.readiness.status();
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            reply(status, json!({"ready": ready, "reason": reason}))
        }
        (Role::Metrics, &Method::GET, "/metrics") => {
            state.broker.publish_cache_stats();
            let (ct, body) = state.broker.metrics().render();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            if let Ok(v) = header::HeaderValue::from_str(&ct) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        (Role::Api, &Method::POST, "/v1/credentials") => {
            let body = match read_json::<CredentialsBody>(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let registry = match registry_of(body.registry, body.image.as_deref()) {
                Ok(r) => r,
                Err(r) => return *r,
            };
            let mut annotations = body.annotations;
            if body.service_account_token.is_some() {
                // The ServiceAccount's annotations stand in for the pod's (KEP-4412 mode).
                for (k, v) in body.service_account_annotations {
                    annotations.entry(k).or_insert(v);
                }
            }
            let creq = CredentialRequest { registry, annotations, service_account_token: body.service_account_token };
            serve_credentials(state, &creq, surface, peer, started).await
        }
        (Role::Api, &Method::GET, p) if p.starts_with("/v1/credentials/") => {
            let raw = &p["/v1/credentials/".len()..];
            let registry = percent_decode(raw);
            let creq = CredentialRequest { registry, ..CredentialRequest::default() };
            serve_credentials(state, &creq, surface, peer, started).await
        }
        (Role::Api, &Method::POST, "/v1/explain") => {
            let body = match read_json::<ExplainBody>(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let registry = match registry_of(body.registry, body.image.as_deref()) {
                Ok(r) => r,
                Err(r) => return *r,
            };
            let explanation = state.broker.explain(&registry, &body.annotations).await;
            match serde_json::to_value(&explanation) {
                Ok(v) => reply(StatusCode::OK, v),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "internal", &format!("cannot encode: {e}")),
            }
        }
        (Role::Api, &Method::POST, "/v1/token") => {
            let body = match read_json::<TokenBody>(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let treq =
                TokenRequest { registry: body.registry, challenge: body.challenge, annotations: body.annotations };
            let result = state.broker.registry_token(&treq).await;
            let (outcome, r) = match result {
                Ok((bearer, answer)) => {
                    state.audit.record(AuditRecord { answer, peer, surface: "token" }).await;
                    let r = reply(
                        StatusCode::OK,
                        json!({
                            "token": bearer.token.expose_secret(),
                            "expires_in": bearer.expires_in,
                            "issued_at": crate::clock::rfc3339(bearer.issued_at),
                        }),
                    );
                    ("ok", r)
                }
                Err(e) => (e.outcome(), broker_error_reply(&e)),
            };
            state.broker.metrics().observe_request("token", outcome, started.elapsed());
            r
        }
        (Role::Api, &Method::POST, "/v1/prefetch") => {
            let body = match read_json::<PrefetchBody>(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            if body.images.len() > MAX_PREFETCH {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    "too_many_images",
                    &format!("at most {MAX_PREFETCH} images per call"),
                );
            }
            let results = state.broker.prefetch(&body.images).await;
            let items: Vec<_> = results
                .iter()
                .map(|(image, r)| match r {
                    Ok(a) => json!({"image": image, "ok": true, "registry": a.registry,
                        "expires_at": crate::clock::rfc3339(a.credential.expires_at)}),
                    Err(e) => {
                        json!({"image": image, "ok": false, "error": {"code": e.code(), "message": e.to_string()}})
                    }
                })
                .collect();
            state.broker.metrics().observe_request("prefetch", "ok", started.elapsed());
            reply(StatusCode::OK, json!({"results": items}))
        }
        (
            _,
            _,
            "/healthz" | "/readyz" | "/metrics" | "/v1/credentials" | "/v1/token" | "/v1/prefetch" | "/v1/explain",
        ) => error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        ),
        _ => {
            error_reply(StatusCode::NOT_FOUND, "unknown_route", &format!("no route {method} {}", truncate(&path, 128)))
        }
    }
}

/// On a loopback TCP listener, the 421 for a request whose `Host` is not a loopback name for
/// this port: the DNS-rebinding defence ([`super::host_is_loopback`]). Unix-socket requests pass.
fn host_refusal<B>(req: &Request<B>, peer: Peer) -> Option<Reply> {
    let port = peer.local_port?;
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    if super::host_is_loopback(host, port) {
        return None;
    }
    tracing::warn!(target: "audit", peer = ?peer.addr, uid = peer.uid, host = ?host.map(|h| truncate(h, 128)),
        "refused a request whose Host is not a loopback name (DNS rebinding defence)");
    Some(error_reply(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_loopback",
        &format!("Host must be 127.0.0.1:{port}, [::1]:{port} or localhost:{port} on this listener"),
    ))
}

async fn serve_credentials(
    state: &Arc<State>,
    req: &CredentialRequest,
    surface: &'static str,
    peer: Peer,
    started: Instant,
) -> Reply {
    let result = state.broker.credentials(req).await;
    let (outcome, r) = match result {
        Ok(answer) => {
            let body = credential_body(&answer);
            state.audit.record(AuditRecord { answer, peer, surface }).await;
            ("ok", reply_bytes(StatusCode::OK, body))
        }
        Err(e) => {
            // `?` quotes and escapes the caller's raw text so it cannot forge log lines.
            tracing::info!(target: "audit", pid = peer.pid, uid = peer.uid, surface, registry = ?truncate(without_userinfo(&req.registry), 256),
                outcome = e.outcome(), code = e.code(), "credential request refused");
            (e.outcome(), broker_error_reply(&e))
        }
    };
    state.broker.metrics().observe_request(surface, outcome, started.elapsed());
    r
}

/// The JSON answer for a credential: rendered once per warm cached credential (and registry
/// name), then shared by every request that gets the same credential.
fn credential_body(answer: &Answer) -> Bytes {
    let c = &answer.credential;
    if let Some((registry, body)) = c.rendered.get() {
        if **registry == *answer.registry {
            return body.to_bytes();
        }
    }
    let body = Secret::new(
        json!({
            "username": c.username,
            "password": c.password.expose_secret(),
            "expires_at": crate::clock::rfc3339(c.expires_at),
            "registry": answer.registry,
            "region": c.region.as_str(),
            "instance_id": c.instance_id.as_ref().map(|i| i.as_str()),
            "edition": c.edition.as_str(),
        })
        .to_string(),
    );
    let bytes = body.to_bytes();
    // Kept only once the credential is warm (served from the cache): a credential fetched and
    // served once costs no extra memory. The first registry name wins the slot; another name for
    // the same credential (the VPC domain of the same instance, say) is rendered per request.
    if matches!(answer.outcome, Outcome::Hit | Outcome::Stale) {
        let _ = c.rendered.set((answer.registry.as_str().into(), body));
    }
    bytes
}

/// Which client sent the request, from its `User-Agent` (the shims name themselves).
fn surface_of<B>(req: &Request<B>) -> &'static str {
    let agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if agent.starts_with("docker-credential-acr-broker") {
        "helper"
    } else if agent.starts_with("acr-broker-kubelet") {
        "kubelet"
    } else if agent.starts_with("acr-broker-cli") {
        "cli"
    } else {
        "api"
    }
}

/// Reads a JSON body: `application/json` only, at most [`MAX_BODY_BYTES`], unknown fields rejected.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<hyper::body::Incoming>) -> Result<T, Reply> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) {
        return Err(error_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // A small body usually came with the head: take it without arming a timer. Only a body
    // still on its way gets the timeout.
    let mut collect = std::pin::pin!(Limited::new(req.into_body(), MAX_BODY_BYTES).collect());
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        std::task::Poll::Ready(done) => Ok(done),
        std::task::Poll::Pending => tokio::time::timeout(BODY_TIMEOUT, collect).await,
    };
    let bytes = match collected {
        Err(_) => {
            return Err(error_reply(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
            ))
        }
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(error_reply(StatusCode::BAD_REQUEST, "body_read_failed", &format!("reading the body: {e}")))
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| error_reply(StatusCode::BAD_REQUEST, "invalid_json", &format!("request body: {e}")))
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned(); // the usual registry host: nothing to decode
    }
    let decoded: Vec<u8> = form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The text after any `user:pass@`, so a caller's mistake never writes a password to the log.
fn without_userinfo(s: &str) -> &str {
    s.rsplit_once('@').map_or(s, |(_, host)| host)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_text_drops_userinfo() {
        assert_eq!(without_userinfo("user:hunter2@registry.example.com"), "registry.example.com");
        assert_eq!(without_userinfo("registry.example.com"), "registry.example.com");
    }

    #[test]
    fn registry_path_segments_decode() {
        assert_eq!(percent_decode("127.0.0.1%3A5000"), "127.0.0.1:5000");
        assert_eq!(
            percent_decode("demo-registry.cn-hangzhou.cr.aliyuncs.com"),
            "demo-registry.cn-hangzhou.cr.aliyuncs.com"
        );
        assert_eq!(percent_decode("a+b"), "a+b");
    }

    #[test]
    fn statuses_follow_the_contract() {
        use std::time::Duration;
        assert_eq!(error_status(&BrokerError::NotOurs { host: "x".into(), reason: None }), StatusCode::NOT_FOUND);
        let denied = BrokerError::Denied {
            action: "GetAuthorizationToken",
            code: "NoPermission".into(),
            message: String::new(),
        };
        assert_eq!(error_status(&denied), StatusCode::FORBIDDEN);
        let busy = BrokerError::Unavailable {
            action: "AssumeRole",
            code: "Throttling.Api".into(),
            message: String::new(),
            retry_after: Duration::from_millis(1500),
        };
        let r = broker_error_reply(&busy);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("2"));
    }
}
