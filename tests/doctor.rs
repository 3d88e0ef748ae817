//! `acr-broker doctor` as an operator runs it: against a live daemon (over the emulator) with a
//! good kubelet, docker and containerd setup it reports no error and exits 0; a seeded mistake
//! makes it print that finding and exit 1; with no daemon it says so.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::{broker_world, config_text, wait_ready, ConfigParts, Harness};

const REGISTRY: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";

fn doctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_acr-broker"))
        .arg("doctor")
        .args(args)
        .env_remove("ACR_BROKER_SOCKET")
        .output()
        .expect("run acr-broker doctor")
}

/// A good docker config and containerd hosts dir under `dir`.
fn good_files(dir: &Path) -> (String, String) {
    let docker = dir.join("config.json");
    std::fs::write(&docker, format!(r#"{{"credHelpers": {{"{REGISTRY}": "acr-broker"}}}}"#)).unwrap();
    let hosts = dir.join("certs.d");
    std::fs::create_dir_all(hosts.join(REGISTRY)).unwrap();
    std::fs::write(
        hosts.join(REGISTRY).join("hosts.toml"),
        format!("server = \"https://{REGISTRY}\"\n[host.\"http://127.0.0.1:5005\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    (docker.display().to_string(), hosts.display().to_string())
}

fn kubelet_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/credential-provider-config.yaml").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_node_passes_and_a_seeded_mistake_fails() {
    let h = Harness::start(broker_world(), "").await;
    wait_ready(&h, Duration::from_secs(10)).await;
    let config = h.dir.path().join("config.toml");
    std::fs::write(&config, config_text(&h.emulator, &h.socket, &ConfigParts::default())).unwrap();
    let (docker, hosts) = good_files(h.dir.path());
    let kubelet = kubelet_config();
    let config = config.display().to_string();
    let base = ["--config", &config, "--kubelet-config", &kubelet, "--containerd-hosts", &hosts];

    let out = tokio::task::block_in_place(|| doctor(&[&base[..], &["--docker-config", &docker]].concat()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "good setup must pass:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("ERROR"), "{text}");
    for want in ["config", "may connect", "ready", "identity (ecs-ram-role)", "clock vs http://127.0.0.1"] {
        assert!(text.lines().any(|l| l.starts_with("ok") && l.contains(want)), "no ok line about {want:?}:\n{text}");
    }
    // No secret the emulator issued reaches the output.
    for secret in h.emulator.issued_secrets() {
        assert!(!text.contains(&secret), "doctor printed a secret");
    }

    std::fs::write(&docker, r#"{"credHelpers": {"https://demo-registry.cn-hangzhou.cr.aliyuncs.com": "acr-broker"}}"#)
        .unwrap();
    let out = tokio::task::block_in_place(|| doctor(&[&base[..], &["--docker-config", &docker]].concat()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("ERROR docker") && l.contains("is a URL") && l.contains("fix:")),
        "{text}"
    );
    h.stop().await;
}

#[test]
fn no_daemon_is_an_error_that_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("broker.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[server]\nsocket = \"{}\"\n[aliyun]\nregion = \"cn-hangzhou\"\n", socket.display()),
    )
    .unwrap();
    let out = doctor(&["--config", &config.display().to_string(), "--offline"]);
    assert!(out.status.success(), "offline: config only: {}", String::from_utf8_lossy(&out.stdout));
    let out = Command::new(env!("CARGO_BIN_EXE_acr-broker"))
        .args(["doctor", "--config", &config.display().to_string()])
        .env_remove("ACR_BROKER_SOCKET")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ERROR socket") && text.contains("systemctl start acr-broker"), "{text}");
}

#[test]
fn a_config_mistake_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[aliyun]\nregion = \"cn-hangzou\"\nnetwork = \"vpc\"\n").unwrap();
    let out = doctor(&["--config", &config.display().to_string(), "--offline"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("line 2: aliyun.region") && text.contains("did you mean \"cn-hangzhou\""), "{text}");
}
