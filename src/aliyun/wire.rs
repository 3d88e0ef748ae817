//! Reading JSON answers without panics and without echoing values into errors.
//!
//! Responses are parsed into a `serde_json::Value` and fields are pulled out by path, so a
//! missing or mistyped field becomes a [`Error::Decode`] that names the field, never its value
//! (a serde type error would quote the value, which may be a secret).

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use super::Error;
use crate::secret::Secret;

/// Parses a JSON object body.
pub(crate) fn parse_json(action: &str, body: &[u8]) -> Result<Value, Error> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::decode(action, format!("body is not JSON (line {}, column {})", e.line(), e.column())))?;
    if !v.is_object() {
        return Err(Error::decode(action, "body is not a JSON object"));
    }
    Ok(v)
}

/// The value at a dotted path (`Credentials.AccessKeyId`), if present and not null.
pub(crate) fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for key in path.split('.') {
        cur = cur.get(key)?;
    }
    (!cur.is_null()).then_some(cur)
}

/// A required non-empty string field.
pub(crate) fn req_str(v: &Value, action: &str, path: &str) -> Result<String, Error> {
    match field(v, path) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(Error::decode(action, format!("field {path} is empty"))),
        Some(_) => Err(Error::decode(action, format!("field {path} is not a string"))),
        None => Err(Error::decode(action, format!("field {path} is missing"))),
    }
}

/// A required non-empty string field holding credential material.
pub(crate) fn req_secret(v: &Value, action: &str, path: &str) -> Result<Secret, Error> {
    req_str(v, action, path).map(Secret::new)
}

/// An optional string field (absent, null or not a string gives `None`).
pub(crate) fn opt_str(v: &Value, path: &str) -> Option<String> {
    match field(v, path) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// A required integer field; a numeric string is accepted too (some APIs quote numbers).
pub(crate) fn req_i64(v: &Value, action: &str, path: &str) -> Result<i64, Error> {
    opt_i64(v, action, path)?.ok_or_else(|| Error::decode(action, format!("field {path} is missing")))
}

/// An optional integer field; present but not an integer is an error.
pub(crate) fn opt_i64(v: &Value, action: &str, path: &str) -> Result<Option<i64>, Error> {
    match field(v, path) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| Error::decode(action, format!("field {path} is not an integer")))
        }
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Error::decode(action, format!("field {path} is not an integer"))),
        Some(_) => Err(Error::decode(action, format!("field {path} is not an integer"))),
    }
}

/// A required array field.
pub(crate) fn req_array<'a>(v: &'a Value, action: &str, path: &str) -> Result<&'a [Value], Error> {
    match field(v, path) {
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(Error::decode(action, format!("field {path} is not an array"))),
        None => Err(Error::decode(action, format!("field {path} is missing"))),
    }
}

/// `x-acs-retry-after` (positive integer milliseconds), if present and valid.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let ms: u64 = headers.get("x-acs-retry-after")?.to_str().ok()?.trim().parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Builds the [`Error::Upstream`] for a non-2xx answer from the JSON (or XML) error body.
/// A body in neither shape gives code `Http<status>`; its content is not quoted.
pub(crate) fn upstream_error(action: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    let (code, message, request_id) = match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => (
            opt_str(&v, "Code").or_else(|| opt_str(&v, "code")),
            opt_str(&v, "Message").or_else(|| opt_str(&v, "message")),
            opt_str(&v, "RequestId").or_else(|| opt_str(&v, "requestId")),
        ),
        _ => {
            let text = String::from_utf8_lossy(body);
            (xml_tag(&text, "Code"), xml_tag(&text, "Message"), xml_tag(&text, "RequestId"))
        }
    };
    Error::Upstream {
        action: action.to_owned(),
        status,
        message: message.unwrap_or_else(|| format!("no error message in the response ({} bytes)", body.len())),
        code: code.filter(|c| !c.is_empty()).unwrap_or_else(|| format!("Http{status}")),
        request_id,
        retry_after: retry_after(headers),
    }
}

/// Fails unless the body says `"IsSuccess": true` (ACR EE answers some failures with HTTP 200).
pub(crate) fn check_is_success(v: &Value, action: &str, status: u16) -> Result<(), Error> {
    match field(v, "IsSuccess") {
        Some(Value::Bool(true)) => Ok(()),
        Some(Value::Bool(false)) => Err(Error::Upstream {
            action: action.to_owned(),
            status,
            code: opt_str(v, "Code").unwrap_or_else(|| "IsSuccessFalse".to_owned()),
            message: opt_str(v, "Message").unwrap_or_else(|| "the service answered IsSuccess=false".to_owned()),
            request_id: opt_str(v, "RequestId"),
            retry_after: None,
        }),
        Some(_) => Err(Error::decode(action, "field IsSuccess is not a boolean")),
        None => Err(Error::decode(action, "field IsSuccess is missing")),
    }
}

