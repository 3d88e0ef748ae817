//! One test per seeded mistake in a kubelet, docker or containerd file, and the good setup
//! (the shipped kubelet config, a credHelpers docker config, the hosts.toml
//! `acr-broker containerd-hosts` writes) that passes every check.

use super::*;

/// The kubelet config shipped in docker/ (what the DaemonSet installs).
const GOOD_KUBELET: &str = include_str!("../../docker/credential-provider-config.yaml");
const GOOD_DOCKER: &str = r#"{"auths": {}, "credHelpers": {"demo-registry.cn-hangzhou.cr.aliyuncs.com": "acr-broker",
  "registry.cn-hangzhou.aliyuncs.com": "acr-broker", "localhost:5000": "acr-broker"}}"#;
const REGISTRY: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";
const GOOD_HOSTS: &str = "server = \"https://demo-registry.cn-hangzhou.cr.aliyuncs.com\"\n\n\
                          [host.\"http://127.0.0.1:5005\"]\n  capabilities = [\"pull\", \"resolve\"]\n";

fn kubelet(text: &str) -> Vec<Finding> {
    provider::check_text("kubelet", text)
}

fn docker(text: &str) -> Vec<Finding> {
    docker::check_text("docker", text)
}

fn hosts(dir: &str, text: &str) -> Vec<Finding> {
    containerd::check_hosts_toml("containerd", dir, text)
}

/// The good kubelet config with one line replaced (the edit must apply).
fn kubelet_with(from: &str, to: &str) -> String {
    assert!(GOOD_KUBELET.contains(from), "the shipped config no longer has {from:?}");
    GOOD_KUBELET.replacen(from, to, 1)
}

/// `findings` hold a finding of `severity` or worse whose text has `want`, and nothing worse.
fn assert_found(findings: &[Finding], severity: Severity, want: &str) {
    let hit = findings.iter().any(|f| f.severity == severity && f.to_string().contains(want));
    let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(hit, "want a {severity:?} finding with {want:?}:\n{}", text.join("\n"));
    assert!(findings.iter().all(|f| !f.fix.is_empty() || f.severity <= Severity::Info), "every problem has a fix");
}

macro_rules! mistakes {
    ($($name:ident: $findings:expr => $severity:ident, $want:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_found(&$findings, Severity::$severity, $want);
            }
        )*
    };
}

