//! Tests of the socket client against the scripted fake daemon.

use super::fake_daemon::FakeDaemon;
use super::*;

const OK: &str = r#"{"username":"cr_temp_user","password":"pw-123","expires_at":"2030-01-01T00:00:00Z","registry":"demo-registry.cn-hangzhou.cr.aliyuncs.com","region":"cn-hangzhou","instance_id":"cri-abc","edition":"enterprise"}"#;

#[test]
fn get_encodes_the_registry_and_decodes_credentials() {
    let daemon = FakeDaemon::answering(200, OK);
    let answer = BrokerClient::new(daemon.socket()).get_credentials("127.0.0.1:5000").unwrap();
    let Answer::Credentials(c) = answer else { panic!("expected credentials, got {answer:?}") };
    assert_eq!(c.username, "cr_temp_user");
    assert_eq!(c.password.expose_secret(), "pw-123");
    assert_eq!(crate::clock::rfc3339(c.expires_at), "2030-01-01T00:00:00Z");
    assert_eq!(c.instance_id.as_deref(), Some("cri-abc"));
    let seen = daemon.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/credentials/127.0.0.1%3A5000");
}

#[test]
fn post_sends_the_body_fields() {
    let daemon = FakeDaemon::answering(200, OK);
    let req = CredentialsRequest {
        registry: "r.example".into(),
        image: Some("r.example/ns/app".into()),
        annotations: [("k8s.aliyun.com/acr-instance-ids".to_owned(), "cri-x".to_owned())].into(),
        service_account_token: Some(Secret::from("sa-token")),
        service_account_annotations: [("a".to_owned(), "b".to_owned())].into(),
    };
    BrokerClient::new(daemon.socket()).post_credentials(&req).unwrap();
    let seen = &daemon.seen()[0];
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/v1/credentials"));
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"registry":"r.example","image":"r.example/ns/app",
            "annotations":{"k8s.aliyun.com/acr-instance-ids":"cri-x"},
            "service_account_token":"sa-token","service_account_annotations":{"a":"b"}})
    );
}

#[test]
fn not_acr_registry_is_not_ours_other_404_is_an_error() {
    let daemon =
        FakeDaemon::answering(404, r#"{"error":{"code":"not_acr_registry","message":"docker.io is not ACR"}}"#);
    let answer = BrokerClient::new(daemon.socket()).get_credentials("docker.io").unwrap();
    assert!(matches!(answer, Answer::NotOurs { ref message } if message == "docker.io is not ACR"));
    let daemon = FakeDaemon::answering(404, "no such route");
    let answer = BrokerClient::new(daemon.socket()).get_credentials("docker.io").unwrap();
    assert!(matches!(answer, Answer::Error { status: 404, ref code, .. } if code.is_empty()));
}

#[test]
fn error_carries_code_message_and_retry_after() {
    let daemon = FakeDaemon::start(|_| {
        (
            503,
            vec![("retry-after", "7".to_owned())],
            r#"{"error":{"code":"Throttling","message":"slow\ndown"}}"#.to_owned(),
        )
    });
    let answer = BrokerClient::new(daemon.socket()).get_credentials("h").unwrap();
    let Answer::Error { status, code, message, retry_after } = answer else { panic!("{answer:?}") };
    assert_eq!((status, code.as_str(), message.as_str(), retry_after), (503, "Throttling", "slow down", Some(7)));
}

#[test]
fn malformed_success_body_is_a_protocol_error() {
    for body in
        ["not json", r#"{"username":"u"}"#, r#"{"username":"u","password":"p","expires_at":"soon","registry":"r"}"#]
    {
        let daemon = FakeDaemon::answering(200, body);
        let err = BrokerClient::new(daemon.socket()).get_credentials("h").unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{body}: {err}");
        assert!(err.to_string().contains("not a credentials object"), "{err}");
    }
}

#[test]
fn missing_socket_names_the_path_and_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.sock");
    let err = BrokerClient::new(&path).get_credentials("h").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("socket does not exist"), "{msg}");
    assert!(msg.contains("systemctl status acr-broker"), "{msg}");
}

#[test]
fn stale_socket_says_nothing_is_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let msg = BrokerClient::new(&path).get_credentials("h").unwrap_err().to_string();
    assert!(msg.contains("nothing is listening"), "{msg}");
}

#[test]
fn a_directory_or_regular_file_is_not_called_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.sock");
    std::fs::write(&file, "").unwrap();
    for (path, what) in [(dir.path().to_path_buf(), "a directory"), (file, "regular file")] {
        let msg =
            BrokerClient::new(&path).with_retry_budget(Duration::ZERO).get_credentials("h").unwrap_err().to_string();
        assert!(msg.contains(what) && msg.contains("ACR_BROKER_SOCKET"), "{msg}");
        assert!(!msg.contains("stale"), "{msg}");
    }
}

#[test]
fn permission_hint_mentions_the_group() {
    let err = io::Error::from(io::ErrorKind::PermissionDenied);
    let hint = connect_hint(Path::new("/run/acr-broker/broker.sock"), &err);
    assert!(hint.contains("group") && hint.contains("ls -l /run/acr-broker/broker.sock"), "{hint}");
}

#[test]
fn silent_daemon_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let client = BrokerClient::new(&path).with_timeout(Duration::from_millis(100));
    let err = client.get_credentials("h").unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
}

#[test]
fn percent_encode_keeps_unreserved_only() {
    assert_eq!(percent_encode("a-b.c_d~9"), "a-b.c_d~9");
    assert_eq!(percent_encode("h:5000/x y"), "h%3A5000%2Fx%20y");
}

#[test]
fn one_line_flattens_and_caps() {
    assert_eq!(one_line(" a\n\tb\r\nc "), "a b c");
    assert_eq!(one_line(&"x".repeat(1000)), "x".repeat(1000));
    let long = one_line(&"x".repeat(2000));
    assert!(long.starts_with(&"x".repeat(1000)) && long.ends_with(" …"), "truncation is visible");
}
