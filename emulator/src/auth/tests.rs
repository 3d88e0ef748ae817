//! Reference vectors (the V3 signature specification's examples) accepted; each tampering rejected.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::state::State;
use crate::util::parse_iso8601;
use crate::world::World;

const E0: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const NONCE: &str = "3f1a2b4c5d6e7f8091a2b3c4d5e6f708";
const DATE: &str = "2024-01-15T08:30:00Z";

pub(crate) const VECTOR_WORLD: &str = r#"
[[accounts]]
id = "1234567890123456"
[[policies]]
account = "1234567890123456"
name = "all"
statements = [{ actions = ["*"], resources = ["*"] }]
[[users]]
account = "1234567890123456"
name = "tester"
access_key_id = "LTAI5tTESTACCESSKEYID"
access_key_secret = "TestSecret0123456789abcdefghij"
policies = ["all"]
[[roles]]
arn = "acs:ram::1234567890123456:role/eci-acr-service"
policies = ["all"]
[[sts_sessions]]
access_key_id = "STS.NTestTempAccessKeyId"
access_key_secret = "TempSecretXYZ"
security_token = "CAIS+test/token=="
role_arn = "acs:ram::1234567890123456:role/eci-acr-service"
session_name = "vector"
expiration = "2024-01-15T09:30:00Z"
"#;

struct Vector {
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: &'static [u8],
}

fn state() -> State {
    let world = World::from_toml(VECTOR_WORLD).unwrap();
    let t = parse_iso8601(DATE).unwrap();
    State::new(world, Arc::new(move || t))
}

fn common(host: &str, action: &str, version: &str, sha: &str) -> Vec<(&'static str, String)> {
    vec![
        ("host", host.to_string()),
        ("x-acs-action", action.to_string()),
        ("x-acs-version", version.to_string()),
        ("x-acs-date", DATE.to_string()),
        ("x-acs-signature-nonce", NONCE.to_string()),
        ("x-acs-content-sha256", sha.to_string()),
    ]
}

fn py_extra(provider: &str) -> Vec<(&'static str, String)> {
    vec![
        ("accept", "application/json".to_string()),
        ("user-agent", "acr-broker-test/1.0".to_string()),
        ("x-acs-credentials-provider", provider.to_string()),
    ]
}

fn authz(ak: &str, signed: &str, sig: &str) -> (&'static str, String) {
    ("authorization", format!("ACS3-HMAC-SHA256 Credential={ak},SignedHeaders={signed},Signature={sig}"))
}

fn v8() -> Vector {
    let mut headers = common("sts.cn-hangzhou.aliyuncs.com", "AssumeRole", "2015-04-01", E0);
    headers.push(authz(
        "LTAI5tTESTACCESSKEYID",
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version",
        "5441520dc09616b4df34851219b2e42441f983067d78607b53d9b7dcfec7c1b1",
    ));
    Vector { method: "POST", path: "/", query: Some("RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-service&RoleSessionName=acr-broker&DurationSeconds=3600"), headers, body: b"" }
}

fn v6() -> Vector {
    let mut headers = common("cr.cn-hangzhou.aliyuncs.com", "GetAuthorizationToken", "2018-12-01", E0);
    headers.push(("x-acs-accesskey-id", "STS.NTestTempAccessKeyId".into()));
    headers.push(("x-acs-security-token", "CAIS+test/token==".into()));
    headers.push(authz("STS.NTestTempAccessKeyId", "host;x-acs-accesskey-id;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version", "dba1bc1c76cddf4037f0d1b30b0d2ff166e1e93c5258b55c411968680db2e452"));
    Vector { method: "POST", path: "/", query: Some("InstanceId=cri-abc123xyz"), headers, body: b"" }
}

const PY_SIGNED: &str = "accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version";