mistakes! {
    // === kubelet CredentialProviderConfig ===
    kubelet_old_api_version: kubelet(&kubelet_with("kubelet.config.k8s.io/v1\n", "kubelet.config.k8s.io/v1alpha1\n"))
        => Error, "apiVersion";
    kubelet_provider_named_after_another_binary: kubelet(&kubelet_with("name: acr-broker", "name: docker-credential-acr-broker"))
        => Error, "no provider named \"acr-broker\"";
    kubelet_args_missing_the_subcommand: kubelet(&kubelet_with("args: [\"kubelet-plugin\"]", "args: []"))
        => Error, "set `args: [\"kubelet-plugin\"]`";
    kubelet_args_naming_the_wrong_subcommand: kubelet(&kubelet_with("args: [\"kubelet-plugin\"]", "args: [\"serve\"]"))
        => Error, "`acr-broker serve`";
    kubelet_path_glob_never_matches: kubelet(&kubelet_with("- \"*.*.cr.aliyuncs.com\"", "- \"demo-registry.cn-hangzhou.cr.aliyuncs.com/*\""))
        => Error, "prefix, not a glob";
    kubelet_wildcard_spanning_dots_matches_no_acr_host: kubelet(&kubelet_with("- \"*.*.cr.aliyuncs.com\"", "- \"*.cr.aliyuncs.com\""))
        => Error, "matches no ACR host";
    kubelet_wildcard_too_short: kubelet(&kubelet_with("- \"*.*.cr.aliyuncs.com\"", "- \"*.aliyuncs.com\""))
        => Error, "matches no ACR host";
    kubelet_pattern_with_scheme: kubelet(&kubelet_with("- \"*.*.cr.aliyuncs.com\"", "- \"https://*.*.cr.aliyuncs.com\""))
        => Error, "scheme";
    kubelet_missing_cache_type: kubelet(&kubelet_with("cacheType: ServiceAccount", ""))
        => Error, "cacheType";
    kubelet_annotation_key_not_passed: kubelet(&kubelet_with("- \"k8s.aliyun.com/acr-user-arns\"", ""))
        => Error, "does not pass the annotation \"k8s.aliyun.com/acr-user-arns\"";
    kubelet_misspelled_annotation_key: kubelet(&kubelet_with("- \"k8s.aliyun.com/acr-user-arns\"", "- \"k8s.aliyun.com/acr-user-arn\""))
        => Error, "\"k8s.aliyun.com/acr-user-arn\", which is not an acr-broker annotation";
    kubelet_missing_default_cache_duration: kubelet(&kubelet_with("defaultCacheDuration: \"10m\"", ""))
        => Error, "defaultCacheDuration: required";
    kubelet_unparsable_default_cache_duration: kubelet(&kubelet_with("defaultCacheDuration: \"10m\"", "defaultCacheDuration: \"10 minutes\""))
        => Error, "not a Go duration";
    kubelet_default_cache_duration_longer_than_a_credential: kubelet(&kubelet_with("defaultCacheDuration: \"10m\"", "defaultCacheDuration: \"12h\""))
        => Warn, "longer than an ACR credential lives";
    kubelet_not_yaml: kubelet("providers: [") => Error, "not YAML";

    // === docker config.json ===
    docker_cred_helpers_key_is_a_url: docker(r#"{"credHelpers": {"https://demo-registry.cn-hangzhou.cr.aliyuncs.com": "acr-broker"}}"#)
        => Error, "is a URL";
    docker_cred_helpers_key_has_a_path: docker(r#"{"credHelpers": {"demo-registry.cn-hangzhou.cr.aliyuncs.com/team": "acr-broker"}}"#)
        => Error, "has a path";
    docker_cred_helpers_key_is_a_wildcard: docker(r#"{"credHelpers": {"*.cr.aliyuncs.com": "acr-broker"}}"#)
        => Error, "wildcard";
    docker_creds_store_instead_of_cred_helpers: docker(r#"{"credsStore": "acr-broker"}"#)
        => Warn, "remove credsStore";
    docker_no_entry_for_acr_broker: docker(r#"{"credHelpers": {"gcr.io": "gcloud"}}"#)
        => Error, "docker never asks it";
    docker_not_json: docker("{credHelpers:}") => Error, "not JSON";

    // === containerd hosts.toml ===
    containerd_not_toml: hosts(REGISTRY, "server = \n") => Error, "not valid TOML";
    containerd_server_for_another_registry: hosts(REGISTRY, &GOOD_HOSTS.replace("demo-registry.cn-hangzhou", "other-registry.cn-beijing"))
        => Error, "is not the registry this directory is for";
    containerd_mirror_off_loopback: hosts(REGISTRY, &GOOD_HOSTS.replace("127.0.0.1", "10.0.0.5"))
        => Error, "not loopback";
    containerd_mirror_without_resolve: hosts(REGISTRY, &GOOD_HOSTS.replace(", \"resolve\"", ""))
        => Error, "lacks the \"resolve\" capability";
    containerd_no_server: hosts(REGISTRY, &GOOD_HOSTS.replace("server = \"https://demo-registry.cn-hangzhou.cr.aliyuncs.com\"\n", ""))
        => Warn, "no server";
}

#[test]
fn the_good_setup_passes_every_check() {
    for (what, findings) in [
        ("kubelet", kubelet(GOOD_KUBELET)),
        ("docker", docker(GOOD_DOCKER)),
        ("containerd", hosts(REGISTRY, GOOD_HOSTS)),
    ] {
        let bad: Vec<String> = worst(&findings, Severity::Warn).iter().map(ToString::to_string).collect();
        assert!(bad.is_empty(), "{what}: {bad:?}");
        assert!(findings.iter().any(|f| f.severity == Severity::Ok), "{what}: {findings:?}");
    }
}

#[test]
fn the_containerd_dir_is_walked_per_registry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(REGISTRY)).unwrap();
    std::fs::write(dir.path().join(REGISTRY).join("hosts.toml"), GOOD_HOSTS).unwrap();
    let findings = containerd::check_dir(dir.path());
    assert!(worst(&findings, Severity::Warn).is_empty(), "{findings:?}");
    std::fs::create_dir(dir.path().join("registry.cn-beijing.aliyuncs.com")).unwrap();
    std::fs::write(dir.path().join("registry.cn-beijing.aliyuncs.com/hosts.toml"), GOOD_HOSTS).unwrap();
    assert_found(&containerd::check_dir(dir.path()), Severity::Error, "registry.cn-beijing.aliyuncs.com/hosts.toml");
}

#[test]
fn a_finding_is_one_line_with_severity_and_fix() {
    let f = Finding::new(Severity::Error, "docker x.json", "credHelpers key \"https://h\"\nis a URL", "use \"h\"");
    assert_eq!(f.to_string(), "ERROR docker x.json: credHelpers key \"https://h\" is a URL -- fix: use \"h\"");
    assert_eq!(Finding::ok("config", "valid").to_string(), "ok    config: valid");
}
