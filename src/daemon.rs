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
use crate::server::{self, Limits, LoopbackTcpAcceptor, Readiness, Role, State, TcpAcceptor, UnixAcceptor};
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
    /// Where the registry mirror is served (`[mirror] listen`).
    pub mirror_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Writes the audit lines; ends after the listeners drained and the queue is written out.
    audit_writer: tokio::task::JoinHandle<()>,
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
        metrics.mark_config_loaded(clock.now());
        let broker = Broker::new(Arc::clone(&config), client, identity, Arc::clone(&clock), Arc::clone(&metrics));
        let readiness = Readiness::new();
        let (audit, audit_writer) = crate::audit::AuditLog::start(Arc::clone(&metrics), Arc::clone(&clock));
        let state = Arc::new(State { broker: Arc::clone(&broker), readiness: Arc::clone(&readiness), audit });
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
            // The metrics/health listener shares its port with a successor during a surge
            // rollout (SO_REUSEPORT, same uid only): it serves no credential.
            let share_port = role == Role::Metrics;
            let listener = match (given, addr) {
                (Some(l), _) => l
                    .set_nonblocking(true)
                    .and_then(|_| tokio::net::TcpListener::from_std(l))
                    .map_err(|source| DaemonError::Listen { what: what.to_owned(), source })?,
                (None, Some(addr)) => bind_tcp_listener(addr, share_port)
                    .map_err(|source| DaemonError::Listen { what: format!("{what} {addr}"), source })?,
                (None, None) => return Ok(None),
            };
            let local = listener.local_addr().ok();
            if role == Role::Api {
                // Hands out credentials: the same uid/gid allow-list as the unix socket.
                let acceptor = LoopbackTcpAcceptor {
                    listener,
                    uids: config.server.allowed_uids.clone(),
                    gids: config.server.allowed_gids.clone(),
                };
                tasks.spawn(server::serve(acceptor, Arc::clone(&state), role, limits, stop()));
            } else {
                tasks.spawn(server::serve(TcpAcceptor(listener), Arc::clone(&state), role, limits, stop()));
            }
            Ok(local)
        };
        let metrics_addr = bind_tcp(config.server.metrics, inherited_metrics, Role::Metrics, "metrics listener")?;
        let api_addr = bind_tcp(config.server.listen, None, Role::Api, "API listener")?;

        let mirror_addr = match &config.mirror {
            Some(m) => Some(start_mirror(&config, m, &broker, clock, limits, stop(), &mut tasks)?),
            None => None,
        };

        // Ready as soon as requests can be taken: the node identity may take a while (metadata
        // or STS outage at boot), and a start timeout must never kill a daemon that serves what
        // it can. How far it got is in STATUS= and /readyz.
        systemd::notify(&[Notify::Ready, Notify::Status(String::from("listening; obtaining the node identity"))]);
        tasks.spawn(boot(Arc::clone(&broker), Arc::clone(&readiness), config.prefetch.clone(), stop()));
        Ok(Daemon {
            broker,
            readiness,
            socket,
            api_path,
            socket_id,
            metrics_addr,
            api_addr,
            mirror_addr,
            shutdown_tx,
            tasks,
            audit_writer,
        })
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
        // Every connection is closed, so the audit queue has no more senders: let the writer
        // finish the lines of the requests that were answered.
        if tokio::time::timeout(Duration::from_secs(5), &mut self.audit_writer).await.is_err() {
            tracing::warn!("audit writer did not finish within 5 s");
            self.audit_writer.abort();
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file did not validate; every problem is listed, the old config stays.
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigError),
    /// The file is valid but what it names could not be built (e.g. the identity source).
    #[error("{0}")]
    Apply(String),
}

impl Daemon {
    /// Re-reads the config at `path` and swaps it in (see [`Broker::reload`]); on any problem the
    /// old config keeps serving. Counted in `acr_broker_config_reloads_total{outcome}`.
    pub async fn reload_from(&self, path: &Path) -> Result<crate::broker::ReloadSummary, ReloadError> {
        let metrics = Arc::clone(self.broker.metrics());
        let clock = Arc::clone(self.broker.clock());
        let now = || clock.now();
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                metrics.observe_reload("invalid", now());
                return Err(e.into());
            }
        };
        let rebuilt = self
            .broker
            .reload(config, |c| {
                let client = crate::egress::client(c, Arc::clone(&clock)).map_err(|e| format!("client: {e}"))?;
                let identity = identity_from_config(c, &client).map_err(|e| format!("identity: {e}"))?;
                Ok((client, identity))
            })
            .await;
        match rebuilt {
            Ok(summary) => {
                metrics.observe_reload("ok", now());
                Ok(summary)
            }
            Err(e) => {
                metrics.observe_reload("error", now());
                Err(ReloadError::Apply(e))
            }
        }
    }
}

