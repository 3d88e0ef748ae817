use super::*;
use crate::aliyun::testutil::{client_for, respond, Seen, TestServer};
use crate::aliyun::{ErrorKind, Timeouts, Transport};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

const CREDS: &str = r#"{"AccessKeyId":"STS.NTdiv","AccessKeySecret":"ZvpNNRVQ","Expiration":"2021-09-28T14:00:11Z","SecurityToken":"token","LastUpdated":"2021-09-28T08:00:11Z","Code":"Success"}"#;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |k: &str| map.get(k).cloned()
}

fn transport() -> Transport {
    Transport::with_proxy(Timeouts::default(), None).unwrap()
}

/// A metadata server; `hardened` makes it issue tokens and require them on GETs.
async fn metadata_server(hardened: bool) -> TestServer {
    let required = AtomicBool::new(hardened);
    TestServer::start(move |s: &Seen| {
        let hardened = required.load(Ordering::SeqCst);
        match (s.method.as_str(), s.path.as_str()) {
            ("PUT", "/latest/api/token") if hardened => {
                assert_eq!(s.headers["x-aliyun-ecs-metadata-token-ttl-seconds"], "21600");
                respond(200, "mdtoken-1")
            }
            ("PUT", _) => respond(404, "not found"),
            ("GET", p) => {
                if hardened && s.headers.get("x-aliyun-ecs-metadata-token").map(|v| v.as_bytes()) != Some(b"mdtoken-1")
                {
                    return respond(401, "");
                }
                match p {
                    "/latest/meta-data/ram/security-credentials/" => respond(200, "node-role\n"),
                    "/latest/meta-data/ram/security-credentials/node-role" => respond(200, CREDS),
                    _ => respond(404, ""),
                }
            }
            _ => respond(405, ""),
        }
    })
    .await
}

#[tokio::test]
async fn ecs_hardened_mode_sends_token_on_gets() {
    let server = metadata_server(true).await;
    let src = EcsRamRoleSource::new(transport(), &server.base, None, true).unwrap();
    let c = src.fetch().await.unwrap();
    assert_eq!(c.access_key_id, "STS.NTdiv");
    assert_eq!(c.access_key_secret.expose_secret(), "ZvpNNRVQ");
    assert_eq!(c.security_token.as_ref().unwrap().expose_secret(), "token");
    assert_eq!(c.expires_at, crate::clock::parse_rfc3339("2021-09-28T14:00:11Z"));
    let seen = server.seen();
    let paths: Vec<_> = seen.iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    assert_eq!(
        paths,
        [
            "PUT /latest/api/token",
            "GET /latest/meta-data/ram/security-credentials/",
            "GET /latest/meta-data/ram/security-credentials/node-role"
        ]
    );
    assert_eq!(src.name(), "ecs-ram-role");
}

#[tokio::test]
async fn ecs_falls_back_to_plain_gets_when_token_put_fails() {
    let server = metadata_server(false).await;
    let src = EcsRamRoleSource::new(transport(), &format!("{}/", server.base), None, false).unwrap();
    let c = src.fetch().await.unwrap();
    assert_eq!(c.access_key_id, "STS.NTdiv");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[1..].iter().all(|s| s.headers.get("x-aliyun-ecs-metadata-token").is_none()));
}

