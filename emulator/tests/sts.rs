//! STS over HTTP: the node → service → user chain, trust, permissions, durations, expiry,
//! throttling, knobs and counters.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn chain_node_to_service_to_user_works() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    assert!(node.ak.starts_with("STS."));
    let svc = env.assume(&node, SERVICE_ROLE, None).await;
    assert_eq!(svc.status, 200, "{}", svc.text());
    let v = svc.json();
    assert!(v["RequestId"].is_string());
    assert_eq!(v["AssumedRoleUser"]["Arn"], "acs:ram::1111111111111111:role/eci-acr-service/acr-broker");
    let exp = v["Credentials"]["Expiration"].as_str().unwrap();
    assert_eq!(exp.len(), 20, "YYYY-MM-DDTHH:MM:SSZ: {exp}");
    let usr = env.assume(&Creds::from_json(&v), USER_ROLE, Some("3600")).await;
    assert_eq!(usr.status, 200, "{}", usr.text());
    assert_eq!(env.emu.count("AssumeRole"), 2);
    assert_eq!(env.emu.count("MetadataCredentials"), 1);
    let secrets = env.emu.issued_secrets();
    assert!(secrets.contains(&Creds::from_json(&usr.json()).secret));
}

#[tokio::test]
async fn role_arn_case_is_ignored() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let r = env.assume(&node, "acs:ram::1111111111111111:role/ECI-ACR-Service", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn wrong_trust_missing_permission_unknown_role() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    // The user role in B trusts only the service role, not the node role.
    let r = env.assume(&node, USER_ROLE, None).await;
    assert_eq!((r.status, r.code()), (403, "NoPermission".into()), "{}", r.text());
    let r = env.assume(&node, "acs:ram::1111111111111111:role/nope", None).await;
    assert_eq!((r.status, r.code()), (404, "EntityNotExist.Role".into()));
    let r = env.assume(&node, "arn:bad", None).await;
    assert_eq!((r.status, r.code()), (400, "InvalidParameter.RoleArn".into()));
    // A user-role session in B has no sts:AssumeRole permission at all.
    let user = env.user_creds().await;
    let r = env.assume(&user, USER_ROLE, None).await;
    assert_eq!((r.status, r.code()), (403, "NoPermission".into()));
    // The long-term dev-admin user is not trusted by the service role.
    let r = env.assume(&Creds::long_term(DEV_AK, DEV_SECRET), SERVICE_ROLE, None).await;
    assert_eq!((r.status, r.code()), (403, "NoPermission".into()));
}

#[tokio::test]
async fn duration_and_session_name_rules() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    for bad in ["899", "3601", "abc"] {
        let r = env.assume(&node, SERVICE_ROLE, Some(bad)).await;
        assert_eq!(r.code(), "InvalidParameter.DurationSeconds", "DurationSeconds={bad}");
    }
    let r = env.assume(&node, SERVICE_ROLE, Some("900")).await;
    assert_eq!(r.status, 200);
    let q = [("RoleArn", SERVICE_ROLE), ("RoleSessionName", "acr broker")];
    let r = env.call(&V3::rpc("2015-04-01", "AssumeRole", "/", &q), &node).await;
    assert_eq!(r.code(), "InvalidParameter.RoleSessionName");
    let q = [("RoleArn", SERVICE_ROLE), ("RoleSessionName", "ok-name"), ("Policy", "{not json")];
    let r = env.call(&V3::rpc("2015-04-01", "AssumeRole", "/", &q), &node).await;
    assert_eq!(r.code(), "InvalidParameter.PolicyGrammar");
}

