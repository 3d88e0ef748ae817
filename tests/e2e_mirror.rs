//! End-to-end proof of the registry mirror with a real containerd 1.6 (Debian), a real
//! `docker-registry` 2.8 with token auth whose realm is the emulator, and the daemon with
//! `[mirror]` on — all on loopback: `ctr images pull --hosts-dir` with no credentials given to
//! containerd, the same pull failing without the hosts file, a CRI `PullImage` with no auth (the
//! sandbox image's path), a multi-layer image, and refusals that reach neither the registry
//! nor the cloud. The scripted-registry cases (headers, redirects, mid-pull renewal) are in
//! `tests/mirror.rs`; throughput and memory with a 512 MiB layer in `benches/mirror.rs`.
//!
//! Skipped (loudly; a failure under CI) when docker-registry, skopeo, containerd or ctr is missing.
//! Run: `cargo test --test e2e_mirror -- --nocapture` (prints phase timings).

mod e2e;
mod support;

use std::path::Path;
use std::time::Instant;

use e2e::containerd::Containerd;
use e2e::{bounded, containerd_ready, defaults, demo_ref, phase, Setup, DEMO_SERVICE, REPO, TAG};
use support::{curl_as, setpriv_bin, Harness};

/// The tag of the multi-layer image.
const MULTI_TAG: &str = "multi";

/// Lines of the registry's access log (one per request it received).
fn registry_requests(s: &Setup) -> usize {
    s.demo
        .log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/") || l.contains("HTTP/1.1\""))
        .count()
}

/// `acr-broker containerd-hosts --dir DIR --mirror URL REGISTRY` (the real binary); its stdout.
fn containerd_hosts(dir: &Path, mirror: &str, registry: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_acr-broker"))
        .args(["containerd-hosts", "--dir"])
        .arg(dir)
        .args(["--mirror", mirror, registry])
        .output()
        .expect("run acr-broker containerd-hosts");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "containerd-hosts failed: {text}");
    text
}

