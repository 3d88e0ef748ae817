//! The HTTP/1.1 listener and the [`Emulator`] handle tests and `serve --dev` use in-process.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as HyperBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::knobs::Knobs;
use crate::reply::Reply;
use crate::router::{self, Incoming};
use crate::state::{lock, ClockFn, State};
use crate::world::World;

/// Largest accepted request body: 1 MiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// A running emulator. Dropping it stops the listener too; [`Emulator::shutdown`] waits for it.
pub struct Emulator {
    state: Arc<State>,
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
    /// The CA PEM when serving over TLS ([`Emulator::start_tls`]).
    tls_ca_pem: Option<String>,
}

fn system_clock() -> ClockFn {
    Arc::new(|| {
        // The emulator's one read of the system clock; tests inject their own clock.
        #[allow(clippy::disallowed_methods)]
        SystemTime::now()
    })
}

impl Emulator {
    /// Starts serving `world` on `listen` (use `127.0.0.1:0` in tests) with the system clock.
    pub async fn start(world: World, listen: SocketAddr) -> io::Result<Emulator> {
        Self::start_with_clock(world, listen, system_clock()).await
    }

    /// Starts serving with an injected wall clock (for expiry and date-window tests).
    pub async fn start_with_clock(
        world: World,
        listen: SocketAddr,
        clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    ) -> io::Result<Emulator> {
        Self::bind(world, listen, clock, None).await
    }

    /// Starts serving `world` over TLS with a certificate of its own (a fresh CA and a leaf
    /// for `localhost`/`127.0.0.1`/`::1`); [`Emulator::tls_ca_pem`] is the CA to trust.
    pub async fn start_tls(world: World, listen: SocketAddr) -> io::Result<Emulator> {
        let identity = crate::tls::TlsIdentity::generate().map_err(io::Error::other)?;
        Self::bind(world, listen, system_clock(), Some(identity)).await
    }

    async fn bind(
        world: World,
        listen: SocketAddr,
        clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
        tls: Option<crate::tls::TlsIdentity>,
    ) -> io::Result<Emulator> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(world, clock));
        let (stop, stop_rx) = watch::channel(false);
        let tls_ca_pem = tls.as_ref().map(|t| t.ca_pem().to_owned());
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let task = tokio::spawn(accept_loop(listener, state.clone(), stop_rx, acceptor));
        tracing::info!(%addr, tls = tls_ca_pem.is_some(), "acr-emulator listening");
        Ok(Emulator { state, addr, stop: Some(stop), task: Some(task), tls_ca_pem })
    }

    /// The CA certificate (PEM) behind the TLS listener, `None` for plain HTTP.
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls_ca_pem.as_deref()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://` when serving over TLS.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls_ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Calls per action so far.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.state.counters).clone()
    }

    /// Calls of one action so far.
    pub fn count(&self, action: &str) -> u64 {
        lock(&self.state.counters).get(action).copied().unwrap_or(0)
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        lock(&self.state.counters).clear();
    }

    /// Replaces the knobs. Invalid knobs are refused (logged) and the old ones kept.
    pub fn set_knobs(&self, knobs: Knobs) {
        match knobs.validate() {
            Ok(()) => *lock(&self.state.knobs) = knobs,
            Err(e) => tracing::warn!(error = %e, "set_knobs refused invalid knobs"),
        }
    }

    /// The current knobs.
    pub fn knobs(&self) -> Knobs {
        self.state.knobs()
    }

    /// The realm signing certificate (PEM) for docker-registry's `rootcertbundle`.
    pub fn token_signing_cert_pem(&self) -> String {
        self.state.world.token_signing_cert_pem().to_string()
    }

    /// A service-account JWT signed by the OIDC provider `provider_arn` (empty string when the
    /// world has no such provider).
    pub fn mint_service_account_token(
        &self,
        provider_arn: &str,
        subject: &str,
        audience: &str,
        ttl: Duration,
    ) -> String {
        crate::oidc::mint(&self.state, provider_arn, subject, audience, ttl).unwrap_or_default()
    }

    /// A realm JWT with arbitrary actions (e.g. `push`) for seeding a test registry.
    pub fn mint_registry_token(&self, service: &str, repository: &str, actions: &[&str]) -> String {
        crate::realm::admin_token(&self.state, service, repository, actions)
    }

    /// Every secret issued so far (STS secrets and tokens, ACR passwords, JWTs).
    pub fn issued_secrets(&self) -> Vec<String> {
        lock(&self.state.issued).iter().cloned().collect()
    }

    /// Stops listening, closes open connections and waits until the port is free.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let st = state.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| serve(st.clone(), req));
                    match tls {
                        None => {
                            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls_stream) => {
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls_stream), svc).await;
                            }
                            Err(e) => tracing::info!(error = %e, "TLS handshake failed"),
                        },
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    drop(listener);
}

/// The error that makes hyper drop a connection (used for [`Reply::Close`]).
#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed on purpose")
    }
}

impl std::error::Error for CloseConnection {}

async fn serve(state: Arc<State>, req: Request<HyperBody>) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(to_response(Reply::text(413, "request body too large or unreadable"))),
    };
    let incoming = Incoming {
        method: parts.method,
        path: parts.uri.path().to_string(),
        raw_query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    match router::handle(state, incoming).await {
        Reply::Close => Err(CloseConnection),
        r => Ok(to_response(r)),
    }
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let Reply::Http { status, headers, body } = reply else {
        return Response::new(Full::new(Bytes::new()));
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(k), http::HeaderValue::try_from(v)) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}
