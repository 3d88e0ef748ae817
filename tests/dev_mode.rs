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
