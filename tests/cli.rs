//! The command line as a new user meets it: every help exits 0, errors are one actionable line
//! with a non-zero exit, `get -o json|password` are scriptable.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{broker_world, wait_ready, Harness, DEMO, INSTANCE_IDS};

fn acr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_acr-broker")).args(args).env_remove("ACR_BROKER_SOCKET").output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_help_exits_zero() {
    let cases: &[&[&str]] = &[
        &["--help"],
        &["help"],
        &["help", "get"],
        &["get", "--help"],
        &["serve", "--help"],
        &["kubelet-plugin", "--help"],
        &["check-config", "--help"],
        &["doctor", "--help"],
    ];
    for args in cases {
        let o = acr(args);
        assert!(o.status.success(), "acr-broker {args:?}: {}", stderr(&o));
        assert!(!stdout(&o).is_empty(), "{args:?}");
    }
    for h in ["--help", "-h", "help"] {
        let o = Command::new(env!("CARGO_BIN_EXE_docker-credential-acr-broker")).arg(h).output().unwrap();
        assert!(o.status.success(), "docker-credential-acr-broker {h}");
    }
}

#[test]
fn get_and_kubelet_plugin_help_name_the_socket_variable() {
    for args in [&["get", "--help"][..], &["kubelet-plugin", "--help"][..]] {
        assert!(stdout(&acr(args)).contains("ACR_BROKER_SOCKET"), "{args:?}");
    }
    assert!(stdout(&acr(&["kubelet-plugin", "--help"])).contains("| acr-broker kubelet-plugin"));
}

#[test]
fn serve_without_a_config_says_so_once_and_mentions_dev() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let o = acr(&["serve", "--config", &missing.display().to_string()]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("cannot read").count(), 1, "printed once:\n{err}");
    assert!(err.contains("--dev") && err.contains("--config FILE"), "{err}");
}

#[test]
fn check_config_takes_the_file_either_way_and_reports_everything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[server]\nsokcet = 1\n[aliyun]\nregion = \"cn-hangzou\"\n").unwrap();
    let f = file.display().to_string();
    for args in [&["check-config", &f][..], &["check-config", "--config", &f][..]] {
        let o = acr(args);
        assert_eq!(o.status.code(), Some(78), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains("line 2: server.sokcet") && err.contains("line 4: aliyun.region"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_json_or_only_the_password() {
    let h = Harness::start(broker_world(), "").await;
    wait_ready(&h, Duration::from_secs(10)).await;
    let socket = h.socket.display().to_string();
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "demo-registry.cn-hangzhou.cr.aliyuncs.com", "-a"];
        let ann = format!("{INSTANCE_IDS}={DEMO}");
        args.push(&ann);
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_acr-broker")).args(&args).env("ACR_BROKER_SOCKET", &socket).output().unwrap()
    };
    let json = tokio::task::block_in_place(|| get(&["-o", "json"]));
    assert!(json.status.success(), "{}", stderr(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON document");
    for field in ["username", "password", "expires_at", "registry", "region", "instance_id", "edition"] {
        assert!(v.get(field).is_some(), "{field} missing: {v}");
    }
    let pw = tokio::task::block_in_place(|| get(&["-o", "password"]));
    assert!(pw.status.success());
    assert_eq!(stdout(&pw), format!("{}\n", v["password"].as_str().unwrap()), "only the password and a newline");
    assert!(h.emulator.issued_secrets().iter().any(|s| s == v["password"].as_str().unwrap()));
    let not_ours = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_acr-broker"))
            .args(["get", "docker.io", "-o", "password"])
            .env("ACR_BROKER_SOCKET", &socket)
            .output()
            .unwrap()
    });
    assert_eq!(not_ours.status.code(), Some(2));
    assert!(not_ours.stdout.is_empty(), "nothing on stdout for docker login to read");
    let err = stderr(&not_ours);
    assert_eq!(err.matches("not an ACR registry").count(), 1, "said once: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A misspelled annotation key is refused by the daemon (400), naming it and the three keys.
    let typo = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_acr-broker"))
            .args(["get", "registry.demo.example.com", "-a", &format!("k8s.aliyun.com/acr-instance-id={DEMO}")])
            .env("ACR_BROKER_SOCKET", &socket)
            .output()
            .unwrap()
    });
    let err = stderr(&typo);
    assert_eq!(typo.status.code(), Some(1), "{err}");
    assert!(err.contains("400 unknown_annotation") && err.contains("\"k8s.aliyun.com/acr-instance-id\""), "{err}");
    for key in acr_broker::policy::ANNOTATION_KEYS {
        assert!(err.contains(key), "{err}");
    }
    h.stop().await;
}
