//! `explain` for each row of the policy table matches what the daemon then does, makes no
//! upstream call, and shows no secret.

mod support;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use support::*;

const BROKER: &str = env!("CARGO_BIN_EXE_acr-broker");

struct Row {
    name: &'static str,
    registry: &'static str,
    annotations: Vec<(&'static str, &'static str)>,
    /// The status `/v1/credentials` answers.
    status: u16,
    /// The policy row explain names.
    row: &'static str,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "same-account EE default domain",
            registry: "demo-registry.cn-hangzhou.cr.aliyuncs.com",
            annotations: vec![],
            status: 200,
            row: "enterprise default domain, same account",
        },
        Row {
            name: "Personal",
            registry: "registry.cn-hangzhou.aliyuncs.com",
            annotations: vec![],
            status: 200,
            row: "personal, same account",
        },
        Row {
            name: "custom domain, listed instance owns it",
            registry: "registry.demo.example.com",
            annotations: vec![(INSTANCE_IDS, DEMO)],
            status: 200,
            row: "custom domain",
        },
        Row {
            name: "custom domain, listed instance does not own it",
            registry: "decoy.example.com",
            annotations: vec![(INSTANCE_IDS, DEMO)],
            status: 404,
            row: "custom domain",
        },
        Row {
            name: "cross-account chain",
            registry: "partner-registry.cn-beijing.cr.aliyuncs.com",
            annotations: vec![(SERVICE_ARNS, SERVICE_ROLE), (USER_ARNS, USER_ROLE)],
            status: 200,
            row: "cross account",
        },
        Row { name: "not ACR", registry: "docker.io", annotations: vec![], status: 404, row: "not ACR" },
    ]
}

async fn explain(h: &Harness, registry: &str, annotations: &[(&str, &str)]) -> Value {
    let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let (s, v, _) = h.request("POST", "/v1/explain", Some(json!({"registry": registry, "annotations": ann}))).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(!text.contains(s.as_str()), "{what} shows a secret ({}…)", &s[..6]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_matches_the_decision_for_every_policy_row_and_shows_no_secret() {
    let h = Harness::start(broker_world(), "").await;
    wait_ready(&h, std::time::Duration::from_secs(10)).await;
    let mut shown = Vec::new();
    for row in rows() {
        let before = explain(&h, row.registry, &row.annotations).await;
        assert_eq!(before["policy"]["row"], row.row, "{}: {before}", row.name);
        let calls = h.emulator.counters();
        // Explaining costs nothing upstream.
        let again = explain(&h, row.registry, &row.annotations).await;
        assert_eq!(h.emulator.counters(), calls, "{}: explain made an upstream call", row.name);
        let expected_before = if row.row == "not ACR" { "not_ours" } else { "load" };
        assert_eq!(before["decision"], expected_before, "{}: {before}", row.name);
        assert_eq!(before, again);

        let (status, answer) = h.credentials(row.registry, &row.annotations).await;
        assert_eq!(status, row.status, "{}: {answer}", row.name);
        let after = explain(&h, row.registry, &row.annotations).await;
        let expected_after = if row.status == 200 { "cached" } else { "not_ours" };
        assert_eq!(after["decision"], expected_after, "{}: after the request: {after}", row.name);
        if row.status == 200 {
            let stages = after["chains"][0]["stages"].as_array().expect("stages");
            assert!(stages.iter().all(|s| s["state"] == "cached"), "{}: every stage cached: {after}", row.name);
            let hops = row.annotations.iter().filter(|(k, _)| *k != INSTANCE_IDS).count();
            assert_eq!(stages.len(), 1 + hops + 1 + usize::from(row.row != "personal, same account"), "{after}");
        }
        shown.push(before.to_string());
        shown.push(after.to_string());
    }
    let secrets = h.emulator.issued_secrets();
    assert!(!secrets.is_empty());
    for text in &shown {
        assert_no_secret("explain output", text, &secrets);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_cli_prints_text_and_json() {
    let h = Harness::start(broker_world(), "").await;
    let image = "demo-registry.cn-hangzhou.cr.aliyuncs.com/ns/app:1.0";
    let (s, _) = h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[]).await;
    assert_eq!(s, 200);
    let run = |args: &[&str]| {
        std::process::Command::new(BROKER).args(args).env("ACR_BROKER_SOCKET", &h.socket).output().expect("run explain")
    };
    let out = run(&["explain", image]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("policy     enterprise default domain, same account"), "{text}");
    assert!(text.contains("decision   cached"), "{text}");
    assert!(text.contains("instance id of \"demo\" in cn-hangzhou"), "{text}");
    let out = run(&["explain", "decoy.example.com", "-a", &format!("{INSTANCE_IDS}={DEMO}"), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["decision"], "load");
    assert_eq!(v["annotations_from"], "request");
    let out = run(&["explain", "docker.io", "-a", "not-key-value"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not KEY=VALUE"));
    assert_no_secret("explain text", &text, &h.emulator.issued_secrets());
    h.stop().await;
}
