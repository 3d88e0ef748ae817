//! Security (issue 7): socket permissions and the peer check, no secret in any log, the realm
//! allow-list against a hostile registry, credentials never on disk, TLS required upstream, and
//! service-account isolation. SECURITY.md maps each claim to the test here that checks it.

mod support;

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use acr_broker::config::Config;
use acr_emulator::{Emulator, World};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEMO_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";
const DECOY_HOST: &str = "decoy-registry.cn-hangzhou.cr.aliyuncs.com";
const PARTNER_HOST: &str = "partner-registry.cn-beijing.cr.aliyuncs.com";
const PERSONAL_HOST: &str = "registry.cn-hangzhou.aliyuncs.com";
const DEMO_SERVICE: &str = "registry.aliyuncs.com:cn-hangzhou:china:cri-devaaaaaaaaaaaa01";
const PROVIDER: &str = "acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev";
const SA_ROLE: &str = "acs:ram::1111111111111111:role/sa-acr-reader";
const SA_DECOY_ROLE: &str = "acs:ram::1111111111111111:role/sa-decoy-reader";
const LONG_TERM_AK: &str = "LTAI5tDEVACCESSKEY0000001";
const LONG_TERM_SECRET: &str = "DevSecret0123456789abcdefghijk";
const BROKER: &str = env!("CARGO_BIN_EXE_acr-broker");
const HELPER: &str = env!("CARGO_BIN_EXE_docker-credential-acr-broker");

// === shared helpers ===

/// Daemon config text pointed at `emu` (the shared builder; `server_extra` goes into `[server]`,
/// `identity` replaces the `[identity]` body, `extra` is appended).
fn config_text(emu: &Emulator, socket: &Path, server_extra: &str, identity: &str, extra: &str) -> String {
    support::config_text(emu, socket, &ConfigParts { server: server_extra, identity, extra, ..ConfigParts::default() })
}

async fn start_in_process(emulator: Emulator, server_extra: &str, extra: &str) -> Harness {
    Harness::start_with_parts(emulator, ConfigParts { server: server_extra, extra, ..ConfigParts::default() }).await
}

async fn emulator(world: World) -> Emulator {
    Emulator::start(world, "127.0.0.1:0".parse().expect("addr")).await.expect("emulator")
}

/// The principal the emulator baked into an ACR password: `role:<account>:<role>:<session>`.
fn password_principal(password: &str) -> String {
    let (claims, _) = password.rsplit_once(':').expect("emulator password shape");
    let json = data_encoding::BASE64.decode(claims.as_bytes()).expect("base64 claims");
    let v: Value = serde_json::from_slice(&json).expect("claims JSON");
    v["userId"].as_str().expect("userId").to_owned()
}

async fn post_credentials(h: &Harness, body: Value) -> (u16, Value) {
    let (s, v, _) = h.request("POST", "/v1/credentials", Some(body)).await;
    (s, v)
}

// === socket permissions and the peer check ===

/// A group to give the socket: `nogroup`/`daemon` when present (so the chown is visible), else ours.
fn some_group() -> (String, u32) {
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    for name in ["nogroup", "daemon", "users"] {
        if let Some(gid) = groups.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f.get(2).and_then(|g| g.parse::<u32>().ok())).flatten()
        }) {
            return (name.to_owned(), gid);
        }
    }
    let gid = std::fs::metadata("/proc/self").map(|m| m.gid()).unwrap_or(0);
    (gid.to_string(), gid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_created_0660_with_the_configured_group() {
    let (group, gid) = some_group();
    let can_chown = my_uid() == 0 || group.parse::<u32>().is_ok();
    if !can_chown {
        eprintln!("skipping: not root and {group} is not our group");
        return;
    }
    let h = start_in_process(emulator(broker_world()).await, &format!("socket_group = \"{group}\""), "").await;
    let meta = std::fs::metadata(&h.socket).expect("socket exists");
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), gid, "socket group {group}");
    h.stop().await;
    // A world-accessible mode is refused by the config.
    let e = Config::from_toml("[server]\nsocket_mode = \"0666\"\n[aliyun]\nregion = \"cn-hangzhou\"\n", "<test>")
        .expect_err("0666 must be refused");
    assert!(e.to_string().contains("socket_mode"), "{e}");
}

