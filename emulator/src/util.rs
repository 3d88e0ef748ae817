//! Small helpers shared by the emulator modules: encoding, time formatting, random ids.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::{BASE64, BASE64URL_NOPAD, HEXLOWER, HEXUPPER};
use rand::Rng;
use sha2::{Digest, Sha256};

/// Percent-encodes `s` per RFC 3986 the way Alibaba's V3 canonical query wants it:
/// `A-Z a-z 0-9 - _ . ~` literal, every other UTF-8 byte as `%XY` with upper-case hex.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&HEXUPPER.encode(&[b]));
        }
    }
    out
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    HEXLOWER.encode(&Sha256::digest(data))
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Latest time the emulator represents: 9999-12-31T23:59:59Z.
pub const MAX_EPOCH_SECS: u64 = 253_402_300_799;

/// The time `secs` seconds after the Unix epoch (clamped to year 9999, never panics).
pub fn from_epoch_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(MAX_EPOCH_SECS))
}

/// `t + secs`, clamped to year 9999 instead of overflowing.
pub fn add_secs(t: SystemTime, secs: u64) -> SystemTime {
    from_epoch_secs(epoch_secs(t).saturating_add(secs))
}

/// Formats `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds), the format STS and ECS use.
pub fn iso8601(t: SystemTime) -> String {
    let secs = i64::try_from(epoch_secs(t)).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        ),
        Err(_) => "9999-12-31T23:59:59Z".to_string(),
    }
}

/// Parses exactly `YYYY-MM-DDTHH:MM:SSZ` (the `x-acs-date` format); `None` if malformed.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let dt = time::PrimitiveDateTime::parse(s, &fmt).ok()?.assume_utc();
    let secs = u64::try_from(dt.unix_timestamp()).ok()?;
    Some(from_epoch_secs(secs))
}

/// A random string of `len` characters from `alphabet`.
pub fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())])).collect()
}

/// A random alphanumeric string (mixed case) of `len` characters.
pub fn random_alnum(len: usize) -> String {
    random_from(b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789", len)
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill(&mut v[..]);
    v
}

/// A request id in the upper-case UUID shape the real services return.
pub fn request_id() -> String {
    let h = HEXUPPER.encode(&random_bytes(16));
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    BASE64URL_NOPAD.encode(data)
}

/// Decodes base64url with or without `=` padding.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    BASE64URL_NOPAD.decode(s.trim_end_matches('=').as_bytes()).ok()
}

/// Standard base64 with padding.
pub fn b64(data: &[u8]) -> String {
    BASE64.encode(data)
}

/// Decodes standard padded base64.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    BASE64.decode(s.as_bytes()).ok()
}

/// Constant-time equality for secrets and signatures.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Wildcard match where `*` in `pattern` matches any run of characters (ASCII case-insensitive).
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let v: Vec<char> = value.to_ascii_lowercase().chars().collect();
    let (mut pi, mut vi) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while vi < v.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Decodes the first PEM block labelled `label` (e.g. `PRIVATE KEY`) into DER bytes.
pub fn pem_decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    b64_decode(&body)
}

/// Encodes DER bytes as a PEM block labelled `label`.
pub fn pem_encode(der: &[u8], label: &str) -> String {
    let b = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encode_follows_rfc3986() {
        assert_eq!(percent_encode("ext id~*/é"), "ext%20id~%2A%2F%C3%A9");
        assert_eq!(percent_encode("a.b-c_d@e"), "a.b-c_d%40e");
    }

    #[test]
    fn iso8601_round_trips() {
        let t = parse_iso8601("2024-01-15T08:30:00Z").unwrap();
        assert_eq!(epoch_secs(t), 1_705_307_400);
        assert_eq!(iso8601(t), "2024-01-15T08:30:00Z");
        assert!(parse_iso8601("2024-01-15 08:30:00").is_none());
    }

    #[test]
    fn wildcard_match_handles_stars_and_case() {
        assert!(wildcard_match("cr:*", "cr:GetAuthorizationToken"));
        assert!(wildcard_match("acs:cr:*:1:instance/*", "acs:cr:cn-hangzhou:1:instance/cri-x"));
        assert!(!wildcard_match("acs:cr:*:1:instance/a", "acs:cr:cn-hangzhou:1:instance/b"));
        assert!(wildcard_match("acs:ram::1:role/Node-Role", "acs:ram::1:role/node-role"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("a*b", "acb-"));
    }
}
