use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

#[test]
fn region_accepts_real_region_ids() {
    for ok in ["cn-hangzhou", "ap-southeast-1", "cn-shanghai-finance-1", "us-west-1", "eu-central-1"] {
        assert_eq!(Region::try_from(ok).unwrap().as_str(), ok);
    }
}

#[test]
fn region_rejects_each_bad_form_with_a_reason() {
    let cases = [
        ("", "empty"),
        ("cn", "2 to 5"),
        ("CN-hangzhou", "lowercase"),
        (" cn-hangzhou", "lowercase"),
        ("cn-hangzhou ", "lowercase"),
        ("c-hangzhou", "two letters"),
        ("1n-hangzhou", "two letters"),
        ("cn--hangzhou", "empty part"),
        ("cn-hangzhou-", "empty part"),
        ("-cn-hangzhou", "two letters"),
        ("cn-a-b-c-d-e", "2 to 5"),
        ("cn_hangzhou", "lowercase"),
        ("cn-hangzhou.evil", "lowercase"),
        ("cn-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "32"),
    ];
    for (bad, reason) in cases {
        let e = Region::try_from(bad).unwrap_err();
        assert_eq!(e.what, "region");
        assert!(e.reason.contains(reason), "{bad:?}: {e}");
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn instance_id_accepts_observed_ids() {
    for ok in ["cri-zqa23z26a593tw3d", "cri-r0xfyoxudmtseqq7", "cri-12345678", &format!("cri-{}", "a".repeat(32))] {
        assert_eq!(InstanceId::try_from(ok).unwrap().to_string(), ok);
    }
}

#[test]
fn instance_id_rejects_bad_ids() {
    let cases = [
        ("", "cri-"),
        ("cri-", "8 to 32"),
        ("cri-1234567", "8 to 32"),
        ("CRI-zqa23z26a593tw3d", "cri-"),
        ("cri-ZQA23Z26A593TW3D", "lowercase"),
        ("cri-j36zhodptmyq****", "lowercase"),
        ("cri-zqa23z26 593tw3d", "lowercase"),
        ("xcri-zqa23z26a593tw3d", "cri-"),
    ];
    for (bad, reason) in cases {
        let e = InstanceId::try_from(bad).unwrap_err();
        assert!(e.reason.contains(reason), "{bad:?}: {e}");
    }
    assert!(InstanceId::try_from(format!("cri-{}", "a".repeat(33))).is_err());
}

#[test]
fn account_id_is_digits_only() {
    assert!(AccountId::try_from("1609982529123456").is_ok());
    assert!(AccountId::try_from("1").is_ok());
    for bad in ["", "12a", " 12", "1".repeat(33).as_str(), "-1"] {
        assert!(AccountId::try_from(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn role_arn_parses_account_and_name() {
    let arn = RoleArn::try_from("acs:ram::1609982529123456:role/Role-Assume").unwrap();
    assert_eq!(arn.as_str(), "acs:ram::1609982529123456:role/Role-Assume");
    assert_eq!(arn.account().as_str(), "1609982529123456");
    assert_eq!(arn.role_name(), "Role-Assume");
    assert_eq!(arn.canonical(), "acs:ram::1609982529123456:role/role-assume");
    assert_eq!(arn.to_string(), arn.as_str());
}

#[test]
fn role_arn_compares_role_name_case_insensitively_but_keeps_spelling() {
    let a = RoleArn::try_from("acs:ram::1:role/AliyunCSDefaultRole").unwrap();
    let b = RoleArn::try_from("acs:ram::1:role/aliyuncsdefaultrole").unwrap();
    assert_eq!(a, b);
    let set: HashSet<RoleArn> = [a.clone(), b].into_iter().collect();
    assert_eq!(set.len(), 1);
    assert_eq!(a.as_str(), "acs:ram::1:role/AliyunCSDefaultRole");
    let other_account = RoleArn::try_from("acs:ram::2:role/AliyunCSDefaultRole").unwrap();
    assert_ne!(a, other_account);
}

#[test]
fn role_arn_rejects_bad_arns() {
    let cases = [
        ("", "must look like"),
        ("arn:aws:iam::1:role/x", "must look like"),
        ("acs:ram:cn-hangzhou:1:role/x", "must look like"),
        ("acs:ram::1609982529******:role/x", "account id"),
        ("acs:ram:::role/x", "account id"),
        ("acs:ram::1", "missing"),
        ("acs:ram::1:user/x", "role/<name>"),
        ("acs:ram::1:rolex", "role/<name>"),
        ("acs:ram::1:role/", "empty role name"),
        ("acs:ram::1:role/a b", "only letters"),
        ("acs:ram::1:role/a/b", "only letters"),
        ("acs:ram::1:role/ä", "only letters"),
        (" acs:ram::1:role/x", "must look like"),
        ("acs:ram::1:role/x ", "only letters"),
    ];
    for (bad, reason) in cases {
        let e = RoleArn::try_from(bad).unwrap_err();
        assert_eq!(e.what, "role ARN");
        assert!(e.reason.contains(reason), "{bad:?}: {e}");
    }
    let long = format!("acs:ram::1:role/{}", "r".repeat(65));
    assert!(RoleArn::try_from(long.as_str()).unwrap_err().reason.contains("64"));
    assert!(RoleArn::try_from(format!("acs:ram::1:role/{}", "r".repeat(64))).is_ok());
    assert!(RoleArn::try_from("acs:ram::1:role/a.b_c@d-e").is_ok());
}

#[test]
fn id_error_shortens_long_values() {
    let long = "x".repeat(10_000);
    let e = RoleArn::try_from(long.as_str()).unwrap_err();
    assert!(e.to_string().len() < 300, "{}", e.to_string().len());
}

#[test]
fn oidc_provider_arn_parses() {
    let arn = OidcProviderArn::try_from("acs:ram::1609982529123456:oidc-provider/ack-rrsa-c123").unwrap();
    assert_eq!(arn.account().as_str(), "1609982529123456");
    assert_eq!(arn.to_string(), "acs:ram::1609982529123456:oidc-provider/ack-rrsa-c123");
    for bad in
        ["acs:ram::1:role/x", "acs:ram::1:oidc-provider/", "acs:ram::1:oidc-provider/a b", "acs:ram::x:oidc-provider/a"]
    {
        assert!(OidcProviderArn::try_from(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn instance_ref_parses_plain_and_region_prefixed() {
    let plain = InstanceRef::try_from("cri-j36zhodptmyq1234").unwrap();
    assert_eq!(plain.region, None);
    assert_eq!(plain.id.as_str(), "cri-j36zhodptmyq1234");
    let cross = InstanceRef::try_from("cn-beijing:cri-j36zhodptmyq1234").unwrap();
    assert_eq!(cross.region.as_ref().unwrap().as_str(), "cn-beijing");
    assert_eq!(cross.to_string(), "cn-beijing:cri-j36zhodptmyq1234");
    let hz = Region::try_from("cn-hangzhou").unwrap();
    assert_eq!(plain.with_default_region(&hz).region, Some(hz.clone()));
    assert_eq!(cross.with_default_region(&hz), cross);
}

#[test]
fn instance_ref_rejects_bad_refs() {
    for (bad, reason) in [
        ("", "instance id"),
        ("cn-beijing:", "instance id"),
        (":cri-j36zhodptmyq1234", "region"),
        ("cn-beijing:cri-j36zhodptmyq1234:x", "instance id"),
        ("beijing:cri-j36zhodptmyq1234", "region"),
        ("cn-beijing :cri-j36zhodptmyq1234", "region"),
    ] {
        let e = InstanceRef::try_from(bad).unwrap_err();
        assert_eq!(e.what, "instance reference");
        assert!(e.reason.starts_with(reason), "{bad:?}: {e}");
    }
}

#[test]
fn ids_serialize_as_strings_and_deserialize_with_validation() {
    let arn = RoleArn::try_from("acs:ram::1:role/Acr").unwrap();
    assert_eq!(serde_json::to_string(&arn).unwrap(), "\"acs:ram::1:role/Acr\"");
    let back: RoleArn = serde_json::from_str("\"acs:ram::1:role/Acr\"").unwrap();
    assert_eq!(back.as_str(), "acs:ram::1:role/Acr");
    let r: Region = serde_json::from_str("\"cn-hangzhou\"").unwrap();
    assert_eq!(r.as_str(), "cn-hangzhou");
    let e = serde_json::from_str::<Region>("\"CN\"").unwrap_err();
    assert!(e.to_string().contains("invalid region"), "{e}");
    let i: InstanceRef = serde_json::from_str("\"cn-beijing:cri-12345678\"").unwrap();
    assert_eq!(serde_json::to_string(&i).unwrap(), "\"cn-beijing:cri-12345678\"");
}

fn region_strategy() -> impl Strategy<Value = String> {
    "[a-z]{2,4}(-[a-z0-9]{1,5}){1,4}"
}

proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_strings(s in "\\PC{0,80}") {
        let _ = Region::try_from(s.as_str());
        let _ = InstanceId::try_from(s.as_str());
        let _ = AccountId::try_from(s.as_str());
        let _ = RoleArn::try_from(s.as_str());
        let _ = OidcProviderArn::try_from(s.as_str());
        let _ = InstanceRef::try_from(s.as_str());
    }

    #[test]
    fn parsers_never_panic_on_near_miss_arns(s in "acs:ram::[0-9a-z:]{0,5}:(role|oidc-provider)?/?[\\PC]{0,20}") {
        if let Ok(arn) = RoleArn::try_from(s.as_str()) {
            prop_assert_eq!(arn.as_str(), s.as_str());
            prop_assert!(!arn.role_name().is_empty());
        }
        let _ = OidcProviderArn::try_from(s.as_str());
    }

    #[test]
    fn region_round_trips(s in region_strategy()) {
        let r = Region::try_from(s.as_str()).unwrap();
        prop_assert_eq!(Region::try_from(r.to_string().as_str()).unwrap(), r);
    }

    #[test]
    fn role_arn_round_trips(account in "[0-9]{1,20}", name in "[A-Za-z0-9._@-]{1,64}") {
        let s = format!("acs:ram::{account}:role/{name}");
        let arn = RoleArn::try_from(s.as_str()).unwrap();
        prop_assert_eq!(arn.role_name(), name.as_str());
        let back = RoleArn::try_from(arn.to_string().as_str()).unwrap();
        prop_assert_eq!(back.as_str(), arn.as_str());
        prop_assert_eq!(back, arn);
    }

    #[test]
    fn instance_ref_round_trips(region in proptest::option::of(region_strategy()), id in "cri-[a-z0-9]{8,32}") {
        let s = match &region { Some(r) => format!("{r}:{id}"), None => id.clone() };
        let parsed = InstanceRef::try_from(s.as_str()).unwrap();
        prop_assert_eq!(parsed.to_string(), s.clone());
        prop_assert_eq!(InstanceRef::try_from(parsed.to_string().as_str()).unwrap(), parsed);
    }
}
