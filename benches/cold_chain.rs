//! Cold chain: for each row of the policy table, one request on a cold daemon against an
//! emulator answering every call after `COLD_LATENCY_MS` (50 ms). The answer must come within
//! (upstream calls that must happen in sequence) x latency + 10 ms; calls that do not depend on
//! each other (a custom domain's ownership check and its credential) run at the same time.
//!
//! Run: `cargo bench --bench cold_chain`. Loopback only; each row starts a fresh daemon.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use acr_broker::broker::CredentialRequest;
use acr_broker::daemon::Daemon;
use acr_emulator::World;

const INSTANCE_IDS: &str = "k8s.aliyun.com/acr-instance-ids";
const SERVICE_ARNS: &str = "k8s.aliyun.com/acr-service-arns";
const USER_ARNS: &str = "k8s.aliyun.com/acr-user-arns";
const SERVICE_ROLE: &str = "acs:ram::1111111111111111:role/eci-acr-service";
const USER_ROLE: &str = "acs:ram::2222222222222222:role/eci-acr-user";

struct Row {
    name: &'static str,
    registry: &'static str,
    annotations: Vec<(&'static str, &'static str)>,
    /// The calls that must happen one after the other, in order.
    sequence: &'static [&'static str],
    /// Upstream calls made in all (some run beside the sequence).
    calls: u64,
}

fn main() {
    let Some(failed) = common::run_bench(run()) else { return };
    assert!(!failed, "a cold-chain bound was missed (see above)");
}

/// The node identity from the metadata service: hardened-mode token, role name, credentials.
const IDENTITY: [&str; 3] = ["MetadataToken", "MetadataRoleList", "MetadataCredentials"];

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "EE default domain, same account",
            registry: "demo-registry.cn-hangzhou.cr.aliyuncs.com",
            annotations: vec![],
            sequence: &[IDENTITY[0], IDENTITY[1], IDENTITY[2], "ListInstance", "GetAuthorizationToken"],
            calls: 5,
        },
        Row {
            name: "Personal, same account",
            registry: "registry.cn-hangzhou.aliyuncs.com",
            annotations: vec![],
            sequence: &[IDENTITY[0], IDENTITY[1], IDENTITY[2], "PersonalGetAuthorizationToken"],
            calls: 4,
        },
        Row {
            name: "EE default domain, service role",
            registry: "demo-registry.cn-hangzhou.cr.aliyuncs.com",
            annotations: vec![(SERVICE_ARNS, SERVICE_ROLE)],
            sequence: &[IDENTITY[0], IDENTITY[1], IDENTITY[2], "AssumeRole", "ListInstance", "GetAuthorizationToken"],
            calls: 6,
        },
        Row {
            name: "EE custom domain (listed)",
            registry: "registry.demo.example.com",
            annotations: vec![(INSTANCE_IDS, "cri-devaaaaaaaaaaaa01")],
            sequence: &[IDENTITY[0], IDENTITY[1], IDENTITY[2], "ListInstanceEndpoint || GetAuthorizationToken"],
            calls: 5,
        },
        Row {
            name: "cross account (service -> user role)",
            registry: "partner-registry.cn-beijing.cr.aliyuncs.com",
            annotations: vec![(SERVICE_ARNS, SERVICE_ROLE), (USER_ARNS, USER_ROLE)],
            sequence: &[
                IDENTITY[0],
                IDENTITY[1],
                IDENTITY[2],
                "AssumeRole",
                "AssumeRole",
                "ListInstance",
                "GetAuthorizationToken",
            ],
            calls: 7,
        },
        Row { name: "not ACR", registry: "docker.io", annotations: vec![], sequence: &[], calls: 0 },
    ]
}

async fn run() -> bool {
    let latency: u64 = common::env_or("COLD_LATENCY_MS", 50);
    println!("machine: {}", common::machine());
    println!("\n== cold chain: one request per row on a cold daemon, emulator latency {latency} ms per call ==");
    let mut failed = false;
    for row in rows() {
        let world = World::from_toml(include_str!("../tests/worlds/broker.toml")).expect("world");
        let emu = common::emulator(world, common::knobs(latency)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let text = common::config_text(&emu, &dir.path().join("broker.sock"), "");
        let config = acr_broker::config::Config::from_toml(&text, "<bench>").expect("config");
        let daemon = Daemon::start(config, acr_broker::clock::system()).await.expect("daemon");
        // Boot fetches the identity by itself; let it finish, then empty every cache so the
        // request below walks the whole chain, identity included.
        daemon.broker.check_identity().await.expect("identity");
        let request = CredentialRequest {
            registry: row.registry.to_owned(),
            annotations: row.annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Default::default()
        };
        daemon.broker.clear_caches();
        emu.reset_counters();
        let started = Instant::now();
        let result = daemon.broker.credentials(&request).await;
        let took = started.elapsed();
        let counters: BTreeMap<String, u64> = emu.counters().into_iter().filter(|(_, n)| *n > 0).collect();
        let calls: u64 = counters.values().sum();
        let bound = Duration::from_millis(latency * row.sequence.len() as u64 + 10);
        let served = result.is_ok() == (row.calls > 0);
        let ok = served && took <= bound && calls == row.calls;
        failed |= !ok;
        println!(
            "{:<38} {:>9} (bound {} = {} in sequence x {latency} ms + 10 ms) calls {calls} {:?} {}",
            row.name,
            common::ms(took),
            common::ms(bound),
            row.sequence.len(),
            counters,
            if ok { "OK" } else { "MISS" }
        );
        println!(
            "{:<38} sequence: {}",
            "",
            if row.sequence.is_empty() { "-".into() } else { row.sequence.join(" -> ") }
        );
        daemon.shutdown().await;
    }
    failed
}