async fn mirror_metric(h: &Harness, prefix: &str) -> f64 {
    let text = bounded("GET /metrics", h.metrics_text()).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_the_mirror_with_no_credentials_of_its_own() {
    const T: &str = "e2e-mirror";
    if !containerd_ready(T) {
        return;
    }
    let t0 = Instant::now();
    let mut s = Setup::start(false).await;
    // A multi-layer image too (uncompressed tar layers of 3 MiB, 1 MiB and 64 KiB).
    let multi = e2e::oci::build_layers(&s.scratch("oci-multi"), MULTI_TAG, &[3 << 20, 1 << 20, 64 << 10])
        .expect("build multi-layer layout");
    let multi_digest = s.push_layout(&s.demo, DEMO_SERVICE, &multi, MULTI_TAG).await;
    phase(T, "emulator + registry + push x2", t0);
    let registry = s.demo.host.clone();
    let mirror_table = format!("[mirror]\nlisten = \"127.0.0.1:0\"\nregistries = [\"{registry}\"]\n");
    let h = s.daemon_with(&defaults(&[&demo_ref()], &[], &[]), &mirror_table).await;
    let mirror = h.daemon().mirror_addr.expect("mirror listening");
    let mirror_url = format!("http://{mirror}");

    let hosts = s.scratch("certs.d");
    let wrote = containerd_hosts(&hosts, &mirror_url, &registry);
    assert!(wrote.contains("wrote"), "{wrote}");
    let again = containerd_hosts(&hosts, &mirror_url, &registry);
    assert!(again.contains("unchanged"), "containerd-hosts is idempotent: {again}");
    let hosts_file = hosts.join(&registry).join("hosts.toml");
    let ctrd = bounded("containerd start", Containerd::start(&s.scratch("containerd"), &hosts)).await;

    // 1. ctr pull through the mirror, with no credentials given to containerd.
    let t = Instant::now();
    let image = format!("{registry}/{REPO}:{TAG}");
    let hosts_arg = hosts.to_str().expect("utf8");
    let run = ctrd.ctr(&["images", "pull", "--snapshotter", "native", "--hosts-dir", hosts_arg, &image]).await;
    assert!(run.ok, "ctr pull through the mirror failed:\n{}\nregistry log:\n{}", run.output, s.demo.log());
    let listed = ctrd.ctr(&["images", "ls"]).await;
    let line = listed.output.lines().find(|l| l.starts_with(&image)).unwrap_or("");
    assert!(line.contains(&s.image.manifest_digest), "pulled digest differs: {line:?}\n{}", listed.output);
    assert!(mirror_metric(&h, "acr_broker_mirror_requests_total{kind=\"manifest\",outcome=\"ok\"}").await >= 1.0);
    assert!(mirror_metric(&h, "acr_broker_mirror_requests_total{kind=\"blob\",outcome=\"ok\"}").await >= 2.0);
    phase(T, "1. ctr pull via hosts.toml", t);

    // 2. Without the hosts file the same pull (plain HTTP straight to the registry) is refused.
    let t = Instant::now();
    assert!(ctrd.ctr(&["images", "rm", &image]).await.ok);
    std::fs::remove_file(&hosts_file).expect("remove hosts.toml");
    let run = ctrd
        .ctr(&["images", "pull", "--snapshotter", "native", "--plain-http", "--hosts-dir", hosts_arg, &image])
        .await;
    assert!(!run.ok, "a pull without the mirror must fail (no credentials):\n{}", run.output);
    // containerd fetched a token anonymously and the realm granted no pull scope.
    assert!(run.output.contains("pull access denied") && run.output.contains("authorization failed"), "{}", run.output);
    containerd_hosts(&hosts, &mirror_url, &registry);
    phase(T, "2. no hosts.toml -> 401", t);

    // 3. CRI PullImage with no auth, through config_path: the sandbox image's path; multi-layer.
    let t = Instant::now();
    let multi_ref = format!("{registry}/{REPO}:{MULTI_TAG}");
    let got = e2e::cri::pull_image(&ctrd.socket, &multi_ref).await;
    let image_ref = got.unwrap_or_else(|e| panic!("CRI PullImage failed: {e}\ncontainerd log:\n{}", ctrd.log()));
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let listed = ctrd.ctr(&["--namespace", "k8s.io", "images", "ls"]).await;
    let line = listed.output.lines().find(|l| l.starts_with(&multi_ref)).unwrap_or("");
    assert!(line.contains(&multi_digest), "CRI pulled another digest: {line:?}\n{}", listed.output);
    let manifest = ctrd.ctr(&["--namespace", "k8s.io", "content", "get", &multi_digest]).await;
    let manifest: serde_json::Value = serde_json::from_str(&manifest.output).expect("pulled manifest is JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), multi.layer_digests.len(), "{manifest}");
    for layer in layers {
        let digest = layer["digest"].as_str().expect("digest");
        let info = ctrd.ctr(&["--namespace", "k8s.io", "content", "ls", "-q"]).await;
        assert!(info.output.lines().any(|l| l == digest), "layer {digest} missing after the CRI pull");
    }
    phase(T, "3. CRI PullImage (multi-layer) via config_path", t);

    // 4. Refusals: no request reaches the registry or the cloud.
    let t = Instant::now();
    let (registry_before, cloud_before) = (registry_requests(&s), h.emulator.counters());
    assert!(registry_before > 0, "the registry's access log shows no request at all:\n{}", s.demo.log());
    let base = format!("http://{mirror}");
    let manifest = format!("/v2/{REPO}/manifests/{TAG}");
    let cases = [
        ("cross-instance ns", format!("{base}{manifest}?ns=partner-registry.cn-beijing.cr.aliyuncs.com"), vec![], 404),
        ("non-ACR ns", format!("{base}{manifest}?ns=registry-1.docker.io"), vec![], 404),
        ("missing ns", format!("{base}{manifest}"), vec![], 400),
        (
            "path traversal",
            format!("{base}/v2/{REPO}/../../x/manifests/{TAG}?ns={registry}"),
            vec!["--path-as-is"],
            400,
        ),
        ("POST", format!("{base}/v2/{REPO}/blobs/uploads/?ns={registry}"), vec!["-X", "POST"], 405),
    ];
    for (what, url, extra, want) in &cases {
        let (status, body) = curl_as(0, 0, url, extra).await;
        assert_eq!(status, *want, "{what}: {body}");
    }
    let refused_uid = if setpriv_bin().is_some() {
        let (status, body) = curl_as(65534, 65534, &format!("{base}{manifest}?ns={registry}"), &[]).await;
        assert_eq!(status, 403, "uid 65534 is not in allowed_uids: {body}");
        1
    } else {
        support::skip("e2e_mirror: the refused-uid case needs setpriv");
        0
    };
    assert_eq!(registry_requests(&s), registry_before, "a refused request reached the registry:\n{}", s.demo.log());
    assert_eq!(h.emulator.counters(), cloud_before, "a refused request reached the cloud");
    let refused = mirror_metric(&h, "acr_broker_mirror_requests_total{kind=\"refused\"").await;
    assert_eq!(refused, (cases.len() + refused_uid) as f64, "every refusal is counted");
    phase(T, "4. refusals", t);

    drop(ctrd);
    s.stop(h).await;
    phase(T, "total", t0);
}

/// The registry itself rejects the mirror's cached token because it expired (not our clock):
/// realm tokens live 1 s, docker-registry accepts them 60 s past `exp`, and the daemon's clock
/// is held still, so the mirror still believes its token good. After the registry's leeway has
/// run out, the next pull meets a 401 `invalid_token` on its first request, the mirror fetches a
/// fresh token once and retries, and containerd's pull completes. Takes about 65 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_registry_finds_expired_is_renewed_and_the_pull_completes() {
    const T: &str = "e2e-mirror-expiry";
    if !containerd_ready(T) {
        return;
    }
    let t0 = Instant::now();
    let mut s = Setup::start_with_realm_ttl(false, 1).await;
    let multi = e2e::oci::build_layers(&s.scratch("oci-multi"), MULTI_TAG, &[256 << 10, 64 << 10])
        .expect("build multi-layer layout");
    let multi_digest = s.push_layout(&s.demo, DEMO_SERVICE, &multi, MULTI_TAG).await;
    let registry = s.demo.host.clone();
    let mirror_table = format!("[mirror]\nlisten = \"127.0.0.1:0\"\nregistries = [\"{registry}\"]\n");
    let frozen = acr_broker::clock::ManualClock::new(acr_broker::clock::system().now());
    let h = s.daemon_on(&defaults(&[&demo_ref()], &[], &[]), &mirror_table, frozen).await;
    let mirror = h.daemon().mirror_addr.expect("mirror listening");
    let hosts = s.scratch("certs.d");
    containerd_hosts(&hosts, &format!("http://{mirror}"), &registry);
    let ctrd = bounded("containerd start", Containerd::start(&s.scratch("containerd"), &hosts)).await;
    let hosts_arg = hosts.to_str().expect("utf8");

    // First pull: one realm token for the repository, cached by the mirror.
    let image = format!("{registry}/{REPO}:{TAG}");
    let run = ctrd.ctr(&["images", "pull", "--snapshotter", "native", "--hosts-dir", hosts_arg, &image]).await;
    assert!(run.ok, "first pull failed:\n{}", run.output);
    let tokens = h.emulator.count("RegistryToken");
    assert!(tokens >= 1, "{:?}", h.emulator.counters());
    phase(T, "first pull", t0);

    // Outlive the token and the registry's 60 s leeway, then pull another tag of the same repository.
    tokio::time::sleep(std::time::Duration::from_secs(63)).await;
    let t = Instant::now();
    // docker-registry logs "token not to be used after <exp + 60 s>" when it refuses an expired token.
    let expired = |s: &Setup| s.demo.log().matches("token not to be used after").count();
    let rejected_before = expired(&s);
    let multi_ref = format!("{registry}/{REPO}:{MULTI_TAG}");
    let run = ctrd.ctr(&["images", "pull", "--snapshotter", "native", "--hosts-dir", hosts_arg, &multi_ref]).await;
    assert!(run.ok, "the pull after expiry must complete:\n{}\nregistry log:\n{}", run.output, s.demo.log());
    let listed = ctrd.ctr(&["images", "ls"]).await;
    assert!(listed.output.lines().any(|l| l.starts_with(&multi_ref) && l.contains(&multi_digest)), "{}", listed.output);
    assert_eq!(expired(&s), rejected_before + 1, "the registry refuses the expired token once:\n{}", s.demo.log());
    assert_eq!(h.emulator.count("RegistryToken"), tokens + 1, "exactly one renewal: {:?}", h.emulator.counters());
    phase(T, "pull after the registry expired the token", t);
    drop(ctrd);
    s.stop(h).await;
}
