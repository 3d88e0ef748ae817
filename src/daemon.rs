//! Wiring the daemon together: identity, broker, listeners, readiness, systemd, and shutdown.
//!
//! [`Daemon::start`] binds everything (or takes sockets from systemd) and returns at once;
//! the node identity is obtained in the background so a metadata outage at boot shows up in
//! `/readyz` with its reason instead of a crash loop. [`serve`] is `acr-broker serve`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::aliyun::identity::{
    source_from_env, EcsRamRoleSource, EnvSource, IdentitySource, OidcSource, ProfileSource, StaticSource,
};
use crate::aliyun::Client;
use crate::broker::Broker;
use crate::clock::SharedClock;
use crate::config::{Config, IdentityConfig};
use crate::metrics::Metrics;
use crate::server::{self, Limits, Readiness, Role, State, TcpAcceptor, UnixAcceptor};
use crate::systemd::{self, Notify};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The identity source could not be built from the configuration.
    #[error("identity: {0}")]
    Identity(String),
    /// A listener could not be set up.
    #[error("{what}: {source}")]
    Listen {
        /// Which listener, with its address.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    /// The broker (tests read its metrics).
    pub broker: Arc<Broker>,
    /// Readiness as `/readyz` reports it.
    pub readiness: Arc<Readiness>,
    /// The API socket path (`None` when systemd handed it over and owns the file).
    pub socket: Option<PathBuf>,
    /// Where the API socket is reachable (bound or handed over), for the watchdog's probe.
    pub api_path: Option<PathBuf>,
    /// The device and inode of the socket file this daemon bound: on shutdown the path is
    /// removed only while it still names this socket, not a successor's.
    socket_id: Option<(u64, u64)>,
    /// Where metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the loopback TCP API is served.
    pub api_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Builds the node identity source named by `[identity]`.
pub fn identity_from_config(config: &Config, client: &Client) -> Result<Arc<dyn IdentitySource>, crate::aliyun::Error> {
    let env = |k: &str| std::env::var(k).ok();
    Ok(match &config.identity {
        IdentityConfig::Default => source_from_env(&env, client)?,
        IdentityConfig::Env => Arc::new(EnvSource::from_lookup(&env)?.ok_or_else(|| {
            crate::aliyun::Error::NoIdentity(String::from(
                "[identity] source = \"env\" but ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET are not set",
            ))
        })?),
        IdentityConfig::Static { access_key_id, access_key_secret, security_token } => {
            Arc::new(StaticSource::new(access_key_id.clone(), access_key_secret.clone(), security_token.clone())?)
        }
        IdentityConfig::EcsRamRole { role_name, imdsv1_disabled } => Arc::new(EcsRamRoleSource::new(
            client.transport().clone(),
            &config.aliyun.metadata_endpoint,
            role_name.clone(),
            *imdsv1_disabled,
        )?),
        IdentityConfig::Oidc { role_arn, provider_arn, token_file } => Arc::new(OidcSource::new(
            client.clone(),
            role_arn.clone(),
            provider_arn.clone(),
            token_file.clone(),
            String::from("acr-broker"),
            3600,
        )?),
        IdentityConfig::Profile { profile_file, profile_name } => {
            let file = profile_file.clone().or_else(|| ProfileSource::default_file(&env)).ok_or_else(|| {
                crate::aliyun::Error::NoIdentity(String::from(
                    "[identity] source = \"profile\" without profile_file, and neither ALIBABA_CLOUD_CREDENTIALS_FILE nor HOME is set",
                ))
            })?;
            Arc::new(ProfileSource::new(file, profile_name.clone())?)
        }
    })
}

impl Daemon {
    /// Starts the daemon with `config` and `clock`; returns once listeners are bound.
    pub async fn start(config: Config, clock: SharedClock) -> Result<Daemon, DaemonError> {
        Daemon::start_with_listeners(config, clock, Vec::new()).await
    }

    /// Like [`start`](Self::start), serving on sockets systemd handed over: the unix socket as
    /// the API, a TCP socket named `metrics` as the metrics listener.
    pub async fn start_with_listeners(
        config: Config,
        clock: SharedClock,
        inherited: Vec<systemd::ListenFd>,
    ) -> Result<Daemon, DaemonError> {
        let config = Arc::new(config);
        // Endpoints (network, SDK STS variables), timeouts and ca_file: crate::egress.
        let client =
            crate::egress::client(&config, Arc::clone(&clock)).map_err(|e| DaemonError::Identity(e.to_string()))?;
        let identity = identity_from_config(&config, &client).map_err(|e| DaemonError::Identity(e.to_string()))?;
        let metrics = Arc::new(Metrics::new());
        let broker = Broker::new(Arc::clone(&config), client, identity, clock, metrics);
        let readiness = Readiness::new();
        let state = Arc::new(State { broker: Arc::clone(&broker), readiness: Arc::clone(&readiness) });
        let limits =
            Limits { max_connections: config.server.max_connections, header_timeout: config.server.header_timeout };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stop = move || {
            let mut rx = shutdown_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = JoinSet::new();

        let mut socket = None;
        let mut unix = None;
        let mut inherited_metrics = None;
        for fd in inherited {
            match fd.listener {
                systemd::Listener::Unix(l) if unix.is_none() => unix = Some(l),
                systemd::Listener::Tcp(l) if fd.name == "metrics" => inherited_metrics = Some(l),
                _ => tracing::warn!(name = %fd.name, "ignoring an extra socket passed by systemd"),
            }
        }
        let mut socket_id = None;
        let unix = match unix {
            Some(l) => tokio::net::UnixListener::from_std(l),
            None => {
                socket = Some(config.server.socket.clone());
                bind_socket(&config.server.socket, config.server.socket_mode, config.server.socket_group.as_deref())
                    .map(|(listener, id)| {
                        socket_id = Some(id);
                        listener
                    })
            }
        }
        .map_err(|source| DaemonError::Listen {
            what: format!("API socket {}", config.server.socket.display()),
            source,
        })?;
        let api_path = unix.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
        crate::userns::warn_unmapped(&config.server.allowed_uids, &config.server.allowed_gids);
        let acceptor = UnixAcceptor {
            listener: unix,
            uids: config.server.allowed_uids.clone(),
            gids: config.server.allowed_gids.clone(),
        };
        tasks.spawn(server::serve(acceptor, Arc::clone(&state), Role::Api, limits, stop()));

        let mut bind_tcp = |addr: Option<SocketAddr>,
                            given: Option<std::net::TcpListener>,
                            role: Role,
                            what: &str|
         -> Result<Option<SocketAddr>, DaemonError> {
            let listener = match (given, addr) {
                (Some(l), _) => l,
                (None, Some(addr)) => std::net::TcpListener::bind(addr)
                    .map_err(|source| DaemonError::Listen { what: format!("{what} {addr}"), source })?,
                (None, None) => return Ok(None),
            };
            let listener = listener
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(listener))
                .map_err(|source| DaemonError::Listen { what: what.to_owned(), source })?;
            let local = listener.local_addr().ok();
            tasks.spawn(server::serve(TcpAcceptor(listener), Arc::clone(&state), role, limits, stop()));
            Ok(local)
        };
        let metrics_addr = bind_tcp(config.server.metrics, inherited_metrics, Role::Metrics, "metrics listener")?;
        let api_addr = bind_tcp(config.server.listen, None, Role::Api, "API listener")?;

        // Ready as soon as requests can be taken: the node identity may take a while (metadata
        // or STS outage at boot), and a start timeout must never kill a daemon that serves what
        // it can. How far it got is in STATUS= and /readyz.
        systemd::notify(&[Notify::Ready, Notify::Status(String::from("listening; obtaining the node identity"))]);
        tasks.spawn(boot(Arc::clone(&broker), Arc::clone(&readiness), config.prefetch.clone(), stop()));
        Ok(Daemon { broker, readiness, socket, api_path, socket_id, metrics_addr, api_addr, shutdown_tx, tasks })
    }

    /// Removes the socket file (if it is still ours), stops accepting, and drains in-flight
    /// requests.
    ///
    /// The file goes first, so new callers go to a successor (or retry) instead of waiting out
    /// the drain. When a successor already took the path over (a surge rollout), the path
    /// names its socket and is left alone.
    pub async fn shutdown(mut self) {
        if let (Some(path), Some(id)) = (&self.socket, self.socket_id) {
            if socket_file_id(path) == Some(id) {
                let _ = std::fs::remove_file(path);
            } else {
                tracing::info!(socket = %path.display(), "socket path now belongs to a newer daemon; leaving it");
            }
        }
        let _ = self.shutdown_tx.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Obtains the node identity (retrying with backoff until it works), reports readiness, then
/// warms the cache for the configured images.
async fn boot(
    broker: Arc<Broker>,
    readiness: Arc<Readiness>,
    prefetch: Vec<String>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut delay = Duration::from_millis(500);
    loop {
        let attempt = broker.check_identity();
        let result = tokio::select! {
            _ = &mut stop => return,
            r = attempt => r,
        };
        match result {
            Ok(()) => {
                readiness.set_identity(Ok(()));
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "node identity not available yet");
                readiness.set_identity(Err(e.to_string()));
                systemd::notify(&[Notify::Status(format!("waiting for node identity: {e}"))]);
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    systemd::notify(&[Notify::Status(String::from("serving; identity obtained"))]);
    let summary = if prefetch.is_empty() {
        String::from("ready")
    } else {
        let results = tokio::select! {
            // Shutdown must not wait for a prefetch stuck behind a throttled upstream.
            _ = &mut stop => return,
            r = broker.prefetch(&prefetch) => r,
        };
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(image, r)| r.as_ref().err().map(|e| format!("{image}: {}", e.code())))
            .collect();
        if failed.is_empty() {
            format!("ready; prefetched {} image(s)", results.len())
        } else {
            tracing::warn!(failed = %failed.join(", "), "boot prefetch had failures");
            format!("ready; prefetch failed for {}", failed.join(", "))
        }
    };
    readiness.set_prefetch_done(summary);
}

/// Binds the API socket and returns it with the (device, inode) of its file.
///
/// The socket is bound under a temporary name in the same directory, given its mode and group
/// before anyone can connect, and renamed over `path` in one step. So a stale socket is
/// replaced, and a live daemon on the path is taken over without a gap: it keeps serving the
/// connections it has while new ones reach this socket (a surge rollout). A path that is not
/// a socket, or a socket served by something that is not acr-broker, is never replaced.
pub fn bind_socket(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> std::io::Result<(tokio::net::UnixListener, (u64, u64))> {
    use std::os::unix::fs::FileTypeExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            let what = if meta.is_dir() { "a directory" } else { "not a socket" };
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is {what}; remove it or choose another [server] socket", path.display()),
            ));
        }
        match std::os::unix::net::UnixStream::connect(path).map(answers_like_a_broker) {
            Ok(false) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is served by something that is not acr-broker", path.display()),
                ))
            }
            Ok(true) => {
                tracing::info!(socket = %path.display(), "another acr-broker serves this socket; taking it over")
            }
            Err(_) => tracing::info!(socket = %path.display(), "replacing a stale socket"),
        }
    }
    let name =
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| String::from("broker.sock"));
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let listener = std::os::unix::net::UnixListener::bind(&temp)?;
    let prepared = (|| {
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        if let Some(g) = group {
            let gid = resolve_group(g)?;
            std::os::unix::fs::chown(&temp, None, Some(gid))?;
        }
        let id = socket_file_id(&temp).ok_or_else(|| std::io::Error::other("the new socket vanished"))?;
        std::fs::rename(&temp, path)?;
        Ok(id)
    })();
    let id = match prepared {
        Ok(id) => id,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    listener.set_nonblocking(true)?;
    Ok((tokio::net::UnixListener::from_std(listener)?, id))
}

