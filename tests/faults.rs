//! Upstream faults, end to end against the emulator: throttling, 5xx bursts, timeouts, a stopped
//! emulator, malformed answers, a session expiring mid-chain, and the metadata service down at
//! boot. Each fault gives the caller a clean 502/503 (Retry-After, JSON error code) or a valid
//! credential, never a panic or an expired credential, and the daemon recovers by itself.

#[path = "faults/common.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use acr_broker::clock::Clock;
use acr_emulator::{ErrorInjection, Knobs};
use common::*;
use support::*;

fn lifetimes(seconds: u64) -> Knobs {
    Knobs { sts_lifetime_seconds: Some(seconds), acr_lifetime_seconds: Some(seconds), ..Knobs::default() }
}

fn inject(mut k: Knobs, actions: &[&str], code: &str, status: u16, rate: f64) -> Knobs {
    for a in actions {
        k.errors.insert((*a).to_owned(), ErrorInjection { code: code.into(), status, rate, message: None });
    }
    k
}

/// Real seconds the throttling window lasts; the shared clock runs [`SPEEDUP`] times faster, so
/// the window covers 60 s of credential time.
const THROTTLE_REAL: Duration = Duration::from_secs(20);
/// How much faster than real time the manual clock runs during the throttling window.
const SPEEDUP: u32 = 3;
/// `x-acs-retry-after` the emulator sends with `Throttling.Api` (ms).
const EMULATOR_RETRY_AFTER: Duration = Duration::from_millis(1000);

