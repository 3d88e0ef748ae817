//! The loopback registry mirror: containerd's `hosts.toml` names it as a mirror of an ACR
//! registry, and it adds the node's credentials itself, so runtime pulls that no credential
//! helper sees (the sandbox image, CRI pulls outside the kubelet plugin's `matchImages`, `ctr`,
//! lazy-pull snapshotters) need no secret anywhere.
//!
//! Rules that shape the code (README "Registry mirror for containerd" has the why):
//! - Refused before anything goes upstream: a peer outside `allowed_uids`/`allowed_gids` (403),
//!   a `Host` that is not a loopback name (421, DNS rebinding), a method other than GET/HEAD
//!   (405), a path outside the v2 read grammar or a missing/malformed `ns` (400, [`route`]), and
//!   an `ns` the node defaults do not serve (404, so containerd falls back to its next host).
//! - The upstream is `https://<ns>` (`http://` for a loopback registry). The credential is what
//!   `GET /v1/credentials/{ns}` would serve; bearer tokens come through the broker's one
//!   challenge path with its realm allow-list ([`auth`]).
//! - Only an allow-list of headers crosses in either direction: the client's `Authorization`,
//!   `Cookie` and hop-by-hop headers never reach the registry, and redirects (ACR sends blobs
//!   as 307 to OSS) go back to the client unfollowed, so the credential never meets a third host.
//! - Bodies stream with backpressure; a client that goes away drops the upstream response.

mod auth;
pub mod hosts;
mod metrics;
pub mod route;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use crate::broker::{Answer, Broker, BrokerError, CredentialRequest};
use crate::clock::SharedClock;
use crate::config::MirrorConfig;
use crate::server::Peer;
pub use auth::{is_usable, Scheme, EXPIRY_MARGIN};
pub use metrics::MirrorMetrics;
use route::{Kind, RouteError, V2Request};

/// Error type of streamed bodies.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What the mirror answers with: a JSON error or the registry's body, streamed.
pub type MirrorBody = BoxBody<Bytes, BoxError>;

/// Request headers passed to the registry (everything else, `Authorization` and `Cookie`
/// included, is dropped).
const FORWARD_REQUEST: &[HeaderName] = &[
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

/// Response headers passed back to the client.
const FORWARD_RESPONSE: &[&str] = &[
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "content-encoding",
    "etag",
    "last-modified",
    "docker-content-digest",
    "docker-distribution-api-version",
    "oci-filters-applied",
];

type Upstream = HyperClient<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The mirror: shared by every connection of its listener.
pub struct Mirror {
    broker: Arc<Broker>,
    client: Upstream,
    auth: auth::AuthCache,
    metrics: MirrorMetrics,
    upstream_timeout: Duration,
    port: u16,
    /// `[mirror] registries`: when not empty, the only `ns` values served (checked before the
    /// broker, so an unlisted registry costs no cloud call either).
    registries: Vec<String>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("port", &self.port).field("auth", &self.auth).finish_non_exhaustive()
    }
}

/// Why a request ended before or instead of a registry answer.
struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
    outcome: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: impl Into<String>, outcome: &'static str) -> Refusal {
        Refusal { status, code: code.to_owned(), message: message.into(), outcome }
    }

    fn from_broker(e: &BrokerError) -> Refusal {
        let status = crate::server::error_status(e);
        let outcome = if status == StatusCode::NOT_FOUND { "not_served" } else { e.outcome() };
        Refusal::new(status, e.code(), e.to_string(), outcome)
    }

    fn into_response(self) -> Response<MirrorBody> {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}}).to_string();
        let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
        *r.status_mut() = self.status;
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        r
    }
}

