//! Operations packaging checks: the systemd units pass `systemd-analyze verify` cleanly and score
//! at most 2.0 on `systemd-analyze security`, and the Kubernetes manifests (DaemonSet, kubelet
//! CredentialProviderConfig) hold the fields the node setup depends on and agree with each
//! other, with the Dockerfile and with the daemon's own defaults.
//!
//! `systemd-analyze` is installed by scripts/install-test-deps.sh; only when it is missing do the
//! two systemd tests print a loud notice and pass.

// The kubelet CredentialProviderConfig checker is the one `acr-broker doctor` uses.
use acr_broker::doctor::kubelet as kubelet_config;
#[path = "packaging/monitoring.rs"]
mod monitoring;

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the daemon binary lives in the shipped unit; rewritten to the test build.
const UNIT_BINARY: &str = "/usr/local/bin/acr-broker";
/// The highest `systemd-analyze security` exposure we accept for acr-broker.service.
const MAX_EXPOSURE: f64 = 2.0;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// === systemd units ===

/// `Some(())` when systemd-analyze can run; `None` (after a loud notice) when it is not installed.
fn systemd_analyze_available() -> Option<()> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => Some(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // CI installed it first (scripts/install-test-deps.sh): missing there is a failure.
            assert!(std::env::var_os("CI").is_none(), "CI must not skip: systemd-analyze is not installed");
            eprintln!(
                "\n!!!!!! SKIPPED: systemd-analyze is not installed; the systemd unit checks did \
                 NOT run. Run scripts/install-test-deps.sh (apt-get install systemd). !!!!!!\n"
            );
            None
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

/// Copies of both units in a temp dir, ExecStart pointing at the freshly built daemon.
fn unit_copies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_acr-broker");
    assert!(!bin.contains('"'), "binary path {bin:?} cannot be quoted for ExecStart");
    let service = read("systemd/acr-broker.service");
    assert!(service.contains(&format!("ExecStart={UNIT_BINARY} ")), "ExecStart must start with {UNIT_BINARY}");
    let service = service.replace(&format!("ExecStart={UNIT_BINARY} "), &format!("ExecStart=\"{bin}\" "));
    std::fs::write(dir.path().join("acr-broker.service"), service).unwrap();
    std::fs::write(dir.path().join("acr-broker.socket"), read("systemd/acr-broker.socket")).unwrap();
    dir
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new("systemd-analyze").args(args).current_dir(dir).output().unwrap()
}

fn verify(dir: &Path) -> Output {
    run_in(dir, &["verify", "--man=no", "./acr-broker.socket", "./acr-broker.service"])
}

