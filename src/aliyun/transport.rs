//! HTTP transport for cloud APIs, the ECS metadata service and the registry token realm.
//!
//! Rules enforced here, in one place: `https://` everywhere except loopback hosts (and the
//! metadata endpoint, which is plain HTTP by nature and asked for explicitly); a timeout over the
//! whole exchange; response bodies capped at [`MAX_BODY`]; `HTTPS_PROXY`/`NO_PROXY` honoured for
//! cloud API calls, never for loopback or metadata.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioExecutor;

use super::Error;

/// Largest response body accepted; a larger one is an error, not a truncation.
pub const MAX_BODY: usize = 1 << 20;

/// Per-call timeouts, each over the whole exchange (connect, send, read the full body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// ECS metadata calls (link-local, should answer at once). Default 1 s.
    pub metadata: Duration,
    /// Cloud API and registry realm calls. Default 5 s.
    pub api: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { metadata: Duration::from_secs(1), api: Duration::from_secs(5) }
    }
}

/// What a call is for, which decides scheme rule, proxying and timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Cloud APIs and the registry realm: https, or http to loopback; may be proxied.
    Api,
    /// The ECS metadata service: plain http allowed to its address; never proxied.
    Metadata,
}

/// A complete answer: status, headers and the whole (capped) body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The full body, at most [`MAX_BODY`] bytes.
    pub body: Bytes,
}

type Direct = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;
type Proxied = HyperClient<HttpsConnector<Tunnel<HttpConnector>>, Full<Bytes>>;

/// Shared HTTP client (connection pools inside); cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    direct: Direct,
    proxy: Option<Matcher>,
    proxied: OnceLock<Result<Proxied, String>>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The matcher's Debug may show proxy credentials; print only whether one is set.
        f.debug_struct("Transport")
            .field("timeouts", &self.inner.timeouts)
            .field("proxy_configured", &self.inner.proxy.is_some())
            .finish()
    }
}

impl Transport {
    /// A transport that reads `HTTPS_PROXY`/`https_proxy`/`NO_PROXY` from the environment.
    pub fn new(timeouts: Timeouts) -> Result<Transport, Error> {
        Transport::with_proxy(timeouts, Some(Matcher::from_env()))
    }

    /// A transport with an explicit proxy matcher (`None`: never proxy). Used by tests.
    pub fn with_proxy(timeouts: Timeouts, proxy: Option<Matcher>) -> Result<Transport, Error> {
        let direct = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https_connector(plain_connector())?);
        Ok(Transport { inner: Arc::new(Inner { direct, proxy, proxied: OnceLock::new(), timeouts }) })
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.inner.timeouts
    }

    /// A GET with the https/loopback rule and the API timeout (used for the registry realm).
    /// Returns status, headers and body whatever the status is.
    pub async fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<(u16, HeaderMap, Bytes), Error> {
        let uri = check_url(url, Route::Api)?;
        let action = format!("GET {}://{}{}", uri.scheme_str().unwrap_or("https"), authority_of(&uri)?, uri.path());
        let headers = to_header_list(headers)?;
        let resp = self.execute(Method::GET, &uri, headers, Bytes::new(), &action, Route::Api).await?;
        Ok((resp.status, resp.headers, resp.body))
    }

    /// Sends one request and reads the whole answer, with the timeout of `route`.
    /// `uri` must come from [`check_url`] for the same route.
    pub(crate) async fn execute(
        &self,
        method: Method,
        uri: &Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        action: &str,
        route: Route,
    ) -> Result<HttpResponse, Error> {
        let after = match route {
            Route::Api => self.inner.timeouts.api,
            Route::Metadata => self.inner.timeouts.metadata,
        };
        let call = self.execute_untimed(method, uri, headers, body, action, route);
        match tokio::time::timeout(after, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout { action: action.to_owned(), after }),
        }
    }

    async fn execute_untimed(
        &self,
        method: Method,
        uri: &Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        action: &str,
        route: Route,
    ) -> Result<HttpResponse, Error> {
        let mut builder = http::Request::builder().method(method).uri(uri.clone());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| Error::InvalidInput(format!("{action}: cannot build request: {e}")))?;
        let sent = match self.proxied_client_for(uri, route) {
            Some(Ok(client)) => client.request(request).await,
            Some(Err(detail)) => return Err(Error::Connect { action: action.to_owned(), detail: detail.clone() }),
            None => self.inner.direct.request(request).await,
        };
        let response = sent.map_err(|e| Error::Connect { action: action.to_owned(), detail: error_chain(&e) })?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::decode(action, format!("response body larger than {MAX_BODY} bytes"))
            } else {
                Error::Connect {
                    action: action.to_owned(),
                    detail: format!("reading response body: {}", error_chain(e.as_ref())),
                }
            }
        })?;
        Ok(HttpResponse { status: parts.status.as_u16(), headers: parts.headers, body: collected.to_bytes() })
    }

    /// The proxied client when this call must go through the proxy, `None` for a direct call.
    fn proxied_client_for(&self, uri: &Uri, route: Route) -> Option<&Result<Proxied, String>> {
        if route != Route::Api || uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return None;
        }
        if uri.host().map(is_loopback_host).unwrap_or(true) {
            return None;
        }
        let intercept = self.inner.proxy.as_ref()?.intercept(uri)?;
        Some(self.inner.proxied.get_or_init(|| {
            let proxy_uri = intercept.uri().clone();
            let mut tunnel = Tunnel::new(proxy_uri, plain_connector());
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            https_connector(tunnel)
                .map(|c| HyperClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(c))
                .map_err(|e| format!("cannot set up the HTTPS proxy connector: {e}"))
        }))
    }
}

