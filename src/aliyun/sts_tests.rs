use super::*;
use crate::aliyun::testutil::{client_for, respond, verify_signature, TestServer};
use std::time::{Duration, UNIX_EPOCH};

const OK_BODY: &str = r#"{"RequestId":"6894B13B","AssumedRoleUser":{"Arn":"acs:ram::1234567890123456:role/eci-acr-service/acr-broker","AssumedRoleId":"3445:acr-broker"},"Credentials":{"AccessKeyId":"STS.L4aB","AccessKeySecret":"wyLTSecret","SecurityToken":"tok==","Expiration":"2024-01-15T09:30:00Z"}}"#;

fn request() -> AssumeRoleRequest {
    AssumeRoleRequest {
        role_arn: "acs:ram::1234567890123456:role/eci-acr-service".into(),
        session_name: "acr-broker".into(),
        duration_seconds: 3600,
        policy: None,
        external_id: Some("ext-1".into()),
    }
}

fn caller() -> Credentials {
    Credentials {
        access_key_id: "STS.caller".into(),
        access_key_secret: Secret::from("caller-secret"),
        security_token: Some(Secret::from("caller-token")),
        expires_at: None,
    }
}

#[test]
fn session_name_validation() {
    for good in ["ab", "acr-broker", "a.b-c_d@e", &"x".repeat(64)] {
        assert!(validate_session_name(good).is_ok(), "{good}");
    }
    for bad in ["", "a", "has space", "semi;colon", "é-accent", &"x".repeat(65)] {
        let e = validate_session_name(bad).unwrap_err();
        assert_eq!(e.kind(), crate::aliyun::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn request_validation() {
    assert!(request().validate().is_ok());
    let mut r = request();
    r.role_arn = "arn:aws:iam::1:role/x".into();
    assert!(r.validate().unwrap_err().to_string().contains("RoleArn"));
    let mut r = request();
    r.duration_seconds = 60;
    assert!(r.validate().unwrap_err().to_string().contains("DurationSeconds"));
    let mut r = request();
    r.policy = Some(String::new());
    assert!(r.validate().is_err());
    let mut r = request();
    r.external_id = Some("bad id".into());
    assert!(r.validate().unwrap_err().to_string().contains("ExternalId"));
}

#[test]
fn parse_session_ok_and_malformed() {
    let v: Value = serde_json::from_str(OK_BODY).unwrap();
    let s = parse_session("AssumeRole", &v).unwrap();
    assert_eq!(s.credentials.access_key_id, "STS.L4aB");
    assert_eq!(s.credentials.access_key_secret.expose_secret(), "wyLTSecret");
    assert_eq!(s.credentials.security_token.as_ref().unwrap().expose_secret(), "tok==");
    assert_eq!(s.credentials.expires_at, Some(UNIX_EPOCH + Duration::from_secs(1_705_311_000)));
    assert!(s.assumed_role_arn.ends_with("/acr-broker"));

    for (needle, replacement, field) in [
        (r#""Expiration":"2024-01-15T09:30:00Z""#, r#""Expiration":"soon""#, "Expiration"),
        (r#","Expiration":"2024-01-15T09:30:00Z""#, "", "Expiration"),
        (r#""SecurityToken":"tok==","#, "", "SecurityToken"),
        (r#""AccessKeySecret":"wyLTSecret""#, r#""AccessKeySecret":5"#, "AccessKeySecret"),
        (r#""Arn":"acs:ram::1234567890123456:role/eci-acr-service/acr-broker","#, "", "Arn"),
    ] {
        let body = OK_BODY.replace(needle, replacement);
        assert_ne!(body, OK_BODY, "test edit did not apply: {needle}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let e = parse_session("AssumeRole", &v).unwrap_err();
        assert_eq!(e.code(), "MalformedResponse", "{e}");
        assert!(e.to_string().contains(field), "{e}");
        assert!(!e.to_string().contains("wyLTSecret"), "{e}");
    }
}

#[tokio::test]
async fn assume_role_sends_signed_post_with_query_params() {
    let server = TestServer::start(|_| respond(200, OK_BODY)).await;
    let client = client_for(&server.base);
    let session = client.assume_role(&caller(), &request()).await.unwrap();
    assert_eq!(session.credentials.access_key_id, "STS.L4aB");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, "/");
    assert!(s.body.is_empty());
    assert_eq!(s.headers["x-acs-action"], "AssumeRole");
    assert_eq!(s.headers["x-acs-version"], "2015-04-01");
    assert_eq!(s.headers["x-acs-date"], "2024-01-15T08:30:00Z");
    assert_eq!(s.headers["x-acs-security-token"], "caller-token");
    assert_eq!(s.headers["x-acs-accesskey-id"], "STS.caller");
    assert_eq!(s.headers["host"], server.base.trim_start_matches("http://"));
    assert_eq!(s.headers["x-acs-signature-nonce"].len(), 32);
    let q = s.query.as_deref().unwrap();
    assert!(q.contains("RoleSessionName=acr-broker"), "{q}");
    assert!(q.contains("ExternalId=ext-1"), "{q}");
    assert!(q.contains("DurationSeconds=3600"), "{q}");
    verify_signature(s, "caller-secret");
}

#[tokio::test]
async fn assume_role_upstream_error_is_typed_and_scrubbed() {
    let server = TestServer::start(|_| {
        let mut r = respond(403, r#"{"RequestId":"R-9","Code":"NoPermission","Message":"denied; token caller-token"}"#);
        r.headers_mut().insert("x-acs-retry-after", "2000".parse().unwrap());
        r
    })
    .await;
    let e = client_for(&server.base).assume_role(&caller(), &request()).await.unwrap_err();
    assert_eq!(e.code(), "NoPermission");
    assert_eq!(e.status(), Some(403));
    assert_eq!(e.request_id(), Some("R-9"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert!(!e.to_string().contains("caller-token"), "{e}");
}

#[tokio::test]
async fn invalid_session_name_is_refused_before_any_call() {
    let server = TestServer::start(|_| respond(200, OK_BODY)).await;
    let mut r = request();
    r.session_name = "bad name!".into();
    let e = client_for(&server.base).assume_role(&caller(), &r).await.unwrap_err();
    assert_eq!(e.kind(), crate::aliyun::ErrorKind::InvalidInput);
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn assume_role_with_oidc_is_unsigned_form_post() {
    let server = TestServer::start(|_| respond(200, OK_BODY)).await;
    let req = AssumeRoleWithOidcRequest {
        role_arn: "acs:ram::1234567890123456:role/rrsa".into(),
        provider_arn: "acs:ram::1234567890123456:oidc-provider/ack-rrsa".into(),
        oidc_token: Secret::from("eyJhbGciOi.payload.sig"),
        session_name: "acr-broker".into(),
        duration_seconds: 3600,
    };
    let s = client_for(&server.base).assume_role_with_oidc(&req).await.unwrap();
    assert_eq!(s.credentials.access_key_id, "STS.L4aB");
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "POST");
    assert!(seen.headers.get("authorization").is_none());
    assert!(seen.headers.keys().all(|k| !k.as_str().starts_with("x-acs-")));
    assert_eq!(seen.headers["content-type"], "application/x-www-form-urlencoded");
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(seen.query.as_deref().unwrap().as_bytes()).into_owned().collect();
    assert_eq!(q["Action"], "AssumeRoleWithOIDC");
    assert_eq!(q["Format"], "json");
    assert_eq!(q["Version"], "2015-04-01");
    assert_eq!(q["Timestamp"], "2024-01-15T08:30:00Z");
    assert_eq!(q["SignatureNonce"].len(), 32);
    assert!(!q.contains_key("OIDCToken"));
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(&seen.body).into_owned().collect();
    assert_eq!(form["OIDCToken"], "eyJhbGciOi.payload.sig");
    assert_eq!(form["OIDCProviderArn"], req.provider_arn);
    assert_eq!(form["RoleArn"], req.role_arn);
    assert_eq!(form["RoleSessionName"], "acr-broker");
    assert_eq!(form["DurationSeconds"], "3600");
}
