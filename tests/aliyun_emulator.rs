//! The Alibaba Cloud client against the strict emulator: the whole chain walks, and each kind of
//! refusal comes back as the right typed error (issue: foundation).

use std::sync::Arc;

use acr_broker::aliyun::identity::{EcsRamRoleSource, IdentitySource};
use acr_broker::aliyun::{AssumeRoleRequest, Client, Endpoints, ErrorKind, Timeouts};
use acr_emulator::{Emulator, World};

async fn setup() -> (Emulator, Client, Arc<dyn IdentitySource>) {
    let world = World::from_toml(include_str!("worlds/broker.toml")).expect("world");
    let emu = Emulator::start(world, "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
    let base = emu.base_url();
    let endpoints = Endpoints { sts: base.clone(), cr: format!("{base}/region/{{region}}"), metadata: base.clone() };
    let client = Client::new(endpoints, Timeouts::default(), acr_broker::clock::system()).expect("client");
    let node = EcsRamRoleSource::new(client.transport().clone(), &base, None, false).expect("metadata source");
    (emu, client, Arc::new(node))
}

fn assume(role: &str) -> AssumeRoleRequest {
    AssumeRoleRequest {
        role_arn: role.to_owned(),
        session_name: "acr-broker-test".to_owned(),
        duration_seconds: 3600,
        policy: None,
        external_id: None,
    }
}

#[tokio::test]
async fn identity_service_role_user_role_then_registry_token() {
    let (emu, client, node) = setup().await;
    let node_creds = node.fetch().await.expect("node identity from metadata");
    assert!(node_creds.access_key_id.starts_with("STS."));
    let service = client
        .assume_role(&node_creds, &assume("acs:ram::1111111111111111:role/eci-acr-service"))
        .await
        .expect("hop 1");
    let user = client
        .assume_role(&service.credentials, &assume("acs:ram::2222222222222222:role/eci-acr-user"))
        .await
        .expect("hop 2");
    let list = client.list_instance(&user.credentials, "cn-beijing", "partner").await.expect("ListInstance");
    assert_eq!(list.iter().map(|i| i.instance_id.as_str()).collect::<Vec<_>>(), vec!["cri-devbbbbbbbbbbbb02"]);
    let token = client
        .get_authorization_token(&user.credentials, "cn-beijing", "cri-devbbbbbbbbbbbb02")
        .await
        .expect("GetAuthorizationToken");
    assert!(!token.password.is_empty());
    let session_end = user.credentials.expires_at.expect("STS sessions expire");
    assert!(token.expires_at <= session_end, "ACR password outlives the STS session");
    let personal = client.get_personal_token(&node_creds, "cn-hangzhou").await.expect("personal token");
    assert!(!personal.username.is_empty());
    assert_eq!(emu.count("AssumeRole"), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn refusals_are_typed() {
    let (emu, client, node) = setup().await;
    let node_creds = node.fetch().await.expect("node identity");

    // Wrong trust: the user role in account B trusts only the service role, not the node role.
    let e = client
        .assume_role(&node_creds, &assume("acs:ram::2222222222222222:role/eci-acr-user"))
        .await
        .expect_err("untrusted caller");
    assert_eq!((e.code(), e.kind(), e.status()), ("NoPermission", ErrorKind::Denied, Some(403)), "{e}");
    assert!(!e.is_retryable());
    assert!(e.request_id().is_some());

    // Unknown role.
    let e = client
        .assume_role(&node_creds, &assume("acs:ram::1111111111111111:role/does-not-exist"))
        .await
        .expect_err("unknown role");
    assert_eq!((e.code(), e.kind()), ("EntityNotExist.Role", ErrorKind::Denied), "{e}");

    // Missing permission: the no-pull role may not get a registry token.
    let service = client
        .assume_role(&node_creds, &assume("acs:ram::1111111111111111:role/eci-acr-service"))
        .await
        .expect("hop 1");
    let no_pull = client
        .assume_role(&service.credentials, &assume("acs:ram::2222222222222222:role/no-pull"))
        .await
        .expect("hop 2");
    let e = client
        .get_authorization_token(&no_pull.credentials, "cn-beijing", "cri-devbbbbbbbbbbbb02")
        .await
        .expect_err("no permission");
    assert_eq!((e.code(), e.kind()), ("NoPermission", ErrorKind::Denied), "{e}");

    // A session name the API would refuse never leaves the client.
    let mut bad = assume("acs:ram::1111111111111111:role/eci-acr-service");
    bad.session_name = "x; DROP TABLE".to_owned();
    let before = emu.count("AssumeRole");
    let e = client.assume_role(&node_creds, &bad).await.expect_err("invalid session name");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(emu.count("AssumeRole"), before, "refused before any network call");
    emu.shutdown().await;
}
