//! Thundering herd: `HERD_CALLERS` (10,000) concurrent cold requests, in process, against an
//! emulator answering after `HERD_LATENCY_MS` (100 ms) per call. Checks that every upstream
//! action is called exactly once per key (read from the emulator's counters) and that every
//! caller is answered within the chain's upstream latency plus 50 ms.
//!
//! Scenarios: one key with the node identity; 100 keys (100 Personal regions) with the node
//! identity; one key through a service role (AssumeRole + token); 100 keys through one fresh
//! service role (one AssumeRole shared by all, 100 tokens).
//!
//! Run: `cargo bench --bench herd`. Loopback only; each scenario ends when its callers do.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use acr_broker::broker::{Broker, CredentialRequest};
use acr_broker::daemon::Daemon;

fn main() {
    let Some(failed) = common::run_bench(run()) else { return };
    assert!(!failed, "a herd target was missed (see above)");
}

struct Scenario {
    name: &'static str,
    keys: Vec<CredentialRequest>,
    /// Upstream calls in series on a cold key.
    hops_in_series: u32,
    /// Expected calls per action.
    expected: BTreeMap<&'static str, u64>,
}

async fn run() -> bool {
    let callers: usize = common::env_or("HERD_CALLERS", 10_000);
    let latency: u64 = common::env_or("HERD_LATENCY_MS", 100);
    println!("machine: {}", common::machine());
    let emu = common::emulator(common::world(100, 2, ""), common::knobs(latency)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // 100 cold keys are 100 upstream calls at once: the default `[upstream] max_concurrent = 128`
    // lets them all be in flight (the bench config's 64 is raised back to it).
    let text = common::config_text(&emu, &dir.path().join("broker.sock"), "")
        .replace("max_concurrent = 64", "max_concurrent = 128");
    let config = acr_broker::config::Config::from_toml(&text, "<bench>").expect("config");
    let daemon = Daemon::start(config, acr_broker::clock::system()).await.expect("daemon");
    let broker = Arc::clone(&daemon.broker);
    broker.check_identity().await.expect("node identity");

    let personal = |region: &str, role: Option<usize>| CredentialRequest {
        registry: format!("registry.{region}.aliyuncs.com"),
        annotations: role
            .map(|r| BTreeMap::from([(String::from(common::SERVICE_ARNS), common::service_role(r))]))
            .unwrap_or_default(),
        ..Default::default()
    };
    let regions: Vec<String> = (0..100).map(common::region).collect();
    let token = "PersonalGetAuthorizationToken";
    let scenarios = vec![
        Scenario {
            name: "1 key, node identity",
            keys: vec![personal("cn-hangzhou", None)],
            hops_in_series: 1,
            expected: BTreeMap::from([(token, 1)]),
        },
        Scenario {
            name: "100 keys, node identity",
            keys: regions.iter().map(|r| personal(r, None)).collect(),
            hops_in_series: 1,
            expected: BTreeMap::from([(token, 100)]),
        },
        Scenario {
            name: "1 key, service role",
            keys: vec![personal("cn-hangzhou", Some(0))],
            hops_in_series: 2,
            expected: BTreeMap::from([("AssumeRole", 1), (token, 1)]),
        },
        Scenario {
            name: "100 keys, one new service role",
            keys: regions.iter().map(|r| personal(r, Some(1))).collect(),
            hops_in_series: 2,
            expected: BTreeMap::from([("AssumeRole", 1), (token, 100)]),
        },
    ];
    let mut failed = false;
    println!("\n== herd: {callers} concurrent cold callers per scenario, emulator latency {latency} ms per call ==");
    for s in scenarios {
        emu.reset_counters();
        let keys = Arc::new(s.keys);
        let (lat, errors) = herd(&broker, &keys, callers).await;
        let counters: BTreeMap<String, u64> =
            emu.counters().into_iter().filter(|(k, _)| k != "Metadata" && k != "MetadataToken").collect();
        let max = lat.last().copied().unwrap_or_default();
        let bound = Duration::from_millis(latency * u64::from(s.hops_in_series) + 50);
        let calls_ok = counters.len() == s.expected.len()
            && s.expected.iter().all(|(k, v)| counters.get(*k).copied().unwrap_or(0) == *v);
        let ok = calls_ok && max <= bound && errors == 0;
        failed |= !ok;
        println!(
            "{:<32} upstream {:?} (expected {:?}) | answered {} errors {} | p50 {} max {} (bound {}) {}",
            s.name,
            counters,
            s.expected,
            lat.len(),
            errors,
            common::ms(common::percentile(&lat, 50.0)),
            common::ms(max),
            common::ms(bound),
            if ok { "OK" } else { "MISS" }
        );
    }
    daemon.shutdown().await;
    failed
}

/// Starts `callers` tasks at once, caller `i` asking for key `i % keys.len()`; sorted latencies
/// measured from the common start, and the number of failed answers.
async fn herd(broker: &Arc<Broker>, keys: &Arc<Vec<CredentialRequest>>, callers: usize) -> (Vec<Duration>, usize) {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..callers {
        let (broker, keys) = (Arc::clone(broker), Arc::clone(keys));
        set.spawn(async move {
            let r = broker.credentials(&keys[i % keys.len()]).await;
            (r.is_ok(), start.elapsed())
        });
    }
    let mut lat = Vec::with_capacity(callers);
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((true, d)) => lat.push(d),
            _ => errors += 1,
        }
    }
    lat.sort_unstable();
    (lat, errors)
}
