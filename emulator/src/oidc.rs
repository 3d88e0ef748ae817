//! RRSA: anonymous `AssumeRoleWithOIDC` and minting of service-account tokens for tests.

use std::time::Duration;

use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::iam;
use crate::jwt;
use crate::state::State;
use crate::sts::{self, check_duration, check_policy, check_session_name, find_role};
use crate::util::{epoch_secs, from_epoch_secs, iso8601, random_alnum};
use crate::world::arn;

fn token_error(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request("AuthenticationFail.OIDCToken", msg)
}

/// Signs a service-account token with the provider's key (`None` for an unknown provider).
pub fn mint(state: &State, provider_arn: &str, subject: &str, audience: &str, ttl: Duration) -> Option<String> {
    let provider = state.world.data.oidc_providers.get(&provider_arn.to_ascii_lowercase())?;
    let now = epoch_secs(state.now());
    let claims = json!({
        "iss": provider.issuer_url,
        "sub": subject,
        "aud": [audience],
        "iat": now,
        "nbf": now,
        "exp": now.saturating_add(ttl.as_secs()),
        "jti": random_alnum(16),
    });
    let token = jwt::encode(&provider.key, &[("kid", "emulator")], &claims).ok()?;
    state.record_secret(&token);
    Some(token)
}

/// `AssumeRoleWithOIDC` (anonymous legacy-RPC call).
pub fn assume_role_with_oidc(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    if let Some(v) = ctx.param("Version") {
        if v != "2015-04-01" {
            return Err(ApiError::bad_request(
                "InvalidVersion",
                format!("Specified parameter Version={v:?} is not valid."),
            ));
        }
    }
    if let Some(f) = ctx.param("Format") {
        if !f.eq_ignore_ascii_case("json") && !f.eq_ignore_ascii_case("xml") {
            return Err(ApiError::bad_request("InvalidParameter.Format", format!("Format={f:?} is not JSON or XML.")));
        }
    }
    let provider_arn = ctx.required("OIDCProviderArn")?;
    if arn::parse_oidc_provider_arn(provider_arn).is_none() {
        return Err(ApiError::invalid_param(
            "InvalidParameter.OIDCProviderArn",
            "The parameter OIDCProviderArn is wrongly formed.",
        ));
    }
    let token = ctx.required("OIDCToken")?;
    if !(4..=20000).contains(&token.len()) {
        return Err(ApiError::invalid_param(
            "InvalidParameter.OIDCToken",
            "The parameter OIDCToken must be 4-20000 characters.",
        ));
    }
    let role = find_role(ctx)?;
    let session_name = ctx.required("RoleSessionName")?.to_string();
    check_session_name(&session_name)?;
    let policy = check_policy(ctx.param("Policy"))?;
    let duration = check_duration(ctx, role, false)?;

    let world = &ctx.state.world.data;
    let provider = world.oidc_providers.get(&provider_arn.to_ascii_lowercase()).ok_or_else(|| {
        ApiError::new(404, "EntityNotExist.OIDCProvider", format!("The OIDC provider {provider_arn} does not exist."))
    })?;
    let decoded = jwt::decode(token).map_err(|e| token_error(format!("The OIDCToken is malformed: {e}.")))?;
    if !decoded.verify(&provider.key) {
        return Err(token_error("The OIDCToken signature does not verify with the provider's key."));
    }
    let iss = decoded.str_claim("iss").unwrap_or("");
    if iss != provider.issuer_url {
        return Err(token_error(format!("The OIDCToken issuer {iss:?} does not match the provider.")));
    }
    let audiences = decoded.audiences();
    if !audiences.iter().any(|a| provider.client_ids.contains(a)) {
        return Err(token_error("The OIDCToken audience is not a client id of the provider."));
    }
    let now = epoch_secs(ctx.now);
    let exp = decoded
        .int_claim("exp")
        .and_then(|e| u64::try_from(e).ok())
        .ok_or_else(|| token_error("The OIDCToken has no exp."))?;
    if now >= exp {
        return Err(ApiError::bad_request("AuthenticationFail.OIDCToken.Expired", "The OIDCToken is expired."));
    }
    if let Some(nbf) = decoded.int_claim("nbf").and_then(|e| u64::try_from(e).ok()) {
        if now.saturating_add(60) < nbf {
            return Err(token_error("The OIDCToken is not valid yet (nbf)."));
        }
    }
    let subject = decoded.str_claim("sub").unwrap_or("").to_string();
    if role.account != provider.account || !iam::trusts_oidc(role, &provider.arn, &audiences, &subject) {
        return Err(ApiError::no_permission(format!(
            "the trust policy of the role does not admit OIDC provider {} for subject {subject:?}",
            provider.arn
        )));
    }
    let issued = sts::issue_session(ctx.state, role, &session_name, duration, policy, ctx.now);
    let mut body = sts::session_body(&ctx.request_id, role, &session_name, &issued);
    let iat = decoded.int_claim("iat").and_then(|e| u64::try_from(e).ok()).unwrap_or(now);
    let as_time = |s: u64| iso8601(from_epoch_secs(s));
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "OIDCTokenInfo".into(),
            json!({
                "ClientIds": audiences.join(","),
                "ExpirationTime": as_time(exp),
                "IssuanceTime": as_time(iat),
                "Issuer": iss,
                "Subject": subject,
                "VerificationInfo": "Success",
            }),
        );
    }
    Ok(body)
}