fn py_vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    // V1
    let mut h = common("sts.cn-hangzhou.aliyuncs.com", "AssumeRole", "2015-04-01", E0);
    h.extend(py_extra("static_ak"));
    h.push(authz(
        "LTAI5tTESTACCESSKEYID",
        PY_SIGNED,
        "c5432ddc961bb71b751b90e3e33ad834f9383da5513af7c63ef25659654edbb7",
    ));
    out.push(Vector { method: "POST", path: "/", query: Some("DurationSeconds=3600&RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-service&RoleSessionName=acr-broker"), headers: h, body: b"" });
    // V2
    let mut h = common("cr.cn-hangzhou.aliyuncs.com", "GetAuthorizationToken", "2018-12-01", E0);
    h.extend(py_extra("static_sts"));
    h.push(("x-acs-accesskey-id", "STS.NTestTempAccessKeyId".into()));
    h.push(("x-acs-security-token", "CAIS+test/token==".into()));
    h.push(authz("STS.NTestTempAccessKeyId", "accept;host;user-agent;x-acs-accesskey-id;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version", "b0e44b7c26658d7b6bad700edddd36c05f33c0ef41572cef455e566b3ec578e3"));
    out.push(Vector { method: "POST", path: "/", query: Some("InstanceId=cri-abc123xyz"), headers: h, body: b"" });
    // V3 (query encoding edge cases, `+` on the wire)
    let mut h = common("sts.aliyuncs.com", "AssumeRole", "2015-04-01", E0);
    h.extend(py_extra("static_ak"));
    h.push(authz(
        "LTAI5tTESTACCESSKEYID",
        PY_SIGNED,
        "002fccc70ad81273208091390da47ea5a60372112162889af13234a7dbbe95f7",
    ));
    out.push(Vector { method: "POST", path: "/", query: Some("ExternalId=ext+id~%2A%2F%C3%A9&Policy=%7B%22Version%22%3A%221%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22cr%3AGet%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D&RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-user&RoleSessionName=a.b-c_d%40e"), headers: h, body: b"" });
    // V5 (personal GET /tokens)
    let mut h = common("cr.cn-hangzhou.aliyuncs.com", "GetAuthorizationToken", "2016-06-07", E0);
    h.extend(py_extra("static_ak"));
    h.push(authz(
        "LTAI5tTESTACCESSKEYID",
        PY_SIGNED,
        "d508af091962ed43206973d1a04e1f2f36b75636ce58d5683e4e4ac30ee5e736",
    ));
    out.push(Vector { method: "GET", path: "/tokens", query: None, headers: h, body: b"" });
    // V7 (form body)
    let sha = "dc839410b6798f8373125d1ad9e33ea320563bc1df794957ce7c6a8b7451b733";
    let mut h = common("sts.cn-hangzhou.aliyuncs.com", "AssumeRole", "2015-04-01", sha);
    h.extend(py_extra("static_ak"));
    h.push(("content-type", "application/x-www-form-urlencoded".into()));
    h.push(authz("LTAI5tTESTACCESSKEYID", "accept;content-type;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version", "d7333d0bbbd2ea36c4787ce14e5ca1e19e9ea90ccea282d41fbd68b10cb38a80"));
    out.push(Vector { method: "POST", path: "/", query: None, headers: h, body: b"DurationSeconds=3600&RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-user&RoleSessionName=acr+broker" });
    out
}

fn header_map(v: &Vector) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, val) in &v.headers {
        m.append(HeaderName::from_static(k), HeaderValue::from_str(val).unwrap());
    }
    m
}

fn run(st: &State, v: &Vector) -> Result<Caller, ApiError> {
    let h = header_map(v);
    authenticate(st, &SignedParts { method: v.method, path: v.path, raw_query: v.query, headers: &h, body: v.body })
}

fn set(v: &mut Vector, name: &'static str, value: &str) {
    v.headers.retain(|(k, _)| *k != name);
    v.headers.push((name, value.to_string()));
}

fn code(r: Result<Caller, ApiError>) -> String {
    r.map(|_| "accepted".to_string()).unwrap_or_else(|e| e.code)
}

#[test]
fn v8_long_term_key_accepted() {
    let c = run(&state(), &v8()).unwrap();
    assert_eq!(c.principal, Principal::User { account: "1234567890123456".into(), name: "tester".into() });
    assert!(c.session_expires.is_none());
}

#[test]
fn v6_sts_key_accepted() {
    let c = run(&state(), &v6()).unwrap();
    assert!(matches!(c.principal, Principal::Role { ref role, .. } if role == "eci-acr-service"));
}

#[test]
fn python_sdk_vectors_accepted() {
    for (i, v) in py_vectors().iter().enumerate() {
        assert_eq!(code(run(&state(), v)), "accepted", "vector #{i}");
    }
}

