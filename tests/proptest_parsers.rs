//! Property tests for the parsers that have none in their own module: the configuration
//! (`Config::from_toml` on arbitrary text and on mutated valid files) and the kubelet plugin's
//! request handling (arbitrary and JSON-shaped stdin). Host, WWW-Authenticate, ARN and annotation
//! properties live next to their modules (`src/{registry,challenge,ids,policy}/tests.rs`).

use acr_broker::client::BrokerClient;
use acr_broker::clock::SharedClock;
use acr_broker::config::Config;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// A valid configuration touching every table, the base for mutations.
const VALID: &str = r#"prefetch = ["demo-registry.cn-hangzhou.cr.aliyuncs.com/ns/app:1"]

[server]
socket = "/run/acr-broker/broker.sock"
socket_mode = "0660"
socket_group = "acr-broker"
listen = "127.0.0.1:9466"
metrics = "127.0.0.1:9465"
allowed_uids = [0, 1000]
allowed_gids = [44]
max_connections = 256
header_timeout_seconds = 5

[identity]
source = "ecs-ram-role"
role_name = "node-role"
imdsv1_disabled = true

[aliyun]
region = "cn-hangzhou"
sts_endpoint = "https://sts.{region}.aliyuncs.com"
cr_endpoint = "https://cr.{region}.aliyuncs.com"
metadata_endpoint = "http://100.100.100.200"

[defaults]
acr_instance_ids = ["cri-devaaaaaaaaaaaa01", "cn-beijing:cri-bjaaaaaaaaaaaa03"]
acr_service_arns = ["acs:ram::1111111111111111:role/eci-acr-service"]
acr_user_arns = ["acs:ram::2222222222222222:role/eci-acr-user"]

[service_account_tokens]
oidc_provider_arn = "acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev"

[cache]
capacity = 1000
refresh_fraction = 0.5
refresh_jitter = 0.1
expiry_margin_seconds = 60
min_remaining_seconds = 120
negative_ttl_seconds = 30
idle_seconds = 3600
session_duration_seconds = 3600

[upstream]
sts_rate_per_second = 10.0
sts_burst = 20
max_concurrent = 32
max_attempts = 3
backoff_base_ms = 200
backoff_max_ms = 10000
api_timeout_ms = 5000
metadata_timeout_ms = 1000

[registry_token]
allowed_realm_hosts = ["auth.example.com", "127.0.0.1:5001"]

[mirror]
listen = "127.0.0.1:5005"
registries = ["demo-registry.cn-hangzhou.cr.aliyuncs.com", "registry.demo.example.com"]
upstream_timeout_seconds = 30
"#;

#[test]
fn the_base_config_is_valid() {
    let c = Config::from_toml(VALID, "valid.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.max_connections, 256);
    assert_eq!(c.defaults.user_arns.len(), 1);
}

/// Values that stress the validators: huge, negative, NaN-ish, wrong types, odd strings.
fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("-inf".to_owned()),
        Just("1e308".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("[\"\"]".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"http://sts.aliyuncs.com\"".to_owned()),
        Just("\"https://\"".to_owned()),
        Just("\"0o7777\"".to_owned()),
        Just("\"\u{0430}\u{0431}\"".to_owned()),
        "-?[0-9]{1,25}(\\.[0-9]{0,5})?",
        "\"[^\"\\\\\\n]{0,40}\"",
        "\\[\"[^\"\\\\\\n]{0,30}\"(, \"[^\"\\\\\\n]{0,30}\"){0,3}\\]",
    ]
}

/// A mutation of one line or byte range of the valid config.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value of line `n` (mod line count) by an odd value.
    Value(usize, String),
    /// Delete line `n`.
    DeleteLine(usize),
    /// Duplicate line `n`.
    DuplicateLine(usize),
    /// Insert text at a byte offset (rounded down to a char boundary).
    Insert(usize, String),
    /// Remove a byte range.
    Cut(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), odd_value()).prop_map(|(n, v)| Mutation::Value(n, v)),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), "\\PC{0,20}|[\\[\\]=\"\\n#,{}.]{1,5}").prop_map(|(at, s)| Mutation::Insert(at, s)),
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Mutation::Cut(at, len)),
    ]
}

