//! A real Debian `docker-registry` 2.8 with token auth, run as a child process and killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the registry binary (Debian package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Token-auth settings of one registry.
pub struct TokenAuth<'a> {
    /// The realm URL (`{emulator}/auth`).
    pub realm: &'a str,
    /// `auth.token.service`: must equal the instance's token_service (the JWT `aud`).
    pub service: &'a str,
    /// `auth.token.issuer`: must equal the world's realm issuer (the JWT `iss`).
    pub issuer: &'a str,
    /// PEM of the realm's signing certificate (`rootcertbundle`).
    pub cert_pem: &'a str,
}

/// A running registry; the child is killed and reaped on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`, as written in image references and credHelpers keys.
    pub host: String,
    /// Its directory (config, data, logs).
    pub dir: PathBuf,
    child: Child,
}

/// A port the OS just handed out on 127.0.0.1 (bound, then released). Another process may
/// take it before our child binds it: [`Registry::start`] checks that its own child is the
/// listener and says `None` on a collision, and the caller picks again.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Registry {
    /// Writes the config under `dir`, starts `docker-registry serve` on `127.0.0.1:port` and waits
    /// (at most 10 s) until our child is the one listening there (kernel socket table) and
    /// `GET /v2/` answers 401 with a Bearer challenge. `None`: the port was taken by someone
    /// else (pick another port and try again).
    pub async fn start(dir: &Path, port: u16, auth: &TokenAuth<'_>) -> Option<Registry> {
        std::fs::create_dir_all(dir.join("data")).expect("registry data dir");
        let bundle = dir.join("token-signer.pem");
        std::fs::write(&bundle, auth.cert_pem).expect("write rootcertbundle");
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n  secret: acr-broker-e2e-not-a-secret\n\
             auth:\n  token:\n    realm: {realm}\n    service: \"{service}\"\n    issuer: \"{issuer}\"\n    rootcertbundle: {bundle}\n",
            data = dir.join("data").display(),
            realm = auth.realm,
            service = auth.service,
            issuer = auth.issuer,
            bundle = bundle.display(),
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut registry = Registry { host, dir: dir.to_path_buf(), child };
        registry.wait_ready(Duration::from_secs(10)).await.then_some(registry)
    }

    /// False on a port collision (our child could not bind, or a stranger holds the port).
    async fn wait_ready(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        let addr: std::net::SocketAddr = self.host.parse().expect("registry addr");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if self.log().contains("address already in use") {
                    eprintln!("[e2e] port {} was taken before docker-registry bound it; retrying", addr.port());
                    return false;
                }
                panic!("docker-registry exited early ({status}); log:\n{}", self.log());
            }
            if !acr_broker::procnet::pid_listens_on(self.child.id(), addr) {
                if started.elapsed() > Duration::from_secs(2)
                    && acr_broker::procnet::listener_inode(addr).ok().flatten().is_some()
                {
                    eprintln!("[e2e] another process listens on {addr}; retrying on another port");
                    return false;
                }
                assert!(
                    started.elapsed() < limit,
                    "docker-registry not listening after {limit:?}; log:\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if let Ok(a) = super::http::get(&self.host, "/v2/", &[]).await {
                assert_eq!(a.status, 401, "GET /v2/ should ask for a token; log:\n{}", self.log());
                assert!(
                    a.header("www-authenticate").starts_with("Bearer "),
                    "challenge: {}",
                    a.header("www-authenticate")
                );
                return true;
            }
            assert!(started.elapsed() < limit, "docker-registry not ready after {limit:?}; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The registry's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
