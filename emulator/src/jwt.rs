//! Compact JWS (JWT) encoding and decoding with ES256 / RS256 keys.

use serde_json::{Map, Value};

use crate::keys::SigningKey;
use crate::util::{b64url, b64url_decode};

/// Signs `claims` with `key`; the header gets `alg`, `typ: JWT` and `extra` fields (e.g. `kid`).
pub fn encode(key: &SigningKey, extra: &[(&str, &str)], claims: &Value) -> Result<String, String> {
    let mut header = Map::new();
    header.insert("alg".into(), Value::String(key.alg().into()));
    header.insert("typ".into(), Value::String("JWT".into()));
    for (k, v) in extra {
        header.insert((*k).into(), Value::String((*v).into()));
    }
    let h = serde_json::to_vec(&Value::Object(header)).map_err(|e| e.to_string())?;
    let c = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let input = format!("{}.{}", b64url(&h), b64url(&c));
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64url(&sig)))
}

/// A JWT split into its parts; the signature is not yet checked.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Header object.
    pub header: Map<String, Value>,
    /// Claims object.
    pub claims: Map<String, Value>,
    /// `b64(header).b64(claims)`, the signed bytes.
    pub signing_input: String,
    /// Raw signature bytes.
    pub signature: Vec<u8>,
}

impl Decoded {
    /// The header's `alg`.
    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    /// Checks alg and signature against `key`.
    pub fn verify(&self, key: &SigningKey) -> bool {
        self.alg() == Some(key.alg()) && key.verify(self.signing_input.as_bytes(), &self.signature)
    }

    /// A string claim.
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// An integer claim (NumericDate).
    pub fn int_claim(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(Value::as_i64)
    }

    /// `aud` as a list (a string or an array of strings).
    pub fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    }
}

/// Splits and base64url-decodes a compact JWS; errors say which part is bad.
pub fn decode(token: &str) -> Result<Decoded, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("token is not three dot-separated parts".into());
    };
    let obj = |part: &str, what: &str| -> Result<Map<String, Value>, String> {
        let bytes = b64url_decode(part).ok_or(format!("{what} is not base64url"))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(format!("{what} is not a JSON object")),
        }
    };
    Ok(Decoded {
        header: obj(h, "header")?,
        claims: obj(c, "claims")?,
        signing_input: format!("{h}.{c}"),
        signature: b64url_decode(s).ok_or("signature is not base64url")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_verify() {
        let k = SigningKey::generate_es256().unwrap();
        let t = encode(&k, &[("kid", "AB:CD")], &serde_json::json!({"sub": "x", "aud": ["a", "b"]})).unwrap();
        let d = decode(&t).unwrap();
        assert_eq!(d.alg(), Some("ES256"));
        assert_eq!(d.header.get("kid").and_then(Value::as_str), Some("AB:CD"));
        assert_eq!(d.audiences(), vec!["a", "b"]);
        assert!(d.verify(&k));
        let other = SigningKey::generate_es256().unwrap();
        assert!(!d.verify(&other));
        assert!(decode("a.b").is_err());
        let mut tampered = t.clone();
        tampered.insert(t.find('.').unwrap() + 2, 'x');
        assert!(decode(&tampered).map(|d| !d.verify(&k)).unwrap_or(true));
    }
}
