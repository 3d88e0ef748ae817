//! The API client: endpoints, and the two ways a call is sent (V3-signed, anonymous RPC).
//!
//! The typed actions live in `sts.rs` and `cr.rs`; this file only builds URLs, signs, sends
//! and turns non-2xx answers into [`Error::Upstream`].

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use serde_json::Value;

use super::sign::{self, SignInput};
use super::transport::{self, Route};
use super::{wire, Credentials, Error, Timeouts, Transport};
use crate::clock::SharedClock;

/// `user-agent` sent on every cloud API call (not signed, as in the Go SDK).
const USER_AGENT: &str = concat!("acr-broker/", env!("CARGO_PKG_VERSION"));

/// Where the cloud APIs are. Loopback `http://` URLs are allowed for tests and the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// STS base URL, e.g. `https://sts.aliyuncs.com`.
    pub sts: String,
    /// CR base URL template with an optional `{region}`, e.g. `https://cr.{region}.aliyuncs.com`.
    /// May carry a path prefix (`http://127.0.0.1:9000/region/{region}`).
    pub cr: String,
    /// ECS metadata base URL, `http://100.100.100.200`; `/latest/...` is appended.
    pub metadata: String,
}

impl Default for Endpoints {
    /// The public Alibaba Cloud endpoints.
    fn default() -> Self {
        Endpoints {
            sts: "https://sts.aliyuncs.com".to_owned(),
            cr: "https://cr.{region}.aliyuncs.com".to_owned(),
            metadata: "http://100.100.100.200".to_owned(),
        }
    }
}

impl Endpoints {
    /// The CR base URL for `region` (`{region}` substituted).
    pub fn cr_for(&self, region: &str) -> String {
        self.cr.replace("{region}", region)
    }
}

/// Checks a region id before it goes into a URL: 1–64 of `[a-z0-9-]`.
pub(crate) fn validate_region(region: &str) -> Result<(), Error> {
    let ok = !region.is_empty()
        && region.len() <= 64
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("region {region:?} is not a valid region id (expected e.g. cn-hangzhou)")))
    }
}

/// Alibaba Cloud API client (STS, ACR); cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Endpoints,
    transport: Transport,
    clock: SharedClock,
}

/// One V3-signed call.
pub(crate) struct SignedCall<'a> {
    /// Base URL (already region-substituted), possibly with a path prefix.
    pub base: &'a str,
    /// `POST` for RPC actions, `GET` for `/tokens`.
    pub method: Method,
    /// Path appended to the base (`/`, `/tokens`).
    pub path: &'a str,
    /// Query parameters (unencoded).
    pub query: Vec<(String, String)>,
    /// `x-acs-action`.
    pub action: &'static str,
    /// `x-acs-version`.
    pub version: &'static str,
}

impl Client {
    /// A client with its own transport (proxy settings read from the environment).
    /// Endpoint URLs are checked here: https, or http only for loopback (metadata excepted).
    pub fn new(endpoints: Endpoints, timeouts: Timeouts, clock: SharedClock) -> Result<Client, Error> {
        Client::with_transport(endpoints, Transport::new(timeouts)?, clock)
    }

    /// A client over a given transport (tests pass one without proxy settings).
    pub fn with_transport(endpoints: Endpoints, transport: Transport, clock: SharedClock) -> Result<Client, Error> {
        transport::check_url(&endpoints.sts, Route::Api)?;
        transport::check_url(&endpoints.cr_for("cn-hangzhou"), Route::Api)?;
        transport::check_url(&endpoints.metadata, Route::Metadata)?;
        Ok(Client { inner: Arc::new(Inner { endpoints, transport, clock }) })
    }

