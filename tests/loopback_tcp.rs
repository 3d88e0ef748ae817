//! The optional loopback TCP API listener: DNS-rebinding defence (`Host` must be a loopback name
//! for the port) and the same uid/gid allow-list as the unix socket, from the kernel's socket
//! table. The metrics listener is deliberately not host-checked (Prometheus scrapes it by IP).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{broker_world, curl_as, my_uid, setpriv_bin, tcp_get_with_host, wait_ready, ConfigParts, Harness};

const DEMO_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";

async fn start(server: &str) -> Harness {
    let emu = acr_emulator::Emulator::start(broker_world(), "127.0.0.1:0".parse().expect("addr")).await.expect("emu");
    let h = Harness::start_with_parts(emu, ConfigParts { server, ..ConfigParts::default() }).await;
    wait_ready(&h, Duration::from_secs(10)).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_api_refuses_a_rebound_host_name_but_serves_loopback_names() {
    let h = start("listen = \"127.0.0.1:0\"").await;
    let api = h.daemon().api_addr.expect("TCP API listener");
    let port = api.port();
    let path = format!("/v1/credentials/{DEMO_HOST}");
    for host in [format!("evil.example:{port}"), String::from("evil.example"), format!("127.0.0.1:{}", port ^ 1)] {
        let (status, _, body) = tcp_get_with_host(api, &host, &path).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, 421, "Host {host:?} must be refused: {v}");
        assert_eq!(v["error"]["code"], "host_not_loopback", "{v}");
        assert!(v.get("password").is_none(), "{v}");
    }
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 0, "a refused request must not reach ACR");
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (status, _, body) = tcp_get_with_host(api, &host, &path).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "Host {host:?} is loopback: {v}");
        assert!(v["password"].is_string(), "{v}");
    }
    // The metrics listener serves no credential: any Host, e.g. the node's IP, is fine there.
    let metrics = h.daemon().metrics_addr.expect("metrics");
    let (status, _, _) = tcp_get_with_host(metrics, "10.1.2.3:9465", "/metrics").await;
    assert_eq!(status, 200, "the metrics listener must stay scrapeable by node IP");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_api_applies_the_uid_allow_list_from_the_socket_table() {
    if my_uid() != 0 || setpriv_bin().is_none() {
        support::skip("tcp_api_applies_the_uid_allow_list_from_the_socket_table needs root and setpriv");
        return;
    }
    let h = start("listen = \"127.0.0.1:0\"\nallowed_uids = [65532]\nallowed_gids = [65533]").await;
    let api = h.daemon().api_addr.expect("TCP API listener");
    let url = format!("http://127.0.0.1:{}/v1/credentials/{DEMO_HOST}", api.port());
    let (status, body) = curl_as(65534, 65534, &url, &[]).await;
    assert_eq!(status, 403, "uid 65534 is not allowed: {body}");
    assert!(body.contains("peer_not_allowed") && !body.contains("password"), "{body}");
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 0, "nothing goes upstream for a refused peer");
    let (status, body) = curl_as(65532, 65531, &url, &[]).await;
    assert_eq!(status, 200, "uid 65532 is allowed: {body}");
    let metrics = h.metrics_text().await;
    assert!(metrics.contains("acr_broker_peer_denied_total 1"), "{metrics}");
    h.stop().await;
}
