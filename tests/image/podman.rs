//! Debian's podman 4.3 with runc, as root, in a storage of the test's own (vfs driver, its own
//! graph/run/tmp directories), with the flags that work on these machines: `--runtime runc`,
//! `--network=host` and explicit `--ulimit` values (the defaults fail with an rlimit error here).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Limits given to every container (the defaults fail with `setrlimit RLIMIT_NOFILE` here).
const ULIMITS: [&str; 4] = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"];

/// One private podman store; containers started through it are removed on drop.
pub struct Podman {
    /// `storage.conf` pointing the vfs driver into the test's directory.
    pub storage_conf: PathBuf,
    tmpdir: PathBuf,
    containers: std::sync::Mutex<Vec<String>>,
}

impl Podman {
    /// A store under `dir` (which must outlive it).
    pub fn new(dir: &Path) -> Podman {
        std::fs::create_dir_all(dir).expect("podman dir");
        let storage_conf = dir.join("storage.conf");
        let conf = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("graph").display(),
            dir.join("run").display()
        );
        std::fs::write(&storage_conf, conf).expect("write storage.conf");
        let tmpdir = dir.join("libpod-tmp");
        std::fs::create_dir_all(&tmpdir).expect("podman tmpdir");
        Podman { storage_conf, tmpdir, containers: std::sync::Mutex::new(Vec::new()) }
    }

    /// `podman` with this store (for build-image.sh, the environment alone selects it).
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .arg("--runtime")
            .arg("runc")
            .arg("--tmpdir")
            .arg(&self.tmpdir)
            .arg("--events-backend")
            .arg("file");
        c
    }

    /// Runs `podman args…` and returns its output (never panics on a non-zero exit).
    pub fn output(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run podman")
    }

    /// Runs `podman args…`, panicking with its stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "podman {args:?} failed ({}):\n{}", out.status, text(&out.stderr));
        text(&out.stdout)
    }

    /// `podman run --rm` of `image` with the working flags, host network and `extra` run options,
    /// `entrypoint` (an absolute path in the image) and `args`.
    pub fn run_once(&self, image: &str, extra: &[&str], entrypoint: &str, args: &[&str]) -> Output {
        let mut all = vec!["run", "--rm", "--network=host"];
        all.extend(ULIMITS);
        all.extend(extra);
        all.extend(["--entrypoint", entrypoint, image]);
        all.extend(args);
        self.output(&all)
    }

    /// Starts `image` detached under `name` with its own entrypoint (the daemon); removed on drop.
    pub fn start(&self, name: &str, image: &str, extra: &[&str]) -> Output {
        self.containers.lock().unwrap().push(name.to_owned());
        let mut all = vec!["run", "--detach", "--name", name, "--network=host"];
        all.extend(ULIMITS);
        all.extend(extra);
        all.push(image);
        self.output(&all)
    }

    /// `{{.State.…}}` of a container.
    pub fn state(&self, name: &str, field: &str) -> String {
        self.ok(&["inspect", "--format", &format!("{{{{.State.{field}}}}}"), name]).trim().to_owned()
    }

    /// The container's log (stdout and stderr).
    pub fn logs(&self, name: &str) -> String {
        let out = self.output(&["logs", name]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// Removes a container started with [`Podman::start`] (also done on drop).
    pub fn remove(&self, name: &str) {
        let _ = self.output(&["rm", "--force", "--time", "0", name]);
        self.containers.lock().unwrap().retain(|n| n != name);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.containers.lock().unwrap());
        for name in names {
            let _ = self.output(&["rm", "--force", "--time", "0", &name]);
        }
    }
}

/// Bytes as text, lossily.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
