//! Run-time fault and lifetime knobs, and the per-account AssumeRole token bucket.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Default AssumeRole rate per account (requests per second): 100, the real STS quota.
pub const DEFAULT_ASSUME_ROLE_RATE: f64 = 100.0;
/// Default AssumeRole burst per account: 100 requests.
pub const DEFAULT_ASSUME_ROLE_BURST: f64 = 100.0;

/// Largest lifetime knob: 10 years in seconds.
pub const MAX_LIFETIME: u64 = 315_360_000;

/// One injected failure: with probability `rate`, answer `status` + `code` instead of serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorInjection {
    /// Error code to return, e.g. `InternalError` or `ServiceUnavailable`.
    pub code: String,
    /// HTTP status (400..=599).
    pub status: u16,
    /// Probability in `0.0..=1.0` that a call fails.
    #[serde(default = "one")]
    pub rate: f64,
    /// Error message; a generic one when omitted.
    #[serde(default)]
    pub message: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// How a "down" metadata service fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetadataDownMode {
    /// Answer HTTP 503.
    #[default]
    Status,
    /// Close the connection without an answer.
    Close,
}

/// Emulator knobs: set in the world file's `[knobs]`, or at run time (`Emulator::set_knobs`,
/// `POST /__admin/knobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Extra delay before every cloud/metadata/realm answer, in milliseconds.
    pub latency_ms: u64,
    /// Error injection by action name (see the counter names).
    pub errors: BTreeMap<String, ErrorInjection>,
    /// Throttle every cloud API call (STS, ACR) with `Throttling.Api`.
    pub throttle_all: bool,
    /// AssumeRole token-bucket refill rate per account, requests/second (default 100).
    pub assume_role_rate: f64,
    /// AssumeRole token-bucket size per account (default 100).
    pub assume_role_burst: f64,
    /// Cap on the lifetime of issued STS sessions (AssumeRole, OIDC, metadata), seconds.
    pub sts_lifetime_seconds: Option<u64>,
    /// Lifetime of ACR temporary passwords, seconds (default: `ExpiresInHours`, else 3600).
    pub acr_lifetime_seconds: Option<u64>,
    /// Make the metadata service unavailable.
    pub metadata_down: bool,
    /// How the metadata service fails while `metadata_down` (`status` = 503, `close`).
    pub metadata_down_mode: MetadataDownMode,
    /// Actions whose successful answers carry truncated (malformed) JSON.
    pub malformed_json: Vec<String>,
    /// Require the hardened-mode metadata token on metadata GETs.
    pub require_metadata_token: bool,
    /// Long-term AccessKeyIds that are disabled (answered `InvalidAccessKeyId.Inactive`), as
    /// after a key rotation.
    pub disabled_access_keys: Vec<String>,
    /// The realm refuses ACR passwords issued before this time (epoch milliseconds), as when a
    /// password is revoked while it has not yet expired.
    pub acr_revoked_before_ms: Option<u64>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency_ms: 0,
            errors: BTreeMap::new(),
            throttle_all: false,
            assume_role_rate: DEFAULT_ASSUME_ROLE_RATE,
            assume_role_burst: DEFAULT_ASSUME_ROLE_BURST,
            sts_lifetime_seconds: None,
            acr_lifetime_seconds: None,
            metadata_down: false,
            metadata_down_mode: MetadataDownMode::Status,
            malformed_json: Vec::new(),
            require_metadata_token: false,
            disabled_access_keys: Vec::new(),
            acr_revoked_before_ms: None,
        }
    }
}

impl Knobs {
    /// Checks every value, naming the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.latency_ms > 60_000 {
            return Err(format!("latency_ms={} is above 60000", self.latency_ms));
        }
        for (action, e) in &self.errors {
            if !(0.0..=1.0).contains(&e.rate) {
                return Err(format!("errors.{action}.rate={} is not in 0..1", e.rate));
            }
            if !(400..=599).contains(&e.status) {
                return Err(format!("errors.{action}.status={} is not in 400..599", e.status));
            }
            if e.code.is_empty() {
                return Err(format!("errors.{action}.code is empty"));
            }
        }
        if !(self.assume_role_rate > 0.0 && self.assume_role_rate.is_finite()) {
            return Err(format!("assume_role_rate={} must be > 0", self.assume_role_rate));
        }
        if !(self.assume_role_burst >= 1.0 && self.assume_role_burst.is_finite()) {
            return Err(format!("assume_role_burst={} must be >= 1", self.assume_role_burst));
        }
        for (name, v) in
            [("sts_lifetime_seconds", self.sts_lifetime_seconds), ("acr_lifetime_seconds", self.acr_lifetime_seconds)]
        {
            if let Some(v) = v {
                if !(1..=MAX_LIFETIME).contains(&v) {
                    return Err(format!("{name}={v} is not in 1..{MAX_LIFETIME}"));
                }
            }
        }
        Ok(())
    }

    /// Applies the fields present in the JSON object `patch` on top of `self` (others kept).
    pub fn merged(&self, patch: &serde_json::Value) -> Result<Knobs, String> {
        let obj = patch.as_object().ok_or("knobs must be a JSON object")?;
        let mut base = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let Some(map) = base.as_object_mut() {
            for (k, v) in obj {
                if !map.contains_key(k) {
                    return Err(format!("unknown knob {k:?}"));
                }
                map.insert(k.clone(), v.clone());
            }
        }
        let knobs: Knobs = serde_json::from_value(base).map_err(|e| e.to_string())?;
        knobs.validate()?;
        Ok(knobs)
    }
}

/// Per-key token buckets (the key is the caller's account id).
#[derive(Debug, Default)]
pub struct Buckets {
    buckets: HashMap<String, (f64, SystemTime)>,
}

impl Buckets {
    /// Takes one token for `key`; `Err(ms)` with the wait until a token is available.
    pub fn take(&mut self, key: &str, rate: f64, burst: f64, now: SystemTime) -> Result<(), u64> {
        let entry = self.buckets.entry(key.to_string()).or_insert((burst, now));
        let elapsed = now.duration_since(entry.1).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        entry.0 = (entry.0 + elapsed * rate).min(burst);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - entry.0) / rate * 1000.0).ceil();
            Err(if wait.is_finite() && wait >= 1.0 { wait as u64 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn bucket_allows_burst_then_throttles_then_refills() {
        let mut b = Buckets::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        assert!(b.take("a", 1.0, 2.0, t0).is_ok());
        assert!(b.take("a", 1.0, 2.0, t0).is_ok());
        let wait = b.take("a", 1.0, 2.0, t0).unwrap_err();
        assert_eq!(wait, 1000);
        assert!(b.take("b", 1.0, 2.0, t0).is_ok(), "buckets are per key");
        assert!(b.take("a", 1.0, 2.0, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn merge_keeps_unmentioned_fields_and_rejects_unknown() {
        let k = Knobs { latency_ms: 5, ..Knobs::default() };
        let m = k.merged(&serde_json::json!({"throttle_all": true})).unwrap();
        assert!(m.throttle_all);
        assert_eq!(m.latency_ms, 5);
        assert!(k.merged(&serde_json::json!({"nope": 1})).is_err());
        let bad = serde_json::json!({"errors": {"AssumeRole": {"code": "X", "status": 500, "rate": 2.0}}});
        assert!(k.merged(&bad).is_err());
    }
}
