//! Load harness over the unix socket, and the docker helper's start-up time.
//!
//! The daemon runs as a child process (`acr-broker serve --config`) so its CPU time is its own;
//! the emulator and the clients run in this process. Part 1: `LOAD_CONNECTIONS` (64) keep-alive
//! HTTP/1.1 connections ask for warm keys for `LOAD_SECONDS` (10 s, at most 5,000,000 answers)
//! twice: paced at `LOAD_RATE` (40,000/s) offered, then closed loop (each connection sends its
//! next request when the answer arrives: the capacity). Latency is from send to full answer.
//! Part 2: `docker-credential-acr-broker get` as a whole process, `HELPER_RUNS` (200) times on a
//! warm key, interleaved with the same number of `/bin/true` spawns (the floor).
//!
//! Run: `cargo bench --bench socket_load`. Loopback only.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Ask, ChildDaemon, Conn};

const MAX_ANSWERS: usize = 5_000_000;

fn main() {
    common::run_bench(run());
}

async fn run() {
    let connections: usize = common::env_or("LOAD_CONNECTIONS", 64);
    let seconds: f64 = common::env_or("LOAD_SECONDS", 10.0);
    let log = std::env::var("LOAD_RUST_LOG").unwrap_or_else(|_| String::from("info"));
    println!("machine: {}", common::machine());
    let emu = common::emulator(common::world(0, 0, ""), common::knobs(0)).await;
    let daemon = ChildDaemon::spawn(&emu, "", &log).await;
    let svc = "acs:ram::1111111111111111:role/eci-acr-service";
    let keys = vec![
        Ask::new(common::DEMO_HOST, None),
        Ask::new(common::PERSONAL_HOST, None),
        Ask::new("north-registry.cn-beijing.cr.aliyuncs.com", None),
        Ask::new(common::DEMO_HOST, Some(svc)),
    ];
    let mut warm = Conn::connect(&daemon.socket).await.expect("connect");
    for k in &keys {
        let (status, body) = k.send(&mut warm).await.expect("warm-up request");
        assert_eq!(status, 200, "warm-up answer: {}", String::from_utf8_lossy(&body));
    }
    let upstream_before = emu.counters();

    // Part 1: keep-alive load.
    let pid = daemon.pid().to_string();
    let keys = Arc::new(keys);
    let stop = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::connect(&daemon.socket).await.expect("connect"));
    }
    // One second of warm-up traffic, then the measured windows on fresh connections.
    let _ = drive(std::mem::take(&mut conns), &keys, Duration::from_secs(1), &stop, None).await;
    let rate: f64 = common::env_or("LOAD_RATE", 40_000.0);
    println!("\n== socket load: {connections} keep-alive connections, {} warm keys, RUST_LOG={log} ==", keys.len());
    for (label, pace) in [
        (format!("paced at {rate:.0}/s offered"), Some(rate)),
        (String::from("closed loop (as fast as answered)"), None),
    ] {
        let mut conns = Vec::with_capacity(connections);
        for _ in 0..connections {
            conns.push(Conn::connect(&daemon.socket).await.expect("connect"));
        }
        let (cpu_d0, cpu_s0) = (common::cpu_seconds(&pid), common::cpu_seconds("self"));
        let started = Instant::now();
        let (mut lat, errors) = drive(conns, &keys, Duration::from_secs_f64(seconds), &stop, pace).await;
        let wall = started.elapsed().as_secs_f64();
        let (cpu_d, cpu_s) = (common::cpu_seconds(&pid) - cpu_d0, common::cpu_seconds("self") - cpu_s0);
        lat.sort_unstable();
        let n = lat.len();
        println!("-- {label}");
        println!("answers: {n} in {wall:.2} s = {:.0} answers/s (errors: {errors})", n as f64 / wall);
        println!(
            "latency: p50 {}  p99 {}  p99.9 {}  max {}",
            common::ms(common::percentile(&lat, 50.0)),
            common::ms(common::percentile(&lat, 99.0)),
            common::ms(common::percentile(&lat, 99.9)),
            common::ms(lat.last().copied().unwrap_or_default())
        );
        println!(
            "cpu: daemon {cpu_d:.2} s ({:.0} % of one core, {:.1} µs/answer); bench process (clients + idle emulator) {cpu_s:.2} s ({:.0} %)",
            cpu_d / wall * 100.0,
            cpu_d / n.max(1) as f64 * 1e6,
            cpu_s / wall * 100.0
        );
    }
    // Part 1b: a warm credential against the daemon's own /healthz, same run, closed loop,
    // rounds interleaved so drift on a noisy machine hits every target alike.
    let cmp_conns: usize = common::env_or("CMP_CONNECTIONS", 32);
    let cmp_seconds: f64 = common::env_or("CMP_SECONDS", 3.0);
    let cmp_rounds: usize = common::env_or("CMP_ROUNDS", 3);
    let targets: Vec<(&str, Arc<Vec<Ask>>)> = vec![
        ("GET /healthz", Arc::new(vec![Ask::Get(String::from("/healthz"))])),
        ("GET /v1/credentials/{registry}", Arc::new(vec![Ask::new(common::DEMO_HOST, None)])),
        ("POST /v1/credentials (annotations)", Arc::new(vec![Ask::new(common::DEMO_HOST, Some(svc))])),
    ];
    println!("\n== credentials vs health: {cmp_conns} keep-alive connections, closed loop, {cmp_rounds} rounds x {cmp_seconds} s each ==");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..cmp_rounds {
        for (i, (_, asks)) in targets.iter().enumerate() {
            let mut conns = Vec::with_capacity(cmp_conns);
            for _ in 0..cmp_conns {
                conns.push(Conn::connect(&daemon.socket).await.expect("connect"));
            }
            let started = Instant::now();
            let (lat, errors) = drive(conns, asks, Duration::from_secs_f64(cmp_seconds), &stop, None).await;
            assert_eq!(errors, 0, "every answer is a 200");
            rates[i].push(lat.len() as f64 / started.elapsed().as_secs_f64());
        }
    }
    let names: Vec<&str> = targets.iter().map(|(name, _)| *name).collect();
    print_ratios(&names, &rates);
    for (name, asks) in &targets[1..] {
        let mut conns = Vec::with_capacity(cmp_conns);
        for _ in 0..cmp_conns {
            conns.push(Conn::connect(&daemon.socket).await.expect("connect"));
        }
        let (mut lat, errors) = drive(conns, asks, Duration::from_secs_f64(seconds), &stop, Some(rate)).await;
        lat.sort_unstable();
        println!(
            "{name:<36} paced {rate:.0}/s: {} answers, p50 {}  p99 {}  p99.9 {} (errors {errors})",
            lat.len(),
            common::ms(common::percentile(&lat, 50.0)),
            common::ms(common::percentile(&lat, 99.0)),
            common::ms(common::percentile(&lat, 99.9)),
        );
    }

    // The same comparison with oha (the issue's own tool), when it is installed: a separate
    // load generator process, so the daemon's ratio is not coloured by this process's client.
    if let Some(oha) = which("oha") {
        println!(
            "\n== the same with oha: {cmp_conns} connections, {cmp_rounds} rounds x {cmp_seconds} s, interleaved =="
        );
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
        for _ in 0..cmp_rounds {
            for (i, (_, asks)) in targets.iter().enumerate() {
                rates[i].push(oha_rate(&oha, &daemon.socket, &asks[0], cmp_conns, cmp_seconds));
            }
        }
        print_ratios(&names, &rates);
    } else {
        println!("(oha is not installed: `cargo install oha` adds the same comparison with it)");
    }

    let upstream_after = emu.counters();
    println!("upstream calls during the runs: {}", if upstream_before == upstream_after { "none" } else { "SOME" });
    println!("daemon RSS after load: {:.1} MiB", common::rss_bytes(daemon.pid()) as f64 / 1048576.0);

    // Part 2: helper start-up.
    let runs: usize = common::env_or("HELPER_RUNS", 200);
    let helper = common::helper_binary();
    let mut helper_times = Vec::with_capacity(runs);
    let mut true_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let status = Command::new("/bin/true").status().expect("spawn /bin/true");
        true_times.push(t.elapsed());
        assert!(status.success());
        let t = Instant::now();
        let mut child = Command::new(&helper)
            .arg("get")
            .env("ACR_BROKER_SOCKET", &daemon.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn helper");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(common::DEMO_HOST.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("helper output");
        helper_times.push(t.elapsed());
        assert!(out.status.success(), "helper failed: {}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"Secret\""), "helper printed no credential");
    }
    helper_times.sort_unstable();
    true_times.sort_unstable();
    println!("\n== docker-credential-acr-broker get, {runs} runs, warm key, daemon in a child process ==");
    println!(
        "helper:    median {}  p90 {}  min {}",
        common::ms(common::percentile(&helper_times, 50.0)),
        common::ms(common::percentile(&helper_times, 90.0)),
        common::ms(helper_times[0])
    );
    println!(
        "/bin/true: median {}  p90 {}  min {}",
        common::ms(common::percentile(&true_times, 50.0)),
        common::ms(common::percentile(&true_times, 90.0)),
        common::ms(true_times[0])
    );
    drop(daemon);
}