impl Mirror {
    /// A mirror serving on loopback `port` with the broker's credentials.
    pub fn new(
        broker: Arc<Broker>,
        clock: SharedClock,
        config: &MirrorConfig,
        port: u16,
    ) -> Result<Arc<Mirror>, crate::aliyun::Error> {
        use crate::aliyun::transport::{https_connector, plain_connector, read_ca_file};
        // Registries are trusted like the cloud APIs: the compiled-in roots plus [aliyun] ca_file.
        let extra_roots = match &broker.config().aliyun.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https_connector(plain_connector(), &extra_roots)?);
        let metrics = MirrorMetrics::new(broker.metrics());
        Ok(Arc::new(Mirror {
            broker,
            client,
            auth: auth::AuthCache::new(clock),
            metrics,
            upstream_timeout: config.upstream_timeout,
            port,
            registries: config.registries.clone(),
        }))
    }

    /// Answers one request (never fails: every refusal is a JSON error).
    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>, peer: Peer) -> Response<MirrorBody> {
        let method = req.method().clone();
        let kind = route::parse(req.uri().path(), req.uri().query()).map(|r| r.kind.label()).unwrap_or("refused");
        match self.answer(req, peer).await {
            Ok((outcome, resp)) => {
                self.metrics.request(kind, outcome);
                resp
            }
            Err(refusal) => {
                self.metrics
                    .request(if refusal.outcome == "upstream_error" { kind } else { "refused" }, refusal.outcome);
                tracing::debug!(method = %method, status = refusal.status.as_u16(), code = %refusal.code, "mirror request refused");
                refusal.into_response()
            }
        }
    }

    async fn answer(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: Peer,
    ) -> Result<(&'static str, Response<MirrorBody>), Refusal> {
        // 1. Who is asking, and through which name (the checks every credential listener makes).
        if !peer.allowed {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "peer_not_allowed",
                "this uid/gid may not use the acr-broker mirror (server.allowed_uids / allowed_gids)",
                "peer_not_allowed",
            ));
        }
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        if !crate::server::host_is_loopback(host, self.port) {
            tracing::warn!(target: "audit", peer = ?peer.addr, uid = peer.uid, "mirror refused a request whose Host is not a loopback name");
            return Err(Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_loopback",
                format!("Host must be 127.0.0.1:{0} or localhost:{0} on the mirror", self.port),
                "host_not_loopback",
            ));
        }
        // 2. Only registry reads, only v2 paths, and an `ns` naming the registry.
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("the mirror serves GET and HEAD only, not {method}"),
                "method_not_allowed",
            ));
        }
        let v2 = route::parse(req.uri().path(), req.uri().query()).map_err(|e| {
            let code = match e {
                RouteError::BadPath(_) => "bad_path",
                RouteError::BadNs(_) => "bad_ns",
            };
            Refusal::new(StatusCode::BAD_REQUEST, code, e.to_string(), code)
        })?;
        // 3. Policy: a listed registry (when a list is configured), and exactly what
        //    `GET /v1/credentials/{ns}` would serve (404 when not ours: containerd tries the next host).
        if !self.registries.is_empty() && !self.registries.contains(&v2.ns) {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "not_served",
                format!("{} is not in [mirror] registries; not served by this mirror", v2.ns),
                "not_served",
            ));
        }
        let creq = CredentialRequest { registry: v2.ns.clone(), ..CredentialRequest::default() };
        let answer = self.broker.credentials(&creq).await.map_err(|e| Refusal::from_broker(&e))?;
        // 4. The registry, with the authorization it asked for last time (or none yet).
        let uri = upstream_uri(&v2)?;
        let scope = v2.scope();
        let mut authorization = self.auth.cached(&v2.ns, scope.as_deref());
        if authorization.is_none() {
            if let Some(scheme) = self.auth.scheme(&v2.ns) {
                authorization = Some(self.authorize(&v2, &scheme, &answer, None).await?);
            }
        }
        let mut resp = self.send(&method, &uri, req.headers(), authorization.as_ref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            // Challenged (first contact, or the token expired or was revoked): answer once, retry once.
            let www = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(scheme) = www.and_then(|w| self.auth.learn(&v2.ns, &w)) {
                let fresh = self.authorize(&v2, &scheme, &answer, authorization.as_ref()).await?;
                resp = self.send(&method, &uri, req.headers(), Some(&fresh)).await?;
            }
        }
        let status = resp.status();
        if v2.kind == Kind::Manifest {
            let caller = peer.addr.map_or_else(|| String::from("-"), |a| a.to_string());
            tracing::info!(target: "audit", surface = "mirror", registry = %v2.ns, repository = v2.name.as_deref().unwrap_or("-"),
                reference = v2.reference.as_deref().unwrap_or("-"), method = %method, status = status.as_u16(),
                peer = %caller, uid = peer.uid, "mirror manifest resolution");
        }
        let outcome = match status.as_u16() {
            200..=299 => "ok",
            300..=399 => "redirect",
            401 | 403 => "upstream_denied",
            404 => "upstream_not_found",
            _ => "upstream_error",
        };
        Ok((outcome, self.relay(resp, &method, v2.kind)))
    }

    /// The authorization `scheme` asks for, other than `refused` (the value the registry just
    /// turned down); concurrent callers share one fetch. Counts real fetches.
    async fn authorize(
        &self,
        v2: &V2Request,
        scheme: &Scheme,
        answer: &Answer,
        refused: Option<&HeaderValue>,
    ) -> Result<HeaderValue, Refusal> {
        let label = match scheme {
            Scheme::Bearer { .. } => "bearer",
            Scheme::Basic => "basic",
        };
        let result = self.auth.get_or_fetch(&self.broker, &v2.ns, v2.scope().as_deref(), scheme, answer, refused).await;
        match &result {
            Ok((_, true)) => self.metrics.token_fetch(label, "ok"),
            Ok((_, false)) => {}
            Err(_) => self.metrics.token_fetch(label, "error"),
        }
        result.map(|(value, _)| value).map_err(|e| {
            let mut r = Refusal::from_broker(&e);
            // The registry is ours but its token could not be had: not a "try the next host" 404.
            if r.status == StatusCode::NOT_FOUND {
                r.status = StatusCode::BAD_GATEWAY;
            }
            r.outcome = "token_failed";
            r
        })
    }

    /// One upstream request with the allow-listed headers; bounded until the headers arrive.
    async fn send(
        &self,
        method: &Method,
        uri: &http::Uri,
        from_client: &http::HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<hyper::body::Incoming>, Refusal> {
        let mut b = Request::builder().method(method.clone()).uri(uri.clone());
        for name in FORWARD_REQUEST {
            for v in from_client.get_all(name) {
                b = b.header(name, v.clone());
            }
        }
        b = b.header(header::USER_AGENT, concat!("acr-broker-mirror/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a.clone());
        }
        let req = b.body(Empty::new()).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cannot build the upstream request: {e}"),
                "bad_path",
            )
        })?;
        let unreachable = |detail: String| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "registry_unreachable",
                format!("registry {}: {detail}", uri.authority().map(|a| a.as_str()).unwrap_or("?")),
                "upstream_error",
            )
        };
        match tokio::time::timeout(self.upstream_timeout, self.client.request(req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(unreachable(crate::aliyun::transport::error_chain(&e))),
            Err(_) => Err(unreachable(format!("no answer within {} s", self.upstream_timeout.as_secs()))),
        }
    }

    /// The registry's answer for the client: status, allow-listed headers (`Location` only on a
    /// redirect, unfollowed), and the body streamed and counted.
    fn relay(&self, resp: Response<hyper::body::Incoming>, method: &Method, kind: Kind) -> Response<MirrorBody> {
        let (parts, body) = resp.into_parts();
        let mut out = Response::builder().status(parts.status);
        for name in FORWARD_RESPONSE {
            for v in parts.headers.get_all(*name) {
                out = out.header(*name, v.clone());
            }
        }
        if parts.status.is_redirection() {
            if let Some(l) = parts.headers.get(header::LOCATION) {
                out = out.header(header::LOCATION, l.clone());
            }
        }
        let body: MirrorBody = if *method == Method::HEAD {
            Empty::new().map_err(|never| match never {}).boxed()
        } else {
            let counter = self.metrics.bytes(kind.label());
            body.map_frame(move |f| {
                if let Some(d) = f.data_ref() {
                    counter.inc_by(d.len() as u64);
                }
                f
            })
            .map_err(|e| -> BoxError { Box::new(e) })
            .boxed()
        };
        out.body(body).unwrap_or_else(|e| {
            Refusal::new(StatusCode::BAD_GATEWAY, "bad_upstream", format!("registry answer: {e}"), "upstream_error")
                .into_response()
        })
    }
}

/// `https://<ns><target>`, or `http://` for a registry on a loopback address.
fn upstream_uri(v2: &V2Request) -> Result<http::Uri, Refusal> {
    let host = crate::registry::RegistryHost::parse(&v2.ns)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_ns", format!("ns {:?}: {e}", v2.ns), "bad_ns"))?;
    let scheme = if crate::aliyun::transport::is_loopback_host(host.host()) { "http" } else { "https" };
    let url = format!("{scheme}://{}{}", host.as_str(), v2.upstream_target);
    crate::aliyun::transport::check_url(&url, crate::aliyun::transport::Route::Api)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_ns", e.to_string(), "bad_ns"))
}
