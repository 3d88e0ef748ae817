//! containerd's `config_path` directory: `DIR/<registry>/hosts.toml`, as
//! `acr-broker containerd-hosts` writes it for the pull-through mirror:
//!
//! ```toml
//! server = "https://<registry>"
//! [host."http://127.0.0.1:PORT"]
//!   capabilities = ["pull", "resolve"]
//! ```
//!
//! containerd picks the file by the directory name (the registry host, `_default` for all), so a
//! `server` naming another host sends that registry's pulls elsewhere; the mirror speaks plain
//! HTTP with credentials attached, so it must be on loopback.

use std::path::Path;

use toml::Value;

use super::{Finding, Severity};
use crate::aliyun::transport::is_loopback_host;

/// Checks every `*/hosts.toml` under `dir`.
pub fn check_dir(dir: &Path) -> Vec<Finding> {
    let label = format!("containerd {}", dir.display());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return vec![Finding::new(
                Severity::Error,
                label,
                format!("cannot read the directory: {e}"),
                "pass containerd's config_path (e.g. /etc/containerd/certs.d), as set under [plugins.\"io.containerd.grpc.v1.cri\".registry]",
            )]
        }
    };
    let mut dirs: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    let mut out = Vec::new();
    for sub in &dirs {
        let file = sub.join("hosts.toml");
        let name = sub.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match std::fs::read_to_string(&file) {
            Ok(text) => out.extend(check_hosts_toml(&format!("containerd {}", file.display()), &name, &text)),
            Err(e) => out.push(Finding::new(
                Severity::Warn,
                format!("containerd {}", sub.display()),
                format!("no readable hosts.toml ({e}): containerd ignores this directory"),
                "remove the directory or write its hosts.toml (`acr-broker containerd-hosts`)",
            )),
        }
    }
    if dirs.is_empty() {
        out.push(Finding::new(
            Severity::Warn,
            label,
            "no <registry>/hosts.toml directories: containerd does not use the mirror",
            "run `acr-broker containerd-hosts` to write them",
        ));
    }
    out
}

/// Checks one `hosts.toml` found in the directory `dir_name`.
pub fn check_hosts_toml(check: &str, dir_name: &str, text: &str) -> Vec<Finding> {
    let doc: toml::Table = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            return vec![Finding::new(
                Severity::Error,
                check,
                format!("not valid TOML: {}", e.message()),
                "fix the syntax; containerd skips the registry's mirrors otherwise",
            )]
        }
    };
    let mut out = Vec::new();
    match doc.get("server").map(|s| s.as_str()) {
        Some(Some(server)) => {
            let host = server.split_once("://").map_or(server, |(_, r)| r).trim_end_matches('/');
            if dir_name != "_default" && host != dir_name {
                out.push(Finding::new(
                    Severity::Error,
                    check,
                    format!("server {server:?} is not the registry this directory is for ({dir_name:?}): its pulls fall back to {host}"),
                    format!("set server = \"https://{dir_name}\", or move the file to {host}/hosts.toml"),
                ));
            }
        }
        Some(None) => out.push(Finding::new(
            Severity::Error,
            check,
            "server is not a string",
            format!("server = \"https://{dir_name}\""),
        )),
        None if dir_name != "_default" => out.push(Finding::new(
            Severity::Warn,
            check,
            "no server: when every mirror fails containerd has no upstream to fall back to",
            format!("add server = \"https://{dir_name}\""),
        )),
        None => {}
    }
    let hosts = doc.get("host").and_then(Value::as_table).cloned().unwrap_or_default();
    let mut mirrors = 0;
    for (url, entry) in &hosts {
        let (scheme, rest) = url.split_once("://").unwrap_or(("https", url.as_str()));
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let caps: Vec<&str> = entry
            .get("capabilities")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if scheme == "http" && !is_loopback_host(host) {
            out.push(Finding::new(
                Severity::Error,
                check,
                format!("mirror {url:?} is plain HTTP to a host that is not loopback: pulls and their credentials cross the network in clear"),
                "point it at the node-local mirror (http://127.0.0.1:PORT, [mirror] listen) or use https://",
            ));
            continue;
        }
        if is_loopback_host(host) {
            mirrors += 1;
            for need in ["pull", "resolve"] {
                if !caps.contains(&need) {
                    out.push(Finding::new(
                        Severity::Error,
                        check,
                        format!("mirror {url:?} lacks the {need:?} capability: containerd does not {need} through it"),
                        "set capabilities = [\"pull\", \"resolve\"]",
                    ));
                }
            }
        }
    }
    if mirrors == 0 && out.is_empty() {
        out.push(Finding::new(
            Severity::Info,
            check,
            "no loopback mirror: this registry is pulled without acr-broker's mirror",
            "run `acr-broker containerd-hosts` if it is an ACR registry",
        ));
    } else if out.is_empty() {
        out.push(Finding::ok(check, format!("{mirrors} loopback mirror(s) with pull and resolve")));
    }
    out
}
