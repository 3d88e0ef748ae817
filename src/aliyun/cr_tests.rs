use super::*;
use crate::aliyun::testutil::{client_for, respond, verify_signature, TestServer};
use std::time::{Duration, UNIX_EPOCH};

fn caller() -> Credentials {
    Credentials::long_term("LTAIcaller", Secret::from("long-term-secret"))
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn ee_token_parses_and_rejects_malformed() {
    let ok = r#"{"RequestId":"E0","IsSuccess":true,"Code":"success","TempUsername":"cr_temp_user","AuthorizationToken":"pw","ExpireTime":1571242083000}"#;
    let t = parse_ee_token(&json(ok)).unwrap();
    assert_eq!(t.username, "cr_temp_user");
    assert_eq!(t.password.expose_secret(), "pw");
    assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_millis(1_571_242_083_000));
    for (needle, repl) in [
        (r#""TempUsername":"cr_temp_user","#, ""),
        (r#""AuthorizationToken":"pw","#, ""),
        (r#""ExpireTime":1571242083000"#, r#""ExpireTime":"later""#),
        (r#""ExpireTime":1571242083000"#, r#""ExpireTime":-5"#),
        (r#","ExpireTime":1571242083000"#, ""),
    ] {
        let body = ok.replace(needle, repl);
        assert_ne!(body, ok);
        let e = parse_ee_token(&json(&body)).unwrap_err();
        assert_eq!(e.code(), "MalformedResponse", "{e}");
    }
}

#[test]
fn personal_token_parses_and_rejects_malformed() {
    let ok = r#"{"data":{"authorizationToken":"pw","tempUserName":"cr_temp_user","expireDate":1556766120000},"requestId":"r"}"#;
    let t = parse_personal_token(&json(ok)).unwrap();
    assert_eq!(t.username, "cr_temp_user");
    assert_eq!(t.password.expose_secret(), "pw");
    assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_millis(1_556_766_120_000));
    for bad in [
        r#"{"requestId":"r"}"#,
        r#"{"data":"x"}"#,
        r#"{"data":{"authorizationToken":"pw","tempUserName":"u"}}"#,
        r#"{"data":{"authorizationToken":7,"tempUserName":"u","expireDate":1}}"#,
    ] {
        assert_eq!(parse_personal_token(&json(bad)).unwrap_err().code(), "MalformedResponse");
    }
}

#[test]
fn instance_page_parses() {
    let body = json(
        r#"{"IsSuccess":true,"PageNo":1,"PageSize":30,"TotalCount":2,"Instances":[
        {"InstanceId":"cri-a","InstanceName":"test","InstanceStatus":"RUNNING","RegionId":"cn-shanghai"},
        {"InstanceId":"cri-b","InstanceName":"test2"}]}"#,
    );
    let (items, total) = parse_instance_page(&body, "cn-beijing").unwrap();
    assert_eq!(total, Some(2));
    assert_eq!(items[0].region, "cn-shanghai");
    assert_eq!(items[0].status, "RUNNING");
    assert_eq!(items[1].region, "cn-beijing");
    assert_eq!(items[1].status, "");
    let e = parse_instance_page(&json(r#"{"Instances":[{"InstanceName":"x"}]}"#), "r").unwrap_err();
    assert!(e.to_string().contains("Instances[0].InstanceId"), "{e}");
    assert!(parse_instance_page(&json(r#"{"Instances":{}}"#), "r").is_err());
    assert!(parse_instance_page(&json(r#"{"TotalCount":"x"}"#), "r").is_err());
    let (none, _) = parse_instance_page(&json(r#"{"TotalCount":0}"#), "r").unwrap();
    assert!(none.is_empty());
}

#[test]
fn endpoint_domains_parse() {
    let body = json(
        r#"{"IsSuccess":true,"Endpoints":[
        {"EndpointType":"internet","Domains":[{"Domain":"t-registry.cn-shanghai.cr.aliyuncs.com","Type":"SYSTEM"},{"Domain":"reg.example.com","Type":"USER"}]},
        {"EndpointType":"vpc","Domains":[{"Domain":"t-registry-vpc.cn-shanghai.cr.aliyuncs.com","Type":"SYSTEM"},{"Domain":"odd","Type":"WEIRD"},{"Domain":"reg.example.com","Type":"USER"}]},
        {"EndpointType":"none"}]}"#,
    );
    let d = parse_endpoint_domains(&body).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d[1], EndpointDomain { domain: "reg.example.com".into(), kind: DomainKind::User });
    assert_eq!(d[2].kind, DomainKind::System);
    assert!(parse_endpoint_domains(&json(r#"{"Endpoints":[{"Domains":[{"Type":"USER"}]}]}"#)).is_err());
    assert!(parse_endpoint_domains(&json(r#"{"Endpoints":[{"Domains":5}]}"#)).is_err());
    assert!(parse_endpoint_domains(&json(r#"{}"#)).unwrap().is_empty());
}

#[tokio::test]
async fn get_authorization_token_uses_region_prefix_and_signs_full_path() {
    let server = TestServer::start(|_| {
        respond(
            200,
            r#"{"IsSuccess":true,"Code":"success","TempUsername":"cr_temp_user","AuthorizationToken":"pw","ExpireTime":1705311000000}"#,
        )
    })
    .await;
    let client = client_for(&server.base);
    let t = client.get_authorization_token(&caller(), "cn-hangzhou", "cri-abc123xyz").await.unwrap();
    assert_eq!(t.username, "cr_temp_user");
    let s = &server.seen()[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, "/region/cn-hangzhou/");
    assert_eq!(s.query.as_deref(), Some("InstanceId=cri-abc123xyz"));
    assert_eq!(s.headers["x-acs-version"], "2018-12-01");
    assert_eq!(s.headers["x-acs-action"], "GetAuthorizationToken");
    assert!(s.headers.get("x-acs-security-token").is_none());
    verify_signature(s, "long-term-secret");
}

#[tokio::test]
async fn is_success_false_on_200_is_an_error() {
    let server =
        TestServer::start(|_| respond(200, r#"{"IsSuccess":false,"Code":"INSTANCE_NOT_EXIST","RequestId":"R"}"#)).await;
    let e =
        client_for(&server.base).get_authorization_token(&caller(), "cn-hangzhou", "cri-abc123xyz").await.unwrap_err();
    assert_eq!(e.code(), "INSTANCE_NOT_EXIST");
    assert_eq!(e.status(), Some(200));
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn bad_region_and_instance_id_are_refused_locally() {
    let server = TestServer::start(|_| respond(500, "")).await;
    let c = client_for(&server.base);
    let e = c.get_authorization_token(&caller(), "cn/../x", "cri-a").await.unwrap_err();
    assert!(e.to_string().contains("region"), "{e}");
    let e = c.get_authorization_token(&caller(), "cn-hangzhou", "i-123").await.unwrap_err();
    assert!(e.to_string().contains("instance id"), "{e}");
    assert!(c.get_personal_token(&caller(), "").await.is_err());
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn list_instance_follows_pages_until_total() {
    let server = TestServer::start(|s| {
        let page: usize = form_urlencoded::parse(s.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "PageNo")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        let count = if page < 3 { 30 } else { 5 };
        let items: Vec<String> = (0..count)
            .map(|i| format!(r#"{{"InstanceId":"cri-p{page}i{i}","InstanceName":"n","InstanceStatus":"RUNNING"}}"#))
            .collect();
        respond(
            200,
            format!(
                r#"{{"IsSuccess":true,"PageNo":{page},"PageSize":30,"TotalCount":65,"Instances":[{}]}}"#,
                items.join(",")
            ),
        )
    })
    .await;
    let all = client_for(&server.base).list_instance(&caller(), "cn-hangzhou", "n").await.unwrap();
    assert_eq!(all.len(), 65);
    assert_eq!(server.seen().len(), 3);
    assert_eq!(all[64].instance_id, "cri-p3i4");
}

#[tokio::test]
async fn list_instance_stops_at_page_limit() {
    let server = TestServer::start(|_| {
        let items: Vec<String> = (0..30).map(|i| format!(r#"{{"InstanceId":"cri-{i}","InstanceName":"n"}}"#)).collect();
        respond(200, format!(r#"{{"IsSuccess":true,"TotalCount":100000,"Instances":[{}]}}"#, items.join(",")))
    })
    .await;
    let all = client_for(&server.base).list_instance(&caller(), "cn-hangzhou", "n").await.unwrap();
    assert_eq!(server.seen().len(), MAX_PAGES);
    assert_eq!(all.len(), MAX_PAGES * 30);
}

#[tokio::test]
async fn list_instance_endpoint_sends_instance_and_module() {
    let server = TestServer::start(|_| {
        respond(200, r#"{"IsSuccess":true,"Endpoints":[{"Domains":[{"Domain":"reg.example.com","Type":"USER"}]}]}"#)
    })
    .await;
    let d = client_for(&server.base).list_instance_endpoint(&caller(), "cn-hangzhou", "cri-abc").await.unwrap();
    assert_eq!(d[0].kind, DomainKind::User);
    let s = &server.seen()[0];
    assert_eq!(s.query.as_deref(), Some("InstanceId=cri-abc&ModuleName=Registry"));
    assert_eq!(s.headers["x-acs-action"], "ListInstanceEndpoint");
}

#[tokio::test]
async fn personal_token_is_signed_get_tokens() {
    let server = TestServer::start(|_| {
        respond(200, r#"{"data":{"authorizationToken":"pw","tempUserName":"cr_temp_user","expireDate":1705311000000}}"#)
    })
    .await;
    let t = client_for(&server.base).get_personal_token(&caller(), "cn-beijing").await.unwrap();
    assert_eq!(t.password.expose_secret(), "pw");
    let s = &server.seen()[0];
    assert_eq!(s.method, "GET");
    assert_eq!(s.path, "/region/cn-beijing/tokens");
    assert_eq!(s.query, None);
    assert_eq!(s.headers["x-acs-version"], "2016-06-07");
    assert_eq!(s.headers["x-acs-action"], "GetAuthorizationToken");
    verify_signature(s, "long-term-secret");
}

#[tokio::test]
async fn personal_token_error_uses_lowercase_fields() {
    let server =
        TestServer::start(|_| respond(403, r#"{"code":"NoPermission","message":"no","requestId":"rid"}"#)).await;
    let e = client_for(&server.base).get_personal_token(&caller(), "cn-beijing").await.unwrap_err();
    assert_eq!(e.code(), "NoPermission");
    assert_eq!(e.request_id(), Some("rid"));
}
