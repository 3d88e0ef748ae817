//! The POP error shape every cloud API returns: `{RequestId, HostId, Code, Message, Recommend}`.

use http::StatusCode;

/// An API failure with the HTTP status, code and message the real service would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Machine-readable code, e.g. `SignatureDoesNotMatch`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Set on throttling: value of the `x-acs-retry-after` header in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with an arbitrary status, code and message.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.to_string(),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    /// 403 `NoPermission`, naming what was refused.
    pub fn no_permission(detail: impl Into<String>) -> Self {
        Self::new(
            403,
            "NoPermission",
            format!("You are not authorized to do this action. You should be authorized by RAM. ({})", detail.into()),
        )
    }

    /// 400 `InvalidParameter.<name>` / `InvalidParameter`.
    pub fn invalid_param(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    /// 400 `MissingParameter` naming the parameter.
    pub fn missing(param: &str) -> Self {
        Self::new(400, &format!("Missing{param}"), format!("{param} is mandatory for this action."))
    }

    /// `Throttling.Api` with a retry-after hint in milliseconds.
    pub fn throttled(retry_after_ms: u64) -> Self {
        let mut e = Self::new(400, "Throttling.Api", "Request was denied due to api flow control.");
        e.retry_after_ms = Some(retry_after_ms.max(1));
        e
    }

    /// 500 `InternalError`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The JSON body for this error.
    pub fn body(&self, request_id: &str, host_id: &str, product: &str) -> serde_json::Value {
        serde_json::json!({
            "RequestId": request_id,
            "HostId": host_id,
            "Code": self.code,
            "Message": self.message,
            "Recommend": format!(
                "https://api.aliyun.com/troubleshoot?q={}&product={}&requestId={}",
                self.code, product, request_id
            ),
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
