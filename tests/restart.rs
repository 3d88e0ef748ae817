//! Restart under load: the real `acr-broker serve` binary as a child process, SIGTERM while 500
//! requests are in flight, then a new daemon on the same socket path.

#[path = "faults/common.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use acr_emulator::{Emulator, Knobs};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// Distinct credential keys (Enterprise instances) the load is spread over.
const KEYS: usize = 100;
/// Requests in flight when SIGTERM arrives.
const IN_FLIGHT: usize = 500;
/// Requests started just after SIGTERM.
const LATE: usize = 50;

/// What one request got.
#[derive(Debug)]
#[allow(dead_code)] // the texts are for failure messages
enum Outcome {
    /// A whole HTTP answer.
    Answered(u16, Value),
    /// The connection could not be made (socket gone or not listening).
    Refused(String),
    /// Connected, but the connection closed before any answer.
    NoAnswer(String),
    /// An answer whose body was cut off: never acceptable.
    Truncated(String),
}

async fn try_ask(socket: &Path, host: &str) -> (Outcome, Duration) {
    let started = tokio::time::Instant::now();
    let outcome = async {
        let stream = match tokio::net::UnixStream::connect(socket).await {
            Ok(s) => s,
            Err(e) => return Outcome::Refused(e.to_string()),
        };
        let (mut send, conn) = match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(e) => return Outcome::NoAnswer(e.to_string()),
        };
        tokio::spawn(conn);
        let body = serde_json::json!({ "registry": host }).to_string();
        let req = http::Request::post("/v1/credentials")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = match send.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Outcome::NoAnswer(e.to_string()),
        };
        let status = resp.status().as_u16();
        match resp.into_body().collect().await {
            Ok(b) => match serde_json::from_slice(&b.to_bytes()) {
                Ok(v) => Outcome::Answered(status, v),
                Err(e) => Outcome::Truncated(format!("{status}: body is not JSON: {e}")),
            },
            Err(e) => Outcome::Truncated(format!("{status}: {e}")),
        }
    }
    .await;
    (outcome, started.elapsed())
}

fn host(i: usize) -> String {
    format!("herd{}-registry.cn-hangzhou.cr.aliyuncs.com", i % KEYS)
}

fn write_config(dir: &Path, emu: &Emulator) -> (PathBuf, PathBuf) {
    let socket = dir.join("run/broker.sock");
    let parts = support::ConfigParts { extra: "[upstream]\nmax_concurrent = 256\n", ..Default::default() };
    let text = support::config_text(emu, &socket, &parts);
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (path, socket)
}

