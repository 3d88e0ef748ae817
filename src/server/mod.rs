//! The daemon's HTTP/1.1 + JSON API on a unix socket (and optionally loopback TCP), plus the
//! metrics and health listener.
//!
//! Listeners are handed in already bound (by `daemon.rs` or by systemd socket activation) with
//! a shutdown future, as in mini-redis. The caller check happens once, at accept, from the
//! socket's peer credentials. Only this module turns [`BrokerError`]s into HTTP statuses.

mod host_check;
mod routes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use crate::broker::Broker;
use crate::metrics::Metrics;

pub use host_check::host_is_loopback;
pub use routes::{error_status, MAX_BODY_BYTES};

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    /// Process id, when the kernel tells.
    pub pid: Option<i32>,
    /// User id (unix socket only).
    pub uid: Option<u32>,
    /// Group id (unix socket only).
    pub gid: Option<u32>,
    /// False when the peer failed the uid/gid allow-list.
    pub allowed: bool,
    /// The caller's address (loopback TCP only).
    pub addr: Option<std::net::SocketAddr>,
    /// The listener's port (loopback TCP only): the `Host` header must name it.
    pub local_port: Option<u16>,
}

/// What `/readyz` reports: ready once the node identity was obtained and boot prefetch ended.
#[derive(Debug, Default)]
pub struct Readiness {
    identity_ok: AtomicBool,
    prefetch_done: AtomicBool,
    reason: RwLock<String>,
}

impl Readiness {
    /// A fresh, not-ready state.
    pub fn new() -> Arc<Self> {
        let r = Readiness::default();
        if let Ok(mut reason) = r.reason.write() {
            *reason = String::from("starting: node identity not obtained yet");
        }
        Arc::new(r)
    }

    /// Records the outcome of an identity attempt.
    pub fn set_identity(&self, result: Result<(), String>) {
        self.identity_ok.store(result.is_ok(), Ordering::SeqCst);
        if let (Err(why), Ok(mut reason)) = (result, self.reason.write()) {
            *reason = format!("node identity unavailable: {why}");
        }
    }

    /// Records that boot prefetch finished (with a summary of failures, if any).
    pub fn set_prefetch_done(&self, summary: String) {
        if let Ok(mut reason) = self.reason.write() {
            *reason = summary;
        }
        self.prefetch_done.store(true, Ordering::SeqCst);
    }

    /// Ready, with a one-line explanation either way.
    pub fn status(&self) -> (bool, String) {
        let ready = self.identity_ok.load(Ordering::SeqCst) && self.prefetch_done.load(Ordering::SeqCst);
        let reason = self.reason.read().map(|r| r.clone()).unwrap_or_default();
        (ready, reason)
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct State {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Readiness for `/readyz`.
    pub readiness: Arc<Readiness>,
    /// Where audit lines go (off the request path).
    pub audit: crate::audit::AuditLog,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The credential API (unix socket, optional loopback TCP).
    Api,
    /// `/metrics`, `/healthz`, `/readyz` (loopback TCP).
    Metrics,
}

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request's headers (also closes idle keep-alive connections).
    pub header_timeout: Duration,
}

/// Checks a unix peer against the allow-list: root, listed uids, or listed gids.
pub fn peer_allowed(uid: u32, gid: u32, uids: &[u32], gids: &[u32]) -> bool {
    uid == 0 || uids.contains(&uid) || gids.contains(&gid)
}

/// A listener that yields connections with what is known about their peer.
pub trait Acceptor: Send {
    /// The connection type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

/// Unix socket connections, checked against the uid/gid allow-list from `SO_PEERCRED`.
#[derive(Debug)]
pub struct UnixAcceptor {
    /// The bound (or inherited) listener.
    pub listener: tokio::net::UnixListener,
    /// Allowed uids besides root.
    pub uids: Vec<u32>,
    /// Allowed gids.
    pub gids: Vec<u32>,
}

impl Acceptor for UnixAcceptor {
    type Stream = tokio::net::UnixStream;
    async fn accept(&mut self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, _) = self.listener.accept().await?;
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                pid: c.pid(),
                uid: Some(c.uid()),
                gid: Some(c.gid()),
                // The daemon's own watchdog probe is admitted whatever uid the service runs as
                // (a DynamicUser is in no allow-list); it must not read as a refused caller.
                allowed: peer_allowed(c.uid(), c.gid(), &self.uids, &self.gids)
                    || c.pid() == i32::try_from(std::process::id()).ok(),
                ..Peer::default()
            },
            Err(_) => Peer::default(),
        };
        Ok((stream, peer))
    }
}

