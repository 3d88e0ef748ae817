//! Per-request context handed to the API handlers.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::error::ApiError;
use crate::state::State;

/// What a handler needs to know about the request.
pub struct Ctx<'a> {
    /// Shared state.
    pub state: &'a State,
    /// RequestId of this call.
    pub request_id: String,
    /// Time the request arrived.
    pub now: SystemTime,
    /// Region of an ACR call (Host `cr.<region>.aliyuncs.com` or `/region/<region>` prefix).
    pub region: Option<String>,
    /// Business parameters: query, plus a form body when one was sent.
    pub params: BTreeMap<String, String>,
}

impl Ctx<'_> {
    /// A parameter, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A required parameter (`Missing<Name>` otherwise).
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.param(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::missing(name)),
        }
    }

    /// An optional integer parameter in `range`; `code` names the error.
    pub fn int_param(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
        code: &str,
    ) -> Result<Option<u64>, ApiError> {
        let Some(raw) = self.param(name) else {
            return Ok(None);
        };
        match raw.parse::<u64>() {
            Ok(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::invalid_param(
                code,
                format!("The parameter {name}={raw:?} is not an integer in {}..{}.", range.start(), range.end()),
            )),
        }
    }

    /// The call's region, required for ACR.
    pub fn region(&self) -> Result<&str, ApiError> {
        self.region.as_deref().ok_or_else(|| {
            ApiError::bad_request("InvalidRegionId", "The region of the call is unknown: use Host cr.<region>.aliyuncs.com or a /region/<region> path prefix.")
        })
    }
}