#[test]
fn systemd_units_verify_without_any_warning() {
    let Some(()) = systemd_analyze_available() else {
        return;
    };
    let dir = unit_copies();
    let out = verify(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed ({}):\n{stderr}", out.status);
    // verify exits 0 on unknown keys and bad values; they show up only on stderr.
    assert!(stderr.trim().is_empty(), "verify warned:\n{stderr}");
}

#[test]
fn systemd_verify_check_catches_a_typo() {
    // Guards the test above: on this systemd a typo is only a warning, so the empty-stderr
    // assertion is what catches it.
    let Some(()) = systemd_analyze_available() else {
        return;
    };
    let dir = unit_copies();
    let path = dir.path().join("acr-broker.service");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("Restart=always", "Restat=always")).unwrap();
    let out = verify(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Restat"), "typo not reported: {stderr}");
}

/// The number in `→ Overall exposure level for acr-broker.service: 1.1 OK 🙂`.
fn parse_exposure(stdout: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.contains("Overall exposure level for"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_parser_reads_systemd_252_output() {
    let sample = "✗ PrivateNetwork=   Service has access to the host's network   0.5\n\
                  \n→ Overall exposure level for acr-broker.service: 1.1 OK 🙂\n";
    assert_eq!(parse_exposure(sample), Some(1.1));
    assert_eq!(parse_exposure("no summary"), None);
}

#[test]
fn service_exposure_is_at_most_two() {
    let Some(()) = systemd_analyze_available() else {
        return;
    };
    let dir = unit_copies();
    let out = run_in(dir.path(), &["security", "--offline=yes", "./acr-broker.service"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "security failed: {stderr}\n{stdout}");
    let score = parse_exposure(&stdout).unwrap_or_else(|| panic!("no exposure line in:\n{stdout}\n{stderr}"));
    eprintln!("acr-broker.service exposure: {score}");
    assert!(score <= MAX_EXPOSURE, "exposure {score} > {MAX_EXPOSURE}:\n{stdout}");
}

/// `key=value` settings of `section` in a unit file (comments and blank lines skipped).
fn unit_settings(text: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
        } else if current == section {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn service_unit_keeps_the_contract() {
    let text = read("systemd/acr-broker.service");
    let s = unit_settings(&text, "Service");
    let want = [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30s"),
        ("Restart", "always"),
        ("RestartSec", "100ms"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("ExecStart", "/usr/local/bin/acr-broker serve --config /etc/acr-broker/config.toml"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ];
    for (key, value) in want {
        assert_eq!(setting(&s, key), Some(value), "[Service] {key}");
    }
    assert!(
        s.iter().any(|(k, v)| k == "SystemCallFilter" && v == "@system-service"),
        "SystemCallFilter=@system-service missing"
    );
    // The daemon must reach 100.100.100.200, STS and CR; it must not write credentials to disk;
    // and a RuntimeDirectory would delete the socket unit's /run/acr-broker on stop.
    // PrivateUsers= would turn every non-root peer into 65534, so allowed_uids/allowed_gids and
    // a SocketGroup could never admit a non-root runtime.
    for banned in ["PrivateNetwork", "IPAddressDeny", "StateDirectory", "RuntimeDirectory", "PrivateUsers"] {
        assert_eq!(setting(&s, banned), None, "[Service] {banned} must not be set");
    }
    let u = unit_settings(&text, "Unit");
    assert_eq!(setting(&u, "Requires"), Some("acr-broker.socket"));
    assert_eq!(setting(&u, "StartLimitIntervalSec"), Some("0"), "never give up restarting");
}

#[test]
fn socket_unit_matches_the_daemon_default_socket() {
    let s = unit_settings(&read("systemd/acr-broker.socket"), "Socket");
    assert_eq!(setting(&s, "ListenStream"), Some(acr_broker::config::DEFAULT_SOCKET));
    assert_eq!(setting(&s, "SocketMode"), Some("0660"));
    assert_eq!(setting(&s, "SocketGroup"), Some("root"));
    assert_eq!(setting(&s, "FileDescriptorName"), Some("api"));
    assert_eq!(setting(&s, "Accept"), Some("no"));
}

// === Kubernetes manifests and image ===

fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{rel}: bad YAML: {e}")))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn doc_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in docker/daemonset.yaml"))
}

fn named<'a>(list: &'a Value, name: &str, what: &str) -> &'a Value {
    list.as_sequence()
        .and_then(|l| l.iter().find(|c| c["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("no {what} named {name:?}"))
}

fn mount_path_of<'a>(container: &'a Value, volume: &str) -> Option<&'a str> {
    container["volumeMounts"].as_sequence()?.iter().find(|m| m["name"].as_str() == Some(volume))?["mountPath"].as_str()
}

/// The hostPath volume whose path is `host_path`, by name.
fn host_path_volume<'a>(pod: &'a Value, host_path: &str) -> &'a str {
    pod["volumes"]
        .as_sequence()
        .and_then(|vs| vs.iter().find(|v| v["hostPath"]["path"].as_str() == Some(host_path)))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_else(|| panic!("no hostPath volume for {host_path}"))
}

fn assert_resources(c: &Value) {
    let name = c["name"].as_str().unwrap_or("?");
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].as_str().is_some_and(|v| !v.is_empty()),
                "container {name}: resources.{kind}.{res} missing"
            );
        }
    }
}

/// The probe's (path, port) for an httpGet on loopback.
fn probe(c: &Value, which: &str) -> (String, u64) {
    let get = &c[which]["httpGet"];
    assert_eq!(get["host"].as_str(), Some("127.0.0.1"), "{which}: loopback listener");
    (
        get["path"].as_str().unwrap_or_default().to_owned(),
        get["port"].as_u64().unwrap_or_else(|| panic!("{which}: numeric port")),
    )
}

