//! Self-verifying credentials: STS security tokens and ACR temporary passwords carry their
//! claims plus an HMAC under the world's key, so an emulator restarted with the same
//! [`crate::World`] still honours them (tests restart the emulator to simulate outages).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::util::{b64, b64_decode, ct_eq, random_alnum};

const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn mac(key: &[u8], domain: &str, data: &[u8]) -> Vec<u8> {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    m.update(domain.as_bytes());
    m.update(b"|");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Claims of an STS session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The session's AccessKeyId (`STS.` ...).
    pub ak: String,
    /// Encoded [`crate::iam::Principal`].
    pub principal: String,
    /// Issued at, epoch seconds.
    pub iat: u64,
    /// Expires at, epoch seconds.
    pub exp: u64,
    /// Session policy, if AssumeRole got one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// Freshly issued STS credentials.
#[derive(Debug, Clone)]
pub struct StsCredentials {
    /// AccessKeyId.
    pub access_key_id: String,
    /// AccessKeySecret.
    pub access_key_secret: String,
    /// SecurityToken.
    pub security_token: String,
}

/// The secret belonging to an issued STS AccessKeyId.
pub fn sts_secret(key: &[u8], ak: &str) -> String {
    mac(key, "sts-secret", ak.as_bytes())
        .iter()
        .map(|b| char::from(SECRET_ALPHABET[usize::from(*b) % SECRET_ALPHABET.len()]))
        .collect()
}

/// Issues STS credentials for `claims` (its `ak` is filled in here).
pub fn issue_sts(key: &[u8], mut claims: SessionClaims) -> StsCredentials {
    let ak = format!("STS.N{}", random_alnum(26));
    claims.ak = ak.clone();
    let json = serde_json::to_vec(&claims).unwrap_or_default();
    let token = format!("CAIS{}.{}", b64(&json), b64(&mac(key, "sts-token", &json)));
    StsCredentials { access_key_secret: sts_secret(key, &ak), access_key_id: ak, security_token: token }
}

/// Why a security token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not a token this emulator issued.
    Malformed,
    /// Issued for another AccessKeyId.
    Mismatch,
}

/// Verifies a security token and checks it belongs to `ak`.
pub fn verify_sts(key: &[u8], ak: &str, token: &str) -> Result<SessionClaims, TokenProblem> {
    let body = token.strip_prefix("CAIS").ok_or(TokenProblem::Malformed)?;
    let (claims_b64, mac_b64) = body.rsplit_once('.').ok_or(TokenProblem::Malformed)?;
    let json = b64_decode(claims_b64).ok_or(TokenProblem::Malformed)?;
    let tag = b64_decode(mac_b64).ok_or(TokenProblem::Malformed)?;
    if !ct_eq(&tag, &mac(key, "sts-token", &json)) {
        return Err(TokenProblem::Malformed);
    }
    let claims: SessionClaims = serde_json::from_slice(&json).map_err(|_| TokenProblem::Malformed)?;
    if claims.ak != ak {
        return Err(TokenProblem::Mismatch);
    }
    Ok(claims)
}

/// Claims of an ACR temporary password, in the observed real shape
/// (`base64(JSON{instanceId,time,type,userId}) ":" 40-hex`) plus what the realm needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcrClaims {
    /// Instance id (empty for Personal Edition).
    #[serde(rename = "instanceId")]
    pub instance_id: String,
    /// Issue time, epoch milliseconds as a string.
    pub time: String,
    /// `sub` (Enterprise) or `personal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Encoded principal that asked for the password.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// Account the registry belongs to.
    pub account: String,
    /// Region of the registry.
    pub region: String,
    /// Expiry, epoch seconds.
    pub exp: u64,
    /// Session policy of the caller, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// Issues an ACR password for `claims`.
pub fn issue_acr(key: &[u8], claims: &AcrClaims) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let tag = mac(key, "acr-password", &json);
    format!("{}:{}", b64(&json), data_encoding::HEXLOWER.encode(&tag[..20]))
}

/// Verifies an ACR password; `None` if it is not one this world issued.
pub fn verify_acr(key: &[u8], password: &str) -> Option<AcrClaims> {
    let (claims_b64, tag_hex) = password.rsplit_once(':')?;
    let json = b64_decode(claims_b64)?;
    let tag = data_encoding::HEXLOWER.decode(tag_hex.as_bytes()).ok()?;
    let expected = mac(key, "acr-password", &json);
    if expected.len() < 20 || !ct_eq(&tag, &expected[..20]) {
        return None;
    }
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> SessionClaims {
        SessionClaims { ak: String::new(), principal: "role:1:r:s".into(), iat: 1, exp: 2, policy: None }
    }

    #[test]
    fn sts_token_round_trip_and_tampering() {
        let key = b"k1";
        let c = issue_sts(key, claims());
        assert!(c.access_key_id.starts_with("STS."));
        assert_eq!(c.access_key_secret, sts_secret(key, &c.access_key_id));
        let got = verify_sts(key, &c.access_key_id, &c.security_token).unwrap();
        assert_eq!(got.principal, "role:1:r:s");
        assert_eq!(verify_sts(key, "STS.other", &c.security_token), Err(TokenProblem::Mismatch));
        assert_eq!(verify_sts(b"k2", &c.access_key_id, &c.security_token), Err(TokenProblem::Malformed));
        let mut t = c.security_token.clone();
        t.insert(10, 'A');
        assert_eq!(verify_sts(key, &c.access_key_id, &t), Err(TokenProblem::Malformed));
    }

    #[test]
    fn acr_password_round_trip() {
        let c = AcrClaims {
            instance_id: "cri-a".into(),
            time: "1".into(),
            kind: "sub".into(),
            user_id: "role:1:r:s".into(),
            account: "1".into(),
            region: "cn-hangzhou".into(),
            exp: 5,
            policy: None,
        };
        let p = issue_acr(b"k", &c);
        assert_eq!(verify_acr(b"k", &p), Some(c));
        assert_eq!(verify_acr(b"other", &p), None);
        assert_eq!(verify_acr(b"k", &p.replace(':', "")), None);
    }
}
