//! The kubelet `CredentialProviderConfig` as acr-broker needs it: valid for the kubelet
//! ([`super::kubelet::validate`]), with an `acr-broker` provider that runs `kubelet-plugin`,
//! `matchImages` patterns that can match ACR images, and `tokenAttributes` that pass the three
//! `k8s.aliyun.com/acr-*` ServiceAccount annotations.
//!
//! How the kubelet matches (pkg/credentialprovider `URLsMatch`): the host is split at `.` and
//! each part globbed, so a pattern needs exactly as many parts as the image host; the port must
//! be equal; the pattern's path is a plain *prefix* of the image path, never a glob.

use std::path::Path;

use serde_yaml::Value;

use super::{kubelet, Finding, Severity};
use crate::policy::ANNOTATION_KEYS;

/// The provider name the kubelet runs as a binary in `--image-credential-provider-bin-dir`.
pub const PROVIDER_NAME: &str = "acr-broker";

/// Checks the kubelet credential provider config at `path`.
pub fn check_file(path: &Path) -> Vec<Finding> {
    let check = format!("kubelet {}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return vec![Finding::new(
                Severity::Error,
                check,
                format!("cannot read: {e}"),
                "pass the file the kubelet's --image-credential-provider-config names",
            )]
        }
    };
    check_text(&check, &text)
}

/// Checks a config given as YAML (or JSON) text; `check` labels the findings.
pub fn check_text(check: &str, text: &str) -> Vec<Finding> {
    let doc: Value = match serde_yaml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            return vec![Finding::new(Severity::Error, check, format!("not YAML: {e}"), "fix the syntax")];
        }
    };
    let mut out: Vec<Finding> = kubelet::validate(&doc)
        .into_iter()
        .map(|e| {
            Finding::new(Severity::Error, check, e, "the kubelet refuses to start with this config; fix the field")
        })
        .collect();
    let providers = doc["providers"].as_sequence().cloned().unwrap_or_default();
    let Some((i, p)) = providers.iter().enumerate().find(|(_, p)| p["name"].as_str() == Some(PROVIDER_NAME)) else {
        out.push(Finding::new(
            Severity::Error,
            check,
            format!("no provider named {PROVIDER_NAME:?}: the kubelet never asks acr-broker"),
            format!("add a provider `name: {PROVIDER_NAME}` with `args: [\"kubelet-plugin\"]` (the README has one)"),
        ));
        return out;
    };
    let at = format!("providers[{i}]");
    let args: Vec<&str> = p["args"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    if args != ["kubelet-plugin"] {
        out.push(Finding::new(
            Severity::Error,
            check,
            format!("{at}.args is {args:?}: the kubelet would run `acr-broker {}`", args.join(" ")),
            "set `args: [\"kubelet-plugin\"]`",
        ));
    }
    for (j, pattern) in p["matchImages"].as_sequence().into_iter().flatten().enumerate() {
        if let Some(pattern) = pattern.as_str() {
            if let Some(f) = check_pattern(check, &format!("{at}.matchImages[{j}]"), pattern) {
                out.push(f);
            }
        }
    }
    check_cache_duration(check, &at, p, &mut out);
    check_token_attributes(check, &at, p, &mut out);
    if out.iter().all(|f| f.severity < Severity::Warn) {
        out.push(Finding::ok(
            check,
            format!(
                "provider {PROVIDER_NAME:?} runs kubelet-plugin for {} pattern(s)",
                p["matchImages"].as_sequence().map_or(0, Vec::len)
            ),
        ));
    }
    out
}

