//! Shared harness for integration tests: the emulator, an in-process daemon on a unix socket in
//! a temp dir, and a tiny HTTP/1.1 client over that socket.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use acr_broker::clock::SharedClock;
use acr_broker::config::Config;
use acr_broker::daemon::Daemon;
use acr_emulator::{Emulator, World};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

pub const SERVICE_ROLE: &str = "acs:ram::1111111111111111:role/eci-acr-service";
pub const USER_ROLE: &str = "acs:ram::2222222222222222:role/eci-acr-user";
pub const NO_PULL_ROLE: &str = "acs:ram::2222222222222222:role/no-pull";
pub const DEMO: &str = "cri-devaaaaaaaaaaaa01";
pub const PARTNER: &str = "cri-devbbbbbbbbbbbb02";
pub const NORTH: &str = "cri-bjaaaaaaaaaaaa03";
pub const DECOY: &str = "cri-devcccccccccccc04";
pub const INSTANCE_IDS: &str = "k8s.aliyun.com/acr-instance-ids";
pub const SERVICE_ARNS: &str = "k8s.aliyun.com/acr-service-arns";
pub const USER_ARNS: &str = "k8s.aliyun.com/acr-user-arns";

/// The broker test world (dev world + extras).
pub fn broker_world() -> World {
    World::from_toml(include_str!("../worlds/broker.toml")).expect("test world parses")
}

/// The broker test world plus `n` Enterprise instances `herd{i}` in cn-hangzhou that the node
/// role may pull from: `n` independent credential keys.
pub fn world_with_instances(n: usize) -> acr_emulator::World {
    let mut text = include_str!("../worlds/broker.toml").to_owned();
    text = text.replace(
        "\"acs:cr:*:1111111111111111:instance/cri-devaaaaaaaaaaaa01\",",
        "\"acs:cr:*:1111111111111111:instance/*\",",
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[instances]]\naccount = \"1111111111111111\"\nid = \"cri-herd{i:012}\"\nname = \"herd{i}\"\n\
             region = \"cn-hangzhou\"\ntoken_service = \"svc-{i}\"\n\
             domains = [{{ domain = \"herd{i}-registry.cn-hangzhou.cr.aliyuncs.com\", type = \"SYSTEM\", endpoint = \"internet\" }}]\n"
        ));
    }
    acr_emulator::World::from_toml(&text).expect("herd world")
}

/// The parts of a test daemon's config that differ between tests.
#[derive(Debug, Clone, Copy)]
pub struct ConfigParts<'a> {
    /// Top-level keys (e.g. `prefetch = [...]`), placed before every table.
    pub top: &'a str,
    /// Lines of `[server]` after `socket` and `metrics`; `allowed_uids = [<our uid>]` is added
    /// unless these lines set `allowed_uids` themselves.
    pub server: &'a str,
    /// The body of `[identity]`.
    pub identity: &'a str,
    /// Whole tables appended at the end.
    pub extra: &'a str,
}

impl Default for ConfigParts<'_> {
    fn default() -> Self {
        ConfigParts { top: "", server: "", identity: "source = \"ecs-ram-role\"", extra: "" }
    }
}

/// Daemon config text pointed at `emu` (STS, ACR and metadata all served by the emulator).
pub fn config_text(emu: &Emulator, socket: &std::path::Path, parts: &ConfigParts<'_>) -> String {
    let base = emu.base_url();
    let uids =
        if parts.server.contains("allowed_uids") { String::new() } else { format!("allowed_uids = [{}]\n", my_uid()) };
    let ConfigParts { top, server, identity, extra } = parts;
    format!(
        "{top}[server]\nsocket = \"{}\"\nmetrics = \"127.0.0.1:0\"\n{uids}{server}\n\
         [identity]\n{identity}\n\
         [aliyun]\nregion = \"cn-hangzhou\"\nsts_endpoint = \"{base}\"\ncr_endpoint = \"{base}/region/{{region}}\"\nmetadata_endpoint = \"{base}\"\n\
         [service_account_tokens]\noidc_provider_arn = \"acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev\"\n{extra}",
        socket.display()
    )
}

/// A parsed daemon config pointed at `emu` (panics with the text when it does not parse).
pub fn config_from(emu: &Emulator, socket: &std::path::Path, parts: &ConfigParts<'_>) -> Config {
    let text = config_text(emu, socket, parts);
    Config::from_toml(&text, "<test>").unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"))
}

/// A daemon config pointed at `emu`, with `extra` TOML appended (extra tables only).
pub fn config_for(emu: &Emulator, socket: &std::path::Path, extra: &str) -> Config {
    config_from(emu, socket, &ConfigParts { extra, ..ConfigParts::default() })
}

/// This process's uid (from `/proc/self`, no libc needed).
pub fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).expect("read /proc/self")
}