#[test]
fn daemonset_runs_the_broker_on_every_node() {
    let docs = yaml_docs("docker/daemonset.yaml");
    let ds = doc_of_kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    // Rollouts surge: the new pod takes the socket over before the old one stops.
    let rolling = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!((rolling["maxSurge"].as_u64(), rolling["maxUnavailable"].as_u64()), (Some(1), Some(0)));
    assert_eq!(ds["metadata"]["namespace"].as_str(), Some("kube-system"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"].as_str(), Some("system-node-critical"));
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true), "metadata 100.100.100.200");
    let tolerates_all = pod["tolerations"]
        .as_sequence()
        .is_some_and(|ts| ts.iter().any(|t| t["operator"].as_str() == Some("Exists") && t["key"].is_null()));
    assert!(tolerates_all, "tolerations must include {{operator: Exists}}");
    let sa = pod["serviceAccountName"].as_str().expect("serviceAccountName");
    assert_eq!(doc_of_kind(&docs, "ServiceAccount")["metadata"]["name"].as_str(), Some(sa));

    // The socket directory comes from the host, and the daemon binds in it.
    let socket = Path::new(acr_broker::config::DEFAULT_SOCKET);
    let socket_dir = socket.parent().unwrap().to_str().unwrap();
    let vol = host_path_volume(pod, socket_dir);
    let broker = named(&pod["containers"], "acr-broker", "container");
    assert_eq!(mount_path_of(broker, vol), Some(socket_dir));
    assert_resources(broker);

    let (live, live_port) = probe(broker, "livenessProbe");
    let (ready, ready_port) = probe(broker, "readinessProbe");
    assert_eq!((live.as_str(), ready.as_str()), ("/healthz", "/readyz"));
    let metrics_port = u64::from(acr_broker::config::DEFAULT_METRICS.parse::<std::net::SocketAddr>().unwrap().port());
    assert_eq!((live_port, ready_port), (metrics_port, metrics_port));

    let sc = &broker["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));

    // The init step installs the helpers into a hostPath directory on the node, with the
    // binary's own installer (the image has no shell).
    let init = &pod["initContainers"][0];
    assert_resources(init);
    let args = init_command(pod);
    assert_eq!(&args[..2], [IMAGE_BINARY, "install"], "init container must run `acr-broker install`");
    let bin_dir = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|v| v["hostPath"]["path"].as_str() != Some(socket_dir))
        .find_map(|v| mount_path_of(init, v["name"].as_str()?))
        .expect("init container mounts a host bin dir");
    assert_eq!(flag(&args, "--to"), Some(bin_dir), "init must install into {bin_dir}");
    let socket_mount = mount_path_of(init, vol).expect("init container mounts the socket dir");
    assert_eq!(flag(&args, "--chown-socket-dir"), Some(socket_mount));
}

/// Where the image keeps the daemon binary (Dockerfile `COPY … /usr/local/bin/`).
const IMAGE_BINARY: &str = "/usr/local/bin/acr-broker";

/// The init container's argv.
fn init_command(pod: &Value) -> Vec<String> {
    let cmd = pod["initContainers"][0]["command"].as_sequence().expect("init command");
    cmd.iter().map(|a| a.as_str().expect("string arguments").to_owned()).collect()
}

/// The value after `name` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

#[test]
fn daemonset_init_container_installs_onto_the_node() {
    // Its exact argv, run with the test build, the host paths moved into a temp dir.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        assert!(std::env::var_os("CI").is_none(), "CI must not skip: the installer test needs root (chown)");
        eprintln!("\n!!!!!! SKIPPED: daemonset_init_container_installs_onto_the_node needs root (chown) !!!!!!\n");
        return;
    }
    let docs = yaml_docs("docker/daemonset.yaml");
    let pod = &doc_of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let root = tempfile::tempdir().unwrap();
    let to_temp = |p: &str| root.path().join(p.trim_start_matches('/'));
    let args = init_command(pod);
    let (bin_dir, socket_dir) =
        (to_temp(flag(&args, "--to").unwrap()), to_temp(flag(&args, "--chown-socket-dir").unwrap()));
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&socket_dir).unwrap();
    let rest: Vec<String> = args[1..]
        .iter()
        .map(|a| if a.starts_with('/') { to_temp(a).to_string_lossy().into_owned() } else { a.clone() })
        .collect();
    for round in ["first", "second"] {
        let out = Command::new(env!("CARGO_BIN_EXE_acr-broker")).args(&rest).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{round} install: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let verb = if round == "first" { "installed" } else { "unchanged" };
        assert!(stdout.contains(&format!("{verb} {}", bin_dir.join("acr-broker").display())), "{stdout}");
    }
    for bin in acr_broker::install::BINARIES {
        let m = std::fs::metadata(bin_dir.join(bin)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755, "{bin}");
    }
    let uid: u32 = flag(&args, "--uid").unwrap().parse().unwrap();
    let m = std::fs::metadata(&socket_dir).unwrap();
    assert_eq!((m.uid(), m.gid(), m.permissions().mode() & 0o777), (uid, 0, 0o750));
}

