//! ACR Enterprise (2018-12-01: GetAuthorizationToken, ListInstance, ListInstanceEndpoint) and
//! Personal (2016-06-07: `GET /tokens`).

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::creds::{self, AcrClaims};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::iam::{self, Caller};
use crate::util::{add_secs, epoch_millis, epoch_secs};
use crate::world::{arn, Instance};

/// The user name of every ACR temporary credential.
pub const TEMP_USERNAME: &str = "cr_temp_user";
/// Default ACR password lifetime when neither `ExpiresInHours` nor the knob says: 3600 s.
pub const DEFAULT_ACR_LIFETIME: u64 = 3600;

fn instance_resource(region: &str, account: &str, id: &str) -> String {
    format!("acs:cr:{region}:{account}:instance/{id}")
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(404, "INSTANCE_NOT_EXIST", format!("The instance {id} does not exist."))
}

/// Finds an instance visible to the caller in the call's region, after the permission check.
fn visible_instance<'w>(ctx: &'w Ctx<'_>, caller: &Caller, action: &str) -> Result<&'w Instance, ApiError> {
    let region = ctx.region()?;
    let id = ctx.required("InstanceId")?;
    if !arn::is_instance_id(id) {
        return Err(ApiError::invalid_param(
            "InvalidParameter",
            format!("The parameter InstanceId={id:?} is invalid."),
        ));
    }
    let account = caller.principal.account();
    let resource = instance_resource(region, account, id);
    if !iam::allows(&ctx.state.world.data, &caller.principal, caller.session_policy.as_deref(), action, &resource) {
        return Err(ApiError::no_permission(format!("{action} on {resource}")));
    }
    ctx.state
        .world
        .data
        .instances
        .iter()
        .find(|i| i.id == id && i.account == account && i.region == region)
        .ok_or_else(|| not_found(id))
}

/// Expiry of a new ACR password: min(requested or knob lifetime, caller's session expiry).
fn acr_expiry(ctx: &Ctx<'_>, caller: &Caller, requested_hours: Option<u64>) -> SystemTime {
    let lifetime = ctx
        .state
        .knobs()
        .acr_lifetime_seconds
        .unwrap_or_else(|| requested_hours.map(|h| h * 3600).unwrap_or(DEFAULT_ACR_LIFETIME));
    let own = add_secs(ctx.now, lifetime);
    match caller.session_expires {
        Some(s) if s < own => s,
        _ => own,
    }
}

fn issue_password(
    ctx: &Ctx<'_>,
    caller: &Caller,
    instance_id: &str,
    kind: &str,
    account: &str,
    region: &str,
    expires: SystemTime,
) -> String {
    let claims = AcrClaims {
        instance_id: instance_id.to_string(),
        time: epoch_millis(ctx.now).to_string(),
        kind: kind.to_string(),
        user_id: caller.principal.encode(),
        account: account.to_string(),
        region: region.to_string(),
        exp: epoch_secs(expires),
        policy: caller.session_policy.clone(),
    };
    let password = creds::issue_acr(&ctx.state.world.data.token_key, &claims);
    ctx.state.record_secret(&password);
    password
}

/// EE `GetAuthorizationToken`.
pub fn get_authorization_token(ctx: &Ctx<'_>, caller: &Caller) -> Result<Value, ApiError> {
    let hours = ctx.int_param("ExpiresInHours", 1..=24, "InvalidParameter")?;
    let inst = visible_instance(ctx, caller, "cr:GetAuthorizationToken")?;
    let expires = acr_expiry(ctx, caller, hours);
    let password = issue_password(ctx, caller, &inst.id, "sub", &inst.account, &inst.region, expires);
    Ok(json!({
        "RequestId": ctx.request_id,
        "IsSuccess": true,
        "Code": "success",
        "TempUsername": TEMP_USERNAME,
        "AuthorizationToken": password,
        "ExpireTime": epoch_millis(expires),
    }))
}

