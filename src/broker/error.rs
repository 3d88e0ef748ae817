//! What can go wrong answering a credential request, in terms that decide the caller's next step.
//!
//! Only `server.rs` maps these to HTTP statuses; everything below the server speaks this type.

use std::time::Duration;

use crate::aliyun::{Error as ApiError, ErrorKind};

/// The upstream code for a security token past its expiry.
pub(crate) const EXPIRED_SESSION: &str = "InvalidSecurityToken.Expired";

/// A failed credential request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The request itself is wrong (bad host, annotation, body); retrying will not help.
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code, e.g. `invalid_annotation`.
        code: &'static str,
        /// What was wrong, naming the field and value.
        message: String,
    },
    /// The registry is not an ACR registry this node may serve; the runtime should use its own secrets.
    #[error("{host} is not an ACR registry served by this node{}", .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    NotOurs {
        /// The host as asked.
        host: String,
        /// Why, when more than "not ACR" (e.g. no listed instance owns this custom domain).
        reason: Option<String>,
    },
    /// Upstream refused: the role chain may not pull from this instance (or the trust is wrong).
    #[error("{message}")]
    Denied {
        /// The upstream action that refused.
        action: &'static str,
        /// The upstream error code, e.g. `NoPermission`.
        code: String,
        /// The upstream message and our hint.
        message: String,
    },
    /// Upstream is unavailable, throttling or timing out; try again after `retry_after`.
    #[error("upstream unavailable: {message}")]
    Unavailable {
        /// The upstream action.
        action: &'static str,
        /// Upstream or local code (`Throttling.Api`, `Timeout`, `ConnectionFailed`).
        code: String,
        /// Details.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// Upstream answered something we cannot use (malformed JSON, missing fields).
    #[error("bad upstream answer ({action}): {message}")]
    BadUpstream {
        /// The upstream action.
        action: &'static str,
        /// Details.
        message: String,
    },
    /// The daemon has no node identity yet (metadata service down, no credentials configured).
    #[error("no node identity: {0}")]
    NoIdentity(String),
}

impl BrokerError {
    /// Wraps an upstream error from `action`, keeping its code and classification.
    pub fn upstream(action: &'static str, e: ApiError) -> BrokerError {
        let code = e.code().to_owned();
        match e.kind() {
            // The session we signed with expired (mid-chain, or the node clock lags STS): not a
            // denial of the role; the next attempt re-assumes, so it must not be remembered.
            ErrorKind::Denied if code == EXPIRED_SESSION => {
                BrokerError::Unavailable { action, code, message: e.to_string(), retry_after: Duration::from_secs(1) }
            }
            ErrorKind::Denied => BrokerError::Denied { action, code, message: e.to_string() },
            ErrorKind::InvalidInput => BrokerError::BadRequest { code: "invalid_request", message: e.to_string() },
            ErrorKind::Malformed => BrokerError::BadUpstream { action, message: e.to_string() },
            ErrorKind::Throttled | ErrorKind::Transient => BrokerError::Unavailable {
                action,
                code,
                message: e.to_string(),
                retry_after: e.retry_after().unwrap_or(Duration::from_secs(1)).max(Duration::from_secs(1)),
            },
        }
    }

    /// A value came back already past its usable time (upstream issued a too-short credential).
    pub fn expired_upstream(cache: &'static str) -> BrokerError {
        BrokerError::Unavailable {
            action: cache,
            code: String::from("CredentialTooShortLived"),
            message: String::from("upstream issued a credential that expires before it could be used"),
            retry_after: Duration::from_secs(1),
        }
    }

    /// True for failures that will repeat on retry (remembered briefly in the cache).
    pub fn is_terminal(&self) -> bool {
        matches!(self, BrokerError::Denied { .. } | BrokerError::BadRequest { .. } | BrokerError::NotOurs { .. })
    }

    /// The machine-readable code shown to clients and in logs.
    pub fn code(&self) -> &str {
        match self {
            BrokerError::BadRequest { code, .. } => code,
            BrokerError::NotOurs { .. } => "not_acr_registry",
            BrokerError::Denied { code, .. } | BrokerError::Unavailable { code, .. } => code,
            BrokerError::BadUpstream { .. } => "bad_upstream_response",
            BrokerError::NoIdentity(_) => "no_identity",
        }
    }

    /// The metrics outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            BrokerError::BadRequest { .. } => "bad_request",
            BrokerError::NotOurs { .. } => "not_found",
            BrokerError::Denied { .. } => "denied",
            BrokerError::Unavailable { .. } | BrokerError::NoIdentity(_) => "unavailable",
            BrokerError::BadUpstream { .. } => "error",
        }
    }

    /// A bad request with `code` and `message`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> BrokerError {
        BrokerError::BadRequest { code, message: message.into() }
    }
}
