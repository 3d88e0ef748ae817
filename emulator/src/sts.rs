//! STS 2015-04-01: AssumeRole (V3-signed) and the session issuance shared with OIDC and the
//! metadata service.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::creds::{self, SessionClaims, StsCredentials};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::iam::{self, Caller, Principal};
use crate::policy::Policy;
use crate::state::{lock, State};
use crate::util::{add_secs, epoch_secs, iso8601};
use crate::world::{arn, Role};

/// Default DurationSeconds: 3600.
pub const DEFAULT_DURATION: u64 = 3600;
/// Minimum DurationSeconds: 900.
pub const MIN_DURATION: u64 = 900;
/// Maximum DurationSeconds for a chained hop (caller is itself a role session): 3600.
/// The emulator rejects longer requests with `InvalidParameter.DurationSeconds`.
pub const CHAINED_MAX_DURATION: u64 = 3600;

/// Issued STS credentials plus their expiry.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The credentials.
    pub creds: StsCredentials,
    /// When they expire.
    pub expires: SystemTime,
}

/// Issues a session for `role`, lifetime min(`duration`, `sts_lifetime_seconds` knob).
pub fn issue_session(
    state: &State,
    role: &Role,
    session_name: &str,
    duration: u64,
    policy: Option<String>,
    now: SystemTime,
) -> Issued {
    let lifetime = match state.knobs().sts_lifetime_seconds {
        Some(cap) => duration.min(cap),
        None => duration,
    };
    let expires = add_secs(now, lifetime);
    let principal =
        Principal::Role { account: role.account.clone(), role: role.name.clone(), session: session_name.to_string() };
    let claims = SessionClaims {
        ak: String::new(),
        principal: principal.encode(),
        iat: epoch_secs(now),
        exp: epoch_secs(expires),
        policy,
    };
    let creds = creds::issue_sts(&state.world.data.token_key, claims);
    state.record_secret(&creds.access_key_secret);
    state.record_secret(&creds.security_token);
    Issued { creds, expires }
}

/// The AssumeRole-shaped success body.
pub fn session_body(request_id: &str, role: &Role, session_name: &str, issued: &Issued) -> Value {
    let digits: String = role
        .name
        .bytes()
        .chain(role.account.bytes())
        .cycle()
        .take(18)
        .enumerate()
        .map(|(i, b)| char::from(b'0' + ((usize::from(b) + i * 7) % 10) as u8))
        .collect();
    json!({
        "RequestId": request_id,
        "AssumedRoleUser": {
            "Arn": format!("acs:ram::{}:role/{}/{}", role.account, role.name.to_ascii_lowercase(), session_name),
            "AssumedRoleId": format!("{digits}:{session_name}"),
        },
        "Credentials": {
            "AccessKeyId": issued.creds.access_key_id,
            "AccessKeySecret": issued.creds.access_key_secret,
            "SecurityToken": issued.creds.security_token,
            "Expiration": iso8601(issued.expires),
        },
    })
}

/// Validates RoleSessionName: 2..=64 of `[A-Za-z0-9.@_-]`.
pub fn check_session_name(name: &str) -> Result<(), ApiError> {
    let ok = (2..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(
            "InvalidParameter.RoleSessionName",
            format!("The parameter RoleSessionName={name:?} must be 2-64 characters of letters, digits, '.', '@', '-', '_'."),
        ))
    }
}

/// Validates the optional session `Policy` (1..=2048 chars, RAM grammar).
pub fn check_policy(policy: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(p) = policy else { return Ok(None) };
    if p.is_empty() || p.chars().count() > 2048 {
        return Err(ApiError::invalid_param(
            "InvalidParameter.PolicySize",
            "The size of Policy must be 1-2048 characters.",
        ));
    }
    Policy::from_ram_json(p).map_err(|e| {
        ApiError::invalid_param(
            "InvalidParameter.PolicyGrammar",
            format!("The parameter Policy has a grammar error: {e}"),
        )
    })?;
    Ok(Some(p.to_string()))
}

