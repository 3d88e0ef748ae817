//! The access key a request is signed with.

use std::time::SystemTime;

use crate::secret::Secret;

/// An Alibaba Cloud access key: long-term (`LTAI…`) or temporary STS (`STS.…` plus token).
///
/// `Debug` is safe to log: the secret and the token are [`Secret`]s and print redacted.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// AccessKeyId; not secret, it names the key in `Credential=` of the Authorization header.
    pub access_key_id: String,
    /// AccessKeySecret; the HMAC key.
    pub access_key_secret: Secret,
    /// SecurityToken of STS credentials; `None` for a long-term key.
    pub security_token: Option<Secret>,
    /// When temporary credentials stop working; `None` for a long-term key.
    pub expires_at: Option<SystemTime>,
}

impl Credentials {
    /// A long-term access key pair (no token, no expiry).
    pub fn long_term(access_key_id: impl Into<String>, access_key_secret: Secret) -> Self {
        Credentials { access_key_id: access_key_id.into(), access_key_secret, security_token: None, expires_at: None }
    }

    /// True when the credentials carry an STS security token.
    pub fn is_temporary(&self) -> bool {
        self.security_token.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_key_id_but_no_secret_or_token() {
        let c = Credentials {
            access_key_id: "STS.NTestTempAccessKeyId".into(),
            access_key_secret: Secret::from("TempSecretXYZ"),
            security_token: Some(Secret::from("CAIS+test/token==")),
            expires_at: None,
        };
        let dbg = format!("{c:?}");
        assert!(dbg.contains("STS.NTestTempAccessKeyId"));
        assert!(!dbg.contains("TempSecretXYZ"), "{dbg}");
        assert!(!dbg.contains("CAIS+test"), "{dbg}");
        assert!(c.is_temporary());
        assert!(!Credentials::long_term("LTAI", Secret::from("x")).is_temporary());
    }
}
