//! The one error type of the Alibaba Cloud client, classified so callers can decide what next.
//!
//! [`Error::kind`] answers "retry, refuse, or report an upstream fault"; `server.rs` maps the
//! kind to an HTTP status. Messages name the action, the upstream code and message, and a hint
//! for the operator where one helps. No variant ever holds a secret.

use std::time::Duration;

/// What kind of failure this is, which decides what the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Upstream flow control; retry after `retry_after` or with backoff.
    Throttled,
    /// The identity may not do this (permissions, trust policy, bad or expired keys). Terminal.
    Denied,
    /// The request itself is wrong (bad parameter, bad configuration). Terminal.
    InvalidInput,
    /// A fault that may pass: 5xx, timeouts, connection failures.
    Transient,
    /// The upstream answered something we cannot read.
    Malformed,
}

/// An error from an Alibaba Cloud API call, the metadata service or an identity source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with an error (HTTP 4xx/5xx, or 200 with `IsSuccess=false`).
    #[error("{action} failed: HTTP {status}, code {code}: {message}{}{}", request_id_suffix(.request_id), hint(.action, .code, *.status))]
    Upstream {
        /// The API action or metadata path that was called.
        action: String,
        /// HTTP status of the answer.
        status: u16,
        /// Upstream `Code` (e.g. `NoPermission`, `Throttling.Api`).
        code: String,
        /// Upstream `Message`.
        message: String,
        /// Upstream `RequestId`, for support tickets.
        request_id: Option<String>,
        /// From the `x-acs-retry-after` header (milliseconds on the wire).
        retry_after: Option<Duration>,
    },
    /// No answer within the configured timeout.
    #[error("{action} timed out after {after:?}")]
    Timeout {
        /// The API action or metadata path that was called.
        action: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection could not be made or broke before an answer arrived.
    #[error("{action}: connection failed: {detail}")]
    Connect {
        /// The API action or metadata path that was called.
        action: String,
        /// What went wrong (no secrets: built from transport errors only).
        detail: String,
    },
    /// The endpoint's host name does not exist (DNS says so, not "try again"): an unknown region
    /// or a mistyped endpoint. Not retried; callers remember it like other refusals.
    #[error("{action}: the endpoint host {host} does not exist (DNS: {detail}); is the region right?")]
    UnknownHost {
        /// The API action or metadata path that was called.
        action: String,
        /// The host that does not resolve.
        host: String,
        /// The resolver's words.
        detail: String,
    },
    /// The answer could not be read: not JSON, a missing or mistyped field, a body too large.
    #[error("{action}: malformed response: {detail}")]
    Decode {
        /// The API action or metadata path that was called.
        action: String,
        /// Which field or what part was wrong (never a field's value).
        detail: String,
    },
    /// The caller asked for something invalid (a bad URL, session name, region...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No identity source is configured or none can provide credentials.
    #[error("no identity available: {0}")]
    NoIdentity(String),
    /// A local I/O failure, e.g. reading the OIDC token file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (e.g. `reading OIDC token file /var/run/...`).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn request_id_suffix(request_id: &Option<String>) -> String {
    match request_id {
        Some(id) => format!(" (RequestId {id})"),
        None => String::new(),
    }
}

fn hint(action: &str, code: &str, status: u16) -> String {
    let denied = matches!(code, "NoPermission" | "Forbidden.RAM" | "Forbidden");
    if denied && action.starts_with("AssumeRole") {
        return "; hint: does the caller have sts:AssumeRole (e.g. AliyunSTSAssumeRoleAccess), and does the role's trust policy allow it?".to_owned();
    }
    if denied {
        return format!("; hint: does the role have cr:{action} on this instance?");
    }
    static_hint(code, status).to_owned()
}

fn static_hint(code: &str, status: u16) -> &'static str {
    match code {
        "EntityNotExist.Role" => {
            "; hint: check the role ARN and the role's trust policy (it must trust the calling identity)"
        }
        "SignatureDoesNotMatch" => "; hint: check the AccessKeySecret and the endpoint",
        "InvalidTimeStamp.Expired" => "; hint: the node clock may be off by more than 15 minutes",
        c if c.starts_with("InvalidAccessKeyId") => "; hint: the access key is unknown or disabled",
        c if c.starts_with("InvalidSecurityToken") => {
            "; hint: the STS token is expired or does not match its key; credentials will be refreshed"
        }
        c if c.starts_with("AuthenticationFail") => {
            "; hint: check the OIDC provider ARN, the token's audience and the role's trust policy"
        }
        c if is_throttling_code(c) => "; hint: request rate exceeded, retry later",
        _ if status == 403 => "; hint: check the identity's permissions and the role's trust policy",
        _ => "",
    }
}

