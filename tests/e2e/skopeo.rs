//! Running `skopeo` (and the broker's own binaries) hermetically: empty HOME, a cleared
//! environment (no XDG_RUNTIME_DIR, XDG_CONFIG_HOME, DOCKER_CONFIG, REGISTRY_AUTH_FILE), a bin dir
//! holding only `docker-credential-acr-broker` in front of the system PATH, and the daemon socket
//! in `ACR_BROKER_SOCKET`. The test process's own environment is never changed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

/// Path of skopeo (Debian package `skopeo`).
pub const SKOPEO_BIN: &str = "/usr/bin/skopeo";

/// Longest any one child process may run.
const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// What a child process did.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub took: Duration,
}

impl Run {
    /// True on exit status 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Everything it printed, for assertion messages.
    pub fn show(&self) -> String {
        format!("exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A hermetic client environment in a temp dir.
pub struct ClientEnv {
    /// Root of everything below.
    pub root: tempfile::TempDir,
    /// The empty HOME.
    pub home: PathBuf,
    /// The bin dir prepended to PATH.
    pub bin: PathBuf,
}

impl ClientEnv {
    /// Creates the dirs and links `docker-credential-acr-broker` into the bin dir.
    pub fn new() -> ClientEnv {
        let root = tempfile::tempdir().expect("client tempdir");
        let home = root.path().join("home");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(&bin).expect("bin");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_docker-credential-acr-broker"),
            bin.join("docker-credential-acr-broker"),
        )
        .expect("link helper");
        ClientEnv { root, home, bin }
    }

    /// Writes an auth file (for `--authfile`) and returns its path.
    pub fn auth_file(&self, name: &str, json: &serde_json::Value) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::write(&path, json.to_string()).expect("write auth file");
        path
    }

    /// `{"credHelpers": {host: "acr-broker"}}` in `--authfile` form.
    pub fn helper_auth_file(&self, host: &str) -> PathBuf {
        self.auth_file(
            &format!("auth-{}.json", host.replace(':', "_")),
            &serde_json::json!({"credHelpers": {host: "acr-broker"}}),
        )
    }

    /// Writes `$HOME/.docker/config.json`.
    pub fn docker_config(&self, json: &serde_json::Value) {
        let dir = self.home.join(".docker");
        std::fs::create_dir_all(&dir).expect(".docker");
        std::fs::write(dir.join("config.json"), json.to_string()).expect("write docker config");
    }

    /// Runs `program args` with the hermetic environment and `stdin`, bounded by 30 s.
    pub async fn run(&self, program: &str, args: &[&str], socket: &Path, stdin: &[u8]) -> Run {
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", self.bin.display());
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("TMPDIR", self.root.path())
            .env("ACR_BROKER_SOCKET", socket)
            .current_dir(self.root.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let mut input = child.stdin.take().expect("stdin pipe");
        let stdin = stdin.to_vec();
        let feed = async move {
            let _ = input.write_all(&stdin).await;
            drop(input);
        };
        let (_, out) = tokio::join!(feed, tokio::time::timeout(CHILD_LIMIT, child.wait_with_output()));
        let out = out
            .unwrap_or_else(|_| panic!("{program} {args:?} ran longer than {CHILD_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        }
    }

    /// `skopeo ARGS` (logs each run with its time).
    pub async fn skopeo(&self, socket: &Path, args: &[&str]) -> Run {
        let r = self.run(SKOPEO_BIN, args, socket, b"").await;
        eprintln!("[e2e] skopeo {} -> exit {} in {:?}", redacted(args), r.code, r.took);
        if !r.ok() {
            eprintln!("[e2e]   stderr: {}", r.stderr.trim());
        }
        r
    }
}

/// The argument list with credential values replaced, for logs.
fn redacted(args: &[&str]) -> String {
    let mut out = Vec::with_capacity(args.len());
    let mut hide = false;
    for a in args {
        out.push(if hide { "<redacted>" } else { a });
        hide = matches!(*a, "--creds" | "--src-creds" | "--dest-creds" | "--registry-token" | "--dest-registry-token");
    }
    out.join(" ")
}