/// Text of the first `<tag>…</tag>` in a small XML error body.
fn xml_tag(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(text[start..start + len].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_json_rejects_non_objects_and_garbage() {
        assert!(parse_json("A", b"{}").is_ok());
        for bad in [&b"[]"[..], b"null", b"\"x\"", b"{", b"", b"<html>"] {
            let e = parse_json("A", bad).unwrap_err();
            assert_eq!(e.code(), "MalformedResponse");
        }
    }

    #[test]
    fn field_accessors_name_the_field_not_the_value() {
        let v: Value =
            serde_json::from_str(r#"{"C":{"S":"v","E":"","N":5,"Q":"7","B":true,"X":null},"A":[1]}"#).unwrap();
        assert_eq!(req_str(&v, "A", "C.S").unwrap(), "v");
        let e = req_str(&v, "A", "C.E").unwrap_err().to_string();
        assert!(e.contains("C.E is empty"), "{e}");
        let e = req_str(&v, "A", "C.N").unwrap_err().to_string();
        assert!(e.contains("C.N is not a string") && !e.contains('5'), "{e}");
        assert!(req_str(&v, "A", "C.X").unwrap_err().to_string().contains("missing"));
        assert!(req_str(&v, "A", "Z.Y").is_err());
        assert_eq!(req_i64(&v, "A", "C.N").unwrap(), 5);
        assert_eq!(req_i64(&v, "A", "C.Q").unwrap(), 7);
        assert!(req_i64(&v, "A", "C.S").is_err());
        assert!(req_i64(&v, "A", "C.B").is_err());
        assert_eq!(opt_i64(&v, "A", "C.Missing").unwrap(), None);
        assert_eq!(req_array(&v, "A", "A").unwrap().len(), 1);
        assert!(req_array(&v, "A", "C").is_err());
    }

    #[test]
    fn upstream_error_from_json_xml_and_junk() {
        let mut h = HeaderMap::new();
        h.insert("x-acs-retry-after", "1500".parse().unwrap());
        let e = upstream_error(
            "AssumeRole",
            400,
            &h,
            br#"{"RequestId":"R1","HostId":"sts.aliyuncs.com","Code":"Throttling.Api","Message":"Request was denied due to api flow control."}"#,
        );
        assert_eq!(e.code(), "Throttling.Api");
        assert_eq!(e.request_id(), Some("R1"));
        assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(e.status(), Some(400));

        let e = upstream_error(
            "GetAuthorizationToken",
            403,
            &HeaderMap::new(),
            br#"{"code":"NoPermission","message":"m","requestId":"r"}"#,
        );
        assert_eq!(e.code(), "NoPermission");
        assert_eq!(e.request_id(), Some("r"));
        assert_eq!(e.retry_after(), None);

        let e = upstream_error(
            "AssumeRole",
            404,
            &HeaderMap::new(),
            b"<?xml version='1.0'?><Error><RequestId>X</RequestId><Code>EntityNotExist.Role</Code><Message>m</Message></Error>",
        );
        assert_eq!(e.code(), "EntityNotExist.Role");

        let e = upstream_error("A", 502, &HeaderMap::new(), b"<html>bad gateway</html>");
        assert_eq!(e.code(), "Http502");
        assert!(!e.to_string().contains("bad gateway"));
        assert!(e.is_retryable());
    }

    #[test]
    fn retry_after_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("x-acs-retry-after", "0".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert("x-acs-retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert("x-acs-retry-after", "20".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(20)));
    }

    #[test]
    fn is_success_must_be_true() {
        let ok: Value = serde_json::from_str(r#"{"IsSuccess":true}"#).unwrap();
        assert!(check_is_success(&ok, "A", 200).is_ok());
        let no: Value = serde_json::from_str(r#"{"IsSuccess":false,"Code":"INSTANCE_NOT_EXIST"}"#).unwrap();
        let e = check_is_success(&no, "A", 200).unwrap_err();
        assert_eq!(e.code(), "INSTANCE_NOT_EXIST");
        assert!(!e.is_retryable());
        let missing: Value = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(check_is_success(&missing, "A", 200).unwrap_err().code(), "MalformedResponse");
        let wrong: Value = serde_json::from_str(r#"{"IsSuccess":"true"}"#).unwrap();
        assert!(check_is_success(&wrong, "A", 200).is_err());
    }
}
