use super::*;
use crate::aliyun::testutil::{respond, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn transport(proxy: Option<Matcher>) -> Transport {
    Transport::with_proxy(Timeouts { metadata: Duration::from_millis(300), api: Duration::from_millis(500) }, proxy)
        .unwrap()
}

#[test]
fn url_rules() {
    assert!(check_url("https://sts.aliyuncs.com", Route::Api).is_ok());
    assert!(check_url("http://127.0.0.1:8080/x", Route::Api).is_ok());
    assert!(check_url("http://127.1.2.3/", Route::Api).is_ok());
    assert!(check_url("http://localhost:9/", Route::Api).is_ok());
    assert!(check_url("http://[::1]:9/", Route::Api).is_ok());
    let e = check_url("http://sts.aliyuncs.com/", Route::Api).unwrap_err();
    assert_eq!(e.kind(), crate::aliyun::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("loopback"), "{e}");
    assert!(check_url("http://100.100.100.200", Route::Api).is_err());
    assert!(check_url("http://100.100.100.200", Route::Metadata).is_ok());
    assert!(check_url("ftp://127.0.0.1/", Route::Api).is_err());
    assert!(check_url("https://user:pw@sts.aliyuncs.com/", Route::Api).is_err());
    assert!(check_url("/relative", Route::Api).is_err());
    assert!(check_url("not a url", Route::Api).is_err());
}

#[test]
fn loopback_hosts() {
    for h in ["localhost", "LOCALHOST", "127.0.0.1", "127.255.0.9", "::1", "[::1]"] {
        assert!(is_loopback_host(h), "{h}");
    }
    for h in ["100.100.100.200", "10.0.0.1", "example.com", "localhost.example", "[::2]"] {
        assert!(!is_loopback_host(h), "{h}");
    }
}

#[test]
fn proxy_is_used_only_for_remote_https_api_calls() {
    let matcher = Matcher::builder().https("http://127.0.0.1:3128").no("no-proxy.example.com").build();
    let t = transport(Some(matcher));
    let remote: Uri = "https://sts.aliyuncs.com/".parse().unwrap();
    assert!(t.proxied_client_for(&remote, Route::Api).is_some());
    assert!(t.proxied_client_for(&remote, Route::Metadata).is_none());
    let loopback: Uri = "https://127.0.0.1:8443/".parse().unwrap();
    assert!(t.proxied_client_for(&loopback, Route::Api).is_none());
    let excluded: Uri = "https://no-proxy.example.com/".parse().unwrap();
    assert!(t.proxied_client_for(&excluded, Route::Api).is_none());
    let metadata: Uri = "http://100.100.100.200/latest".parse().unwrap();
    assert!(t.proxied_client_for(&metadata, Route::Metadata).is_none());
    assert!(transport(None).proxied_client_for(&remote, Route::Api).is_none());
}

#[tokio::test]
async fn https_call_goes_through_connect_proxy() {
    // A fake proxy that records the CONNECT line, says 200, then hangs up (TLS then fails).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy_task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = sock.read(&mut buf).await.unwrap();
        sock.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
        drop(sock);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let matcher = Matcher::builder().https(format!("http://{addr}")).build();
    let t = transport(Some(matcher));
    let err = t.get("https://sts.example-region.aliyuncs.com/", &[]).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let seen = proxy_task.await.unwrap();
    assert!(seen.starts_with("CONNECT sts.example-region.aliyuncs.com:443 HTTP/1.1"), "{seen}");
}

#[tokio::test]
async fn an_https_proxy_gets_tls_before_the_connect() {
    // A proxy that speaks TLS with a private CA: the CONNECT line is read inside that TLS.
    let identity = acr_emulator::tls::TlsIdentity::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, identity.ca_pem()).unwrap();
    let acceptor = identity.acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy_task = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(sock).await.expect("the client speaks TLS to the proxy");
        let mut buf = vec![0u8; 4096];
        let n = tls.read(&mut buf).await.unwrap();
        tls.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
        drop(tls);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let matcher = Matcher::builder().https(format!("https://{addr}")).build();
    let timeouts = Timeouts { metadata: Duration::from_millis(300), api: Duration::from_millis(2000) };
    let t = Transport::with_roots(timeouts, Some(matcher), Arc::new(read_ca_file(&ca).unwrap())).unwrap();
    let err = t.get("https://sts.example-region.aliyuncs.com/", &[]).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let seen = proxy_task.await.unwrap();
    assert!(seen.starts_with("CONNECT sts.example-region.aliyuncs.com:443 HTTP/1.1"), "{seen}");
}

#[test]
fn tls_failures_name_the_step_and_ca_file() {
    use rustls::CertificateError as C;
    for (e, step) in [
        (C::UnknownIssuer, "unknown issuer"),
        (C::NotValidForName, "not valid for this host name"),
        (C::Expired, "expired"),
    ] {
        let text = explain_tls_failure("sts.cn-hangzhou.aliyuncs.com", &rustls::Error::InvalidCertificate(e));
        assert!(text.starts_with("TLS to sts.cn-hangzhou.aliyuncs.com failed"), "{text}");
        assert!(text.contains(step) && text.contains("[aliyun] ca_file"), "{text}");
    }
}

#[tokio::test]
async fn get_returns_status_headers_body_and_sends_headers() {
    let server = TestServer::start(|_| respond(418, "teapot")).await;
    let t = transport(None);
    let (status, _headers, body) =
        t.get(&format!("{}/auth?service=x", server.base), &[("authorization", "Basic abc".to_owned())]).await.unwrap();
    assert_eq!(status, 418);
    assert_eq!(&body[..], b"teapot");
    let seen = server.seen();
    assert_eq!(seen[0].path, "/auth");
    assert_eq!(seen[0].query.as_deref(), Some("service=x"));
    assert_eq!(seen[0].headers["authorization"], "Basic abc");
}

#[tokio::test]
async fn oversized_body_is_an_error() {
    let server = TestServer::start(|_| respond(200, vec![b'a'; MAX_BODY + 1])).await;
    let err = transport(None).get(&server.base, &[]).await.unwrap_err();
    assert_eq!(err.code(), "MalformedResponse", "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[tokio::test]
async fn body_at_the_cap_is_accepted() {
    let server = TestServer::start(|_| respond(200, vec![b'a'; MAX_BODY])).await;
    let (_, _, body) = transport(None).get(&server.base, &[]).await.unwrap();
    assert_eq!(body.len(), MAX_BODY);
}

#[tokio::test]
async fn silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let (_sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let err = transport(None).get(&format!("http://{addr}/"), &[]).await.unwrap_err();
    assert_eq!(err.code(), "Timeout", "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn refused_connection_is_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = transport(None).get(&format!("http://{addr}/"), &[]).await.unwrap_err();
    assert_eq!(err.code(), "ConnectionFailed", "{err}");
}

#[test]
fn invalid_header_value_is_not_echoed() {
    let err = to_header_list(&[("authorization", "Basic sec\nret".to_owned())]).unwrap_err();
    assert!(!err.to_string().contains("sec"), "{err}");
}