/// The (device, inode) of the file at `path`, if there is one.
fn socket_file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// True when the server on `stream` answers `GET /healthz` the way acr-broker does (`200`
/// with `"status":"ok"`, or the JSON 403 it gives a peer it does not admit), within 2 s.
fn answers_like_a_broker(mut stream: std::os::unix::net::UnixStream) -> bool {
    use std::io::{Read, Write};
    let limit = Some(Duration::from_secs(2));
    if stream.set_read_timeout(limit).and_then(|_| stream.set_write_timeout(limit)).is_err() {
        return false;
    }
    if stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.take(16 * 1024).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.starts_with("HTTP/1.1 ") && (text.contains("\"status\":\"ok\"") || text.contains("\"peer_not_allowed\""))
}

/// A group name or number to a gid, from `/etc/group`.
fn resolve_group(group: &str) -> std::io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("group {group:?} not found")))
}

/// `acr-broker serve`: run until SIGTERM or SIGINT, then drain and exit.
///
/// `inherited` are the sockets systemd passed (taken before the runtime started threads).
pub async fn serve(
    config: Config,
    clock: SharedClock,
    inherited: Vec<systemd::ListenFd>,
    banner: Option<String>,
) -> Result<(), DaemonError> {
    let daemon = Daemon::start_with_listeners(config, clock, inherited).await?;
    tracing::info!(socket = ?daemon.socket, metrics = ?daemon.metrics_addr, api = ?daemon.api_addr, "acr-broker listening");

    if let Some(b) = banner {
        println!("{b}");
    }
    // The watchdog pings only while the API answers a real request: a wedged accept loop or
    // request path stops the pings, and systemd restarts the daemon.
    let probe_path = daemon.api_path.clone();
    let _watchdog = systemd::spawn_watchdog(move || {
        let path = probe_path.clone();
        async move {
            match path {
                Some(p) => probe_health(&p, WATCHDOG_PROBE_TIMEOUT).await,
                None => true,
            }
        }
    });
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    systemd::notify(&[Notify::Stopping, Notify::Status(String::from("draining"))]);
    daemon.shutdown().await;
    Ok(())
}

