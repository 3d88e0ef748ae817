//! Authentication of V3-signed cloud API calls: structure, payload hash, date window,
//! access key and security token, signature, and single-use nonce.

use std::time::Duration;

use http::HeaderMap;

use crate::creds::{self, TokenProblem};
use crate::error::ApiError;
use crate::iam::{Caller, Principal};
use crate::sig;
use crate::state::{lock, NonceOutcome, State};
use crate::util::{ct_eq, epoch_secs, from_epoch_secs, parse_iso8601, sha256_hex};

/// Allowed distance between `x-acs-date` and the emulator clock: 15 minutes.
pub const DATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The parts of an HTTP request the signature covers.
#[derive(Debug)]
pub struct SignedParts<'a> {
    /// HTTP method as sent.
    pub method: &'a str,
    /// Full request path as sent (the CanonicalURI).
    pub path: &'a str,
    /// Raw query string.
    pub raw_query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Body bytes.
    pub body: &'a [u8],
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn token_error(code: &str, message: &str) -> ApiError {
    ApiError::bad_request(code, message)
}

/// Authenticates a V3 request and returns the caller.
pub fn authenticate(state: &State, req: &SignedParts<'_>) -> Result<Caller, ApiError> {
    let authz = header(req.headers, "authorization").ok_or_else(|| {
        ApiError::bad_request(
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards: Authorization header is missing.",
        )
    })?;
    let auth = sig::parse_authorization(authz)?;
    sig::check_signed_set(&auth, req.headers, req.body)?;

    let declared = header(req.headers, "x-acs-content-sha256").unwrap_or("");
    if !ct_eq(declared.as_bytes(), sha256_hex(req.body).as_bytes()) {
        return Err(ApiError::bad_request(
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation: x-acs-content-sha256 does not match the body.",
        ));
    }

    let now = state.now();
    let date = header(req.headers, "x-acs-date").unwrap_or("");
    let when = parse_iso8601(date).ok_or_else(|| {
        ApiError::bad_request(
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted (YYYY-MM-DDTHH:MM:SSZ).",
        )
    })?;
    let skew = now.duration_since(when).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
    if skew > DATE_WINDOW {
        return Err(ApiError::bad_request(
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }

    if let Some(sent) = header(req.headers, "x-acs-accesskey-id") {
        if sent != auth.access_key_id {
            return Err(ApiError::bad_request(
                "IncompleteSignature",
                "x-acs-accesskey-id differs from the Credential in Authorization.",
            ));
        }
    }
    let token = header(req.headers, "x-acs-security-token");
    let (caller, secret) = resolve_key(state, &auth.access_key_id, token, now)?;

    sig::verify_signature(req.method, req.path, req.raw_query, req.headers, req.body, &auth, &secret)?;

    let nonce = header(req.headers, "x-acs-signature-nonce").unwrap_or("");
    if nonce.is_empty() || nonce.len() > 256 {
        return Err(ApiError::bad_request("InvalidSignatureNonce", "x-acs-signature-nonce must be 1..256 characters."));
    }
    match lock(&state.nonces).record(nonce, now) {
        NonceOutcome::Fresh => Ok(caller),
        NonceOutcome::Reused => {
            Err(ApiError::bad_request("SignatureNonceUsed", "Specified signature nonce was used already."))
        }
        NonceOutcome::Full => Err(ApiError::throttled(1000)),
    }
}

/// Finds the secret for an AccessKeyId and checks its security token.
fn resolve_key(
    state: &State,
    ak: &str,
    token: Option<&str>,
    now: std::time::SystemTime,
) -> Result<(Caller, String), ApiError> {
    let world = &state.world.data;
    if !ak.starts_with("STS.") {
        let user = world
            .user_by_ak(ak)
            .ok_or_else(|| ApiError::new(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."))?;
        if state.knobs().disabled_access_keys.iter().any(|k| k == ak) {
            return Err(ApiError::new(403, "InvalidAccessKeyId.Inactive", "Specified access key is disabled."));
        }
        if token.is_some() {
            return Err(token_error(
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            ));
        }
        let caller = Caller {
            principal: Principal::User { account: user.account.clone(), name: user.name.clone() },
            session_expires: None,
            session_policy: None,
        };
        return Ok((caller, user.access_key_secret.clone()));
    }
    let token = token.ok_or_else(|| {
        token_error(
            "InvalidSecurityToken.Malformed",
            "Specified SecurityToken is malformed (missing for an STS AccessKeyId).",
        )
    })?;
    if let Some(s) = world.static_sessions.get(ak) {
        if !ct_eq(token.as_bytes(), s.security_token.as_bytes()) {
            return Err(token_error(
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            ));
        }
        if now >= s.expiration {
            return Err(token_error("InvalidSecurityToken.Expired", "Specified SecurityToken is expired."));
        }
        let caller = Caller {
            principal: Principal::Role {
                account: s.account.clone(),
                role: s.role_name.clone(),
                session: s.session_name.clone(),
            },
            session_expires: Some(s.expiration),
            session_policy: None,
        };
        return Ok((caller, s.access_key_secret.clone()));
    }
    let claims = creds::verify_sts(&world.token_key, ak, token).map_err(|p| match p {
        TokenProblem::Malformed => {
            token_error("InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.")
        }
        TokenProblem::Mismatch => token_error(
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        ),
    })?;
    if epoch_secs(now) >= claims.exp {
        return Err(token_error("InvalidSecurityToken.Expired", "Specified SecurityToken is expired."));
    }
    let principal = Principal::decode(&claims.principal)
        .ok_or_else(|| token_error("InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed."))?;
    let caller =
        Caller { principal, session_expires: Some(from_epoch_secs(claims.exp)), session_policy: claims.policy };
    Ok((caller, creds::sts_secret(&world.token_key, ak)))
}

#[cfg(test)]
mod tests;