#[test]
fn peer_check_allows_root_listed_uids_and_gids_only() {
    use acr_broker::server::peer_allowed;
    assert!(peer_allowed(0, 0, &[], &[]), "root is always allowed");
    assert!(peer_allowed(0, 12345, &[1000], &[44]));
    assert!(!peer_allowed(65534, 65534, &[], &[]), "default: root only");
    assert!(!peer_allowed(65534, 65534, &[1000], &[44]));
    assert!(peer_allowed(1000, 65534, &[1000], &[]));
    assert!(peer_allowed(65534, 44, &[], &[44]));
    assert!(!peer_allowed(44, 1000, &[], &[44]), "a uid equal to an allowed gid is not allowed");
}

/// `curl` over the socket as `uid:gid` (via setpriv, no supplementary groups): (status, body).
async fn curl_as(uid: u32, gid: u32, socket: &Path, path: &str) -> (u16, Value) {
    let socket = socket.to_str().expect("utf8 socket path");
    let (status, body) =
        support::curl_as(uid, gid, &format!("http://localhost{path}"), &["--unix-socket", socket]).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_outside_the_allow_list_get_403_and_an_audit_line() {
    let logs = captured_logs();
    let path = format!("/v1/credentials/{DEMO_HOST}");
    if my_uid() != 0 {
        // Not root: configure an allow-list without us, and ask from another process (the
        // daemon admits its own process: that is its watchdog probe).
        let h = start_in_process(emulator(broker_world()).await, "allowed_uids = [4242424]", "").await;
        let out = std::process::Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(&h.socket)
            .arg(format!("http://localhost{path}"))
            .output()
            .expect("curl");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"].as_str(), Some("peer_not_allowed"), "{v}");
        assert!(h.metrics_text().await.contains("acr_broker_peer_denied_total 1"));
        assert!(logs_text(&logs).contains("refused a caller"), "audit line");
        h.stop().await;
        return;
    }
    if support::setpriv_bin().is_none() || which("curl").is_none() {
        support::skip("the unprivileged-client part needs setpriv and curl");
        return;
    }
    // Root is always allowed, so unprivileged clients are made with setpriv. Allowed: uid 65532
    // (by uid) and gid 65534 (by group); refused: 65534 with gid 65533.
    let h =
        start_in_process(emulator(broker_world()).await, "allowed_uids = [65532]\nallowed_gids = [65534]", "").await;
    // Let the unprivileged client reach the socket (the config itself refuses world-accessible modes).
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&h.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
    wait_ready(&h, Duration::from_secs(10)).await;

    let (s, v) = curl_as(65534, 65533, &h.socket, &path).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("peer_not_allowed")), "{v}");
    assert!(v.get("password").is_none());
    let (s, v) = curl_as(65534, 65533, &h.socket, "/healthz").await;
    assert_eq!(s, 403, "even health is refused to an unknown peer: {v}");

    let (s, v) = curl_as(65533, 65534, &h.socket, &path).await;
    assert_eq!(s, 200, "allowed by gid: {v}");
    let (s, v) = curl_as(65532, 65531, &h.socket, &path).await;
    assert_eq!(s, 200, "allowed by uid: {v}");

    let metrics = h.metrics_text().await;
    assert!(metrics.contains("acr_broker_peer_denied_total 2"), "{metrics}");
    let text = logs_text(&logs);
    let audit: Vec<&str> = text.lines().filter(|l| l.contains("refused a caller")).collect();
    assert!(
        audit.iter().any(|l| l.contains("audit") && l.contains("uid=65534") && l.contains("gid=65533")),
        "audit line missing:\n{}",
        audit.join("\n")
    );
    assert!(!audit.iter().any(|l| l.contains("uid=65532") || l.contains("uid=65533")), "allowed peers are not refused");
    h.stop().await;
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| p.is_file()))
}

// === no secret in any log; credentials never touch disk ===

