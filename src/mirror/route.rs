//! What the mirror agrees to forward: the registry API v2 read paths and the `ns` query
//! parameter containerd adds, checked against the distribution grammar before anything else
//! happens (`docs/spec/api.md`, `reference/regexp.go`). Everything else is refused here, so
//! the mirror can never be used as a general proxy.

use std::fmt;

/// Longest repository name (distribution's `NameTotalLengthMax`).
const MAX_NAME: usize = 255;
/// Longest tag (distribution's tag grammar: 128 characters).
const MAX_TAG: usize = 128;
/// Longest request target we look at.
const MAX_TARGET: usize = 2048;

/// Which kind of registry call a request is; metrics and audit are labelled by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /v2/`: the API version check.
    Base,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// `/v2/<name>/tags/list`.
    Tags,
    /// `/v2/<name>/referrers/<digest>`.
    Referrers,
}

impl Kind {
    /// The metric label (`manifest`, `blob`, `other`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
            Kind::Base | Kind::Tags | Kind::Referrers => "other",
        }
    }
}

/// A request the mirror may forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Request {
    /// What it asks for.
    pub kind: Kind,
    /// The repository (`None` for [`Kind::Base`]).
    pub name: Option<String>,
    /// Tag or digest (manifests, blobs, referrers).
    pub reference: Option<String>,
    /// The registry named by `ns` (`host[:port]`, not yet checked against the policy).
    pub ns: String,
    /// Path and query to send upstream (`ns` removed; only `n`/`last` kept, for tags/list).
    pub upstream_target: String,
}

impl V2Request {
    /// The token scope this request needs (`repository:<name>:pull`), none for `/v2/`.
    pub fn scope(&self) -> Option<String> {
        self.name.as_ref().map(|n| format!("repository:{n}:pull"))
    }
}

/// Why a request was refused before anything was sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Not a v2 read path, or a malformed one (400).
    BadPath(&'static str),
    /// `ns` missing, repeated, or not a `host[:port]` (400).
    BadNs(&'static str),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadPath(why) => write!(f, "not a registry v2 read path: {why}"),
            RouteError::BadNs(why) => {
                write!(f, "{why}: the mirror needs ?ns=<registry host> (containerd adds it for hosts.toml mirrors)")
            }
        }
    }
}

/// Parses a request target (`/v2/…?ns=…`) into what may be forwarded.
pub fn parse(path: &str, query: Option<&str>) -> Result<V2Request, RouteError> {
    if path.len() + query.map_or(0, str::len) > MAX_TARGET {
        return Err(RouteError::BadPath("request target too long"));
    }
    // Names, tags and digests never need escaping: any `%` is an encoded slash, NUL or dot trick.
    if path.contains('%') || path.contains('\0') || path.contains('\\') {
        return Err(RouteError::BadPath("percent-encoded or control characters"));
    }
    let rest = path.strip_prefix("/v2/").ok_or(RouteError::BadPath("path must start with /v2/"))?;
    let (kind, name, reference) = if rest.is_empty() {
        (Kind::Base, None, None)
    } else {
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
            return Err(RouteError::BadPath("empty, `.` or `..` path segment"));
        }
        let n = segs.len();
        if n < 3 {
            return Err(RouteError::BadPath("expected /v2/<name>/(manifests|blobs|tags|referrers)/…"));
        }
        let (kind, name_end, reference) = match (segs[n - 2], segs[n - 1]) {
            ("tags", "list") => (Kind::Tags, n - 2, None),
            ("manifests", r) if is_tag(r) || is_digest(r) => (Kind::Manifest, n - 2, Some(r)),
            ("blobs", d) if is_digest(d) => (Kind::Blob, n - 2, Some(d)),
            ("referrers", d) if is_digest(d) => (Kind::Referrers, n - 2, Some(d)),
            ("manifests" | "blobs" | "referrers", _) => return Err(RouteError::BadPath("malformed tag or digest")),
            _ => return Err(RouteError::BadPath("expected /v2/<name>/(manifests|blobs|tags|referrers)/…")),
        };
        let name = segs[..name_end].join("/");
        if name.len() > MAX_NAME || !segs[..name_end].iter().all(|c| is_component(c)) {
            return Err(RouteError::BadPath("malformed repository name"));
        }
        (kind, Some(name), reference.map(str::to_owned))
    };
    let (ns, forwarded) = parse_query(query, kind)?;
    let mut upstream_target = path.to_owned();
    if !forwarded.is_empty() {
        let q = form_urlencoded::Serializer::new(String::new()).extend_pairs(forwarded).finish();
        upstream_target.push('?');
        upstream_target.push_str(&q);
    }
    Ok(V2Request { kind, name, reference, ns, upstream_target })
}

