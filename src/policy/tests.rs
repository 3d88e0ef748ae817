use super::*;
use proptest::prelude::*;

const SVC_A: &str = "acs:ram::1609982529000001:role/role-assume";
const SVC_B: &str = "acs:ram::1609982529000001:role/role-assume-2";
const USER_X: &str = "acs:ram::1298452580000002:role/role-acr";
const USER_Y: &str = "acs:ram::1298452580000002:role/role-acr-2";
const CRI: &str = "cri-j36zhodptmyq1234";
const CRI2: &str = "cri-zqa23z26a593tw3d";

fn host(s: &str) -> RegistryHost {
    RegistryHost::parse(s).unwrap()
}
fn region(s: &str) -> Region {
    Region::try_from(s).unwrap()
}
fn arn(s: &str) -> RoleArn {
    RoleArn::try_from(s).unwrap()
}
fn iref(s: &str) -> InstanceRef {
    InstanceRef::try_from(s).unwrap()
}
fn ann(pairs: &[(&str, &str)]) -> Annotations {
    Annotations::from_map(pairs.iter().copied()).unwrap().unwrap()
}
fn chain(arns: &[&str]) -> RoleChain {
    RoleChain(arns.iter().map(|a| arn(a)).collect())
}
fn node() -> Region {
    region("cn-hangzhou")
}

#[test]
fn from_map_is_none_without_the_three_keys() {
    let map = [("app", "x"), ("k8s.aliyun.com/eci-use-specs", "a,b"), ("K8S.ALIYUN.COM/ACR-USER-ARNS", "x")];
    assert_eq!(Annotations::from_map(map), Ok(None));
    assert_eq!(Annotations::from_map(std::iter::empty()), Ok(None));
}

#[test]
fn from_map_trims_items_and_dedupes_in_order() {
    let a = ann(&[
        (INSTANCE_IDS_KEY, &format!(" {CRI2} , cn-beijing:{CRI},{CRI2}")),
        (
            SERVICE_ARNS_KEY,
            &format!(
                "{SVC_B},{SVC_A}, {}",
                SVC_B.to_uppercase().replace("ACS:RAM::", "acs:ram::").replace(":ROLE/", ":role/")
            ),
        ),
        (USER_ARNS_KEY, USER_X),
        ("other", ""),
    ]);
    assert_eq!(a.instance_ids, vec![iref(CRI2), iref(&format!("cn-beijing:{CRI}"))]);
    assert_eq!(a.service_arns, vec![arn(SVC_B), arn(SVC_A)]);
    assert_eq!(a.user_arns, vec![arn(USER_X)]);
    assert!(!a.is_empty());
    assert!(Annotations::default().is_empty());
}

#[test]
fn from_map_rejects_bad_values_naming_key_and_value() {
    let many = vec![SVC_A; 17].join(",");
    let huge = format!("{SVC_A},{}", "x".repeat(4100));
    let cases: Vec<(&str, String, &str)> = vec![
        (SERVICE_ARNS_KEY, format!("{SVC_A},,{SVC_B}"), "item 2 is empty"),
        (SERVICE_ARNS_KEY, format!("{SVC_A},"), "item 2 is empty"),
        (SERVICE_ARNS_KEY, format!(",{SVC_A}"), "item 1 is empty"),
        (SERVICE_ARNS_KEY, "".into(), "empty value"),
        (SERVICE_ARNS_KEY, "  ".into(), "empty value"),
        (SERVICE_ARNS_KEY, many, "more than 16"),
        (SERVICE_ARNS_KEY, huge, "longer than 4096"),
        (SERVICE_ARNS_KEY, "acs:ram::1609982529******:role/role-assume".into(), "account id"),
        (USER_ARNS_KEY, "role-acr".into(), "role ARN"),
        (USER_ARNS_KEY, format!("{USER_X};{USER_Y}"), "role name may contain only"),
        (INSTANCE_IDS_KEY, "cri-j36zhodptmyq****".into(), "instance id"),
        (INSTANCE_IDS_KEY, format!("beijing:{CRI}"), "region"),
        (INSTANCE_IDS_KEY, format!("{CRI} {CRI2}"), "instance id"),
    ];
    for (key, value, reason) in cases {
        let err = Annotations::from_map([(key, value.as_str())]).unwrap_err();
        let PolicyError::InvalidAnnotation { key: k, reason: r, value: v } = &err else {
            panic!("{key}={value:?}: {err:?}");
        };
        assert_eq!(*k, key);
        assert!(r.contains(reason), "{key}={value:?}: {err}");
        assert!(value.starts_with(v.trim_end_matches('…')));
        assert_eq!(err.code(), "invalid_annotation");
        assert!(err.is_invalid_input());
        let msg = err.to_string();
        assert!(msg.contains(key), "{msg}");
        assert!(msg.len() < 1000, "{}", msg.len());
    }
}

