//! The docker client's `config.json`: `credHelpers` keys are matched against the registry host
//! exactly (`host[:port]`), so a URL, a path or a wildcard never matches and the pull goes
//! anonymous; `credsStore: acr-broker` sends every registry (docker.io included) to the helper
//! and makes `docker login` to other registries fail, so `credHelpers` is the better fit.

use std::path::Path;

use serde_json::Value;

use super::{Finding, Severity};
use crate::registry::RegistryHost;

/// The helper name docker derives `docker-credential-<name>` from.
pub const HELPER_NAME: &str = "acr-broker";

/// Checks a docker `config.json` at `path`.
pub fn check_file(path: &Path) -> Vec<Finding> {
    let check = format!("docker {}", path.display());
    match std::fs::read_to_string(path) {
        Ok(text) => check_text(&check, &text),
        Err(e) => vec![Finding::new(
            Severity::Error,
            check,
            format!("cannot read: {e}"),
            "pass the config.json of the user that pulls (e.g. ~/.docker/config.json, /root/.docker/config.json)",
        )],
    }
}

/// Checks a docker config given as JSON text; `check` labels the findings.
pub fn check_text(check: &str, text: &str) -> Vec<Finding> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(d) => d,
        Err(e) => return vec![Finding::new(Severity::Error, check, format!("not JSON: {e}"), "fix the syntax")],
    };
    let mut out = Vec::new();
    if doc["credsStore"].as_str() == Some(HELPER_NAME) {
        out.push(Finding::new(
            Severity::Warn,
            check,
            "credsStore is \"acr-broker\": every registry's lookups (docker.io too) go to acr-broker, and `docker login` elsewhere fails",
            "remove credsStore and list the ACR hosts under credHelpers: {\"<host>\": \"acr-broker\"}",
        ));
    }
    let helpers = doc["credHelpers"].as_object();
    let mut ours = 0;
    for (key, helper) in helpers.into_iter().flatten() {
        let is_ours = helper.as_str() == Some(HELPER_NAME);
        ours += usize::from(is_ours);
        if let Some(problem) = key_problem(key) {
            out.push(Finding::new(
                Severity::Error,
                check,
                format!(
                    "credHelpers key {key:?} {problem}: docker compares the registry host exactly, so it never matches"
                ),
                format!("use the bare host[:port], e.g. {:?}", suggested_key(key)),
            ));
        }
    }
    if ours == 0 && doc["credsStore"].as_str() != Some(HELPER_NAME) {
        out.push(Finding::new(
            Severity::Error,
            check,
            "no credHelpers entry uses acr-broker: docker never asks it",
            "add \"credHelpers\": {\"<name>-registry.<region>.cr.aliyuncs.com\": \"acr-broker\"}",
        ));
    }
    if out.iter().all(|f| f.severity < Severity::Warn) {
        out.push(Finding::ok(check, format!("{ours} registr(y/ies) use the acr-broker credential helper")));
    }
    out
}

/// Why `key` is not a `host[:port]` docker can match, or `None` when it is one.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.contains("://") {
        return Some("is a URL");
    }
    if key.contains('/') {
        return Some("has a path");
    }
    if key.contains('*') {
        return Some("is a wildcard (docker has none)");
    }
    if key != key.trim() || key.is_empty() {
        return Some("has spaces around it");
    }
    RegistryHost::parse(key).err().map(|_| "is not a host[:port]")
}

/// The `host[:port]` inside a URL-ish key.
fn suggested_key(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).trim().to_owned()
}