/// A child daemon, killed (SIGKILL, this pid only) if a test panics while it runs.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn spawn(config: &Path, log: PathBuf) -> Daemon {
        let err = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_acr-broker"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn acr-broker");
        Daemon { child: Some(child), log }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn sigterm(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(ok.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the process to exit; its status and how long it took.
    async fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait().expect("try_wait") {
                self.child = None;
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < limit, "daemon did not exit within {limit:?}; log:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls until a credential request on `socket` answers 200; how long that took.
async fn until_serving(socket: &Path, daemon: &Daemon, limit: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        if let (Outcome::Answered(200, v), _) = try_ask(socket, &host(0)).await {
            common::expiry(&v);
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "daemon not serving after {limit:?}; log:\n{}", daemon.log_tail());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until `/healthz` on `socket` answers 200; how long that took.
async fn until_healthy(socket: &Path, daemon: &Daemon, limit: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            let (s, v, _) = support::request_on(socket, "GET", "/healthz", None).await;
            assert_eq!(s, 200, "{v}");
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "daemon not listening after {limit:?}; log:\n{}", daemon.log_tail());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    clean_errors: usize,
    refused: usize,
    no_answer: usize,
    slowest: Duration,
}

fn tally(results: &[(Outcome, Duration)]) -> Tally {
    let now = acr_broker::clock::system().now();
    let mut t = Tally::default();
    for (o, took) in results {
        t.slowest = t.slowest.max(*took);
        match o {
            Outcome::Answered(200, v) => {
                assert!(common::expiry(v) > now, "expired credential: {v}");
                t.ok += 1;
            }
            Outcome::Answered(s, v) => {
                assert!(matches!(s, 502 | 503), "unexpected {s}: {v}");
                assert!(v["error"]["code"].is_string(), "{v}");
                t.clean_errors += 1;
            }
            Outcome::Refused(_) => t.refused += 1,
            Outcome::NoAnswer(_) => t.no_answer += 1,
            Outcome::Truncated(e) => panic!("an answer was cut off: {e}"),
        }
    }
    t
}

/// SIGTERM with 500 requests in flight over 99 cold keys (the emulator takes 300 ms per call,
/// so each request waits on ListInstance then GetAuthorizationToken, and SIGTERM comes once
/// every key's ListInstance has been answered): every request in flight finishes with 200; the
/// socket file is removed at once, so requests started after SIGTERM are refused (counted)
/// instead of waiting for the drain; a new daemon started at once on the same path serves
/// while the old one is still draining; the old one exits 0 within a few seconds without
/// touching the new one's socket, and the new one removes it when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_a_new_daemon_serves_at_once() {
    let emu = Emulator::start(support::world_with_instances(KEYS), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, socket) = write_config(dir.path(), &emu);
    let mut first = Daemon::spawn(&config, dir.path().join("daemon1.log"));
    // Warms herd0 (so 99 keys are cold below).
    until_serving(&socket, &first, Duration::from_secs(20)).await;

    emu.set_knobs(Knobs { latency_ms: 300, ..Knobs::default() });
    emu.reset_counters();
    let mut wave = Vec::with_capacity(IN_FLIGHT);
    for i in 1..=IN_FLIGHT {
        let (socket, host) = (socket.clone(), host(i));
        wave.push(tokio::spawn(async move { try_ask(&socket, &host).await }));
    }
    // Every cold key's load has reached upstream (so the daemon read those requests); each
    // request now waits on GetAuthorizationToken for about 300 ms more.
    let started = tokio::time::Instant::now();
    while emu.count("ListInstance") < (KEYS - 1) as u64 {
        assert!(started.elapsed() < Duration::from_secs(10), "load never reached upstream: {:?}", emu.counters());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let in_flight_at_kill = wave.iter().filter(|t| !t.is_finished()).count();
    first.sigterm();
    let killed = tokio::time::Instant::now();
    while socket.exists() {
        // The drain takes at least 300 ms (GetAuthorizationToken is still in flight).
        assert!(killed.elapsed() < Duration::from_millis(150), "socket file still there 150 ms after SIGTERM");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let socket_gone_after = killed.elapsed();
    let mut late = Vec::with_capacity(LATE);
    for i in 0..LATE {
        let (socket, host) = (socket.clone(), host(i));
        late.push(tokio::spawn(async move { try_ask(&socket, &host).await }));
    }
    let mut late_results = Vec::with_capacity(LATE);
    for t in late {
        late_results.push(t.await.expect("late request task"));
    }

    // The new daemon, at once, while the old one drains.
    let spawned = tokio::time::Instant::now();
    let mut second = Daemon::spawn(&config, dir.path().join("daemon2.log"));
    let listening_took = until_healthy(&socket, &second, Duration::from_secs(5)).await;
    let first_still_draining = first.child.as_mut().expect("running").try_wait().expect("try_wait").is_none();

    let mut results = Vec::with_capacity(IN_FLIGHT);
    for t in wave {
        results.push(t.await.expect("request task"));
    }
    let (status, _) = first.wait_exit(Duration::from_secs(15)).await;
    let exit_after_kill = killed.elapsed();
    until_serving(&socket, &second, Duration::from_secs(10)).await;
    let second_took = spawned.elapsed();
    let w = tally(&results);
    let l = tally(&late_results);
    eprintln!(
        "restart: {in_flight_at_kill} of {IN_FLIGHT} requests in flight at SIGTERM -> {} ok, {} clean errors, \
         {} refused, {} closed unanswered, slowest {:?}; socket removed {socket_gone_after:?} after SIGTERM; \
         {LATE} started after that -> {} ok, {} refused, {} closed unanswered, slowest {:?}; old daemon {status} \
         {exit_after_kill:?} after SIGTERM; new daemon listening {listening_took:?} after spawn (old one still \
         draining: {first_still_draining}), first credential {second_took:?} after spawn (boot: 3 metadata calls, \
         then ListInstance and GetAuthorizationToken, 300 ms each); upstream calls {:?}",
        w.ok,
        w.clean_errors,
        w.refused,
        w.no_answer,
        w.slowest,
        l.ok,
        l.refused,
        l.no_answer,
        l.slowest,
        emu.counters()
    );
    assert_eq!(w.ok, IN_FLIGHT, "requests in flight at SIGTERM must finish; log:\n{}", first.log_tail());
    assert_eq!(l.refused, LATE, "requests after SIGTERM are refused at once: {l:?}");
    assert!(l.slowest < Duration::from_millis(500), "a request after SIGTERM waited {:?}", l.slowest);
    assert!(status.success(), "exit status {status}; log:\n{}", first.log_tail());
    assert!(exit_after_kill < Duration::from_secs(5), "exit took {exit_after_kill:?}");
    assert!(listening_took < Duration::from_secs(1), "new daemon listening after {listening_took:?}");
    assert!(second_took < Duration::from_secs(3), "new daemon served after {second_took:?}");
    // The old daemon's exit left the new daemon's socket alone.
    assert!(socket.exists(), "the old daemon removed the new daemon's socket");
    until_serving(&socket, &second, Duration::from_secs(1)).await;

    second.sigterm();
    let (status, _) = second.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "second daemon exit {status}; log:\n{}", second.log_tail());
    assert!(!socket.exists(), "socket file left behind at {}", socket.display());
    emu.shutdown().await;
}