/// Loopback TCP connections (the peer uid is not known over TCP; non-loopback peers are refused).
#[derive(Debug)]
pub struct TcpAcceptor(pub tokio::net::TcpListener);

impl Acceptor for TcpAcceptor {
    type Stream = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, addr) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, Peer { allowed: addr.ip().is_loopback(), ..Peer::default() }))
    }
}

/// Loopback TCP connections for listeners that hand out credentials (the TCP API, the registry
/// mirror): the caller's uid comes from the kernel's socket table ([`crate::procnet`]) and is
/// checked against the same allow-list as the unix socket; its gid is the uid's primary group.
/// A caller the table does not list, or a non-loopback one, is refused.
#[derive(Debug)]
pub struct LoopbackTcpAcceptor {
    /// The bound listener.
    pub listener: tokio::net::TcpListener,
    /// Allowed uids besides root.
    pub uids: Vec<u32>,
    /// Allowed gids (matched against the caller's primary group).
    pub gids: Vec<u32>,
}

impl Acceptor for LoopbackTcpAcceptor {
    type Stream = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, addr) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let ours = stream.local_addr()?;
        let mut peer = Peer { addr: Some(addr), local_port: Some(ours.port()), ..Peer::default() };
        if !addr.ip().is_loopback() {
            return Ok((stream, peer));
        }
        let lookup = tokio::task::spawn_blocking(move || {
            let uid = crate::procnet::peer_uid(addr, ours);
            let gid = uid.as_ref().ok().copied().flatten().and_then(crate::procnet::primary_gid);
            (uid, gid)
        });
        match lookup.await {
            Ok((Ok(Some(uid)), gid)) => {
                peer.uid = Some(uid);
                peer.gid = gid;
                peer.allowed = peer_allowed(uid, gid.unwrap_or(u32::MAX), &self.uids, &self.gids);
            }
            Ok((Ok(None), _)) => tracing::warn!(peer = %addr, "loopback caller not in the kernel socket table"),
            Ok((Err(e), _)) => tracing::warn!(error = %e, "cannot read /proc/net/tcp to identify a loopback caller"),
            Err(e) => tracing::warn!(error = %e, "peer lookup task failed"),
        }
        Ok((stream, peer))
    }
}

/// Serves `role` on `acceptor` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve<A: Acceptor>(
    acceptor: A,
    state: Arc<State>,
    role: Role,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let metrics = Arc::clone(state.broker.metrics());
    let handler = move |req, peer| {
        let st = Arc::clone(&state);
        async move { routes::handle(req, &st, role, peer).await }
    };
    serve_with(acceptor, &metrics, limits, shutdown, handler).await
}

/// The accept loop every listener shares: connection cap, header timeout, the peer check's
/// audit line, and a bounded graceful drain; `handler` answers each request (the API routes,
/// or the registry mirror). A refused peer still reaches `handler` once (to answer 403).
pub async fn serve_with<A, H, F, B>(
    mut acceptor: A,
    metrics: &Metrics,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    A: Acceptor,
    H: Fn(http::Request<hyper::body::Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = acceptor.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !peer.allowed {
            metrics.peer_denied();
            tracing::warn!(target: "audit", pid = peer.pid, uid = peer.uid, gid = peer.gid,
                peer = ?peer.addr, "refused a caller not in server.allowed_uids / allowed_gids");
        }
        let h = handler.clone();
        let service = service_fn(move |req| {
            let answer = h(req, peer);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            // A refused peer gets one 403 and the connection closes; it cannot hold a slot.
            .keep_alive(peer.allowed)
            .max_buf_size(16 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting (close the listener now, so queued callers are refused rather than left
    // waiting), let in-flight requests finish (bounded), then return.
    drop(acceptor);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("all connections drained"),
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("drain timed out; closing remaining connections"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_listed_peers_pass() {
        assert!(peer_allowed(0, 0, &[], &[]));
        assert!(!peer_allowed(1000, 1000, &[0], &[]));
        assert!(peer_allowed(1000, 1000, &[1000], &[]));
        assert!(peer_allowed(1000, 44, &[], &[44]));
    }

    #[test]
    fn readiness_explains_itself() {
        let r = Readiness::new();
        assert!(!r.status().0);
        r.set_identity(Err(String::from("metadata service refused the connection")));
        let (ready, why) = r.status();
        assert!(!ready && why.contains("metadata service"), "{why}");
        r.set_identity(Ok(()));
        r.set_prefetch_done(String::from("ready"));
        assert!(r.status().0);
    }
}
