//! A scripted stand-in for the daemon, for the shims' unit tests.
//!
//! It listens on a unix socket in a temp dir and serves HTTP/1.1 with hyper on its own thread
//! and current-thread runtime (the client under test builds its own runtime, so the two must
//! not share one). Every request is recorded; the answer comes from a closure.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A request as the fake daemon saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// A scripted answer: status, extra headers, body.
pub(crate) type Reply = (u16, Vec<(&'static str, String)>, String);

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A running fake daemon; stops when dropped.
pub(crate) struct FakeDaemon {
    _dir: Option<tempfile::TempDir>,
    socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeDaemon {
    /// Starts a daemon answering every request with `script`.
    pub fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("broker.sock");
        FakeDaemon::start_at(Some(dir), socket, script)
    }

    /// Starts a daemon that always answers `status` with `body`, on the socket `path`.
    pub fn answering_at(path: &std::path::Path, status: u16, body: &str) -> FakeDaemon {
        let body = body.to_owned();
        FakeDaemon::start_at(None, path.to_path_buf(), move |_| (status, Vec::new(), body.clone()))
    }

    fn start_at(
        dir: Option<tempfile::TempDir>,
        socket: PathBuf,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> FakeDaemon {
        let std_listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let script: Script = Arc::new(script);
        let seen_in = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(serve(std_listener, script, seen_in, stopped));
        });
        FakeDaemon { _dir: dir, socket, seen, stop: Some(stop) }
    }

    /// Starts a daemon that always answers `status` with `body`.
    pub fn answering(status: u16, body: &str) -> FakeDaemon {
        let body = body.to_owned();
        FakeDaemon::start(move |_| (status, Vec::new(), body.clone()))
    }

    /// The socket path to point a client at.
    pub fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(
    std_listener: std::os::unix::net::UnixListener,
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::UnixListener::from_std(std_listener).expect("from_std");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => return,
            },
        };
        let (script, seen) = (script.clone(), seen.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (script, seen) = (script.clone(), seen.clone());
                async move {
                    let method = req.method().to_string();
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let s = Seen { method, path, body: String::from_utf8_lossy(&body).into_owned() };
                    seen.lock().expect("lock").push(s.clone());
                    let (status, headers, body) = script(&s);
                    let mut resp = http::Response::builder().status(status).header("content-type", "application/json");
                    for (k, v) in headers {
                        resp = resp.header(k, v);
                    }
                    Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).expect("response"))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