#[test]
fn each_tampering_is_rejected() {
    type Tamper = (&'static str, fn(&mut Vector), &'static str);
    let cases: Vec<Tamper> = vec![
        ("signed header value", |v| set(v, "x-acs-action", "AssumeRoleX"), "SignatureDoesNotMatch"),
        ("host", |v| set(v, "host", "sts.cn-beijing.aliyuncs.com"), "SignatureDoesNotMatch"),
        (
            "query value",
            |v| {
                v.query = Some("RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-service&RoleSessionName=acr-broker&DurationSeconds=3601")
            },
            "SignatureDoesNotMatch",
        ),
        (
            "extra query param",
            |v| {
                v.query = Some("RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-service&RoleSessionName=acr-broker&DurationSeconds=3600&Policy=x")
            },
            "SignatureDoesNotMatch",
        ),
        (
            "body",
            |v| {
                v.body = b"x=1";
                set(v, "content-type", "application/x-www-form-urlencoded");
            },
            "IncompleteSignature",
        ),
        ("date in window", |v| set(v, "x-acs-date", "2024-01-15T08:31:00Z"), "SignatureDoesNotMatch"),
        ("date out of window", |v| set(v, "x-acs-date", "2024-01-15T08:46:00Z"), "InvalidTimeStamp.Expired"),
        ("date malformed", |v| set(v, "x-acs-date", "2024-01-15 08:30:00"), "InvalidTimeStamp.Format"),
        ("nonce", |v| set(v, "x-acs-signature-nonce", "other"), "SignatureDoesNotMatch"),
        ("unsigned x-acs header", |v| set(v, "x-acs-extra", "1"), "IncompleteSignature"),
        (
            "unknown key",
            |v| {
                let a = v
                    .headers
                    .iter()
                    .find(|(k, _)| *k == "authorization")
                    .unwrap()
                    .1
                    .replace("LTAI5tTESTACCESSKEYID", "LTAI5tUNKNOWN");
                set(v, "authorization", &a)
            },
            "InvalidAccessKeyId.NotFound",
        ),
        ("token with long-term key", |v| set(v, "x-acs-security-token", "CAIS+test/token=="), "IncompleteSignature"),
        (
            "signature",
            |v| {
                let a =
                    v.headers.iter().find(|(k, _)| *k == "authorization").unwrap().1.replace("5441520d", "5441520e");
                set(v, "authorization", &a)
            },
            "SignatureDoesNotMatch",
        ),
        ("missing authorization", |v| v.headers.retain(|(k, _)| *k != "authorization"), "IncompleteSignature"),
    ];
    for (name, tamper, want) in cases {
        let mut v = v8();
        tamper(&mut v);
        assert_eq!(code(run(&state(), &v)), want, "tampering: {name}");
    }
}

#[test]
fn body_hash_must_match_body() {
    let mut v = py_vectors().remove(4);
    v.body = b"DurationSeconds=43200&RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-user&RoleSessionName=acr+broker";
    assert_eq!(code(run(&state(), &v)), "SignatureDoesNotMatch");
}

#[test]
fn reused_nonce_is_rejected() {
    let st = state();
    assert_eq!(code(run(&st, &v8())), "accepted");
    assert_eq!(code(run(&st, &v8())), "SignatureNonceUsed");
}

#[test]
fn sts_token_tampering_is_rejected() {
    let mut v = v6();
    set(&mut v, "x-acs-security-token", "CAIS+test/token=X");
    assert_eq!(code(run(&state(), &v)), "InvalidSecurityToken.MismatchWithAccessKey");
    let mut v = v6();
    v.headers.retain(|(k, _)| *k != "x-acs-security-token");
    assert_eq!(code(run(&state(), &v)), "IncompleteSignature", "a signed header went missing");
    let mut v = v6();
    set(&mut v, "x-acs-accesskey-id", "STS.Other");
    assert_eq!(code(run(&state(), &v)), "IncompleteSignature");
}

#[test]
fn expired_static_session_is_rejected() {
    let world = World::from_toml(VECTOR_WORLD).unwrap();
    let t = parse_iso8601("2024-01-15T09:30:00Z").unwrap();
    let st = State::new(world, Arc::new(move || t));
    let mut v = v6();
    set(&mut v, "x-acs-date", "2024-01-15T09:30:00Z");
    assert_eq!(code(run(&st, &v)), "InvalidSecurityToken.Expired");
}
