//! ACS3-HMAC-SHA256 request signing (Alibaba Cloud "V3" signature), exactly as the official Go SDK.
//!
//! Signed headers are `host`, `content-type` (when a body is sent) and every `x-acs-*` header;
//! the algorithm is Alibaba Cloud's published V3 signature specification, pinned by vectors V3,
//! V6 and V8 in the tests.

use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::HEXLOWER;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Credentials;

/// The signature algorithm name that starts the `Authorization` header and the string to sign.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Everything about one request that goes into its signature.
#[derive(Debug, Clone, Copy)]
pub struct SignInput<'a> {
    /// Upper-case HTTP method as sent (`POST`, `GET`).
    pub method: &'a str,
    /// The exact `Host` header value on the wire, with `:port` when it is not the default.
    pub host: &'a str,
    /// The request path (CanonicalURI); empty means `/`.
    pub path: &'a str,
    /// Query parameters (unencoded); order does not matter.
    pub query: &'a [(String, String)],
    /// Raw body bytes (empty for RPC calls with parameters in the query).
    pub body: &'a [u8],
    /// `content-type` of the body; sent and signed when present.
    pub content_type: Option<&'a str>,
    /// `x-acs-action`, e.g. `AssumeRole`.
    pub action: &'a str,
    /// `x-acs-version`, e.g. `2015-04-01`.
    pub version: &'a str,
    /// `x-acs-date` in `%Y-%m-%dT%H:%M:%SZ` (see [`format_date`]).
    pub date: &'a str,
    /// `x-acs-signature-nonce`, single use (see [`new_nonce`]).
    pub nonce: &'a str,
}

/// Percent-encodes per RFC 3986 as the SDKs do: `A-Z a-z 0-9 - _ . ~` literal, every other
/// UTF-8 byte as `%XY` with upper-case hex (space is `%20`, never `+`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// CanonicalQueryString: sorted by key (then value), `key=pe(value)` joined by `&`.
/// Keys are emitted unencoded, as both SDKs do; every key this client sends is ASCII-safe.
/// The same string is what goes on the wire, so the server sees exactly what was signed.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let parts: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
    parts.join("&")
}

/// Lower-hex SHA-256 of the body: HashedPayload and the `x-acs-content-sha256` header.
pub fn hashed_payload(body: &[u8]) -> String {
    HEXLOWER.encode(&Sha256::digest(body))
}

/// `x-acs-date` format: UTC `%Y-%m-%dT%H:%M:%SZ` (whole seconds).
pub fn format_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|dt| dt.format(&fmt).ok())
        .unwrap_or_else(|| String::from("1970-01-01T00:00:00Z"))
}

/// A fresh single-use nonce: 32 lower-hex characters from 16 random bytes.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    HEXLOWER.encode(&bytes)
}

/// Signs a request and returns every header to send (lower-case names), `authorization` last.
///
/// The returned list holds the security token of STS credentials in clear text (it must go on
/// the wire); never log it.
pub fn sign(input: &SignInput<'_>, creds: &Credentials) -> Vec<(&'static str, String)> {
    let mut headers: Vec<(&'static str, String)> = vec![
        ("host", input.host.to_owned()),
        ("x-acs-action", input.action.to_owned()),
        ("x-acs-content-sha256", hashed_payload(input.body)),
        ("x-acs-date", input.date.to_owned()),
        ("x-acs-signature-nonce", input.nonce.to_owned()),
        ("x-acs-version", input.version.to_owned()),
    ];
    if let Some(ct) = input.content_type {
        headers.push(("content-type", ct.to_owned()));
    }
    if let Some(token) = &creds.security_token {
        headers.push(("x-acs-accesskey-id", creds.access_key_id.clone()));
        headers.push(("x-acs-security-token", token.expose_secret().to_owned()));
    }
    headers.sort_by(|a, b| a.0.cmp(b.0));

    let signed_names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    let signed_headers = signed_names.join(";");
    let canonical = canonical_request(input, &headers, &signed_headers);
    let string_to_sign = format!("{ALGORITHM}\n{}", hashed_payload(canonical.as_bytes()));
    let signature = hmac_hex(creds.access_key_secret.expose_secret(), &string_to_sign);
    headers.push((
        "authorization",
        format!("{ALGORITHM} Credential={},SignedHeaders={signed_headers},Signature={signature}", creds.access_key_id),
    ));
    headers
}

/// The canonical request over already sorted, lower-case headers (all of them signed).
fn canonical_request(input: &SignInput<'_>, sorted_headers: &[(&'static str, String)], signed_headers: &str) -> String {
    let path = if input.path.is_empty() { "/" } else { input.path };
    let mut out = format!("{}\n{path}\n{}\n", input.method, canonical_query(input.query));
    for (name, value) in sorted_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(&hashed_payload(input.body));
    out
}

