//! The delivery artifact, built and run on this machine (issue: the image): the static binaries
//! for amd64 and arm64, the image from `scripts/build-image.sh` under Debian's podman + runc, the
//! shell-free installer, the daemon serving from inside the container to the host's helper, a
//! graceful `podman stop`, and Debian's Prometheus scraping the daemon's metrics listener.
//!
//! The static binaries come from `ACR_BROKER_STATIC_DIR` (scripts/test.sh builds them once, before
//! the tests); without it the tests build them with scripts/build-static.sh. Needs root, podman,
//! runc, qemu-user-static and prometheus (scripts/install-test-deps.sh); in CI a missing tool
//! fails the test.

mod support;

#[path = "e2e/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "image/listeners.rs"]
mod listeners;
#[path = "image/podman.rs"]
mod podman;
#[path = "image/prometheus.rs"]
mod prometheus;
#[path = "e2e/registry.rs"]
#[allow(dead_code)]
mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use acr_emulator::Emulator;
use listeners::pid_listens_on;
use podman::{text, Podman};
use registry::free_port;
use serde_json::Value;
use support::{broker_world, ConfigParts};

/// Image size budget (issue: ≤ 20 MB).
const MAX_IMAGE_BYTES: u64 = 20_000_000;
/// The daemon's uid in the image and the DaemonSet.
const DAEMON_UID: &str = "65532";
/// A registry the node identity may pull from in the test world (EE default domain, same account).
const DEMO_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";
/// `podman stop` grace period; the daemon must drain and exit 0 well within it.
const STOP_GRACE_SECONDS: u64 = 10;
/// How the DaemonSet's init container runs: root, only CAP_CHOWN and CAP_FOWNER, read-only root.
const INIT_CONTAINER: [&str; 8] = [
    "--user=0:0",
    "--cap-drop=all",
    "--cap-add=CHOWN",
    "--cap-add=FOWNER",
    "--read-only",
    "--security-opt=no-new-privileges",
    "--pull=never",
    "--quiet",
];
/// The daemon binary inside the image.
const BROKER_IN_IMAGE: &str = "/usr/local/bin/acr-broker";
/// Architectures the image ships, with their ELF `e_machine`.
const ARCHES: [(&str, u16); 2] = [("amd64", 0x3e), ("arm64", 0xb7)];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `<dir>/<arch>/{acr-broker,docker-credential-acr-broker}`, built now unless the test command did.
fn static_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ACR_BROKER_STATIC_DIR") {
        return PathBuf::from(dir);
    }
    let out = repo().join("target/static");
    eprintln!("ACR_BROKER_STATIC_DIR not set: building the static binaries into {}", out.display());
    let status = Command::new(repo().join("scripts/build-static.sh"))
        .env("OUT", &out)
        .status()
        .expect("run scripts/build-static.sh");
    assert!(status.success(), "scripts/build-static.sh failed ({status})");
    out
}

/// True when every tool is installed and we are root; otherwise a loud skip (a failure in CI).
fn tools_present(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        support::skip(&format!("{test}: {} not installed (scripts/install-test-deps.sh)", missing.join(", ")));
        return false;
    }
    if support::my_uid() != 0 {
        support::skip(&format!("{test}: needs root (podman with runc and bind mounts of root-owned dirs)"));
        return false;
    }
    true
}

// === static binaries ===

/// `(has PT_INTERP, e_machine)` of a 64-bit little-endian ELF file.
fn elf_facts(path: &Path) -> (bool, u16) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(b.len() > 64 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 1, "{}: not ELF64 LE", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == PT_INTERP
    });
    (interp, u16_at(0x12))
}