    /// The shared transport (the broker reuses it for the registry token realm).
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// The clock used for `x-acs-date` and timestamps.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Sends a V3-signed call and returns the parsed JSON body of a 2xx answer.
    pub(crate) async fn call_signed(&self, caller: &Credentials, call: SignedCall<'_>) -> Result<(u16, Value), Error> {
        let query_string = sign::canonical_query(&call.query);
        let url = join_url(call.base, call.path, &query_string);
        let uri = transport::check_url(&url, Route::Api)?;
        let host = transport::authority_of(&uri)?.to_owned();
        let date = sign::format_date(self.inner.clock.now());
        let nonce = sign::new_nonce();
        let method = call.method.as_str().to_owned();
        let input = SignInput {
            method: &method,
            host: &host,
            path: uri.path(),
            query: &call.query,
            body: b"",
            content_type: None,
            action: call.action,
            version: call.version,
            date: &date,
            nonce: &nonce,
        };
        let mut headers = Vec::new();
        for (name, value) in sign::sign(&input, caller) {
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| Error::InvalidInput(format!("{}: header {name} has an invalid value", call.action)))?;
            if name == "x-acs-security-token" || name == "authorization" {
                v.set_sensitive(true);
            }
            headers.push((HeaderName::from_static(name), v));
        }
        push_common_headers(&mut headers);
        let resp =
            self.inner.transport.execute(call.method, &uri, headers, Bytes::new(), call.action, Route::Api).await?;
        finish(call.action, resp, Some(caller))
    }

    /// Sends an unsigned (anonymous) legacy-RPC call: common parameters in the query, business
    /// parameters in a form body. Used only for `AssumeRoleWithOIDC` (§2.6).
    pub(crate) async fn call_anonymous_rpc(
        &self,
        base: &str,
        action: &'static str,
        version: &'static str,
        form: &[(&str, &str)],
    ) -> Result<(u16, Value), Error> {
        let query = vec![
            ("Action".to_owned(), action.to_owned()),
            ("Format".to_owned(), "json".to_owned()),
            ("Version".to_owned(), version.to_owned()),
            ("Timestamp".to_owned(), sign::format_date(self.inner.clock.now())),
            ("SignatureNonce".to_owned(), sign::new_nonce()),
        ];
        let url = join_url(base, "/", &sign::canonical_query(&query));
        let uri = transport::check_url(&url, Route::Api)?;
        let host = transport::authority_of(&uri)?.to_owned();
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter()).finish();
        // No x-acs-* headers: the action travels in the query, and an x-acs-version header would
        // make a server treat the call as a V3 request needing a signature.
        let mut headers = transport::to_header_list(&[
            ("host", host),
            ("content-type", "application/x-www-form-urlencoded".to_owned()),
        ])?;
        push_common_headers(&mut headers);
        let resp =
            self.inner.transport.execute(Method::POST, &uri, headers, Bytes::from(body), action, Route::Api).await?;
        finish(action, resp, None)
    }
}

fn push_common_headers(headers: &mut Vec<(HeaderName, HeaderValue)>) {
    headers.push((http::header::ACCEPT, HeaderValue::from_static("application/json")));
    headers.push((http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT)));
}

/// `base` (trailing `/` dropped) + `path` + `?query` when the query is not empty.
pub(crate) fn join_url(base: &str, path: &str, query: &str) -> String {
    let mut url = format!("{}{path}", base.trim_end_matches('/'));
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Turns an answer into JSON (2xx) or an [`Error::Upstream`], scrubbing the caller's secrets
/// from upstream messages in case a service echoes them.
fn finish(action: &str, resp: super::HttpResponse, caller: Option<&Credentials>) -> Result<(u16, Value), Error> {
    if !(200..300).contains(&resp.status) {
        let mut err = wire::upstream_error(action, resp.status, &resp.headers, &resp.body);
        if let (Error::Upstream { message, .. }, Some(c)) = (&mut err, caller) {
            scrub(message, c.access_key_secret.expose_secret());
            if let Some(t) = &c.security_token {
                scrub(message, t.expose_secret());
            }
        }
        return Err(err);
    }
    Ok((resp.status, wire::parse_json(action, &resp.body)?))
}

fn scrub(message: &mut String, secret: &str) {
    if secret.len() >= 4 && message.contains(secret) {
        *message = message.replace(secret, "** redacted **");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr_for_substitutes_region_and_keeps_prefix() {
        let e = Endpoints { cr: "http://127.0.0.1:9000/region/{region}".into(), ..Endpoints::default() };
        assert_eq!(e.cr_for("cn-beijing"), "http://127.0.0.1:9000/region/cn-beijing");
        assert_eq!(Endpoints::default().cr_for("cn-hangzhou"), "https://cr.cn-hangzhou.aliyuncs.com");
        let fixed = Endpoints { cr: "https://cr.example.com".into(), ..Endpoints::default() };
        assert_eq!(fixed.cr_for("cn-beijing"), "https://cr.example.com");
    }

    #[test]
    fn join_url_handles_slashes_and_query() {
        assert_eq!(join_url("https://a/", "/", ""), "https://a/");
        assert_eq!(join_url("https://a", "/tokens", ""), "https://a/tokens");
        assert_eq!(join_url("http://127.0.0.1:1/region/cn-x/", "/", "A=1"), "http://127.0.0.1:1/region/cn-x/?A=1");
    }

    #[test]
    fn region_validation() {
        assert!(validate_region("cn-hangzhou").is_ok());
        assert!(validate_region("ap-southeast-1").is_ok());
        for bad in ["", "cn hangzhou", "cn/x", "CN-HANGZHOU", "evil.com#", &"a".repeat(65)] {
            assert!(validate_region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_refuses_plain_http_to_remote_endpoints() {
        let t = Transport::with_proxy(Timeouts::default(), None).unwrap();
        let bad = Endpoints { sts: "http://sts.aliyuncs.com".into(), ..Endpoints::default() };
        let e = Client::with_transport(bad, t.clone(), crate::clock::system()).unwrap_err();
        assert_eq!(e.kind(), super::super::ErrorKind::InvalidInput);
        assert!(Client::with_transport(Endpoints::default(), t, crate::clock::system()).is_ok());
    }

    #[test]
    fn scrub_removes_echoed_secrets() {
        let mut m = "server string to sign is: ...SecurityToken=CAIS-abc...".to_owned();
        scrub(&mut m, "CAIS-abc");
        assert!(!m.contains("CAIS-abc"));
    }
}
