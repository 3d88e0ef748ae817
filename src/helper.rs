//! The docker credential-helper protocol (`docker-credential-acr-broker <verb>`).
//!
//! docker, nerdctl, skopeo, podman and buildah exec the helper once per registry lookup with
//! one verb on argv and the server URL on stdin. `get` asks the daemon over its socket; the
//! other verbs exist so `docker login`/`logout` keep working (credentials are brokered, not
//! stored). Per the protocol every failure is one line on **stdout** with exit status 1, and
//! "not ours" is exactly [`NOT_FOUND`] so the caller falls back to its other credentials.

use std::io::{Read, Write};

use serde::Serialize;

use crate::client::{one_line, Answer, BrokerClient};

/// The exact not-found message callers test for (docker-credential-helpers `errCredentialsNotFoundMessage`).
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// The message for an empty server URL on `get`.
pub const NO_SERVER_URL: &str = "no credentials server URL";

/// Most bytes read from stdin; a server URL or a `store` payload is far smaller (64 KiB).
const MAX_STDIN: u64 = 64 * 1024;

const USAGE: &str = "Usage: docker-credential-acr-broker <store|get|erase|list|version>\n\
\n\
Docker credential helper for Alibaba Cloud Container Registry. `get` reads a registry\n\
host[:port] on stdin and asks the acr-broker daemon (socket: $ACR_BROKER_SOCKET, default\n\
/run/acr-broker/broker.sock) for temporary pull credentials. `store` and `erase` succeed\n\
without storing anything; `list` prints {}.";

/// Runs the helper with `args` (argv without the program name) against the socket from the
/// environment; returns the process exit status.
pub fn run(args: Vec<String>, stdin: &mut dyn Read, stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
    let client =
        BrokerClient::from_env().with_user_agent(format!("docker-credential-acr-broker/{}", env!("CARGO_PKG_VERSION")));
    run_with_client(args, &client, stdin, stdout, stderr)
}

/// [`run`] against a given client (tests point it at a fake daemon without touching the env).
pub fn run_with_client(
    args: Vec<String>,
    client: &BrokerClient,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let (code, text) = match args.as_slice() {
        [verb] => match verb.as_str() {
            "get" => get(client, stdin),
            "store" => store_or_erase(stdin, true),
            "erase" => store_or_erase(stdin, false),
            "list" => (0, "{}".to_owned()),
            "version" | "--version" | "-v" => {
                (0, format!("docker-credential-acr-broker (acr-broker) {}", env!("CARGO_PKG_VERSION")))
            }
            "--help" | "-h" | "help" => (0, USAGE.to_owned()),
            _ => (1, USAGE.to_owned()),
        },
        _ => (1, USAGE.to_owned()),
    };
    if text.is_empty() {
        return code;
    }
    if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        let _ = writeln!(stderr, "docker-credential-acr-broker: cannot write to stdout: {e}");
        return 1;
    }
    code
}

/// Reads all of stdin (callers send no trailing newline and close it), at most [`MAX_STDIN`].
fn read_stdin(stdin: &mut dyn Read) -> Result<String, String> {
    let mut buf = Vec::new();
    stdin.take(MAX_STDIN + 1).read_to_end(&mut buf).map_err(|e| format!("acr-broker: cannot read stdin: {e}"))?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(format!("acr-broker: stdin is larger than {MAX_STDIN} bytes"));
    }
    String::from_utf8(buf).map_err(|_| "acr-broker: stdin is not UTF-8".to_owned())
}

/// True when the registry grammar says `host` may be an ACR registry (a default domain). Other
/// hosts can still be custom domains of an instance, which only the daemon can tell.
fn acr_shaped(host: &str) -> bool {
    crate::registry::RegistryHost::parse(host).is_ok_and(|h| !matches!(h.kind(), crate::registry::RegistryKind::Custom))
}

/// `store` (JSON with `ServerURL`) and `erase` (the server URL): nothing is stored, since ACR
/// credentials are brokered. For an ACR host that is success; for any other host, pretending
/// would make `docker login` print "Login Succeeded" and then lose the password, so it fails
/// and says how to configure docker instead.
fn store_or_erase(stdin: &mut dyn Read, store: bool) -> (i32, String) {
    let input = match read_stdin(stdin) {
        Ok(s) => s,
        Err(e) => return (1, e),
    };
    let server = if store {
        match serde_json::from_str::<StoreRequest>(&input) {
            Ok(r) => r.server_url,
            Err(e) => {
                return (
                    1,
                    format!("acr-broker: store expects {{\"ServerURL\",\"Username\",\"Secret\"}} on stdin: {e}"),
                )
            }
        }
    } else {
        input.trim().to_owned()
    };
    let host = normalize_server_url(&server).unwrap_or(server);
    if acr_shaped(&host) {
        return (0, String::new());
    }
    let verb = if store { "store" } else { "erase" };
    (
        1,
        format!(
            "acr-broker: cannot {verb} credentials for {host}: this helper only brokers ACR pull credentials and stores nothing; \
             keep \"credsStore\" for other registries and list ACR hosts under \"credHelpers\" instead"
        ),
    )
}

