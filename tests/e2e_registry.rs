//! End-to-end proof with a real Debian `docker-registry` 2.8 and `skopeo` 1.9: the registry trusts
//! the emulator's token realm, skopeo pulls through `docker-credential-acr-broker` (and through
//! credentials from `acr-broker kubelet-plugin`), and the daemon's `/v1/token` answers a real
//! registry challenge but refuses a realm it does not trust.
//!
//! Skipped (loudly) only when /usr/bin/docker-registry or /usr/bin/skopeo is missing.
//! Run: `cargo test --test e2e_registry -- --nocapture` (prints phase timings).

mod e2e;
mod support;

use std::time::{Duration, Instant};

use e2e::oci::sha256_digest;
use e2e::registry::Registry;
use e2e::{bounded, defaults, demo_ref, partner_ref, phase, tools_present, Setup, REPO, TAG};
use serde_json::{json, Value};
use support::{Harness, DECOY, DEMO, INSTANCE_IDS, NO_PULL_ROLE, SERVICE_ARNS, SERVICE_ROLE, USER_ROLE};

const KUBELET_API: &str = "credentialprovider.kubelet.k8s.io/v1";
const OIDC_PROVIDER: &str = "acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev";
const SA_ROLE: &str = "acs:ram::1111111111111111:role/sa-acr-reader";

/// `skopeo inspect` through the helper named in `--authfile`; returns the run.
async fn inspect_with_authfile(
    s: &Setup,
    h: &Harness,
    registry: &Registry,
    authfile: &std::path::Path,
) -> e2e::skopeo::Run {
    let image = Setup::image_ref(registry);
    let args = ["inspect", "--tls-verify=false", "--authfile", authfile.to_str().expect("utf8"), &image];
    s.client.skopeo(&h.socket, &args).await
}

/// Asserts a successful `skopeo inspect` printed the pushed manifest's digest.
fn assert_inspected(run: &e2e::skopeo::Run, s: &Setup, registry: &Registry) {
    assert!(run.ok(), "skopeo inspect failed:\n{}\nregistry log:\n{}", run.show(), registry.log());
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("inspect output is not JSON ({e}):\n{}", run.stdout));
    assert_eq!(v["Digest"], json!(s.image.manifest_digest), "inspect printed another digest: {v}");
    assert_eq!(v["Name"], json!(format!("{}/{REPO}", registry.host)), "{v}");
    assert_eq!(v["Layers"], json!([s.image.layer_digest]), "{v}");
}

/// `skopeo copy docker://… oci:DIR:1.0` through the helper, then checks the copied layout.
async fn copy_and_check(s: &Setup, h: &Harness, registry: &Registry, authfile: &std::path::Path, name: &str) {
    let dir = s.scratch(name);
    let (src, dst) = (Setup::image_ref(registry), format!("oci:{}:{TAG}", dir.display()));
    let args = [
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--authfile",
        authfile.to_str().expect("utf8"),
        &src,
        &dst,
    ];
    let run = s.client.skopeo(&h.socket, &args).await;
    assert!(run.ok(), "skopeo copy failed:\n{}\nregistry log:\n{}", run.show(), registry.log());
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("copied index.json")).expect("index json");
    assert_eq!(index["manifests"][0]["digest"], json!(s.image.manifest_digest), "{index}");
    for digest in [&s.image.manifest_digest, &s.image.layer_digest, &s.image.config_digest] {
        let blob = std::fs::read(dir.join("blobs/sha256").join(&digest["sha256:".len()..])).expect("copied blob");
        assert_eq!(&sha256_digest(&blob), digest, "copied blob content does not match its digest");
    }
}

