//! The registry mirror against a scripted registry (in-process, recording every request) whose
//! token realm is the emulator: what crosses to the registry and what never does, refusals that
//! cost no upstream request, redirects passed back unfollowed, and a token that stops working
//! mid-pull (revoked, or expired by the clock) renewed without the client noticing.
//! The same mirror with a real containerd and docker-registry: `tests/e2e_mirror.rs`.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acr_broker::clock::{Clock, ManualClock};
use acr_emulator::{Emulator, World};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use support::{tcp_request, wait_ready, Harness, DEMO};

const REPO: &str = "eci_test/nginx";
const SERVICE: &str = "registry.aliyuncs.com:cn-hangzhou:china:cri-devaaaaaaaaaaaa01";
const MANIFEST: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
const CLIENT_SECRET: &str = "client-own-secret-must-not-travel";
/// Size of the streamed blob.
const BLOB_LEN: usize = 8 << 20;

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", data_encoding::HEXLOWER.encode(&Sha256::digest(bytes)))
}

/// One request as the registry saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: http::HeaderMap,
    status: u16,
}

/// What the fake registry knows and remembers, shared by its connections.
struct Shared {
    /// The realm URL for Bearer challenges (set once the emulator runs).
    realm: Mutex<String>,
    /// Ask for HTTP Basic (the ACR temporary user) instead of a realm token.
    basic: bool,
    revoked: Mutex<HashSet<String>>,
    seen: Mutex<Vec<Seen>>,
    /// Set when the endless blob's reader went away (the stream was cancelled).
    endless_closed: AtomicBool,
    blob: Bytes,
    oss: SocketAddr,
}

/// A registry that wants a realm token (any JWT the realm issued that was not revoked), or
/// Basic with the ACR temporary user.
struct FakeRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

type FakeBody = BoxBody<Bytes, std::convert::Infallible>;

/// A response body fed by a channel: it ends only when the sender stops.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