fn is_throttling_code(code: &str) -> bool {
    code.starts_with("Throttling") || code == "ServiceUnavailable.Throttling"
}

impl Error {
    /// The failure class that decides retry versus refusal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Upstream { code, status, retry_after, .. } => {
                classify_upstream(code, *status, retry_after.is_some())
            }
            Error::Timeout { .. } | Error::Connect { .. } | Error::Io { .. } => ErrorKind::Transient,
            Error::Decode { .. } => ErrorKind::Malformed,
            Error::InvalidInput(_) | Error::UnknownHost { .. } => ErrorKind::InvalidInput,
            Error::NoIdentity(_) => ErrorKind::Denied,
        }
    }

    /// True when trying again later may succeed (throttling, 5xx, timeouts, connection errors).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Throttled | ErrorKind::Transient)
    }

    /// The upstream `Code`, or a local code: `Timeout`, `ConnectionFailed`, `MalformedResponse`,
    /// `InvalidInput`, `NoIdentity`, `IoError`.
    pub fn code(&self) -> &str {
        match self {
            Error::Upstream { code, .. } => code,
            Error::Timeout { .. } => "Timeout",
            Error::Connect { .. } => "ConnectionFailed",
            Error::UnknownHost { .. } => UNKNOWN_HOST,
            Error::Decode { .. } => "MalformedResponse",
            Error::InvalidInput(_) => "InvalidInput",
            Error::NoIdentity(_) => "NoIdentity",
            Error::Io { .. } => "IoError",
        }
    }

    /// How long the upstream asked us to wait (`x-acs-retry-after`), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The upstream `RequestId`, if the service sent one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Upstream { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of the upstream answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Upstream { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A decode error for `action`, naming what was wrong.
    pub(crate) fn decode(action: &str, detail: impl Into<String>) -> Self {
        Error::Decode { action: action.to_owned(), detail: detail.into() }
    }
}

/// The code of [`Error::UnknownHost`].
pub const UNKNOWN_HOST: &str = "EndpointNotFound";

/// True when a resolver error says the name does not exist (as opposed to a resolver that is
/// unreachable or answered "try again", which stays a transient failure).
pub fn is_name_not_found(detail: &str) -> bool {
    const MARKERS: [&str; 4] = [
        "Name or service not known",
        "No address associated with hostname",
        "nodename nor servname provided",
        "Name does not resolve",
    ];
    detail.contains("dns error") && MARKERS.iter().any(|m| detail.contains(m))
}

