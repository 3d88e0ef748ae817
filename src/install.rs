//! `acr-broker install --to DIR`: puts this build's two binaries onto a node, as the DaemonSet's
//! init container does (the image has no shell, so this replaces the old `sh -c` script).
//!
//! Rules that shape the code:
//! - the kubelet and docker may exec `DIR/acr-broker` at any moment, so a binary is written under
//!   a temporary name in `DIR`, fsynced, made 0755 and renamed over the old one (a reader sees the
//!   old file or the new one, never half of one); the directory is fsynced after the rename;
//! - a file whose content is already identical is left alone, so its mtime does not change and a
//!   restarted init container does no I/O;
//! - after installing, `DIR/acr-broker version` must print this build's version line, else the
//!   install fails loudly (a noexec mount, a wrong architecture, a truncated copy).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries an install copies, both found beside the running executable.
pub const BINARIES: [&str; 2] = ["acr-broker", "docker-credential-acr-broker"];
/// Mode of an installed binary.
pub const MODE: u32 = 0o755;
/// Mode of the socket directory after a hand-over: the daemon's uid owns it, root's group may enter.
pub const SOCKET_DIR_MODE: u32 = 0o750;

/// What `acr-broker version` prints: the line an install checks the installed copy against.
pub fn version_line() -> String {
    format!("acr-broker {}", env!("CARGO_PKG_VERSION"))
}

/// What an install should do.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    /// Directory holding the binaries to copy (normally the running executable's own).
    pub from: PathBuf,
    /// Destination directory (the kubelet's credential-provider bin dir on the node).
    pub to: PathBuf,
    /// Socket directory to hand over, with the uid that gets it (group 0, mode 0750).
    pub socket_dir: Option<(PathBuf, u32)>,
}

/// What happened to one binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written (new, or different from what was there).
    Installed(PathBuf),
    /// Already identical; not touched.
    Unchanged(PathBuf),
}

/// Why an install failed; every message names the path and ends in what to check.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The running executable's path could not be read.
    #[error("cannot find the running executable ({0}); run install from the image's /usr/local/bin/acr-broker")]
    NoExecutable(io::Error),
    /// A file operation failed.
    #[error("{what} {path}: {source}; check that the directory exists and is writable by this user")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The installed copy does not run or reports another version.
    #[error(
        "installed {path} but it does not answer as this build: want {want:?}, got {got}; \
         is the directory mounted noexec, or is this image for another CPU architecture?"
    )]
    Mismatch {
        /// The installed binary.
        path: PathBuf,
        /// The expected version line.
        want: String,
        /// What it printed (or why it did not run).
        got: String,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Io { what, path: path.to_path_buf(), source }
}

/// The directory of the running executable (where the image keeps both binaries).
pub fn own_dir() -> Result<PathBuf, InstallError> {
    let exe = std::env::current_exe().map_err(InstallError::NoExecutable)?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| InstallError::NoExecutable(io::Error::other("executable path has no parent")))
}

/// Runs the plan: both binaries, the optional socket-directory hand-over, then the version check.
pub fn run(plan: &InstallPlan) -> Result<Vec<Outcome>, InstallError> {
    let mut outcomes = Vec::with_capacity(BINARIES.len());
    for name in BINARIES {
        outcomes.push(install_file(&plan.from.join(name), &plan.to.join(name))?);
    }
    if let Some((dir, uid)) = &plan.socket_dir {
        hand_over(dir, *uid)?;
    }
    verify(&plan.to.join("acr-broker"))?;
    Ok(outcomes)
}

/// Copies `src` to `dst` atomically unless `dst` already has the same bytes.
pub fn install_file(src: &Path, dst: &Path) -> Result<Outcome, InstallError> {
    if same_content(src, dst)? {
        let mode = fs::metadata(dst).map_err(io_err("stat", dst))?.permissions().mode() & 0o7777;
        if mode != MODE {
            // Changes ctime only; the content and mtime stay.
            fs::set_permissions(dst, fs::Permissions::from_mode(MODE)).map_err(io_err("chmod", dst))?;
        }
        return Ok(Outcome::Unchanged(dst.to_path_buf()));
    }
    let dir = dst.parent().unwrap_or(Path::new("."));
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = temp_path(dir, &name);
    // A crash may have left it behind; in a container our pid is the same every time (1).
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove stale", &tmp)(e)),
    }
    let written = write_synced(src, &tmp).and_then(|()| fs::rename(&tmp, dst).map_err(io_err("rename onto", dst)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))?;
    Ok(Outcome::Installed(dst.to_path_buf()))
}

/// The temporary name a binary is written under before the rename (hidden, next to it).
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.install-{}", std::process::id()))
}