/// A daemon child process with `RUST_LOG=trace`; its stderr is collected until it exits.
struct Child {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

async fn spawn_daemon(dir: &Path, config: &str) -> Child {
    let (cwd, tmp) = (dir.join("cwd"), dir.join("tmp"));
    std::fs::create_dir_all(&cwd).expect("cwd");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let path = dir.join("config.toml");
    std::fs::File::create(&path).and_then(|mut f| f.write_all(config.as_bytes())).expect("write config");
    let mut child = tokio::process::Command::new(BROKER)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(&cwd)
        .env("RUST_LOG", "trace")
        .env("TMPDIR", &tmp)
        .env("HOME", &cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn daemon");
    let mut err = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf).await;
        buf
    });
    let socket = dir.join("broker.sock");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if socket.exists() {
            let (s, _, _) = request_on(&socket, "GET", "/readyz", None).await;
            if s == 200 {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "daemon child never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Child { child, stderr }
}

impl Child {
    /// SIGTERM, wait, and return everything it wrote to stdout and stderr.
    async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.expect("daemon exits");
        assert!(status.as_ref().is_ok_and(|s| s.success()), "daemon exit: {status:?}");
        let mut out = Vec::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_end(&mut out).await;
        }
        let err = self.stderr.await.unwrap_or_default();
        format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err))
    }
}

/// Runs a shim process against `socket`; returns stdout + stderr.
async fn shim(program: &str, args: &[&str], socket: &Path, stdin: &str) -> (bool, String, String) {
    let env = [("ACR_BROKER_SOCKET", socket.as_os_str()), ("RUST_LOG", "trace".as_ref())];
    let out = support::run_with_stdin(program, args, &env, stdin).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Regular files under `root` (depth-limited, not following links) modified at or after `since`.
fn recent_files(root: &Path, since: SystemTime, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if meta.is_dir() {
            // Leave the session machinery's job directories alone.
            if depth > 0 && !name.starts_with("bash_jobs") {
                recent_files(&path, since, depth - 1, out);
            }
        } else if meta.is_file() && meta.len() < 8 * 1024 * 1024 && meta.modified().is_ok_and(|m| m >= since) {
            out.push(path);
        }
    }
}

