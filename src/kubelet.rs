//! `acr-broker kubelet-plugin`: the kubelet image credential provider (exec plugin).
//!
//! The kubelet execs the plugin for each image that matches `matchImages` in its
//! CredentialProviderConfig, writes one `CredentialProviderRequest` on stdin and reads one
//! `CredentialProviderResponse` from stdout (credentialprovider.kubelet.k8s.io/v1). The plugin forwards the image,
//! the pod's service-account token and its `k8s.aliyun.com/acr-*` annotations to the daemon,
//! and lets the kubelet cache the answer per registry for half its remaining life.
//! Failures exit non-zero with the reason on stderr, which the kubelet appends to its log line.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::client::{one_line, Answer, BrokerClient, CredentialsRequest};
use crate::clock::SharedClock;
use crate::secret::Secret;

/// The plugin API versions the kubelet may speak; the response echoes the request's.
pub const API_VERSIONS: [&str; 3] = [
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];

/// Prefix of the annotations that select instance and role chain (`k8s.aliyun.com/acr-`).
pub const ACR_ANNOTATION_PREFIX: &str = "k8s.aliyun.com/acr-";

/// How long the kubelet may cache a "not ACR" answer: 1 minute.
pub const NOT_OURS_CACHE: Duration = Duration::from_secs(60);

/// Time allowed for the daemon to answer: 50 s, inside the kubelet's hard 1-minute exec limit.
pub const KUBELET_TIMEOUT: Duration = Duration::from_secs(50);

/// Most bytes read from stdin (1 MiB; a request with token and annotations is a few KiB).
const MAX_STDIN: u64 = 1024 * 1024;

const PREFIX: &str = "acr-broker kubelet-plugin";

/// The request the kubelet writes on stdin. The v1 request gains fields in place (1.33 added
/// the service-account ones), so fields this plugin does not know are accepted and ignored —
/// a stricter decoder would make every pull go ahead without credentials after a kubelet
/// upgrade. Only their names are logged (at debug), never their values.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialProviderRequest {
    kind: String,
    api_version: String,
    image: String,
    #[serde(default)]
    service_account_token: Option<Secret>,
    #[serde(default)]
    service_account_annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

/// The response the kubelet reads; field names per `credentialprovider.kubelet.k8s.io`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CredentialProviderResponse<'a> {
    kind: &'static str,
    api_version: &'a str,
    cache_key_type: &'static str,
    cache_duration: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<BTreeMap<&'a str, AuthConfig<'a>>>,
}

#[derive(Serialize)]
struct AuthConfig<'a> {
    username: &'a str,
    password: &'a str,
}

/// Runs the plugin against the socket from the environment; returns the exit status.
pub fn run(stdin: &mut dyn Read, stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
    let client = BrokerClient::from_env()
        .with_timeout(KUBELET_TIMEOUT)
        .with_user_agent(format!("acr-broker-kubelet-plugin/{}", env!("CARGO_PKG_VERSION")));
    run_with(&client, &crate::clock::system(), stdin, stdout, stderr)
}

/// [`run`] with a given client and clock (tests use a fake daemon and a manual clock).
pub fn run_with(
    client: &BrokerClient,
    clock: &SharedClock,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let written = handle(client, clock, stdin).and_then(|json| {
        writeln!(stdout, "{json}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write the response to stdout: {e}"))
    });
    match written {
        Ok(()) => 0,
        Err(reason) => {
            let _ = writeln!(stderr, "{PREFIX}: {reason}");
            1
        }
    }
}

