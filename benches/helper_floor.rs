//! The shims at the process floor: whole-process `docker-credential-acr-broker get` and
//! `acr-broker kubelet-plugin` on a warm key, beside `/bin/true` (the floor) and Debian's
//! `amazon-ecr-credential-helper` answering from its warm file cache — every one through the
//! same `sh -c '… < input > /dev/null'`, runs interleaved (one of each per round) so machine
//! drift hits all alike. Targets: median ≤ floor + 0.5 ms for both shims, and the ECR helper
//! ≥ 4× slower than ours.
//!
//! The ECR helper's cache is `~/.ecr/cache.json` with one entry for `AWS_ACCESS_KEY_ID`, so it
//! answers without any network call (its log under `~/.ecr/log` says "Using cached token").
//!
//! Run: `cargo bench --bench helper_floor` (`FLOOR_RUNS`, default 300; `SHIM_DIR` to measure
//! other builds of the two binaries, e.g. the static ones from scripts/build-static.sh).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ChildDaemon;

const ECR_ACCESS_KEY: &str = "AKIAEXAMPLEKEY000001";
const ECR_REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

fn main() {
    common::run_bench(run());
}

/// One measured command: a label and the `sh -c` script.
struct Case {
    label: &'static str,
    script: String,
    env: Vec<(String, String)>,
    times: Vec<Duration>,
}

fn shell(case: &Case) -> Duration {
    let started = Instant::now();
    let status = Command::new("sh").arg("-c").arg(&case.script).envs(case.env.iter().cloned()).status().expect("sh");
    let took = started.elapsed();
    assert!(status.success(), "{} failed: {}", case.label, case.script);
    took
}

/// The ECR helper's warm cache under `home`, in its own format (see the module comment).
fn ecr_cache(home: &Path) {
    use data_encoding::BASE64;
    let mut raw = ECR_ACCESS_KEY.as_bytes().to_vec();
    raw.extend_from_slice(&md5_of_empty());
    let key = format!("us-east-1-{}-123456789012", BASE64.encode(&raw));
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).expect("rfc3339");
    let cache = serde_json::json!({
        "Registries": { key: {
            "AuthorizationToken": BASE64.encode(b"AWS:pw"),
            "RequestedAt": fmt(now),
            "ExpiresAt": fmt(now + time::Duration::hours(6)),
            "ProxyEndpoint": format!("https://{ECR_REGISTRY}"),
            "Service": "ecr",
        }},
        "Version": "1.0",
    });
    std::fs::create_dir_all(home.join(".ecr")).expect("ecr dir");
    std::fs::write(home.join(".ecr/cache.json"), cache.to_string()).expect("ecr cache");
}

/// md5("") — the ECR helper mixes it into its cache key.
fn md5_of_empty() -> [u8; 16] {
    [0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e]
}

async fn run() {
    let runs: usize = common::env_or("FLOOR_RUNS", 300);
    println!("machine: {}", common::machine());
    let emu = common::emulator(common::world(0, 0, ""), common::knobs(0)).await;
    let daemon = ChildDaemon::spawn(&emu, "", "warn").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let host = common::DEMO_HOST;
    std::fs::write(dir.path().join("host"), host).expect("write");
    let request = serde_json::json!({
        "kind": "CredentialProviderRequest",
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "image": format!("{host}/ns/app:1.0"),
    });
    std::fs::write(dir.path().join("kubelet.json"), request.to_string()).expect("write");
    std::fs::write(dir.path().join("ecr"), ECR_REGISTRY).expect("write");
    ecr_cache(dir.path());

    let shims: PathBuf = std::env::var_os("SHIM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::helper_binary().parent().expect("bin dir").to_path_buf());
    let (helper, broker) = (shims.join("docker-credential-acr-broker"), shims.join("acr-broker"));
    let ecr = which("docker-credential-ecr-login");
    let input = |name: &str| dir.path().join(name).display().to_string();
    let socket = vec![(String::from("ACR_BROKER_SOCKET"), daemon.socket.display().to_string())];
    let mut cases = vec![
        Case {
            label: "/bin/true (floor)",
            script: format!("/bin/true < {} > /dev/null", input("host")),
            env: Vec::new(),
            times: Vec::new(),
        },
        Case {
            label: "docker-credential-acr-broker get",
            script: format!("{} get < {} > /dev/null", helper.display(), input("host")),
            env: socket.clone(),
            times: Vec::new(),
        },
        Case {
            label: "acr-broker kubelet-plugin",
            script: format!("{} kubelet-plugin < {} > /dev/null", broker.display(), input("kubelet.json")),
            env: socket,
            times: Vec::new(),
        },
    ];
    if let Some(ecr) = &ecr {
        cases.push(Case {
            label: "docker-credential-ecr-login get (warm cache)",
            script: format!("{} get < {} > /dev/null", ecr.display(), input("ecr")),
            env: vec![
                (String::from("HOME"), dir.path().display().to_string()),
                (String::from("AWS_ACCESS_KEY_ID"), String::from(ECR_ACCESS_KEY)),
                (String::from("AWS_SECRET_ACCESS_KEY"), String::from("not-used")),
                (String::from("AWS_REGION"), String::from("us-east-1")),
            ],
            times: Vec::new(),
        });
    } else {
        println!("(docker-credential-ecr-login not installed: apt-get install amazon-ecr-credential-helper)");
    }
    for _ in 0..20 {
        for c in &cases {
            shell(c);
        }
    }
    for _ in 0..runs {
        for c in cases.iter_mut() {
            let took = shell(c);
            c.times.push(took);
        }
    }
    for c in cases.iter_mut() {
        c.times.sort_unstable();
    }
    let floor = common::percentile(&cases[0].times, 50.0);
    println!("\n== shims at the floor: {runs} interleaved runs each, through `sh -c`, warm key ==");
    for c in &cases {
        let median = common::percentile(&c.times, 50.0);
        println!(
            "{:<46} median {}  p90 {}  (floor + {:.3} ms)",
            c.label,
            common::ms(median),
            common::ms(common::percentile(&c.times, 90.0)),
            (median.as_secs_f64() - floor.as_secs_f64()) * 1000.0
        );
    }
    if ecr.is_some() {
        let ours = common::percentile(&cases[1].times, 50.0).as_secs_f64();
        let theirs = common::percentile(&cases[3].times, 50.0).as_secs_f64();
        println!("ECR helper / our helper (medians): {:.2}x", theirs / ours);
        let log = std::fs::read_dir(dir.path().join(".ecr/log"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
            .unwrap_or_default();
        println!("ECR helper answered from its cache: {}", log.contains("Using cached token"));
    }
    drop(daemon);
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}
