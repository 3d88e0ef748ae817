//! Helpers for the fault tests: a daemon and emulator on one manual clock, requests with
//! annotations, and the checks every fault answer must pass.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::support::*;

/// The cross-account registry (service role, then user role).
pub const CROSS: &str = "partner-registry.cn-beijing.cr.aliyuncs.com";
/// The node account's Enterprise instance in the default region.
pub const DEMO_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";
/// The node account's Enterprise instance in another region.
pub const NORTH_HOST: &str = "north-registry.cn-beijing.cr.aliyuncs.com";
/// The node account's Personal registry in the default region.
pub const PERSONAL_HOST: &str = "registry.cn-hangzhou.aliyuncs.com";

/// One credential key as the caller names it: a host and its annotations.
#[derive(Debug, Clone)]
pub struct Key {
    /// Registry host.
    pub host: &'static str,
    /// Annotations sent with it.
    pub annotations: Value,
}

impl Key {
    /// Node identity, no annotations.
    pub fn node(host: &'static str) -> Key {
        Key { host, annotations: json!({}) }
    }

    /// Through the service role only.
    pub fn via_service(host: &'static str) -> Key {
        Key { host, annotations: json!({ SERVICE_ARNS: SERVICE_ROLE }) }
    }

    /// Through the service role, then the partner's user role.
    pub fn cross() -> Key {
        Key { host: CROSS, annotations: json!({ SERVICE_ARNS: SERVICE_ROLE, USER_ARNS: USER_ROLE }) }
    }
}

/// An answer: status, body, headers, and how long it took.
pub type Reply = (u16, Value, http::HeaderMap, Duration);

/// `POST /v1/credentials` for `key` on `socket`.
pub async fn ask_on(socket: &std::path::Path, key: &Key) -> Reply {
    let started = tokio::time::Instant::now();
    let body = json!({"registry": key.host, "annotations": key.annotations});
    let (s, v, h) = request_on(socket, "POST", "/v1/credentials", Some(body)).await;
    (s, v, h, started.elapsed())
}

/// `POST /v1/credentials` for `key`.
pub async fn ask(h: &Harness, key: &Key) -> Reply {
    ask_on(&h.socket, key).await
}

/// Starts the emulator and the daemon on the system clock, waiting until the daemon is ready.
pub async fn on_system_clock(extra: &str) -> Harness {
    let h = Harness::start(broker_world(), extra).await;
    wait_ready(&h, Duration::from_secs(10)).await;
    h
}

/// The `expires_at` of a 200 answer.
pub fn expiry(v: &Value) -> SystemTime {
    acr_broker::clock::parse_rfc3339(v["expires_at"].as_str().expect("expires_at")).expect("rfc3339")
}

/// Checks a 200: a password, and an expiry after `now`. Returns the expiry.
pub fn assert_fresh(reply: &Reply, now: SystemTime) -> SystemTime {
    let (s, v, _, _) = reply;
    assert_eq!(*s, 200, "expected a credential: {v}");
    assert!(v["password"].as_str().is_some_and(|p| !p.is_empty()), "no password: {v}");
    let exp = expiry(v);
    assert!(exp > now, "served a credential expiring at {exp:?}, now {now:?}: {v}");
    exp
}

/// Checks a clean upstream failure: 502 or 503, a `Retry-After` of at least one second, a JSON
/// error code and message, and no credential in the body. Returns the code.
pub fn assert_clean_error(reply: &Reply) -> String {
    let (s, v, hdr, _) = reply;
    assert!(*s == 502 || *s == 503, "expected 502/503, got {s}: {v}");
    let retry = hdr
        .get("retry-after")
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{s} without a numeric Retry-After: {hdr:?}"));
    assert!(retry >= 1, "Retry-After {retry}");
    assert!(v.get("password").is_none() && v.get("username").is_none(), "an error carried a credential: {v}");
    let code = v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {v}")).to_owned();
    assert!(!code.is_empty(), "empty error code: {v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no error message: {v}");
    code
}

/// Asks `key` every 100 ms of real time until it answers 200 (panics after `limit`); returns
/// the answer and how long recovery took.
pub async fn until_served(h: &Harness, key: &Key, limit: Duration) -> (Reply, Duration) {
    let started = tokio::time::Instant::now();
    loop {
        let r = ask(h, key).await;
        if r.0 == 200 {
            return (r, started.elapsed());
        }
        assert_clean_error(&r);
        assert!(started.elapsed() < limit, "{} not served again within {limit:?}: {}", key.host, r.1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/healthz` answers: the daemon is alive and serving.
pub async fn assert_alive(h: &Harness) {
    let (s, v, _) = h.request("GET", "/healthz", None).await;
    assert_eq!(s, 200, "{v}");
}
