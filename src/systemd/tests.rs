//! Tests for `crate::systemd`: real datagrams to sockets bound in a temp dir, real listeners
//! handed to the adoption code, and the environment parsers on explicit inputs.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn recv_text(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("datagram");
    String::from_utf8(buf[..n].to_vec()).expect("utf-8")
}

fn bound_datagram(dir: &tempfile::TempDir) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    (sock, path)
}

#[test]
fn notify_sends_one_datagram_with_all_states() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = bound_datagram(&dir);
    notify_to(path.as_os_str(), &[Notify::Ready, Notify::Status("serving on /run/acr-broker/broker.sock".into())])
        .unwrap();
    assert_eq!(recv_text(&sock), "READY=1\nSTATUS=serving on /run/acr-broker/broker.sock\n");
}

#[test]
fn notify_stopping_and_watchdog_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = bound_datagram(&dir);
    notify_to(path.as_os_str(), &[Notify::Stopping]).unwrap();
    assert_eq!(recv_text(&sock), "STOPPING=1\n");
    notify_to(path.as_os_str(), &[Notify::Watchdog]).unwrap();
    assert_eq!(recv_text(&sock), "WATCHDOG=1\n");
}

#[test]
fn notify_status_is_forced_onto_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = bound_datagram(&dir);
    notify_to(path.as_os_str(), &[Notify::Status("line one\nREADY=1\r\tx".into())]).unwrap();
    // An embedded newline must not smuggle a second key (READY=1) into the datagram.
    assert_eq!(recv_text(&sock), "STATUS=line one READY=1  x\n");
}

#[test]
fn notify_to_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("acr-broker-test-{}-{}", std::process::id(), rand::random::<u64>());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    notify_to(OsStr::new(&format!("@{name}")), &[Notify::Ready]).unwrap();
    assert_eq!(recv_text(&sock), "READY=1\n");
}

#[test]
fn notify_rejects_relative_socket_and_reports_missing_one() {
    let err = notify_to(OsStr::new("relative/notify.sock"), &[Notify::Ready]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.sock");
    assert!(notify_to(missing.as_os_str(), &[Notify::Ready]).is_err());
}

#[test]
fn notify_with_no_states_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = bound_datagram(&dir);
    notify_to(path.as_os_str(), &[]).unwrap();
    notify_to(path.as_os_str(), &[Notify::Ready]).unwrap();
    // The first datagram received is the second call's: the empty call sent nothing.
    assert_eq!(recv_text(&sock), "READY=1\n");
}

#[test]
fn watchdog_interval_is_half_of_usec() {
    let got = watchdog_interval_from(Some("30000000"), None, 42).unwrap();
    assert_eq!(got, Some(Duration::from_secs(15)));
}

#[test]
fn watchdog_interval_honours_matching_pid() {
    assert_eq!(watchdog_interval_from(Some("1000"), Some("42"), 42).unwrap(), Some(Duration::from_micros(500)));
}

#[test]
fn watchdog_interval_off_for_other_pid_or_unset() {
    assert_eq!(watchdog_interval_from(Some("30000000"), Some("7"), 42).unwrap(), None);
    assert_eq!(watchdog_interval_from(None, Some("42"), 42).unwrap(), None);
    assert_eq!(watchdog_interval_from(None, None, 42).unwrap(), None);
}

#[test]
fn watchdog_interval_rejects_garbage_naming_the_variable() {
    let err = watchdog_interval_from(Some("30s"), None, 42).unwrap_err();
    assert!(err.to_string().starts_with("WATCHDOG_USEC=\"30s\""), "{err}");
    let err = watchdog_interval_from(Some("0"), None, 42).unwrap_err();
    assert!(err.to_string().contains("greater than 0"), "{err}");
    let err = watchdog_interval_from(Some("1000"), Some("me"), 42).unwrap_err();
    assert!(err.to_string().starts_with("WATCHDOG_PID=\"me\""), "{err}");
}

#[test]
fn listen_env_unset_or_for_other_pid_is_empty() {
    assert!(parse_listen_env(None, None, None, 42).unwrap().is_empty());
    assert!(parse_listen_env(None, Some("1"), None, 42).unwrap().is_empty());
    assert!(parse_listen_env(Some("7"), Some("1"), Some("api"), 42).unwrap().is_empty());
}

#[test]
fn listen_env_names_fds_from_three() {
    let got = parse_listen_env(Some("42"), Some("2"), Some("api:metrics"), 42).unwrap();
    assert_eq!(got, vec![(3, "api".to_owned()), (4, "metrics".to_owned())]);
}

#[test]
fn listen_env_without_names_uses_unknown() {
    let got = parse_listen_env(Some("42"), Some("1"), None, 42).unwrap();
    assert_eq!(got, vec![(3, "unknown".to_owned())]);
    assert!(parse_listen_env(Some("42"), Some("0"), Some(""), 42).unwrap().is_empty());
}