fn assert_no_secret_in(what: &str, text: &[u8], secrets: &[String]) {
    for s in secrets {
        if s.len() >= 8 {
            let found = text.windows(s.len()).any(|w| w == s.as_bytes());
            assert!(!found, "secret was exposed in {what}: {}… ({} bytes)", &s[..6], s.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_at_trace_level_logs_no_secret_and_writes_none_to_disk() {
    // Test bookkeeping only (file mtimes), not broker logic.
    #[allow(clippy::disallowed_methods)]
    let started = SystemTime::now() - Duration::from_secs(1);
    let emu = emulator(two_service_accounts_world()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("broker.sock");
    let realm_host = emu.addr().to_string();
    let extra = format!("[registry_token]\nallowed_realm_hosts = [\"{realm_host}\"]\n");
    let config = config_text(&emu, &socket, "", "source = \"ecs-ram-role\"", &extra);
    let daemon = spawn_daemon(dir.path(), &config).await;
    let mut answers = Vec::new();
    let post = |body: Value| {
        let socket = socket.clone();
        async move { request_on(&socket, "POST", "/v1/credentials", Some(body)).await }
    };

    // Node identity, default domain (the docker-helper route).
    let (s, v, _) = request_on(&socket, "GET", &format!("/v1/credentials/{DEMO_HOST}"), None).await;
    assert_eq!(s, 200, "{v}");
    answers.push(v);
    // Custom domain, Personal Edition, node -> service role -> user role (cross-account).
    for body in [
        json!({"registry": "registry.demo.example.com", "annotations": {INSTANCE_IDS: DEMO}}),
        json!({"registry": PERSONAL_HOST}),
        json!({"registry": PARTNER_HOST, "annotations": {SERVICE_ARNS: SERVICE_ROLE, USER_ARNS: USER_ROLE}}),
    ] {
        let (s, v, _) = post(body.clone()).await;
        assert_eq!(s, 200, "{body}: {v}");
        answers.push(v);
    }
    // A failing request (the user role may not pull).
    let (s, v, _) =
        post(json!({"registry": PARTNER_HOST, "annotations": {SERVICE_ARNS: SERVICE_ROLE, USER_ARNS: NO_PULL_ROLE}}))
            .await;
    assert_eq!(s, 403, "{v}");
    // Service-account token mode.
    let token = emu.mint_service_account_token(
        PROVIDER,
        "system:serviceaccount:team-a:puller",
        "sts.aliyuncs.com",
        Duration::from_secs(600),
    );
    assert!(!token.is_empty());
    let (s, v, _) =
        post(json!({"registry": DEMO_HOST, "annotations": {SERVICE_ARNS: SA_ROLE}, "service_account_token": token}))
            .await;
    assert_eq!(s, 200, "{v}");
    answers.push(v);
    // A registry bearer token from an allow-listed realm.
    let challenge =
        format!(r#"Bearer realm="http://{realm_host}/auth",service="{DEMO_SERVICE}",scope="repository:ns/app:pull""#);
    let (s, v, _) =
        request_on(&socket, "POST", "/v1/token", Some(json!({"registry": DEMO_HOST, "challenge": challenge}))).await;
    assert_eq!(s, 200, "{v}");
    let bearer = v["token"].as_str().expect("token").to_owned();
    // The shims, too (their stderr is part of the logs).
    let (ok, helper_out, helper_err) = shim(HELPER, &["get"], &socket, DEMO_HOST).await;
    assert!(ok, "{helper_out}{helper_err}");
    let kubelet_req = json!({"kind": "CredentialProviderRequest", "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "image": format!("{DEMO_HOST}/ns/app"), "serviceAccountToken": token,
        "serviceAccountAnnotations": {SERVICE_ARNS: SA_ROLE}});
    let (ok, kubelet_out, kubelet_err) = shim(BROKER, &["kubelet-plugin"], &socket, &kubelet_req.to_string()).await;
    assert!(ok, "{kubelet_out}{kubelet_err}");

    let logs = daemon.stop().await;
    if std::env::var_os("ACR_TEST_SHOW_LOGS").is_some() {
        eprintln!("{logs}");
    }
    let mut secrets = emu.issued_secrets();
    assert!(secrets.len() >= 10, "the flow issued secrets: {}", secrets.len());
    for a in &answers {
        let pw = a["password"].as_str().expect("password").to_owned();
        assert!(secrets.contains(&pw), "every password served was issued by the emulator");
        secrets.push(pw);
    }
    assert!(secrets.contains(&bearer) && secrets.contains(&token));
    // The logs are real: trace level, the audit lines, the failure.
    assert!(logs.contains("TRACE"), "trace level was on:\n{logs:.2000}");
    assert!(logs.matches("credential served").count() >= 6, "{logs:.4000}");
    assert!(logs.contains("credential request refused"), "{logs:.4000}");
    let mut all_secrets = secrets.clone();
    all_secrets.push(LONG_TERM_SECRET.to_owned());
    assert_no_secret_in("daemon log (RUST_LOG=trace)", logs.as_bytes(), &all_secrets);
    assert_no_secret_in("docker helper stderr", helper_err.as_bytes(), &all_secrets);
    assert_no_secret_in("kubelet plugin stderr", kubelet_err.as_bytes(), &all_secrets);

    // Never on disk: the daemon's directory (state, cwd, TMPDIR) and files changed in /tmp.
    let mut files = Vec::new();
    recent_files(dir.path(), started, 6, &mut files);
    recent_files(Path::new("/tmp"), started, 3, &mut files);
    if let Some(t) = std::env::var_os("TMPDIR") {
        recent_files(Path::new(&t), started, 3, &mut files);
    }
    assert!(files.iter().any(|f| f.ends_with("config.toml")), "the scan saw the daemon's directory");
    for f in &files {
        if let Ok(bytes) = std::fs::read(f) {
            assert_no_secret_in(&f.display().to_string(), &bytes, &secrets);
        }
    }
    eprintln!("scanned {} log bytes and {} files for {} secrets", logs.len(), files.len(), secrets.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_long_term_key_never_reaches_the_log() {
    let emu = emulator(broker_world()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("broker.sock");
    let identity =
        format!("source = \"static\"\naccess_key_id = \"{LONG_TERM_AK}\"\naccess_key_secret = \"{LONG_TERM_SECRET}\"");
    let config = config_text(&emu, &socket, "", &identity, "");
    let daemon = spawn_daemon(dir.path(), &config).await;
    for host in [DEMO_HOST, PERSONAL_HOST] {
        let (s, v, _) = request_on(&socket, "GET", &format!("/v1/credentials/{host}"), None).await;
        assert_eq!(s, 200, "{host}: {v}");
    }
    let (s, v, _) = request_on(
        &socket,
        "POST",
        "/v1/credentials",
        Some(json!({"registry": DEMO_HOST, "annotations": {SERVICE_ARNS: SERVICE_ROLE}})),
    )
    .await;
    assert_ne!(s, 200, "the long-term user is not trusted by the service role: {v}");
    let logs = daemon.stop().await;
    assert!(logs.contains("TRACE") && logs.contains("credential served"), "{logs:.2000}");
    let mut secrets = emu.issued_secrets();
    secrets.push(LONG_TERM_SECRET.to_owned());
    assert_no_secret_in("daemon log with a static key (RUST_LOG=trace)", logs.as_bytes(), &secrets);
}

// === realm allow-list ===

/// A registry on loopback that challenges with a realm it controls and records every request.
struct Hostile {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

async fn hostile_registry() -> Hostile {
    use http_body_util::Full;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind hostile");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let carries = req.headers().contains_key("authorization");
                record.lock().expect("record").push((req.uri().to_string(), carries));
                let challenge =
                    format!(r#"Bearer realm="http://{addr}/token",service="hostile",scope="repository:x:pull""#);
                let resp = if req.uri().path().starts_with("/v2") {
                    hyper::Response::builder().status(401).header("www-authenticate", challenge)
                } else {
                    hyper::Response::builder().status(200).header("content-type", "application/json")
                }
                .body(Full::new(bytes::Bytes::from_static(br#"{"token":"stolen"}"#)))
                .expect("response");
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Hostile { addr, seen }
}

/// `GET http://addr/v2/` as an anonymous client: the `WWW-Authenticate` value.
async fn challenge_of(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect hostile");
    s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.lines()
        .find_map(|l| l.strip_prefix("www-authenticate: ").or_else(|| l.strip_prefix("WWW-Authenticate: ")))
        .expect("challenge header")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_realm_receives_no_credentials() {
    let hostile = hostile_registry().await;
    let emu = emulator(broker_world()).await;
    // The emulator's realm is allow-listed by host:port; the hostile registry shares its IP.
    let extra = format!("[registry_token]\nallowed_realm_hosts = [\"{}\"]\n", emu.addr());
    let h = start_in_process(emu, "", &extra).await;
    let challenge = challenge_of(hostile.addr).await;
    assert!(challenge.contains(&format!("http://{}/token", hostile.addr)), "{challenge}");
    let port = hostile.addr.port();
    let challenges = [
        challenge.clone(),
        format!(r#"Bearer realm="http://localhost:{port}/token",service="x""#),
        format!(r#"Bearer realm="HTTP://127.0.0.1:{port}/token",service="x""#),
        format!(r#"Bearer realm="http://dockerauth.cn-hangzhou.aliyuncs.com@127.0.0.1:{port}/token""#),
        format!(r#"Bearer realm="http://127.0.0.1:{port}/token?x=https://dockerauth.cn-hangzhou.aliyuncs.com/""#),
        format!(r#"Bearer realm="https://dockerauth.cn-hangzhou.aliyuncs.com:{port}/token""#),
        format!(r#"Bearer realm="https://dockerauth.cn-hangzhou.aliyuncs.com.127.0.0.1.nip.io:{port}/token""#),
        format!(r#"Basic realm="x", Bearer realm="http://127.0.0.1:{port}/token""#),
        format!(r#"Bearer realm="http://127.0.0.1:{port}/token", Bearer realm="http://{}/auth""#, h.emulator.addr()),
    ];
    for registry in [DEMO_HOST.to_owned(), hostile.addr.to_string()] {
        for c in &challenges {
            let (s, v, _) = h
                .request(
                    "POST",
                    "/v1/token",
                    Some(json!({"registry": registry, "challenge": c, "annotations": {INSTANCE_IDS: DEMO}})),
                )
                .await;
            assert_eq!(s, 400, "{registry} {c}: {v}");
            let code = v["error"]["code"].as_str().unwrap_or_default();
            assert!(code == "realm_not_allowed" || code == "invalid_challenge", "{c}: {v}");
            assert!(v.get("token").is_none());
        }
    }
    // A Basic challenge is answered by the caller itself, never by sending the credential anywhere.
    let (s, v, _) =
        h.request("POST", "/v1/token", Some(json!({"registry": DEMO_HOST, "challenge": "Basic realm=\"evil\""}))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("basic_challenge")), "{v}");
    // The allow-listed realm does work (so the refusals above are the allow-list, not a broken route).
    let ok = format!(
        r#"Bearer realm="http://{}/auth",service="{DEMO_SERVICE}",scope="repository:ns/app:pull""#,
        h.emulator.addr()
    );
    let (s, v, _) = h.request("POST", "/v1/token", Some(json!({"registry": DEMO_HOST, "challenge": ok}))).await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = hostile.seen.lock().expect("record").clone();
    assert_eq!(seen.len(), 1, "the hostile registry saw only our anonymous probe: {seen:?}");
    assert!(!seen.iter().any(|(_, auth)| *auth), "no request carried credentials: {seen:?}");
    h.stop().await;
}

// === TLS upstream ===

#[test]
fn upstream_tls_is_required_except_for_loopback() {
    let cfg = |aliyun: &str| Config::from_toml(&format!("[aliyun]\nregion = \"cn-hangzhou\"\n{aliyun}"), "<test>");
    for (key, bad) in [
        ("sts_endpoint", "http://sts.aliyuncs.com"),
        ("sts_endpoint", "http://sts.cn-hangzhou.aliyuncs.com:80"),
        ("cr_endpoint", "http://cr.{region}.aliyuncs.com"),
        ("sts_endpoint", "http://127.0.0.1.nip.io"),
        ("sts_endpoint", "http://localhost@evil.com"),
        ("metadata_endpoint", "http://169.254.169.254"),
        ("sts_endpoint", "ftp://sts.aliyuncs.com"),
    ] {
        let e = cfg(&format!("{key} = \"{bad}\"")).expect_err(bad);
        assert!(e.to_string().contains(key), "{bad}: {e}");
    }
    for good in [
        "sts_endpoint = \"https://sts.aliyuncs.com\"",
        "sts_endpoint = \"http://127.0.0.1:8080\"",
        "cr_endpoint = \"http://[::1]:9000/region/{region}\"",
        "metadata_endpoint = \"http://100.100.100.200\"",
    ] {
        cfg(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    use acr_broker::aliyun::{Client, Endpoints, Timeouts};
    let client = |e: Endpoints| Client::new(e, Timeouts::default(), acr_broker::clock::system());
    assert!(client(Endpoints { sts: "http://sts.aliyuncs.com".into(), ..Endpoints::default() }).is_err());
    assert!(client(Endpoints { cr: "http://cr.{region}.aliyuncs.com".into(), ..Endpoints::default() }).is_err());
    assert!(client(Endpoints {
        sts: "http://127.0.0.1:1".into(),
        cr: "http://127.0.0.1:1/{region}".into(),
        ..Endpoints::default()
    })
    .is_ok());
    assert!(client(Endpoints::default()).is_ok());
}

// === service-account isolation ===

/// The broker world with the SA role narrowed to `team-a` (and also trusting the node role, so a
/// fallback to the node identity would succeed and be seen), and a second SA role for `team-b`
/// that may pull only from the decoy instance.
fn two_service_accounts_world() -> World {
    let base = include_str!("worlds/broker.toml");
    let narrowed = base.replace(
        r#"subjects = ["system:serviceaccount:*"] }] }"#,
        r#"subjects = ["system:serviceaccount:team-a:*"] }], ram = ["acs:ram::1111111111111111:role/node-role"] }"#,
    );
    assert_ne!(narrowed, base, "tests/worlds/broker.toml changed: update this test's world");
    let text = format!(
        r#"{narrowed}
[[policies]]
account = "1111111111111111"
name = "pull-decoy-only"
statements = [{{ actions = ["cr:GetAuthorizationToken", "cr:ListInstance", "cr:ListInstanceEndpoint", "cr:PullRepository"], resources = ["acs:cr:*:1111111111111111:instance/{DECOY}", "acs:cr:*:1111111111111111:repository/{DECOY}/*"] }}]

[[roles]]
arn = "{SA_DECOY_ROLE}"
max_session_duration = 3600
policies = ["pull-decoy-only"]
trust = {{ oidc = [{{ provider_arn = "{PROVIDER}", audiences = ["sts.aliyuncs.com"], subjects = ["system:serviceaccount:team-b:*"] }}] }}
"#
    );
    World::from_toml(&text).unwrap_or_else(|e| panic!("world: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_for_one_service_account_is_never_served_to_another() {
    let h = start_in_process(emulator(two_service_accounts_world()).await, "", "").await;
    let ttl = Duration::from_secs(600);
    let team_a =
        h.emulator.mint_service_account_token(PROVIDER, "system:serviceaccount:team-a:puller", "sts.aliyuncs.com", ttl);
    let team_b =
        h.emulator.mint_service_account_token(PROVIDER, "system:serviceaccount:team-b:puller", "sts.aliyuncs.com", ttl);
    assert!(!team_a.is_empty() && !team_b.is_empty());
    let custom = |token: &str, role: &str| json!({"registry": "registry.demo.example.com", "annotations": {INSTANCE_IDS: DEMO, SERVICE_ARNS: role}, "service_account_token": token});

    // The node's own credential for the demo instance is cached first.
    let (s, node) = h.credentials("registry.demo.example.com", &[(INSTANCE_IDS, DEMO)]).await;
    assert_eq!(s, 200, "{node}");
    let node_pw = node["password"].as_str().expect("password").to_owned();
    assert!(password_principal(&node_pw).starts_with("role:1111111111111111:node-role:"));

    // Team A gets its own credential, issued to its own role session.
    let (s, a) = post_credentials(&h, custom(&team_a, SA_ROLE)).await;
    assert_eq!(s, 200, "{a}");
    let a_pw = a["password"].as_str().expect("password").to_owned();
    assert_ne!(a_pw, node_pw, "the node's cached credential is not served to a service account");
    assert!(
        password_principal(&a_pw).starts_with("role:1111111111111111:sa-acr-reader:"),
        "{}",
        password_principal(&a_pw)
    );
    let (s, again) = post_credentials(&h, custom(&team_a, SA_ROLE)).await;
    assert_eq!((s, again["password"].as_str()), (200, Some(a_pw.as_str())), "team A's credential is cached");

    // Team B, with A's credential cached for the same host and instance: with its own role it
    // may not pull from demo (403); claiming A's role is refused by the role's trust (403).
    let before = h.emulator.counters();
    for role in [SA_DECOY_ROLE, SA_ROLE] {
        let (s, v) = post_credentials(&h, custom(&team_b, role)).await;
        assert_eq!(s, 403, "team B with {role}: {v}");
        assert!(v.get("password").is_none(), "{v}");
        assert!(!v.to_string().contains(&a_pw));
    }
    let after = h.emulator.counters();
    assert!(
        after.get("AssumeRoleWithOIDC") > before.get("AssumeRoleWithOIDC"),
        "team B's token was exchanged, not skipped: {after:?}"
    );

    // Team B's own instance works and yields a different credential from its own session.
    let (s, b) = post_credentials(
        &h,
        json!({"registry": DECOY_HOST, "annotations": {SERVICE_ARNS: SA_DECOY_ROLE}, "service_account_token": team_b}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let b_pw = b["password"].as_str().expect("password").to_owned();
    assert!(
        password_principal(&b_pw).starts_with("role:1111111111111111:sa-decoy-reader:"),
        "{}",
        password_principal(&b_pw)
    );
    assert_ne!(b_pw, a_pw);
    // And team A cannot reach the decoy through its cache or role.
    let (s, v) = post_credentials(
        &h,
        json!({"registry": DECOY_HOST, "annotations": {SERVICE_ARNS: SA_DECOY_ROLE}, "service_account_token": team_a}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_service_account_token_gets_nothing_never_the_node_identity() {
    let h = start_in_process(emulator(two_service_accounts_world()).await, "", "").await;
    // The node identity can serve this host, and has it cached.
    let (s, v) = h.credentials(DEMO_HOST, &[]).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = h.credentials(DEMO_HOST, &[(SERVICE_ARNS, SA_ROLE)]).await;
    assert_eq!(s, 200, "the node may assume the SA role itself: {v}");
    let ttl = Duration::from_secs(600);
    let e = &h.emulator;
    let tokens = [
        ("garbage", "not-a-jwt".to_owned()),
        ("three dots", "a.b.c".to_owned()),
        ("wrong audience", e.mint_service_account_token(PROVIDER, "system:serviceaccount:team-a:x", "not-sts", ttl)),
        (
            "untrusted subject",
            e.mint_service_account_token(PROVIDER, "system:serviceaccount:team-c:x", "sts.aliyuncs.com", ttl),
        ),
        ("tampered signature", {
            // Change a full 6-bit character inside the signature (the last one carries padding bits).
            let t = e.mint_service_account_token(PROVIDER, "system:serviceaccount:team-a:x", "sts.aliyuncs.com", ttl);
            let at = t.rfind('.').expect("JWT") + 6;
            let swapped = if &t[at..=at] == "A" { "B" } else { "A" };
            format!("{}{swapped}{}", &t[..at], &t[at + 1..])
        }),
        ("forged payload", {
            let t = e.mint_service_account_token(PROVIDER, "system:serviceaccount:team-a:x", "sts.aliyuncs.com", ttl);
            let parts: Vec<&str> = t.split('.').collect();
            let payload = data_encoding::BASE64URL_NOPAD.decode(parts[1].as_bytes()).expect("payload");
            let payload = String::from_utf8(payload).expect("utf8").replace("team-a:x", "team-a:y");
            let payload = data_encoding::BASE64URL_NOPAD.encode(payload.as_bytes());
            format!("{}.{payload}.{}", parts[0], parts[2])
        }),
        ("empty", String::new()),
    ];
    let before = e.counters();
    for (name, token) in &tokens {
        let (s, v) = post_credentials(
            &h,
            json!({"registry": DEMO_HOST, "annotations": {SERVICE_ARNS: SA_ROLE}, "service_account_token": token}),
        )
        .await;
        assert_ne!(s, 200, "{name}: a refused token got a credential: {v}");
        assert!(matches!(s, 400 | 401 | 403), "{name}: {s} {v}");
        assert!(v.get("password").is_none());
    }
    let after = e.counters();
    for action in ["AssumeRole", "GetAuthorizationToken"] {
        assert_eq!(after.get(action), before.get(action), "{action}: no fallback to the node identity: {after:?}");
    }
    h.stop().await;
}

// === audit log integrity ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_forge_audit_lines_through_the_registry_field() {
    let logs = captured_logs();
    let h = start_in_process(emulator(broker_world()).await, "", "").await;
    let marker = "FORGED-7f3a9c";
    let forged = format!("evil.example\n2030-01-01T00:00:00Z  INFO audit: credential served uid=0 registry={marker}");
    let (s, v, _) = h.request("POST", "/v1/credentials", Some(json!({"registry": forged}))).await;
    assert_eq!(s, 400, "{v}");
    let enc: String = form_urlencoded::byte_serialize(format!("x\r\n{marker}-get").as_bytes()).collect();
    let (s, v, _) = h.request("GET", &format!("/v1/credentials/{enc}"), None).await;
    assert_eq!(s, 400, "{v}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = logs_text(&logs);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(marker)).collect();
    assert!(lines.len() >= 2, "the refusals were audited: {lines:?}");
    for line in lines {
        assert!(line.contains("credential request refused"), "a caller-controlled line reached the log: {line:?}");
    }
    h.stop().await;
}