impl FakeRegistry {
    async fn start(basic: bool, oss: SocketAddr) -> FakeRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake registry");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            realm: Mutex::new(String::new()),
            basic,
            revoked: Mutex::new(HashSet::new()),
            seen: Mutex::new(Vec::new()),
            endless_closed: AtomicBool::new(false),
            blob: Bytes::from((0..BLOB_LEN).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
            oss,
        });
        let sh = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sh = Arc::clone(&sh);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let resp = answer(&req, &sh);
                        sh.seen.lock().expect("lock").push(Seen {
                            line: format!("{} {}", req.method(), req.uri()),
                            headers: req.headers().clone(),
                            status: resp.status().as_u16(),
                        });
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        FakeRegistry { addr, shared, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    /// Every token used so far stops working (as at expiry or revocation).
    fn revoke_all(&self) {
        let tokens: Vec<String> = self.seen().iter().filter_map(|s| bearer(&s.headers)).collect();
        self.shared.revoked.lock().expect("lock").extend(tokens);
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bearer(h: &http::HeaderMap) -> Option<String> {
    h.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_owned)
}

/// The user name in a Basic `Authorization` header.
fn basic_user(h: &http::HeaderMap) -> Option<String> {
    let b64 = h.get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let raw = String::from_utf8(data_encoding::BASE64.decode(b64.as_bytes()).ok()?).ok()?;
    raw.split_once(':').map(|(u, _)| u.to_owned())
}

/// `sha256:cdcd…`: a blob that never ends (to prove a client going away cancels the upstream).
fn endless_digest() -> String {
    format!("sha256:{}", "cd".repeat(32))
}

fn answer(req: &http::Request<hyper::body::Incoming>, sh: &Arc<Shared>) -> http::Response<FakeBody> {
    let path = req.uri().path();
    let scope = if path == "/v2/" { String::new() } else { format!(",scope=\"repository:{REPO}:pull\"") };
    let valid = if sh.basic {
        basic_user(req.headers()).is_some_and(|u| u == "cr_temp_user")
    } else {
        let token = bearer(req.headers());
        token.as_ref().is_some_and(|t| t.starts_with("ey") && !sh.revoked.lock().expect("lock").contains(t))
    };
    let reply = |status: u16, body: Bytes| {
        let mut r = http::Response::new(Full::new(body).boxed());
        *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
        r
    };
    if !valid {
        let mut r = reply(401, Bytes::from_static(br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#));
        let realm = sh.realm.lock().expect("lock").clone();
        let challenge = if sh.basic {
            String::from("Basic realm=\"fake-registry\"")
        } else {
            format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\"{scope}")
        };
        r.headers_mut().insert("www-authenticate", challenge.parse().expect("header"));
        return r;
    }
    let blob_path = format!("/v2/{REPO}/blobs/{}", digest(&sh.blob));
    let redirected = format!("/v2/{REPO}/blobs/sha256:{}", "ab".repeat(32));
    let endless = format!("/v2/{REPO}/blobs/{}", endless_digest());
    let mut r = match path {
        "/v2/" => reply(200, Bytes::from_static(b"{}")),
        p if p == format!("/v2/{REPO}/manifests/1.0") => {
            let mut r = reply(200, Bytes::from_static(MANIFEST));
            r.headers_mut().insert("content-type", "application/vnd.oci.image.manifest.v1+json".parse().expect("ct"));
            r.headers_mut().insert("docker-content-digest", digest(MANIFEST).parse().expect("digest"));
            r
        }
        p if p == blob_path => reply(200, sh.blob.clone()),
        p if p == endless => {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let chunk = Bytes::from(vec![7u8; 64 << 10]);
            let sh = Arc::clone(sh);
            tokio::spawn(async move {
                // Sends until the response body is dropped (the mirror closed the connection).
                while tx.send(chunk.clone()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                sh.endless_closed.store(true, Ordering::SeqCst);
            });
            let mut r = http::Response::new(ChannelBody(rx).boxed());
            *r.status_mut() = http::StatusCode::OK;
            r
        }
        p if p == redirected => {
            let mut r = reply(307, Bytes::new());
            let to = format!("http://{}/bucket/blob?Signature=abc", sh.oss);
            r.headers_mut().insert("location", to.parse().expect("location"));
            r
        }
        _ => reply(404, Bytes::from_static(br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#)),
    };
    r.headers_mut().insert("set-cookie", "registry-session=1".parse().expect("cookie"));
    r
}

#[path = "e2e/http.rs"]
#[allow(dead_code)]
mod e2e_http;

/// A refusal case: method, target, extra headers, expected status and error code.
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);

struct Fixture {
    h: Harness,
    registry: FakeRegistry,
    oss: e2e_http::RecordingServer,
    mirror: SocketAddr,
    clock: Arc<ManualClock>,
}

/// The fake registry as DEMO's custom domain, the emulator (its realm trusted) and a daemon with
/// the mirror on, all on one manual clock.
async fn start() -> Fixture {
    start_with(false).await
}

/// [`start`] with a registry that asks for Basic (`basic`) instead of a realm token.
async fn start_with(basic: bool) -> Fixture {
    let oss = e2e_http::RecordingServer::start().await;
    let clock = ManualClock::new(acr_broker::clock::system().now());
    let registry = FakeRegistry::start(basic, oss.addr).await;
    let world_text = include_str!("e2e/world.toml")
        .replace("\"@DEMO_REGISTRY@\"", &format!("\"{}\"", registry.addr))
        .replace("\"@PARTNER_REGISTRY@\"", "\"127.0.0.1:1\"");
    let world = World::from_toml(&world_text).expect("world");
    let c2 = clock.clone();
    let emulator = Emulator::start_with_clock(world, "127.0.0.1:0".parse().expect("addr"), Arc::new(move || c2.now()))
        .await
        .expect("emulator");
    *registry.shared.realm.lock().expect("lock") = format!("{}/auth", emulator.base_url());
    let extra = format!(
        "[defaults]\nacr_instance_ids = [\"{DEMO}\"]\n[registry_token]\nallowed_realm_hosts = [\"{}\"]\n\
         [mirror]\nlisten = \"127.0.0.1:0\"\nregistries = [\"{}\"]\n",
        emulator.addr(),
        registry.addr
    );
    let h = Harness::with_emulator(emulator, &extra, clock.clone()).await;
    wait_ready(&h, Duration::from_secs(10)).await;
    let mirror = h.daemon().mirror_addr.expect("mirror listening");
    Fixture { h, registry, oss, mirror, clock }
}

impl Fixture {
    /// A request to the mirror with `Host` = its address and `extra` headers.
    async fn call(&self, method: &str, target: &str, extra: &[(&str, &str)]) -> (u16, http::HeaderMap, Bytes) {
        let host = self.mirror.to_string();
        let mut headers = vec![("host", host.as_str())];
        headers.extend_from_slice(extra);
        tcp_request(self.mirror, method, target, &headers).await
    }

    fn ns(&self) -> String {
        format!("ns={}", self.registry.addr)
    }

    fn blob_digest() -> String {
        digest(&(0..BLOB_LEN).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
    }

    /// Sum of every emulator counter (cloud APIs and the realm).
    fn cloud_calls(&self) -> u64 {
        self.h.emulator.counters().values().sum()
    }

    async fn metric(&self, line_prefix: &str) -> f64 {
        let text = self.h.metrics_text().await;
        text.lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_pulls_with_node_credentials_and_forwards_nothing_of_the_client() {
    let logs = support::captured_logs();
    let f = start().await;
    let ns = f.ns();
    let manifest = format!("/v2/{REPO}/manifests/1.0?{ns}");
    let client_auth = format!("Bearer {CLIENT_SECRET}");
    let hostile = [
        ("accept", "application/vnd.oci.image.manifest.v1+json"),
        ("authorization", client_auth.as_str()),
        ("cookie", "session=client-cookie"),
        ("proxy-authorization", "Basic Y2xpZW50OnNlY3JldA=="),
        ("connection", "x-hop"),
        ("x-hop", "1"),
    ];
    let (status, headers, body) = f.call("GET", &manifest, &hostile).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], MANIFEST);
    assert_eq!(headers.get("docker-content-digest").and_then(|v| v.to_str().ok()), Some(digest(MANIFEST).as_str()));
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert!(headers.get("set-cookie").is_none(), "registry cookies are not relayed");

    // HEAD resolves: length and digest without a body.
    let (status, headers, body) = f.call("HEAD", &manifest, &hostile).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(headers.get("content-length").and_then(|v| v.to_str().ok()), Some(MANIFEST.len().to_string().as_str()));
    assert!(headers.get("docker-content-digest").is_some());

    // A blob streams through whole.
    let blob = format!("/v2/{REPO}/blobs/{}?{ns}", Fixture::blob_digest());
    let (status, _, body) = f.call("GET", &blob, &hostile).await;
    assert_eq!((status, body.len()), (200, BLOB_LEN));
    assert_eq!(digest(&body), Fixture::blob_digest());
    assert!(f.metric("acr_broker_mirror_bytes_total{kind=\"blob\"}").await >= BLOB_LEN as f64);

    // What the registry saw: the mirror's realm token only, none of the client's own headers.
    let seen = f.registry.seen();
    assert!(!seen.is_empty());
    for s in &seen {
        for (name, value) in &s.headers {
            let v = value.to_str().unwrap_or("");
            assert!(!v.contains(CLIENT_SECRET) && !v.contains("client-cookie"), "{} carried {name}: {v}", s.line);
        }
        for h in ["cookie", "proxy-authorization", "x-hop"] {
            assert!(s.headers.get(h).is_none(), "{} carried {h}", s.line);
        }
        assert!(!s.line.contains("ns="), "ns is for the mirror, not the registry: {}", s.line);
        if s.status == 200 {
            assert!(bearer(&s.headers).is_some_and(|t| t.starts_with("ey")), "{}: not a realm token", s.line);
        }
    }
    // One challenge for the first contact, then the cached token (one realm call per scope).
    assert_eq!(seen.iter().filter(|s| s.status == 401).count(), 1, "{seen:#?}");
    assert_eq!(f.h.emulator.count("RegistryToken"), 1, "{:?}", f.h.emulator.counters());

    // A redirect (ACR's blob to OSS) goes back to the client, unfollowed and without a credential.
    let redirected = format!("/v2/{REPO}/blobs/sha256:{}?{ns}", "ab".repeat(32));
    let (status, headers, _) = f.call("GET", &redirected, &[]).await;
    assert_eq!(status, 307);
    let location = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(location.starts_with(&format!("http://{}/bucket/blob", f.oss.addr)), "{location}");
    assert_eq!(f.oss.seen().0, 0, "the mirror must not follow a redirect");

    // One audit line per manifest resolution (the GET and the HEAD), none per blob; no secret
    // (the realm tokens the registry saw, the client's own) in any log line, even at TRACE.
    let text = support::logs_text(&logs);
    let registry = f.registry.addr.to_string();
    let audit: Vec<&str> =
        text.lines().filter(|l| l.contains("mirror manifest resolution") && l.contains(&registry)).collect();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert!(
        audit.iter().all(|l| l.contains("repository=\"eci_test/nginx\"")
            && l.contains("reference=\"1.0\"")
            && l.contains("peer=127.0.0.1:")),
        "{audit:#?}"
    );
    assert!(!text.lines().any(|l| l.contains("audit") && l.contains("blobs/")), "no audit line per blob");
    for token in f.registry.seen().iter().filter_map(|s| bearer(&s.headers)) {
        assert!(!text.contains(&token), "a realm token reached the log");
    }
    assert!(!text.contains(CLIENT_SECRET), "the client's Authorization reached the log");
    f.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_cost_no_request_to_the_registry_or_the_cloud() {
    let f = start().await;
    let ns = f.ns();
    // Warm: one successful pull, so the refusals below would find every cache hot if they got far.
    let (status, _, _) = f.call("GET", &format!("/v2/{REPO}/manifests/1.0?{ns}"), &[]).await;
    assert_eq!(status, 200);
    let (registry_before, cloud_before) = (f.registry.seen().len(), f.cloud_calls());
    let wrong_host = format!("evil.example:{}", f.mirror.port());
    let cases: Vec<Case<'_>> = vec![
        ("GET", format!("/v2/{REPO}/manifests/1.0"), vec![], 400, "bad_ns"),
        ("GET", format!("/v2/{REPO}/manifests/1.0?ns="), vec![], 400, "bad_ns"),
        ("GET", format!("/v2/{REPO}/manifests/1.0?ns=docker.io"), vec![], 404, "not_served"),
        (
            "GET",
            format!("/v2/{REPO}/manifests/1.0?ns=partner-registry.cn-beijing.cr.aliyuncs.com"),
            vec![],
            404,
            "not_served",
        ),
        ("GET", format!("/v2/{REPO}/manifests/1.0?ns=127.0.0.1:1"), vec![], 404, "not_served"),
        ("GET", format!("/v2/eci_test/../../etc/manifests/1.0?{ns}"), vec![], 400, "bad_path"),
        ("GET", format!("/v2/eci_test%2Fnginx/manifests/1.0?{ns}"), vec![], 400, "bad_path"),
        ("GET", format!("/v2/{REPO}/manifests/1.0%00?{ns}"), vec![], 400, "bad_path"),
        ("GET", format!("/v2/_catalog?{ns}"), vec![], 400, "bad_path"),
        ("GET", format!("/v1/credentials/{}", f.registry.addr), vec![], 400, "bad_path"),
        ("POST", format!("/v2/{REPO}/blobs/uploads/?{ns}"), vec![], 405, "method_not_allowed"),
        ("PUT", format!("/v2/{REPO}/manifests/1.0?{ns}"), vec![], 405, "method_not_allowed"),
        ("DELETE", format!("/v2/{REPO}/manifests/1.0?{ns}"), vec![], 405, "method_not_allowed"),
        (
            "GET",
            format!("/v2/{REPO}/manifests/1.0?{ns}"),
            vec![("host", wrong_host.as_str())],
            421,
            "host_not_loopback",
        ),
    ];
    for (method, target, headers, want, code) in &cases {
        let (status, _, body) = if headers.iter().any(|(k, _)| *k == "host") {
            tcp_request(f.mirror, method, target, headers).await
        } else {
            f.call(method, target, headers).await
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!((status, v["error"]["code"].as_str()), (*want, Some(*code)), "{method} {target}: {v}");
    }
    assert_eq!(f.registry.seen().len(), registry_before, "a refused request reached the registry");
    assert_eq!(f.cloud_calls(), cloud_before, "a refused request reached the cloud: {:?}", f.h.emulator.counters());
    let refused = f.metric("acr_broker_mirror_requests_total{kind=\"refused\"").await;
    assert_eq!(refused, cases.len() as f64, "every refusal is counted");
    f.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_stops_working_mid_pull_is_renewed_and_the_pull_completes() {
    let f = start().await;
    let ns = f.ns();
    let (status, _, _) = f.call("GET", &format!("/v2/{REPO}/manifests/1.0?{ns}"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(f.h.emulator.count("RegistryToken"), 1);

    // The registry stops accepting the token between the manifest and the blob (revoked, or
    // expired by the registry's clock): one 401, one fresh token, one retry, and the client sees 200.
    f.registry.revoke_all();
    let blob = format!("/v2/{REPO}/blobs/{}?{ns}", Fixture::blob_digest());
    let (status, _, body) = f.call("GET", &blob, &[]).await;
    assert_eq!((status, body.len()), (200, BLOB_LEN), "the pull must complete after a renewal");
    assert_eq!(f.h.emulator.count("RegistryToken"), 2, "one fresh token for the retry");
    let last: Vec<u16> = f.registry.seen().iter().rev().take(2).map(|s| s.status).collect();
    assert_eq!(last, vec![200, 401], "one 401 and one retry");

    // Expiry by our clock: a token past its end (minus the margin) is replaced before use, so the
    // registry sees no 401 at all.
    let before = f.registry.seen().len();
    f.clock.advance(Duration::from_secs(300 - acr_broker::mirror::EXPIRY_MARGIN.as_secs() + 1));
    let (status, _, _) = f.call("GET", &format!("/v2/{REPO}/manifests/1.0?{ns}"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(f.h.emulator.count("RegistryToken"), 3, "an expired token is renewed");
    let after: Vec<u16> = f.registry.seen()[before..].iter().map(|s| s.status).collect();
    assert_eq!(after, vec![200], "renewed before use, no 401: {after:?}");
    let fetched = f.metric("acr_broker_mirror_token_fetches_total{outcome=\"ok\",scheme=\"bearer\"}").await;
    assert_eq!(fetched, 3.0);
    f.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_asking_for_basic_gets_the_acr_credential_and_no_realm_call() {
    let f = start_with(true).await;
    let ns = f.ns();
    for _ in 0..3 {
        let (status, _, body) = f.call("GET", &format!("/v2/{REPO}/manifests/1.0?{ns}"), &[]).await;
        assert_eq!((status, &body[..]), (200, MANIFEST));
    }
    let statuses: Vec<u16> = f.registry.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![401, 200, 200, 200], "one challenge, then Basic at once");
    assert_eq!(f.h.emulator.count("RegistryToken"), 0, "Basic needs no realm");
    let fetched = f.metric("acr_broker_mirror_token_fetches_total{outcome=\"ok\",scheme=\"basic\"}").await;
    assert_eq!(fetched, 1.0);
    f.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    let f = start().await;
    let target = format!("/v2/{REPO}/blobs/{}?{}", endless_digest(), f.ns());
    let stream = tokio::net::TcpStream::connect(f.mirror).await.expect("connect mirror");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get(target.as_str())
        .header("host", f.mirror.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("send");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0;
    while got < (1 << 20) {
        let frame = body.frame().await.expect("a frame").expect("no error");
        got += frame.data_ref().map_or(0, |d| d.len());
    }
    assert!(!f.registry.shared.endless_closed.load(Ordering::SeqCst), "the registry is still streaming");
    // The client goes away mid-blob.
    drop(body);
    drop(send);
    conn.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f.registry.shared.endless_closed.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "the upstream stream was not cancelled within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.h.stop().await;
}

/// `acr-broker containerd-hosts` with the given arguments: (success, stdout + stderr).
fn containerd_hosts(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_acr-broker"))
        .arg("containerd-hosts")
        .args(args)
        .output()
        .expect("run acr-broker containerd-hosts");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn containerd_hosts_takes_the_mirror_and_registries_from_the_config_and_keeps_foreign_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[aliyun]\nregion = \"cn-hangzhou\"\n[defaults]\nacr_instance_ids = [\"cri-devaaaaaaaaaaaa01\"]\n\
         [mirror]\nlisten = \"127.0.0.1:5005\"\n\
         registries = [\"demo-registry.cn-hangzhou.cr.aliyuncs.com\", \"registry.demo.example.com\"]\n",
    )
    .expect("write config");
    let hosts = dir.path().join("certs.d");
    let (d, c) = (hosts.to_str().expect("utf8"), config.to_str().expect("utf8"));
    let (ok, out) = containerd_hosts(&["--dir", d, "--config", c]);
    assert!(ok, "{out}");
    for reg in ["demo-registry.cn-hangzhou.cr.aliyuncs.com", "registry.demo.example.com"] {
        let text = std::fs::read_to_string(hosts.join(reg).join("hosts.toml")).expect("written");
        assert!(text.contains(&format!("server = \"https://{reg}\"")), "{text}");
        assert!(text.contains("[host.\"http://127.0.0.1:5005\"]"), "{text}");
    }
    let (ok, out) = containerd_hosts(&["--dir", d, "--config", c]);
    assert!(ok && out.matches("unchanged").count() == 2, "idempotent: {out}");

    // A file someone else wrote is kept unless --force.
    let foreign = hosts.join("registry.demo.example.com/hosts.toml");
    std::fs::write(&foreign, "server = \"https://registry.demo.example.com\"\n").expect("foreign");
    let (ok, out) = containerd_hosts(&["--dir", d, "--config", c]);
    assert!(!ok && out.contains("--force"), "{out}");
    let (ok, out) = containerd_hosts(&["--dir", d, "--config", c, "--force"]);
    assert!(ok, "{out}");

    // Without a config, the mirror and the registries must be named.
    let missing = dir.path().join("none.toml");
    let (ok, out) = containerd_hosts(&["--dir", d, "--config", missing.to_str().expect("utf8")]);
    assert!(!ok && out.contains("--mirror"), "{out}");
    let (ok, out) = containerd_hosts(&[
        "--dir",
        d,
        "--config",
        "/nonexistent",
        "--mirror",
        "http://10.0.0.1:5005",
        "x.example.com",
    ]);
    assert!(!ok && out.contains("loopback"), "a non-loopback mirror is refused: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_share_one_token_fetch() {
    let f = start().await;
    // A slow realm (and ACR), so the eight requests surely overlap while the token is fetched.
    f.h.emulator.set_knobs(acr_emulator::Knobs { latency_ms: 300, ..acr_emulator::Knobs::default() });
    let blob = format!("/v2/{REPO}/blobs/{}?{}", Fixture::blob_digest(), f.ns());
    let host = f.mirror.to_string();
    let mirror = f.mirror;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (blob, host) = (blob.clone(), host.clone());
            tokio::spawn(async move { tcp_request(mirror, "GET", &blob, &[("host", host.as_str())]).await })
        })
        .collect();
    for t in tasks {
        let (status, _, body) = t.await.expect("task");
        assert_eq!((status, body.len()), (200, BLOB_LEN));
    }
    assert_eq!(f.h.emulator.count("RegistryToken"), 1, "eight cold requests, one realm call");
    f.h.stop().await;
}