#[test]
fn listen_env_rejects_bad_values_naming_the_variable() {
    let cases = [
        (Some("x"), Some("1"), None, "LISTEN_PID=\"x\""),
        (Some("42"), Some("-1"), None, "LISTEN_FDS=\"-1\""),
        (Some("42"), Some("99999"), None, "LISTEN_FDS=\"99999\""),
        (Some("42"), Some("2"), Some("api"), "LISTEN_FDNAMES=\"api\""),
        (Some("42"), Some("1"), Some("a:b"), "LISTEN_FDNAMES=\"a:b\""),
    ];
    for (pid, count, names, want) in cases {
        let err = parse_listen_env(pid, count, names, 42).unwrap_err();
        assert!(err.to_string().starts_with(want), "{want}: got {err}");
    }
}

#[test]
fn adopt_unix_listener_keeps_it_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sock");
    let raw = UnixListener::bind(&path).unwrap().into_raw_fd();
    // SAFETY: `raw` came from into_raw_fd just above; this test owns it.
    let got = unsafe { adopt_listen_fd(raw, "api".into()) }.unwrap();
    assert_eq!(got.name, "api");
    let Listener::Unix(listener) = got.listener else {
        panic!("expected a unix listener, got {:?}", got.listener);
    };
    let mut client = UnixStream::connect(&path).unwrap();
    let (mut server, _) = loop {
        match listener.accept() {
            Ok(conn) => break conn,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(err) => panic!("accept: {err}"),
        }
    };
    server.set_nonblocking(false).unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn adopt_tcp_listener_is_tcp_and_nonblocking() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let raw = tcp.into_raw_fd();
    // SAFETY: `raw` came from into_raw_fd just above; this test owns it.
    let got = unsafe { adopt_listen_fd(raw, "metrics".into()) }.unwrap();
    let Listener::Tcp(listener) = got.listener else {
        panic!("expected a tcp listener, got {:?}", got.listener);
    };
    assert_eq!(listener.local_addr().unwrap(), addr);
    // Non-blocking: accept with nobody connecting returns at once.
    let err = listener.accept().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let _client = TcpStream::connect(addr).unwrap();
}

/// The `flags:` field of /proc/self/fdinfo/<fd> (octal open flags, including O_CLOEXEC).
fn fd_flags(fd: RawFd) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let line = info.lines().find(|l| l.starts_with("flags:")).unwrap();
    u32::from_str_radix(line["flags:".len()..].trim(), 8).unwrap()
}

#[test]
fn adopted_listener_is_cloexec_and_nonblocking() {
    const O_CLOEXEC: u32 = 0o2_000_000;
    const O_NONBLOCK: u32 = 0o4_000;
    // Listeners from std are CLOEXEC already; clear nothing, but a systemd fd is not, so check
    // the flag on the fd adoption returns rather than on the input.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let raw = tcp.into_raw_fd();
    // SAFETY: `raw` came from into_raw_fd just above; this test owns it.
    let got = unsafe { adopt_listen_fd(raw, "x".into()) }.unwrap();
    let Listener::Tcp(listener) = &got.listener else {
        panic!("expected tcp");
    };
    assert_ne!(listener.as_raw_fd(), raw, "listener must live on the CLOEXEC dup");
    let flags = fd_flags(listener.as_raw_fd());
    assert_ne!(flags & O_CLOEXEC, 0, "flags {flags:o}");
    assert_ne!(flags & O_NONBLOCK, 0, "flags {flags:o}");
}

#[test]
fn adopt_rejects_a_non_socket_fd() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("plain")).unwrap();
    let raw = file.into_raw_fd();
    // SAFETY: `raw` came from into_raw_fd just above; this test owns it.
    let err = unsafe { adopt_listen_fd(raw, "api".into()) }.unwrap_err();
    assert!(err.to_string().contains("neither an AF_UNIX nor an AF_INET"), "{err}");
}

#[tokio::test]
async fn watchdog_pings_while_healthy_and_stops_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = bound_datagram(&dir);
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let task = tokio::spawn(watchdog_loop(path.into_os_string(), Duration::from_millis(20), move || {
        std::future::ready(flag.load(Ordering::SeqCst))
    }));
    let sock = tokio::task::spawn_blocking(move || {
        assert_eq!(recv_text(&sock), "WATCHDOG=1\n");
        assert_eq!(recv_text(&sock), "WATCHDOG=1\n");
        sock
    })
    .await
    .unwrap();

    healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let sock = tokio::task::spawn_blocking(move || {
        // Drain pings sent before the flag flipped, then expect silence.
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        while sock.recv(&mut buf).is_ok() {}
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
        let silent = sock.recv(&mut buf).unwrap_err();
        assert!(matches!(silent.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        sock
    })
    .await
    .unwrap();

    healthy.store(true, Ordering::SeqCst);
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let resumed = tokio::task::spawn_blocking(move || recv_text(&sock)).await.unwrap();
    assert_eq!(resumed, "WATCHDOG=1\n");
    task.abort();
}