#[test]
fn from_map_accepts_exactly_sixteen_items() {
    let arns: Vec<String> = (0..16).map(|n| format!("acs:ram::1:role/r{n}")).collect();
    let a = ann(&[(SERVICE_ARNS_KEY, &arns.join(","))]);
    assert_eq!(a.service_arns.len(), 16);
}

#[test]
fn from_map_rejects_a_key_given_twice() {
    let err = Annotations::from_map([(SERVICE_ARNS_KEY, SVC_A), (SERVICE_ARNS_KEY, SVC_B)]).unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");
}

/// One row per line of the README's policy table ("What gets served"), and the chain rules.
#[test]
fn plan_follows_the_policy_table() {
    let ee_host = "demo-registry.cn-shanghai.cr.aliyuncs.com";
    let ee_vpc = "demo-registry-vpc.cn-shanghai.cr.aliyuncs.com";
    let personal = "registry-intl.ap-southeast-1.aliyuncs.com";
    let custom = "test-registry.example.com";
    let ee_target =
        || Target::Enterprise { region: region("cn-shanghai"), instance: InstanceSelector::ByName("demo".into()) };
    let custom_target = |c: Vec<&str>| Target::Enterprise {
        region: c.first().map(|s| iref(s).region.unwrap()).unwrap(),
        instance: InstanceSelector::CustomDomain { candidates: c.iter().map(|s| iref(s)).collect() },
    };
    let hz = |id: &str| format!("cn-hangzhou:{id}");
    let personal_target = Target::Personal { region: region("ap-southeast-1") };
    let both = [(SERVICE_ARNS_KEY, SVC_A), (USER_ARNS_KEY, USER_X)];
    let ids = format!("cn-beijing:{CRI},{CRI2}");
    type Row<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Result<(Target, Vec<RoleChain>), &'a str>);
    let rows: Vec<Row> = vec![
        // same account, default domains: node identity by default
        ("EE default, no annotations", ee_host, vec![], Ok((ee_target(), vec![chain(&[])]))),
        ("EE vpc default", ee_vpc, vec![], Ok((ee_target(), vec![chain(&[])]))),
        ("Personal, no annotations", personal, vec![], Ok((personal_target.clone(), vec![chain(&[])]))),
        // acr-service-arns narrows it
        (
            "EE default, service role",
            ee_host,
            vec![(SERVICE_ARNS_KEY, SVC_A)],
            Ok((ee_target(), vec![chain(&[SVC_A])])),
        ),
        (
            "Personal, service role",
            personal,
            vec![(SERVICE_ARNS_KEY, SVC_A)],
            Ok((personal_target.clone(), vec![chain(&[SVC_A])])),
        ),
        (
            "EE default, instance ids ignored",
            ee_host,
            vec![(INSTANCE_IDS_KEY, CRI)],
            Ok((ee_target(), vec![chain(&[])])),
        ),
        // same account, custom domain: only with instance ids
        ("custom, no ids", custom, vec![], Err("not_acr_registry")),
        ("custom, service role but no ids", custom, vec![(SERVICE_ARNS_KEY, SVC_A)], Err("not_acr_registry")),
        ("custom, ids", custom, vec![(INSTANCE_IDS_KEY, CRI)], Ok((custom_target(vec![&hz(CRI)]), vec![chain(&[])]))),
        (
            "custom, cross-region ids",
            custom,
            vec![(INSTANCE_IDS_KEY, &ids)],
            Ok((custom_target(vec![&format!("cn-beijing:{CRI}"), &hz(CRI2)]), vec![chain(&[])])),
        ),
        // cross account: service + user roles
        ("EE cross-account", ee_host, both.to_vec(), Ok((ee_target(), vec![chain(&[SVC_A, USER_X])]))),
        (
            "Personal cross-account",
            personal,
            both.to_vec(),
            Ok((personal_target.clone(), vec![chain(&[SVC_A, USER_X])])),
        ),
        (
            "custom cross-account",
            custom,
            vec![both[0], both[1], (INSTANCE_IDS_KEY, CRI)],
            Ok((custom_target(vec![&hz(CRI)]), vec![chain(&[SVC_A, USER_X])])),
        ),
        ("custom cross-account without ids", custom, both.to_vec(), Err("not_acr_registry")),
        ("user role without service role", ee_host, vec![(USER_ARNS_KEY, USER_X)], Err("user_arn_without_service_arn")),
        // not ACR
        ("docker hub", "docker.io", vec![], Err("not_acr_registry")),
        ("look-alike suffix", "x.cr.aliyuncs.com.evil.com", vec![(SERVICE_ARNS_KEY, SVC_A)], Err("not_acr_registry")),
        ("EE host on another port", "demo-registry.cn-shanghai.cr.aliyuncs.com:5000", vec![], Err("not_acr_registry")),
    ];
    for (name, h, pairs, want) in rows {
        let request = Annotations::from_map(pairs.iter().copied()).unwrap();
        let got = plan(&host(h), request.as_ref(), &Annotations::default(), &node());
        match (got, want) {
            (Ok(p), Ok((target, chains))) => {
                assert_eq!(p.target, target, "{name}");
                assert_eq!(p.chains, chains, "{name}");
                assert_eq!(p.host, host(h), "{name}");
                assert_eq!(p.default_region, node(), "{name}");
            }
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "{name}: {e}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn plan_pairs_every_service_role_with_every_user_role_service_major() {
    let a = ann(&[(SERVICE_ARNS_KEY, &format!("{SVC_A},{SVC_B}")), (USER_ARNS_KEY, &format!("{USER_X},{USER_Y}"))]);
    let p = plan(&host("registry.cn-hangzhou.aliyuncs.com"), Some(&a), &Annotations::default(), &node()).unwrap();
    let want = vec![chain(&[SVC_A, USER_X]), chain(&[SVC_A, USER_Y]), chain(&[SVC_B, USER_X]), chain(&[SVC_B, USER_Y])];
    assert_eq!(p.chains, want);
    let a = ann(&[(SERVICE_ARNS_KEY, &format!("{SVC_B},{SVC_A}"))]);
    let p = plan(&host("registry.cn-hangzhou.aliyuncs.com"), Some(&a), &Annotations::default(), &node()).unwrap();
    assert_eq!(p.chains, vec![chain(&[SVC_B]), chain(&[SVC_A])]);
}

#[test]
fn node_defaults_apply_only_to_requests_without_annotations() {
    let defaults = ann(&[(SERVICE_ARNS_KEY, SVC_B), (INSTANCE_IDS_KEY, CRI2)]);
    let ee = host("demo-registry.cn-hangzhou.cr.aliyuncs.com");
    let custom = host("registry.example.com");

    let p = plan(&ee, None, &defaults, &node()).unwrap();
    assert_eq!(p.chains, vec![chain(&[SVC_B])]);
    let p = plan(&ee, Some(&Annotations::default()), &defaults, &node()).unwrap();
    assert_eq!(p.chains, vec![chain(&[SVC_B])], "an empty set carries none");
    let p = plan(&custom, None, &defaults, &node()).unwrap();
    let Target::Enterprise { instance: InstanceSelector::CustomDomain { candidates }, .. } = p.target else {
        panic!("not a custom domain: {:?}", p.target)
    };
    assert_eq!(candidates, vec![iref(&format!("cn-hangzhou:{CRI2}"))]);

    // A request with its own annotations never inherits the defaults' roles or instances.
    let own = ann(&[(INSTANCE_IDS_KEY, CRI)]);
    let p = plan(&ee, Some(&own), &defaults, &node()).unwrap();
    assert_eq!(p.chains, vec![chain(&[])]);
    let p = plan(&custom, Some(&own), &defaults, &node()).unwrap();
    assert_eq!(
        p.target,
        Target::Enterprise {
            region: node(),
            instance: InstanceSelector::CustomDomain { candidates: vec![iref(&format!("cn-hangzhou:{CRI}"))] }
        }
    );
    let only_service = ann(&[(SERVICE_ARNS_KEY, SVC_A)]);
    let err = plan(&custom, Some(&only_service), &defaults, &node()).unwrap_err();
    assert_eq!(err.code(), "not_acr_registry");
    assert!(!err.is_invalid_input());
    assert!(err.to_string().contains("registry.example.com"), "{err}");
}

#[test]
fn custom_domain_candidates_are_deduplicated_after_defaulting_the_region() {
    let a = ann(&[(INSTANCE_IDS_KEY, &format!("{CRI},cn-hangzhou:{CRI},cn-beijing:{CRI}"))]);
    let p = plan(&host("r.example.com"), Some(&a), &Annotations::default(), &node()).unwrap();
    let want = vec![iref(&format!("cn-hangzhou:{CRI}")), iref(&format!("cn-beijing:{CRI}"))];
    assert_eq!(
        p.target,
        Target::Enterprise { region: node(), instance: InstanceSelector::CustomDomain { candidates: want } }
    );
    assert_eq!(p.target.edition(), "enterprise");
    assert_eq!(p.target.region(), &node());
}

#[test]
fn user_arn_error_names_the_annotation_and_value() {
    let a = ann(&[(USER_ARNS_KEY, USER_X)]);
    let err = plan(&host("registry.cn-hangzhou.aliyuncs.com"), Some(&a), &Annotations::default(), &node()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(USER_ARNS_KEY) && msg.contains(USER_X) && msg.contains(SERVICE_ARNS_KEY), "{msg}");
    assert!(err.is_invalid_input());
}

#[test]
fn role_chain_display_reads_as_a_path() {
    assert_eq!(chain(&[]).to_string(), "identity");
    assert!(chain(&[]).is_base_identity());
    assert_eq!(chain(&[SVC_A, USER_X]).to_string(), format!("identity -> {SVC_A} -> {USER_X}"));
}

proptest! {
    #[test]
    fn from_map_never_panics(key in prop::sample::select(vec![INSTANCE_IDS_KEY, SERVICE_ARNS_KEY, USER_ARNS_KEY, "x"]), value in "\\PC{0,200}") {
        let _ = Annotations::from_map([(key, value.as_str())]);
    }

    #[test]
    fn chains_are_never_empty_and_pair_every_role(
        s in prop::collection::vec("[a-z]{1,6}", 0..5),
        u in prop::collection::vec("[a-z]{1,6}", 0..5),
    ) {
        let to_arns = |names: &Vec<String>, acct: &str| names.iter().map(|n| format!("acs:ram::{acct}:role/{n}")).collect::<Vec<_>>().join(",");
        let mut pairs = Vec::new();
        let (sv, uv) = (to_arns(&s, "1"), to_arns(&u, "2"));
        if !s.is_empty() { pairs.push((SERVICE_ARNS_KEY, sv.as_str())); }
        if !u.is_empty() { pairs.push((USER_ARNS_KEY, uv.as_str())); }
        let a = Annotations::from_map(pairs).unwrap().unwrap_or_default();
        match plan(&host("registry.cn-hangzhou.aliyuncs.com"), Some(&a), &Annotations::default(), &node()) {
            Ok(p) => {
                prop_assert!(!p.chains.is_empty());
                let expected = a.service_arns.len().max(1) * a.user_arns.len().max(1);
                prop_assert_eq!(p.chains.len(), expected);
                for c in &p.chains {
                    prop_assert_eq!(c.0.len(), usize::from(!a.service_arns.is_empty()) + usize::from(!a.user_arns.is_empty()));
                }
            }
            Err(e) => prop_assert!(a.service_arns.is_empty() && !a.user_arns.is_empty(), "{}", e),
        }
    }
}

#[test]
fn a_misspelled_or_unprefixed_acr_key_is_refused_naming_the_three_keys() {
    for key in [
        "k8s.aliyun.com/acr-instance-id",
        "k8s.aliyun.com/acr-service-arn",
        "k8s.aliyun.com/ACR-user-arns",
        "acr-instance-ids",
        "acr_service_arns",
    ] {
        let err = Annotations::from_map([(key, CRI)]).unwrap_err();
        assert_eq!(err.code(), "unknown_annotation", "{key}");
        assert!(err.is_invalid_input(), "{key}: a 400");
        let msg = err.to_string();
        assert!(msg.contains(key), "{msg}");
        for valid in ANNOTATION_KEYS {
            assert!(msg.contains(valid), "{msg}");
        }
    }
}

#[test]
fn unrelated_annotation_keys_are_still_ignored() {
    let a = Annotations::from_map([
        ("kubernetes.io/psp", "x"),
        ("k8s.aliyun.com/eci-use-specs", "2-4Gi"),
        ("app", "acr-consumer"),
        (INSTANCE_IDS_KEY, CRI),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(a.instance_ids.len(), 1);
}