/// Runs one task per connection until `window` passes; latencies of 200 answers and the error count.
async fn drive(
    conns: Vec<Conn>,
    keys: &Arc<Vec<Ask>>,
    window: Duration,
    stop: &Arc<AtomicBool>,
    rate: Option<f64>,
) -> (Vec<Duration>, usize) {
    let n_conns = conns.len().max(1);
    let period = rate.map(|r| Duration::from_secs_f64(n_conns as f64 / r));
    stop.store(false, Ordering::SeqCst);
    let per_conn = MAX_ANSWERS / conns.len().max(1);
    let deadline = Instant::now() + window;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (keys, stop) = (Arc::clone(keys), Arc::clone(stop));
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0usize;
            let mut tick = period.map(|p| {
                let first = tokio::time::Instant::now() + p.mul_f64(i as f64 / n_conns as f64);
                tokio::time::interval_at(first, p)
            });
            for j in 0..per_conn {
                if stop.load(Ordering::Relaxed) || (j % 64 == 0 && Instant::now() >= deadline) {
                    break;
                }
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let key = &keys[(i + j) % keys.len()];
                let t = Instant::now();
                match key.send(&mut conn).await {
                    Ok((200, _)) => lat.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let stopper = {
        let stop = Arc::clone(stop);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        if let Ok((lat, e)) = r {
            all.extend(lat);
            errors += e;
        }
    }
    stopper.abort();
    (all, errors)
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Answers per second oha gets for `ask` over the daemon's socket (every answer must be a 200).
fn oha_rate(oha: &std::path::Path, socket: &std::path::Path, ask: &Ask, conns: usize, seconds: f64) -> f64 {
    let mut cmd = Command::new(oha);
    cmd.args(["--no-tui", "--output-format", "json", "-c", &conns.to_string(), "-z", &format!("{seconds}s")]);
    cmd.arg("--unix-socket").arg(socket);
    match ask {
        Ask::Get(path) => cmd.arg(format!("http://localhost{path}")),
        Ask::Post(body) => cmd
            .args(["-m", "POST", "-H", "Content-Type: application/json", "-d"])
            .arg(String::from_utf8_lossy(body).into_owned())
            .arg("http://localhost/v1/credentials"),
    };
    let out = cmd.stderr(Stdio::null()).output().expect("run oha");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("oha's JSON summary");
    let codes = v["statusCodeDistribution"].as_object().cloned().unwrap_or_default();
    assert!(codes.keys().all(|c| c == "200"), "every answer is a 200: {codes:?}");
    v["summary"]["requestsPerSec"].as_f64().expect("requestsPerSec")
}

/// One line per target: the median of its rounds and its ratio to the first target's (`/healthz`).
fn print_ratios(names: &[&str], rates: &[Vec<f64>]) {
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let health = median(&rates[0]);
    for (name, rounds) in names.iter().zip(rates) {
        let m = median(rounds);
        println!(
            "{name:<36} median {m:>8.0} answers/s  ({:.2}x /healthz)  rounds {:?}",
            m / health,
            rounds.iter().map(|r| r.round()).collect::<Vec<_>>()
        );
    }
}