/// `ns` (exactly once, a registry host) and the pagination parameters of tags/list.
fn parse_query(query: Option<&str>, kind: Kind) -> Result<(String, Vec<(String, String)>), RouteError> {
    let mut ns = None;
    let mut forwarded = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "ns" if ns.is_some() => return Err(RouteError::BadNs("ns given more than once")),
            "ns" => ns = Some(v.into_owned()),
            "n" | "last" if kind == Kind::Tags && v.len() <= MAX_NAME => {
                forwarded.push((k.into_owned(), v.into_owned()))
            }
            _ => {}
        }
    }
    let ns = ns.ok_or(RouteError::BadNs("missing ns"))?;
    // Exactly `host[:port]`: the shared parser also accepts a scheme and a path, which ns never has.
    if ns.contains('/') {
        return Err(RouteError::BadNs("ns is not a registry host[:port]"));
    }
    match crate::registry::RegistryHost::parse(&ns) {
        Ok(h) => Ok((h.as_str().to_owned(), forwarded)),
        Err(_) => Err(RouteError::BadNs("ns is not a registry host[:port]")),
    }
}

/// A path component: `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`.
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty() && b.len() <= MAX_TAG && word(b[0]) && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// A digest: `algorithm:encoded`, algorithm lowercase alphanumerics joined by `+._-`, encoded
/// at least 32 of `[A-Za-z0-9=_-]`; `sha256` must be 64 lowercase hex digits.
fn is_digest(d: &str) -> bool {
    let Some((alg, enc)) = d.split_once(':') else { return false };
    let alg_ok = !alg.is_empty()
        && alg
            .split(['+', '.', '_', '-'])
            .all(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit()));
    let enc_ok =
        enc.len() >= 32 && enc.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'=' || x == b'_' || x == b'-');
    let sha_ok =
        alg != "sha256" || (enc.len() == 64 && enc.bytes().all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x)));
    alg_ok && enc_ok && sha_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:d5d66199bf0e1125a681bd13cf58a2769a8801d0f32420b4e068e6d2df5e8f88";
    const NS: Option<&str> = Some("ns=demo-registry.cn-hangzhou.cr.aliyuncs.com");

    #[test]
    fn read_paths_parse_with_kind_name_reference_and_scope() {
        let r = parse("/v2/eci_test/nginx/manifests/1.0", NS).expect("manifest");
        assert_eq!(
            (r.kind, r.name.as_deref(), r.reference.as_deref()),
            (Kind::Manifest, Some("eci_test/nginx"), Some("1.0"))
        );
        assert_eq!(r.ns, "demo-registry.cn-hangzhou.cr.aliyuncs.com");
        assert_eq!(r.upstream_target, "/v2/eci_test/nginx/manifests/1.0", "ns is not sent upstream");
        assert_eq!(r.scope().as_deref(), Some("repository:eci_test/nginx:pull"));
        assert_eq!(parse(&format!("/v2/a/b/c/blobs/{D}"), NS).expect("blob").kind, Kind::Blob);
        assert_eq!(parse(&format!("/v2/a/manifests/{D}"), NS).expect("by digest").kind, Kind::Manifest);
        assert_eq!(parse(&format!("/v2/a/referrers/{D}"), NS).expect("referrers").kind, Kind::Referrers);
        let base = parse("/v2/", NS).expect("base");
        assert_eq!((base.kind, base.scope()), (Kind::Base, None));
        let tags = parse("/v2/a/tags/list", Some("ns=127.0.0.1:5000&n=10&last=x&evil=1")).expect("tags");
        assert_eq!(tags.upstream_target, "/v2/a/tags/list?n=10&last=x");
        assert_eq!(tags.ns, "127.0.0.1:5000");
    }

    #[test]
    fn everything_else_is_refused_before_going_upstream() {
        for (path, why) in [
            ("/v2/../etc/passwd/manifests/1", "dot-dot"),
            ("/v2/a/../b/manifests/1", "dot-dot inside"),
            ("/v2/a%2Fb/manifests/1", "encoded slash"),
            ("/v2/a/manifests/1%00", "encoded NUL"),
            ("/v2/a//b/manifests/1", "empty segment"),
            ("/v2/A/manifests/1", "upper-case name"),
            ("/v2/a/manifests/-bad", "tag starting with -"),
            ("/v2/a/blobs/1.0", "blob by tag"),
            ("/v2/a/blobs/sha256:abc", "short digest"),
            ("/v2/a/blobs/uploads/", "uploads"),
            ("/v2/_catalog", "catalog"),
            ("/v1/credentials/x", "not v2"),
            ("/v2", "no trailing slash"),
            ("/metrics", "not v2"),
            ("/v2/a/manifests", "no reference"),
        ] {
            assert!(matches!(parse(path, NS), Err(RouteError::BadPath(_))), "{why}: {path} should be refused");
        }
    }

    #[test]
    fn ns_must_be_present_once_and_a_host() {
        assert!(matches!(parse("/v2/", None), Err(RouteError::BadNs(_))));
        assert!(matches!(parse("/v2/", Some("ns=")), Err(RouteError::BadNs(_))));
        assert!(matches!(parse("/v2/", Some("ns=a.com&ns=b.com")), Err(RouteError::BadNs(_))));
        assert!(matches!(parse("/v2/", Some("ns=user:pw@a.com")), Err(RouteError::BadNs(_))));
        assert!(matches!(parse("/v2/", Some("ns=a.com/x")), Err(RouteError::BadNs(_))));
    }

    #[test]
    fn grammar_helpers_follow_distribution() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "nginx1"] {
            assert!(is_component(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a___b", "a.-b", "Ab"] {
            assert!(!is_component(bad), "{bad}");
        }
        assert!(is_tag("1.0") && is_tag("_x") && !is_tag(".x") && !is_tag(&"a".repeat(129)));
        assert!(is_digest(D) && !is_digest("sha256:D5D66199BF0E1125A681BD13CF58A2769A8801D0F32420B4E068E6D2DF5E8F88"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]

        /// Any target parses without a panic, and what is accepted is a clean v2 read path.
        #[test]
        fn any_target_is_refused_or_clean(path in "/v2/([a-z0-9._%-]{1,6}/){1,3}(manifests/[a-zA-Z0-9._:%-]{1,12}|tags/list|blobs/sha256:[a-f0-9]{64})|/v2/[a-z0-9._/%:-]{0,60}|\\PC{0,80}", query in "(ns=[a-z0-9.:/@%-]{0,30})?(&(n|last|ns|x)=[^&]{0,8}){0,3}") {
            if let Ok(r) = parse(&path, Some(&query)) {
                let (p, q) = r.upstream_target.split_once('?').unwrap_or((&r.upstream_target, ""));
                proptest::prop_assert!(p.starts_with("/v2/"));
                proptest::prop_assert!(!p.contains("..") && !p.contains('%') && !p.contains("//"));
                proptest::prop_assert!(q.is_empty() || r.kind == Kind::Tags);
                proptest::prop_assert!(!r.ns.is_empty() && !r.ns.contains('/') && !r.ns.contains('@'));
                proptest::prop_assert!(!r.upstream_target.contains("ns="));
            }
        }
    }
}
