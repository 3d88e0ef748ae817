//! `acr-broker containerd-hosts`: writes `DIR/<registry>/hosts.toml` so containerd (`ctr
//! --hosts-dir`, and the CRI plugin's `config_path`) sends pulls of each registry to the mirror
//! first, with the real registry as `server` behind it.
//!
//! containerd adds `?ns=<registry>` to every request to a mirror host, and goes on to the next
//! host (here the `server`) when the mirror answers 404. Files we write start with [`MARKER`]; a
//! file without it belongs to someone else and is replaced only with `--force`.

use std::path::{Path, PathBuf};

use crate::registry::RegistryHost;

/// The first line of every file this command writes.
pub const MARKER: &str = "# Written by acr-broker containerd-hosts";

/// What happened to one registry's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Created or replaced.
    Written(PathBuf),
    /// Already had exactly this content.
    Unchanged(PathBuf),
}

/// Why a file was not written.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// Not a registry host.
    #[error("registry {0:?}: {1}")]
    BadRegistry(String, String),
    /// The mirror URL is not `http://<loopback>:PORT`.
    #[error("mirror URL {0:?}: {1}")]
    BadMirror(String, &'static str),
    /// An existing file we did not write.
    #[error("{0} exists and was not written by acr-broker: move it aside or pass --force to replace it")]
    NotOurs(PathBuf),
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Checks a mirror URL: `http://` + a loopback address + port, nothing after it.
pub fn check_mirror_url(url: &str) -> Result<String, HostsError> {
    let bad = |why| HostsError::BadMirror(url.to_owned(), why);
    let rest = url.trim_end_matches('/').strip_prefix("http://").ok_or_else(|| bad("must start with http://"))?;
    let addr: std::net::SocketAddr =
        rest.parse().map_err(|_| bad("must be http://127.0.0.1:PORT (an address and a port)"))?;
    if !addr.ip().is_loopback() {
        return Err(bad("the mirror listens on loopback only"));
    }
    if addr.port() == 0 {
        return Err(bad("port 0 is not an address containerd can reach: give [mirror] listen a fixed port"));
    }
    Ok(format!("http://{addr}"))
}

/// The `hosts.toml` text for `registry` behind `mirror`.
pub fn hosts_toml(registry: &RegistryHost, mirror: &str) -> String {
    let scheme = if crate::aliyun::transport::is_loopback_host(registry.host()) { "http" } else { "https" };
    format!(
        "{MARKER}: pulls of {reg} ask the node-local acr-broker\n\
         # mirror first, which adds this node's registry credentials; on a 404 from it containerd\n\
         # goes on to the registry itself. Re-run the command to update; delete the file to stop.\n\
         server = \"{scheme}://{reg}\"\n\
         \n\
         [host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        reg = registry.as_str(),
    )
}

/// Writes `dir/<registry>/hosts.toml` for each registry; idempotent; refuses to replace a file
/// it did not write unless `force`. Stops at the first error.
pub fn write_all(dir: &Path, mirror: &str, registries: &[String], force: bool) -> Result<Vec<Written>, HostsError> {
    let mirror = check_mirror_url(mirror)?;
    let mut done = Vec::new();
    for r in registries {
        let host = RegistryHost::parse(r).map_err(|e| HostsError::BadRegistry(r.clone(), e.to_string()))?;
        done.push(write_one(dir, &host, &mirror, force)?);
    }
    Ok(done)
}

fn write_one(dir: &Path, registry: &RegistryHost, mirror: &str, force: bool) -> Result<Written, HostsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostsError::Io { path, source }
    };
    let sub = dir.join(registry.as_str());
    let file = sub.join("hosts.toml");
    let text = hosts_toml(registry, mirror);
    match std::fs::read_to_string(&file) {
        Ok(old) if old == text => return Ok(Written::Unchanged(file)),
        Ok(old) if !old.starts_with(MARKER) && !force => return Err(HostsError::NotOurs(file)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&file)(e)),
    }
    std::fs::create_dir_all(&sub).map_err(io(&sub))?;
    // Write beside and rename: containerd never reads half a file.
    let tmp = sub.join(".hosts.toml.acr-broker.tmp");
    std::fs::write(&tmp, &text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &file).map_err(io(&file))?;
    Ok(Written::Written(file))
}

