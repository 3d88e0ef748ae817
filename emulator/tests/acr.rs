//! ACR Enterprise and Personal APIs over HTTP.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn ee_token_for_own_instance_with_expiry_capped_by_session() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let r = env.cr("cn-hangzhou", "GetAuthorizationToken", &[("InstanceId", INSTANCE_A)], &node).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["IsSuccess"], true);
    assert_eq!(v["Code"], "success");
    assert_eq!(v["TempUsername"], "cr_temp_user");
    let pw = v["AuthorizationToken"].as_str().unwrap();
    assert!(pw.contains(':'));
    assert!(env.emu.issued_secrets().iter().any(|s| s == pw));
    let now_ms = env.now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!(v["ExpireTime"].as_u64().unwrap(), now_ms + 3600 * 1000);

    // A 10-minute STS session caps the ACR password at the session's expiry.
    env.emu.set_knobs(acr_emulator::Knobs { sts_lifetime_seconds: Some(600), ..Default::default() });
    let short = Creds::from_json(&env.assume(&node, SERVICE_ROLE, None).await.json());
    let r = env
        .cr("cn-hangzhou", "GetAuthorizationToken", &[("InstanceId", INSTANCE_A), ("ExpiresInHours", "24")], &short)
        .await;
    assert_eq!(r.json()["ExpireTime"].as_u64().unwrap(), now_ms + 600 * 1000);
    env.emu.set_knobs(acr_emulator::Knobs { acr_lifetime_seconds: Some(30), ..Default::default() });
    let r = env.cr("cn-hangzhou", "GetAuthorizationToken", &[("InstanceId", INSTANCE_A)], &node).await;
    assert_eq!(r.json()["ExpireTime"].as_u64().unwrap(), now_ms + 30 * 1000);
    assert_eq!(env.emu.count("GetAuthorizationToken"), 3);
}

#[tokio::test]
async fn region_can_come_from_the_host_header() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let mut req = V3::rpc("2018-12-01", "GetAuthorizationToken", "/", &[("InstanceId", INSTANCE_A)]);
    req.host = Some("cr.cn-hangzhou.aliyuncs.com".into());
    let r = env.call(&req, &node).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut req = V3::rpc("2018-12-01", "GetAuthorizationToken", "/", &[("InstanceId", INSTANCE_A)]);
    let r = env.call(&req, &node).await;
    assert_eq!(r.code(), "InvalidRegionId", "no region at all");
    req.host = Some("cr.cn-beijing.aliyuncs.com".into());
    let r = env.call(&req, &node).await;
    assert_eq!((r.status, r.code()), (404, "INSTANCE_NOT_EXIST".into()), "instance lives in cn-hangzhou");
}

#[tokio::test]
async fn cross_account_and_cross_region_are_refused() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let r = env.cr("cn-beijing", "GetAuthorizationToken", &[("InstanceId", INSTANCE_B)], &node).await;
    assert_eq!((r.status, r.code()), (403, "NoPermission".into()));
    let user = env.user_creds().await;
    let r = env.cr("cn-beijing", "GetAuthorizationToken", &[("InstanceId", INSTANCE_B)], &user).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env.cr("cn-hangzhou", "GetAuthorizationToken", &[("InstanceId", INSTANCE_B)], &user).await;
    assert_eq!((r.status, r.code()), (404, "INSTANCE_NOT_EXIST".into()));
    let r = env
        .cr("cn-beijing", "GetAuthorizationToken", &[("InstanceId", INSTANCE_B), ("ExpiresInHours", "25")], &user)
        .await;
    assert_eq!(r.code(), "InvalidParameter");
    let r = env.cr("cn-beijing", "GetAuthorizationToken", &[], &user).await;
    assert_eq!(r.code(), "MissingInstanceId");
}