/// The value of `acr_broker_requests_total{surface=…,outcome=…}` (0 when absent).
async fn requests_total(h: &Harness, surface: &str, outcome: &str) -> f64 {
    let text = bounded("GET /metrics", h.metrics_text()).await;
    text.lines()
        .filter(|l| l.starts_with("acr_broker_requests_total{"))
        .filter(|l| l.contains(&format!("surface=\"{surface}\"")) && l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Scenarios 1, 4 and the first half of 3: same-account pull through the docker helper, no pull
/// without the credHelpers entry, and "not found" (anonymous → registry auth error) when the
/// instance is not listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_helper_same_account_pull() {
    const T: &str = "same-account";
    if !tools_present(T) {
        return;
    }
    let t0 = Instant::now();
    let mut s = Setup::start(false).await;
    phase(T, "emulator + registry + push", t0);
    let host = s.demo.host.clone();
    let authfile = s.client.helper_auth_file(&host);

    // 1. Same account: the node role pulls from DEMO, which owns 127.0.0.1:PORT as a USER domain.
    let t = Instant::now();
    let h = s.daemon(&defaults(&[&demo_ref()], &[], &[])).await;
    let run = inspect_with_authfile(&s, &h, &s.demo, &authfile).await;
    assert_inspected(&run, &s, &s.demo);
    // The same through $HOME/.docker/config.json, no --authfile (the docker-config location).
    s.client.docker_config(&json!({"credHelpers": {host.as_str(): "acr-broker"}}));
    let image = Setup::image_ref(&s.demo);
    let run = s.client.skopeo(&h.socket, &["inspect", "--tls-verify=false", &image]).await;
    assert_inspected(&run, &s, &s.demo);
    copy_and_check(&s, &h, &s.demo, &authfile, "pulled-same-account").await;
    let helper_ok = requests_total(&h, "helper", "ok").await;
    assert!(helper_ok >= 3.0, "the daemon served only {helper_ok} helper requests (2 inspects + 1 copy)");
    assert!(h.emulator.count("GetAuthorizationToken") >= 1, "{:?}", h.emulator.counters());
    phase(T, "1. same-account inspect x2 + copy", t);

    // 4. Without the credHelpers entry the same pull fails, and the helper is never asked.
    let t = Instant::now();
    std::fs::remove_file(s.client.home.join(".docker/config.json")).expect("remove docker config");
    let empty = s.client.auth_file("auth-empty.json", &json!({}));
    let run = inspect_with_authfile(&s, &h, &s.demo, &empty).await;
    assert!(!run.ok(), "pull without the credHelpers entry must fail:\n{}", run.show());
    assert!(run.stderr.contains("unauthorized") || run.stderr.contains("authentication required"), "{}", run.show());
    let after = requests_total(&h, "helper", "ok").await + requests_total(&h, "helper", "not_found").await;
    assert_eq!(after, helper_ok, "the helper was consulted although no credHelpers entry names the registry");
    phase(T, "4. no credHelpers entry -> refused", t);
    s.stop(h).await;

    // 3a. DEMO not listed in acr_instance_ids (only DECOY, which does not own the host): the helper
    // answers "credentials not found", skopeo goes anonymous and the registry refuses.
    let t = Instant::now();
    let h = s.daemon(&defaults(&[DECOY], &[], &[])).await;
    h.emulator.reset_counters();
    let run = inspect_with_authfile(&s, &h, &s.demo, &authfile).await;
    assert!(!run.ok(), "pull with the instance not listed must fail:\n{}", run.show());
    assert!(
        !run.stderr.contains("error getting credentials"),
        "the helper should answer 'credentials not found', not an error:\n{}",
        run.show()
    );
    assert!(run.stderr.contains("unauthorized") || run.stderr.contains("authentication required"), "{}", run.show());
    assert!(requests_total(&h, "helper", "not_found").await >= 1.0, "the daemon never answered not_found");
    // DECOY's credential may be fetched while its ownership is checked (the two calls overlap on
    // a cold cache); it is cached under DECOY, where it is valid, and never handed out for a
    // host DECOY does not own. At most one such call per instance and credential lifetime.
    assert!(h.emulator.count("GetAuthorizationToken") <= 1, "{:?}", h.emulator.counters());
    phase(T, "3a. instance not listed -> not found -> anonymous -> refused", t);
    s.stop(h).await;
    phase(T, "total", t0);
}

/// Scenarios 2 and the second half of 3: cross-account pull node → service role (A) → user
/// role (B) through the helper; a user role without pull permission fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_helper_cross_account_pull() {
    const T: &str = "cross-account";
    if !tools_present(T) {
        return;
    }
    let t0 = Instant::now();
    let mut s = Setup::start(true).await;
    phase(T, "emulator + 2 registries + 2 pushes", t0);
    let partner = s.partner.take().expect("partner registry");
    let authfile = s.client.helper_auth_file(&partner.host);

    let t = Instant::now();
    let h = s.daemon(&defaults(&[&partner_ref()], &[SERVICE_ROLE], &[USER_ROLE])).await;
    h.emulator.reset_counters();
    let run = inspect_with_authfile(&s, &h, &partner, &authfile).await;
    assert_inspected(&run, &s, &partner);
    copy_and_check(&s, &h, &partner, &authfile, "pulled-cross-account").await;
    let counters = h.emulator.counters();
    assert!(h.emulator.count("AssumeRole") >= 2, "expected node -> service role -> user role: {counters:?}");
    assert!(h.emulator.count("GetAuthorizationToken") >= 1, "{counters:?}");
    // The credential was issued for PARTNER only: the DEMO registry (another token service) refuses it.
    let (status, answer) = bounded("POST /v1/credentials", h.credentials(&partner.host, &[])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["instance_id"], json!(support::PARTNER), "{answer}");
    let creds = format!(
        "{}:{}",
        answer["username"].as_str().expect("username"),
        answer["password"].as_str().expect("password")
    );
    let empty = s.client.auth_file("auth-empty.json", &json!({}));
    let demo_image = Setup::image_ref(&s.demo);
    let args =
        ["inspect", "--tls-verify=false", "--authfile", empty.to_str().expect("utf8"), "--creds", &creds, &demo_image];
    let run = s.client.skopeo(&h.socket, &args).await;
    assert!(!run.ok(), "a PARTNER credential must not open the DEMO registry:\n{}", run.show());
    phase(T, "2. cross-account inspect + copy", t);
    s.stop(h).await;

    // 3b. A user role without pull permission: the pull fails and the daemon's reason reaches skopeo.
    let t = Instant::now();
    let h = s.daemon(&defaults(&[&partner_ref()], &[SERVICE_ROLE], &[NO_PULL_ROLE])).await;
    let run = inspect_with_authfile(&s, &h, &partner, &authfile).await;
    assert!(!run.ok(), "pull with a role lacking permission must fail:\n{}", run.show());
    assert!(run.stderr.contains("NoPermission"), "the daemon's reason is not in skopeo's stderr:\n{}", run.show());
    assert!(run.stderr.contains("acr-broker"), "{}", run.show());
    phase(T, "3b. user role without pull -> NoPermission visible", t);
    s.stop(h).await;
    drop(partner);
    phase(T, "total", t0);
}

