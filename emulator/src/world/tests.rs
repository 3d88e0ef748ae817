use super::*;

#[test]
fn dev_world_parses_with_expected_content() {
    let w = World::dev();
    let d = &w.data;
    assert!(d.role("acs:ram::1111111111111111:role/Node-Role").is_some());
    assert!(d.role("acs:ram::2222222222222222:role/eci-acr-user").is_some());
    assert_eq!(d.instances.len(), 2);
    assert_eq!(d.metadata.as_ref().map(|m| m.role_name.as_str()), Some("node-role"));
    assert_eq!(
        w.instance_token_service("cri-devbbbbbbbbbbbb02"),
        Some("registry.aliyuncs.com:cn-beijing:china:cri-devbbbbbbbbbbbb02")
    );
    assert!(w.personal_token_service("1111111111111111", "cn-hangzhou").is_some());
    assert_eq!(w.token_signing_kid().len(), 59);
}

#[test]
fn every_problem_is_reported() {
    let bad = r#"
[[accounts]]
id = "12ab"
[[roles]]
arn = "acs:ram::999:role/x"
max_session_duration = 100
policies = ["missing"]
[[instances]]
account = "999"
id = "CRI-bad"
name = "x"
region = "cn-hangzhou"
"#;
    let err = World::from_toml(bad).unwrap_err();
    let all = err.problems.join("\n");
    assert!(all.contains("accounts.id=\"12ab\""), "{all}");
    assert!(all.contains("max_session_duration=100"), "{all}");
    assert!(all.contains("policy \"missing\""), "{all}");
    assert!(all.contains("CRI-bad"), "{all}");
    assert!(err.problems.len() >= 5, "{all}");
}

#[test]
fn unknown_keys_are_rejected() {
    let err = World::from_toml("[[accounts]]\nid = \"1\"\ncolour = \"red\"\n").unwrap_err();
    assert!(err.problems[0].contains("colour"), "{:?}", err.problems);
}

#[test]
fn metadata_role_must_trust_ecs() {
    let w = r#"
[metadata]
role_arn = "acs:ram::1:role/r"
[[accounts]]
id = "1"
[[roles]]
arn = "acs:ram::1:role/r"
"#;
    let err = World::from_toml(w).unwrap_err();
    assert!(err.problems.iter().any(|p| p.contains("ecs.aliyuncs.com")), "{:?}", err.problems);
}