#[tokio::test]
async fn chained_hop_is_capped_at_one_hour() {
    let world = acr_emulator::World::from_toml(&acr_emulator::world::DEV_WORLD.replace(
        "arn = \"acs:ram::1111111111111111:role/eci-acr-service\"\nmax_session_duration = 3600",
        "arn = \"acs:ram::1111111111111111:role/eci-acr-service\"\nmax_session_duration = 43200",
    ))
    .unwrap();
    let env = Env::with_world(world).await;
    let node = env.node_creds().await;
    let r = env.assume(&node, SERVICE_ROLE, Some("7200")).await;
    assert_eq!(r.code(), "InvalidParameter.DurationSeconds", "role sessions may not chain beyond 3600 s");
    let r = env.assume(&node, SERVICE_ROLE, Some("3600")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn sts_tokens_expire() {
    let env = Env::dev().await;
    env.emu.set_knobs(acr_emulator::Knobs { sts_lifetime_seconds: Some(5), ..Default::default() });
    let node = env.node_creds().await;
    let r = env.assume(&node, SERVICE_ROLE, None).await;
    assert_eq!(r.status, 200);
    let svc = Creds::from_json(&r.json());
    env.advance(6);
    let r = env.assume(&svc, USER_ROLE, None).await;
    assert_eq!((r.status, r.code()), (400, "InvalidSecurityToken.Expired".into()), "{}", r.text());
}

#[tokio::test]
async fn token_rules_for_sts_and_long_term_keys() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let mut no_token = node.clone();
    no_token.token = None;
    let r = env.assume(&no_token, SERVICE_ROLE, None).await;
    assert_eq!(r.code(), "InvalidSecurityToken.Malformed");
    let mut other = node.clone();
    other.token = Some(env.node_creds().await.token.unwrap().replace("CAIS", "CAIX"));
    let r = env.assume(&other, SERVICE_ROLE, None).await;
    assert_eq!(r.code(), "InvalidSecurityToken.Malformed");
    let mut lt = Creds::long_term(DEV_AK, DEV_SECRET);
    lt.token = node.token.clone();
    let r = env.assume(&lt, SERVICE_ROLE, None).await;
    assert_eq!(r.code(), "InvalidSecurityToken.MismatchWithAccessKey");
    let r = env.assume(&Creds::long_term("LTAInope", "x"), SERVICE_ROLE, None).await;
    assert_eq!((r.status, r.code()), (404, "InvalidAccessKeyId.NotFound".into()));
    let r = env.assume(&Creds::long_term(DEV_AK, "wrong"), SERVICE_ROLE, None).await;
    assert_eq!(r.code(), "SignatureDoesNotMatch");
}

#[tokio::test]
async fn replayed_request_and_old_date_are_rejected() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let mut req = V3::rpc("2015-04-01", "AssumeRole", "/", &[("RoleArn", SERVICE_ROLE), ("RoleSessionName", "x1")]);
    req.nonce = Some("fixed-nonce".into());
    assert_eq!(env.call(&req, &node).await.status, 200);
    assert_eq!(env.call(&req, &node).await.code(), "SignatureNonceUsed");
    req.nonce = None;
    req.date = Some(env.now() - std::time::Duration::from_secs(16 * 60));
    assert_eq!(env.call(&req, &node).await.code(), "InvalidTimeStamp.Expired");
}

#[tokio::test]
async fn assume_role_is_throttled_per_account() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let r = env.admin_knobs(json!({"assume_role_rate": 1.0, "assume_role_burst": 2.0})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.assume(&node, SERVICE_ROLE, None).await.status, 200);
    assert_eq!(env.assume(&node, SERVICE_ROLE, None).await.status, 200);
    let r = env.assume(&node, SERVICE_ROLE, None).await;
    assert_eq!(r.code(), "Throttling.Api");
    assert_eq!(r.headers.get("x-acs-retry-after").unwrap(), "1000");
    env.advance(1);
    assert_eq!(env.assume(&node, SERVICE_ROLE, None).await.status, 200);
}

#[tokio::test]
async fn knobs_inject_errors_throttle_and_malform() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let r =
        env.admin_knobs(json!({"errors": {"AssumeRole": {"code": "InternalError", "status": 500, "rate": 1.0}}})).await;
    assert_eq!(r.status, 200);
    let r = env.assume(&node, SERVICE_ROLE, None).await;
    assert_eq!((r.status, r.code()), (500, "InternalError".into()));
    assert!(r.json()["Recommend"].as_str().unwrap().contains("InternalError"));
    env.admin_knobs(json!({"errors": {}, "throttle_all": true})).await;
    let r = env.cr("cn-hangzhou", "ListInstance", &[], &node).await;
    assert_eq!(r.code(), "Throttling.Api");
    assert!(r.headers.get("x-acs-retry-after").is_some());
    env.admin_knobs(json!({"throttle_all": false, "malformed_json": ["AssumeRole"]})).await;
    let r = env.assume(&node, SERVICE_ROLE, None).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
    let bad = env.admin_knobs(json!({"latency_ms": "slow"})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(env.emu.knobs().malformed_json, vec!["AssumeRole".to_string()]);
}

#[tokio::test]
async fn counters_and_reset_via_admin() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    env.assume(&node, SERVICE_ROLE, None).await;
    let r = send(&env.base(), "GET", "/__admin/counters", &[], b"").await.unwrap();
    assert_eq!(r.json()["AssumeRole"], 1);
    assert_eq!(r.json()["MetadataCredentials"], 1);
    send(&env.base(), "POST", "/__admin/reset-counters", &[], b"").await.unwrap();
    assert_eq!(env.emu.count("AssumeRole"), 0);
    assert!(env.emu.counters().is_empty());
}

#[tokio::test]
async fn restart_on_same_port_keeps_issued_credentials_valid() {
    let world = acr_emulator::World::dev();
    let env = Env::with_world(world.clone()).await;
    let node = env.node_creds().await;
    let addr = env.emu.addr();
    let clock = env.clock.clone();
    env.emu.shutdown().await;
    assert!(send(&format!("http://{addr}"), "GET", "/latest/meta-data/ram/security-credentials/", &[], b"")
        .await
        .is_err());
    let c = clock.clone();
    let emu = acr_emulator::Emulator::start_with_clock(
        world,
        addr,
        std::sync::Arc::new(move || {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(c.load(std::sync::atomic::Ordering::SeqCst))
        }),
    )
    .await
    .unwrap();
    let env2 = Env { emu, clock };
    let r = env2.assume(&node, SERVICE_ROLE, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
