//! Test helpers: a tiny HTTP client, a test-only V3 signer, and a test world.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acr_emulator::{Emulator, World};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const A: &str = "1111111111111111";
pub const B: &str = "2222222222222222";
pub const NODE_ROLE: &str = "acs:ram::1111111111111111:role/node-role";
pub const SERVICE_ROLE: &str = "acs:ram::1111111111111111:role/eci-acr-service";
pub const USER_ROLE: &str = "acs:ram::2222222222222222:role/eci-acr-user";
pub const INSTANCE_A: &str = "cri-devaaaaaaaaaaaa01";
pub const INSTANCE_B: &str = "cri-devbbbbbbbbbbbb02";
pub const DEV_AK: &str = "LTAI5tDEVACCESSKEY0000001";
pub const DEV_SECRET: &str = "DevSecret0123456789abcdefghijk";

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn code(&self) -> String {
        self.json()["Code"].as_str().unwrap_or("").to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request; `Err` when the connection failed or was closed.
pub async fn send(
    base: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Resp, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut b = http::Request::builder().method(method).uri(format!("{base}{path_and_query}"));
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body))).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec();
    Ok(Resp { status, headers, body })
}

/// Credentials to sign with.
#[derive(Debug, Clone)]
pub struct Creds {
    pub ak: String,
    pub secret: String,
    pub token: Option<String>,
}

impl Creds {
    pub fn long_term(ak: &str, secret: &str) -> Creds {
        Creds { ak: ak.into(), secret: secret.into(), token: None }
    }
    /// From an AssumeRole-shaped body or a metadata body.
    pub fn from_json(v: &Value) -> Creds {
        let c = if v.get("Credentials").is_some() { &v["Credentials"] } else { v };
        Creds {
            ak: c["AccessKeyId"].as_str().unwrap().into(),
            secret: c["AccessKeySecret"].as_str().unwrap().into(),
            token: Some(c["SecurityToken"].as_str().unwrap().into()),
        }
    }
}

fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn hex_sha(d: &[u8]) -> String {
    Sha256::digest(d).iter().map(|b| format!("{b:02x}")).collect()
}

fn fmt_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let dt = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

static NONCE: AtomicU64 = AtomicU64::new(1);

/// A V3 request to build and sign (test-only signer, Go-SDK header set).
pub struct V3 {
    pub method: &'static str,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub version: &'static str,
    pub action: &'static str,
    pub body: Vec<u8>,
    pub content_type: Option<&'static str>,
    pub date: Option<SystemTime>,
    pub nonce: Option<String>,
    pub host: Option<String>,
}

impl V3 {
    pub fn rpc(version: &'static str, action: &'static str, path: &str, query: &[(&str, &str)]) -> V3 {
        V3 {
            method: "POST",
            path: path.to_string(),
            query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            version,
            action,
            body: Vec::new(),
            content_type: None,
            date: None,
            nonce: None,
            host: None,
        }
    }