/// The part of a `store` request this helper reads; the secret is never kept or printed.
#[derive(serde::Deserialize)]
struct StoreRequest {
    #[serde(rename = "ServerURL")]
    server_url: String,
}

/// The `get` verb: server URL in, `{"ServerURL","Username","Secret"}` out.
fn get(client: &BrokerClient, stdin: &mut dyn Read) -> (i32, String) {
    let input = match read_stdin(stdin) {
        Ok(s) => s,
        Err(e) => return (1, e),
    };
    let input = input.trim();
    if input.is_empty() {
        return (1, NO_SERVER_URL.to_owned());
    }
    let host = match normalize_server_url(input) {
        Ok(h) => h,
        Err(e) => return (1, format!("acr-broker: {e}")),
    };
    let socket = client.socket().display().to_string();
    // A host that cannot be ACR must not wait out a daemon restart: docker treats any error but
    // "not found" as fatal, so with credsStore a restart would break every Docker Hub pull.
    let acr = acr_shaped(&host);
    let no_retry;
    let client = if acr {
        client
    } else {
        no_retry = client.clone().with_retry_budget(std::time::Duration::ZERO);
        &no_retry
    };
    match client.get_credentials(&host) {
        Ok(Answer::Credentials(c)) => {
            let out =
                HelperCredentials { server_url: &host, username: &c.username, secret: c.password.expose_secret() };
            match serde_json::to_string(&out) {
                Ok(json) => (0, json),
                Err(e) => (1, format!("acr-broker: cannot encode the answer: {e}")),
            }
        }
        Ok(Answer::NotOurs { .. }) => (1, NOT_FOUND.to_owned()),
        Ok(Answer::Error { status, code, message, retry_after }) => {
            let code = if code.is_empty() { String::new() } else { format!(" {code}") };
            let retry = retry_after.map(|s| format!("; retry in {s}s")).unwrap_or_default();
            (
                1,
                format!(
                    "acr-broker: no credentials for {host}: {status}{code}: {message}{retry} (daemon socket {socket})"
                ),
            )
        }
        Err(e) if !acr && e.is_unanswered() => (1, NOT_FOUND.to_owned()),
        Err(e) => (1, format!("acr-broker: no credentials for {host}: {}", one_line(&e.to_string()))),
    }
}

/// The `get` answer; field names and order are the protocol's (`ServerURL`, `Username`, `Secret`).
#[derive(Serialize)]
struct HelperCredentials<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a str,
}

