//! The cache's promises, end to end against the emulator: one upstream call per key under a
//! herd, no expired credential ever, no waiting on upstream once warm, and outages ridden out.

mod support;

use std::time::{Duration, SystemTime};

use acr_broker::clock::Clock;
use acr_emulator::{ErrorInjection, Knobs};
use support::*;

async fn herd(h: &Harness, hosts: &[String], total: usize) {
    let mut tasks = Vec::with_capacity(total);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        let socket = h.socket.clone();
        let host = hosts[i % hosts.len()].clone();
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({"registry": host});
            let (s, v, _) = request_on(&socket, "POST", "/v1/credentials", Some(body)).await;
            assert_eq!(s, 200, "{v}");
        }));
    }
    for t in tasks {
        t.await.expect("request task");
    }
    eprintln!("{total} requests over {} keys answered in {:?}", hosts.len(), start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herd_of_one_key_makes_one_call_per_action() {
    let h = Harness::start(world_with_instances(0), "").await;
    // The herd arrives while the first load is still in flight.
    h.emulator.set_knobs(Knobs { latency_ms: 100, ..Knobs::default() });
    herd(&h, &[String::from("demo-registry.cn-hangzhou.cr.aliyuncs.com")], 1000).await;
    assert_eq!(h.emulator.count("MetadataCredentials"), 1, "{:?}", h.emulator.counters());
    assert_eq!(h.emulator.count("ListInstance"), 1, "{:?}", h.emulator.counters());
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 1, "{:?}", h.emulator.counters());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herd_of_a_hundred_keys_makes_a_hundred_calls() {
    let h = Harness::start(world_with_instances(100), "").await;
    h.emulator.set_knobs(Knobs { latency_ms: 50, ..Knobs::default() });
    let hosts: Vec<String> = (0..100).map(|i| format!("herd{i}-registry.cn-hangzhou.cr.aliyuncs.com")).collect();
    herd(&h, &hosts, 1000).await;
    assert_eq!(h.emulator.count("ListInstance"), 100, "{:?}", h.emulator.counters());
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 100, "{:?}", h.emulator.counters());
    assert_eq!(h.emulator.count("MetadataCredentials"), 1, "{:?}", h.emulator.counters());
    h.stop().await;
}

fn short_lifetimes(latency_ms: u64) -> Knobs {
    Knobs { sts_lifetime_seconds: Some(60), acr_lifetime_seconds: Some(60), latency_ms, ..Knobs::default() }
}

const CROSS: &str = "partner-registry.cn-beijing.cr.aliyuncs.com";

async fn ask(h: &Harness) -> (u16, serde_json::Value, http::HeaderMap, Duration) {
    let started = tokio::time::Instant::now();
    let body =
        serde_json::json!({"registry": CROSS, "annotations": {SERVICE_ARNS: SERVICE_ROLE, USER_ARNS: USER_ROLE}});
    let (s, v, hdr) = h.request("POST", "/v1/credentials", Some(body)).await;
    (s, v, hdr, started.elapsed())
}

fn expiry(v: &serde_json::Value) -> SystemTime {
    acr_broker::clock::parse_rfc3339(v["expires_at"].as_str().expect("expires_at")).expect("rfc3339")
}

/// 60-second lifetimes, a request every 100 ms of clock time for 3 minutes: never an expired
/// credential, and after the first call never a wait on upstream (the emulator adds 50 ms to
/// every call, so any answer that took that long waited on it). The shared manual clock runs
/// about five times faster than real time, so background refreshes (three calls, ~150 ms real)
/// still finish well inside the usable window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_credentials_never_expire_in_hand_and_never_block() {
    let (h, clock) = on_manual_clock("[cache]\nrefresh_jitter = 0.05\n").await;
    h.emulator.set_knobs(short_lifetimes(50));
    let (s, v, _, _) = ask(&h).await;
    assert_eq!(s, 200, "{v}");
    let mut slowest = Duration::ZERO;
    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..1800 {
        clock.advance(Duration::from_millis(100));
        // Give background refreshes real time to run (the clock is ours, the network is not).
        tokio::time::sleep(Duration::from_millis(15)).await;
        let (s, v, _, took) = ask(&h).await;
        assert_eq!(s, 200, "{v}");
        let exp = expiry(&v);
        assert!(exp > clock.now(), "served a credential expiring at {exp:?}, now {:?}", clock.now());
        slowest = slowest.max(took);
        distinct.insert(v["password"].as_str().unwrap_or_default().to_owned());
    }
    eprintln!("slowest warm answer {slowest:?}; {} distinct passwords over 3 minutes", distinct.len());
    assert!(slowest < Duration::from_millis(50), "a warm request waited on upstream ({slowest:?})");
    assert!(distinct.len() >= 5, "credentials were refreshed ahead of expiry ({})", distinct.len());
    h.stop().await;
}

fn outage() -> Knobs {
    let mut k = short_lifetimes(0);
    for action in ["AssumeRole", "GetAuthorizationToken", "ListInstance", "ListInstanceEndpoint"] {
        k.errors.insert(
            action.to_owned(),
            ErrorInjection { code: "ServiceUnavailable".into(), status: 503, rate: 1.0, message: None },
        );
    }
    k
}

/// Upstream fails for 30 s while the cached credential is valid: every answer is still 200.
/// When the outage outlasts the credential: 503 with Retry-After, never an expired credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_are_ridden_out_while_credentials_last() {
    let (h, clock) = on_manual_clock("[cache]\nrefresh_jitter = 0.0\n[upstream]\nmax_attempts = 1\n").await;
    h.emulator.set_knobs(short_lifetimes(0));
    let (s, v, _, _) = ask(&h).await;
    assert_eq!(s, 200, "{v}");
    let first_expiry = expiry(&v);
    h.emulator.set_knobs(outage());
    // 30 s of outage starting at once: the 60 s credential (usable for 39 s) covers it.
    for _ in 0..300 {
        clock.advance(Duration::from_millis(100));
        let (s, v, _, _) = ask(&h).await;
        assert_eq!(s, 200, "during the outage: {v}");
        assert!(expiry(&v) > clock.now());
    }
    // The outage goes on past the credential's usable life.
    let mut saw_503 = false;
    for _ in 0..300 {
        clock.advance(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let (s, v, hdr, _) = ask(&h).await;
        match s {
            200 => assert!(expiry(&v) > clock.now() && expiry(&v) <= first_expiry, "{v}"),
            503 => {
                saw_503 = true;
                assert!(hdr.get("retry-after").is_some(), "503 without Retry-After");
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(saw_503, "the outage outlasted the credential but no 503 was seen");
    // Upstream recovers: service resumes by itself.
    h.emulator.set_knobs(short_lifetimes(0));
    clock.advance(Duration::from_secs(2));
    let mut recovered = false;
    for _ in 0..50 {
        clock.advance(Duration::from_millis(500));
        if ask(&h).await.0 == 200 {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "did not recover after the outage");
    h.stop().await;
}
