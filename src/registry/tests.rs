use super::*;
use proptest::prelude::*;

fn region(s: &str) -> Region {
    Region::try_from(s).unwrap()
}

fn ee(name: &str, r: &str, vpc: bool) -> RegistryKind {
    RegistryKind::Enterprise { instance_name: name.into(), region: region(r), vpc }
}

fn personal(r: &str, intl: bool, network: PersonalNetwork) -> RegistryKind {
    RegistryKind::Personal { region: region(r), variant: PersonalVariant { intl, network } }
}

#[test]
fn parse_normalises_scheme_path_case_and_trailing_dot() {
    let cases = [
        ("demo-registry.cn-hangzhou.cr.aliyuncs.com", "demo-registry.cn-hangzhou.cr.aliyuncs.com"),
        ("https://demo-registry.cn-hangzhou.cr.aliyuncs.com/v2/", "demo-registry.cn-hangzhou.cr.aliyuncs.com"),
        ("HTTP://Demo-Registry.CN-Hangzhou.cr.aliyuncs.com/ns/repo", "demo-registry.cn-hangzhou.cr.aliyuncs.com"),
        ("DEMO-REGISTRY.CN-HANGZHOU.CR.ALIYUNCS.COM", "demo-registry.cn-hangzhou.cr.aliyuncs.com"),
        ("demo-registry.cn-hangzhou.cr.aliyuncs.com.", "demo-registry.cn-hangzhou.cr.aliyuncs.com"),
        ("localhost:5000", "localhost:5000"),
        ("127.0.0.1:65535", "127.0.0.1:65535"),
        ("[::1]:5000", "[::1]:5000"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[FE80::1]:443", "[fe80::1]:443"),
        ("xn--80ak6aa92e.com", "xn--80ak6aa92e.com"),
        ("evil.com/x-registry.cn-hangzhou.cr.aliyuncs.com", "evil.com"),
        ("registry.example.com:443/", "registry.example.com:443"),
        ("a/b://c", "a"),
    ];
    for (input, key) in cases {
        let host = RegistryHost::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(host.as_str(), key, "{input:?}");
        assert_eq!(host.to_string(), key);
    }
}

#[test]
fn parse_splits_host_and_port() {
    let h = RegistryHost::parse("registry.example.com:8443").unwrap();
    assert_eq!((h.host(), h.port()), ("registry.example.com", Some(8443)));
    let h = RegistryHost::parse("[::1]:5000").unwrap();
    assert_eq!((h.host(), h.port()), ("[::1]", Some(5000)));
    let h = RegistryHost::parse("example.com").unwrap();
    assert_eq!((h.host(), h.port()), ("example.com", None));
}

#[test]
fn parse_rejects_bad_input_with_reason() {
    use HostErrorKind as K;
    let long_label = format!("{}.com", "a".repeat(64));
    let long_host = format!("{}.com", vec!["a".repeat(60); 5].join("."));
    let cases: Vec<(&str, HostErrorKind)> = vec![
        ("", K::Empty),
        ("https://", K::Empty),
        ("/v2/", K::Empty),
        (".", K::Empty),
        ("demo registry.com", K::Whitespace),
        (" demo.com", K::Whitespace),
        ("demo.com\n", K::Whitespace),
        ("demo.com\t", K::Whitespace),
        ("demo..com", K::EmptyLabel),
        (".demo.com", K::EmptyLabel),
        ("demo.com..", K::EmptyLabel),
        ("user:pass@demo.com", K::UserInfo),
        ("https://user@demo.com/v2/", K::UserInfo),
        (&long_label, K::LabelTooLong),
        (&long_host, K::HostTooLong),
        ("demo-registry.cn-hangzhou.cr.aliyuncs.cоm", K::NonAscii), // Cyrillic о
        ("dеmo-registry.cn-hangzhou.cr.aliyuncs.com", K::NonAscii), // Cyrillic е
        ("bücher.example", K::NonAscii),
        ("demo.com:0", K::BadPort("0".into())),
        ("demo.com:65536", K::BadPort("65536".into())),
        ("demo.com:99999999", K::BadPort("99999999".into())),
        ("demo.com:", K::BadPort("".into())),
        ("demo.com:http", K::BadPort("http".into())),
        ("demo.com:-1", K::BadPort("-1".into())),
        ("demo.com:0443", K::BadPort("0443".into())),
        ("::1", K::BadIpv6),
        ("[::1", K::BadIpv6),
        ("[::1]x", K::BadIpv6),
        ("[not-ip]:5000", K::BadIpv6),
        ("[fe80::1%eth0]", K::BadIpv6),
        ("demo.com?x=1", K::QueryOrFragment),
        ("demo.com/v2/#frag", K::QueryOrFragment),
        ("ftp://demo.com", K::Scheme),
        ("docker://demo.com", K::Scheme),
        ("demo_registry.com", K::BadLabel("demo_registry".into())),
        ("-demo.com", K::BadLabel("-demo".into())),
        ("demo-.com", K::BadLabel("demo-".into())),
        ("demo.com;x", K::BadLabel("com;x".into())),
    ];
    for (input, kind) in cases {
        let err = RegistryHost::parse(input).expect_err(input);
        assert_eq!(err.kind, kind, "{input:?}: {err}");
        assert!(err.to_string().contains("invalid registry host"));
    }
    let err = RegistryHost::parse("demo-registry.cn-hangzhou.cr.aliyuncs.cоm").unwrap_err();
    assert!(err.to_string().contains("non-ASCII host"), "{err}");
}

#[test]
fn host_error_shortens_huge_input() {
    let err = RegistryHost::parse(&"a".repeat(5000)).unwrap_err();
    assert_eq!(err.kind, HostErrorKind::TooLong);
    assert!(err.to_string().len() < 300);
}

#[test]
fn kind_recognises_exactly_the_acr_default_domains() {
    use PersonalNetwork::*;
    let cases = [
        ("demo-registry.cn-hangzhou.cr.aliyuncs.com", ee("demo", "cn-hangzhou", false)),
        ("demo-registry-vpc.cn-hangzhou.cr.aliyuncs.com", ee("demo", "cn-hangzhou", true)),
        ("my-app-2-registry.ap-southeast-1.cr.aliyuncs.com", ee("my-app-2", "ap-southeast-1", false)),
        ("x-registry-vpc-registry.cn-beijing.cr.aliyuncs.com", ee("x-registry-vpc", "cn-beijing", false)),
        ("demo-registry.cn-shanghai-finance-1.cr.aliyuncs.com", ee("demo", "cn-shanghai-finance-1", false)),
        ("https://DEMO-REGISTRY.CN-HANGZHOU.CR.ALIYUNCS.COM/v2/", ee("demo", "cn-hangzhou", false)),
        ("demo-registry.cn-hangzhou.cr.aliyuncs.com.", ee("demo", "cn-hangzhou", false)),
        ("demo-registry.cn-hangzhou.cr.aliyuncs.com:443", ee("demo", "cn-hangzhou", false)),
        ("registry.cn-hangzhou.aliyuncs.com", personal("cn-hangzhou", false, Public)),
        ("registry-vpc.cn-hangzhou.aliyuncs.com", personal("cn-hangzhou", false, Vpc)),
        ("registry-internal.cn-hangzhou.aliyuncs.com", personal("cn-hangzhou", false, Internal)),
        ("registry-intl.ap-southeast-1.aliyuncs.com", personal("ap-southeast-1", true, Public)),
        ("registry-intl-vpc.ap-southeast-1.aliyuncs.com", personal("ap-southeast-1", true, Vpc)),
        ("registry-intl-internal.ap-southeast-1.aliyuncs.com", personal("ap-southeast-1", true, Internal)),
        ("registry.cn-hangzhou.aliyuncs.com:443", personal("cn-hangzhou", false, Public)),
    ];
    for (input, kind) in cases {
        assert_eq!(RegistryHost::parse(input).unwrap().kind(), kind, "{input:?}");
    }
}

#[test]
fn kind_is_custom_for_everything_else() {
    for input in [
        "docker.io",
        "localhost:5000",
        "registry.example.com",
        "test-registry.example.com",
        "x.cr.aliyuncs.com.evil.com",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com.evil.com",
        "evil.com/x-registry.cn-hangzhou.cr.aliyuncs.com",
        "evil.com/x.cr.aliyuncs.com",
        "demo-registry.cn-hangzhou.cr.aliyuncs.com:5000",
        "registry.cn-hangzhou.aliyuncs.com:8443",
        "registry-registry.cn-hangzhou.aliyuncs.com",
        "registry.cn-hangzhou.cr.aliyuncs.com",
        "demo-registry.hangzhou.cr.aliyuncs.com",
        "demo-registry.a.b.cr.aliyuncs.com",
        "demo-registry-internal.cn-hangzhou.cr.aliyuncs.com",
        "demo.registry.cn-hangzhou.cr.aliyuncs.com",
        "cr.aliyuncs.com",
        "registry-vpc-intl.cn-hangzhou.aliyuncs.com",
        "registry-vpc-internal.cn-hangzhou.aliyuncs.com",
        "myregistry.cn-hangzhou.aliyuncs.com",
        "registry.cn-hangzhou.distributed.aliyuncs.com",
        "xn--demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "xn--registry.cn-hangzhou.aliyuncs.com",
        "xn--80ak6aa92e.cn-hangzhou.cr.aliyuncs.com",
        "[::1]:5000",
        "registry.oss-cn-hangzhou.aliyuncs.com",
        "registry-vpc.oss-cn-hangzhou-internal.aliyuncs.com",
    ] {
        assert_eq!(RegistryHost::parse(input).unwrap().kind(), RegistryKind::Custom, "{input:?}");
    }
}

#[test]
fn loopback_detection() {
    for (input, lo) in [
        ("localhost", true),
        ("localhost:5000", true),
        ("127.0.0.1:5000", true),
        ("127.1.2.3", true),
        ("[::1]:5000", true),
        ("128.0.0.1", false),
        ("localhost.evil.com", false),
        ("127.0.0.1.evil.com", false),
        ("[::2]", false),
    ] {
        assert_eq!(RegistryHost::parse(input).unwrap().is_loopback(), lo, "{input:?}");
    }
}

#[test]
fn host_from_image_follows_docker_reference_rules() {
    let cases = [
        ("nginx", "docker.io"),
        ("nginx:1.25", "docker.io"),
        ("library/nginx:1.25", "docker.io"),
        ("nginx@sha256:abcd", "docker.io"),
        ("docker.io/library/nginx", "docker.io"),
        ("localhost/app", "localhost"),
        ("localhost:5000/app:1", "localhost:5000"),
        ("demo-registry.cn-hangzhou.cr.aliyuncs.com/ns/app:1.0", "demo-registry.cn-hangzhou.cr.aliyuncs.com"),
        ("registry.example.com:8443/ns/app@sha256:abcd", "registry.example.com:8443"),
        ("[::1]:5000/app", "[::1]:5000"),
        ("MyRegistry/app", "myregistry"),
    ];
    for (image, host) in cases {
        assert_eq!(host_from_image(image).unwrap().as_str(), host, "{image:?}");
    }
    for bad in ["", "nginx latest", "https://demo.com/app", "user@demo.com/app", "demo..com/app", "a:0/x"] {
        let e = host_from_image(bad).expect_err(bad);
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn registry_host_serde_round_trip() {
    let h: RegistryHost = serde_json::from_str("\"Demo.Example.com:5000\"").unwrap();
    assert_eq!(serde_json::to_string(&h).unwrap(), "\"demo.example.com:5000\"");
    assert!(serde_json::from_str::<RegistryHost>("\"a b\"").is_err());
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?"
}

fn dns_host() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..5).prop_map(|l| l.join("."))
}

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,100}") {
        let _ = RegistryHost::parse(&s).map(|h| h.kind());
        let _ = host_from_image(&s);
    }

    #[test]
    fn parse_never_panics_on_host_like_noise(s in "[a-z0-9.:/@\\[\\]\\-_%]{0,60}") {
        if let Ok(h) = RegistryHost::parse(&s) {
            let _ = h.kind();
            prop_assert_eq!(RegistryHost::parse(h.as_str()).unwrap(), h);
        }
    }

    #[test]
    fn parse_display_round_trips(
        host in dns_host(),
        port in proptest::option::of(1u16..),
        scheme in prop::sample::select(vec!["", "https://", "http://", "HTTPS://"]),
        path in prop::sample::select(vec!["", "/", "/v2/", "/ns/repo"]),
        dot in any::<bool>(),
    ) {
        let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
        let dot = if dot { "." } else { "" };
        let input = format!("{scheme}{host}{dot}{port_text}{path}");
        let parsed = RegistryHost::parse(&input).unwrap();
        prop_assert_eq!(parsed.as_str(), format!("{}{port_text}", host.to_ascii_lowercase()));
        prop_assert_eq!(RegistryHost::parse(&parsed.to_string()).unwrap(), parsed);
    }

    #[test]
    fn enterprise_hosts_always_end_with_the_cr_domain(
        s in "[a-z0-9-]{1,12}-registry(-vpc)?\\.[a-z]{2,3}(-[a-z0-9]{1,4}){0,2}\\.(cr\\.)?aliyuncs\\.com(\\.evil\\.com)?\\.?(:[0-9]{1,4})?"
    ) {
        if let Ok(h) = RegistryHost::parse(&s) {
            if let RegistryKind::Enterprise { instance_name, region, .. } = h.kind() {
                prop_assert!(h.host().ends_with(".cr.aliyuncs.com"), "{}", h);
                prop_assert!(h.port().is_none() || h.port() == Some(443));
                let prefix = format!("{instance_name}-registry");
                let middle = format!(".{region}.cr.aliyuncs.com");
                prop_assert!(h.host().starts_with(&prefix));
                prop_assert!(h.host().contains(&middle));
            }
        }
    }

    #[test]
    fn enterprise_default_domains_are_recognised(
        name in "[a-z0-9][a-z0-9-]{0,20}",
        r in "[a-z]{2,3}(-[a-z0-9]{1,5}){1,3}",
        vpc in any::<bool>(),
    ) {
        let host = format!("{name}-registry{}.{r}.cr.aliyuncs.com", if vpc { "-vpc" } else { "" });
        let kind = RegistryHost::parse(&host).unwrap().kind();
        prop_assert_eq!(kind, ee(&name, &r, vpc));
    }
}
