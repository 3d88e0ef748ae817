//! Defects an independent review of the request path found, each pinned by a test that fails on
//! the code before its fix: key rotation, domain-ownership lifetimes, the ACR rate budget,
//! credentials a registry refuses, and the watchdog's health probe.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use acr_broker::clock::Clock;
use acr_emulator::{Emulator, Knobs, World};
use serde_json::json;
use support::*;

const DEMO_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";
const NORTH_HOST: &str = "north-registry.cn-beijing.cr.aliyuncs.com";
const OLD_KEY: (&str, &str) = ("LTAI5tDEVACCESSKEY0000001", "DevSecret0123456789abcdefghijk");
const NEW_KEY: (&str, &str) = ("LTAI5tROTATEDKEY000000002", "RotatedSecret0123456789abcdefg");
const DEMO_SERVICE: &str = "registry.aliyuncs.com:cn-hangzhou:china:cri-devaaaaaaaaaaaa01";

/// The broker world plus a second access key for the node's account (the key rotated to).
fn rotation_world() -> World {
    let mut text = include_str!("worlds/broker.toml").to_owned();
    text.push_str(&format!(
        "\n[[users]]\naccount = \"1111111111111111\"\nname = \"dev-admin-rotated\"\n\
         access_key_id = \"{}\"\naccess_key_secret = \"{}\"\npolicies = [\"assume-roles\", \"pull-demo\"]\n",
        NEW_KEY.0, NEW_KEY.1
    ));
    World::from_toml(&text).expect("rotation world")
}

fn write_profile(path: &std::path::Path, (id, secret): (&str, &str)) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("[default]\ntype = access_key\naccess_key_id = {id}\naccess_key_secret = {secret}\n"))
        .expect("write credentials");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("replace credentials");
}

async fn start_with_profile(
    emu: Emulator,
    profile: &std::path::Path,
    clock: acr_broker::clock::SharedClock,
) -> Harness {
    let identity = format!("source = \"profile\"\nprofile_file = \"{}\"", profile.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("broker.sock");
    let config = config_from(&emu, &socket, &ConfigParts { identity: &identity, ..ConfigParts::default() });
    let daemon = acr_broker::daemon::Daemon::start(config, clock).await.expect("daemon starts");
    Harness { emulator: emu, daemon: Some(daemon), socket, dir }
}

/// Before the fix, a profile key was cached for a century: after a rotation that disabled the
/// old key, every new load failed with `InvalidAccessKeyId.*` until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_profile_key_is_read_again_on_an_authentication_failure() {
    let keys = tempfile::tempdir().expect("tempdir");
    let profile = keys.path().join("credentials");
    write_profile(&profile, OLD_KEY);
    let emu = Emulator::start(rotation_world(), "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
    let h = start_with_profile(emu, &profile, acr_broker::clock::system()).await;
    let (s, v) = h.credentials(DEMO_HOST, &[]).await;
    assert_eq!(s, 200, "{v}");

    // Rotate: the file names the new key, and the old one is disabled upstream.
    write_profile(&profile, NEW_KEY);
    h.emulator.set_knobs(Knobs { disabled_access_keys: vec![OLD_KEY.0.to_owned()], ..Knobs::default() });
    // A key that needs a new load (another instance) is signed with the old key first, refused,
    // and answered with the re-read key — in the same request.
    let (s, v) = h.credentials(NORTH_HOST, &[]).await;
    assert_eq!(s, 200, "the rotated key must be picked up without a restart: {v}");
    // The warm credential keeps being served.
    let (s, v) = h.credentials(DEMO_HOST, &[]).await;
    assert_eq!(s, 200, "{v}");
    h.stop().await;
}

/// Before the fix, an identity without expiry was never fetched again; now it is read again on
/// the `[identity] reread_seconds` schedule, so a rotation is seen before the old key dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_without_expiry_is_read_again_on_schedule() {
    let keys = tempfile::tempdir().expect("tempdir");
    let profile = keys.path().join("credentials");
    write_profile(&profile, OLD_KEY);
    let clock = acr_broker::clock::ManualClock::new(acr_broker::clock::system().now());
    let c2 = clock.clone();
    let emu = Emulator::start_with_clock(
        rotation_world(),
        "127.0.0.1:0".parse().expect("addr"),
        std::sync::Arc::new(move || c2.now()),
    )
    .await
    .expect("emulator");
    let h = start_with_profile(emu, &profile, clock.clone()).await;
    let (s, v) = h.credentials(DEMO_HOST, &[]).await;
    assert_eq!(s, 200, "{v}");
    write_profile(&profile, NEW_KEY);
    // Past the default 300 s re-read interval the identity is read again on the next use.
    clock.advance(Duration::from_secs(301));
    let (s, v) = h.credentials(DEMO_HOST, &[]).await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Now disable the old key: a new load must already use the new one, with no refusal.
    h.emulator.set_knobs(Knobs { disabled_access_keys: vec![OLD_KEY.0.to_owned()], ..Knobs::default() });
    let before = h.emulator.count("ListInstance");
    let (s, v) = h.credentials(NORTH_HOST, &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.emulator.count("ListInstance"), before + 1, "one ListInstance, not a refused one and a retry");
    h.stop().await;
}