/// Request in, response JSON out, or the reason there is none.
fn handle(client: &BrokerClient, clock: &SharedClock, stdin: &mut dyn Read) -> Result<String, String> {
    let request = read_request(stdin)?;
    if !request.unknown.is_empty() {
        let names: Vec<&str> = request.unknown.keys().map(String::as_str).collect();
        tracing::debug!(fields = ?names, "ignoring request fields this plugin does not know");
    }
    let host = crate::registry::host_from_image(&request.image)
        .map_err(|e| format!("image {:?} has no usable registry host: {e}", request.image))?;
    // The auth key must match the image as the kubelet sees it, so keep the image's own spelling.
    let auth_key = request
        .image
        .split_once('/')
        .map(|(first, _)| first)
        .filter(|first| first.eq_ignore_ascii_case(host.as_str()))
        .unwrap_or(host.as_str());
    let sa_annotations = request.service_account_annotations.unwrap_or_default();
    let daemon_request = CredentialsRequest {
        registry: host.as_str().to_owned(),
        image: Some(request.image.clone()),
        annotations: sa_annotations
            .iter()
            .filter(|(k, _)| k.starts_with(ACR_ANNOTATION_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        service_account_token: request.service_account_token,
        service_account_annotations: sa_annotations,
    };
    let socket = client.socket().display().to_string();
    let answer = client
        .post_credentials(&daemon_request)
        .map_err(|e| format!("no credentials for {}: {}", request.image, one_line(&e.to_string())))?;
    let mut response = CredentialProviderResponse {
        kind: "CredentialProviderResponse",
        api_version: &request.api_version,
        cache_key_type: "Registry",
        cache_duration: go_duration(NOT_OURS_CACHE),
        auth: None,
    };
    match &answer {
        Answer::Credentials(c) => {
            response.cache_duration = go_duration(cache_duration(c.expires_at, clock.now()));
            let config = AuthConfig { username: &c.username, password: c.password.expose_secret() };
            response.auth = Some(BTreeMap::from([(auth_key, config)]));
        }
        Answer::NotOurs { .. } => {}
        Answer::Error { status, code, message, retry_after } => {
            let code = if code.is_empty() { String::new() } else { format!(" {code}") };
            let retry = retry_after.map(|s| format!("; retry in {s}s")).unwrap_or_default();
            return Err(format!(
                "no credentials for {} (registry {}): {status}{code}: {message}{retry} (daemon socket {socket})",
                request.image,
                host.as_str()
            ));
        }
    }
    serde_json::to_string(&response).map_err(|e| format!("cannot encode the response: {e}"))
}

/// Reads and validates the request: known apiVersion and kind, non-empty image, no extra fields.
fn read_request(stdin: &mut dyn Read) -> Result<CredentialProviderRequest, String> {
    let mut buf = Vec::new();
    stdin.take(MAX_STDIN + 1).read_to_end(&mut buf).map_err(|e| format!("cannot read stdin: {e}"))?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(format!("stdin is larger than {MAX_STDIN} bytes; expected one CredentialProviderRequest"));
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err("stdin is empty; expected a CredentialProviderRequest JSON object from the kubelet".into());
    }
    let request: CredentialProviderRequest =
        serde_json::from_slice(&buf).map_err(|e| format!("stdin is not a valid CredentialProviderRequest: {e}"))?;
    if request.kind != "CredentialProviderRequest" {
        return Err(format!("kind {:?} is not CredentialProviderRequest", request.kind));
    }
    if !API_VERSIONS.contains(&request.api_version.as_str()) {
        return Err(format!(
            "apiVersion {:?} is not supported; expected one of {}",
            request.api_version,
            API_VERSIONS.join(", ")
        ));
    }
    if request.image.is_empty() {
        return Err("image is empty".into());
    }
    Ok(request)
}

/// How long the kubelet may cache a credential: half its remaining life, whole seconds, never
/// negative (e.g. expiring in 59 min → 29m30s).
pub fn cache_duration(expires_at: SystemTime, now: SystemTime) -> Duration {
    let remaining = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
    Duration::from_secs(remaining.as_secs() / 2)
}

/// Formats a duration as Go's `time.Duration.String` does for whole seconds (`1h2m3s`, `1m0s`,
/// `45s`); anything under one second is `0s` (the kubelet then does not cache).
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake_daemon::FakeDaemon;
    use crate::clock::{parse_rfc3339, ManualClock};

    const EXPIRES: &str = "2030-01-01T01:00:00Z";
    const OK: &str = r#"{"username":"cr_temp_user","password":"pw-123","expires_at":"2030-01-01T01:00:00Z","registry":"demo-registry.cn-hangzhou.cr.aliyuncs.com","region":"cn-hangzhou","instance_id":"cri-abc","edition":"enterprise"}"#;
    const NOT_OURS: &str = r#"{"error":{"code":"not_acr_registry","message":"not ACR"}}"#;

    /// Runs the plugin with the clock 59 minutes before expiry; returns (exit, stdout, stderr).
    fn plugin(client: &BrokerClient, input: &str) -> (i32, String, String) {
        let expires = parse_rfc3339(EXPIRES).unwrap();
        let clock: SharedClock = ManualClock::new(expires - Duration::from_secs(59 * 60));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(client, &clock, &mut input.as_bytes(), &mut out, &mut err);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    fn request(api_version: &str, extra: &str) -> String {
        format!(
            r#"{{"kind":"CredentialProviderRequest","apiVersion":"{api_version}","image":"demo-registry.cn-hangzhou.cr.aliyuncs.com/ns/app"{extra}}}"#
        ) + "\n"
    }

    fn nowhere() -> BrokerClient {
        BrokerClient::new("/nonexistent/acr-broker-test.sock")
    }

    #[test]
    fn v1_request_gets_registry_keyed_auth_and_half_life_cache() {
        let daemon = FakeDaemon::answering(200, OK);
        let (code, out, err) = plugin(&BrokerClient::new(daemon.socket()), &request(API_VERSIONS[0], ""));
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"29m30s","auth":{"demo-registry.cn-hangzhou.cr.aliyuncs.com":{"username":"cr_temp_user","password":"pw-123"}}}"#
                .to_owned()
                + "\n"
        );
        let seen = &daemon.seen()[0];
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/v1/credentials"));
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(body["registry"], "demo-registry.cn-hangzhou.cr.aliyuncs.com");
        assert_eq!(body["image"], "demo-registry.cn-hangzhou.cr.aliyuncs.com/ns/app");
        assert!(body.get("service_account_token").is_none());
    }

    #[test]
    fn older_api_versions_are_echoed() {
        let daemon = FakeDaemon::answering(200, OK);
        for v in &API_VERSIONS[1..] {
            let (code, out, err) = plugin(&BrokerClient::new(daemon.socket()), &request(v, ""));
            assert_eq!(code, 0, "{err}");
            let resp: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(resp["apiVersion"], *v);
        }
    }

    #[test]
    fn service_account_token_and_annotations_are_forwarded() {
        let daemon = FakeDaemon::answering(200, OK);
        let extra = r#","serviceAccountToken":"sa.jwt.token","serviceAccountAnnotations":{"k8s.aliyun.com/acr-service-arns":"acs:ram::1:role/a","k8s.aliyun.com/acr-instance-ids":"cri-abc","team":"x"}"#;
        let (code, _, err) = plugin(&BrokerClient::new(daemon.socket()), &request(API_VERSIONS[0], extra));
        assert_eq!(code, 0, "{err}");
        let body: serde_json::Value = serde_json::from_str(&daemon.seen()[0].body).unwrap();
        assert_eq!(body["service_account_token"], "sa.jwt.token");
        assert_eq!(
            body["annotations"],
            serde_json::json!({"k8s.aliyun.com/acr-service-arns":"acs:ram::1:role/a","k8s.aliyun.com/acr-instance-ids":"cri-abc"})
        );
        assert_eq!(body["service_account_annotations"]["team"], "x");
    }

    #[test]
    fn not_ours_is_a_valid_response_without_auth() {
        let daemon = FakeDaemon::answering(404, NOT_OURS);
        let input = r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"docker.io/library/nginx"}"#;
        let (code, out, err) = plugin(&BrokerClient::new(daemon.socket()), input);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":\"1m0s\"}\n"
        );
        let body: serde_json::Value = serde_json::from_str(&daemon.seen()[0].body).unwrap();
        assert_eq!(body["registry"], "docker.io");
    }

    #[test]
    fn unknown_request_fields_are_ignored_not_fatal() {
        // A future kubelet adds fields in place; the plugin must still answer.
        let daemon = FakeDaemon::answering(200, OK);
        let extra = r#","imagePullPolicy":"Always","futureField":{"nested":[1,2,3]}"#;
        let (code, out, err) = plugin(&BrokerClient::new(daemon.socket()), &request(API_VERSIONS[0], extra));
        assert_eq!(code, 0, "{err}");
        // The response stays strict: only the fields the kubelet knows.
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["apiVersion", "auth", "cacheDuration", "cacheKeyType", "kind"]);
        assert_eq!(v["auth"]["demo-registry.cn-hangzhou.cr.aliyuncs.com"]["password"], "pw-123");
    }

    #[test]
    fn bad_input_is_explained() {
        let cases = [
            ("", "stdin is empty"),
            ("  \n", "stdin is empty"),
            ("garbage", "not a valid CredentialProviderRequest"),
            (
                r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1"}"#,
                "missing field `image`",
            ),
            (
                &request("credentialprovider.kubelet.k8s.io/v2", ""),
                "apiVersion \"credentialprovider.kubelet.k8s.io/v2\" is not supported",
            ),
            (&request(API_VERSIONS[0], "").replace("CredentialProviderRequest", "Pod"), "kind \"Pod\""),
            (
                r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":""}"#,
                "image is empty",
            ),
            (&(request(API_VERSIONS[0], "") + "{}"), "trailing characters"),
        ];
        for (input, want) in cases {
            let (code, out, err) = plugin(&nowhere(), input);
            assert_eq!((code, out.as_str()), (1, ""), "{input:?}");
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn denied_and_daemon_down_fail_with_reason_on_stderr() {
        let daemon = FakeDaemon::answering(403, r#"{"error":{"code":"NoPermission","message":"denied"}}"#);
        let (code, out, err) = plugin(&BrokerClient::new(daemon.socket()), &request(API_VERSIONS[0], ""));
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(err.contains("403 NoPermission: denied"), "{err}");
        assert!(err.contains(&daemon.socket().display().to_string()), "{err}");
        let (code, _, err) = plugin(&nowhere(), &request(API_VERSIONS[0], ""));
        assert_eq!(code, 1);
        assert!(err.contains("cannot reach acr-broker at /nonexistent/acr-broker-test.sock"), "{err}");
    }

    #[test]
    fn go_duration_matches_go_formatting() {
        let table = [
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "1m0s"),
            (61, "1m1s"),
            (1770, "29m30s"),
            (3600, "1h0m0s"),
            (3661, "1h1m1s"),
            (43200, "12h0m0s"),
            (90061, "25h1m1s"),
        ];
        for (secs, want) in table {
            assert_eq!(go_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
        assert_eq!(go_duration(Duration::from_millis(999)), "0s");
    }

    #[test]
    fn cache_duration_is_half_the_remaining_life_and_never_negative() {
        let t = parse_rfc3339(EXPIRES).unwrap();
        assert_eq!(cache_duration(t, t - Duration::from_secs(3540)), Duration::from_secs(1770));
        assert_eq!(cache_duration(t, t - Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(cache_duration(t, t), Duration::ZERO);
        assert_eq!(cache_duration(t, t + Duration::from_secs(600)), Duration::ZERO);
    }
}
