//! `acr-broker serve --dev` works the way its banner says, as a real process (issue: operations).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_mode_serves_every_sample_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("dev.sock");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_acr-broker"))
        .args(["serve", "--dev"])
        .env("ACR_BROKER_SOCKET", &socket)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start acr-broker serve --dev");
    let stdout = daemon.stdout.take().expect("stdout");
    let mut banner = String::new();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                banner.push_str(&line);
                banner.push('\n');
                if line.contains("Ctrl-C") {
                    break;
                }
            }
            _ => break,
        }
    }
    assert!(banner.contains(&socket.display().to_string()), "banner names the socket:\n{banner}");
    assert!(banner.contains("/metrics"), "banner names the metrics URL:\n{banner}");

    let get = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_acr-broker"))
            .arg("get")
            .args(args)
            .env("ACR_BROKER_SOCKET", &socket)
            .output()
            .expect("acr-broker get")
    };
    let cases: [(&[&str], &str); 4] = [
        (&["demo-registry.cn-hangzhou.cr.aliyuncs.com"], "cri-devaaaaaaaaaaaa01"),
        (
            &["registry.demo.example.com", "-a", "k8s.aliyun.com/acr-instance-ids=cri-devaaaaaaaaaaaa01"],
            "cri-devaaaaaaaaaaaa01",
        ),
        (
            &[
                "partner-registry.cn-beijing.cr.aliyuncs.com",
                "-a",
                "k8s.aliyun.com/acr-service-arns=acs:ram::1111111111111111:role/eci-acr-service",
                "-a",
                "k8s.aliyun.com/acr-user-arns=acs:ram::2222222222222222:role/eci-acr-user",
            ],
            "cri-devbbbbbbbbbbbb02",
        ),
        (&["registry.cn-hangzhou.aliyuncs.com"], "personal"),
    ];
    for (args, expect) in cases {
        let out = get(args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(expect), "{args:?}: {text}");
        assert!(text.contains("--show-password"), "password hidden by default: {text}");
    }
    let shown = get(&["demo-registry.cn-hangzhou.cr.aliyuncs.com", "--show-password"]);
    assert!(!String::from_utf8_lossy(&shown.stdout).contains("--show-password"));
    let not_ours = get(&["docker.io"]);
    assert_eq!(not_ours.status.code(), Some(2), "not ACR: exit 2");

    let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = daemon.try_wait() {
            assert!(status.success(), "dev mode exits cleanly on SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "dev mode did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!socket.exists(), "socket removed on shutdown");
}

/// Every command line in the banner runs as printed, from another directory, with nothing of
/// ours on PATH (a fresh clone); `--config` next to `--dev` is reported as ignored.
#[test]
fn banner_commands_run_as_printed_from_anywhere() {
    let runtime_dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_acr-broker"))
        .args(["serve", "--dev", "--config", "/etc/acr-broker/unused.toml"])
        .env_remove("ACR_BROKER_SOCKET")
        .env("XDG_RUNTIME_DIR", runtime_dir.path())
        .current_dir(elsewhere.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start acr-broker serve --dev");
    let stderr = daemon.stderr.take().expect("stderr");
    let stderr_text = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut banner = Vec::new();
    for line in BufReader::new(daemon.stdout.take().expect("stdout")).lines() {
        let Ok(line) = line else { break };
        let done = line.contains("Ctrl-C");
        banner.push(line);
        if done {
            break;
        }
    }
    let export = banner.iter().find(|l| l.trim_start().starts_with("export ACR_BROKER_SOCKET=")).expect("export line");
    assert!(export.contains(&runtime_dir.path().display().to_string()), "socket does not depend on the cwd: {export}");
    let commands: Vec<&String> =
        banner.iter().filter(|l| l.starts_with("  ") && !l.contains("export ") && !l.trim().is_empty()).collect();
    assert!(commands.len() >= 6, "{banner:?}");
    let curl = Command::new("sh").args(["-c", "command -v curl"]).status().map(|s| s.success()).unwrap_or(false);
    for cmd in commands {
        if cmd.contains("curl ") && !curl {
            assert!(std::env::var_os("CI").is_none(), "CI must have curl");
            continue;
        }
        let out = Command::new("sh")
            .args(["-c", &format!("{}\n{}", export.trim(), cmd.trim())])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir("/")
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{cmd}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let _ = daemon.wait();
    let err = stderr_text.join().unwrap_or_default();
    assert!(err.contains("--config /etc/acr-broker/unused.toml is ignored in dev mode"), "{err}");
}
