//! What a handler answers: an HTTP response, or "close the connection without answering".

use serde_json::Value;

use crate::error::ApiError;

/// A handler's answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A normal HTTP response.
    Http {
        /// Status code.
        status: u16,
        /// Extra headers (content-type included).
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// Drop the connection (simulates a dead endpoint).
    Close,
}

impl Reply {
    /// A JSON response.
    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::Http {
            status,
            headers: vec![("content-type".into(), "application/json;charset=utf-8".into())],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, s: &str) -> Reply {
        Reply::Http { status, headers: vec![("content-type".into(), "text/plain".into())], body: s.as_bytes().to_vec() }
    }

    /// A POP error response (with `x-acs-retry-after` when throttled).
    pub fn error(e: &ApiError, request_id: &str, host_id: &str, product: &str) -> Reply {
        let mut r = Reply::json(e.status.as_u16(), &e.body(request_id, host_id, product));
        if let (Some(ms), Reply::Http { headers, .. }) = (e.retry_after_ms, &mut r) {
            headers.push(("x-acs-retry-after".into(), ms.to_string()));
        }
        r
    }

    /// Replaces a successful JSON body by a truncated one (the `malformed_json` knob).
    pub fn malformed(self) -> Reply {
        match self {
            Reply::Http { status, headers, body } if status == 200 => {
                let cut = body.len() / 2;
                Reply::Http { status, headers, body: body[..cut].to_vec() }
            }
            other => other,
        }
    }
}