/// How long the watchdog's health probe waits for `/healthz`.
const WATCHDOG_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// True when the API on the unix socket at `path` answers `GET /healthz` with a complete HTTP
/// response within `timeout` (a refused peer's 403 counts: it, too, went through accept,
/// HTTP parsing and routing).
pub async fn probe_health(path: &Path, timeout: Duration) -> bool {
    use http_body_util::BodyExt;
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(path).await.ok()?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        let driver = tokio::spawn(conn);
        let req = http::Request::get("/healthz")
            .header(http::header::HOST, "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = send.send_request(req).await.ok()?;
        let status = resp.status();
        resp.into_body().collect().await.ok()?;
        driver.abort();
        Some(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Some(status)) => status.is_success() || status == http::StatusCode::FORBIDDEN,
        Ok(None) => false,
        Err(_) => {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "health probe: no answer from the API socket");
            false
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_gets_its_mode_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/broker.sock");
        let (l, id) = bind_socket(&path, 0o660, None).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert_eq!(socket_file_id(&path), Some(id));
        // Something that accepts but does not speak acr-broker's HTTP is not taken over.
        let again = bind_socket(&path, 0o660, None).expect_err("a live non-broker socket must not be replaced");
        assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
        drop(l);
        let (_l, new_id) = bind_socket(&path, 0o600, None).expect("stale socket replaced");
        assert_ne!(new_id, id);
        let leftovers: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("broker.sock")], "no temporary socket left behind");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        let e = bind_socket(&file, 0o660, None).expect_err("regular file");
        assert!(e.to_string().contains("is not a socket"), "{e}");
        let e = bind_socket(dir.path(), 0o660, None).expect_err("directory");
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("0").expect("numeric"), 0);
        assert_eq!(resolve_group("root").expect("root exists"), 0);
        assert!(resolve_group("no-such-group-xyz").is_err());
    }
}