#[tokio::test]
async fn list_instance_filters_and_paginates() {
    let mut toml = acr_emulator::world::DEV_WORLD.to_string();
    for n in 3..=6 {
        toml.push_str(&format!(
            "\n[[instances]]\naccount = \"1111111111111111\"\nid = \"cri-devaaaaaaaaaaaa0{n}\"\nname = \"extra{n}\"\nregion = \"cn-hangzhou\"\n"
        ));
    }
    let env = Env::with_world(acr_emulator::World::from_toml(&toml).unwrap()).await;
    let admin = Creds::long_term(DEV_AK, DEV_SECRET);
    let r = env.cr("cn-hangzhou", "ListInstance", &[("PageSize", "2"), ("PageNo", "1")], &admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // dev-admin may list only the demo instance (its policy names that one).
    assert_eq!(r.json()["TotalCount"], 1);
    let node = env.node_creds().await;
    let r = env.cr("cn-hangzhou", "ListInstance", &[("InstanceName", "demo")], &node).await;
    let v = r.json();
    assert_eq!(v["TotalCount"], 1);
    assert_eq!(v["Instances"][0]["InstanceId"], INSTANCE_A);
    assert_eq!(v["Instances"][0]["RegionId"], "cn-hangzhou");
    assert_eq!(v["PageNo"], 1);
    assert_eq!(v["PageSize"], 30);
    // A role allowed on every instance of A sees all five, two per page.
    let wide = toml.replace(
        "\"acs:cr:*:1111111111111111:instance/cri-devaaaaaaaaaaaa01\"",
        "\"acs:cr:*:1111111111111111:instance/*\"",
    );
    let env = Env::with_world(acr_emulator::World::from_toml(&wide).unwrap()).await;
    let node = env.node_creds().await;
    let p3 = env.cr("cn-hangzhou", "ListInstance", &[("PageSize", "2"), ("PageNo", "3")], &node).await.json();
    assert_eq!(p3["TotalCount"], 5);
    assert_eq!(p3["Instances"].as_array().unwrap().len(), 1);
    let other_region = env.cr("cn-beijing", "ListInstance", &[], &node).await.json();
    assert_eq!(other_region["TotalCount"], 0, "instances of other accounts are invisible");
    let r = env.cr("cn-hangzhou", "ListInstance", &[("PageSize", "0")], &node).await;
    assert_eq!(r.code(), "InvalidParameter");
}

#[tokio::test]
async fn list_instance_endpoint_returns_system_and_user_domains() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let r = env.cr("cn-hangzhou", "ListInstanceEndpoint", &[("InstanceId", INSTANCE_A)], &node).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let eps = v["Endpoints"].as_array().unwrap();
    let internet = eps.iter().find(|e| e["EndpointType"] == "internet").unwrap();
    let domains = internet["Domains"].as_array().unwrap();
    assert!(domains.contains(&json!({"Domain": "demo-registry.cn-hangzhou.cr.aliyuncs.com", "Type": "SYSTEM"})));
    assert!(domains.contains(&json!({"Domain": "registry.demo.example.com", "Type": "USER"})));
    let vpc = eps.iter().find(|e| e["EndpointType"] == "vpc").unwrap();
    assert_eq!(vpc["Domains"][0]["Domain"], "demo-registry-vpc.cn-hangzhou.cr.aliyuncs.com");
    assert_eq!(env.emu.count("ListInstanceEndpoint"), 1);
}

#[tokio::test]
async fn personal_tokens() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let mut req = V3::rpc("2016-06-07", "GetAuthorizationToken", "/region/cn-hangzhou/tokens", &[]);
    req.method = "GET";
    let r = env.call(&req, &node).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"]["tempUserName"], "cr_temp_user");
    assert!(v["data"]["authorizationToken"].is_string());
    assert!(v["data"]["expireDate"].as_u64().unwrap() > 0);
    assert!(v["requestId"].is_string());
    assert_eq!(env.emu.count("PersonalGetAuthorizationToken"), 1);
    let mut req = V3::rpc("2016-06-07", "GetAuthorizationToken", "/region/cn-shanghai/tokens", &[]);
    req.method = "GET";
    let r = env.call(&req, &node).await;
    assert_eq!(r.status, 404, "no personal registry there: {}", r.text());
}

#[tokio::test]
async fn unknown_action_and_version() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let r = env.call(&V3::rpc("2018-12-01", "DeleteInstance", "/region/cn-hangzhou/", &[]), &node).await;
    assert_eq!((r.status, r.code()), (404, "InvalidAction.NotFound".into()));
    let r = env.call(&V3::rpc("2099-01-01", "ListInstance", "/region/cn-hangzhou/", &[]), &node).await;
    assert_eq!(r.code(), "InvalidVersion");
}
