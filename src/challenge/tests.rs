use super::*;
use proptest::prelude::*;

fn bearer(realm: &str, service: Option<&str>, scopes: &[&str]) -> Challenge {
    Challenge::Bearer {
        realm: realm.into(),
        service: service.map(Into::into),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

const HZ_REALM: &str = "https://dockerauth.cn-hangzhou.aliyuncs.com/auth";

#[test]
fn parse_accepts_registry_and_acr_challenges() {
    let cases = [
        (
            r#"Bearer realm="https://dockerauth.cn-hangzhou.aliyuncs.com/auth",service="registry.aliyuncs.com:cn-hangzhou:26842""#,
            bearer(HZ_REALM, Some("registry.aliyuncs.com:cn-hangzhou:26842"), &[]),
        ),
        (
            r#"bearer REALM="https://dockerauth.cn-hangzhou.aliyuncs.com/auth" , Service="s", scope="repository:ns/app:pull""#,
            bearer(HZ_REALM, Some("s"), &["repository:ns/app:pull"]),
        ),
        (
            r#"Bearer realm="https://r/auth",service="s",scope="repository:a:pull repository:b:pull,push",error="insufficient_scope""#,
            bearer("https://r/auth", Some("s"), &["repository:a:pull", "repository:b:pull,push"]),
        ),
        (
            r#"Bearer realm="https://r/auth",scope="repository:a:pull",scope="registry:catalog:*",scope="repository:a:pull""#,
            bearer("https://r/auth", None, &["repository:a:pull", "registry:catalog:*"]),
        ),
        (r#"Bearer realm=https://r/auth,service=reg"#, bearer("https://r/auth", Some("reg"), &[])),
        (r#"Bearer realm="a\"b\\c""#, bearer(r#"a"b\c"#, None, &[])),
        (r#"Bearer realm = "x" ,, "#, bearer("x", None, &[])),
        (r#"Basic realm="x", Bearer realm="https://r/auth""#, bearer("https://r/auth", None, &[])),
        (r#"Negotiate, Bearer realm="https://r/auth""#, bearer("https://r/auth", None, &[])),
        (r#"Basic realm="Registry Realm""#, Challenge::Basic { realm: Some("Registry Realm".into()) }),
        ("Basic", Challenge::Basic { realm: None }),
        (r#"BASIC realm=x, charset="UTF-8""#, Challenge::Basic { realm: Some("x".into()) }),
    ];
    for (value, want) in cases {
        assert_eq!(parse(value), Ok(want), "{value}");
    }
}

#[test]
fn parse_rejects_bad_values_naming_the_problem() {
    let long = format!("Bearer realm=\"{}\"", "a".repeat(MAX_CHALLENGE_LEN));
    let cases: Vec<(&str, &str)> = vec![
        ("", "empty"),
        ("   ", "empty"),
        (&long, "longer than"),
        (r#"Bearer realm="https://r/auth"#, "unterminated quoted string"),
        (r#"Bearer realm="x\"#, "unterminated quoted string"),
        ("Bearer realm=\"a\nb\"", "control character"),
        (r#"Bearer realm="x" service="y""#, "expected ','"),
        (r#"Bearer =x"#, "expected a parameter name"),
        (r#"Bearer realm="#, "expected a parameter value"),
        (r#"Bearer realm=,service=x"#, "expected a parameter value"),
        (r#""Bearer" realm=x"#, "expected an auth scheme"),
        (r#"Bearer; realm=x"#, "expected a space after the auth scheme"),
        ("Bearer réalm=x", "malformed"),
        (r#"Bearer service="s""#, "no realm"),
        (r#"Bearer realm="""#, "no realm"),
        ("Bearer", "no realm"),
        (r#"Bearer realm="a",realm="b""#, "more than once"),
        (r#"Bearer realm="a",service="s",Service="t""#, "more than once"),
        (r#"Digest realm="x", nonce="y""#, "no Bearer or Basic"),
        ("Negotiate", "no Bearer or Basic"),
    ];
    for (value, problem) in cases {
        let err = parse(value).expect_err(value);
        assert!(err.to_string().contains(problem), "{value:?}: {err}");
    }
}

#[test]
fn realm_allows_dockerauth_hosts() {
    for realm in [
        HZ_REALM,
        "https://dockerauth-ee.cn-hangzhou.aliyuncs.com/auth",
        "https://dockerauth-vpc.cn-shanghai.aliyuncs.com/auth",
        "https://dockerauth-cn-zhangjiakou.aliyuncs.com/auth",
        "https://DockerAuth.CN-Hangzhou.aliyuncs.com./auth",
        "https://dockerauth.ap-southeast-1.aliyuncs.com:443/auth",
        "https://dockerauth.cn-hangzhou.aliyuncs.com",
    ] {
        let url = realm_is_allowed(realm, &[]).unwrap_or_else(|e| panic!("{realm}: {e}"));
        assert!(url.https);
        assert!(url.path_and_query.starts_with('/'));
    }
    let url = realm_is_allowed("HTTPS://DockerAuth.CN-Hangzhou.aliyuncs.com/auth", &[]).unwrap();
    assert_eq!(url.to_string(), HZ_REALM);
}

#[test]
fn realm_rejects_other_hosts_schemes_and_shapes() {
    let extra = vec!["127.0.0.1:5001".to_string(), "Token.Example.com".to_string(), "bad host".to_string()];
    let cases: Vec<(&str, &str)> = vec![
        ("http://dockerauth.cn-hangzhou.aliyuncs.com/auth", "only for loopback"),
        ("ftp://dockerauth.cn-hangzhou.aliyuncs.com/auth", "scheme must be https"),
        ("dockerauth.cn-hangzhou.aliyuncs.com/auth", "not an absolute URL"),
        ("https://user:pw@dockerauth.cn-hangzhou.aliyuncs.com/auth", "user info"),
        ("https://dockerauth.cn-hangzhou.aliyuncs.com/auth#x", "fragment"),
        ("https://dockerauth.cn-hangzhou.aliyuncs.com/a b", "whitespace"),
        ("https://dockerauth.cn-hangzhou.aliyuncs.cоm/auth", "non-ASCII"),
        ("https:///auth", "empty host"),
        ("https://dockerauth..aliyuncs.com/auth", "empty label"),
        ("https://dockerauth.cn-hangzhou.aliyuncs.com:8443/auth", "not allow-listed"),
        ("https://dockerauth.cn-hangzhou.aliyuncs.com.evil.com/auth", "not allow-listed"),
        ("https://evil.com/dockerauth.cn-hangzhou.aliyuncs.com/auth", "not allow-listed"),
        ("https://dockerauth.aliyuncs.com/auth", "not allow-listed"),
        ("https://dockerauthx.cn-hangzhou.aliyuncs.com/auth", "not allow-listed"),
        ("https://dockerauth-.cn-hangzhou.aliyuncs.com/auth", "invalid character"),
        ("https://dockerauth-evil.oss-cn-hangzhou.aliyuncs.com/auth", "not allow-listed"),
        ("https://x.dockerauth.cn-hangzhou.aliyuncs.com/auth", "not allow-listed"),
        ("https://dockerauth.hangzhou.aliyuncs.com/auth", "not allow-listed"),
        ("https://dockerauth.cn-hangzhou.evil.com/auth", "not allow-listed"),
        ("https://127.0.0.1:5002/auth", "not allow-listed"),
        ("http://127.0.0.2:5001/auth", "not allow-listed"),
        ("http://token.example.com/auth", "only for loopback"),
        ("https://bad host/auth", "whitespace"),
    ];
    for (realm, reason) in cases {
        let err = realm_is_allowed(realm, &extra).expect_err(realm);
        assert!(err.to_string().contains(reason), "{realm}: {err}");
    }
}

#[test]
fn realm_allows_configured_hosts_and_loopback_http() {
    let extra = vec!["127.0.0.1:5001".to_string(), "Token.Example.com".to_string(), "localhost".into()];
    for realm in [
        "http://127.0.0.1:5001/auth",
        "https://token.example.com/auth",
        "https://TOKEN.example.com:8443/auth?x=1",
        "http://localhost:40000/token",
    ] {
        assert!(realm_is_allowed(realm, &extra).is_ok(), "{realm}");
    }
    let url = realm_is_allowed("http://127.0.0.1:5001?a=b", &extra).unwrap();
    assert_eq!(url.path_and_query, "/?a=b");
    assert!(!url.https);
}

#[test]
fn token_url_appends_service_scopes_and_account() {
    let url = realm_is_allowed(HZ_REALM, &[]).unwrap();
    let scopes = vec!["repository:ns/app:pull".to_string(), "repository:ns/b:pull,push".to_string()];
    assert_eq!(
        url.token_url(Some("registry.aliyuncs.com:cn-hangzhou:26842"), &scopes, Some("user@1")),
        "https://dockerauth.cn-hangzhou.aliyuncs.com/auth?service=registry.aliyuncs.com%3Acn-hangzhou%3A26842\
         &scope=repository%3Ans%2Fapp%3Apull&scope=repository%3Ans%2Fb%3Apull%2Cpush&account=user%401"
    );
    assert_eq!(url.token_url(None, &[], None), HZ_REALM);
    let q = realm_is_allowed("http://127.0.0.1:9/t?x=1", &["127.0.0.1".into()]).unwrap();
    assert_eq!(q.token_url(Some("s"), &[], None), "http://127.0.0.1:9/t?x=1&service=s");
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,200}") {
        let _ = parse(&s);
        let _ = realm_is_allowed(&s, &["127.0.0.1".to_string()]);
    }

    #[test]
    fn parse_never_panics_on_challenge_like_noise(s in "(Bearer|Basic|realm|scope|=|\"|\\\\|,| |[a-z]){0,40}") {
        let _ = parse(&s);
    }

    #[test]
    fn quoted_params_round_trip(
        realm in "[ -~]{1,40}",
        service in proptest::option::of("[ -~]{0,30}"),
        scopes in prop::collection::vec("[!-~&&[^\"\\\\]]{1,20}", 0..4),
        scheme in prop::sample::select(vec!["Bearer", "bearer", "BEARER"]),
    ) {
        let mut value = format!("{scheme} realm={}", quote(&realm));
        if let Some(s) = &service {
            value.push_str(&format!(", service={}", quote(s)));
        }
        if !scopes.is_empty() {
            value.push_str(&format!(",scope={}", quote(&scopes.join(" "))));
        }
        let mut want_scopes: Vec<String> = Vec::new();
        for s in &scopes {
            if !want_scopes.contains(s) {
                want_scopes.push(s.clone());
            }
        }
        prop_assert_eq!(parse(&value).unwrap(), Challenge::Bearer { realm, service, scopes: want_scopes });
    }

    #[test]
    fn allowed_realms_display_and_recheck_identically(
        region in "[a-z]{2}-[a-z]{3,8}(-[0-9])?",
        suffix in prop::sample::select(vec!["", "-ee", "-vpc"]),
        path in "(/[a-z]{1,8}){0,3}",
    ) {
        let realm = format!("https://dockerauth{suffix}.{region}.aliyuncs.com{path}");
        let url = realm_is_allowed(&realm, &[]).unwrap();
        prop_assert_eq!(realm_is_allowed(&url.to_string(), &[]).unwrap(), url);
    }
}