/// A `matchImages` pattern that can never match an image, or no ACR image.
fn check_pattern(check: &str, at: &str, pattern: &str) -> Option<Finding> {
    let (host_port, path) = pattern.split_once('/').unwrap_or((pattern, ""));
    if path.contains(['*', '?', '[']) {
        return Some(Finding::new(
            Severity::Error,
            check,
            format!("{at} {pattern:?}: the path part is a prefix, not a glob, so this matches no image"),
            format!("drop the path (`{host_port}`) or give a literal prefix (`{host_port}/team`)"),
        ));
    }
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    // A wildcard pattern aimed at Alibaba Cloud must match at least one ACR host shape.
    if host.contains('*')
        && host.ends_with("aliyuncs.com")
        && !ACR_HOST_SHAPES.iter().any(|h| host_glob_matches(host, h))
    {
        return Some(Finding::new(
            Severity::Error,
            check,
            format!("{at} {pattern:?} matches no ACR host: the kubelet globs each dot-separated part on its own (`*` never spans a dot), and ACR hosts are <name>-registry[-vpc].<region>.cr.aliyuncs.com or registry[-intl][-vpc|-internal].<region>.aliyuncs.com"),
            "use `*.*.cr.aliyuncs.com` for Enterprise and `registry.*.aliyuncs.com` (and -vpc/-intl variants) for Personal",
        ));
    }
    None
}

/// One host of each ACR shape, to test wildcard patterns against.
const ACR_HOST_SHAPES: [&str; 7] = [
    "demo-registry.cn-hangzhou.cr.aliyuncs.com",
    "demo-registry-vpc.cn-hangzhou.cr.aliyuncs.com",
    "registry.cn-hangzhou.aliyuncs.com",
    "registry-vpc.cn-hangzhou.aliyuncs.com",
    "registry-intl.cn-hangzhou.aliyuncs.com",
    "registry-intl-vpc.cn-hangzhou.aliyuncs.com",
    "registry-internal.cn-hangzhou.aliyuncs.com",
];

/// The kubelet's host match: same number of dot-separated parts, each globbed (`*`, `?`).
fn host_glob_matches(pattern: &str, host: &str) -> bool {
    let (p, h): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), host.split('.').collect());
    p.len() == h.len() && p.iter().zip(&h).all(|(p, h)| glob(p.as_bytes(), h.as_bytes()))
}

/// `*` and `?` within one part (Go `path.Match` without classes).
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

fn check_cache_duration(check: &str, at: &str, p: &Value, out: &mut Vec<Finding>) {
    let Some(d) = p["defaultCacheDuration"].as_str() else { return };
    if let Ok(nanos) = kubelet::parse_go_duration(d) {
        if nanos > 3_600 * 1_000_000_000 {
            out.push(Finding::new(
                Severity::Warn,
                check,
                format!("{at}.defaultCacheDuration {d:?} is longer than an ACR credential lives (about an hour)"),
                "use \"5m\"; acr-broker answers with the credential's own cacheDuration anyway",
            ));
        }
    }
}

fn check_token_attributes(check: &str, at: &str, p: &Value, out: &mut Vec<Finding>) {
    let Some(attrs) = p.get("tokenAttributes") else {
        out.push(Finding::new(
            Severity::Info,
            check,
            format!("{at} has no tokenAttributes: pods' ServiceAccount annotations do not reach acr-broker, only the node defaults apply"),
            "on kubelet >= 1.33, add tokenAttributes with the three k8s.aliyun.com/acr-* keys (see the README)",
        ));
        return;
    };
    let listed: Vec<&str> = ["requiredServiceAccountAnnotationKeys", "optionalServiceAccountAnnotationKeys"]
        .iter()
        .flat_map(|k| attrs[*k].as_sequence().into_iter().flatten().filter_map(Value::as_str))
        .collect();
    for key in ANNOTATION_KEYS {
        if !listed.contains(&key) {
            out.push(Finding::new(
                Severity::Error,
                check,
                format!("{at}.tokenAttributes does not pass the annotation {key:?}: the kubelet drops it before acr-broker sees it"),
                format!("add {key:?} to optionalServiceAccountAnnotationKeys"),
            ));
        }
    }
    for key in listed.iter().filter(|k| k.contains("acr-") && !ANNOTATION_KEYS.contains(k)) {
        out.push(Finding::new(
            Severity::Error,
            check,
            format!("{at}.tokenAttributes lists {key:?}, which is not an acr-broker annotation"),
            format!("the keys are {}", ANNOTATION_KEYS.join(", ")),
        ));
    }
    out.push(Finding::new(
        Severity::Info,
        check,
        format!("{at} uses tokenAttributes: needs kubelet >= 1.33"),
        "on older kubelets remove tokenAttributes, or the kubelet refuses the whole config",
    ));
}
