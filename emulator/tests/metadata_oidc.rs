//! ECS metadata service and AssumeRoleWithOIDC.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const PROVIDER: &str = "acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev";
const SA_ROLE: &str = "acs:ram::1111111111111111:role/sa-acr-reader";
const CREDS_PATH: &str = "/latest/meta-data/ram/security-credentials/";

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[tokio::test]
async fn metadata_lists_role_and_reuses_credentials() {
    let env = Env::dev().await;
    let r = send(&env.base(), "GET", CREDS_PATH, &[], b"").await.unwrap();
    assert_eq!((r.status, r.text()), (200, "node-role".to_string()));
    let a = send(&env.base(), "GET", &format!("{CREDS_PATH}node-role"), &[], b"").await.unwrap().json();
    assert_eq!(a["Code"], "Success");
    for k in ["AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration", "LastUpdated"] {
        assert!(a[k].is_string(), "{k}");
    }
    let b = send(&env.base(), "GET", &format!("{CREDS_PATH}node-role"), &[], b"").await.unwrap().json();
    assert_eq!(a["AccessKeyId"], b["AccessKeyId"], "reused while fresh");
    env.advance(3 * 3600 + 1);
    let c = send(&env.base(), "GET", &format!("{CREDS_PATH}node-role"), &[], b"").await.unwrap().json();
    assert_ne!(a["AccessKeyId"], c["AccessKeyId"], "rotated after half the lifetime");
    let r = send(&env.base(), "GET", &format!("{CREDS_PATH}other-role"), &[], b"").await.unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn hardened_mode_token() {
    let env = Env::dev().await;
    let r = send(&env.base(), "PUT", "/latest/api/token", &[], b"").await.unwrap();
    assert_eq!(r.status, 400, "TTL header required");
    let r =
        send(&env.base(), "PUT", "/latest/api/token", &[h("X-aliyun-ecs-metadata-token-ttl-seconds", "21601")], b"")
            .await
            .unwrap();
    assert_eq!(r.status, 400);
    let tok =
        send(&env.base(), "PUT", "/latest/api/token", &[h("X-aliyun-ecs-metadata-token-ttl-seconds", "21600")], b"")
            .await
            .unwrap()
            .text();
    env.admin_knobs(json!({"require_metadata_token": true})).await;
    let r = send(&env.base(), "GET", CREDS_PATH, &[], b"").await.unwrap();
    assert_eq!(r.status, 401);
    let r = send(&env.base(), "GET", CREDS_PATH, &[h("x-aliyun-ecs-metadata-token", &tok)], b"").await.unwrap();
    assert_eq!(r.status, 200);
    let r = send(&env.base(), "GET", CREDS_PATH, &[h("x-aliyun-ecs-metadata-token", "bogus")], b"").await.unwrap();
    assert_eq!(r.status, 401);
    env.advance(21601);
    let r = send(&env.base(), "GET", CREDS_PATH, &[h("x-aliyun-ecs-metadata-token", &tok)], b"").await.unwrap();
    assert_eq!(r.status, 401, "token expired");
}

#[tokio::test]
async fn metadata_down_modes() {
    let env = Env::dev().await;
    env.admin_knobs(json!({"metadata_down": true})).await;
    let r = send(&env.base(), "GET", CREDS_PATH, &[], b"").await.unwrap();
    assert_eq!(r.status, 503);
    env.admin_knobs(json!({"metadata_down_mode": "close"})).await;
    assert!(send(&env.base(), "GET", CREDS_PATH, &[], b"").await.is_err());
    env.admin_knobs(json!({"metadata_down": false})).await;
    assert_eq!(send(&env.base(), "GET", CREDS_PATH, &[], b"").await.unwrap().status, 200);
}

async fn oidc(env: &Env, role: &str, provider: &str, token: &str) -> Resp {
    let query = "Action=AssumeRoleWithOIDC&Format=JSON&Version=2015-04-01&Timestamp=2027-01-01T00%3A00%3A00Z";
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("RoleArn", role)
        .append_pair("OIDCProviderArn", provider)
        .append_pair("OIDCToken", token)
        .append_pair("RoleSessionName", "rrsa-session")
        .finish();
    send(
        &env.base(),
        "POST",
        &format!("/?{query}"),
        &[h("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn assume_role_with_oidc_works_and_checks_the_token() {
    let env = Env::dev().await;
    let sa = env.emu.mint_service_account_token(
        PROVIDER,
        "system:serviceaccount:default:puller",
        "sts.aliyuncs.com",
        Duration::from_secs(600),
    );
    let r = oidc(&env, SA_ROLE, PROVIDER, &sa).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["OIDCTokenInfo"]["Subject"], "system:serviceaccount:default:puller");
    let creds = Creds::from_json(&v);
    let r = env.cr("cn-hangzhou", "GetAuthorizationToken", &[("InstanceId", INSTANCE_A)], &creds).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.emu.count("AssumeRoleWithOIDC"), 1);

    // Query-only (credentials-py style) also works.
    let sa2 = env.emu.mint_service_account_token(
        PROVIDER,
        "system:serviceaccount:ns:x",
        "sts.aliyuncs.com",
        Duration::from_secs(600),
    );
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithOIDC")
        .append_pair("RoleArn", SA_ROLE)
        .append_pair("OIDCProviderArn", PROVIDER)
        .append_pair("OIDCToken", &sa2)
        .append_pair("RoleSessionName", "py-session")
        .finish();
    assert_eq!(send(&env.base(), "GET", &format!("/?{q}"), &[], b"").await.unwrap().status, 200);

    let wrong_aud =
        env.emu.mint_service_account_token(PROVIDER, "system:serviceaccount:a:b", "other", Duration::from_secs(600));
    assert_eq!(oidc(&env, SA_ROLE, PROVIDER, &wrong_aud).await.code(), "AuthenticationFail.OIDCToken");
    let wrong_sub =
        env.emu.mint_service_account_token(PROVIDER, "user:bob", "sts.aliyuncs.com", Duration::from_secs(600));
    assert_eq!(oidc(&env, SA_ROLE, PROVIDER, &wrong_sub).await.code(), "NoPermission");
    assert_eq!(
        oidc(&env, NODE_ROLE, PROVIDER, &sa).await.code(),
        "NoPermission",
        "node-role does not trust the provider"
    );
    let mut tampered = sa.clone();
    tampered.pop();
    tampered.push(if sa.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(oidc(&env, SA_ROLE, PROVIDER, &tampered).await.code(), "AuthenticationFail.OIDCToken");
    let r = oidc(&env, SA_ROLE, "acs:ram::1111111111111111:oidc-provider/none", &sa).await;
    assert_eq!(r.status, 404);
    env.advance(601);
    assert_eq!(oidc(&env, SA_ROLE, PROVIDER, &sa).await.code(), "AuthenticationFail.OIDCToken.Expired");
}

#[tokio::test]
async fn rs256_providers_are_supported() {
    let pem = include_str!("fixtures/oidc-rsa.pem");
    let toml = acr_emulator::world::DEV_WORLD.replace(
        "client_ids = [\"sts.aliyuncs.com\"]\n",
        &format!("client_ids = [\"sts.aliyuncs.com\"]\nprivate_key_pem = '''\n{pem}'''\n"),
    );
    let env = Env::with_world(acr_emulator::World::from_toml(&toml).unwrap()).await;
    let sa = env.emu.mint_service_account_token(
        PROVIDER,
        "system:serviceaccount:default:x",
        "sts.aliyuncs.com",
        Duration::from_secs(600),
    );
    let header: serde_json::Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD.decode(sa.split('.').next().unwrap().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    let r = oidc(&env, SA_ROLE, PROVIDER, &sa).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
