//! Test helper: a tiny scripted HTTP/1.1 server on 127.0.0.1:0 that records every request.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{Client, Endpoints, Timeouts, Transport};
use std::time::{Duration, UNIX_EPOCH};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

type Handler = dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync;

/// A running test server; dropping it does not stop the task (the runtime ends with the test).
pub struct TestServer {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    /// Starts a server answering every request with `handler`.
    pub async fn start(handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let seen = seen.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let s = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().map(str::to_owned),
                                headers: parts.headers,
                                body,
                            };
                            let resp = handler(&s);
                            seen.lock().unwrap().push(s);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        TestServer { base: format!("http://{addr}"), seen }
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A response with a status and a body.
pub fn respond(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(body.into())).unwrap()
}

/// A client whose STS, CR (`/region/{region}` prefix) and metadata endpoints all point at `base`,
/// with a manual clock at 2024-01-15T08:30:00Z and no proxy.
pub fn client_for(base: &str) -> Client {
    let clock = crate::clock::ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_705_307_400));
    let endpoints =
        Endpoints { sts: base.to_owned(), cr: format!("{base}/region/{{region}}"), metadata: base.to_owned() };
    let transport = Transport::with_proxy(Timeouts::default(), None).unwrap();
    Client::with_transport(endpoints, transport, clock).unwrap()
}

/// Recomputes the V3 signature from what arrived on the wire, as a server would.
pub fn verify_signature(seen: &Seen, secret: &str) {
    let auth = seen.headers["authorization"].to_str().unwrap();
    let rest = auth.strip_prefix("ACS3-HMAC-SHA256 ").unwrap();
    let mut parts = rest.split(',');
    let _cred = parts.next().unwrap();
    let signed = parts.next().unwrap().strip_prefix("SignedHeaders=").unwrap();
    let sig = parts.next().unwrap().strip_prefix("Signature=").unwrap();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(seen.query.as_deref().unwrap_or("").as_bytes()).into_owned().collect();
    let mut canon = format!("{}\n{}\n{}\n", seen.method, seen.path, crate::aliyun::sign::canonical_query(&query));
    for name in signed.split(';') {
        let v = seen.headers[name].to_str().unwrap();
        canon.push_str(&format!("{name}:{}\n", v.trim()));
    }
    let body_hash = crate::aliyun::sign::hashed_payload(&seen.body);
    assert_eq!(seen.headers["x-acs-content-sha256"], body_hash.as_str());
    canon.push_str(&format!("\n{signed}\n{body_hash}"));
    let sts = format!("ACS3-HMAC-SHA256\n{}", crate::aliyun::sign::hashed_payload(canon.as_bytes()));
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    assert_eq!(data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes()), sig);
    for required in
        ["host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"]
    {
        assert!(signed.split(';').any(|s| s == required), "{required} not signed");
    }
}