/// Reduces what a caller sends (`host[:port]`, `https://host/v2/`, `HOST`) to `host[:port]`.
fn normalize_server_url(input: &str) -> Result<String, String> {
    crate::registry::RegistryHost::parse(input.trim()).map(|host| host.as_str().to_owned()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake_daemon::FakeDaemon;

    const OK: &str = r#"{"username":"cr_temp_user","password":"pw-123","expires_at":"2030-01-01T00:00:00Z","registry":"127.0.0.1:5000","region":"cn-hangzhou","instance_id":null,"edition":"personal"}"#;

    /// Runs the helper; returns (exit, stdout, stderr).
    fn helper(client: &BrokerClient, args: &[&str], input: &str) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args = args.iter().map(|s| s.to_string()).collect();
        let code = run_with_client(args, client, &mut input.as_bytes(), &mut out, &mut err);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    fn nowhere() -> BrokerClient {
        BrokerClient::new("/nonexistent/acr-broker-test.sock")
    }

    #[test]
    fn get_prints_the_exact_json_shape() {
        let daemon = FakeDaemon::answering(200, OK);
        let (code, out, err) = helper(&BrokerClient::new(daemon.socket()), &["get"], "127.0.0.1:5000");
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(out, "{\"ServerURL\":\"127.0.0.1:5000\",\"Username\":\"cr_temp_user\",\"Secret\":\"pw-123\"}\n");
        assert_eq!(daemon.seen()[0].path, "/v1/credentials/127.0.0.1%3A5000");
    }

    #[test]
    fn get_normalises_the_forms_callers_send() {
        let daemon = FakeDaemon::answering(200, OK);
        let client = BrokerClient::new(daemon.socket());
        for input in
            ["https://127.0.0.1:5000/v2/", "127.0.0.1:5000\n", "  http://127.0.0.1:5000  ", "127.0.0.1:5000/ns/app"]
        {
            let (code, out, _) = helper(&client, &["get"], input);
            assert_eq!(code, 0, "{input:?}: {out}");
            assert!(out.starts_with("{\"ServerURL\":\"127.0.0.1:5000\","), "{input:?}: {out}");
        }
        let (code, out, _) = helper(&client, &["get"], "Demo-Registry.CN-Hangzhou.cr.aliyuncs.com");
        assert_eq!(code, 0);
        assert!(out.contains("\"ServerURL\":\"demo-registry.cn-hangzhou.cr.aliyuncs.com\""), "{out}");
        let paths: Vec<String> = daemon.seen().into_iter().map(|s| s.path).collect();
        assert!(paths[..4].iter().all(|p| p == "/v1/credentials/127.0.0.1%3A5000"), "{paths:?}");
        assert_eq!(paths[4], "/v1/credentials/demo-registry.cn-hangzhou.cr.aliyuncs.com");
    }

    #[test]
    fn get_not_ours_is_the_exact_not_found_message() {
        let daemon = FakeDaemon::answering(
            404,
            r#"{"error":{"code":"not_acr_registry","message":"docker.io is not an ACR registry"}}"#,
        );
        let (code, out, _) = helper(&BrokerClient::new(daemon.socket()), &["get"], "https://index.docker.io/v1/");
        assert_eq!((code, out.as_str()), (1, "credentials not found in native keychain\n"));
        assert_eq!(daemon.seen()[0].path, "/v1/credentials/index.docker.io");
    }

    #[test]
    fn get_denied_is_one_line_with_status_code_message_and_socket() {
        let daemon = FakeDaemon::answering(
            403,
            r#"{"error":{"code":"NoPermission","message":"role may not pull\nfrom cri-x"}}"#,
        );
        let client = BrokerClient::new(daemon.socket());
        let (code, out, _) = helper(&client, &["get"], "127.0.0.1:5000");
        assert_eq!(code, 1);
        assert_eq!(
            out,
            format!(
                "acr-broker: no credentials for 127.0.0.1:5000: 403 NoPermission: role may not pull from cri-x (daemon socket {})\n",
                daemon.socket().display()
            )
        );
    }

    #[test]
    fn get_throttled_mentions_retry_after() {
        let daemon = FakeDaemon::start(|_| {
            (
                503,
                vec![("retry-after", "5".to_owned())],
                r#"{"error":{"code":"upstream_unavailable","message":"STS throttled"}}"#.to_owned(),
            )
        });
        let (code, out, _) = helper(&BrokerClient::new(daemon.socket()), &["get"], "127.0.0.1:5000");
        assert_eq!(code, 1);
        assert!(out.contains("503 upstream_unavailable: STS throttled; retry in 5s"), "{out}");
        assert_eq!(out.lines().count(), 1);
    }

    const ACR_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";

    #[test]
    fn get_with_daemon_down_names_the_socket_for_acr_hosts() {
        let (code, out, _) = helper(&nowhere(), &["get"], ACR_HOST);
        assert_eq!(code, 1);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with(&format!("acr-broker: no credentials for {ACR_HOST}: cannot reach acr-broker at /nonexistent/acr-broker-test.sock")), "{out}");
        assert!(out.contains("socket does not exist"), "{out}");
        assert!(out.contains("systemctl status acr-broker"), "{out}");
    }

    #[test]
    fn get_with_daemon_down_is_not_found_at_once_for_hosts_that_cannot_be_acr() {
        // With credsStore, docker treats anything but "not found" as fatal: Docker Hub pulls
        // must fall back at once while the daemon restarts, without waiting out the retries.
        let slow = nowhere().with_retry_budget(std::time::Duration::from_secs(30));
        for host in ["https://index.docker.io/v1/", "ghcr.io", "127.0.0.1:5000"] {
            let started = std::time::Instant::now();
            let (code, out, _) = helper(&slow, &["get"], host);
            assert_eq!((code, out.as_str()), (1, "credentials not found in native keychain\n"), "{host}");
            assert!(started.elapsed() < std::time::Duration::from_secs(2), "{host}: {:?}", started.elapsed());
        }
    }

    #[test]
    fn get_for_an_acr_host_rides_out_a_daemon_that_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.sock");
        let client = BrokerClient::new(&path).with_retry_budget(std::time::Duration::from_secs(3));
        let late = path.clone();
        let daemon = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            FakeDaemon::answering_at(&late, 200, OK)
        });
        let (code, out, err) = helper(&client, &["get"], ACR_HOST);
        let _daemon = daemon.join().unwrap();
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("\"Secret\":\"pw-123\""), "{out}");
    }

    #[test]
    fn get_without_url_says_so_and_bad_urls_are_named() {
        assert_eq!(helper(&nowhere(), &["get"], "  \n"), (1, "no credentials server URL\n".into(), String::new()));
        let (code, out, _) = helper(&nowhere(), &["get"], "bad host");
        assert_eq!(code, 1);
        assert!(out.starts_with("acr-broker: invalid registry host \"bad host\""), "{out}");
        let (code, out, _) = helper(&nowhere(), &["get"], "h:99999");
        assert_eq!(code, 1);
        assert!(out.starts_with("acr-broker: invalid registry host \"h:99999\""), "{out}");
    }

    #[test]
    fn store_and_erase_succeed_silently_for_acr_hosts_without_calling_the_daemon() {
        let store = format!(r#"{{"ServerURL":"https://{ACR_HOST}","Username":"u","Secret":"p"}}"#);
        assert_eq!(helper(&nowhere(), &["store"], &store), (0, String::new(), String::new()));
        assert_eq!(helper(&nowhere(), &["erase"], ACR_HOST), (0, String::new(), String::new()));
    }

    #[test]
    fn store_and_erase_for_other_registries_fail_and_say_how_to_configure_docker() {
        let store = r#"{"ServerURL":"https://index.docker.io/v1/","Username":"u","Secret":"hunter2"}"#;
        let (code, out, _) = helper(&nowhere(), &["store"], store);
        assert_eq!(code, 1);
        assert!(out.contains("cannot store credentials for index.docker.io"), "{out}");
        assert!(out.contains("credHelpers") && out.contains("credsStore"), "{out}");
        assert!(!out.contains("hunter2"), "the secret is never echoed: {out}");
        let (code, out, _) = helper(&nowhere(), &["erase"], "ghcr.io");
        assert_eq!(code, 1);
        assert!(out.contains("cannot erase credentials for ghcr.io"), "{out}");
        let (code, out, _) = helper(&nowhere(), &["store"], "not json");
        assert_eq!(code, 1);
        assert!(out.contains("ServerURL"), "{out}");
    }

    #[test]
    fn list_and_version_and_help() {
        assert_eq!(helper(&nowhere(), &["list"], "unused").1, "{}\n");
        let version = format!("docker-credential-acr-broker (acr-broker) {}\n", env!("CARGO_PKG_VERSION"));
        for v in ["version", "--version", "-v"] {
            assert_eq!(helper(&nowhere(), &[v], ""), (0, version.clone(), String::new()));
        }
        for h in ["--help", "-h", "help"] {
            let (code, out, _) = helper(&nowhere(), &[h], "");
            assert_eq!(code, 0, "{h}");
            assert!(out.starts_with("Usage: docker-credential-acr-broker <store|get|erase|list|version>"));
        }
    }

    #[test]
    fn wrong_argv_prints_usage_and_fails() {
        for args in [&[][..], &["get", "extra"][..], &["fetch"][..]] {
            let (code, out, _) = helper(&nowhere(), args, "");
            assert_eq!(code, 1, "{args:?}");
            assert!(out.starts_with("Usage: "), "{args:?}: {out}");
        }
    }

    #[test]
    fn oversized_stdin_is_refused() {
        let big = "a".repeat(70 * 1024);
        let (code, out, _) = helper(&nowhere(), &["get"], &big);
        assert_eq!(code, 1);
        assert!(out.contains("larger than"), "{out}");
    }

    #[test]
    fn normalize_handles_ipv6_and_rejects_empty_host() {
        assert_eq!(normalize_server_url("[::1]:5000").as_deref(), Ok("[::1]:5000"));
        assert_eq!(normalize_server_url("HTTPS://Reg.IO/v2/").as_deref(), Ok("reg.io"));
        assert!(normalize_server_url("https:///v2/").is_err());
        assert!(normalize_server_url(":5000").is_err());
    }
}
