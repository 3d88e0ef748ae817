//! HTTP transport for cloud APIs, the ECS metadata service and the registry token realm.
//!
//! Rules enforced here, in one place: `https://` everywhere except loopback hosts (and the
//! metadata endpoint, which is plain HTTP by nature and asked for explicitly); a timeout over the
//! whole exchange; response bodies capped at [`MAX_BODY`]; `HTTPS_PROXY`/`NO_PROXY` honoured for
//! cloud API calls, never for loopback or metadata. The proxy may itself be `https://` (TLS to
//! the proxy, then TLS to the endpoint inside the tunnel). Server certificates are checked
//! against the compiled-in webpki roots plus an optional PEM bundle (`[aliyun] ca_file`), and a
//! failed check names the host, the step that failed and `ca_file`.

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
use rustls::pki_types::CertificateDer;

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
type Proxied = HyperClient<HttpsConnector<Tunnel<HttpsConnector<HttpConnector>>>, Full<Bytes>>;

/// Root certificates trusted for `https://` calls besides the compiled-in webpki roots.
pub type ExtraRoots = Arc<Vec<CertificateDer<'static>>>;

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
    extra_roots: ExtraRoots,
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
        Transport::with_roots(timeouts, proxy, ExtraRoots::default())
    }

    /// A transport that also trusts `extra_roots` (from [`read_ca_file`]) for `https://` calls,
    /// to the endpoints and to an `https://` proxy alike.
    pub fn with_roots(timeouts: Timeouts, proxy: Option<Matcher>, extra_roots: ExtraRoots) -> Result<Transport, Error> {
        let direct = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https_connector(plain_connector(), &extra_roots)?);
        Ok(Transport { inner: Arc::new(Inner { direct, proxy, proxied: OnceLock::new(), timeouts, extra_roots }) })
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
        let response = sent.map_err(|e| {
            let detail = error_chain(&e);
            if let Some(tls) = tls_failure(&e) {
                let host = uri.host().unwrap_or_default();
                Error::Connect { action: action.to_owned(), detail: explain_tls_failure(host, tls) }
            } else if super::error::is_name_not_found(&detail) {
                let host = uri.host().unwrap_or_default().to_owned();
                Error::UnknownHost { action: action.to_owned(), host, detail }
            } else {
                Error::Connect { action: action.to_owned(), detail }
            }
        })?;
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
            // An `https://` proxy gets TLS first (the same roots); an `http://` one plain TCP.
            let to_proxy = https_connector(plain_connector(), &self.inner.extra_roots)
                .map_err(|e| format!("cannot set up the HTTPS proxy connector: {e}"))?;
            let mut tunnel = Tunnel::new(proxy_uri, to_proxy);
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            https_connector(tunnel, &self.inner.extra_roots)
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

pub(crate) fn https_connector<C>(
    inner: C,
    extra_roots: &[CertificateDer<'static>],
) -> Result<HttpsConnector<C>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| Error::InvalidInput(format!("ca_file: a certificate is not usable as a root: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidInput(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(inner))
}

/// Reads a PEM bundle of root certificates (`[aliyun] ca_file`); an unreadable file, a file
/// without any `CERTIFICATE` block, or a malformed block is an error naming the file.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    use rustls::pki_types::pem::PemObject;
    let shown = path.display();
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { context: format!("reading ca_file {shown}"), source })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidInput(format!("ca_file {shown}: not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(format!("ca_file {shown}: no -----BEGIN CERTIFICATE----- block found")));
    }
    Ok(certs)
}

/// The rustls error behind a failed connection, when the failure was the TLS handshake.
fn tls_failure<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // A custom io::Error hides its payload from `source()` (and may wrap another one).
        next = match err.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    None
}

/// One sentence for an operator: which host, which verification step failed, what to do.
pub(crate) fn explain_tls_failure(host: &str, e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let step = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "the certificate chain does not lead to a trusted root (unknown issuer)",
            C::NotValidForName | C::NotValidForNameContext { .. } => "the certificate is not valid for this host name",
            C::Expired | C::ExpiredContext { .. } => "the certificate has expired (or this node's clock is wrong)",
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the certificate is not valid yet (or this node's clock is wrong)"
            }
            C::Revoked => "the certificate is revoked",
            C::BadSignature => "a signature in the certificate chain does not verify",
            C::BadEncoding => "the certificate cannot be decoded",
            _ => "the server certificate was rejected",
        },
        _ => "the TLS handshake failed",
    };
    format!(
        "TLS to {host} failed: {step} ({e}); if a TLS-inspecting proxy or a private CA signs this endpoint, \
         add its CA bundle with [aliyun] ca_file = \"/path/to/ca.pem\""
    )
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