#[test]
fn static_binaries_have_no_interpreter_and_no_shared_libraries() {
    if !tools_present("static binaries", &["ldd"]) {
        return;
    }
    let dir = static_dir();
    for (arch, machine) in ARCHES {
        for bin in ["acr-broker", "docker-credential-acr-broker"] {
            let path = dir.join(arch).join(bin);
            let (interp, m) = elf_facts(&path);
            assert!(!interp, "{}: has an ELF interpreter (dynamically linked)", path.display());
            assert_eq!(m, machine, "{}: built for the wrong CPU", path.display());
            let out = Command::new("ldd").arg(&path).output().expect("run ldd");
            let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(
                said.contains("statically linked") || said.contains("not a dynamic executable"),
                "ldd {}: {said}",
                path.display()
            );
        }
    }
    // The check itself fails on a dynamic executable: the test build is one.
    assert!(elf_facts(Path::new(env!("CARGO_BIN_EXE_acr-broker"))).0, "the debug build should have an interpreter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm64_binaries_run_under_qemu_and_the_helper_gets_a_credential() {
    if !tools_present("arm64 under qemu", &["qemu-aarch64-static"]) {
        return;
    }
    let arm = static_dir().join("arm64");
    let qemu = "qemu-aarch64-static";
    let helper = arm.join("docker-credential-acr-broker");
    let out = Command::new(qemu).arg(arm.join("acr-broker")).arg("version").output().expect("run qemu");
    assert_eq!(text(&out.stdout).trim(), acr_broker::install::version_line(), "{}", text(&out.stderr));
    let out = Command::new(qemu).arg(&helper).arg("version").output().expect("run qemu");
    assert!(out.status.success() && text(&out.stdout).contains(env!("CARGO_PKG_VERSION")), "{out:?}");

    let h = support::Harness::start(broker_world(), "").await;
    support::wait_ready(&h, Duration::from_secs(10)).await;
    let helper = helper.to_str().expect("utf-8 path");
    let env = [("ACR_BROKER_SOCKET", h.socket.as_os_str())];
    let out = support::run_with_stdin(qemu, &[helper, "get"], &env, DEMO_HOST).await;
    assert!(out.status.success(), "arm64 helper get failed: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("helper JSON");
    assert_eq!(v["ServerURL"], DEMO_HOST);
    assert!(v["Secret"].as_str().is_some_and(|s| !s.is_empty()), "no password: {}", v["Username"]);
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 1, "the credential came from the emulator");
    h.stop().await;
}

// === the image ===

/// Label values the image must carry.
fn labels(podman: &Podman, image: &str) -> Value {
    let out = podman.ok(&["image", "inspect", "--format", "{{json .Config}}", image]);
    serde_json::from_str(&out).expect("image config JSON")
}

/// Builds the image with scripts/build-image.sh into `podman`'s store; returns the reference.
fn build_image(podman: &Podman, sbom_dir: &Path) -> String {
    let image = format!("localhost/acr-broker-test:{}-{}", env!("CARGO_PKG_VERSION"), std::process::id());
    let started = Instant::now();
    let out = Command::new(repo().join("scripts/build-image.sh"))
        .env("CONTAINERS_STORAGE_CONF", &podman.storage_conf)
        .env("ENGINE", "podman")
        .env("IMAGE", &image)
        .env("BINARIES", static_dir())
        .env("SBOM_DIR", sbom_dir)
        .output()
        .expect("run scripts/build-image.sh");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "build-image.sh failed:\n{stdout}\n{}", text(&out.stderr));
    eprintln!("[image] build-image.sh in {:?}:\n{stdout}", started.elapsed());
    for (arch, _) in ARCHES {
        let line = stdout.lines().find(|l| l.starts_with(&format!("image={image}-{arch} "))).unwrap_or_else(|| {
            panic!("build-image.sh did not print the {arch} image's ref/id/size:\n{stdout}");
        });
        assert!(line.contains(" id=") && line.contains(" size="), "{line}");
    }
    image
}