#[tokio::test]
async fn ecs_imdsv1_disabled_refuses_fallback() {
    let server = metadata_server(false).await;
    let src = EcsRamRoleSource::new(transport(), &server.base, None, true).unwrap();
    let e = src.fetch().await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn ecs_configured_role_skips_discovery() {
    let server = metadata_server(true).await;
    let src = EcsRamRoleSource::new(transport(), &server.base, Some("node-role".into()), false).unwrap();
    src.fetch().await.unwrap();
    assert_eq!(server.seen().len(), 2);
    let unknown = EcsRamRoleSource::new(transport(), &server.base, Some("other".into()), false).unwrap();
    let e = unknown.fetch().await.unwrap_err();
    assert_eq!(e.code(), "NoIdentity", "{e}");
    assert!(EcsRamRoleSource::new(transport(), &server.base, Some("a/b".into()), false).is_err());
}

#[tokio::test]
async fn ecs_without_role_is_no_identity() {
    let server = TestServer::start(|s| match s.method.as_str() {
        "PUT" => respond(200, "t"),
        _ => respond(404, ""),
    })
    .await;
    let e = EcsRamRoleSource::new(transport(), &server.base, None, false).unwrap().fetch().await.unwrap_err();
    assert_eq!(e.code(), "NoIdentity");
    assert_eq!(e.kind(), ErrorKind::Denied);
}

#[tokio::test]
async fn ecs_server_error_is_retryable() {
    let server = TestServer::start(|s| match s.method.as_str() {
        "PUT" => respond(200, "t"),
        _ => respond(500, "oops"),
    })
    .await;
    let e =
        EcsRamRoleSource::new(transport(), &server.base, Some("r".into()), false).unwrap().fetch().await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

#[test]
fn ecs_credentials_json_validation() {
    let a = "m";
    assert!(ecs::parse_credentials(a, CREDS.as_bytes()).is_ok());
    let failed = CREDS.replace(r#""Code":"Success""#, r#""Code":"Failed""#);
    assert_eq!(ecs::parse_credentials(a, failed.as_bytes()).unwrap_err().code(), "Failed");
    let no_code = CREDS.replace(r#","Code":"Success""#, "");
    assert!(ecs::parse_credentials(a, no_code.as_bytes()).is_err());
    let bad_exp = CREDS.replace("2021-09-28T14:00:11Z", "tomorrow");
    let e = ecs::parse_credentials(a, bad_exp.as_bytes()).unwrap_err();
    assert_eq!(e.code(), "MalformedResponse");
    assert!(e.to_string().contains("Expiration"));
    let no_token = CREDS.replace(r#""SecurityToken":"token","#, "");
    assert!(ecs::parse_credentials(a, no_token.as_bytes()).is_err());
    assert!(ecs::parse_credentials(a, b"<html>").is_err());
}

#[test]
fn metadata_base_may_be_plain_http_anywhere() {
    assert!(EcsRamRoleSource::new(transport(), "http://100.100.100.200", None, false).is_ok());
    assert!(EcsRamRoleSource::new(transport(), "ftp://100.100.100.200", None, false).is_err());
}

#[tokio::test]
async fn env_source_reads_keys_and_token() {
    let lookup = env(&[
        (env_vars::ACCESS_KEY_ID, "LTAIenv"),
        (env_vars::ACCESS_KEY_SECRET, "envsecret"),
        (env_vars::SECURITY_TOKEN, "envtoken"),
    ]);
    let src = EnvSource::from_lookup(&lookup).unwrap().unwrap();
    let c = src.fetch().await.unwrap();
    assert_eq!(c.access_key_id, "LTAIenv");
    assert_eq!(c.security_token.unwrap().expose_secret(), "envtoken");
    assert!(!format!("{src:?}").contains("envsecret"));
    assert!(EnvSource::from_lookup(&env(&[])).unwrap().is_none());
    assert!(EnvSource::from_lookup(&env(&[(env_vars::ACCESS_KEY_ID, "x")])).is_err());
    assert!(EnvSource::from_lookup(&env(&[(env_vars::ACCESS_KEY_SECRET, "x")])).is_err());
    let blank = env(&[(env_vars::ACCESS_KEY_ID, " "), (env_vars::ACCESS_KEY_SECRET, "")]);
    assert!(EnvSource::from_lookup(&blank).unwrap().is_none());
}

#[tokio::test]
async fn static_source_refuses_empty_values() {
    assert!(StaticSource::new(String::new(), Secret::from("s"), None).is_err());
    assert!(StaticSource::new("id".into(), Secret::from(""), None).is_err());
    let s = StaticSource::new("id".into(), Secret::from("s"), Some(Secret::from(""))).unwrap();
    assert!(s.fetch().await.unwrap().security_token.is_none());
}

#[test]
fn default_chain_order() {
    let client = client_for("http://127.0.0.1:1");
    let both = env(&[
        (env_vars::ACCESS_KEY_ID, "LTAI"),
        (env_vars::ACCESS_KEY_SECRET, "s"),
        (env_vars::ROLE_ARN, "acs:ram::1:role/r"),
        (env_vars::OIDC_PROVIDER_ARN, "acs:ram::1:oidc-provider/p"),
        (env_vars::OIDC_TOKEN_FILE, "/tmp/t"),
    ]);
    assert_eq!(DefaultChain::from_env(&both, &client).unwrap().name(), "env");
    let oidc = env(&[
        (env_vars::ROLE_ARN, "acs:ram::1:role/r"),
        (env_vars::OIDC_PROVIDER_ARN, "acs:ram::1:oidc-provider/p"),
        (env_vars::OIDC_TOKEN_FILE, "/tmp/t"),
    ]);
    assert_eq!(DefaultChain::from_env(&oidc, &client).unwrap().name(), "oidc");
    let partial = env(&[(env_vars::ROLE_ARN, "acs:ram::1:role/r")]);
    assert_eq!(DefaultChain::from_env(&partial, &client).unwrap().name(), "ecs-ram-role");
    let bad_session = env(&[
        (env_vars::ROLE_ARN, "acs:ram::1:role/r"),
        (env_vars::OIDC_PROVIDER_ARN, "acs:ram::1:oidc-provider/p"),
        (env_vars::OIDC_TOKEN_FILE, "/tmp/t"),
        (env_vars::ROLE_SESSION_NAME, "bad name"),
    ]);
    assert!(DefaultChain::from_env(&bad_session, &client).is_err());
    let half = env(&[(env_vars::ACCESS_KEY_ID, "LTAI")]);
    assert!(DefaultChain::from_env(&half, &client).is_err());
}

#[tokio::test]
async fn default_chain_with_everything_disabled_is_no_identity() {
    let client = client_for("http://127.0.0.1:1");
    let off = env(&[(env_vars::ECS_METADATA_DISABLED, "true")]);
    let chain = source_from_env(&off, &client).unwrap();
    assert_eq!(chain.name(), "none");
    let e = chain.fetch().await.unwrap_err();
    assert_eq!(e.code(), "NoIdentity");
    assert!(e.to_string().contains(env_vars::ACCESS_KEY_ID));
}

#[tokio::test]
async fn oidc_source_rereads_token_file_each_fetch() {
    let sts_body = r#"{"RequestId":"R","AssumedRoleUser":{"Arn":"acs:ram::1:role/r/s"},"Credentials":{"AccessKeyId":"STS.oidc","AccessKeySecret":"sec","SecurityToken":"tok","Expiration":"2024-01-15T09:30:00Z"}}"#;
    let server = TestServer::start(move |_| respond(200, sts_body)).await;
    let client = client_for(&server.base);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "jwt-one\n").unwrap();
    let src = OidcSource::new(
        client,
        "acs:ram::1234567890123456:role/r".into(),
        "acs:ram::1234567890123456:oidc-provider/p".into(),
        file.clone(),
        "acr-broker".into(),
        3600,
    )
    .unwrap();
    let c = src.fetch().await.unwrap();
    assert_eq!(c.access_key_id, "STS.oidc");
    assert_eq!(c.expires_at, Some(UNIX_EPOCH + Duration::from_secs(1_705_311_000)));
    std::fs::write(&file, "jwt-two").unwrap();
    src.fetch().await.unwrap();
    let tokens: Vec<String> = server
        .seen()
        .iter()
        .map(|s| form_urlencoded::parse(&s.body).find(|(k, _)| k == "OIDCToken").map(|(_, v)| v.into_owned()).unwrap())
        .collect();
    assert_eq!(tokens, ["jwt-one", "jwt-two"]);
    std::fs::remove_file(&file).unwrap();
    let e = src.fetch().await.unwrap_err();
    assert!(e.to_string().contains("OIDC token file"), "{e}");
    assert!(e.is_retryable());
}