/// EE `ListInstance`: instances of the caller's account in the call's region.
pub fn list_instance(ctx: &Ctx<'_>, caller: &Caller) -> Result<Value, ApiError> {
    let region = ctx.region()?;
    let page_no = ctx.int_param("PageNo", 1..=1_000_000, "InvalidParameter")?.unwrap_or(1);
    let page_size = ctx.int_param("PageSize", 1..=100, "InvalidParameter")?.unwrap_or(30);
    let name = ctx.param("InstanceName").filter(|n| !n.is_empty());
    let status = ctx.param("InstanceStatus").filter(|s| !s.is_empty());
    const STATUSES: [&str; 8] =
        ["PENDING", "INIT_ERROR", "STARTING", "RUNNING", "STOPPING", "STOPPED", "DELETING", "DELETED"];
    if let Some(s) = status {
        if !STATUSES.contains(&s) {
            return Err(ApiError::invalid_param(
                "InvalidParameter",
                format!("The parameter InstanceStatus={s:?} is invalid."),
            ));
        }
    }
    let world = &ctx.state.world.data;
    if !iam::mentions_action(world, &caller.principal, "cr:ListInstance") {
        return Err(ApiError::no_permission("cr:ListInstance"));
    }
    let account = caller.principal.account();
    let matching: Vec<&Instance> = world
        .instances
        .iter()
        .filter(|i| i.account == account && i.region == region)
        .filter(|i| name.is_none_or(|n| i.name.contains(n)))
        .filter(|i| status.is_none_or(|s| i.status == s))
        .filter(|i| {
            let r = instance_resource(region, account, &i.id);
            iam::allows(world, &caller.principal, caller.session_policy.as_deref(), "cr:ListInstance", &r)
        })
        .collect();
    let start = usize::try_from((page_no - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(usize::try_from(page_size).unwrap_or(30))
        .map(|i| {
            json!({
                "InstanceId": i.id,
                "InstanceName": i.name,
                "InstanceStatus": i.status,
                "InstanceSpecification": i.specification,
                "RegionId": i.region,
                "ResourceGroupId": format!("rg-{}", &i.id[4..]),
                "CreateTime": "1700000000000",
                "ModifiedTime": "1700000000000",
                "InstanceIssue": "",
                "Tags": [],
            })
        })
        .collect();
    Ok(json!({
        "RequestId": ctx.request_id,
        "IsSuccess": true,
        "Code": "success",
        "PageNo": page_no,
        "PageSize": page_size,
        "TotalCount": matching.len(),
        "Instances": page,
    }))
}

/// EE `ListInstanceEndpoint`: endpoints with their SYSTEM/USER domains.
pub fn list_instance_endpoint(ctx: &Ctx<'_>, caller: &Caller) -> Result<Value, ApiError> {
    let module = ctx.param("ModuleName").unwrap_or("Registry");
    if module != "Registry" && module != "Chart" {
        return Err(ApiError::invalid_param(
            "InvalidParameter",
            format!("The parameter ModuleName={module:?} is invalid."),
        ));
    }
    if let Some(s) = ctx.param("Summary") {
        if s != "true" && s != "false" {
            return Err(ApiError::invalid_param(
                "InvalidParameter",
                format!("The parameter Summary={s:?} is not true/false."),
            ));
        }
    }
    let inst = visible_instance(ctx, caller, "cr:ListInstanceEndpoint")?;
    let mut endpoints = Vec::new();
    if module == "Registry" {
        for kind in ["internet", "vpc"] {
            let domains: Vec<Value> = inst
                .domains
                .iter()
                .filter(|d| d.endpoint == kind)
                .map(|d| json!({"Domain": d.domain, "Type": d.kind}))
                .collect();
            if domains.is_empty() {
                continue;
            }
            endpoints.push(json!({
                "EndpointType": kind,
                "Enable": true,
                "Status": "RUNNING",
                "AclEnable": false,
                "AclEntries": [],
                "LinkedVpcs": [],
                "Domains": domains,
            }));
        }
    }
    Ok(json!({"RequestId": ctx.request_id, "IsSuccess": true, "Code": "success", "Endpoints": endpoints}))
}

/// Personal `GET /tokens`.
pub fn personal_token(ctx: &Ctx<'_>, caller: &Caller) -> Result<Value, ApiError> {
    let region = ctx.region()?;
    let account = caller.principal.account();
    let resource = format!("acs:cr:{region}:{account}:repository/*");
    let world = &ctx.state.world.data;
    if !iam::allows(world, &caller.principal, caller.session_policy.as_deref(), "cr:GetAuthorizationToken", &resource) {
        return Err(ApiError::no_permission(format!("cr:GetAuthorizationToken on {resource}")));
    }
    if !world.personal.iter().any(|p| p.account == account && p.region == region) {
        return Err(ApiError::new(
            404,
            "USER_NOT_EXIST",
            format!("Account {account} has no Personal Edition registry in {region}."),
        ));
    }
    let expires = acr_expiry(ctx, caller, None);
    let password = issue_password(ctx, caller, "", "personal", account, region, expires);
    Ok(json!({
        "data": {
            "authorizationToken": password,
            "tempUserName": TEMP_USERNAME,
            "expireDate": epoch_millis(expires),
        },
        "requestId": ctx.request_id,
    }))
}