/// STS throttling for 60 s of credential time (compressed: 20 s of real time with the shared
/// clock running 3x; backoff and `x-acs-retry-after` run on real time, so the attempt bound is
/// derived from the 20 real seconds). The emulator's `throttle_all` answers every STS and ACR
/// call with `Throttling.Api` and `x-acs-retry-after: 1000`.
///
/// Three warm keys (300 s credentials, refreshed from 150 s, usable until 195 s) enter the
/// window at 130 s: every answer stays 200 with the same unexpired credential while background
/// refreshes fail. A cold key gets 503 `Throttling.Api` with Retry-After. Upstream attempts are
/// bounded by one per loader per backoff step; after the window every key gets a new
/// credential within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_throttling_is_ridden_out_with_bounded_attempts() {
    let (h, clock) = on_manual_clock("[cache]\nrefresh_jitter = 0.0\n[upstream]\nmax_attempts = 3\n").await;
    h.emulator.set_knobs(lifetimes(300));
    let warm = [Key::via_service(DEMO_HOST), Key::via_service(NORTH_HOST), Key::cross()];
    let cold = Key::via_service(PERSONAL_HOST);
    let mut first_expiry = Vec::new();
    for k in &warm {
        first_expiry.push(assert_fresh(&ask(&h, k).await, clock.now()));
    }
    clock.advance(Duration::from_secs(130));
    for k in &warm {
        assert_fresh(&ask(&h, k).await, clock.now());
    }

    // --- the window ---------------------------------------------------------------------------
    h.emulator.reset_counters();
    h.emulator.set_knobs(Knobs { throttle_all: true, ..lifetimes(300) });
    let window_clock_start = clock.now();
    let started = tokio::time::Instant::now();
    let cold_task = {
        let (socket, cold) = (h.socket.clone(), cold.clone());
        tokio::spawn(async move {
            let mut codes = BTreeMap::<String, u32>::new();
            while started.elapsed() < THROTTLE_REAL {
                let r = ask_on(&socket, &cold).await;
                if r.0 == 200 {
                    panic!("a cold key was served during throttling: {}", r.1);
                }
                *codes.entry(assert_clean_error(&r)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            codes
        })
    };
    let mut answers = 0u32;
    let mut slowest = Duration::ZERO;
    // (real ms, cumulative AssumeRole count) samples, for the per-second rate.
    let mut samples: Vec<(u128, u64)> = Vec::new();
    while started.elapsed() < THROTTLE_REAL {
        clock.set(window_clock_start + started.elapsed() * SPEEDUP);
        for (k, first) in warm.iter().zip(&first_expiry) {
            let r = ask(&h, k).await;
            let exp = assert_fresh(&r, clock.now());
            assert_eq!(exp, *first, "{}: a new credential during throttling?", k.host);
            slowest = slowest.max(r.3);
            answers += 1;
        }
        samples.push((started.elapsed().as_millis(), h.emulator.count("AssumeRole")));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window_real = started.elapsed();
    let codes = cold_task.await.expect("cold key task");
    let counters = h.emulator.counters();
    let assume = counters.get("AssumeRole").copied().unwrap_or(0);
    let other: u64 = ["GetAuthorizationToken", "ListInstance", "PersonalGetAuthorizationToken"]
        .iter()
        .map(|a| counters.get(*a).copied().unwrap_or(0))
        .sum();
    let max_per_sec = samples
        .iter()
        .map(|(t, n)| {
            let before = samples.iter().rev().find(|(t0, _)| *t0 + 1000 <= *t).map_or(0, |(_, n0)| *n0);
            n - before
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "throttling: {answers} warm answers over {window_real:?} real ({}s of clock), all 200, slowest {slowest:?}; \
         cold key answers {codes:?}; upstream attempts AssumeRole={assume} other={other} \
         max AssumeRole in any 1 s = {max_per_sec}; counters {counters:?}",
        (clock.now().duration_since(window_clock_start).unwrap_or_default().as_secs())
    );
    assert!(codes.contains_key("Throttling.Api"), "cold key errors name the throttling: {codes:?}");
    // The bound. STS is called by at most three loaders at once: the young reload of the
    // service-role session (shared by the three keys whose last hop it is), the young reload of
    // the user-role session, and the background refresh of the service-role session as the
    // first hop of the cross chain. Each waits at least one `x-acs-retry-after` step between
    // attempts (and at least one clock second between failed loads), so each makes at most
    // about one attempt per step: 3 loaders x (20 steps + 1) = 63, plus one spare load each.
    let steps = (window_real.as_millis() / EMULATOR_RETRY_AFTER.as_millis()) as u64 + 1;
    let loaders = 3u64;
    let bound = loaders * (steps + 3);
    assert!(assume <= bound, "{assume} AssumeRole attempts in {window_real:?}: more than {bound}");
    assert!(max_per_sec <= 2 * loaders, "{max_per_sec} AssumeRole attempts within one second");
    assert!(assume >= 3, "the daemon kept trying to refresh during throttling ({assume})");

    // --- recovery: throttling ends, the clock runs at real speed --------------------------------
    h.emulator.set_knobs(lifetimes(300));
    let ended = tokio::time::Instant::now();
    let ended_clock = clock.now();
    let mut renewed = vec![false; warm.len()];
    while renewed.iter().any(|r| !r) {
        clock.set(ended_clock + ended.elapsed());
        for (i, (k, first)) in warm.iter().zip(&first_expiry).enumerate() {
            let exp = assert_fresh(&ask(&h, k).await, clock.now());
            renewed[i] |= exp > *first;
        }
        assert!(ended.elapsed() < Duration::from_secs(8), "not all keys renewed: {renewed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let renew_took = ended.elapsed();
    let (_, cold_took) = until_served(&h, &cold, Duration::from_secs(5)).await;
    eprintln!("recovery: all warm keys renewed {renew_took:?} after throttling ended; cold key served after {cold_took:?} more");
    assert!(renew_took < Duration::from_secs(5), "{renew_took:?}");
    h.stop().await;
}

/// Small timeouts and few, short retries so each fault answers within about a second.
const FAST: &str = "[upstream]\nmax_attempts = 2\nbackoff_base_ms = 50\nbackoff_max_ms = 200\napi_timeout_ms = 300\n";

/// Keys that have no cached credential when a fault starts, each reaching a different API first:
/// ListInstance (Enterprise by name), AssumeRole (cross-account chain), Personal token.
fn cold_keys() -> [Key; 3] {
    [Key::node(DEMO_HOST), Key::cross(), Key::node(PERSONAL_HOST)]
}

/// Asks every cold key during a fault: each must be a clean error; returns the codes.
async fn expect_clean_errors(h: &Harness, keys: &[Key], what: &str) -> Vec<(u16, String, Duration)> {
    let mut out = Vec::new();
    for k in keys {
        let r = ask(h, k).await;
        let code = assert_clean_error(&r);
        eprintln!("{what}: {} -> {} {code} (Retry-After {:?}) in {:?}", k.host, r.0, r.2.get("retry-after"), r.3);
        out.push((r.0, code, r.3));
    }
    assert_alive(h).await;
    out
}

/// After the fault ends every cold key is served again, by itself, within `limit`.
async fn expect_recovery(h: &Harness, keys: &[Key], limit: Duration, what: &str) {
    let started = tokio::time::Instant::now();
    for k in keys {
        let (r, _) = until_served(h, k, limit).await;
        assert_fresh(&r, acr_broker::clock::system().now());
    }
    eprintln!("{what}: all keys served again {:?} after the fault ended", started.elapsed());
}

/// A warm key keeps being served from the cache while upstream is failing.
async fn expect_warm_served(h: &Harness, warm: &Key) {
    let r = ask(h, warm).await;
    assert_fresh(&r, acr_broker::clock::system().now());
    assert!(r.3 < Duration::from_millis(250), "a warm key waited on the failing upstream ({:?})", r.3);
}

/// A burst of 5xx answers (500 InternalError, 503 ServiceUnavailable, 502 with an unknown
/// code) on every STS and ACR action: cold keys get 503 naming the upstream code; a warm key is
/// still served; once the burst ends everything is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_xx_burst_gives_503_then_recovers() {
    let h = on_system_clock(FAST).await;
    let warm = Key::node(NORTH_HOST);
    assert_fresh(&ask(&h, &warm).await, acr_broker::clock::system().now());
    let mut k = inject(Knobs::default(), &["AssumeRole"], "ServiceUnavailable", 503, 1.0);
    k = inject(k, &["ListInstance", "GetAuthorizationToken"], "InternalError", 500, 1.0);
    k = inject(k, &["PersonalGetAuthorizationToken"], "BadGateway", 502, 1.0);
    h.emulator.set_knobs(k);
    let got = expect_clean_errors(&h, &cold_keys(), "5xx burst").await;
    let codes: Vec<&str> = got.iter().map(|(_, c, _)| c.as_str()).collect();
    assert_eq!(codes, ["InternalError", "ServiceUnavailable", "BadGateway"]);
    assert!(got.iter().all(|(s, _, _)| *s == 503), "{got:?}");
    expect_warm_served(&h, &warm).await;
    h.emulator.set_knobs(Knobs::default());
    expect_recovery(&h, &cold_keys(), Duration::from_secs(5), "5xx burst").await;
    h.stop().await;
}

/// Upstream answers slower than `api_timeout_ms` (300 ms; the emulator waits 1.5 s): cold keys
/// get 503 `Timeout` after at most two attempts, never the full upstream delay each time; a warm
/// key is served at once; when upstream is fast again everything is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_times_out_cleanly_then_recovers() {
    let h = on_system_clock(FAST).await;
    let warm = Key::node(NORTH_HOST);
    assert_fresh(&ask(&h, &warm).await, acr_broker::clock::system().now());
    h.emulator.set_knobs(Knobs { latency_ms: 1500, ..Knobs::default() });
    let got = expect_clean_errors(&h, &cold_keys(), "slow upstream").await;
    for (s, code, took) in &got {
        assert_eq!((*s, code.as_str()), (503, "Timeout"));
        // Two attempts of 300 ms plus at most 200 ms of backoff, with slack for a loaded machine.
        assert!(*took < Duration::from_millis(1400), "a timed-out request took {took:?}");
    }
    expect_warm_served(&h, &warm).await;
    h.emulator.set_knobs(Knobs::default());
    expect_recovery(&h, &cold_keys(), Duration::from_secs(5), "slow upstream").await;
    h.stop().await;
}

/// The emulator stops (connection refused): cold keys get 503 `ConnectionFailed`, a warm key is
/// served; the emulator restarts on the same port (tokio sets SO_REUSEADDR) with the same world
/// (same keys, so sessions issued before still verify) and the daemon recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_then_restart_on_same_port_recovers() {
    let world = broker_world();
    let emu = acr_emulator::Emulator::start(world.clone(), "127.0.0.1:0".parse().expect("addr")).await.expect("emu");
    let addr = emu.addr();
    let h = Harness::with_emulator(emu, FAST, acr_broker::clock::system()).await;
    wait_ready(&h, Duration::from_secs(10)).await;
    let warm = Key::node(NORTH_HOST);
    assert_fresh(&ask(&h, &warm).await, acr_broker::clock::system().now());
    let Harness { emulator, daemon, socket, dir } = h;
    emulator.shutdown().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the emulator port still accepts connections");
    let mut h = Harness { emulator: stand_in().await, daemon, socket, dir };
    let got = expect_clean_errors(&h, &cold_keys(), "connection refused").await;
    assert!(got.iter().all(|(s, c, _)| *s == 503 && c == "ConnectionFailed"), "{got:?}");
    expect_warm_served(&h, &warm).await;
    let restarted = acr_emulator::Emulator::start(world, addr)
        .await
        .unwrap_or_else(|e| panic!("restarting the emulator on the same port {addr} failed: {e}"));
    let _ = std::mem::replace(&mut h.emulator, restarted);
    expect_recovery(&h, &cold_keys(), Duration::from_secs(5), "emulator restarted").await;
    h.stop().await;
}

/// A placeholder emulator on another port while the real one is down (the harness owns one).
async fn stand_in() -> acr_emulator::Emulator {
    acr_emulator::Emulator::start(broker_world(), "127.0.0.1:0".parse().expect("addr")).await.expect("stand-in")
}

/// Truncated JSON from every STS and ACR action: 502 `bad_upstream_response` with
/// Retry-After, not retried in a loop, not remembered; once answers are whole again, served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_json_is_502_then_recovers() {
    let h = on_system_clock(FAST).await;
    let warm = Key::node(NORTH_HOST);
    assert_fresh(&ask(&h, &warm).await, acr_broker::clock::system().now());
    let actions = ["AssumeRole", "ListInstance", "GetAuthorizationToken", "PersonalGetAuthorizationToken"];
    h.emulator.set_knobs(Knobs { malformed_json: actions.map(String::from).to_vec(), ..Knobs::default() });
    h.emulator.reset_counters();
    let got = expect_clean_errors(&h, &cold_keys(), "malformed JSON").await;
    assert!(got.iter().all(|(s, c, _)| *s == 502 && c == "bad_upstream_response"), "{got:?}");
    let calls: u64 = actions.iter().map(|a| h.emulator.count(a)).sum();
    eprintln!("malformed JSON: {calls} upstream calls for 3 requests");
    assert_eq!(calls, 3, "a malformed answer is not retried: {:?}", h.emulator.counters());
    expect_warm_served(&h, &warm).await;
    h.emulator.set_knobs(Knobs::default());
    expect_recovery(&h, &cold_keys(), Duration::from_secs(5), "malformed JSON").await;
    h.stop().await;
}

/// The service-role session (60 s) expires while the next hop's AssumeRole is in flight: the
/// emulator answers `InvalidSecurityToken.Expired`. The caller gets a credential or a clean
/// 503 — never a 403 (the role is allowed) — and the next request re-assumes the chain at
/// once instead of repeating a remembered denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiring_mid_chain_is_reassumed() {
    let (h, clock) = on_manual_clock("[cache]\nrefresh_jitter = 0.0\n").await;
    h.emulator.set_knobs(lifetimes(60));
    // The service-role session is cached at t=0 (expires at 60 s upstream, usable until 39 s).
    assert_fresh(&ask(&h, &Key::via_service(DEMO_HOST)).await, clock.now());
    clock.advance(Duration::from_secs(25));
    h.emulator.set_knobs(Knobs { latency_ms: 600, ..lifetimes(60) });
    h.emulator.reset_counters();
    let pending = {
        let socket = h.socket.clone();
        tokio::spawn(async move { ask_on(&socket, &Key::cross()).await })
    };
    // The user-role hop is in flight with the service-role session; it expires meanwhile.
    tokio::time::sleep(Duration::from_millis(250)).await;
    clock.advance(Duration::from_secs(40));
    let first = pending.await.expect("request task");
    h.emulator.set_knobs(lifetimes(60));
    eprintln!(
        "mid-chain expiry: first answer {} {} after {:?}; counters {:?}",
        first.0,
        first.1,
        first.3,
        h.emulator.counters()
    );
    if first.0 == 200 {
        assert_fresh(&first, clock.now());
    } else {
        assert_eq!(first.0, 503, "an expired session is not a denial: {}", first.1);
        assert_clean_error(&first);
    }
    let started = tokio::time::Instant::now();
    let (again, took) = until_served(&h, &Key::cross(), Duration::from_secs(5)).await;
    assert_fresh(&again, clock.now());
    eprintln!("mid-chain expiry: served again after {took:?} ({:?} after the first answer)", started.elapsed());
    h.stop().await;
}

