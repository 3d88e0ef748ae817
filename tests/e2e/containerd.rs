//! A real containerd 1.6 (Debian package `containerd`) as a child process with its root, state,
//! sockets and CRI registry `config_path` in a temp dir (native snapshotter, no TCP listeners
//! but the CRI streaming server on an ephemeral loopback port), killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon binary.
pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";
/// Its client.
pub const CTR_BIN: &str = "/usr/bin/ctr";

/// A running containerd.
pub struct Containerd {
    /// Its directory (config, root, state, log).
    pub dir: PathBuf,
    /// The gRPC socket (`ctr --address`, CRI).
    pub socket: PathBuf,
    child: Child,
}

/// What one `ctr` run did.
pub struct CtrRun {
    /// Exit status was 0.
    pub ok: bool,
    /// stdout + stderr, for assertions and failure messages.
    pub output: String,
}

impl Containerd {
    /// Starts containerd under `dir` with the CRI plugin reading `hosts_dir` (`config_path`);
    /// waits (15 s at most) until `ctr version` answers.
    pub async fn start(dir: &Path, hosts_dir: &Path) -> Containerd {
        Containerd::start_with(dir, hosts_dir, "shared").await
    }

    /// Like [`Containerd::start`] with a content sharing policy between namespaces (`"isolated"`:
    /// a fetch in a new namespace downloads every blob again, as the bench needs).
    pub async fn start_with(dir: &Path, hosts_dir: &Path, content_sharing: &str) -> Containerd {
        std::fs::create_dir_all(dir).expect("containerd dir");
        let socket = dir.join("containerd.sock");
        let d = dir.display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \
             \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \
             \"io.containerd.internal.v1.tracing\", \"io.containerd.tracing.processor.v1.otlp\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n  level = \"debug\"\n[metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n\
             [plugins.\"io.containerd.metadata.v1.bolt\"]\n  content_sharing_policy = \"{content_sharing}\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n  disable_tcp_service = true\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    snapshotter = \"native\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"{hosts}\"\n",
            sock = socket.display(),
            hosts = hosts_dir.display(),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).expect("write containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let child = Command::new(CONTAINERD_BIN)
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut c = Containerd { dir: dir.to_path_buf(), socket, child };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("containerd exited early ({status}); log:\n{}", c.log());
            }
            if c.socket.exists() && c.ctr(&["version"]).await.ok {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "containerd not up after 15 s; log:\n{}", c.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c
    }

    /// Runs `ctr --address <socket> ARGS` (60 s at most) with an empty environment.
    pub async fn ctr(&self, args: &[&str]) -> CtrRun {
        self.ctr_with_limit(args, Duration::from_secs(60)).await
    }

    /// Like [`Containerd::ctr`], bounded by `limit`.
    pub async fn ctr_with_limit(&self, args: &[&str], limit: Duration) -> CtrRun {
        let run = tokio::process::Command::new(CTR_BIN)
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &self.dir)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(out)) => CtrRun {
                ok: out.status.success(),
                output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            },
            Ok(Err(e)) => CtrRun { ok: false, output: format!("cannot run ctr: {e}") },
            Err(_) => CtrRun { ok: false, output: format!("ctr {}: no answer within {limit:?}", args.join(" ")) },
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
