//! A minimal CRI client: `runtime.v1.ImageService/PullImage` over containerd's unix socket
//! (gRPC = HTTP/2 + length-prefixed protobuf). Two messages, encoded by hand:
//! `PullImageRequest { image: ImageSpec { image: string = 1 } = 1 }` (no `auth`, no sandbox
//! config — what the kubelet sends when no credential provider matched) and
//! `PullImageResponse { image_ref: string = 1 }` (cri-api `api.proto`).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// `PullImage` for `image` with no auth; returns the image ref containerd reports, or the gRPC
/// status and message.
pub async fn pull_image(socket: &Path, image: &str) -> Result<String, String> {
    tokio::time::timeout(Duration::from_secs(60), pull_inner(socket, image))
        .await
        .map_err(|_| String::from("PullImage: no answer within 60 s"))?
}

async fn pull_inner(socket: &Path, image: &str) -> Result<String, String> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("connect {socket:?}: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(conn);
    let spec = field(1, image.as_bytes());
    let message = field(1, &spec);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).map_err(|e| e.to_string())?.to_be_bytes());
    framed.extend_from_slice(&message);
    let req = http::Request::post("http://localhost/runtime.v1.ImageService/PullImage")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| format!("send: {e}"))?;
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers.get("grpc-status").or_else(|| headers.get("grpc-status")).and_then(|v| v.to_str().ok());
    let message = trailers.get("grpc-message").or_else(|| headers.get("grpc-message")).and_then(|v| v.to_str().ok());
    if status != Some("0") {
        return Err(format!("grpc-status {status:?}: {}", message.unwrap_or("")));
    }
    let body = collected.to_bytes();
    let msg = body.get(5..).ok_or("short gRPC frame")?;
    read_field1(msg).ok_or_else(|| format!("cannot decode PullImageResponse {msg:?}"))
}

/// A length-delimited protobuf field (`tag << 3 | 2`, varint length, bytes).
fn field(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    let mut n = value.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(value);
    out
}

/// The string in field 1 of a message that has only that field.
fn read_field1(msg: &[u8]) -> Option<String> {
    if *msg.first()? != 0x0a {
        return None;
    }
    let (mut len, mut shift, mut i) = (0usize, 0, 1);
    loop {
        let b = *msg.get(i)?;
        len |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    String::from_utf8(msg.get(i..i + len)?.to_vec()).ok()
}

#[test]
fn protobuf_fields_round_trip() {
    let long = "r".repeat(300);
    assert_eq!(read_field1(&field(1, long.as_bytes())).as_deref(), Some(long.as_str()));
    assert_eq!(field(1, b"ab"), vec![0x0a, 2, b'a', b'b']);
}
