//! ACS3-HMAC-SHA256 (V3) signature verification, written from the published V3 specification only.
//! This is deliberately independent of the broker's signer so a shared bug cannot hide.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

use crate::error::ApiError;
use crate::util::{ct_eq, percent_encode, sha256_hex};

/// The algorithm name that starts the `Authorization` header.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Headers every V3 request must sign.
pub const REQUIRED_SIGNED: [&str; 6] =
    ["host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce", "x-acs-version"];

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Auth {
    /// `Credential=` value (the AccessKeyId).
    pub access_key_id: String,
    /// `SignedHeaders=` split on `;`.
    pub signed_headers: Vec<String>,
    /// `Signature=` value (lower-case hex).
    pub signature: String,
}

fn incomplete(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request("IncompleteSignature", msg)
}

/// Parses `ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..` (exact spacing).
pub fn parse_authorization(value: &str) -> Result<V3Auth, ApiError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| incomplete("Authorization must start with \"ACS3-HMAC-SHA256 \"."))?;
    let mut parts = rest.split(',');
    let mut field = |name: &str| -> Result<String, ApiError> {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .and_then(|p| p.strip_prefix('='))
            .map(str::to_string)
            .ok_or_else(|| {
                incomplete(format!("Authorization is missing {name}= (in order Credential, SignedHeaders, Signature)."))
            })
    };
    let access_key_id = field("Credential")?;
    let signed = field("SignedHeaders")?;
    let signature = field("Signature")?;
    if parts.next().is_some() {
        return Err(incomplete("Authorization has extra fields."));
    }
    if access_key_id.is_empty() || signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete("Authorization Credential is empty or Signature is not 64 hex digits."));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    let well_formed = signed_headers
        .iter()
        .all(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        && signed_headers.windows(2).all(|w| w[0] < w[1]);
    if !well_formed {
        return Err(incomplete("SignedHeaders must be lower-case names, sorted, without duplicates."));
    }
    Ok(V3Auth { access_key_id, signed_headers, signature })
}

/// Checks which headers are signed: the required set, every `x-acs-*` header present, and
/// `content-type` when a body is sent.
pub fn check_signed_set(auth: &V3Auth, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let signed = |n: &str| auth.signed_headers.iter().any(|h| h == n);
    for h in REQUIRED_SIGNED {
        if !signed(h) {
            return Err(incomplete(format!("SignedHeaders must include {h}.")));
        }
    }
    for name in headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-acs-") && !signed(n) {
            return Err(incomplete(format!("Header {n} is sent but not signed.")));
        }
    }
    if !body.is_empty() && !signed("content-type") {
        return Err(incomplete("A request with a body must sign content-type."));
    }
    for h in &auth.signed_headers {
        if !headers.contains_key(h.as_str()) {
            return Err(incomplete(format!("Signed header {h} is not present on the request.")));
        }
    }
    Ok(())
}

/// Form-decodes the raw query (`+` = space) and re-encodes it per RFC 3986, sorted by key.
pub fn canonical_query(raw: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&")
}

/// Builds the canonical request over exactly the signed headers.
pub fn canonical_request(
    method: &str,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    signed_headers: &[String],
    body: &[u8],
) -> Result<String, ApiError> {
    let mut out = String::new();
    out.push_str(method);
    out.push('\n');
    out.push_str(if path.is_empty() { "/" } else { path });
    out.push('\n');
    out.push_str(&canonical_query(raw_query));
    out.push('\n');
    for name in signed_headers {
        let mut values = Vec::new();
        for v in headers.get_all(name.as_str()) {
            let v = v.to_str().map_err(|_| incomplete(format!("Header {name} is not valid text.")))?;
            values.push(v.trim().to_string());
        }
        values.sort();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(&sha256_hex(body));
    Ok(out)
}

/// `ACS3-HMAC-SHA256\n` + hex(sha256(canonical request)).
pub fn string_to_sign(canonical: &str) -> String {
    format!("{ALGORITHM}\n{}", sha256_hex(canonical.as_bytes()))
}

/// Lower-case hex HMAC-SHA256 of `sts` keyed with the raw secret.
pub fn sign(secret: &str, sts: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(sts.as_bytes());
    data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
}

/// Recomputes the signature with `secret` and compares it in constant time.
pub fn verify_signature(
    method: &str,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    auth: &V3Auth,
    secret: &str,
) -> Result<(), ApiError> {
    let canonical = canonical_request(method, path, raw_query, headers, &auth.signed_headers, body)?;
    let sts = string_to_sign(&canonical);
    let expected = sign(secret, &sts);
    if ct_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{}",
                sts.replace('\n', "\\n")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E0: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn v8_canonical_request_and_signature() {
        let mut h = HeaderMap::new();
        h.insert("host", "sts.cn-hangzhou.aliyuncs.com".parse().unwrap());
        h.insert("x-acs-action", "AssumeRole".parse().unwrap());
        h.insert("x-acs-version", "2015-04-01".parse().unwrap());
        h.insert("x-acs-date", "2024-01-15T08:30:00Z".parse().unwrap());
        h.insert("x-acs-signature-nonce", "3f1a2b4c5d6e7f8091a2b3c4d5e6f708".parse().unwrap());
        h.insert("x-acs-content-sha256", E0.parse().unwrap());
        let auth = parse_authorization("ACS3-HMAC-SHA256 Credential=LTAI5tTESTACCESSKEYID,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=5441520dc09616b4df34851219b2e42441f983067d78607b53d9b7dcfec7c1b1").unwrap();
        let q = "RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Feci-acr-service&RoleSessionName=acr-broker&DurationSeconds=3600";
        let c = canonical_request("POST", "/", Some(q), &h, &auth.signed_headers, b"").unwrap();
        assert_eq!(
            string_to_sign(&c),
            "ACS3-HMAC-SHA256\n3980c1c7a880ff79595ebe69279d1268eb3cbabee1bff4cb8f6eb7f3e47d85db"
        );
        check_signed_set(&auth, &h, b"").unwrap();
        verify_signature("POST", "/", Some(q), &h, b"", &auth, "TestSecret0123456789abcdefghij").unwrap();
        let err = verify_signature("POST", "/", Some(q), &h, b"", &auth, "wrong").unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn v3_query_is_form_decoded_then_rfc3986_encoded() {
        let raw = "ExternalId=ext+id~%2A%2F%C3%A9&RoleSessionName=a.b-c_d%40e";
        assert_eq!(canonical_query(Some(raw)), "ExternalId=ext%20id~%2A%2F%C3%A9&RoleSessionName=a.b-c_d%40e");
        assert_eq!(canonical_query(None), "");
        assert_eq!(canonical_query(Some("b=&a=1")), "a=1&b=");
    }

    #[test]
    fn authorization_parsing_is_strict() {
        let ok = "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host;x-acs-date,Signature=5441520dc09616b4df34851219b2e42441f983067d78607b53d9b7dcfec7c1b1";
        assert!(parse_authorization(ok).is_ok());
        assert!(parse_authorization(&ok.replace("ACS3-HMAC-SHA256 ", "ACS3-HMAC-SHA256  ")).is_err());
        assert!(parse_authorization(&ok.replace("host;x-acs-date", "x-acs-date;host")).is_err());
        assert!(parse_authorization(&ok.replace("host;", "Host;")).is_err());
        assert!(parse_authorization(&ok.replace(",Signature=", ", Signature=")).is_err());
        assert!(parse_authorization("ACS3-HMAC-SHA256 Credential=AK").is_err());
    }
}
