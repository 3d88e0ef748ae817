//! ECS instance metadata: hardened-mode token, role listing, role credentials.

use http::HeaderMap;
use serde_json::json;

use crate::reply::Reply;
use crate::state::{lock, MetadataSession, State, MAX_METADATA_TOKENS};
use crate::sts;
use crate::util::{add_secs, iso8601, random_alnum};

/// Header carrying the requested token TTL on `PUT /latest/api/token`.
pub const TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
/// Header carrying the token on GETs.
pub const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";
/// Session name of metadata-issued credentials.
pub const ECS_SESSION_NAME: &str = "ecs-metadata";

/// `PUT /latest/api/token`.
pub fn put_token(state: &State, headers: &HeaderMap) -> Reply {
    let ttl = headers.get(TTL_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let Some(ttl) = ttl.filter(|t| (1..=21600).contains(t)) else {
        return Reply::text(400, "X-aliyun-ecs-metadata-token-ttl-seconds must be an integer in 1..21600");
    };
    let now = state.now();
    let token = random_alnum(44);
    let mut tokens = lock(&state.metadata_tokens);
    tokens.retain(|_, exp| *exp > now);
    if tokens.len() >= MAX_METADATA_TOKENS {
        return Reply::text(429, "too many metadata tokens");
    }
    tokens.insert(token.clone(), add_secs(now, ttl));
    Reply::text(200, &token)
}

/// Checks the hardened-mode token on a GET: a token that is sent must be valid; a missing one
/// is refused only when `require_metadata_token` is on. Refusals are 401.
pub fn check_token(state: &State, headers: &HeaderMap) -> Result<(), Reply> {
    let sent = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    match sent {
        None if state.knobs().require_metadata_token => {
            Err(Reply::text(401, "metadata token required (hardened mode)"))
        }
        None => Ok(()),
        Some(t) => {
            let valid = lock(&state.metadata_tokens).get(t).is_some_and(|exp| *exp > state.now());
            if valid {
                Ok(())
            } else {
                Err(Reply::text(401, "invalid or expired metadata token"))
            }
        }
    }
}

/// `GET /latest/meta-data/ram/security-credentials/`.
pub fn list_roles(state: &State) -> Reply {
    match &state.world.data.metadata {
        Some(m) => Reply::text(200, &m.role_name),
        None => Reply::text(404, "no RAM role is attached to this instance"),
    }
}

/// `GET /latest/meta-data/ram/security-credentials/<role>`.
pub fn credentials(state: &State, role_name: &str) -> Reply {
    let world = &state.world.data;
    let Some(meta) = world.metadata.as_ref().filter(|m| m.role_name == role_name) else {
        return Reply::text(404, "role not attached to this instance");
    };
    let Some(role) = world.roles.get(&meta.role_arn) else {
        return Reply::text(404, "role not attached to this instance");
    };
    let now = state.now();
    let lifetime = match state.knobs().sts_lifetime_seconds {
        Some(cap) => meta.lifetime_seconds.min(cap),
        None => meta.lifetime_seconds,
    };
    let mut current = lock(&state.metadata_session);
    let reusable = current
        .as_ref()
        .filter(|s| s.lifetime == lifetime && now < add_secs(s.issued, lifetime / 2) && now < s.expires);
    let session = match reusable {
        Some(s) => s.clone(),
        None => {
            let issued = sts::issue_session(state, role, ECS_SESSION_NAME, lifetime, None, now);
            let s = MetadataSession { creds: issued.creds, issued: now, expires: issued.expires, lifetime };
            *current = Some(s.clone());
            s
        }
    };
    Reply::json(
        200,
        &json!({
            "AccessKeyId": session.creds.access_key_id,
            "AccessKeySecret": session.creds.access_key_secret,
            "Expiration": iso8601(session.expires),
            "SecurityToken": session.creds.security_token,
            "LastUpdated": iso8601(session.issued),
            "Code": "Success",
        }),
    )
}
