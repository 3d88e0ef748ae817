//! Request routing: admin, ECS metadata, registry realm, V3 cloud APIs, anonymous OIDC.
//! Applies the knobs (latency, injected errors, throttling, malformed JSON) and counts calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use rand::Rng;

use crate::auth::{self, SignedParts};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::reply::Reply;
use crate::state::State;
use crate::world::arn::is_region;
use crate::{admin, cr, metadata, oidc, realm, sts};

/// A fully read request.
#[derive(Debug)]
pub struct Incoming {
    /// Method.
    pub method: Method,
    /// Path as sent.
    pub path: String,
    /// Raw query string.
    pub raw_query: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Splits a `/region/<region>` prefix off the path.
fn split_region(path: &str) -> Result<(Option<String>, String), Reply> {
    let Some(rest) = path.strip_prefix("/region/") else {
        return Ok((None, path.to_string()));
    };
    let (region, inner) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !is_region(region) {
        return Err(Reply::text(404, "unknown region prefix"));
    }
    Ok((Some(region.to_string()), inner.to_string()))
}

/// Region from a Host header `cr.<region>.aliyuncs.com` / `cr-vpc.<region>.aliyuncs.com`.
fn region_from_host(headers: &HeaderMap) -> Option<String> {
    let host = header(headers, "host")?.split(':').next()?;
    let rest = host.strip_prefix("cr.").or_else(|| host.strip_prefix("cr-vpc."))?;
    let region = rest.strip_suffix(".aliyuncs.com")?;
    is_region(region).then(|| region.to_string())
}

/// Business parameters: query plus an `application/x-www-form-urlencoded` body.
fn params(req: &Incoming) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = form_urlencoded::parse(req.raw_query.as_deref().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let is_form = header(&req.headers, "content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if is_form {
        out.extend(form_urlencoded::parse(&req.body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    }
    out
}

/// Injected error or global throttling for `action`, if the knobs say so.
fn injected(state: &State, action: &str, throttle: bool) -> Option<ApiError> {
    let knobs = state.knobs();
    if let Some(e) = knobs.errors.get(action) {
        if e.rate >= 1.0 || rand::thread_rng().gen::<f64>() < e.rate {
            let msg = e.message.clone().unwrap_or_else(|| format!("Injected {} for {action}.", e.code));
            return Some(ApiError::new(e.status, &e.code, msg));
        }
    }
    (throttle && knobs.throttle_all).then(|| ApiError::throttled(1000))
}

/// Waits `latency`, precisely: tokio's timer wheels wake up to a millisecond or two late, which
/// over a chain of calls would be charged to the broker. The timer sleeps until 2 ms before the
/// deadline and a blocking-pool thread sleeps the rest (the OS timer is precise to microseconds).
async fn delay(latency: Duration) {
    let deadline = std::time::Instant::now() + latency;
    if let Some(coarse) = latency.checked_sub(Duration::from_millis(2)) {
        tokio::time::sleep(coarse).await;
    }
    let rest = deadline.saturating_duration_since(std::time::Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// Serves one request.
pub async fn handle(state: Arc<State>, req: Incoming) -> Reply {
    if req.path.starts_with("/__admin/") {
        return admin::handle(&state, &req);
    }
    let latency = state.knobs().latency_ms;
    if latency > 0 {
        delay(Duration::from_millis(latency)).await;
    }
    let (prefix_region, inner) = match split_region(&req.path) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if inner.starts_with("/latest/") {
        return handle_metadata(&state, &req, &inner);
    }
    if inner == "/auth" && req.method == Method::GET {
        state.count("RegistryToken");
        if let Some(e) = injected(&state, "RegistryToken", false) {
            return Reply::error(&e, &crate::util::request_id(), "dockerauth", "cr");
        }
        return realm::token(&state, req.raw_query.as_deref(), &req.headers);
    }
    let region = prefix_region.or_else(|| region_from_host(&req.headers));
    if header(&req.headers, "x-acs-version").is_some() {
        return handle_v3(&state, &req, &inner, region);
    }
    let p = params(&req);
    if p.get("Action").map(String::as_str) == Some("AssumeRoleWithOIDC") {
        return handle_oidc(&state, &req, p);
    }
    Reply::text(404, "no such endpoint")
}

fn finish(
    state: &State,
    action: &str,
    result: Result<serde_json::Value, ApiError>,
    rid: &str,
    host: &str,
    product: &str,
) -> Reply {
    match result {
        Ok(v) => {
            let r = Reply::json(200, &v);
            if state.knobs().malformed_json.iter().any(|a| a == action) {
                r.malformed()
            } else {
                r
            }
        }
        Err(e) => Reply::error(&e, rid, host, product),
    }
}

fn handle_v3(state: &State, req: &Incoming, inner: &str, region: Option<String>) -> Reply {
    let rid = crate::util::request_id();
    let host = header(&req.headers, "host").unwrap_or("aliyuncs.com").to_string();
    let version = header(&req.headers, "x-acs-version").unwrap_or("");
    let action = header(&req.headers, "x-acs-action").unwrap_or("");
    let rpc = inner == "/" && (req.method == Method::POST || req.method == Method::GET);
    let (product, name) = match (version, action) {
        ("2015-04-01", "AssumeRole") if rpc => ("Sts", "AssumeRole"),
        ("2018-12-01", "GetAuthorizationToken" | "ListInstance" | "ListInstanceEndpoint") if rpc => ("cr", action),
        ("2016-06-07", "GetAuthorizationToken") if inner == "/tokens" && req.method == Method::GET => {
            ("cr", "PersonalGetAuthorizationToken")
        }
        ("2015-04-01" | "2018-12-01" | "2016-06-07", _) => {
            let e = ApiError::new(
                404,
                "InvalidAction.NotFound",
                format!("Specified api {action:?} is not found (method {}, path {inner}).", req.method),
            );
            return Reply::error(&e, &rid, &host, "Sts");
        }
        _ => {
            let e = ApiError::bad_request(
                "InvalidVersion",
                format!("Specified parameter Version={version:?} is not valid."),
            );
            return Reply::error(&e, &rid, &host, "Sts");
        }
    };
    state.count(name);
    if let Some(e) = injected(state, name, true) {
        return Reply::error(&e, &rid, &host, product);
    }
    let parts = SignedParts {
        method: req.method.as_str(),
        path: &req.path,
        raw_query: req.raw_query.as_deref(),
        headers: &req.headers,
        body: &req.body,
    };
    let caller = match auth::authenticate(state, &parts) {
        Ok(c) => c,
        Err(e) => return Reply::error(&e, &rid, &host, product),
    };
    let ctx = Ctx { state, request_id: rid.clone(), now: state.now(), region, params: params(req) };
    let result = match name {
        "AssumeRole" => sts::assume_role(&ctx, &caller),
        "GetAuthorizationToken" => cr::get_authorization_token(&ctx, &caller),
        "ListInstance" => cr::list_instance(&ctx, &caller),
        "ListInstanceEndpoint" => cr::list_instance_endpoint(&ctx, &caller),
        _ => cr::personal_token(&ctx, &caller),
    };
    finish(state, name, result, &rid, &host, product)
}

fn handle_oidc(state: &State, req: &Incoming, params: BTreeMap<String, String>) -> Reply {
    let rid = crate::util::request_id();
    let host = header(&req.headers, "host").unwrap_or("sts.aliyuncs.com").to_string();
    let name = "AssumeRoleWithOIDC";
    state.count(name);
    if let Some(e) = injected(state, name, true) {
        return Reply::error(&e, &rid, &host, "Sts");
    }
    if req.method != Method::POST && req.method != Method::GET {
        return Reply::error(&ApiError::new(405, "UnsupportedHTTPMethod", "Use GET or POST."), &rid, &host, "Sts");
    }
    let ctx = Ctx { state, request_id: rid.clone(), now: state.now(), region: None, params };
    finish(state, name, oidc::assume_role_with_oidc(&ctx), &rid, &host, "Sts")
}

fn handle_metadata(state: &State, req: &Incoming, inner: &str) -> Reply {
    const CREDS: &str = "/latest/meta-data/ram/security-credentials/";
    let action = match (&req.method, inner) {
        (&Method::PUT, "/latest/api/token") => "MetadataToken",
        (&Method::GET, CREDS) => "MetadataRoleList",
        (&Method::GET, p) if p.starts_with(CREDS) => "MetadataCredentials",
        _ => return Reply::text(404, "Not Found"),
    };
    state.count(action);
    let knobs = state.knobs();
    if knobs.metadata_down {
        return match knobs.metadata_down_mode {
            crate::knobs::MetadataDownMode::Status => Reply::text(503, "Service Unavailable"),
            crate::knobs::MetadataDownMode::Close => Reply::Close,
        };
    }
    if let Some(e) = injected(state, action, false) {
        return Reply::text(e.status.as_u16(), &e.message);
    }
    if action == "MetadataToken" {
        return metadata::put_token(state, &req.headers);
    }
    if let Err(r) = metadata::check_token(state, &req.headers) {
        return r;
    }
    match inner.strip_prefix(CREDS) {
        Some("") | None => metadata::list_roles(state),
        Some(role) => metadata::credentials(state, role),
    }
}