    /// Signs and returns (path_and_query, headers).
    pub fn sign(&self, addr: SocketAddr, creds: &Creds, now: SystemTime) -> (String, Vec<(String, String)>) {
        let host = self.host.clone().unwrap_or_else(|| addr.to_string());
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-acs-action".into(), self.action.into()),
            ("x-acs-version".into(), self.version.into()),
            ("x-acs-date".into(), fmt_date(self.date.unwrap_or(now))),
            (
                "x-acs-signature-nonce".into(),
                self.nonce
                    .clone()
                    .unwrap_or_else(|| format!("nonce-{}-{}", NONCE.fetch_add(1, Ordering::SeqCst), rand_suffix())),
            ),
            ("x-acs-content-sha256".into(), hex_sha(&self.body)),
        ];
        if let Some(ct) = self.content_type {
            headers.push(("content-type".into(), ct.into()));
        }
        if let Some(t) = &creds.token {
            headers.push(("x-acs-accesskey-id".into(), creds.ak.clone()));
            headers.push(("x-acs-security-token".into(), t.clone()));
        }
        headers.sort();
        let mut q: Vec<(String, String)> = self.query.clone();
        q.sort();
        let cq = q.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&");
        let signed = headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>().join(";");
        let ch: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
        let canonical = format!("{}\n{}\n{cq}\n{ch}\n{signed}\n{}", self.method, self.path, hex_sha(&self.body));
        let sts = format!("ACS3-HMAC-SHA256\n{}", hex_sha(canonical.as_bytes()));
        let mut mac = Hmac::<Sha256>::new_from_slice(creds.secret.as_bytes()).unwrap();
        mac.update(sts.as_bytes());
        let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        headers.push((
            "authorization".into(),
            format!("ACS3-HMAC-SHA256 Credential={},SignedHeaders={signed},Signature={sig}", creds.ak),
        ));
        // The wire query uses form encoding (`+` for space), as the Python SDK does.
        let wire: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(self.query.iter()).finish();
        let pq = if wire.is_empty() { self.path.clone() } else { format!("{}?{wire}", self.path) };
        (pq, headers)
    }
}

fn rand_suffix() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen()
}

/// A running dev-world emulator with a settable clock.
pub struct Env {
    pub emu: Emulator,
    pub clock: Arc<AtomicU64>,
}

impl Env {
    pub async fn dev() -> Env {
        Env::with_world(World::dev()).await
    }

    pub async fn with_world(world: World) -> Env {
        let clock = Arc::new(AtomicU64::new(1_800_000_000));
        let c = clock.clone();
        let emu = Emulator::start_with_clock(
            world,
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(move || UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst))),
        )
        .await
        .unwrap();
        Env { emu, clock }
    }

    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.clock.load(Ordering::SeqCst))
    }

    pub fn advance(&self, secs: u64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn base(&self) -> String {
        self.emu.base_url()
    }

    pub async fn call(&self, req: &V3, creds: &Creds) -> Resp {
        let (pq, headers) = req.sign(self.emu.addr(), creds, self.now());
        send(&self.base(), req.method, &pq, &headers, &req.body).await.unwrap()
    }

    pub async fn assume(&self, creds: &Creds, role: &str, duration: Option<&str>) -> Resp {
        let mut q = vec![("RoleArn", role), ("RoleSessionName", "acr-broker")];
        if let Some(d) = duration {
            q.push(("DurationSeconds", d));
        }
        self.call(&V3::rpc("2015-04-01", "AssumeRole", "/", &q), creds).await
    }

    pub async fn cr(&self, region: &str, action: &'static str, query: &[(&str, &str)], creds: &Creds) -> Resp {
        let path = format!("/region/{region}/");
        self.call(&V3::rpc("2018-12-01", action, &path, query), creds).await
    }

    /// Node credentials from the metadata service.
    pub async fn node_creds(&self) -> Creds {
        let r =
            send(&self.base(), "GET", "/latest/meta-data/ram/security-credentials/node-role", &[], b"").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        Creds::from_json(&r.json())
    }

    /// node → service → user chain; returns the user-role credentials.
    pub async fn user_creds(&self) -> Creds {
        let node = self.node_creds().await;
        let svc = self.assume(&node, SERVICE_ROLE, Some("3600")).await;
        assert_eq!(svc.status, 200, "{}", svc.text());
        let usr = self.assume(&Creds::from_json(&svc.json()), USER_ROLE, Some("3600")).await;
        assert_eq!(usr.status, 200, "{}", usr.text());
        Creds::from_json(&usr.json())
    }

    pub async fn admin_knobs(&self, patch: Value) -> Resp {
        send(
            &self.base(),
            "POST",
            "/__admin/knobs",
            &[("content-type".into(), "application/json".into())],
            patch.to_string().as_bytes(),
        )
        .await
        .unwrap()
    }
}