/// `acr-broker containerd-hosts`: fills in the mirror URL and the registries from the config
/// file when not given, writes the files, and prints one line per registry.
pub fn command(
    dir: &Path,
    mirror: Option<String>,
    config_path: &Path,
    mut registries: Vec<String>,
    force: bool,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |m: String| {
        eprintln!("acr-broker containerd-hosts: {m}");
        ExitCode::FAILURE
    };
    let config = if mirror.is_none() || registries.is_empty() {
        match crate::config::Config::load(config_path) {
            Ok(c) => Some(c),
            Err(e) => {
                return fail(format!("{e}\n(name the registries and pass --mirror to run without a config file)"))
            }
        }
    } else {
        None
    };
    let from_config = config.as_ref().and_then(|c| c.mirror.as_ref());
    let mirror = match (mirror, from_config) {
        (Some(m), _) => m,
        (None, Some(m)) => format!("http://{}", m.listen),
        (None, None) => {
            return fail(format!("{} has no [mirror] listen: add it, or pass --mirror URL", config_path.display()))
        }
    };
    if registries.is_empty() {
        registries = from_config.map(|m| m.registries.clone()).unwrap_or_default();
    }
    if registries.is_empty() {
        return fail(format!("no registries named and {} lists none in [mirror] registries", config_path.display()));
    }
    match write_all(dir, &mirror, &registries, force) {
        Ok(done) => {
            for w in done {
                match w {
                    Written::Written(p) => println!("wrote     {}", p.display()),
                    Written::Unchanged(p) => println!("unchanged {}", p.display()),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACR: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";

    #[test]
    fn writes_once_then_is_idempotent_and_respects_foreign_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let regs = vec![ACR.to_owned(), String::from("127.0.0.1:5000")];
        let first = write_all(dir.path(), "http://127.0.0.1:5005/", &regs, false).expect("write");
        assert!(first.iter().all(|w| matches!(w, Written::Written(_))), "{first:?}");
        let text = std::fs::read_to_string(dir.path().join(ACR).join("hosts.toml")).expect("read");
        assert!(text.starts_with(MARKER));
        assert!(text.contains(&format!("server = \"https://{ACR}\"")), "{text}");
        assert!(text.contains("[host.\"http://127.0.0.1:5005\"]\n  capabilities = [\"pull\", \"resolve\"]"), "{text}");
        let local = std::fs::read_to_string(dir.path().join("127.0.0.1:5000/hosts.toml")).expect("read");
        assert!(local.contains("server = \"http://127.0.0.1:5000\""), "a loopback registry is plain http: {local}");
        let again = write_all(dir.path(), "http://127.0.0.1:5005", &regs, false).expect("again");
        assert!(again.iter().all(|w| matches!(w, Written::Unchanged(_))), "{again:?}");

        let foreign = dir.path().join(ACR).join("hosts.toml");
        std::fs::write(&foreign, "server = \"https://elsewhere\"\n").expect("write foreign");
        let err = write_all(dir.path(), "http://127.0.0.1:5005", &regs, false).expect_err("foreign file kept");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read_to_string(&foreign).expect("read"), "server = \"https://elsewhere\"\n");
        write_all(dir.path(), "http://127.0.0.1:5005", &regs, true).expect("forced");
        assert!(std::fs::read_to_string(&foreign).expect("read").starts_with(MARKER));
    }

    #[test]
    fn mirror_urls_must_be_plain_http_on_loopback() {
        assert_eq!(check_mirror_url("http://127.0.0.1:5005/").expect("ok"), "http://127.0.0.1:5005");
        assert_eq!(check_mirror_url("http://[::1]:5005").expect("ok"), "http://[::1]:5005");
        for bad in [
            "https://127.0.0.1:5005",
            "http://10.0.0.1:5005",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://localhost:5005/x",
        ] {
            assert!(check_mirror_url(bad).is_err(), "{bad}");
        }
        assert!(write_all(Path::new("/nonexistent"), "http://127.0.0.1:1", &[String::from("a b")], false).is_err());
    }
}