fn floor_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, m: &Mutation) -> String {
    let lines: Vec<&str> = text.lines().collect();
    match m {
        Mutation::Value(n, v) => {
            let i = n % lines.len();
            lines
                .iter()
                .enumerate()
                .map(|(j, l)| match (j == i, l.split_once('=')) {
                    (true, Some((k, _))) => format!("{k}= {v}"),
                    _ => (*l).to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Mutation::DeleteLine(n) => {
            let i = n % lines.len();
            lines.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, l)| *l).collect::<Vec<_>>().join("\n")
        }
        Mutation::DuplicateLine(n) => {
            let i = n % lines.len();
            let mut out: Vec<&str> = lines.clone();
            out.insert(i, lines[i]);
            out.join("\n")
        }
        Mutation::Insert(at, s) => {
            let at = floor_boundary(text, at % (text.len() + 1));
            format!("{}{s}{}", &text[..at], &text[at..])
        }
        Mutation::Cut(at, len) => {
            let start = floor_boundary(text, at % (text.len() + 1));
            let end = floor_boundary(text, (start + len).min(text.len()));
            format!("{}{}", &text[..start], &text[end..])
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_from_arbitrary_text_never_panics(s in "\\PC{0,400}") {
        if let Err(e) = Config::from_toml(&s, "fuzz.toml") {
            prop_assert!(!e.issues.is_empty());
        }
    }

    #[test]
    fn config_from_toml_like_text_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                "\\[(server|identity|aliyun|defaults|cache|upstream|registry_token|service_account_tokens|x)\\]",
                "[a-z_]{1,24} = -?[0-9]{1,22}",
                "[a-z_]{1,24} = \"[^\"\\\\\\n]{0,30}\"",
                "[a-z_]{1,24} = \\[[0-9, ]{0,20}\\]",
            ],
            0..20,
        )
    ) {
        let text = lines.join("\n");
        if let Err(e) = Config::from_toml(&text, "fuzz.toml") {
            prop_assert!(!e.issues.is_empty());
        }
    }

    #[test]
    fn mutated_valid_config_never_panics(mutations in prop::collection::vec(mutation(), 1..5)) {
        let text = mutations.iter().fold(VALID.to_owned(), |t, m| apply(&t, m));
        match Config::from_toml(&text, "mutated.toml") {
            Ok(c) => {
                // Whatever was accepted keeps the invariants the daemon relies on.
                prop_assert!(c.server.socket_mode & 0o007 == 0, "socket never world-accessible");
                prop_assert!(c.server.max_connections >= 1);
                prop_assert!(c.aliyun.sts_endpoint.starts_with("https://") || c.aliyun.sts_endpoint.starts_with("http://127."));
                prop_assert!(c.server.metrics.is_none_or(|a| a.ip().is_loopback()));
                prop_assert!(c.server.listen.is_none_or(|a| a.ip().is_loopback()));
            }
            Err(e) => {
                prop_assert!(!e.issues.is_empty());
                // Every issue names a key and, where found, a line inside the file.
                for issue in &e.issues {
                    prop_assert!(!issue.key.is_empty());
                    if let Some(line) = issue.line {
                        prop_assert!(line >= 1 && line <= text.lines().count() + 1, "line {line} of {}", text.lines().count());
                    }
                }
            }
        }
    }
}

// === kubelet plugin requests ===

fn plugin(stdin: &[u8]) -> (i32, Vec<u8>, Vec<u8>) {
    let client = BrokerClient::new("/nonexistent/acr-broker-proptest.sock");
    let clock: SharedClock = acr_broker::clock::system();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut input = stdin;
    let code = acr_broker::kubelet::run_with(&client, &clock, &mut input, &mut out, &mut err);
    (code, out, err)
}

/// JSON values shaped like kubelet requests: known keys with random values, plus random keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::String),
        Just(Value::String("credentialprovider.kubelet.k8s.io/v1".into())),
        Just(Value::String("CredentialProviderRequest".into())),
        Just(Value::String("demo-registry.cn-hangzhou.cr.aliyuncs.com/ns/app".into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("kind".to_owned()),
        Just("apiVersion".to_owned()),
        Just("image".to_owned()),
        Just("serviceAccountToken".to_owned()),
        Just("serviceAccountAnnotations".to_owned()),
        Just("k8s.aliyun.com/acr-service-arns".to_owned()),
        Just("k8s.aliyun.com/acr-instance-ids".to_owned()),
        "[a-zA-Z/.-]{0,12}",
    ]
}

fn request_like() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![Just(Value::from("CredentialProviderRequest")), json_value()]),
        prop::option::of(prop_oneof![
            Just(Value::from("credentialprovider.kubelet.k8s.io/v1")),
            Just(Value::from("credentialprovider.kubelet.k8s.io/v1beta1")),
            json_value()
        ]),
        prop::option::of(prop_oneof![
            "\\PC{0,60}".prop_map(Value::String),
            Just(Value::from("demo-registry.cn-hangzhou.cr.aliyuncs.com/ns/app")),
            json_value()
        ]),
        prop::option::of(json_value()),
        prop::option::of(prop::collection::btree_map(key(), "\\PC{0,40}", 0..4)),
        prop::option::of((key(), json_value())),
    )
        .prop_map(|(kind, api, image, token, annotations, extra)| {
            let mut m = Map::new();
            for (k, v) in [("kind", kind), ("apiVersion", api), ("image", image), ("serviceAccountToken", token)] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            if let Some(a) = annotations {
                m.insert(
                    "serviceAccountAnnotations".to_owned(),
                    Value::Object(a.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
                );
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

fn check_outcome(code: i32, out: &[u8], err: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(code == 0 || code == 1, "exit {code}");
    if code == 1 {
        prop_assert!(out.is_empty(), "no response on failure");
        let err = String::from_utf8_lossy(err);
        prop_assert!(err.starts_with("acr-broker kubelet-plugin: "), "{err}");
        prop_assert_eq!(err.trim_end().lines().count(), 1, "one line: {}", err);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn kubelet_request_from_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let (code, out, err) = plugin(&bytes);
        check_outcome(code, &out, &err)?;
    }

    #[test]
    fn kubelet_request_from_json_shaped_input_never_panics(v in request_like(), trailing in "\\s{0,3}|\\PC{0,3}") {
        let text = format!("{v}{trailing}");
        let (code, out, err) = plugin(text.as_bytes());
        check_outcome(code, &out, &err)?;
        // The daemon is unreachable here, so nothing may ever succeed.
        prop_assert_eq!(code, 1);
    }
}
