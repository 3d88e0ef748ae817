//! The socket client the runtime-facing shims share (docker helper, kubelet plugin, `get`).
//!
//! One call is one HTTP/1.1 request over one fresh unix-socket connection, blocking, with no
//! async runtime and no HTTP client stack: a credential helper is exec'd once per pull, so its
//! whole life must cost little more than a process spawn (BENCHMARKS.md, helper at the floor).
//! The answer is typed ([`Answer`]); a daemon that cannot be reached is a [`ClientError`] whose
//! message says which socket was tried and what to check.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::secret::Secret;

#[cfg(test)]
pub(crate) mod fake_daemon;

/// Environment variable that names the daemon socket (`ACR_BROKER_SOCKET`).
pub const SOCKET_ENV: &str = "ACR_BROKER_SOCKET";

/// Where the daemon listens when `ACR_BROKER_SOCKET` is unset: `/run/acr-broker/broker.sock`.
pub const DEFAULT_SOCKET_PATH: &str = "/run/acr-broker/broker.sock";

/// Default time for the whole exchange (connect, request, answer): 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a shim keeps trying a daemon that does not answer at all (restart, rollout): 3 s.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(3);

/// Environment variable that sets the retry budget in milliseconds (`ACR_BROKER_RETRY_MS`; 0 = no retries).
pub const RETRY_ENV: &str = "ACR_BROKER_RETRY_MS";

/// Largest answer body read from the daemon (64 KiB); a credential answer is well under 1 KiB.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The daemon socket path: `$ACR_BROKER_SOCKET` when set and non-empty, else the default.
pub fn socket_path() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_SOCKET_PATH),
    }
}

/// A credential request for `POST /v1/credentials` (what the kubelet plugin sends).
#[derive(Debug, Clone, Default)]
pub struct CredentialsRequest {
    /// Registry as `host[:port]`.
    pub registry: String,
    /// The image reference being pulled, when known.
    pub image: Option<String>,
    /// The `k8s.aliyun.com/acr-*` annotations that select instance and role chain.
    pub annotations: BTreeMap<String, String>,
    /// A service-account token the kubelet minted for the pod, when configured.
    pub service_account_token: Option<Secret>,
    /// All annotations of the pod's ServiceAccount that the kubelet passed along.
    pub service_account_annotations: BTreeMap<String, String>,
}

impl CredentialsRequest {
    /// The JSON body; the token is exposed here because this is where it goes on the wire.
    fn to_json(&self) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("registry".into(), self.registry.clone().into());
        if let Some(image) = &self.image {
            body.insert("image".into(), image.clone().into());
        }
        body.insert("annotations".into(), map_value(&self.annotations));
        if let Some(token) = &self.service_account_token {
            body.insert("service_account_token".into(), token.expose_secret().into());
        }
        if !self.service_account_annotations.is_empty() {
            body.insert("service_account_annotations".into(), map_value(&self.service_account_annotations));
        }
        serde_json::Value::Object(body).to_string().into_bytes()
    }
}

fn map_value(m: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect())
}

/// The daemon's 200 answer: a registry login valid until `expires_at`.
#[derive(Debug, Clone, Deserialize)]
pub struct CredentialsAnswer {
    /// Registry user name.
    pub username: String,
    /// Registry password (temporary token).
    pub password: Secret,
    /// When the password stops working.
    #[serde(deserialize_with = "de_rfc3339")]
    pub expires_at: SystemTime,
    /// The registry the answer is for, `host[:port]`.
    pub registry: String,
    /// Region of the registry instance.
    #[serde(default)]
    pub region: String,
    /// Enterprise Edition instance id; `None` for Personal Edition.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// `enterprise` or `personal`.
    #[serde(default)]
    pub edition: String,
}

impl CredentialsAnswer {
    /// The answer as the API sent it (`GET/POST /v1/credentials`), password included: for
    /// `acr-broker get -o json`, whose caller asked for exactly that.
    pub fn to_api_json(&self) -> serde_json::Value {
        serde_json::json!({
            "username": self.username,
            "password": self.password.expose_secret(),
            "expires_at": crate::clock::rfc3339(self.expires_at),
            "registry": self.registry,
            "region": self.region,
            "instance_id": self.instance_id,
            "edition": self.edition,
        })
    }
}

