use super::*;

const MINIMAL: &str = "[aliyun]\nregion = \"cn-hangzhou\"\n";

#[test]
fn minimal_config_takes_the_documented_defaults() {
    let c = Config::from_toml(MINIMAL, "t").expect("valid");
    assert_eq!(c.server.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(c.server.socket_mode, 0o660);
    assert_eq!(c.server.allowed_uids, vec![0]);
    assert_eq!(c.aliyun.sts_endpoint, "https://sts.cn-hangzhou.aliyuncs.com");
    assert_eq!(c.aliyun.cr_endpoint, DEFAULT_CR_ENDPOINT);
    assert!(matches!(c.identity, IdentityConfig::Default));
    assert_eq!(c.cache.refresh_fraction, 0.5);
    assert_eq!(c.upstream.sts_rate_per_second, 10.0);
    assert!(c.defaults.is_empty());
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let e = Config::from_toml("[aliyun]\nregion = \"cn-hangzhou\"\nregoin = \"x\"\n", "t").expect_err("typo");
    let text = e.to_string();
    assert!(text.contains("regoin"), "{text}");
    assert_eq!(e.issues[0].line, Some(3));
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"
[server]
socket_mode = "0666"
listen = "0.0.0.0:9465"

[aliyun]
region = "Hangzhou!"
cr_endpoint = "http://cr.example.com/{region}"

[cache]
refresh_fraction = 2.0
"#;
    let e = Config::from_toml(text, "broker.toml").expect_err("invalid");
    let keys: Vec<(&str, Option<usize>)> = e.issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert!(keys.contains(&("server.socket_mode", Some(3))), "{keys:?}");
    assert!(keys.contains(&("server.listen", Some(4))), "{keys:?}");
    assert!(keys.contains(&("aliyun.region", Some(7))), "{keys:?}");
    assert!(keys.contains(&("aliyun.cr_endpoint", Some(8))), "{keys:?}");
    assert!(keys.contains(&("cache.refresh_fraction", Some(11))), "{keys:?}");
}

#[test]
fn plain_http_only_for_loopback_and_metadata() {
    let ok = "[aliyun]\nregion = \"cn-hangzhou\"\nsts_endpoint = \"http://127.0.0.1:8080\"\n\
              cr_endpoint = \"http://127.0.0.1:8080/region/{region}\"\nmetadata_endpoint = \"http://100.100.100.200\"\n";
    Config::from_toml(ok, "t").expect("loopback http is fine");
    let bad = "[aliyun]\nregion = \"cn-hangzhou\"\nsts_endpoint = \"http://sts.aliyuncs.com\"\n";
    assert!(Config::from_toml(bad, "t").is_err());
}

#[test]
fn node_defaults_are_validated_annotations() {
    let text =
        "[aliyun]\nregion = \"cn-hangzhou\"\n[defaults]\nacr_instance_ids = [\"cn-beijing:cri-abcdefgh12345678\"]\n\
                acr_service_arns = [\"acs:ram::1111111111111111:role/svc\"]\n";
    let c = Config::from_toml(text, "t").expect("valid");
    assert_eq!(c.defaults.instance_ids.len(), 1);
    assert_eq!(c.defaults.service_arns.len(), 1);
    let bad = "[aliyun]\nregion = \"cn-hangzhou\"\n[defaults]\nacr_user_arns = [\"acs:ram::1:role/u\"]\n";
    let e = Config::from_toml(bad, "t").expect_err("user arn without service arn");
    assert!(e.to_string().contains("acr"), "{e}");
}

#[test]
fn identity_sources_need_their_fields() {
    let e =
        Config::from_toml("[identity]\nsource = \"static\"\n[aliyun]\nregion = \"cn-hangzhou\"\n", "t").expect_err("x");
    assert!(e.to_string().contains("access_key_id"), "{e}");
    let e =
        Config::from_toml("[identity]\nsource = \"magic\"\n[aliyun]\nregion = \"cn-hangzhou\"\n", "t").expect_err("x");
    assert_eq!(e.issues[0].line, Some(2));
}

#[test]
fn secrets_in_config_do_not_reach_debug_output() {
    let text =
        "[identity]\nsource = \"static\"\naccess_key_id = \"LTAIexample\"\naccess_key_secret = \"s3cr3t-value-xyz\"\n\
                [aliyun]\nregion = \"cn-hangzhou\"\n";
    let c = Config::from_toml(text, "t").expect("valid");
    assert!(!format!("{c:?}").contains("s3cr3t-value-xyz"));
}

#[test]
fn profile_source_defaults_and_overrides() {
    let c = Config::from_toml("[identity]\nsource = \"profile\"\n[aliyun]\nregion = \"cn-hangzhou\"\n", "t")
        .expect("valid");
    match c.identity {
        IdentityConfig::Profile { profile_file, profile_name } => {
            assert_eq!(profile_file, None);
            assert_eq!(profile_name, "default");
        }
        other => panic!("expected profile, got {other:?}"),
    }
    let text = "[identity]\nsource = \"profile\"\nprofile_file = \"/etc/acr-broker/credentials\"\n\
                profile_name = \"prod\"\n[aliyun]\nregion = \"cn-hangzhou\"\n";
    match Config::from_toml(text, "t").expect("valid").identity {
        IdentityConfig::Profile { profile_file, profile_name } => {
            assert_eq!(profile_file, Some(PathBuf::from("/etc/acr-broker/credentials")));
            assert_eq!(profile_name, "prod");
        }
        other => panic!("expected profile, got {other:?}"),
    }
}

#[test]
fn profile_source_rejects_bad_values_and_unknown_keys() {
    let text = "[identity]\nsource = \"profile\"\nprofile_file = \"credentials\"\nprofile_name = \"[x]\"\n\
                [aliyun]\nregion = \"cn-hangzhou\"\n";
    let e = Config::from_toml(text, "t").expect_err("invalid");
    let keys: Vec<(&str, Option<usize>)> = e.issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(keys, [("identity.profile_file", Some(3)), ("identity.profile_name", Some(4))]);
    let typo = "[identity]\nsource = \"profile\"\nprofile_path = \"/etc/creds\"\n[aliyun]\nregion = \"cn-hangzhou\"\n";
    let e = Config::from_toml(typo, "t").expect_err("unknown key");
    assert!(e.to_string().contains("profile_path"), "{e}");
    assert_eq!(e.issues[0].line, Some(3));
    let e = Config::from_toml("[identity]\nsource = \"profiles\"\n[aliyun]\nregion = \"cn-hangzhou\"\n", "t")
        .expect_err("unknown source");
    assert!(e.to_string().contains("profile"), "{e}");
}

#[test]
fn limits_and_backoff_are_bounded() {
    let text = "[server]\nmax_connections = 99999999999\n[aliyun]\nregion = \"cn-hangzhou\"\n\
                metadata_endpoint = \"http://100.100.100.200/{region}\"\n\
                [upstream]\nmax_concurrent = 0\nbackoff_base_ms = 3600000\n";
    let e = Config::from_toml(text, "t").expect_err("out of range");
    let keys: Vec<&str> = e.issues.iter().map(|i| i.key.as_str()).collect();
    for k in
        ["server.max_connections", "upstream.max_concurrent", "upstream.backoff_base_ms", "aliyun.metadata_endpoint"]
    {
        assert!(keys.contains(&k), "{k} not reported: {keys:?}");
    }
}

#[test]
fn metrics_may_bind_any_address_but_the_api_only_loopback() {
    let text = "[server]\nmetrics = \"0.0.0.0:9465\"\n[aliyun]\nregion = \"cn-hangzhou\"\n";
    let c = Config::from_toml(text, "t").expect("an explicit non-loopback metrics address is allowed");
    assert_eq!(c.server.metrics, Some("0.0.0.0:9465".parse().unwrap()));
    let text = "[server]\nmetrics = \"[::]:9465\"\n[aliyun]\nregion = \"cn-hangzhou\"\n";
    assert!(Config::from_toml(text, "t").is_ok());
    let text = "[server]\nlisten = \"0.0.0.0:8080\"\n[aliyun]\nregion = \"cn-hangzhou\"\n";
    let e = Config::from_toml(text, "t").expect_err("the API listener stays loopback-only");
    assert_eq!(e.issues[0].key, "server.listen", "{e}");
    assert!(e.to_string().contains("only loopback"), "{e}");
}

#[test]
fn vpc_network_in_a_region_without_a_vpc_address_names_the_key_to_set() {
    let e = Config::from_toml("[aliyun]\nregion = \"cn-heyuan\"\nnetwork = \"vpc\"\n", "t").expect_err("no VPC");
    let keys: Vec<&str> = e.issues.iter().map(|i| i.key.as_str()).collect();
    assert!(keys.contains(&"aliyun.sts_endpoint") && keys.contains(&"aliyun.cr_endpoint"), "{e}");
    // Setting the endpoints by hand is the way out.
    let ok = "[aliyun]\nregion = \"cn-heyuan\"\nnetwork = \"vpc\"\nsts_endpoint = \"https://sts.example.internal\"\n\
              cr_endpoint = \"https://cr.example.internal\"\n";
    Config::from_toml(ok, "t").expect("explicit endpoints");
    let e = Config::from_toml("[aliyun]\nregion = \"cn-hangzhou\"\nnetwork = \"private\"\n", "t").expect_err("bad");
    assert_eq!(e.issues[0].key, "aliyun.network");
}

#[test]
fn an_unknown_region_says_did_you_mean() {
    let e = Config::from_toml("[aliyun]\nregion = \"cn-hangzou\"\n", "t").expect_err("typo");
    assert_eq!(e.issues[0].line, Some(2));
    assert!(e.to_string().contains("did you mean \"cn-hangzhou\""), "{e}");
    // A region newer than the built-in list works once its STS address is given.
    let newer = "[aliyun]\nregion = \"ap-newregion-1\"\nsts_endpoint = \"https://sts.ap-newregion-1.aliyuncs.com\"\n";
    assert_eq!(Config::from_toml(newer, "t").expect("explicit STS").aliyun.region.as_str(), "ap-newregion-1");
}

#[test]
fn unknown_keys_type_errors_and_semantic_problems_in_one_run() {
    let text = "[server]\nsokcet = \"/x\"\nmax_connections = \"many\"\n[aliyun]\nregion = \"cn-hangzhou\"\n\
                cr_endpoint = \"ftp://x\"\n[cache]\nrefresh_fraction = 2.0\n";
    let e = Config::from_toml(text, "t").expect_err("four problems");
    let got: Vec<(&str, Option<usize>)> = e.issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(
        got,
        vec![
            ("server.sokcet", Some(2)),
            ("server.max_connections", Some(3)),
            ("aliyun.cr_endpoint", Some(6)),
            ("cache.refresh_fraction", Some(8)),
        ]
    );
}

#[cfg(unix)]
#[test]
fn a_profile_file_others_can_read_is_refused_by_check_config() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(&file, "[default]\ntype = access_key\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "[identity]\nsource = \"profile\"\nprofile_file = \"{}\"\n[aliyun]\nregion = \"cn-hangzhou\"\n",
        file.display()
    );
    let e = Config::from_toml(&text, "t").expect_err("mode 644");
    assert_eq!(e.issues[0].key, "identity.profile_file");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Config::from_toml(&text, "t").expect("mode 600");
}