fn check_image(podman: &Podman, image: &str, sbom_dir: &Path) {
    // The manifest list names both architectures.
    let list: Value = serde_json::from_str(&podman.ok(&["manifest", "inspect", image])).expect("manifest JSON");
    let mut arches: Vec<&str> = list["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    arches.sort_unstable();
    assert_eq!(arches, ["amd64", "arm64"], "{list}");

    for (arch, _) in ARCHES {
        let tag = format!("{image}-{arch}");
        let format = "{{.Size}} {{.Architecture}} {{.Os}} {{len .RootFS.Layers}}";
        let facts = podman.ok(&["image", "inspect", "--format", format, &tag]);
        let mut f = facts.split_whitespace();
        let size: u64 = f.next().and_then(|s| s.parse().ok()).expect("size");
        eprintln!("[image] {tag}: {size} bytes");
        assert!(size <= MAX_IMAGE_BYTES, "{tag}: {size} bytes > {MAX_IMAGE_BYTES}");
        assert_eq!((f.next(), f.next()), (Some(arch), Some("linux")), "{tag}");
        // FROM scratch + one COPY: a single layer, no base image underneath.
        assert_eq!(f.next(), Some("1"), "{tag}: layers");
        let config = labels(podman, &tag);
        assert_eq!(config["User"], format!("{DAEMON_UID}:{DAEMON_UID}"));
        assert_eq!(
            config["Entrypoint"],
            serde_json::json!(["/usr/local/bin/acr-broker", "serve", "--config", "/etc/acr-broker/config.toml"])
        );
        let l = &config["Labels"];
        assert_eq!(l["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(l["org.opencontainers.image.licenses"], "Apache-2.0");
        let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo()).output().expect("git");
        let revision = l["org.opencontainers.image.revision"].as_str().unwrap_or_default();
        assert!(revision.starts_with(text(&head.stdout).trim()), "revision label {revision:?}");
        assert!(l["org.opencontainers.image.source"].as_str().is_some_and(|s| !s.is_empty()), "{l}");
        // No userland: the image's only files are the two binaries.
        let sbom = sbom_dir.join(format!("acr-broker-{}-{arch}.cdx.json", env!("CARGO_PKG_VERSION")));
        let bom: Value = serde_json::from_slice(&std::fs::read(&sbom).expect("SBOM written")).expect("SBOM JSON");
        assert_eq!(bom["bomFormat"], "CycloneDX");
        let names: Vec<&str> =
            bom["components"].as_array().expect("components").iter().filter_map(|c| c["name"].as_str()).collect();
        for dep in ["tokio", "rustls", "ring", "hyper"] {
            assert!(names.contains(&dep), "SBOM lacks {dep}");
        }
    }
}

/// `(size, mtime)` of each installed file.
fn stamps(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    acr_broker::install::BINARIES
        .iter()
        .map(|b| {
            let m = std::fs::metadata(dir.join(b)).unwrap_or_else(|e| panic!("{b} not installed: {e}"));
            ((*b).to_owned(), m.len(), m.modified().expect("mtime"))
        })
        .collect()
}

fn check_install(podman: &Podman, image: &str, node: &Path) {
    let out = podman.run_once(image, &[], BROKER_IN_IMAGE, &["version"]);
    assert_eq!(text(&out.stdout).trim(), acr_broker::install::version_line(), "{}", text(&out.stderr));
    // No userland: there is no shell to run.
    let out = podman.run_once(image, &[], "/bin/sh", &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("stat /bin/sh: no such file"), "the image has a /bin/sh? {err}");

    let bin_dir = node.join("credential-provider");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let mount = format!("{}:/host/credential-provider", bin_dir.display());
    let install = ["install", "--to", "/host/credential-provider"];
    let out = podman.run_once(image, &init_flags(&["-v", &mount]), BROKER_IN_IMAGE, &install);
    assert!(out.status.success(), "install failed: {}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("installed /host/credential-provider/docker-credential-acr-broker"));
    let first = stamps(&bin_dir);
    // The installed helper runs on the host (static: no dependency on the host's libc).
    let out = Command::new(bin_dir.join("docker-credential-acr-broker")).arg("version").output().expect("run helper");
    assert!(text(&out.stdout).contains(&format!("(acr-broker) {}", env!("CARGO_PKG_VERSION"))), "{out:?}");
    // Installed bytes are the image's, which are the static build's.
    for b in acr_broker::install::BINARIES {
        let want = std::fs::read(static_dir().join(host_arch()).join(b)).unwrap();
        assert!(std::fs::read(bin_dir.join(b)).unwrap() == want, "{b} differs from the static build");
    }

    // Twice: identical files, no mtime changed.
    std::thread::sleep(Duration::from_millis(20));
    let out = podman.run_once(image, &init_flags(&["-v", &mount]), BROKER_IN_IMAGE, &install);
    assert!(out.status.success(), "second install failed: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("unchanged /host/credential-provider/acr-broker"), "{}", text(&out.stdout));
    assert_eq!(stamps(&bin_dir), first, "a second install must not touch identical files");
}

/// [`INIT_CONTAINER`] plus `more` run options.
fn init_flags<'a>(more: &[&'a str]) -> Vec<&'a str> {
    INIT_CONTAINER.iter().copied().chain(more.iter().copied()).collect()
}

fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Hands the node's socket directory to the daemon's uid, as the DaemonSet's init container does.
fn prepare_socket_dir(podman: &Podman, image: &str, socket_dir: &Path) {
    std::fs::create_dir_all(socket_dir).unwrap();
    let mount = format!("{}:/host/run/acr-broker", socket_dir.display());
    let scratch = socket_dir.parent().unwrap().join("init-bin");
    std::fs::create_dir_all(&scratch).unwrap();
    let bin_mount = format!("{}:/host/bin", scratch.display());
    let args = ["install", "--to", "/host/bin", "--chown-socket-dir", "/host/run/acr-broker", "--uid", DAEMON_UID];
    let out = podman.run_once(image, &init_flags(&["-v", &mount, "-v", &bin_mount]), BROKER_IN_IMAGE, &args);
    assert!(out.status.success(), "socket dir hand-over failed: {}", text(&out.stderr));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(socket_dir).unwrap();
    assert_eq!((m.uid().to_string(), m.gid(), m.permissions().mode() & 0o777), (DAEMON_UID.to_owned(), 0, 0o750));
}

/// A daemon container whose metrics listener (all addresses, a port the test picked) is held by
/// the container's own process; retried on another port when a stranger had it.
fn start_daemon(podman: &Podman, image: &str, name: &str, node: &Path, emu: &Emulator) -> u16 {
    let socket_dir = node.join("run-acr-broker");
    let config_dir = node.join("etc-acr-broker");
    std::fs::create_dir_all(&config_dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for attempt in 0..3 {
        let port = free_port();
        // The shared test config, with the endpoints named by host name (resolved from the
        // container's /etc/hosts by the static glibc) and metrics on every address.
        let config = support::config_text(emu, Path::new("/run/acr-broker/broker.sock"), &ConfigParts::default())
            .replace("metrics = \"127.0.0.1:0\"", &format!("metrics = \"0.0.0.0:{port}\""))
            .replace(&emu.base_url(), &format!("http://localhost:{}", emu.addr().port()));
        assert!(config.contains(&format!("0.0.0.0:{port}")) && config.contains("http://localhost:"), "{config}");
        let file = config_dir.join("config.toml");
        std::fs::write(&file, config).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mounts = [
            "-v".to_owned(),
            format!("{}:/etc/acr-broker:ro", config_dir.display()),
            "-v".to_owned(),
            format!("{}:/run/acr-broker", socket_dir.display()),
            "--read-only".to_owned(),
        ];
        let mounts: Vec<&str> = mounts.iter().map(String::as_str).collect();
        let out = podman.start(name, image, &mounts);
        assert!(out.status.success(), "podman run failed: {}", text(&out.stderr));
        let started = Instant::now();
        loop {
            if podman.state(name, "Running") != "true" {
                let logs = podman.logs(name);
                assert!(logs.contains("in use"), "daemon container exited:\n{logs}");
                eprintln!("metrics port {port} was taken (attempt {attempt}); retrying");
                podman.remove(name);
                break;
            }
            let pid: u32 = podman.state(name, "Pid").parse().expect("container pid");
            if pid_listens_on(pid, port) && socket_dir.join("broker.sock").exists() {
                return port;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "daemon not listening:\n{}", podman.logs(name));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("no free metrics port after 3 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_installs_and_serves_the_host_from_a_container() {
    if !tools_present("image", &["podman", "runc", "prometheus"]) {
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let podman = Podman::new(&dir.path().join("podman"));
    let image = build_image(&podman, &dir.path().join("sbom"));
    check_image(&podman, &image, &dir.path().join("sbom"));
    let node = dir.path().join("node");
    check_install(&podman, &image, &node);
    eprintln!("[image] built, inspected and installed in {:?}", t0.elapsed());

    // The daemon in the container, the emulator in this process on a loopback port it bound.
    let emu = Emulator::start(broker_world(), "127.0.0.1:0".parse().unwrap()).await.expect("emulator");
    assert!(pid_listens_on(std::process::id(), emu.addr().port()), "the emulator is ours");
    let socket_dir = node.join("run-acr-broker");
    prepare_socket_dir(&podman, &image, &socket_dir);
    let name = format!("acr-broker-test-{}", std::process::id());
    let metrics_port = start_daemon(&podman, &image, &name, &node, &emu);
    let socket = socket_dir.join("broker.sock");
    let ready = Instant::now();
    loop {
        let (status, _, _) = support::request_on(&socket, "GET", "/readyz", None).await;
        if status == 200 {
            break;
        }
        assert!(ready.elapsed() < Duration::from_secs(20), "never ready:\n{}", podman.logs(&name));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The host's helper (installed from the image) gets a credential through the socket.
    let helper = node.join("credential-provider/docker-credential-acr-broker");
    let env = [("ACR_BROKER_SOCKET", socket.as_os_str())];
    let out = support::run_with_stdin(&helper, &["get"], &env, DEMO_HOST).await;
    assert!(out.status.success(), "helper get: {}\ndaemon:\n{}", text(&out.stderr), podman.logs(&name));
    let v: Value = serde_json::from_slice(&out.stdout).expect("helper JSON");
    assert_eq!(v["ServerURL"], DEMO_HOST);
    assert!(v["Secret"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(emu.count("GetAuthorizationToken"), 1, "the container's daemon asked the emulator");

    // The metrics listener on every address serves metrics and health, never a credential.
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let a = http::get(&metrics_addr, &format!("/v1/credentials/{DEMO_HOST}"), &[]).await.expect("metrics listener");
    assert_eq!(a.status, 404, "the metrics listener must not serve credentials");
    assert_eq!(http::get(&metrics_addr, "/healthz", &[]).await.expect("healthz").status, 200);

    // Debian's Prometheus scrapes it over loopback.
    let prom = prometheus::Prometheus::start(&dir.path().join("prometheus"), "acr-broker", &metrics_addr).await;
    let up = prom
        .query_until("up{job=\"acr-broker\"}", Duration::from_secs(30), |r| {
            r.first().is_some_and(|s| s["value"][1] == "1")
        })
        .await;
    assert_eq!(up[0]["metric"]["instance"], metrics_addr.as_str());
    let requests = prom.query_until("acr_broker_requests_total", Duration::from_secs(30), |r| !r.is_empty()).await;
    let total: f64 = requests.iter().filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok()).sum();
    assert!(total >= 1.0, "requests counted: {requests:?}");
    drop(prom);

    // podman stop: SIGTERM, drain, exit 0 before the grace period ends (else SIGKILL, 137).
    let stop = Instant::now();
    podman.ok(&["stop", "--time", &STOP_GRACE_SECONDS.to_string(), &name]);
    let took = stop.elapsed();
    let code = podman.state(&name, "ExitCode");
    let logs = podman.logs(&name);
    assert_eq!(code, "0", "daemon exit code after podman stop ({took:?}):\n{logs}");
    assert!(took < Duration::from_secs(STOP_GRACE_SECONDS), "stop took {took:?}");
    assert!(logs.contains("draining"), "no drain in the log:\n{logs}");
    podman.remove(&name);
    emu.shutdown().await;
    eprintln!("[image] whole test in {:?}", t0.elapsed());
}
