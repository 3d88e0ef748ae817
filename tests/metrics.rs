//! `/metrics` after real traffic passes `promtool check metrics` with no findings, and carries
//! no instance ids, hosts or ARNs as labels (issue: operations).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

fn promtool() -> Option<&'static str> {
    ["/usr/local/bin/promtool", "/usr/bin/promtool"].into_iter().find(|p| std::path::Path::new(p).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_after_real_traffic() {
    let h = Harness::start(broker_world(), "").await;
    wait_ready(&h, std::time::Duration::from_secs(10)).await;
    assert_eq!(h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[]).await.0, 200);
    assert_eq!(h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[]).await.0, 200);
    let cross = [(SERVICE_ARNS, SERVICE_ROLE), (USER_ARNS, USER_ROLE)];
    assert_eq!(h.credentials("partner-registry.cn-beijing.cr.aliyuncs.com", &cross).await.0, 200);
    assert_eq!(h.credentials("docker.io", &[]).await.0, 404);
    assert_eq!(h.credentials("registry.demo.example.com", &[(INSTANCE_IDS, "nope")]).await.0, 400);
    let text = h.metrics_text().await;

    for needle in [
        "acr_broker_requests_total{outcome=\"ok\",surface=\"api\"} 3",
        "acr_broker_requests_total{outcome=\"not_found\",surface=\"api\"} 1",
        "acr_broker_requests_total{outcome=\"bad_request\",surface=\"api\"} 1",
        "acr_broker_cache_hits_total{cache=\"credential\"} 1",
        "acr_broker_upstream_calls_total{action=\"AssumeRole\",outcome=\"ok\"} 2",
        "acr_broker_upstream_calls_total{action=\"GetAuthorizationToken\",outcome=\"ok\"} 2",
        "acr_broker_upstream_in_flight 0",
        "acr_broker_build_info{version=",
        "process_resident_memory_bytes",
        "acr_broker_cache_entries{cache=\"credential\"} 2",
        "acr_broker_cache_soonest_expiry_seconds{cache=\"credential\"}",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    for leak in ["cri-", "aliyuncs.com", "acs:ram", "docker.io"] {
        assert!(!text.contains(leak), "unbounded label value {leak:?} in metrics");
    }

    let Some(promtool) = promtool() else {
        panic!("promtool not installed: run scripts/install-test-deps.sh");
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool output");
    let findings = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && findings.trim().is_empty(), "promtool findings:\n{findings}");
    h.stop().await;
}