#[test]
fn a_bad_default_annotation_points_at_its_line() {
    let text = "[aliyun]\nregion = \"cn-hangzhou\"\n[defaults]\nacr_service_arns = [\"not-an-arn\"]\n";
    let e = Config::from_toml(text, "t").expect_err("bad ARN");
    assert_eq!(e.issues[0].key, "defaults.acr_service_arns");
    assert_eq!(e.issues[0].line, Some(4));
}

#[test]
fn mirror_is_off_by_default_and_loopback_only() {
    assert!(Config::from_toml(MINIMAL, "t").expect("valid").mirror.is_none());
    let ok = format!("{MINIMAL}[mirror]\nlisten = \"127.0.0.1:5005\"\nregistries = [\"Demo-Registry.cn-hangzhou.cr.aliyuncs.com\"]\n");
    let m = Config::from_toml(&ok, "t").expect("valid").mirror.expect("mirror on");
    assert_eq!(m.listen, "127.0.0.1:5005".parse().expect("addr"));
    assert_eq!(m.registries, vec![String::from("demo-registry.cn-hangzhou.cr.aliyuncs.com")]);
    assert_eq!(m.upstream_timeout, DEFAULT_MIRROR_UPSTREAM_TIMEOUT);
    for (body, key) in [
        ("listen = \"0.0.0.0:5005\"", "mirror.listen"),
        ("listen = \"localhost\"", "mirror.listen"),
        ("registries = []", "mirror.listen"),
        ("listen = \"127.0.0.1:5005\"\nregistries = [\"a b\"]", "mirror.registries"),
        ("listen = \"127.0.0.1:5005\"\nupstream_timeout_seconds = 0", "mirror.upstream_timeout_seconds"),
        // A custom domain is served only with [defaults] acr_instance_ids.
        ("listen = \"127.0.0.1:5005\"\nregistries = [\"registry.example.com\"]", "mirror.registries"),
    ] {
        let e = Config::from_toml(&format!("{MINIMAL}[mirror]\n{body}\n"), "t").expect_err(body);
        assert!(e.issues.iter().any(|i| i.key == key), "{body}: {e}");
    }
}

#[test]
fn an_empty_endpoint_is_a_problem_with_its_line() {
    // Found by tests/proptest_parsers.rs: an explicitly empty endpoint was refused with no issue.
    for key in ["sts_endpoint", "cr_endpoint", "metadata_endpoint"] {
        let text = format!("[aliyun]\nregion = \"cn-hangzhou\"\n{key} = \"\"\n");
        let e = Config::from_toml(&text, "t").expect_err("empty endpoint");
        assert!(!e.issues.is_empty(), "{key}: an error must name its problem");
        assert_eq!(e.issues[0].key, format!("aliyun.{key}"), "{e}");
        assert_eq!(e.issues[0].line, Some(3), "{e}");
    }
}