fn de_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let s = String::deserialize(d)?;
    crate::clock::parse_rfc3339(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("expires_at {s:?} is not an RFC 3339 time")))
}

/// What the daemon said.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200: credentials for the registry.
    Credentials(CredentialsAnswer),
    /// 404 `not_acr_registry`: the registry is not ACR; the caller should fall back.
    NotOurs {
        /// The daemon's explanation.
        message: String,
    },
    /// Any other status: bad input, denied, upstream trouble.
    Error {
        /// HTTP status code.
        status: u16,
        /// Machine-readable code (`invalid_request`, an upstream code, ...); empty if absent.
        code: String,
        /// One-line explanation from the daemon.
        message: String,
        /// Seconds to wait before retrying (`Retry-After`), when the daemon said so.
        retry_after: Option<u64>,
    },
}

/// Why no answer came back from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to; the message says what to check.
    #[error("cannot reach acr-broker at {}: {}", path.display(), connect_hint(path, source))]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The connection was made but closed (reset, EOF) before a complete answer came back.
    #[error("acr-broker at {} gave no answer: {cause}", path.display())]
    NoAnswer {
        /// The socket path tried.
        path: PathBuf,
        /// What happened, e.g. `reset after sending the request`.
        cause: String,
    },
    /// The daemon did not answer within the timeout.
    #[error("acr-broker at {} did not answer within {}s", path.display(), after.as_secs_f32())]
    Timeout {
        /// The socket path tried.
        path: PathBuf,
        /// The timeout that expired.
        after: Duration,
    },
    /// The daemon answered something that is not the expected HTTP/JSON.
    #[error("bad answer from acr-broker at {}: {detail}", path.display())]
    Protocol {
        /// The socket path tried.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

fn connect_hint(path: &Path, err: &io::Error) -> String {
    let run = "is acr-broker running? (systemctl status acr-broker); \
               set ACR_BROKER_SOCKET if it listens elsewhere";
    // Something else sits on the path: say what, instead of calling it a stale socket.
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        let what = if meta.is_dir() {
            Some("a directory")
        } else if !meta.file_type().is_socket() {
            Some("a regular file or other non-socket")
        } else {
            None
        };
        if let Some(what) = what {
            return format!(
                "{} is {what}, not the daemon's socket; point ACR_BROKER_SOCKET at the socket acr-broker serves ([server] socket, default {DEFAULT_SOCKET_PATH})",
                path.display()
            );
        }
    }
    match err.kind() {
        io::ErrorKind::NotFound => format!("socket does not exist; {run}"),
        io::ErrorKind::PermissionDenied => format!(
            "permission denied; the socket is restricted to its group: \
             run as a member of that group (ls -l {}) or as root",
            path.display()
        ),
        io::ErrorKind::ConnectionRefused => {
            format!(
                "connection refused: the socket exists but nothing is listening (restarting, or a stale socket); {run}"
            )
        }
        _ if !path.exists() => format!("{err}; socket does not exist; {run}"),
        _ => format!("{err}; {run}"),
    }
}

/// A one-request client for the daemon socket.
#[derive(Debug, Clone)]
pub struct BrokerClient {
    socket: PathBuf,
    timeout: Duration,
    retry_budget: Duration,
    user_agent: String,
}

impl ClientError {
    /// True when the daemon never answered (no socket, refused, closed before the answer):
    /// the request may be sent again, because the daemon did not act on it.
    pub fn is_unanswered(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::NoAnswer { .. })
    }
}

/// The retry budget from [`RETRY_ENV`], else [`DEFAULT_RETRY_BUDGET`]; a bad value is ignored
/// (the default is safe either way).
pub fn retry_budget_from_env() -> Duration {
    std::env::var(RETRY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.min(60_000)))
        .unwrap_or(DEFAULT_RETRY_BUDGET)
}