/// Before the fix, "this instance does not own that domain" was trusted for an hour, and so was
/// a "yes"; now a "no" lasts the negative TTL (30 s) and a "yes" the domain TTL (300 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_ownership_answers_are_looked_at_again_within_minutes() {
    let (h, clock) = on_manual_clock("").await;
    let listed = [(INSTANCE_IDS, DEMO)];
    let (s, v) = h.credentials("decoy.example.com", &listed).await;
    assert_eq!(s, 404, "demo does not own decoy.example.com: {v}");
    assert_eq!(h.emulator.count("ListInstanceEndpoint"), 1);
    clock.advance(Duration::from_secs(25));
    let (s, _) = h.credentials("decoy.example.com", &listed).await;
    assert_eq!(s, 404);
    assert_eq!(h.emulator.count("ListInstanceEndpoint"), 2, "a negative answer lives about the negative TTL");

    let (s, v) = h.credentials("registry.demo.example.com", &listed).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.emulator.count("ListInstanceEndpoint"), 3);
    // Within the domain TTL the "yes" is served from the cache; past its refresh point it is
    // checked again (in the background, while the still-valid answer is served).
    clock.advance(Duration::from_secs(60));
    assert_eq!(h.credentials("registry.demo.example.com", &listed).await.0, 200);
    assert_eq!(h.emulator.count("ListInstanceEndpoint"), 3);
    clock.advance(Duration::from_secs(200));
    assert_eq!(h.credentials("registry.demo.example.com", &listed).await.0, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.emulator.count("ListInstanceEndpoint") < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the ownership was never checked again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
}

/// Before the fix, ACR calls were bounded only by concurrency: made-up instance names drove
/// one ListInstance each, as fast as they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acr_calls_have_their_own_rate_budget() {
    let h = Harness::start(broker_world(), "[upstream]\nacr_rate_per_second = 2.0\nacr_burst = 2\n").await;
    wait_ready(&h, Duration::from_secs(10)).await;
    let socket = h.socket.clone();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let socket = socket.clone();
            tokio::spawn(async move {
                let host = format!("madeup{i}-registry.cn-hangzhou.cr.aliyuncs.com");
                request_on(&socket, "GET", &format!("/v1/credentials/{host}"), None).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = h.emulator.count("ListInstance");
    for t in &tasks {
        t.abort();
    }
    // 2 from the burst plus 2/s: about 5 in 1.5 s, never 20.
    assert!((2..=6).contains(&calls), "ListInstance calls in 1.5 s: {calls}");
    h.stop().await;
}

/// Before the fix, a credential the registry's realm refused kept being served until its usable
/// time ended; now it is dropped and fetched anew once, and the new one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_the_realm_refuses_is_dropped_and_fetched_again_once() {
    let emu = Emulator::start(broker_world(), "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
    let realm = emu.addr();
    let extra = format!("[registry_token]\nallowed_realm_hosts = [\"{realm}\"]\n");
    let h = Harness::with_emulator(emu, &extra, acr_broker::clock::system()).await;
    let challenge =
        format!(r#"Bearer realm="http://{realm}/auth",service="{DEMO_SERVICE}",scope="repository:ns/app:pull""#);
    let ask = || h.request("POST", "/v1/token", Some(json!({"registry": DEMO_HOST, "challenge": challenge})));
    let (s, v, _) = ask().await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 1);

    // Upstream revokes every password issued so far; the cached one still looks valid to us.
    let now_ms = acr_broker::clock::system().now().duration_since(std::time::UNIX_EPOCH).expect("epoch").as_millis();
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.emulator.set_knobs(Knobs { acr_revoked_before_ms: Some(now_ms as u64 + 1), ..Knobs::default() });
    let (s, v, _) = ask().await;
    assert_eq!(s, 200, "a refused credential is replaced in the same request: {v}");
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 2, "exactly one new credential");
    // The new credential is what /v1/credentials serves now.
    let (s, v) = h.credentials(DEMO_HOST, &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 2);

    // A realm that refuses everything gets one re-fetch per window, not one per request.
    h.emulator.set_knobs(Knobs { acr_revoked_before_ms: Some(u64::MAX), ..Knobs::default() });
    for _ in 0..5 {
        let (s, v, _) = ask().await;
        assert_eq!(s, 403, "{v}");
    }
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 2, "no re-fetch within the refusal window");
    h.stop().await;
}

/// Before the fix, the watchdog's health check was the constant `true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_probe_needs_a_real_answer() {
    use acr_broker::daemon::probe_health;
    let h = Harness::start(broker_world(), "").await;
    assert!(probe_health(&h.socket, Duration::from_secs(2)).await, "a serving daemon is healthy");
    // Something that accepts connections but never answers (a wedged request path) is not.
    let dir = tempfile::tempdir().expect("tempdir");
    let wedged = dir.path().join("wedged.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&wedged).expect("bind");
    assert!(!probe_health(&wedged, Duration::from_millis(300)).await, "no answer is not healthy");
    assert!(!probe_health(&dir.path().join("absent.sock"), Duration::from_millis(300)).await);
    h.stop().await;
}
