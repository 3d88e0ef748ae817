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
use crate::aliyun::{Client, Endpoints, Timeouts};
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
    /// Where metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the loopback TCP API is served.
    pub api_addr: Option<SocketAddr>,
    /// Where the registry mirror is served (`[mirror] listen`).
    pub mirror_addr: Option<SocketAddr>,
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
        let endpoints = Endpoints {
            sts: config.aliyun.sts_endpoint.clone(),
            cr: config.aliyun.cr_endpoint.clone(),
            metadata: config.aliyun.metadata_endpoint.clone(),
        };
        let timeouts = Timeouts { metadata: config.upstream.metadata_timeout, api: config.upstream.api_timeout };
        let client =
            Client::new(endpoints, timeouts, Arc::clone(&clock)).map_err(|e| DaemonError::Identity(e.to_string()))?;
        let identity = identity_from_config(&config, &client).map_err(|e| DaemonError::Identity(e.to_string()))?;
        let metrics = Arc::new(Metrics::new());
        let broker = Broker::new(Arc::clone(&config), client, identity, Arc::clone(&clock), metrics);
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
        let unix = match unix {
            Some(l) => tokio::net::UnixListener::from_std(l),
            None => {
                socket = Some(config.server.socket.clone());
                bind_socket(&config.server.socket, config.server.socket_mode, config.server.socket_group.as_deref())
            }
        }
        .map_err(|source| DaemonError::Listen {
            what: format!("API socket {}", config.server.socket.display()),
            source,
        })?;
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

        tasks.spawn(boot(Arc::clone(&broker), Arc::clone(&readiness), config.prefetch.clone(), stop()));
        Ok(Daemon { broker, readiness, socket, metrics_addr, api_addr, mirror_addr, shutdown_tx, tasks })
    }

    /// Removes the socket file, stops accepting, and drains in-flight requests.
    ///
    /// The file goes first: new callers are refused at once instead of waiting out the drain,
    /// and a new daemon can bind the path meanwhile (removing it after the drain would delete
    /// the new daemon's socket).
    pub async fn shutdown(mut self) {
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
        let _ = self.shutdown_tx.send(true);
        while self.tasks.join_next().await.is_some() {}
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
    let std_listener = std::net::TcpListener::bind(mirror.listen).map_err(listen)?;
    std_listener.set_nonblocking(true).map_err(listen)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen)?;
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
    systemd::notify(&[Notify::Ready, Notify::Status(String::from("serving; identity obtained"))]);
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

/// Binds the API socket: creates the directory, replaces a stale socket (never a live one or
/// a non-socket file), and applies mode and group before anyone can connect.
pub fn bind_socket(path: &Path, mode: u32, group: Option<&str>) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "path exists and is not a socket"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another daemon is serving this socket"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(g) = group {
        let gid = resolve_group(g)?;
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
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
    tracing::info!(socket = ?daemon.socket, metrics = ?daemon.metrics_addr, api = ?daemon.api_addr,
        mirror = ?daemon.mirror_addr, "acr-broker listening");
    if let Some(b) = banner {
        println!("{b}");
    }
    let _watchdog = systemd::spawn_watchdog(|| true);
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    systemd::notify(&[Notify::Stopping, Notify::Status(String::from("draining"))]);
    daemon.shutdown().await;
    Ok(())
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
        let l = bind_socket(&path, 0o660, None).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let again = bind_socket(&path, 0o660, None).expect_err("live socket must not be replaced");
        assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
        drop(l);
        bind_socket(&path, 0o600, None).expect("stale socket replaced");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        assert!(bind_socket(&file, 0o660, None).is_err());
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("0").expect("numeric"), 0);
        assert_eq!(resolve_group("root").expect("root exists"), 0);
        assert!(resolve_group("no-such-group-xyz").is_err());
    }
}