impl BrokerClient {
    /// A client for the socket at `socket`, with [`DEFAULT_TIMEOUT`].
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        BrokerClient {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            retry_budget: Duration::ZERO,
            user_agent: format!("acr-broker-client/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// A client for [`socket_path()`] that rides out a daemon restart for
    /// [`retry_budget_from_env`].
    pub fn from_env() -> Self {
        Self::new(socket_path()).with_retry_budget(retry_budget_from_env())
    }

    /// Sets how long to keep retrying while the daemon does not answer at all; a request the
    /// daemon answered (any status) is never sent again.
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Sets the limit for the whole exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the `User-Agent` sent to the daemon (which shim is asking, for its logs).
    pub fn with_user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/credentials/{registry}`: credentials under the node's default policy.
    pub fn get_credentials(&self, registry: &str) -> Result<Answer, ClientError> {
        let path = format!("/v1/credentials/{}", percent_encode(registry));
        self.call(http::Method::GET, &path, None)
    }

    /// `POST /v1/credentials`: credentials for a request carrying image and annotations.
    pub fn post_credentials(&self, request: &CredentialsRequest) -> Result<Answer, ClientError> {
        self.call(http::Method::POST, "/v1/credentials", Some(request.to_json()))
    }

    /// `POST path` with a JSON body; the status and the JSON answer, whatever the status.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<(u16, serde_json::Value), ClientError> {
        let (status, _, bytes) = self.run(http::Method::POST, path, Some(body.to_string().into_bytes()))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            path: self.socket.clone(),
            detail: format!("{status} answer to {path} is not JSON: {e}"),
        })?;
        Ok((status, value))
    }

    /// `GET path` (e.g. `/healthz`, `/readyz`): the status and the JSON body (`Null` when the
    /// body is not JSON). Used by `acr-broker doctor`.
    pub fn get_json(&self, path: &str) -> Result<(u16, serde_json::Value), ClientError> {
        let (status, _, bytes) = self.run(http::Method::GET, path, None)?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
    }

    fn call(&self, method: http::Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer, ClientError> {
        let (status, retry_after, bytes) = self.run(method, path, body)?;
        decode_answer(&self.socket, status, retry_after, &bytes)
    }

    /// One exchange, with the restart retries, within the overall timeout.
    fn run(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Option<u64>, Vec<u8>), ClientError> {
        let deadline = Instant::now() + self.timeout;
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        let mut tries = 1u32;
        loop {
            match self.exchange(&method, path, body.as_deref(), deadline) {
                Err(e) if e.is_unanswered() => {
                    let wait = pause.mul_f64(0.5 + rand::random::<f64>());
                    if started.elapsed() + wait > self.retry_budget || Instant::now() + wait >= deadline {
                        if tries > 1 {
                            tracing::debug!(tries, "giving up on an unanswering daemon");
                        }
                        return Err(e);
                    }
                    std::thread::sleep(wait);
                    pause = (pause * 2).min(Duration::from_millis(200));
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// One request on one connection, blocking, with `Connection: close`: the shims are exec'd
    /// once per lookup, so an async runtime and an HTTP client stack would cost more to start
    /// than the whole exchange. The answer head is parsed with `httparse` (what hyper uses).
    fn exchange(
        &self,
        method: &http::Method,
        path: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<(u16, Option<u64>, Vec<u8>), ClientError> {
        use std::io::{Read, Write};
        let timed_out = || ClientError::Timeout { path: self.socket.clone(), after: self.timeout };
        let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)
            .map_err(|source| ClientError::Connect { path: self.socket.clone(), source })?;
        let unanswered = |cause: String| ClientError::NoAnswer { path: self.socket.clone(), cause };
        let io_unanswered = |e: io::Error, when: &str| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                unanswered(format!("reset {when} (the daemon stopped or restarted)"))
            }
            _ => unanswered(format!("{e} {when}")),
        };
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.user_agent
        )
        .into_bytes();
        if let Some(body) = body {
            request.extend_from_slice(
                format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()).as_bytes(),
            );
        }
        request.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            request.extend_from_slice(body);
        }
        stream.set_write_timeout(Some(left().ok_or_else(timed_out)?)).map_err(|e| io_unanswered(e, "setting up"))?;
        stream.write_all(&request).map_err(|e| io_unanswered(e, "while sending the request"))?;
        let mut answer = Vec::with_capacity(2048);
        let mut chunk = [0u8; 4096];
        loop {
            stream.set_read_timeout(Some(left().ok_or_else(timed_out)?)).map_err(|e| io_unanswered(e, "setting up"))?;
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&chunk[..n]);
                    if answer.len() > MAX_ANSWER_BYTES + 16 * 1024 {
                        return Err(ClientError::Protocol {
                            path: self.socket.clone(),
                            detail: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
                        });
                    }
                    if answer_complete(&answer) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_unanswered(e, "after sending the request")),
            }
        }
        parse_answer(&answer).map_err(|problem| match problem {
            AnswerProblem::Incomplete => unanswered(String::from(
                "the connection closed after sending the request, before a complete answer (the daemon stopped or restarted)",
            )),
            AnswerProblem::Invalid(detail) => ClientError::Protocol { path: self.socket.clone(), detail },
        })
    }
}

/// Why bytes read from the daemon are not an answer.
#[derive(Debug)]
enum AnswerProblem {
    /// The connection closed before the head or the body was complete.
    Incomplete,
    /// Not HTTP, or not what the daemon sends.
    Invalid(String),
}

/// True once `bytes` hold a whole answer (head and `Content-Length` bytes of body).
fn answer_complete(bytes: &[u8]) -> bool {
    matches!(parse_answer(bytes), Ok(_) | Err(AnswerProblem::Invalid(_)))
}

/// Status, `Retry-After` seconds and body of an HTTP/1.1 answer with a `Content-Length`.
fn parse_answer(bytes: &[u8]) -> Result<(u16, Option<u64>, Vec<u8>), AnswerProblem> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let body_start = match head.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(AnswerProblem::Incomplete),
        Err(e) => return Err(AnswerProblem::Invalid(format!("not an HTTP answer: {e}"))),
    };
    let status = head.code.ok_or_else(|| AnswerProblem::Invalid(String::from("no status code")))?;
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    if header("transfer-encoding").is_some() {
        return Err(AnswerProblem::Invalid(String::from("a chunked answer; the daemon sends Content-Length")));
    }
    let length: usize = header("content-length")
        .ok_or_else(|| AnswerProblem::Invalid(String::from("no Content-Length")))?
        .parse()
        .map_err(|_| AnswerProblem::Invalid(String::from("a malformed Content-Length")))?;
    if length > MAX_ANSWER_BYTES {
        return Err(AnswerProblem::Invalid(format!("the answer is larger than {MAX_ANSWER_BYTES} bytes")));
    }
    let body = &bytes[body_start..];
    if body.len() < length {
        return Err(AnswerProblem::Incomplete);
    }
    let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
    Ok((status, retry_after, body[..length].to_vec()))
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Turns status + body into an [`Answer`]; malformed bodies become [`ClientError::Protocol`].
fn decode_answer(socket: &Path, status: u16, retry_after: Option<u64>, body: &[u8]) -> Result<Answer, ClientError> {
    let protocol = |detail: String| ClientError::Protocol { path: socket.to_path_buf(), detail };
    if status == 200 {
        return serde_json::from_slice::<CredentialsAnswer>(body)
            .map(Answer::Credentials)
            .map_err(|e| protocol(format!("200 answer is not a credentials object: {e}")));
    }
    let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => (one_line(&env.error.code), one_line(&env.error.message)),
        Err(_) => (String::new(), one_line(&String::from_utf8_lossy(body))),
    };
    if status == 404 && code == "not_acr_registry" {
        return Ok(Answer::NotOurs { message });
    }
    Ok(Answer::Error { status, code, message, retry_after })
}

/// Collapses control characters (newlines) and trims, capping at 300 characters, so a daemon
/// message fits the one line a credential helper may print.
pub fn one_line(s: &str) -> String {
    const MAX_CHARS: usize = 1000;
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_CHARS + 1).collect();
    let mut line = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > MAX_CHARS {
        line.push_str(" …");
    }
    line
}

/// Percent-encodes everything outside RFC 3986 "unreserved" (`host:5000` → `host%3A5000`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