/// Runs `acr-broker kubelet-plugin` with `request` on stdin.
async fn kubelet_plugin(s: &Setup, h: &Harness, request: &Value) -> e2e::skopeo::Run {
    let bin = env!("CARGO_BIN_EXE_acr-broker");
    let run = s.client.run(bin, &["kubelet-plugin"], &h.socket, request.to_string().as_bytes()).await;
    eprintln!("[e2e] acr-broker kubelet-plugin -> exit {} in {:?}", run.code, run.took);
    if !run.ok() {
        eprintln!("[e2e]   stderr: {}", run.stderr.trim());
    }
    run
}

/// Checks a plugin response and returns `user:pass` for the registry.
fn plugin_creds(run: &e2e::skopeo::Run, host: &str) -> String {
    assert!(run.ok(), "kubelet plugin failed:\n{}", run.show());
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("plugin output is not JSON ({e}):\n{}", run.stdout));
    assert_eq!(v["kind"], json!("CredentialProviderResponse"), "{v}");
    assert_eq!(v["apiVersion"], json!(KUBELET_API), "{v}");
    assert_eq!(v["cacheKeyType"], json!("Registry"), "{v}");
    let duration = v["cacheDuration"].as_str().expect("cacheDuration");
    assert!(
        duration.ends_with('s') && duration.starts_with(|c: char| c.is_ascii_digit() && c != '0'),
        "cacheDuration {duration:?} is not a positive Go duration"
    );
    let auth = v["auth"].as_object().expect("auth map");
    assert_eq!(auth.keys().collect::<Vec<_>>(), vec![host], "auth must be keyed by the registry host: {v}");
    let (user, pass) =
        (auth[host]["username"].as_str().expect("username"), auth[host]["password"].as_str().expect("password"));
    assert!(!user.is_empty() && !pass.is_empty());
    format!("{user}:{pass}")
}