#[test]
fn daemonset_config_is_valid_and_matches_the_mounts() {
    let docs = yaml_docs("docker/daemonset.yaml");
    let cm = doc_of_kind(&docs, "ConfigMap");
    let toml = cm["data"]["config.toml"].as_str().expect("data.config.toml");
    let config =
        acr_broker::config::Config::from_toml(toml, "daemonset.yaml ConfigMap").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.socket, Path::new(acr_broker::config::DEFAULT_SOCKET));
    let pod = &doc_of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let broker = named(&pod["containers"], "acr-broker", "container");
    let port = config.server.metrics.expect("metrics listener").port();
    assert_eq!(probe(broker, "livenessProbe").1, u64::from(port));
    let cm_name = cm["metadata"]["name"].as_str().unwrap();
    let vol = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(cm_name))
        .and_then(|v| v["name"].as_str())
        .expect("a volume from the ConfigMap");
    assert_eq!(mount_path_of(broker, vol), Some("/etc/acr-broker"));
}

#[test]
fn image_and_daemonset_agree_on_user_and_entrypoint() {
    let dockerfile = read("docker/Dockerfile");
    assert!(dockerfile
        .contains(r#"ENTRYPOINT ["/usr/local/bin/acr-broker", "serve", "--config", "/etc/acr-broker/config.toml"]"#));
    for bin in acr_broker::install::BINARIES {
        assert!(dockerfile.contains(&format!("${{TARGETARCH}}/{bin}")), "image lacks {bin}");
    }
    assert!(dockerfile.lines().any(|l| l.trim() == "FROM scratch"), "the image has no userland");
    let user = dockerfile.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("USER in the runtime stage");
    let uid: u64 = user.split(':').next().unwrap().parse().expect("numeric USER");
    assert_ne!(uid, 0, "image must not run as root");
    let docs = yaml_docs("docker/daemonset.yaml");
    let pod = &doc_of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let broker = named(&pod["containers"], "acr-broker", "container");
    assert_eq!(broker["securityContext"]["runAsUser"].as_u64(), Some(uid));
    let uid = uid.to_string();
    assert_eq!(flag(&init_command(pod), "--uid"), Some(uid.as_str()), "init must hand the socket dir to uid {uid}");
}

#[test]
fn kubelet_credential_provider_config_is_valid() {
    let rel = "docker/credential-provider-config.yaml";
    assert!(repo_file(rel).exists(), "{rel} is missing");
    let docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: one document");
    let errs = kubelet_config::validate(&docs[0]);
    assert!(errs.is_empty(), "{rel}:\n  {}", errs.join("\n  "));
}

#[test]
fn kubelet_providers_are_installed_and_runnable() {
    let docs = yaml_docs("docker/credential-provider-config.yaml");
    let ds_docs = yaml_docs("docker/daemonset.yaml");
    let pod = &doc_of_kind(&ds_docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(init_command(pod)[1], "install", "the init container runs the installer");
    for p in docs[0]["providers"].as_sequence().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        assert!(
            acr_broker::install::BINARIES.contains(&name),
            "provider {name:?} is not installed by `acr-broker install` in the DaemonSet init container"
        );
        if name == "acr-broker" {
            // The kubelet runs `acr-broker <args>`: the subcommand must exist.
            let mut args: Vec<String> =
                p["args"].as_sequence().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
            args.push("--help".into());
            let out = Command::new(env!("CARGO_BIN_EXE_acr-broker")).args(&args).output().unwrap();
            assert!(out.status.success(), "acr-broker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if let Some(attrs) = p.get("tokenAttributes") {
            let keys: Vec<&str> = ["requiredServiceAccountAnnotationKeys", "optionalServiceAccountAnnotationKeys"]
                .iter()
                .flat_map(|f| attrs[*f].as_sequence().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            for want in
                ["k8s.aliyun.com/acr-instance-ids", "k8s.aliyun.com/acr-service-arns", "k8s.aliyun.com/acr-user-arns"]
            {
                assert!(keys.contains(&want), "kubelet would not pass {want} to the plugin");
            }
        }
    }
}
