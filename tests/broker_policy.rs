//! Every row of the seed's policy table, end to end against the emulator (issue: the broker).

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_table_rows() {
    let h = Harness::start(broker_world(), "").await;

    // Same account, default domain, node identity only.
    let (s, v) = h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["instance_id"], DEMO);
    assert_eq!(v["region"], "cn-hangzhou");
    assert_eq!(v["edition"], "enterprise");
    assert_eq!(v["registry"], "demo-registry.cn-hangzhou.cr.aliyuncs.com");
    assert!(!v["password"].as_str().unwrap_or_default().is_empty());
    assert_eq!(h.emulator.count("AssumeRole"), 0, "node identity used directly");

    // Same account with acr-service-arns: the service role is assumed first.
    let (s, v) = h.credentials("demo-registry-vpc.cn-hangzhou.cr.aliyuncs.com", &[(SERVICE_ARNS, SERVICE_ROLE)]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.emulator.count("AssumeRole"), 1);

    // Custom domain listed through acr-instance-ids.
    let (s, v) = h.credentials("registry.demo.example.com", &[(INSTANCE_IDS, DEMO)]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["instance_id"], DEMO);

    // Custom domain without acr-instance-ids: not ours.
    let (s, v) = h.credentials("registry.demo.example.com", &[]).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_acr_registry");

    // A listed instance that does not own the host: never credentials.
    let (s, v) = h.credentials("registry.demo.example.com", &[(INSTANCE_IDS, DECOY)]).await;
    assert_eq!(s, 404, "{v}");

    // Cross-region instance (region prefix).
    let (s, v) = h.credentials("north.example.com", &[(INSTANCE_IDS, &format!("cn-beijing:{NORTH}"))]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["region"], "cn-beijing");
    assert_eq!(v["instance_id"], NORTH);

    // Cross-account: node -> service role (A) -> user role (B).
    let before = h.emulator.count("AssumeRole");
    let (s, v) = h
        .credentials(
            "partner-registry.cn-beijing.cr.aliyuncs.com",
            &[(SERVICE_ARNS, SERVICE_ROLE), (USER_ARNS, USER_ROLE)],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["instance_id"], PARTNER);
    assert_eq!(h.emulator.count("AssumeRole") - before, 1, "service session reused, user role assumed");

    // Cross-account without the chain: the node cannot see account B's instance.
    let (s, v) = h.credentials("partner-registry.cn-beijing.cr.aliyuncs.com", &[]).await;
    assert_eq!(s, 403, "{v}");

    // A user role without pull permission: 403 carrying the upstream code.
    let (s, v) = h
        .credentials(
            "partner-registry.cn-beijing.cr.aliyuncs.com",
            &[(SERVICE_ARNS, SERVICE_ROLE), (USER_ARNS, NO_PULL_ROLE)],
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "NoPermission", "{v}");

    // Several user roles: the first is denied, the second works, and is remembered.
    let two = format!("{NO_PULL_ROLE},{USER_ROLE}");
    let ann = [(SERVICE_ARNS, SERVICE_ROLE), (USER_ARNS, two.as_str())];
    let (s, v) = h.credentials("partner-registry.cn-beijing.cr.aliyuncs.com", &ann).await;
    assert_eq!(s, 200, "{v}");

    // Personal Edition.
    let (s, v) = h.credentials("registry.cn-hangzhou.aliyuncs.com", &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["edition"], "personal");
    assert!(v["instance_id"].is_null());

    // Not ACR at all.
    for host in
        ["docker.io", "ghcr.io", "x.cr.aliyuncs.com.evil.com", "evil.com/demo-registry.cn-hangzhou.cr.aliyuncs.com"]
    {
        let (s, v) = h.credentials(host, &[]).await;
        assert_eq!(s, 404, "{host}: {v}");
    }

    // Malformed values: 400 naming the annotation and the value.
    let (s, v) = h.credentials("registry.demo.example.com", &[(INSTANCE_IDS, "cri-BAD!")]).await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(INSTANCE_IDS) && msg.contains("cri-BAD!"), "{msg}");
    let (s, v) = h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[(USER_ARNS, USER_ROLE)]).await;
    assert_eq!(s, 400, "user ARN without service ARN: {v}");
    let (s, v) =
        h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[(SERVICE_ARNS, "arn:aws:iam::1:role/x")]).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains(SERVICE_ARNS));

    // GET form (what the docker helper uses): node defaults only.
    let (s, v, _) = h.request("GET", "/v1/credentials/demo-registry.cn-hangzhou.cr.aliyuncs.com", None).await;
    assert_eq!(s, 200, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_defaults_apply_only_to_requests_without_annotations() {
    let extra = format!("[defaults]\nacr_instance_ids = [\"{DEMO}\"]\n");
    let h = Harness::start(broker_world(), &extra).await;
    let (s, v) = h.credentials("registry.demo.example.com", &[]).await;
    assert_eq!(s, 200, "defaults list the instance: {v}");
    // A request with its own annotations uses exactly those: here a decoy that does not own the host.
    let (s, v) = h.credentials("registry.demo.example.com", &[(INSTANCE_IDS, DECOY)]).await;
    assert_eq!(s, 404, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_warms_the_cache_at_boot_and_on_request() {
    let extra = "prefetch = [\"demo-registry.cn-hangzhou.cr.aliyuncs.com/app/web:1.0\"]\n";
    // `prefetch` is a top-level key: it must come before any table in the file.
    let h = Harness::start_with_top_level(broker_world(), extra, "").await;
    wait_ready(&h, std::time::Duration::from_secs(10)).await;
    let (_, ready, _) = h.request("GET", "/readyz", None).await;
    assert!(ready["reason"].as_str().unwrap_or_default().contains("prefetched 1"), "{ready}");
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 1, "warmed at boot");
    let (s, v) = h.credentials("demo-registry.cn-hangzhou.cr.aliyuncs.com", &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.emulator.count("GetAuthorizationToken"), 1, "served from the warm cache");

    let body = serde_json::json!({"images": ["registry.cn-hangzhou.aliyuncs.com/team/app:2", "docker.io/library/nginx", "Not An Image!"]});
    let (s, v, _) = h.request("POST", "/v1/prefetch", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["ok"], true, "{v}");
    assert_eq!(results[1]["error"]["code"], "not_acr_registry", "{v}");
    assert_eq!(results[2]["ok"], false, "{v}");
    h.stop().await;
}

/// Kubelets send a token for every pod once tokenAttributes are set; a ServiceAccount without
/// its own role is served like any pod, and one that names a role is served only as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_used_only_for_roles_the_account_names() {
    let h = Harness::start(broker_world(), "").await;
    let provider = "acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev";
    let token = h.emulator.mint_service_account_token(
        provider,
        "system:serviceaccount:default:web",
        "sts.aliyuncs.com",
        std::time::Duration::from_secs(600),
    );
    let body =
        serde_json::json!({"registry": "demo-registry.cn-hangzhou.cr.aliyuncs.com", "service_account_token": token});
    let (s, v, _) = h.request("POST", "/v1/credentials", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.emulator.count("AssumeRoleWithOIDC"), 0, "no role named: no exchange");

    let own = serde_json::json!({
        "registry": "demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "service_account_token": token,
        "service_account_annotations": {SERVICE_ARNS: "acs:ram::1111111111111111:role/sa-acr-reader"},
    });
    let (s, v, _) = h.request("POST", "/v1/credentials", Some(own)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.emulator.count("AssumeRoleWithOIDC"), 1);
    // Never served past the token that earned it (the token lives 600 s, the session 3600 s).
    let expires = acr_broker::clock::parse_rfc3339(v["expires_at"].as_str().unwrap_or_default()).expect("expires_at");
    let horizon = std::time::SystemTime::UNIX_EPOCH.elapsed().map(|d| d.as_secs()).unwrap_or(0) + 601;
    assert!(expires <= std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(horizon), "{v}");

    // A refused exchange is no credential, never the node identity.
    let forged = serde_json::json!({
        "registry": "demo-registry.cn-hangzhou.cr.aliyuncs.com",
        "service_account_token": format!("{token}x"),
        "service_account_annotations": {SERVICE_ARNS: "acs:ram::1111111111111111:role/sa-acr-reader"},
    });
    let (s, v, _) = h.request("POST", "/v1/credentials", Some(forged)).await;
    assert_eq!(s, 403, "{v}");
    h.stop().await;
}

/// Every chain tried costs STS calls: a pod cannot ask for more than 16 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_chain_explosion_is_refused_before_any_sts_call() {
    let h = Harness::start(broker_world(), "").await;
    let services: Vec<String> = (0..5).map(|i| format!("acs:ram::1111111111111111:role/svc-{i}")).collect();
    let users: Vec<String> = (0..4).map(|i| format!("acs:ram::2222222222222222:role/user-{i}")).collect();
    let (joined_s, joined_u) = (services.join(","), users.join(","));
    let (status, v) = h
        .credentials(
            "partner-registry.cn-beijing.cr.aliyuncs.com",
            &[(SERVICE_ARNS, &joined_s), (USER_ARNS, &joined_u)],
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "too_many_role_chains");
    assert_eq!(h.emulator.count("AssumeRole"), 0);
    h.stop().await;
}