/// Scenario 5: the kubelet plugin's credentials open the registry, with the node defaults and
/// with a pod service-account token exchanged through AssumeRoleWithOIDC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_plugin_credentials_pull() {
    const T: &str = "kubelet-plugin";
    if !tools_present(T) {
        return;
    }
    let t0 = Instant::now();
    let mut s = Setup::start(false).await;
    phase(T, "emulator + registry + push", t0);
    let host = s.demo.host.clone();
    let image = Setup::image_ref(&s.demo);
    let empty = s.client.auth_file("auth-empty.json", &json!({}));
    let empty = empty.to_str().expect("utf8").to_owned();

    let t = Instant::now();
    let h = s.daemon(&defaults(&[&demo_ref()], &[], &[])).await;
    let request =
        json!({"kind": "CredentialProviderRequest", "apiVersion": KUBELET_API, "image": format!("{host}/{REPO}")});
    let creds = plugin_creds(&kubelet_plugin(&s, &h, &request).await, &host);
    let args = ["inspect", "--tls-verify=false", "--authfile", &empty, "--creds", &creds, &image];
    assert_inspected(&s.client.skopeo(&h.socket, &args).await, &s, &s.demo);
    phase(T, "5a. node defaults -> plugin creds -> inspect", t);
    s.stop(h).await;

    // Service-account mode: no node defaults at all, so only the token and its annotations can work.
    let t = Instant::now();
    let h = s.daemon("").await;
    h.emulator.reset_counters();
    let token = h.emulator.mint_service_account_token(
        OIDC_PROVIDER,
        "system:serviceaccount:default:puller",
        "sts.aliyuncs.com",
        Duration::from_secs(600),
    );
    assert!(!token.is_empty(), "emulator minted no service-account token");
    let sa_request = |token: &str| {
        json!({
            "kind": "CredentialProviderRequest",
            "apiVersion": KUBELET_API,
            "image": format!("{host}/{REPO}"),
            "serviceAccountToken": token,
            "serviceAccountAnnotations": {SERVICE_ARNS: SA_ROLE, INSTANCE_IDS: DEMO},
        })
    };
    let creds = plugin_creds(&kubelet_plugin(&s, &h, &sa_request(&token)).await, &host);
    assert!(h.emulator.count("AssumeRoleWithOIDC") >= 1, "{:?}", h.emulator.counters());
    let args = ["inspect", "--tls-verify=false", "--authfile", &empty, "--creds", &creds, &image];
    assert_inspected(&s.client.skopeo(&h.socket, &args).await, &s, &s.demo);
    // A token the trust policy refuses (wrong audience) yields no credential: no node fallback.
    let bad = h.emulator.mint_service_account_token(
        OIDC_PROVIDER,
        "system:serviceaccount:default:puller",
        "not-sts",
        Duration::from_secs(600),
    );
    let run = kubelet_plugin(&s, &h, &sa_request(&bad)).await;
    assert!(
        !run.ok() && !run.stdout.contains("password"),
        "a refused token must not yield credentials:\n{}",
        run.show()
    );
    assert!(run.stderr.contains("AssumeRoleWithOIDC"), "the refusal should name the exchange:\n{}", run.show());
    phase(T, "5b. service-account token -> AssumeRoleWithOIDC -> inspect", t);
    s.stop(h).await;
    phase(T, "total", t0);
}

