//! Shared pieces of the benches: a generated emulator world, daemon configs, the daemon as a
//! child process (so its CPU and memory are its own), a keep-alive HTTP/1.1 client over the unix
//! socket, and /proc readers. Loopback only; every loop is bounded.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use acr_emulator::{Emulator, Knobs, World};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Account of the node and of every generated role.
pub const ACCOUNT: &str = "1111111111111111";
/// The EE instance of the base world (`demo-registry.cn-hangzhou.cr.aliyuncs.com`).
pub const DEMO_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";
/// The Personal registry of the base world.
pub const PERSONAL_HOST: &str = "registry.cn-hangzhou.aliyuncs.com";
/// Annotation naming service roles.
pub const SERVICE_ARNS: &str = "k8s.aliyun.com/acr-service-arns";

/// Generated region `i` (`cn-r0000` …), each with a Personal registry of account A.
pub fn region(i: usize) -> String {
    format!("cn-r{i:04}")
}

/// Personal registry host of generated region `i`.
pub fn region_host(i: usize) -> String {
    format!("registry.{}.aliyuncs.com", region(i))
}

/// ARN of generated service role `i`, assumable from the node role, allowed to pull.
pub fn service_role(i: usize) -> String {
    format!("acs:ram::{ACCOUNT}:role/bench-svc-{i:05}")
}

/// The integration-test world plus `regions` Personal registries and `roles` service roles.
pub fn world(regions: usize, roles: usize, knobs: &str) -> World {
    let mut text = String::new();
    if !knobs.is_empty() {
        let _ = writeln!(text, "[knobs]\n{knobs}\n");
    }
    text.push_str(include_str!("../../tests/worlds/broker.toml"));
    for i in 0..regions {
        let r = region(i);
        let _ = write!(
            text,
            "\n[[personal_registries]]\naccount = \"{ACCOUNT}\"\nregion = \"{r}\"\ntoken_service = \"registry.aliyuncs.com:{r}:bench\"\n"
        );
    }
    for i in 0..roles {
        let _ = write!(
            text,
            "\n[[roles]]\narn = \"{}\"\nmax_session_duration = 3600\npolicies = [\"pull-demo\"]\n\
             trust = {{ ram = [\"acs:ram::{ACCOUNT}:role/node-role\"] }}\n",
            service_role(i)
        );
    }
    World::from_toml(&text).unwrap_or_else(|e| panic!("generated world invalid: {e}"))
}

/// Knobs with a per-call latency and a generous STS bucket (the benches measure the broker).
pub fn knobs(latency_ms: u64) -> Knobs {
    Knobs { latency_ms, assume_role_rate: 1_000_000.0, assume_role_burst: 1_000_000.0, ..Knobs::default() }
}

/// Starts the emulator on a loopback port the OS picks.
pub async fn emulator(world: World, knobs: Knobs) -> Emulator {
    let emu = Emulator::start(world, "127.0.0.1:0".parse().expect("addr")).await.expect("emulator starts");
    emu.set_knobs(knobs);
    emu
}

fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

/// Daemon configuration text pointed at `emu`, with `extra` TOML tables appended.
pub fn config_text(emu: &Emulator, socket: &Path, extra: &str) -> String {
    let base = emu.base_url();
    format!(
        "[server]\nsocket = \"{}\"\nmetrics = \"127.0.0.1:0\"\nallowed_uids = [{}]\nmax_connections = 16384\n\
         [identity]\nsource = \"ecs-ram-role\"\n\
         [aliyun]\nregion = \"cn-hangzhou\"\nsts_endpoint = \"{base}\"\ncr_endpoint = \"{base}/region/{{region}}\"\nmetadata_endpoint = \"{base}\"\n\
         [upstream]\nsts_rate_per_second = 1000\nsts_burst = 1000\nacr_rate_per_second = 1000\nacr_burst = 1000\nmax_concurrent = 64\n{extra}",
        socket.display(),
        own_uid()
    )
}

/// The daemon built by cargo for this bench run (`cargo bench` builds it with the bench profile).
pub fn daemon_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_acr-broker"))
}

/// The docker credential helper built for this run.
pub fn helper_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_docker-credential-acr-broker"))
}

/// `acr-broker serve --config FILE` as a child process; killed on drop.
pub struct ChildDaemon {
    /// The process.
    pub child: Child,
    /// Its API socket.
    pub socket: PathBuf,
    /// Keeps the config and socket directory alive.
    pub dir: tempfile::TempDir,
}

impl ChildDaemon {
    /// Writes the config for `emu` and starts the daemon; returns once `/readyz` answers 200.
    /// `log` is the RUST_LOG filter (the audit line per answer is at `info`).
    pub async fn spawn(emu: &Emulator, extra: &str, log: &str) -> ChildDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("broker.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_text(emu, &socket, extra)).expect("write config");
        let child = Command::new(daemon_binary())
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn acr-broker serve");
        let daemon = ChildDaemon { child, socket, dir };
        daemon.wait_ready(Duration::from_secs(20)).await;
        daemon
    }

    async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(mut c) = Conn::connect(&self.socket).await {
                if let Ok((200, _)) = c.get("/readyz").await {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "daemon never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection to the daemon's unix socket.
pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects and performs the (trivial) HTTP/1 handshake.
    pub async fn connect(socket: &Path) -> std::io::Result<Conn> {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Conn { send })
    }

    /// `GET path`; status and body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes), hyper::Error> {
        let req = http::Request::get(path).header("host", "localhost").body(Full::new(Bytes::new())).expect("req");
        self.send(req).await
    }

    /// `POST path` with a JSON body; status and body.
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<(u16, Bytes), hyper::Error> {
        let req = http::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("req");
        self.send(req).await
    }

    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), hyper::Error> {
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A prepared credential request: GET for node defaults, POST when annotations are given.
#[derive(Clone)]
pub enum Ask {
    /// `GET /v1/credentials/{host}` (what the docker helper sends).
    Get(String),
    /// `POST /v1/credentials` with this body.
    Post(Bytes),
}

impl Ask {
    /// A request for `host` with optional service roles.
    pub fn new(host: &str, service_arns: Option<&str>) -> Ask {
        match service_arns {
            None => Ask::Get(format!("/v1/credentials/{host}")),
            Some(arns) => Ask::Post(Bytes::from(
                serde_json::json!({"registry": host, "annotations": {SERVICE_ARNS: arns}}).to_string(),
            )),
        }
    }

    /// Sends it on `conn`.
    pub async fn send(&self, conn: &mut Conn) -> Result<(u16, Bytes), hyper::Error> {
        match self {
            Ask::Get(path) => conn.get(path).await,
            Ask::Post(body) => conn.post("/v1/credentials", body.clone()).await,
        }
    }
}

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// utime + stime of `pid` (`"self"` for this process), in seconds.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse::<f64>().ok()).unwrap_or(100.0)
}

/// The `p`-th percentile (0..=100) of sorted `v`.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

/// `1.234 ms` style.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The machine line for reports: cores and CPU model.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cores} cores, {}", model.unwrap_or("unknown CPU"))
}

/// Reads an env var as a number, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs a bench's body on a two-worker runtime (the machine's two cores) and returns what it
/// returned; `None` under `--list` (cargo's test discovery), when there is nothing to run.
pub fn run_bench<T>(body: impl std::future::Future<Output = T>) -> Option<T> {
    if std::env::args().any(|a| a == "--list") {
        return None;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    Some(rt.block_on(body))
}