/// Parses RoleArn and finds the role (`InvalidParameter.RoleArn` / `EntityNotExist.Role`).
pub fn find_role<'w>(ctx: &'w Ctx<'_>) -> Result<&'w Role, ApiError> {
    let role_arn = ctx.required("RoleArn")?;
    if arn::parse_role_arn(role_arn).is_none() {
        return Err(ApiError::invalid_param("InvalidParameter.RoleArn", "The parameter RoleArn is wrongly formed."));
    }
    ctx.state.world.data.role(role_arn).ok_or_else(|| {
        ApiError::new(
            404,
            "EntityNotExist.Role",
            format!("The specified Role not exists: {}", role_arn.to_ascii_lowercase()),
        )
    })
}

/// Checks DurationSeconds against the role (and the 1-hour cap of chained hops).
pub fn check_duration(ctx: &Ctx<'_>, role: &Role, chained: bool) -> Result<u64, ApiError> {
    let bad = |max: u64| {
        ApiError::invalid_param(
            "InvalidParameter.DurationSeconds",
            format!("The Min/Max value of DurationSeconds is 15min/{}s.", max),
        )
    };
    let max = if chained { role.max_session_duration.min(CHAINED_MAX_DURATION) } else { role.max_session_duration };
    let duration = match ctx.param("DurationSeconds") {
        None => DEFAULT_DURATION,
        Some(raw) => raw.parse::<u64>().map_err(|_| bad(max))?,
    };
    if !(MIN_DURATION..=max).contains(&duration) {
        return Err(bad(max));
    }
    Ok(duration)
}

/// `AssumeRole`.
pub fn assume_role(ctx: &Ctx<'_>, caller: &Caller) -> Result<Value, ApiError> {
    let role = find_role(ctx)?;
    let session_name = ctx.required("RoleSessionName")?.to_string();
    check_session_name(&session_name)?;
    let policy = check_policy(ctx.param("Policy"))?;
    if let Some(ext) = ctx.param("ExternalId") {
        let ok = (2..=1224).contains(&ext.len()) && ext.chars().all(|c| c.is_alphanumeric() || "_+=,.@:/-".contains(c));
        if !ok {
            return Err(ApiError::invalid_param(
                "InvalidParameter.ExternalId",
                "The parameter ExternalId must be 2-1224 characters of [\\w+=,.@:/-].",
            ));
        }
    }
    let duration = check_duration(ctx, role, caller.is_role_session())?;

    let knobs = ctx.state.knobs();
    let account = caller.principal.account().to_string();
    lock(&ctx.state.buckets)
        .take(&account, knobs.assume_role_rate, knobs.assume_role_burst, ctx.now)
        .map_err(ApiError::throttled)?;

    let target = arn::role_arn(&role.account, &role.name);
    if !iam::allows(
        &ctx.state.world.data,
        &caller.principal,
        caller.session_policy.as_deref(),
        "sts:AssumeRole",
        &target,
    ) {
        return Err(ApiError::no_permission(format!("the caller may not sts:AssumeRole on {target}")));
    }
    if !iam::trusts_principal(role, &caller.principal) {
        return Err(ApiError::no_permission(format!("the trust policy of {target} does not admit the caller")));
    }
    let issued = issue_session(ctx.state, role, &session_name, duration, policy, ctx.now);
    Ok(session_body(&ctx.request_id, role, &session_name, &issued))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names() {
        assert!(check_session_name("acr-broker").is_ok());
        assert!(check_session_name("a.b-c_d@e").is_ok());
        assert!(check_session_name("a").is_err());
        assert!(check_session_name("acr broker").is_err());
        assert!(check_session_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn policies() {
        assert_eq!(check_policy(None).unwrap(), None);
        assert_eq!(check_policy(Some("")).unwrap_err().code, "InvalidParameter.PolicySize");
        assert_eq!(check_policy(Some("{")).unwrap_err().code, "InvalidParameter.PolicyGrammar");
    }
}
