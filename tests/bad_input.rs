//! Bad input (issue 7): every malformed request gets a clear error naming what is wrong, no host
//! that is not ACR (or not owned by a listed instance) ever gets a credential, and after each bad
//! request the daemon still serves a good one. The shims (docker helper, kubelet plugin) are run
//! as real processes on garbage input.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEMO_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";

// === helpers ===

/// Sends raw bytes on a fresh connection and reads until the server closes (or 5 s pass).
/// Returns the response text; an empty string means the server closed without answering.
async fn raw(socket: &Path, request: &[u8]) -> String {
    let stream = tokio::net::UnixStream::connect(socket).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let request = request.to_vec();
    // Write concurrently: the server may answer (and stop reading) before the body is sent.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut out)).await;
    drop(writer.await);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 response (0 when there is none).
fn status_of(response: &str) -> u16 {
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The JSON body of a raw response (after the blank line), `Null` when absent.
fn body_of(response: &str) -> Value {
    response.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null)
}

fn post(path: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The daemon still answers a good request (a 200 with a credential for the demo instance).
async fn still_serves(h: &Harness, after: &str) {
    let (s, v) = h.credentials(DEMO_HOST, &[]).await;
    assert_eq!(s, 200, "daemon stopped serving after {after}: {v}");
    assert!(v["password"].as_str().is_some_and(|p| !p.is_empty()), "{v}");
}

/// A daemon with extra `[server]` lines.
async fn daemon_with_server(server: &str) -> Harness {
    let emulator =
        acr_emulator::Emulator::start(broker_world(), "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
    Harness::start_with_parts(emulator, ConfigParts { server, ..ConfigParts::default() }).await
}

// === API ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_a_400_naming_the_problem() {
    let h = Harness::start(broker_world(), "").await;
    let nested = format!("{{\"registry\":\"x\",\"annotations\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", b"{\"registry\":".to_vec(), "invalid_json"),
        ("array", b"[]".to_vec(), "invalid_json"),
        ("null", b"null".to_vec(), "invalid_json"),
        ("empty", Vec::new(), "invalid_json"),
        ("not utf-8", b"{\"registry\":\"\xff\xfe\"}".to_vec(), "invalid_json"),
        ("wrong type", b"{\"registry\":5}".to_vec(), "invalid_json"),
        ("annotation not a string", b"{\"registry\":\"x\",\"annotations\":{\"a\":1}}".to_vec(), "invalid_json"),
        ("deeply nested", nested.into_bytes(), "invalid_json"),
        ("trailing garbage", b"{\"registry\":\"docker.io\"} x".to_vec(), "invalid_json"),
    ];
    for (name, body, code) in cases {
        let r = raw(&h.socket, &post("/v1/credentials", Some("application/json"), &body)).await;
        assert_eq!(status_of(&r), 400, "{name}: {r}");
        let v = body_of(&r);
        assert_eq!(v["error"]["code"], code, "{name}: {r}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.starts_with("request body: ")), "{name}: {r}");
        still_serves(&h, name).await;
    }
    // Neither registry nor image: named.
    let (s, v, _) = h.request("POST", "/v1/credentials", Some(json!({"annotations": {}}))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("missing_registry")), "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415_and_charset_is_accepted() {
    let h = Harness::start(broker_world(), "").await;
    let body = br#"{"registry":"docker.io"}"#;
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx")] {
        for path in ["/v1/credentials", "/v1/token", "/v1/prefetch"] {
            let r = raw(&h.socket, &post(path, ct, body)).await;
            assert_eq!(status_of(&r), 415, "{ct:?} {path}: {r}");
            assert_eq!(body_of(&r)["error"]["code"], "unsupported_media_type", "{r}");
        }
    }
    let r = raw(&h.socket, &post("/v1/credentials", Some("Application/JSON; charset=utf-8"), body)).await;
    assert_eq!(status_of(&r), 404, "docker.io is not ours, but the body was read: {r}");
    still_serves(&h, "415s").await;
    h.stop().await;
}

/// A body that trails its head is still read; one that stops half way is a 408 after the body
/// timeout (10 s), and the daemon goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_body_is_read_and_a_stalled_one_is_408() {
    let h = Harness::start(broker_world(), "").await;
    let body = format!(r#"{{"registry":"{DEMO_HOST}"}}"#);
    let request = post("/v1/credentials", Some("application/json"), body.as_bytes());
    let (head, tail) = request.split_at(request.len() - body.len() / 2);
    let send_in_two = |pause: Option<Duration>| {
        let (head, tail, socket) = (head.to_vec(), tail.to_vec(), h.socket.clone());
        async move {
            let stream = tokio::net::UnixStream::connect(&socket).await.expect("connect");
            let (mut rd, mut wr) = stream.into_split();
            wr.write_all(&head).await.expect("head");
            let started = Instant::now();
            let writer = tokio::spawn(async move {
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                    let _ = wr.write_all(&tail).await;
                }
                // Without a pause the rest never comes; keep the connection open meanwhile.
                tokio::time::sleep(Duration::from_secs(15)).await;
                drop(wr);
            });
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&out).contains("\r\n\r\n{") {
                match tokio::time::timeout(Duration::from_secs(14), rd.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            writer.abort();
            (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
        }
    };
    let (late, _) = send_in_two(Some(Duration::from_millis(300))).await;
    assert_eq!(status_of(&late), 200, "the body's second half came 300 ms later: {late}");
    let (stalled, waited) = send_in_two(None).await;
    assert_eq!(status_of(&stalled), 408, "{stalled}");
    assert_eq!(body_of(&stalled)["error"]["code"], "body_timeout", "{stalled}");
    assert!(waited >= Duration::from_secs(9), "answered after the timeout, not before: {waited:?}");
    still_serves(&h, "a stalled body").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413_with_length_or_chunked() {
    let h = Harness::start(broker_world(), "").await;
    let limit = acr_broker::server::MAX_BODY_BYTES;
    // Exactly at the limit: read and parsed (a JSON object padded with spaces).
    let mut at_limit = br#"{"registry":"docker.io"}"#.to_vec();
    at_limit.resize(limit, b' ');
    let r = raw(&h.socket, &post("/v1/credentials", Some("application/json"), &at_limit)).await;
    assert_eq!(status_of(&r), 404, "a body of exactly {limit} bytes is accepted: {r}");

    // One byte over, declared with Content-Length.
    let mut over = at_limit.clone();
    over.push(b' ');
    let r = raw(&h.socket, &post("/v1/credentials", Some("application/json"), &over)).await;
    assert_eq!(status_of(&r), 413, "{r}");
    assert_eq!(body_of(&r)["error"]["code"], "body_too_large", "{r}");

    // A Content-Length far beyond the limit is refused before any body is sent.
    let head = "POST /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 10000000000\r\nConnection: close\r\n\r\n";
    let r = raw(&h.socket, head.as_bytes()).await;
    assert_eq!(status_of(&r), 413, "{r}");

    // Chunked, no length: the limit is enforced while reading.
    for path in ["/v1/credentials", "/v1/token", "/v1/prefetch"] {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        let chunk = vec![b' '; 8192];
        for _ in 0..10 {
            req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            req.extend_from_slice(&chunk);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let r = raw(&h.socket, &req).await;
        assert_eq!(status_of(&r), 413, "{path}: {r}");
        assert_eq!(body_of(&r)["error"]["code"], "body_too_large", "{r}");
    }
    // A prefetch list over its item limit is named, too.
    let images: Vec<String> = (0..300).map(|i| format!("{DEMO_HOST}/ns/app{i}")).collect();
    let (s, v, _) = h.request("POST", "/v1/prefetch", Some(json!({ "images": images }))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("too_many_images")), "{v}");
    still_serves(&h, "413s").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_json_404_and_wrong_methods_405() {
    let h = Harness::start(broker_world(), "").await;
    for (method, path) in
        [("GET", "/"), ("GET", "/v2/"), ("POST", "/v1/credentialsX"), ("GET", "/v1/credential"), ("GET", "/v1/token/x")]
    {
        let (s, v, headers) = h.request(method, path, None).await;
        assert_eq!(s, 404, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "unknown_route", "{method} {path}: {v}");
        assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    }
    let long = format!("/{}", "a".repeat(4000));
    let (s, v, _) = h.request("GET", &long, None).await;
    assert_eq!(s, 404);
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.len() < 300), "echo is bounded: {v}");
    for (method, path) in
        [("DELETE", "/v1/credentials"), ("GET", "/v1/token"), ("POST", "/healthz"), ("GET", "/metrics")]
    {
        let (s, v, _) = h.request(method, path, None).await;
        assert_eq!((s, v["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{method} {path}: {v}");
    }
    still_serves(&h, "404s").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_json_fields_are_400_naming_the_field() {
    let h = Harness::start(broker_world(), "").await;
    let cases = [
        ("/v1/credentials", json!({"registry": DEMO_HOST, "regsitry": "typo"}), "regsitry"),
        ("/v1/credentials", json!({"registry": DEMO_HOST, "role_session_name": "evil"}), "role_session_name"),
        ("/v1/token", json!({"registry": DEMO_HOST, "challenge": "Bearer realm=\"x\"", "scope": "x"}), "scope"),
        ("/v1/prefetch", json!({"images": [], "force": true}), "force"),
    ];
    for (path, body, field) in cases {
        let (s, v, _) = h.request("POST", path, Some(body)).await;
        assert_eq!(s, 400, "{path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!("unknown field `{field}`")), "{path}: {v}");
    }
    still_serves(&h, "unknown fields").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_others_still_served() {
    let h = Harness::start(broker_world(), "").await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{many}Connection: close\r\n\r\n");
    for (name, req) in [("one huge header", big), ("2000 headers", many)] {
        let r = raw(&h.socket, req.as_bytes()).await;
        let status = status_of(&r);
        assert!(status == 431 || status == 0 || status == 400, "{name}: expected 431 or a closed connection: {r}");
        still_serves(&h, name).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_starve_others() {
    let h = daemon_with_server("header_timeout_seconds = 1\nmax_connections = 512").await;
    wait_ready(&h, Duration::from_secs(10)).await;
    // An attacker holding 1,000 connections that never send a byte.
    let mut idle = Vec::with_capacity(1000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while idle.len() < 1000 {
        match tokio::net::UnixStream::connect(&h.socket).await {
            Ok(s) => idle.push(s),
            Err(e) => {
                assert!(Instant::now() < deadline, "could not open idle connection {}: {e}", idle.len());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let started = Instant::now();
    let (s, v, _) =
        tokio::time::timeout(Duration::from_secs(10), h.request("GET", "/healthz", None)).await.expect("served");
    let waited = started.elapsed();
    assert_eq!(s, 200, "{v}");
    assert!(waited < Duration::from_millis(2500), "a new client waited {waited:?} behind 1,000 idle connections");
    // The header timeout closed the idle connections (they read EOF, not a hang).
    let mut closed = 0;
    for mut s in idle.drain(..50) {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "idle connections are closed by the header timeout");
    eprintln!("new client served {waited:?} after 1,000 idle connections were opened");
    drop(idle);
    still_serves(&h, "idle connections").await;
    h.stop().await;
}

// === hosts ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hosts_never_get_credentials() {
    let h = Harness::start(broker_world(), "").await;
    let long_label = format!("{}.cn-hangzhou.cr.aliyuncs.com", "a".repeat(64));
    let long_ee = format!("{}-registry.cn-hangzhou.cr.aliyuncs.com", "a".repeat(60));
    let hosts: Vec<String> = [
        "",
        " ",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com ",
        "demo registry.cn-hangzhou.cr.aliyuncs.com",
        "demo-registry..cn-hangzhou.cr.aliyuncs.com",
        "..",
        "../demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "user:pass@demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "https://demo-registry.cn-hangzhou.cr.aliyuncs.com@evil.com",
        "https://evil.com#@demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "evil.com?demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "demo-registry.cn-hangzhou.cr.aliyuncs.c\u{043e}m",
        "demo-registry.cn-hangzhou.cr.aliyunc\u{0455}.com",
        "xn--demo-registry-xyz.cn-hangzhou.cr.aliyuncs.com",
        "demo-registry.cn-hangzhou.cr.xn--aliyuncs-xyz.com",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com..",
        "x.cr.aliyuncs.com.evil.com",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com.evil.com",
        "evil.com/x.cr.aliyuncs.com",
        "evil.com/demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "evil-registry.cn-hangzhou.cr.aliyuncs.com.",
        "registry.oss-cn-hangzhou.aliyuncs.com",
        "demo-registry.oss-cn-hangzhou.cr.aliyuncs.com",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com:5000",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com:0",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com:99999",
        "demo-registry.cn-beijing.cr.aliyuncs.com",
        "-registry.cn-hangzhou.cr.aliyuncs.com",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com\u{0}",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com\r\nX-Injected: 1",
        "ftp://demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "[::1]:5000",
        "127.0.0.1",
        "docker.io",
        "decoy.example.com",
        "north.example.com",
        "registry.demo.example.com.evil.com",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([long_label, long_ee, "a".repeat(3000)])
    .collect();
    // With no annotations, and with the demo instance named (custom domains then become candidates).
    let with_demo = [(INSTANCE_IDS, DEMO)];
    for host in &hosts {
        for annotations in [&[][..], &with_demo[..]] {
            let (s, v) = h.credentials(host, annotations).await;
            assert_ne!(s, 200, "{host:?} {annotations:?} got a credential: {v}");
            assert!(matches!(s, 400 | 403 | 404), "{host:?}: unexpected status {s}: {v}");
            assert!(v["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{host:?}: {v}");
            assert!(v.get("password").is_none(), "{host:?}: {v}");
        }
        // The docker-helper route, percent-encoded.
        let enc: String = form_urlencoded::byte_serialize(host.as_bytes()).collect();
        let (s, v, _) = h.request("GET", &format!("/v1/credentials/{enc}"), None).await;
        assert_ne!(s, 200, "GET {host:?} got a credential: {v}");
    }
    // Not owned by the listed instance: another instance's custom domain, or the right one in the wrong region.
    let not_owned = [
        ("decoy.example.com", DEMO),
        ("registry.demo.example.com", DECOY),
        ("north.example.com", "cn-hangzhou:cri-bjaaaaaaaaaaaa03"),
        ("registry.demo.example.com", "cn-beijing:cri-devaaaaaaaaaaaa01"),
    ];
    for (host, instance) in not_owned {
        let (s, v) = h.credentials(host, &[(INSTANCE_IDS, instance)]).await;
        assert_ne!(s, 200, "{host} with {instance} got a credential: {v}");
    }
    still_serves(&h, "hostile hosts").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_trailing_dot_and_paths_name_the_same_acr_host() {
    let h = Harness::start(broker_world(), "").await;
    for host in [
        "DEMO-REGISTRY.CN-HANGZHOU.CR.ALIYUNCS.COM",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com.",
        "https://Demo-Registry.cn-hangzhou.cr.aliyuncs.com/v2/",
    ] {
        let (s, v) = h.credentials(host, &[]).await;
        assert_eq!(s, 200, "{host}: {v}");
        assert_eq!(v["registry"], DEMO_HOST, "{host}: answers name the normalised host");
        assert_eq!(v["instance_id"], DEMO);
    }
    // The custom domain in upper case with its instance named is still that instance's domain.
    let (s, v) = h.credentials("REGISTRY.DEMO.EXAMPLE.COM", &[(INSTANCE_IDS, DEMO)]).await;
    assert_eq!((s, v["instance_id"].as_str()), (200, Some(DEMO)), "{v}");
    h.stop().await;
}

// === annotations ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_annotations_are_400_naming_key_and_value() {
    let h = Harness::start(broker_world(), "").await;
    still_serves(&h, "warm-up").await;
    let many_ids = vec![DEMO; 2500].join(",");
    let many_arns = vec![SERVICE_ROLE; 1000].join(",");
    let seventeen = (0..17).map(|i| format!("cri-devaaaaaaaaaa{i:04}")).collect::<Vec<_>>().join(",");
    let cases: Vec<(&str, String)> = vec![
        (SERVICE_ARNS, "arn:aws:iam::123456789012:role/x".into()),
        (SERVICE_ARNS, "acs:ram::abc:role/x".into()),
        (SERVICE_ARNS, "acs:ram::1111111111111111:role/".into()),
        (SERVICE_ARNS, "acs:ram::1111111111111111:user/dev-admin".into()),
        (SERVICE_ARNS, "acs:ram::1111111111111111:role/a/b".into()),
        (SERVICE_ARNS, format!("acs:ram::1111111111111111:role/{}", "r".repeat(65))),
        (SERVICE_ARNS, "acs:ram::1111111111111111:role/eci-acr-s\u{0435}rvice".into()),
        (SERVICE_ARNS, "acs:ram:cn-hangzhou:1111111111111111:role/eci-acr-service".into()),
        (USER_ARNS, "acs:ram::2222222222222222:role/eci acr user".into()),
        (INSTANCE_IDS, "cri-".into()),
        (INSTANCE_IDS, "cri-short".into()),
        (INSTANCE_IDS, "cri-DEVAAAAAAAAAAA01".into()),
        (INSTANCE_IDS, "devaaaaaaaaaaaa01".into()),
        (INSTANCE_IDS, "cn-hangzhou:".into()),
        (INSTANCE_IDS, ":cri-devaaaaaaaaaaaa01".into()),
        (INSTANCE_IDS, "cn_hangzhou:cri-devaaaaaaaaaaaa01".into()),
        (INSTANCE_IDS, "CN-HANGZHOU:cri-devaaaaaaaaaaaa01".into()),
        (INSTANCE_IDS, "x:cri-devaaaaaaaaaaaa01".into()),
        (INSTANCE_IDS, "cn-hangzhou:cn-hangzhou:cri-devaaaaaaaaaaaa01".into()),
        (INSTANCE_IDS, format!("{DEMO},,{DECOY}")),
        (INSTANCE_IDS, format!("{DEMO},")),
        (INSTANCE_IDS, ",".into()),
        (INSTANCE_IDS, "".into()),
        (INSTANCE_IDS, "   ".into()),
        (INSTANCE_IDS, many_ids),
        (INSTANCE_IDS, seventeen),
        (SERVICE_ARNS, many_arns),
    ];
    for (key, value) in &cases {
        let (s, v) = h.credentials("registry.demo.example.com", &[(key, value.as_str())]).await;
        assert_eq!(s, 400, "{key}={value:.80}: {v}");
        assert_eq!(v["error"]["code"], "invalid_annotation", "{key}={value:.80}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(key), "names the annotation: {msg}");
        assert!(msg.len() < 1200, "the echoed value is bounded ({} bytes)", msg.len());
        still_serves(&h, &format!("{key}={value:.40}")).await;
    }
    // A user role without a service role is named too.
    let (s, v) = h.credentials(DEMO_HOST, &[(USER_ARNS, USER_ROLE)]).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("user_arn_without_service_arn")), "{v}");
    h.stop().await;
}

/// The user id the emulator baked into an ACR password: `role:<account>:<role>:<session name>`.
fn password_principal(password: &str) -> String {
    let (claims, _) = password.rsplit_once(':').expect("emulator password shape");
    let json = data_encoding::BASE64.decode(claims.as_bytes()).expect("base64 claims");
    let v: Value = serde_json::from_slice(&json).expect("claims JSON");
    v["userId"].as_str().expect("userId").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_session_name_cannot_be_injected_through_annotations() {
    let h = Harness::start(broker_world(), "").await;
    still_serves(&h, "warm-up").await;
    h.emulator.reset_counters();
    let injections = [
        format!("{SERVICE_ROLE}&RoleSessionName=evil"),
        format!("{SERVICE_ROLE}?RoleSessionName=evil"),
        format!("{SERVICE_ROLE}\nRoleSessionName: evil"),
        format!("{SERVICE_ROLE}%26RoleSessionName%3Devil"),
        format!("{SERVICE_ROLE};RoleSessionName=evil"),
        format!("{SERVICE_ROLE},RoleSessionName=evil"),
        format!("{SERVICE_ROLE}/evil"),
        "acs:ram::1111111111111111:role/eci-acr-service:evil".to_owned(),
    ];
    for value in &injections {
        let (s, v) = h.credentials(DEMO_HOST, &[(SERVICE_ARNS, value.as_str())]).await;
        assert_eq!(s, 400, "{value:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_annotation", "{value:?}: {v}");
    }
    assert_eq!(h.emulator.count("AssumeRole"), 0, "no rejected value reached STS: {:?}", h.emulator.counters());
    // An acr-looking key we do not read is refused (issue 11: no silent fallback), before STS.
    let (s, v) = h
        .credentials(DEMO_HOST, &[(SERVICE_ARNS, SERVICE_ROLE), ("k8s.aliyun.com/acr-role-session-name", "evil")])
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "unknown_annotation", "{v}");
    assert_eq!(h.emulator.count("AssumeRole"), 0, "{:?}", h.emulator.counters());
    // Other keys are not annotations we read: they change nothing.
    let (s, v) = h.credentials(DEMO_HOST, &[(SERVICE_ARNS, SERVICE_ROLE), ("RoleSessionName", "evil")]).await;
    assert_eq!(s, 200, "{v}");
    let session = h.daemon().broker.session_name().to_owned();
    let principal = password_principal(v["password"].as_str().expect("password"));
    assert_eq!(
        principal,
        format!("role:1111111111111111:eci-acr-service:{session}"),
        "the emulator saw only the broker's session name"
    );
    assert!(!principal.contains("evil"));
    h.stop().await;
}

// === the shims as processes ===

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run_process(program: &str, args: &[&str], socket: &Path, stdin: &[u8]) -> Run {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("ACR_BROKER_SOCKET", socket)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = tokio::spawn(async move {
        let _ = pipe.write_all(&input).await;
    });
    let out =
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("exits").expect("output");
    let _ = writer.await;
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "{program} {args:?} panicked:\n{}", run.stderr);
    run
}

const HELPER: &str = env!("CARGO_BIN_EXE_docker-credential-acr-broker");
const BROKER: &str = env!("CARGO_BIN_EXE_acr-broker");
const KUBELET_V1: &str = "credentialprovider.kubelet.k8s.io/v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_helper_process_refuses_garbage_clearly() {
    let h = Harness::start(broker_world(), "").await;
    let big = vec![b'a'; 2 * 1024 * 1024];
    let cases: Vec<(&[&str], Vec<u8>, &str)> = vec![
        (&["get"], Vec::new(), "no credentials server URL"),
        (&["get"], b"\n\n  ".to_vec(), "no credentials server URL"),
        (&["get"], b"\xff\xfe\x00garbage".to_vec(), "not UTF-8"),
        (&["get"], b"{\"ServerURL\": 1}".to_vec(), "invalid registry host"),
        (&["get"], b"user:pass@demo-registry.cn-hangzhou.cr.aliyuncs.com".to_vec(), "user info"),
        (&["get"], big, "larger than"),
        (&["get"], b"x.cr.aliyuncs.com.evil.com".to_vec(), "credentials not found in native keychain"),
        (&["get"], b"evil.com/demo-registry.cn-hangzhou.cr.aliyuncs.com".to_vec(), "credentials not found"),
        (&["frobnicate"], Vec::new(), "Usage: "),
        (&[], Vec::new(), "Usage: "),
    ];
    for (args, input, want) in cases {
        let run = run_process(HELPER, args, &h.socket, &input).await;
        assert_eq!(
            run.code,
            Some(1),
            "{args:?} {:?}: {}{}",
            String::from_utf8_lossy(&input[..input.len().min(60)]),
            run.stdout,
            run.stderr
        );
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.contains(want), "{args:?}: expected {want:?} in {all:.400}");
    }
    // And a good lookup still works through the same daemon.
    let run = run_process(HELPER, &["get"], &h.socket, DEMO_HOST.as_bytes()).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).expect("helper JSON");
    assert_eq!(v["ServerURL"], DEMO_HOST);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_plugin_process_refuses_garbage_clearly() {
    let h = Harness::start(broker_world(), "").await;
    let req = |api: &str, extra: &str| {
        format!(r#"{{"kind":"CredentialProviderRequest","apiVersion":"{api}","image":"{DEMO_HOST}/ns/app"{extra}}}"#)
            .into_bytes()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "stdin is empty"),
        (b"   \n".to_vec(), "stdin is empty"),
        (b"garbage".to_vec(), "not a valid CredentialProviderRequest"),
        (b"\xff\xfe\x00\x01".to_vec(), "not a valid CredentialProviderRequest"),
        (b"[1,2,3]".to_vec(), "not a valid CredentialProviderRequest"),
        (
            req("credentialprovider.kubelet.k8s.io/v2", ""),
            "apiVersion \"credentialprovider.kubelet.k8s.io/v2\" is not supported",
        ),
        (req("v1", ""), "is not supported"),
        (req(KUBELET_V1, r#","serviceAccountToken":5"#), "not a valid CredentialProviderRequest"),
        (req(KUBELET_V1, r#","serviceAccountAnnotations":{"a":["x"]}"#), "not a valid CredentialProviderRequest"),
        (
            format!(r#"{{"kind":"Pod","apiVersion":"{KUBELET_V1}","image":"{DEMO_HOST}/ns/app"}}"#).into_bytes(),
            "kind \"Pod\"",
        ),
        (
            format!(r#"{{"kind":"CredentialProviderRequest","apiVersion":"{KUBELET_V1}"}}"#).into_bytes(),
            "missing field `image`",
        ),
        (
            format!(r#"{{"kind":"CredentialProviderRequest","apiVersion":"{KUBELET_V1}","image":"bad host/x"}}"#)
                .into_bytes(),
            "no usable registry host",
        ),
        (
            req(KUBELET_V1, &format!(r#","serviceAccountAnnotations":{{"{SERVICE_ARNS}":"acs:ram::1:role/x,,y"}}"#)),
            "invalid_annotation",
        ),
        (vec![b' '; 2 * 1024 * 1024], "larger than"),
    ];
    for (input, want) in cases {
        let run = run_process(BROKER, &["kubelet-plugin"], &h.socket, &input).await;
        let shown = String::from_utf8_lossy(&input[..input.len().min(120)]).into_owned();
        assert_eq!(run.code, Some(1), "{shown}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.is_empty(), "{shown}: no response on failure: {}", run.stdout);
        assert!(run.stderr.starts_with("acr-broker kubelet-plugin: "), "{shown}: {}", run.stderr);
        assert!(run.stderr.contains(want), "{shown}: expected {want:?} in {}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "one clear line: {}", run.stderr);
    }
    let run = run_process(BROKER, &["kubelet-plugin"], &h.socket, &req(KUBELET_V1, "")).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("\"auth\""), "{}", run.stdout);
    // A field a newer kubelet adds is ignored, and the pull still gets its credential.
    let newer = req(KUBELET_V1, r#","imagePullPolicy":"Always","someFutureField":{"x":1}"#);
    let run = run_process(BROKER, &["kubelet-plugin"], &h.socket, &newer).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("\"auth\""), "{}", run.stdout);
    h.stop().await;
}
