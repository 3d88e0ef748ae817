//! `acr-broker doctor`: checks a node's whole setup and prints one finding per line, each with
//! its severity and the fix, so "why does this pull not get a credential" has one command.
//!
//! Each check lives in its own module and returns [`Finding`]s; nothing here changes anything
//! on the node, and no secret is ever printed (the identity check reports "reachable" or the
//! error, never what it read). Exit status: 1 when any finding is an error, else 0.

pub mod containerd;
pub mod docker;
pub mod kubelet;
pub mod node;
pub mod provider;

use std::path::PathBuf;
use std::process::ExitCode;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Worth knowing; nothing to fix.
    Info,
    /// Works today but is fragile or surprising; the fix is recommended.
    Warn,
    /// Pulls will fail (or silently not use acr-broker) until fixed; `doctor` exits 1.
    Error,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "ERROR",
        }
    }
}

/// One line of the report: what was checked, what was found, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// The area, e.g. `config`, `socket`, `kubelet /etc/kubernetes/credential-provider.yaml`.
    pub check: String,
    /// What was found.
    pub message: String,
    /// What to do (empty for `ok`).
    pub fix: String,
}

impl Finding {
    /// A passed check.
    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding { severity: Severity::Ok, check: check.into(), message: message.into(), fix: String::new() }
    }

    /// A finding with a fix.
    pub fn new(
        severity: Severity,
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding { severity, check: check.into(), message: message.into(), fix: fix.into() }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        write!(f, "{:<5} {}: {}", self.severity.label(), self.check, one_line(&self.message))?;
        if !self.fix.is_empty() {
            write!(f, " -- fix: {}", one_line(&self.fix))?;
        }
        Ok(())
    }
}

/// `acr-broker doctor` options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DoctorArgs {
    /// The daemon's configuration file [default: /etc/acr-broker/config.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The kubelet `--image-credential-provider-config` file to check.
    #[arg(long)]
    pub kubelet_config: Option<PathBuf>,
    /// A docker client `config.json` to check (e.g. ~/.docker/config.json).
    #[arg(long)]
    pub docker_config: Option<PathBuf>,
    /// A containerd `config_path` directory of `<registry>/hosts.toml` files to check
    /// (e.g. /etc/containerd/certs.d).
    #[arg(long)]
    pub containerd_hosts: Option<PathBuf>,
    /// Skip the checks that need the network or the daemon (config and files only).
    #[arg(long)]
    pub offline: bool,
}

/// Runs every check `args` asks for, in order: config, daemon, identity, clock, files.
pub fn run(args: &DoctorArgs) -> Vec<Finding> {
    let mut findings = Vec::new();
    let config = node::check_config(args.config.as_deref(), &mut findings);
    if !args.offline {
        node::check_daemon(config.as_ref(), &mut findings);
        if let Some(config) = &config {
            node::check_identity_and_clock(config, &mut findings);
        }
    }
    if let Some(path) = &args.kubelet_config {
        findings.extend(provider::check_file(path));
    }
    if let Some(path) = &args.docker_config {
        findings.extend(docker::check_file(path));
    }
    if let Some(dir) = &args.containerd_hosts {
        findings.extend(containerd::check_dir(dir));
    }
    findings
}

/// `acr-broker doctor`: prints the findings and a summary; exit 1 on any error.
pub fn main(args: &DoctorArgs) -> ExitCode {
    let findings = run(args);
    for f in &findings {
        println!("{f}");
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warn));
    println!("{errors} error(s), {warnings} warning(s), {} check(s) passed", count(Severity::Ok));
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The findings of `check` at `severity` or worse (tests use it to assert what was reported).
pub fn worst(findings: &[Finding], severity: Severity) -> Vec<&Finding> {
    findings.iter().filter(|f| f.severity >= severity).collect()
}

#[cfg(test)]
mod tests;