fn hmac_hex(key: &str, data: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here; fall back to an
    // empty-key MAC rather than panic (the server would then answer SignatureDoesNotMatch).
    let mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).or_else(|_| <Hmac<Sha256> as Mac>::new_from_slice(&[]));
    match mac {
        Ok(mut mac) => {
            mac.update(data.as_bytes());
            HEXLOWER.encode(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    const DATE: &str = "2024-01-15T08:30:00Z";
    const NONCE: &str = "3f1a2b4c5d6e7f8091a2b3c4d5e6f708";

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("header {name} missing"))
    }

    #[test]
    fn v8_long_term_key_assume_role_authorization_matches_bit_for_bit() {
        // Insertion order as in the V8 URL; the signer must sort.
        let query = q(&[
            ("RoleArn", "acs:ram::1234567890123456:role/eci-acr-service"),
            ("RoleSessionName", "acr-broker"),
            ("DurationSeconds", "3600"),
        ]);
        let creds = Credentials::long_term("LTAI5tTESTACCESSKEYID", Secret::from("TestSecret0123456789abcdefghij"));
        let input = SignInput {
            method: "POST",
            host: "sts.cn-hangzhou.aliyuncs.com",
            path: "/",
            query: &query,
            body: b"",
            content_type: None,
            action: "AssumeRole",
            version: "2015-04-01",
            date: DATE,
            nonce: NONCE,
        };
        let headers = sign(&input, &creds);
        assert_eq!(
            header(&headers, "authorization"),
            "ACS3-HMAC-SHA256 Credential=LTAI5tTESTACCESSKEYID,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=5441520dc09616b4df34851219b2e42441f983067d78607b53d9b7dcfec7c1b1"
        );
        assert_eq!(
            header(&headers, "x-acs-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(headers.iter().all(|(n, _)| *n != "x-acs-security-token"));
        assert!(headers.iter().all(|(n, _)| *n != "content-type"));
    }

    #[test]
    fn v6_sts_credentials_cr_token_authorization_matches_bit_for_bit() {
        let query = q(&[("InstanceId", "cri-abc123xyz")]);
        let creds = Credentials {
            access_key_id: "STS.NTestTempAccessKeyId".into(),
            access_key_secret: Secret::from("TempSecretXYZ"),
            security_token: Some(Secret::from("CAIS+test/token==")),
            expires_at: None,
        };
        let input = SignInput {
            method: "POST",
            host: "cr.cn-hangzhou.aliyuncs.com",
            path: "",
            query: &query,
            body: b"",
            content_type: None,
            action: "GetAuthorizationToken",
            version: "2018-12-01",
            date: DATE,
            nonce: NONCE,
        };
        let headers = sign(&input, &creds);
        assert_eq!(
            header(&headers, "authorization"),
            "ACS3-HMAC-SHA256 Credential=STS.NTestTempAccessKeyId,SignedHeaders=host;x-acs-accesskey-id;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version,Signature=dba1bc1c76cddf4037f0d1b30b0d2ff166e1e93c5258b55c411968680db2e452"
        );
        assert_eq!(header(&headers, "x-acs-accesskey-id"), "STS.NTestTempAccessKeyId");
        assert_eq!(header(&headers, "x-acs-security-token"), "CAIS+test/token==");
    }

    #[test]
    fn v3_canonical_query_matches_sdk() {
        let query = q(&[
            ("RoleArn", "acs:ram::1234567890123456:role/eci-acr-user"),
            ("RoleSessionName", "a.b-c_d@e"),
            ("ExternalId", "ext id~*/é"),
            ("Policy", r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"cr:Get*","Resource":"*"}]}"#),
        ]);
        assert_eq!(
            canonical_query(&query),
            "ExternalId=ext%20id~%2A%2F%C3%A9&Policy=%7B%22Version%22%3A%221%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22cr%3AGet%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D&RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-user&RoleSessionName=a.b-c_d%40e"
        );
    }

    #[test]
    fn percent_encode_edge_cases() {
        assert_eq!(percent_encode(""), "");
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("+"), "%2B");
        assert_eq!(percent_encode("*"), "%2A");
        assert_eq!(percent_encode("/:=&?#%"), "%2F%3A%3D%26%3F%23%25");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("日"), "%E6%97%A5");
        assert_eq!(percent_encode("\n\u{7f}"), "%0A%7F");
    }

    #[test]
    fn canonical_query_empty_and_empty_value() {
        assert_eq!(canonical_query(&[]), "");
        assert_eq!(canonical_query(&q(&[("B", ""), ("A", "1")])), "A=1&B=");
    }

    #[test]
    fn body_and_content_type_are_hashed_and_signed() {
        let creds = Credentials::long_term("AK", Secret::from("s"));
        let body = b"DurationSeconds=3600";
        let input = SignInput {
            method: "POST",
            host: "127.0.0.1:8080",
            path: "/region/cn-hangzhou/",
            query: &[],
            body,
            content_type: Some("application/x-www-form-urlencoded"),
            action: "AssumeRole",
            version: "2015-04-01",
            date: DATE,
            nonce: NONCE,
        };
        let headers = sign(&input, &creds);
        assert_eq!(header(&headers, "x-acs-content-sha256"), hashed_payload(body));
        assert_eq!(header(&headers, "host"), "127.0.0.1:8080");
        assert!(header(&headers, "authorization").contains("SignedHeaders=content-type;host;x-acs-action;"));
        // A different path must change the signature.
        let other = sign(&SignInput { path: "/", ..input }, &creds);
        assert_ne!(header(&headers, "authorization"), header(&other, "authorization"));
    }

    #[test]
    fn date_and_nonce_formats() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_705_307_400);
        assert_eq!(format_date(t), DATE);
        let n = new_nonce();
        assert_eq!(n.len(), 32);
        assert!(n.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(n, new_nonce());
    }
}