/// Binds `[mirror] listen` and serves the registry mirror on it with the socket's allow-list.
fn start_mirror(
    config: &Config,
    mirror: &crate::config::MirrorConfig,
    broker: &Arc<Broker>,
    clock: SharedClock,
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    tasks: &mut JoinSet<()>,
) -> Result<SocketAddr, DaemonError> {
    let what = format!("mirror listener {}", mirror.listen);
    let listen = |source| DaemonError::Listen { what: what.clone(), source };
    // Shared with a successor during a surge rollout, like the metrics port (same uid only).
    let listener = bind_tcp_listener(mirror.listen, true).map_err(listen)?;
    let local = listener.local_addr().map_err(listen)?;
    let m = crate::mirror::Mirror::new(Arc::clone(broker), clock, mirror, local.port())
        .map_err(|e| DaemonError::Listen { what: what.clone(), source: std::io::Error::other(e.to_string()) })?;
    let acceptor = LoopbackTcpAcceptor {
        listener,
        uids: config.server.allowed_uids.clone(),
        gids: config.server.allowed_gids.clone(),
    };
    let metrics = Arc::clone(broker.metrics());
    tasks.spawn(async move {
        let handler = move |req, peer| Arc::clone(&m).handle(req, peer);
        server::serve_with(acceptor, &metrics, limits, stop, handler).await
    });
    tracing::info!(mirror = %local, "registry mirror listening");
    Ok(local)
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

/// Binds a TCP listener; with `share_port`, also `SO_REUSEPORT`, so a new daemon can bind the same
/// port while the old one still serves it (the kernel spreads connections over both).
fn bind_tcp_listener(addr: SocketAddr, share_port: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if share_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
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
    config_path: Option<PathBuf>,
    clock: SharedClock,
    inherited: Vec<systemd::ListenFd>,
    banner: Option<String>,
) -> Result<(), DaemonError> {
    // Take SIGHUP first: its default action would end the process (and every pull with it).
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|source| DaemonError::Listen { what: String::from("SIGHUP handler"), source })?;
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
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = hangups.recv() => reload_on_hangup(&daemon, config_path.as_deref()).await,
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    systemd::notify(&[Notify::Stopping, Notify::Status(String::from("draining"))]);
    daemon.shutdown().await;
    Ok(())
}

/// One SIGHUP: re-read the config, tell systemd (`RELOADING=1`, then `READY=1`), and log what
/// happened — every problem of a refused file, and the settings that wait for a restart.
async fn reload_on_hangup(daemon: &Daemon, path: Option<&Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: there is no config file to read again (dev mode); nothing changed");
        return;
    };
    systemd::notify(&[Notify::Reloading, Notify::Status(format!("reloading {}", path.display()))]);
    let status = match daemon.reload_from(path).await {
        Ok(summary) => {
            tracing::info!(
                config = %path.display(),
                caches_dropped = summary.caches_dropped,
                caches_replanned = summary.caches_replanned,
                budget_changed = summary.budget_changed,
                "config reloaded"
            );
            if !summary.needs_restart.is_empty() {
                tracing::warn!(settings = ?summary.needs_restart,
                    "these settings change only with a restart; they were kept as they are");
            }
            format!("serving; config reloaded from {}", path.display())
        }
        Err(ReloadError::Invalid(e)) => {
            for issue in &e.issues {
                tracing::error!(config = %path.display(), "config reload refused: {issue}");
            }
            tracing::warn!(config = %path.display(), problems = e.issues.len(),
                "config reload refused; the config in force keeps serving");
            format!("serving; reload of {} refused ({} problem(s))", path.display(), e.issues.len())
        }
        Err(ReloadError::Apply(e)) => {
            tracing::error!(config = %path.display(), error = %e, "config reload failed; the config in force keeps serving");
            format!("serving; reload of {} failed: {e}", path.display())
        }
    };
    systemd::notify(&[Notify::Ready, Notify::Status(status)]);
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

    #[tokio::test]
    async fn the_metrics_port_can_be_shared_with_a_successor_but_not_the_api_port() {
        let first = bind_tcp_listener("127.0.0.1:0".parse().unwrap(), true).expect("first");
        let addr = first.local_addr().unwrap();
        let second = bind_tcp_listener(addr, true).expect("a successor binds the same metrics port");
        assert_eq!(second.local_addr().unwrap(), addr);
        let api = bind_tcp_listener("127.0.0.1:0".parse().unwrap(), false).expect("api");
        assert!(bind_tcp_listener(api.local_addr().unwrap(), false).is_err(), "the API port is never shared");
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("0").expect("numeric"), 0);
        assert_eq!(resolve_group("root").expect("root exists"), 0);
        assert!(resolve_group("no-such-group-xyz").is_err());
    }
}
