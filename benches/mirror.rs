//! Registry mirror throughput and memory (issue 10): a real containerd fetches a multi-layer
//! image whose largest layer is 512 MiB from a real docker-registry, once directly with valid
//! credentials (`ctr content fetch --user`) and once through the daemon's mirror
//! (`--hosts-dir`, no credentials), alternating, three times each. Targets: mirror throughput
//! ≥ 0.8 × direct; the daemon's RSS grows by ≤ 32 MiB during a mirror fetch.
//!
//! The daemon is a child process (`acr-broker serve`), so its RSS is its own. Each fetch runs
//! in a fresh containerd namespace with `content_sharing_policy = "isolated"`, so every run
//! downloads every byte. Layers are uncompressed tars pushed with the registry API (no gzip
//! on either side). Needs root, docker-registry, containerd and curl.
//! Run: `cargo bench --bench mirror` (`MIRROR_BENCH_MIB=64` for a quick run).

#[path = "../tests/e2e/containerd.rs"]
#[allow(dead_code)]
mod containerd;
#[path = "../tests/e2e/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../tests/e2e/oci.rs"]
#[allow(dead_code)]
mod oci;
#[path = "../tests/e2e/registry.rs"]
mod registry;

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use acr_emulator::{Emulator, World};
use common::{env_or, machine, rss_bytes, ChildDaemon, Conn};
use containerd::Containerd;
use registry::{free_port, Registry, TokenAuth};