/// Scenarios 6 and 7: `/v1/token` answers the registry's real challenge with a token the registry
/// accepts, and refuses a realm that is not allow-listed without ever contacting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_real_challenge_and_hostile_realm() {
    const T: &str = "token";
    if !tools_present(T) {
        return;
    }
    let t0 = Instant::now();
    let mut s = Setup::start(false).await;
    phase(T, "emulator + registry + push", t0);
    let host = s.demo.host.clone();
    let h = s.daemon(&defaults(&[&demo_ref()], &[], &[])).await;
    let path = format!("/v2/{REPO}/manifests/{TAG}");
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    let t = Instant::now();
    let anon = e2e::http::get(&host, &path, &[("accept", OCI_MANIFEST)]).await.expect("GET manifest");
    assert_eq!(anon.status, 401, "{}", String::from_utf8_lossy(&anon.body));
    let challenge = anon.header("www-authenticate");
    assert!(challenge.contains(&format!("scope=\"repository:{REPO}:pull\"")), "{challenge}");
    let (status, v, _) = bounded(
        "POST /v1/token",
        h.request("POST", "/v1/token", Some(json!({"registry": host, "challenge": challenge}))),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let token = v["token"].as_str().expect("token");
    assert!(v["expires_in"].as_u64().is_some_and(|n| n >= 60), "{v}");
    let issued = v["issued_at"].as_str().expect("issued_at");
    assert!(acr_broker::clock::parse_rfc3339(issued).is_some(), "issued_at {issued:?} is not RFC 3339");
    let bearer = format!("Bearer {token}");
    let got = e2e::http::get(&host, &path, &[("authorization", &bearer), ("accept", OCI_MANIFEST)]).await.expect("GET");
    assert_eq!(got.status, 200, "{}\nregistry log:\n{}", String::from_utf8_lossy(&got.body), s.demo.log());
    assert_eq!(sha256_digest(&got.body), s.image.manifest_digest);
    assert_eq!(got.header("docker-content-digest"), s.image.manifest_digest);
    phase(T, "6. /v1/token with the real challenge -> manifest 200", t);

    // 7. A challenge naming a realm that is not allow-listed: refused, and the realm sees nothing.
    let t = Instant::now();
    let hostile = e2e::http::RecordingServer::start().await;
    let evil = format!("Bearer realm=\"http://{}/auth\",service=\"x\"", hostile.addr);
    let (status, v, _) =
        bounded("POST /v1/token", h.request("POST", "/v1/token", Some(json!({"registry": host, "challenge": evil}))))
            .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], json!("realm_not_allowed"), "{v}");
    // Same host as the allowed realm (127.0.0.1), other port: still refused.
    let evil_scoped = format!(
        "Bearer realm=\"http://{}/auth\",service=\"{}\",scope=\"repository:{REPO}:pull\"",
        hostile.addr,
        e2e::DEMO_SERVICE
    );
    let (status, v, _) = bounded(
        "POST /v1/token",
        h.request("POST", "/v1/token", Some(json!({"registry": host, "challenge": evil_scoped}))),
    )
    .await;
    assert_eq!((status, v["error"]["code"].clone()), (400, json!("realm_not_allowed")), "{v}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (connections, requests) = hostile.seen();
    assert_eq!((connections, requests.len()), (0, 0), "the hostile realm was contacted: {requests:?}");
    // And the registry does not take a token the realm did not sign.
    let forged = e2e::http::get(&host, &path, &[("authorization", "Bearer stolen"), ("accept", OCI_MANIFEST)])
        .await
        .expect("GET");
    assert_eq!(forged.status, 401);
    phase(T, "7. hostile realm refused, never contacted", t);
    s.stop(h).await;
    phase(T, "total", t0);
}