/// Writes a copy of `src` at `tmp` (which must not exist), mode 0755, flushed to disk.
fn write_synced(src: &Path, tmp: &Path) -> Result<(), InstallError> {
    let mut input = File::open(src).map_err(io_err("open", src))?;
    let mut out =
        OpenOptions::new().write(true).create_new(true).mode(MODE).open(tmp).map_err(io_err("create", tmp))?;
    io::copy(&mut input, &mut out).map_err(io_err("write", tmp))?;
    // The umask may have cleared bits the mode asked for.
    out.set_permissions(fs::Permissions::from_mode(MODE)).map_err(io_err("chmod", tmp))?;
    out.flush().and_then(|()| out.sync_all()).map_err(io_err("fsync", tmp))
}

/// True when `dst` exists and holds exactly the bytes of `src`.
fn same_content(src: &Path, dst: &Path) -> Result<bool, InstallError> {
    let src_len = fs::metadata(src).map_err(io_err("read", src))?.len();
    match fs::metadata(dst) {
        Ok(m) if m.is_file() && m.len() == src_len => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("stat", dst)(e)),
    }
    let mut a = File::open(src).map_err(io_err("open", src))?;
    let mut b = File::open(dst).map_err(io_err("open", dst))?;
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut a, &mut ba).map_err(io_err("read", src))?;
        let m = read_full(&mut b, &mut bb).map_err(io_err("read", dst))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Gives the socket directory to `uid` (group root) with mode 0750, so the daemon never runs as root.
pub fn hand_over(dir: &Path, uid: u32) -> Result<(), InstallError> {
    std::os::unix::fs::chown(dir, Some(uid), Some(0)).map_err(io_err("chown", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(SOCKET_DIR_MODE)).map_err(io_err("chmod", dir))
}

/// Runs `bin version` and checks that it prints this build's version line.
pub fn verify(bin: &Path) -> Result<(), InstallError> {
    let want = version_line();
    let mismatch = |got: String| InstallError::Mismatch { path: bin.to_path_buf(), want: want.clone(), got };
    let out = Command::new(bin).arg("version").output().map_err(|e| mismatch(format!("cannot run it: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || stdout.trim() != want {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(mismatch(format!("{} with stdout {:?}, stderr {:?}", out.status, stdout.trim(), stderr.trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn write(path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn copies_then_skips_identical_content_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        write(&src, &vec![7u8; 200_000]);
        assert_eq!(install_file(&src, &dst).unwrap(), Outcome::Installed(dst.clone()));
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&src).unwrap());
        assert_eq!(fs::metadata(&dst).unwrap().permissions().mode() & 0o7777, MODE);
        let before = fs::metadata(&dst).unwrap();
        assert_eq!(install_file(&src, &dst).unwrap(), Outcome::Unchanged(dst.clone()));
        let after = fs::metadata(&dst).unwrap();
        assert_eq!(
            (before.ino(), before.mtime(), before.mtime_nsec()),
            (after.ino(), after.mtime(), after.mtime_nsec())
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 2, "no temporary file left: {leftovers:?}");
    }

    #[test]
    fn different_content_of_the_same_length_is_replaced_by_rename() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let mut bytes = vec![1u8; 150_000];
        write(&dst, &bytes);
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o600)).unwrap();
        let old_ino = fs::metadata(&dst).unwrap().ino();
        bytes[140_000] = 2;
        write(&src, &bytes);
        assert_eq!(install_file(&src, &dst).unwrap(), Outcome::Installed(dst.clone()));
        let meta = fs::metadata(&dst).unwrap();
        assert_ne!(meta.ino(), old_ino, "replaced by rename, not rewritten in place");
        assert_eq!(meta.permissions().mode() & 0o7777, MODE);
        assert_eq!(fs::read(&dst).unwrap(), bytes);
    }

    #[test]
    fn a_stale_temporary_file_from_a_crash_does_not_block_the_install() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        write(&src, b"new binary");
        write(&temp_path(dir.path(), "dst"), b"half a bin");
        assert_eq!(install_file(&src, &dst).unwrap(), Outcome::Installed(dst.clone()));
        assert_eq!(fs::read(&dst).unwrap(), b"new binary");
        assert!(!temp_path(dir.path(), "dst").exists());
    }

    #[test]
    fn a_missing_source_names_the_path_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let e = install_file(&dir.path().join("nope"), &dir.path().join("dst")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn verify_fails_loudly_on_a_binary_that_answers_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("acr-broker");
        write(&fake, b"#!/bin/sh\necho acr-broker 0.0.1\n");
        fs::set_permissions(&fake, fs::Permissions::from_mode(MODE)).unwrap();
        let e = verify(&fake).unwrap_err().to_string();
        assert!(e.contains("0.0.1") && e.contains(&version_line()), "{e}");
        let missing = verify(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(missing.contains("cannot run it"), "{missing}");
    }
}
