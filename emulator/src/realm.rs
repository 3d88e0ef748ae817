//! Registry token realm (`GET /auth`): Docker token protocol with ES256 JWTs that
//! docker-registry 2.8 accepts (the docker registry token authentication spec).

use std::collections::BTreeMap;
use std::time::SystemTime;

use http::HeaderMap;
use serde_json::{json, Value};

use crate::cr::TEMP_USERNAME;
use crate::creds;
use crate::iam::{self, Principal};
use crate::jwt;
use crate::reply::Reply;
use crate::state::State;
use crate::util::{b64_decode, epoch_secs, iso8601, random_alnum};

/// One requested resource: `type:name:action,action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Resource type (`repository`, `registry`).
    pub kind: String,
    /// Resource name (`ns/app`).
    pub name: String,
    /// Requested actions.
    pub actions: Vec<String>,
}

/// Parses scope values; each may hold several space-separated resource scopes.
pub fn parse_scopes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<Scope> {
    let mut out = Vec::new();
    for v in values {
        for item in v.split(' ').filter(|s| !s.is_empty()) {
            let Some((kind, rest)) = item.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            out.push(Scope {
                kind: kind.to_string(),
                name: name.to_string(),
                actions: actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect(),
            });
        }
    }
    out
}

fn unauthorized(msg: &str) -> Reply {
    Reply::json(401, &json!({"errors": [{"code": "UNAUTHORIZED", "message": msg}]}))
}

fn signed_token(
    state: &State,
    service: &str,
    subject: &str,
    access: Vec<Value>,
    now: SystemTime,
) -> Result<Value, String> {
    let realm = &state.world.data.realm;
    let iat = epoch_secs(now);
    let claims = json!({
        "iss": realm.issuer,
        "sub": subject,
        "aud": service,
        "exp": iat + realm.token_ttl_seconds,
        "nbf": iat,
        "iat": iat,
        "jti": random_alnum(24),
        "access": access,
    });
    let token = jwt::encode(&realm.key, &[("kid", &realm.kid)], &claims)?;
    state.record_secret(&token);
    Ok(json!({
        "token": token,
        "access_token": token,
        "expires_in": realm.token_ttl_seconds,
        "issued_at": iso8601(now),
    }))
}

/// A token with any actions (e.g. `push`) for seeding a test registry.
pub fn admin_token(state: &State, service: &str, repository: &str, actions: &[&str]) -> String {
    let access = vec![json!({"type": "repository", "name": repository, "actions": actions})];
    signed_token(state, service, "admin", access, state.now())
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let v = headers.get("authorization")?;
    let parsed = v
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Basic ").or_else(|| s.strip_prefix("basic ")))
        .and_then(|b| b64_decode(b.trim()))
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    Some(parsed.ok_or(()))
}

/// `GET /auth?service=..&scope=..&account=..`.
pub fn token(state: &State, raw_query: Option<&str>, headers: &HeaderMap) -> Reply {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some(service) = pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()) else {
        return Reply::json(400, &json!({"errors": [{"code": "INVALID_REQUEST", "message": "service is required"}]}));
    };
    let scopes = parse_scopes(pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()));
    let now = state.now();
    let world = &state.world.data;

    let (subject, access) = match basic_credentials(headers) {
        None => ("anonymous".to_string(), Vec::new()),
        Some(Err(())) => return unauthorized("malformed Basic credentials"),
        Some(Ok((user, password))) => {
            if user != TEMP_USERNAME {
                return unauthorized("invalid username/password");
            }
            let Some(claims) = creds::verify_acr(&world.token_key, &password) else {
                return unauthorized("invalid username/password");
            };
            if epoch_secs(now) >= claims.exp {
                return unauthorized("temporary password expired");
            }
            let revoked_before = state.knobs().acr_revoked_before_ms;
            if revoked_before.is_some_and(|t| claims.time.parse::<u64>().map_or(true, |issued| issued < t)) {
                return unauthorized("temporary password revoked");
            }
            let (issued_for, repo_prefix) = if claims.kind == "personal" {
                let s = world.personal.iter().find(|p| p.account == claims.account && p.region == claims.region);
                (s.map(|p| p.token_service.clone()), String::new())
            } else {
                let s = world.instances.iter().find(|i| i.id == claims.instance_id);
                (s.map(|i| i.token_service.clone()), format!("{}/", claims.instance_id))
            };
            if issued_for.as_deref() != Some(service.as_str()) {
                return unauthorized("credentials were not issued for this registry");
            }
            let Some(principal) = Principal::decode(&claims.user_id) else {
                return unauthorized("invalid username/password");
            };
            let mut granted: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for s in scopes.iter().filter(|s| s.kind == "repository") {
                if !s.actions.iter().any(|a| a == "pull") {
                    continue;
                }
                let resource =
                    format!("acs:cr:{}:{}:repository/{repo_prefix}{}", claims.region, claims.account, s.name);
                if iam::allows(world, &principal, claims.policy.as_deref(), "cr:PullRepository", &resource) {
                    granted.entry(s.name.clone()).or_insert_with(|| vec!["pull".to_string()]);
                }
            }
            let access = granted
                .into_iter()
                .map(|(name, actions)| json!({"type": "repository", "name": name, "actions": actions}))
                .collect();
            (user, access)
        }
    };
    match signed_token(state, &service, &subject, access, now) {
        Ok(v) => Reply::json(200, &v),
        Err(e) => Reply::json(500, &json!({"errors": [{"code": "UNKNOWN", "message": e}]})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_like_distribution() {
        let s = parse_scopes(
            ["repository:ns/app:pull,push", "repository:127.0.0.1:5000/x:pull registry:catalog:*"].into_iter(),
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].actions, vec!["pull", "push"]);
        assert_eq!(s[1].name, "127.0.0.1:5000/x");
        assert_eq!(s[2].kind, "registry");
        assert!(parse_scopes(["garbage"].into_iter()).is_empty());
    }
}