pub struct Harness {
    pub emulator: Emulator,
    pub daemon: Option<Daemon>,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(world: World, extra_config: &str) -> Harness {
        let emulator = Emulator::start(world, "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
        Self::with_emulator(emulator, extra_config, acr_broker::clock::system()).await
    }

    pub async fn with_emulator(emulator: Emulator, extra_config: &str, clock: SharedClock) -> Harness {
        Self::build(emulator, ConfigParts { extra: extra_config, ..ConfigParts::default() }, clock).await
    }

    /// Starts with top-level config keys (e.g. `prefetch = [...]`) as well as extra tables.
    pub async fn start_with_top_level(world: World, top: &str, extra_config: &str) -> Harness {
        let emulator = Emulator::start(world, "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
        Self::start_with_parts(emulator, ConfigParts { top, extra: extra_config, ..ConfigParts::default() }).await
    }

    /// Starts a daemon over `emulator` with any part of the config changed.
    pub async fn start_with_parts(emulator: Emulator, parts: ConfigParts<'_>) -> Harness {
        Self::build(emulator, parts, acr_broker::clock::system()).await
    }

    async fn build(emulator: Emulator, parts: ConfigParts<'_>, clock: SharedClock) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("broker.sock");
        let config = config_from(&emulator, &socket, &parts);
        let daemon = Daemon::start(config, clock).await.expect("daemon starts");
        Harness { emulator, daemon: Some(daemon), socket, dir }
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value, http::HeaderMap) {
        request_on(&self.socket, method, path, body).await
    }

    pub async fn credentials(&self, registry: &str, annotations: &[(&str, &str)]) -> (u16, Value) {
        let ann: serde_json::Map<String, Value> =
            annotations.iter().map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned()))).collect();
        let (s, v, _) = self
            .request("POST", "/v1/credentials", Some(serde_json::json!({"registry": registry, "annotations": ann})))
            .await;
        (s, v)
    }

    pub async fn metrics_text(&self) -> String {
        let addr = self.daemon().metrics_addr.expect("metrics listener");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect metrics");
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("hs");
        tokio::spawn(conn);
        let req =
            http::Request::get("/metrics").header("host", "localhost").body(Full::new(Bytes::new())).expect("req");
        let resp = send.send_request(req).await.expect("send");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(body.to_vec()).expect("utf8")
    }

    pub async fn stop(mut self) -> Emulator {
        if let Some(d) = self.daemon.take() {
            d.shutdown().await;
        }
        self.emulator
    }
}

/// One HTTP/1.1 request over a fresh connection to the unix socket.
pub async fn request_on(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, http::HeaderMap) {
    let stream = tokio::net::UnixStream::connect(socket).await.expect("connect to daemon socket");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut b = http::Request::builder().method(method).uri(path).header("host", "localhost");
    let bytes = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = b.body(Full::new(bytes)).expect("request");
    let resp = send.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, v, headers)
}

/// Starts the emulator and the daemon on one manual clock, waiting until the daemon is ready.
pub async fn on_manual_clock(extra: &str) -> (Harness, Arc<acr_broker::clock::ManualClock>) {
    use acr_broker::clock::{Clock, ManualClock};
    let clock = ManualClock::new(acr_broker::clock::system().now());
    let c2 = clock.clone();
    let emu =
        Emulator::start_with_clock(broker_world(), "127.0.0.1:0".parse().expect("addr"), Arc::new(move || c2.now()))
            .await
            .expect("emulator");
    let h = Harness::with_emulator(emu, extra, clock.clone()).await;
    wait_ready(&h, Duration::from_secs(10)).await;
    (h, clock)
}

/// A test that cannot run here says so loudly and passes — except in CI (`CI` set), where
/// `.ci/run` installed every tool first, so a missing one is a failure, not a silent pass.
pub fn skip(reason: &str) {
    assert!(std::env::var_os("CI").is_none(), "CI must not skip: {reason}");
    eprintln!("\n!!!!!! SKIPPED: {reason} !!!!!!\n");
}

/// Waits until `/readyz` says ready (or panics after `limit`).
pub async fn wait_ready(h: &Harness, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (s, v, _) = h.request("GET", "/readyz", None).await;
        if s == 200 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "daemon never became ready: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `program args` with `env` added, `stdin` written to it, and returns its output (a shim
/// such as `docker-credential-acr-broker get` or `acr-broker kubelet-plugin`).
pub async fn run_with_stdin(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    stdin: &str,
) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let program = program.as_ref();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(pipe);
    child.wait_with_output().await.expect("shim output")
}

pub fn shared<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// `setpriv`, where Debian's util-linux puts it.
pub fn setpriv_bin() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// `curl URL` run as `uid:gid` (setpriv, no supplementary groups) with extra curl arguments
/// (e.g. `--unix-socket PATH`); returns (HTTP status, body). Needs root, setpriv and curl.
pub async fn curl_as(uid: u32, gid: u32, url: &str, extra: &[&str]) -> (u16, String) {
    let setpriv = setpriv_bin().expect("setpriv");
    let out = tokio::process::Command::new(setpriv)
        .args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "curl".into()])
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .await
        .expect("run setpriv curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    assert!(out.status.success(), "curl as {uid}:{gid} failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// One `GET path` over a fresh loopback TCP connection with a `Host` header of our choosing
/// (as a browser after DNS rebinding would send it): (status, headers, body).
pub async fn tcp_get_with_host(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, http::HeaderMap, Bytes) {
    tcp_request(addr, "GET", path, &[("host", host)]).await
}

/// One request over a fresh loopback TCP connection, with exactly the headers given (`host`
/// included): (status, headers, body).
pub async fn tcp_request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect TCP listener");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut b = http::Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).expect("request");
    let resp = send.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body)
}

/// Logs of this process (the in-process daemons), captured at TRACE level.
pub fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static BUF: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init();
        buf
    })
    .clone()
}

/// Where [`captured_logs`] writes.
pub struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured logs as text.
pub fn logs_text(buf: &Arc<std::sync::Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().expect("log buffer")).into_owned()
}