/// The classification table for upstream answers.
fn classify_upstream(code: &str, status: u16, has_retry_after: bool) -> ErrorKind {
    if is_throttling_code(code) || has_retry_after || status == 429 {
        return ErrorKind::Throttled;
    }
    if code == "SignatureNonceUsed" || code == "ServiceUnavailable" || code == "InternalError" {
        return ErrorKind::Transient;
    }
    if code.starts_with("InvalidParameter")
        || code.starts_with("MissingParameter")
        || code.starts_with("InvalidAction")
        || code == "InvalidVersion"
    {
        return ErrorKind::InvalidInput;
    }
    if code == "NoPermission"
        || code.starts_with("Forbidden")
        || code.starts_with("EntityNotExist")
        || code == "SignatureDoesNotMatch"
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidSecurityToken")
        || code.starts_with("InvalidTimeStamp")
        || code.starts_with("AuthenticationFail")
    {
        return ErrorKind::Denied;
    }
    match status {
        // 407/408/429 come from proxies and gateways on the way, not from the service's verdict.
        500..=599 | 407 | 408 | 429 => ErrorKind::Transient,
        400 => ErrorKind::InvalidInput,
        _ => ErrorKind::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(code: &str, status: u16, retry_after: Option<Duration>) -> Error {
        Error::Upstream {
            action: "AssumeRole".into(),
            status,
            code: code.into(),
            message: "msg".into(),
            request_id: Some("RID-1".into()),
            retry_after,
        }
    }

    #[test]
    fn classification_table() {
        use ErrorKind::*;
        let ms = Some(Duration::from_millis(1500));
        let table: &[(Error, ErrorKind, bool)] = &[
            (upstream("Throttling.Api", 400, None), Throttled, true),
            (upstream("Throttling.User", 403, None), Throttled, true),
            (upstream("Whatever", 400, ms), Throttled, true),
            (upstream("InternalError", 500, None), Transient, true),
            (upstream("Unknown", 503, None), Transient, true),
            (upstream("SignatureNonceUsed", 400, None), Transient, true),
            (upstream("NoPermission", 403, None), Denied, false),
            (upstream("EntityNotExist.Role", 404, None), Denied, false),
            (upstream("SignatureDoesNotMatch", 400, None), Denied, false),
            (upstream("InvalidAccessKeyId.NotFound", 404, None), Denied, false),
            (upstream("InvalidSecurityToken.Expired", 400, None), Denied, false),
            (upstream("InvalidParameter.RoleArn", 400, None), InvalidInput, false),
            (upstream("InvalidParameter", 400, None), InvalidInput, false),
            (upstream("SomethingElse", 400, None), InvalidInput, false),
            (upstream("SomethingElse", 404, None), Denied, false),
            (upstream("INSTANCE_NOT_EXIST", 200, None), Denied, false),
            (Error::Timeout { action: "a".into(), after: Duration::from_secs(5) }, Transient, true),
            (Error::Connect { action: "a".into(), detail: "refused".into() }, Transient, true),
            (Error::decode("a", "Credentials missing"), Malformed, false),
            (Error::InvalidInput("x".into()), InvalidInput, false),
            (Error::NoIdentity("x".into()), Denied, false),
        ];
        for (err, kind, retry) in table {
            assert_eq!(err.kind(), *kind, "{err}");
            assert_eq!(err.is_retryable(), *retry, "{err}");
        }
    }

    #[test]
    fn accessors() {
        let e = upstream("Throttling.Api", 400, Some(Duration::from_millis(250)));
        assert_eq!(e.code(), "Throttling.Api");
        assert_eq!(e.retry_after(), Some(Duration::from_millis(250)));
        assert_eq!(e.request_id(), Some("RID-1"));
        assert_eq!(e.status(), Some(400));
        let t = Error::Timeout { action: "GetAuthorizationToken".into(), after: Duration::from_secs(5) };
        assert_eq!(t.code(), "Timeout");
        assert_eq!(t.status(), None);
        assert_eq!(Error::decode("x", "y").code(), "MalformedResponse");
        assert_eq!(Error::Connect { action: "x".into(), detail: "y".into() }.code(), "ConnectionFailed");
    }

    #[test]
    fn display_names_action_code_message_and_hint() {
        let s = upstream("NoPermission", 403, None).to_string();
        assert!(s.contains("AssumeRole"), "{s}");
        assert!(s.contains("NoPermission"), "{s}");
        assert!(s.contains("msg"), "{s}");
        assert!(s.contains("RID-1"), "{s}");
        assert!(s.contains("sts:AssumeRole"), "{s}");
        let cr = Error::Upstream {
            action: "GetAuthorizationToken".into(),
            status: 403,
            code: "NoPermission".into(),
            message: "m".into(),
            request_id: None,
            retry_after: None,
        }
        .to_string();
        assert!(cr.contains("cr:GetAuthorizationToken on this instance"), "{cr}");
        let s = upstream("EntityNotExist.Role", 404, None).to_string();
        assert!(s.contains("trust policy"), "{s}");
        let s = Error::Timeout { action: "GetAuthorizationToken".into(), after: Duration::from_secs(5) }.to_string();
        assert!(s.contains("GetAuthorizationToken") && s.contains("timed out"), "{s}");
    }
}

#[cfg(test)]
mod unknown_host_tests {
    use super::*;

    #[test]
    fn only_a_name_that_does_not_exist_is_final() {
        let nx = "client error (Connect): dns error: failed to lookup address information: Name or service not known";
        assert!(is_name_not_found(nx));
        let again = "client error (Connect): dns error: failed to lookup address information: Temporary failure in name resolution";
        assert!(!is_name_not_found(again), "a resolver that said 'try again' is transient");
        assert!(!is_name_not_found("connection refused"));
        let e = Error::UnknownHost {
            action: "ListInstance".into(),
            host: "cr.xx-nowhere-9.aliyuncs.com".into(),
            detail: nx.into(),
        };
        assert_eq!((e.code(), e.kind(), e.is_retryable()), (UNKNOWN_HOST, ErrorKind::InvalidInput, false));
        assert!(e.to_string().contains("cr.xx-nowhere-9.aliyuncs.com"), "{e}");
    }
}
