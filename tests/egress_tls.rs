//! Corporate egress: the cloud endpoints served over TLS by a certificate no public root knows
//! (the emulator's own CA). Without `[aliyun] ca_file` the daemon refuses and says which host,
//! which verification step and that `ca_file` exists; with it the same pull works.

mod support;

use std::time::Duration;

use acr_emulator::Emulator;
use support::{broker_world, config_text, wait_ready, ConfigParts, Harness, DEMO, INSTANCE_IDS};

const REGISTRY: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";

async fn tls_emulator() -> Emulator {
    let emu = Emulator::start_tls(broker_world(), "127.0.0.1:0".parse().unwrap()).await.expect("TLS emulator");
    assert!(emu.base_url().starts_with("https://127.0.0.1:"), "{}", emu.base_url());
    emu
}

/// A daemon over `emu` whose `[aliyun]` table has `aliyun_extra` lines added.
async fn daemon(emu: Emulator, aliyun_extra: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("broker.sock");
    let text =
        config_text(&emu, &socket, &ConfigParts::default()).replace("[aliyun]\n", &format!("[aliyun]\n{aliyun_extra}"));
    let config = acr_broker::config::Config::from_toml(&text, "<test>").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let daemon = acr_broker::daemon::Daemon::start(config, acr_broker::clock::system()).await.expect("daemon starts");
    Harness { emulator: emu, daemon: Some(daemon), socket, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_file_the_tls_failure_names_host_step_and_ca_file() {
    let emu = tls_emulator().await;
    let h = daemon(emu, "").await;
    let (status, body) = h.credentials(REGISTRY, &[(INSTANCE_IDS, DEMO)]).await;
    assert_ne!(status, 200, "an unknown CA must not be trusted: {body}");
    // The reason reaches the operator through /readyz (the identity is fetched at start).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reason = loop {
        let (_, v, _) = h.request("GET", "/readyz", None).await;
        let reason = v["reason"].as_str().unwrap_or_default().to_owned();
        if reason.contains("TLS") || tokio::time::Instant::now() > deadline {
            break reason;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for want in ["TLS to 127.0.0.1 failed", "unknown issuer", "ca_file"] {
        assert!(reason.contains(want), "{want:?} missing from /readyz reason: {reason}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ca_file_the_same_pull_works() {
    let emu = tls_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("emulator-ca.pem");
    std::fs::write(&ca, emu.tls_ca_pem().expect("CA")).unwrap();
    let h = daemon(emu, &format!("ca_file = \"{}\"\n", ca.display())).await;
    wait_ready(&h, Duration::from_secs(10)).await;
    let (status, body) = h.credentials(REGISTRY, &[(INSTANCE_IDS, DEMO)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(h.emulator.count("GetAuthorizationToken") >= 1, "{:?}", h.emulator.counters());
    h.stop().await;
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let text = format!("[aliyun]\nregion = \"cn-hangzhou\"\nca_file = \"{}\"\n", bad.display());
    let e = acr_broker::config::Config::from_toml(&text, "t").expect_err("no PEM");
    assert_eq!(e.issues[0].key, "aliyun.ca_file");
    assert_eq!(e.issues[0].line, Some(3));
    let missing = "[aliyun]\nregion = \"cn-hangzhou\"\nca_file = \"/nonexistent/ca.pem\"\n";
    assert!(acr_broker::config::Config::from_toml(missing, "t").is_err());
}