const REPO: &str = "eci_test/nginx";
const TAG: &str = "big";
const DEMO: &str = "cri-devaaaaaaaaaaaa01";
const DEMO_SERVICE: &str = "registry.aliyuncs.com:cn-hangzhou:china:cri-devaaaaaaaaaaaa01";
const RUNS: usize = 3;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    for bin in [registry::REGISTRY_BIN, containerd::CONTAINERD_BIN, containerd::CTR_BIN, "/usr/bin/curl"] {
        assert!(Path::new(bin).exists(), "{bin} missing: run scripts/install-test-deps.sh");
    }
    let big_mib: u64 = env_or("MIRROR_BENCH_MIB", 512);
    let sizes = [big_mib << 20, 64 << 20, 16 << 20, 1 << 20];
    let total: u64 = sizes.iter().sum();
    println!("== mirror bench: {} ==", machine());
    let dir = tempfile::tempdir().expect("tempdir");

    // Emulator + registry (its port goes into the world first; retried on a collision).
    let (emu, reg) = loop {
        let port = free_port();
        let world = include_str!("../tests/e2e/world.toml")
            .replace("\"@DEMO_REGISTRY@\"", &format!("\"127.0.0.1:{port}\""))
            .replace("\"@PARTNER_REGISTRY@\"", "\"127.0.0.1:1\"");
        let world = World::from_toml(&world).expect("world");
        let emu = Emulator::start(world, "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
        let realm = format!("{}/auth", emu.base_url());
        let cert = emu.token_signing_cert_pem();
        let auth = TokenAuth { realm: &realm, service: DEMO_SERVICE, issuer: "acr-emulator", cert_pem: &cert };
        if let Some(r) = Registry::start(&dir.path().join(format!("registry-{port}")), port, &auth).await {
            break (emu, r);
        }
    };
    let t = Instant::now();
    let image = oci::build_layers(&dir.path().join("oci"), TAG, &sizes).expect("layout");
    println!("built {} layers ({} MiB) in {:.1} s", sizes.len(), total >> 20, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let admin = emu.mint_registry_token(DEMO_SERVICE, REPO, &["pull", "push"]);
    push(&image, &reg.host, &admin);
    println!("pushed in {:.1} s", t.elapsed().as_secs_f64());

    let extra = format!(
        "[defaults]\nacr_instance_ids = [\"{DEMO}\"]\n[registry_token]\nallowed_realm_hosts = [\"{}\"]\n\
         [mirror]\nlisten = \"127.0.0.1:0\"\nregistries = [\"{}\"]\n",
        emu.addr(),
        reg.host
    );
    let daemon = ChildDaemon::spawn(&emu, &extra, "warn").await;
    let mirror = mirror_addr(&daemon).await;
    let (user, password) = credentials(&daemon, &reg.host).await;

    let hosts = dir.path().join("certs.d");
    let out = std::process::Command::new(common::daemon_binary())
        .args(["containerd-hosts", "--dir"])
        .arg(&hosts)
        .args(["--mirror", &format!("http://{mirror}"), &reg.host])
        .output()
        .expect("containerd-hosts");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ctrd = Containerd::start_with(&dir.path().join("containerd"), &hosts, "isolated").await;
    let reference = format!("{}/{REPO}:{TAG}", reg.host);
    let creds = format!("{user}:{password}");
    let hosts_arg = hosts.to_str().expect("utf8");

    let (mut direct, mut through) = (Vec::new(), Vec::new());
    let mut rss_growth = Vec::new();
    for i in 0..RUNS {
        let ns = format!("direct{i}");
        let took = fetch(&ctrd, &ns, &["--plain-http", "--user", &creds], &reference).await;
        direct.push(total as f64 / took.as_secs_f64());
        let ns = format!("mirror{i}");
        let before = rss_bytes(daemon.pid());
        let sampler = sample_rss(daemon.pid());
        let took = fetch(&ctrd, &ns, &["--hosts-dir", hosts_arg], &reference).await;
        let peak = sampler.stop().await;
        through.push(total as f64 / took.as_secs_f64());
        rss_growth.push(peak.saturating_sub(before));
        println!(
            "run {i}: direct {:.0} MiB/s, mirror {:.0} MiB/s, daemon RSS {:.1} -> peak {:.1} MiB",
            direct[i] / 1048576.0,
            through[i] / 1048576.0,
            before as f64 / 1048576.0,
            peak as f64 / 1048576.0
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (d, m) = (median(&mut direct), median(&mut through));
    let growth = rss_growth.iter().copied().max().unwrap_or(0);
    println!(
        "median: direct {:.0} MiB/s, mirror {:.0} MiB/s = {:.2} x direct (target >= 0.80): {}",
        d / 1048576.0,
        m / 1048576.0,
        m / d,
        if m / d >= 0.8 { "met" } else { "MISSED" }
    );
    println!(
        "daemon RSS growth during a mirror fetch: max {:.1} MiB (target <= 32): {}",
        growth as f64 / 1048576.0,
        if growth <= 32 << 20 { "met" } else { "MISSED" }
    );
    drop(ctrd);
    drop(daemon);
    if m / d < 0.8 || growth > 32 << 20 {
        std::process::exit(1);
    }
}

/// `ctr -n NS content fetch ARGS REF`; wall time. Panics with ctr's output on failure.
async fn fetch(ctrd: &Containerd, ns: &str, args: &[&str], reference: &str) -> Duration {
    let mut all = vec!["--namespace", ns, "content", "fetch"];
    all.extend_from_slice(args);
    all.push(reference);
    let t = Instant::now();
    let run = ctrd.ctr_with_limit(&all, Duration::from_secs(600)).await;
    let took = t.elapsed();
    let shown: Vec<&str> =
        args.iter().map(|a| if a.contains(':') && !a.starts_with('/') { "<user:password>" } else { a }).collect();
    assert!(
        run.ok,
        "ctr content fetch {shown:?} failed:\n{}",
        run.output.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    took
}

/// Pushes every blob of `image` and its manifest with the registry API (curl streams the files).
fn push(image: &oci::OciImage, host: &str, token: &str) {
    let blobs = image.dir.join("blobs/sha256");
    let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).expect("manifest json");
    let mut digests = vec![image.config_digest.clone()];
    digests.extend(image.layer_digests.iter().cloned());
    let auth = format!("Authorization: Bearer {token}");
    for digest in &digests {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-D", "-", "-X", "POST", "-H", &auth])
            .arg(format!("http://{host}/v2/{REPO}/blobs/uploads/"))
            .output()
            .expect("curl POST");
        let headers = String::from_utf8_lossy(&out.stdout);
        let location = headers
            .lines()
            .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
            .unwrap_or_else(|| panic!("no upload location: {headers}"))
            .trim()
            .to_owned();
        let url = if location.starts_with("http") { location } else { format!("http://{host}{location}") };
        let sep = if url.contains('?') { '&' } else { '?' };
        let file = blobs.join(&digest["sha256:".len()..]);
        let out = std::process::Command::new("curl")
            .args(["-sS", "-f", "-o", "/dev/null", "-H", &auth, "-H", "Content-Type: application/octet-stream", "-T"])
            .arg(&file)
            .arg(format!("{url}{sep}digest={digest}"))
            .output()
            .expect("curl PUT");
        assert!(out.status.success(), "blob upload failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = std::process::Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null", "-X", "PUT", "-H", &auth])
        .args(["-H", "Content-Type: application/vnd.oci.image.manifest.v1+json", "--data-binary"])
        .arg(format!("@{}", blobs.join(&image.manifest_digest["sha256:".len()..]).display()))
        .arg(format!("http://{host}/v2/{REPO}/manifests/{TAG}"))
        .output()
        .expect("curl PUT manifest");
    assert!(out.status.success(), "manifest upload failed: {} {manifest}", String::from_utf8_lossy(&out.stderr));
}

/// The mirror's address, from the daemon's log-free config: the bench asks the kernel which
/// loopback port the child listens on besides the metrics one.
async fn mirror_addr(daemon: &ChildDaemon) -> std::net::SocketAddr {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let mut inodes = std::collections::HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid())) {
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                if let Some(n) = t.to_str().and_then(|s| s.strip_prefix("socket:[")).and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(n.parse::<u64>().unwrap_or(0));
                }
            }
        }
    }
    let listeners: Vec<std::net::SocketAddr> = acr_broker::procnet::parse_table(&text)
        .into_iter()
        .filter(|s| s.state == acr_broker::procnet::TCP_LISTEN && inodes.contains(&s.inode))
        .map(|s| s.local)
        .collect();
    // Two loopback listeners: metrics (answers /metrics) and the mirror (answers /v2/ with 400).
    for addr in listeners {
        if let Ok(a) = http::get(&addr.to_string(), "/v2/", &[]).await {
            if a.status == 400 {
                return addr;
            }
        }
    }
    panic!("the daemon has no mirror listener");
}

/// The credential the node defaults give for `host` (for the direct fetch).
async fn credentials(daemon: &ChildDaemon, host: &str) -> (String, String) {
    let mut c = Conn::connect(&daemon.socket).await.expect("connect");
    let (status, body) = c.get(&format!("/v1/credentials/{host}")).await.expect("get");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    (v["username"].as_str().expect("user").to_owned(), v["password"].as_str().expect("password").to_owned())
}

/// Samples a process's RSS every 20 ms until stopped; returns the peak.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

fn sample_rss(pid: u32) -> Sampler {
    let (stop, mut rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut peak = rss_bytes(pid);
        loop {
            tokio::select! {
                _ = &mut rx => return peak.max(rss_bytes(pid)),
                _ = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(rss_bytes(pid)),
            }
        }
    });
    Sampler { stop, task }
}

impl Sampler {
    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}
