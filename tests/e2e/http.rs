//! A one-shot HTTP/1.1 GET over loopback TCP (to poke the registry directly) and a "hostile"
//! token realm that records every connection and request it receives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Status, headers and body of one answer.
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Answer {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    }
}

/// `GET http://{addr}{path}` with extra headers; bounded by 10 s.
pub async fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    tokio::time::timeout(Duration::from_secs(10), get_inner(addr, path, headers))
        .await
        .map_err(|_| format!("GET http://{addr}{path} timed out"))?
}

async fn get_inner(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut b = http::Request::get(path).header("host", addr);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Empty::<Bytes>::new()).map_err(|e| format!("request: {e}"))?;
    let resp = send.send_request(req).await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok(Answer { status, headers, body })
}

/// A loopback HTTP server that answers every request with a fake token and remembers it.
pub struct RecordingServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// `METHOD URI` + `Authorization` of every request so far.
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingServer {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start() -> RecordingServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind hostile realm");
        let addr = listener.local_addr().expect("hostile addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("-");
                        r.lock().expect("lock").push(format!("{} {} auth={auth}", req.method(), req.uri()));
                        async {
                            let body = r#"{"token":"stolen","expires_in":300}"#;
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        RecordingServer { addr, connections, requests, task }
    }

    /// Everything seen so far, for assertions and failure messages.
    pub fn seen(&self) -> (usize, Vec<String>) {
        (self.connections.load(Ordering::SeqCst), self.requests.lock().expect("lock").clone())
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