/// The metadata service is down when the daemon starts: `/readyz` is 503 and says the node
/// identity (from the metadata service) is unavailable, requests get 503 `no_identity`; when
/// the metadata service answers again the daemon becomes ready without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_down_at_boot_is_not_ready_until_it_answers() {
    let emu = acr_emulator::Emulator::start(broker_world(), "127.0.0.1:0".parse().expect("addr")).await.expect("emu");
    emu.set_knobs(Knobs { metadata_down: true, ..Knobs::default() });
    let h = Harness::with_emulator(emu, "", acr_broker::clock::system()).await;
    let started = tokio::time::Instant::now();
    let reason = loop {
        let (s, v, _) = h.request("GET", "/readyz", None).await;
        assert_eq!(s, 503, "ready while the metadata service is down: {v}");
        assert_eq!(v["ready"], false, "{v}");
        let reason = v["reason"].as_str().unwrap_or_default().to_owned();
        if !reason.starts_with("starting") {
            break reason;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no reason after 5 s: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("metadata down: /readyz reason {reason:?}");
    let lower = reason.to_lowercase();
    assert!(lower.contains("identity") && lower.contains("metadata"), "reason does not say why: {reason}");
    let r = ask(&h, &Key::node(DEMO_HOST)).await;
    assert_eq!(assert_clean_error(&r), "no_identity");
    // Down for a while longer, then back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s, _, _) = h.request("GET", "/readyz", None).await;
    assert_eq!(s, 503);
    h.emulator.set_knobs(Knobs::default());
    let back = tokio::time::Instant::now();
    wait_ready(&h, Duration::from_secs(20)).await;
    let took = back.elapsed();
    eprintln!("metadata back: ready after {took:?} (boot retries back off from 0.5 s, doubling)");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_fresh(&ask(&h, &Key::node(DEMO_HOST)).await, acr_broker::clock::system().now());
    h.stop().await;
}

/// The node clock lags STS by 61 s (two manual clocks): the cached service-role session, valid
/// by the daemon's clock, is rejected as `InvalidSecurityToken.Expired` when signing the next
/// hop. The daemon answers 503 and drops the rejected session (and then the node identity, also
/// rejected) so the chain is re-assumed within a few requests, instead of failing until its
/// own clock says the session expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_rejected_as_expired_under_clock_skew_is_reassumed() {
    let start = acr_broker::clock::system().now();
    let (daemon_clock, upstream_clock) =
        (acr_broker::clock::ManualClock::new(start), acr_broker::clock::ManualClock::new(start));
    let uc = upstream_clock.clone();
    let emu = acr_emulator::Emulator::start_with_clock(
        broker_world(),
        "127.0.0.1:0".parse().expect("addr"),
        std::sync::Arc::new(move || uc.now()),
    )
    .await
    .expect("emulator");
    emu.set_knobs(lifetimes(60));
    let h = Harness::with_emulator(emu, "[cache]\nrefresh_jitter = 0.0\n", daemon_clock.clone()).await;
    wait_ready(&h, Duration::from_secs(10)).await;
    assert_fresh(&ask(&h, &Key::via_service(DEMO_HOST)).await, daemon_clock.now());
    upstream_clock.advance(Duration::from_secs(61));
    let started = tokio::time::Instant::now();
    let mut answers = Vec::new();
    loop {
        let r = ask(&h, &Key::cross()).await;
        if r.0 == 200 {
            // Valid by both clocks.
            assert_fresh(&r, upstream_clock.now());
            break;
        }
        answers.push(assert_clean_error(&r));
        assert!(answers.len() < 10, "still failing after {} requests: {answers:?}", answers.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("clock skew: served after {} clean errors {answers:?} in {:?}", answers.len(), started.elapsed());
    assert!(answers.iter().all(|c| c == "InvalidSecurityToken.Expired"), "{answers:?}");
    h.stop().await;
}

/// The same skew, but the rejected session signs an ACR call instead of an AssumeRole: the
/// cached node identity (valid by the daemon's clock) is refused by the Personal token API. The
/// daemon drops it and re-reads the metadata service instead of failing until its clock agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_identity_rejected_by_acr_under_clock_skew_is_renewed() {
    let start = acr_broker::clock::system().now();
    let (daemon_clock, upstream_clock) =
        (acr_broker::clock::ManualClock::new(start), acr_broker::clock::ManualClock::new(start));
    let uc = upstream_clock.clone();
    let emu = acr_emulator::Emulator::start_with_clock(
        broker_world(),
        "127.0.0.1:0".parse().expect("addr"),
        std::sync::Arc::new(move || uc.now()),
    )
    .await
    .expect("emulator");
    emu.set_knobs(lifetimes(60));
    let h = Harness::with_emulator(emu, "[cache]\nrefresh_jitter = 0.0\n", daemon_clock.clone()).await;
    wait_ready(&h, Duration::from_secs(10)).await;
    assert_fresh(&ask(&h, &Key::node(DEMO_HOST)).await, daemon_clock.now());
    let metadata_reads = h.emulator.count("MetadataCredentials");
    upstream_clock.advance(Duration::from_secs(61));
    let mut answers = Vec::new();
    loop {
        let r = ask(&h, &Key::node(PERSONAL_HOST)).await;
        if r.0 == 200 {
            assert_fresh(&r, upstream_clock.now());
            break;
        }
        answers.push(assert_clean_error(&r));
        assert!(answers.len() < 10, "still failing after {} requests: {answers:?}", answers.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answers.iter().all(|c| c == "InvalidSecurityToken.Expired"), "{answers:?}");
    assert!(h.emulator.count("MetadataCredentials") > metadata_reads, "the node identity was re-read");
    h.stop().await;
}