pub(crate) fn plain_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http
}

pub(crate) fn https_connector<C>(inner: C) -> Result<HttpsConnector<C>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| Error::InvalidInput(format!("TLS setup failed: {e}")))?;
    Ok(builder.https_or_http().enable_http1().wrap_connector(inner))
}

/// Parses `url` and applies the scheme rule for `route`: https anywhere; http only to loopback
/// hosts (127.0.0.0/8, ::1, localhost), or to any host for the metadata route.
pub(crate) fn check_url(url: &str, route: Route) -> Result<Uri, Error> {
    let uri: Uri = url.parse().map_err(|e| Error::InvalidInput(format!("invalid URL {url:?}: {e}")))?;
    let host =
        uri.host().filter(|h| !h.is_empty()).ok_or_else(|| Error::InvalidInput(format!("URL {url:?} has no host")))?;
    authority_of(&uri)?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if route == Route::Metadata || is_loopback_host(host) => Ok(uri),
        Some("http") => {
            Err(Error::InvalidInput(format!("URL {url:?}: plain http is allowed only for loopback hosts; use https")))
        }
        _ => Err(Error::InvalidInput(format!("URL {url:?}: scheme must be https (or http for loopback)"))),
    }
}

/// The `Host` header value as it goes on the wire (`host[:port]`); user info is refused.
pub(crate) fn authority_of(uri: &Uri) -> Result<&str, Error> {
    let authority = uri.authority().ok_or_else(|| Error::InvalidInput(format!("URL {uri} has no host")))?;
    if authority.as_str().contains('@') {
        return Err(Error::InvalidInput("URLs with user info (user:password@) are not allowed".to_owned()));
    }
    Ok(authority.as_str())
}

/// True for `localhost`, 127.0.0.0/8 and ::1 (with or without IPv6 brackets).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Converts `(name, value)` pairs to typed headers; invalid ones are refused without echoing the
/// value (it may be a credential). Authorization-like values are marked sensitive.
pub(crate) fn to_header_list(headers: &[(&str, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    headers
        .iter()
        .map(|(name, value)| {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::InvalidInput(format!("invalid header name {name:?}")))?;
            let mut v = HeaderValue::from_str(value)
                .map_err(|_| Error::InvalidInput(format!("invalid value for header {name}")))?;
            if n == http::header::AUTHORIZATION || n.as_str().contains("token") {
                v.set_sensitive(true);
            }
            Ok((n, v))
        })
        .collect()
}

/// Display of an error and its sources, joined by `: ` (transport errors hide the cause otherwise).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
