//! `SIGHUP` re-reads the config under load: no request fails, a warm key makes no upstream call,
//! an invalid file is reported and ignored, and a changed default takes effect at once.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acr_emulator::Emulator;
use support::*;

const BROKER: &str = env!("CARGO_BIN_EXE_acr-broker");
const KEYS: usize = 50;
const RELOADS: usize = 20;
const CUSTOM_DOMAIN: &str = "registry.demo.example.com";

fn herd_host(i: usize) -> String {
    format!("herd{}-registry.cn-hangzhou.cr.aliyuncs.com", i % KEYS)
}

fn write_config(path: &Path, emu: &Emulator, socket: &Path, extra: &str) {
    let text = config_text(emu, socket, &ConfigParts { extra, ..ConfigParts::default() });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("replace config");
}

fn hangup(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGHUP);
    }
}

fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
}

/// Reloads finished so far: a summary line per reload, whether it took or was refused.
fn reloads_done(log: &Path) -> usize {
    log_count(log, "config reloaded") + log_count(log, "config reload refused;")
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `127.0.0.1:PORT` of the metrics listener, from the daemon's "listening" log line.
fn metrics_addr(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().find(|l| l.contains("acr-broker listening")).expect("listening line");
    let after = &line[line.find("metrics=Some(").expect("metrics addr") + "metrics=Some(".len()..];
    after[..after.find(')').expect("closing paren")].to_owned()
}

async fn scrape(addr: &str) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect metrics");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("send");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    String::from_utf8(body.to_vec()).expect("utf8")
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_keeps_warm_keys_and_ignores_invalid_files() {
    let emu =
        Emulator::start(world_with_instances(KEYS), "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, config, log) =
        (dir.path().join("broker.sock"), dir.path().join("broker.toml"), dir.path().join("daemon.log"));
    write_config(&config, &emu, &socket, "");
    let mut daemon = Command::new(BROKER)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn daemon");
    wait_for("the daemon to listen", Duration::from_secs(10), || log_count(&log, "acr-broker listening") == 1);

    // Warm every key, and see the custom domain refused while no default names its instance.
    for i in 0..KEYS {
        let (s, v, _) = request_on(&socket, "GET", &format!("/v1/credentials/{}", herd_host(i)), None).await;
        assert_eq!(s, 200, "{v}");
    }
    let warm_tokens = emu.count("GetAuthorizationToken");
    assert_eq!(warm_tokens, KEYS as u64);
    let (s, _, _) = request_on(&socket, "GET", &format!("/v1/credentials/{CUSTOM_DOMAIN}"), None).await;
    assert_eq!(s, 404, "no default instance lists the custom domain yet");

    // Clients keep asking for the warm keys while the config is rewritten and SIGHUPed.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, answered, failures, socket) = (stop.clone(), answered.clone(), failures.clone(), socket.clone());
            tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::SeqCst) {
                    let path = format!("/v1/credentials/{}", herd_host(i));
                    let (s, v, _) = request_on(&socket, "GET", &path, None).await;
                    if s == 200 {
                        answered.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures.lock().expect("failures").push(format!("{s}: {v}"));
                    }
                    i += 4;
                }
            })
        })
        .collect();
    for n in 0..RELOADS {
        if n % 2 == 0 {
            // Harmless: a new upstream budget, nothing that any cached value was loaded with.
            let extra = format!("[upstream]\nsts_rate_per_second = {}.0\n", 10 + n);
            write_config(&config, &emu, &socket, &extra);
        } else {
            std::fs::write(
                &config,
                "[aliyun]\nregion = \"cn-hangzhou\"\n[cache]\nrefresh_fraction = 7.0\nbogus_key = 1\n",
            )
            .expect("write invalid config");
        }
        hangup(&daemon);
        wait_for("the reload", Duration::from_secs(10), || reloads_done(&log) == n + 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    let failed = failures.lock().expect("failures").clone();
    assert!(
        failed.is_empty(),
        "{} requests failed during reloads, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(answered.load(Ordering::SeqCst) > 200, "the load ran: {}", answered.load(Ordering::SeqCst));
    assert_eq!(emu.count("GetAuthorizationToken"), warm_tokens, "no upstream call for an unchanged warm key");
    assert_eq!(log_count(&log, "config reloaded"), RELOADS / 2);
    assert_eq!(log_count(&log, "config reload refused;"), RELOADS / 2);
    assert!(log_count(&log, "bogus_key") >= RELOADS / 2, "every refused file names its problem");

    // A changed default takes effect on the next request.
    write_config(&config, &emu, &socket, "[defaults]\nacr_instance_ids = [\"cri-devaaaaaaaaaaaa01\"]\n");
    hangup(&daemon);
    wait_for("the last reload", Duration::from_secs(10), || reloads_done(&log) == RELOADS + 1);
    let (s, v, _) = request_on(&socket, "GET", &format!("/v1/credentials/{CUSTOM_DOMAIN}"), None).await;
    assert_eq!(s, 200, "the new default instance serves its custom domain: {v}");

    let metrics = scrape(&metrics_addr(&log)).await;
    assert_eq!(metric(&metrics, "acr_broker_config_reloads_total{outcome=\"ok\"}"), (RELOADS / 2 + 1) as f64);
    assert_eq!(metric(&metrics, "acr_broker_config_reloads_total{outcome=\"invalid\"}"), (RELOADS / 2) as f64);
    assert!(metric(&metrics, "acr_broker_config_last_reload_success_timestamp_seconds") > 1.6e9);

    // SIGHUP never ends the daemon; SIGTERM still does, cleanly.
    assert!(daemon.try_wait().expect("status").is_none(), "the daemon is still running");
    // SAFETY: as above.
    unsafe {
        libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(daemon.wait().expect("exit").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_named_and_kept() {
    let h = Harness::start(broker_world(), "").await;
    wait_ready(&h, Duration::from_secs(10)).await;
    let (s, _) = h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[]).await;
    assert_eq!(s, 200);
    let path = h.dir.path().join("new.toml");
    let parts =
        ConfigParts { server: "max_connections = 7\n", extra: "[cache]\ncapacity = 5\n", ..ConfigParts::default() };
    std::fs::write(&path, config_text(&h.emulator, &h.dir.path().join("elsewhere.sock"), &parts)).expect("write");
    let summary = h.daemon().reload_from(&path).await.expect("valid file");
    assert_eq!(summary.needs_restart, vec!["server.socket", "server.max_connections", "cache.capacity"]);
    assert!(!summary.caches_dropped);
    let config = h.daemon().broker.config();
    assert_eq!(config.server.socket, h.socket, "the socket stays where it is");
    // A new identity source drops what was loaded with the old one.
    let parts = ConfigParts { identity: "source = \"ecs-ram-role\"\nreread_seconds = 60", ..ConfigParts::default() };
    std::fs::write(&path, config_text(&h.emulator, &h.socket, &parts)).expect("write");
    let before = h.emulator.count("GetAuthorizationToken");
    let summary = h.daemon().reload_from(&path).await.expect("valid file");
    assert!(summary.caches_dropped);
    let (s, _) = h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(h.emulator.count("GetAuthorizationToken"), before + 1, "fetched again with the new identity");
    h.stop().await;
}
