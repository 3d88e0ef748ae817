//! DNS-rebinding defence for loopback TCP listeners that can hand out a credential.
//!
//! A web page can rebind its own name to 127.0.0.1 and then make a browser on the node send
//! `GET /v1/credentials/…` (no CORS preflight needed) to a loopback port; the browser still
//! sends the page's name in `Host`. So such listeners answer only requests whose `Host` is a
//! loopback address or `localhost`, and, when a port is given, the listener's own port. The
//! metrics listener serves no credential and must stay scrapeable by node IP: it is not checked.

use std::net::IpAddr;

/// True when `host` (a `Host` header value) names this loopback listener on `port`:
/// `127.0.0.1`, any `127.x.y.z`, `[::1]` or `localhost` (any case, one optional trailing dot),
/// with no port or with `port`. Anything else, including a missing header, is refused.
pub fn host_is_loopback(host: Option<&str>, port: u16) -> bool {
    let Some(host) = host.map(str::trim) else { return false };
    let (name, given_port) = split_host_port(host);
    if given_port.is_some_and(|p| p != port) {
        return false;
    }
    let Some(name) = name else { return false };
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `name[:port]` / `[v6][:port]` into the name and the port (`None` name when the port is not a
/// number: such a value is refused).
fn split_host_port(host: &str) -> (Option<&str>, Option<u16>) {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((_, "")) => (host, None),
            Some((v6, p)) => match p.strip_prefix(':') {
                Some(p) => (&host[..v6.len() + 2], Some(p)),
                None => return (None, None),
            },
            None => return (None, None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    match port {
        None => (Some(name), None),
        Some(p) => match p.parse::<u16>() {
            Ok(p) => (Some(name), Some(p)),
            Err(_) => (None, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_our_port_pass() {
        for h in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:8080",
            "localhost:8080",
            "LOCALHOST",
            "localhost.:8080",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(host_is_loopback(Some(h), 8080), "{h} should pass");
        }
    }

    #[test]
    fn rebound_names_other_ports_and_junk_are_refused() {
        for h in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1.evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1:8081",
            "localhost:99999",
            "localhost:",
            "10.0.0.1:8080",
            "[::2]:8080",
            "[::1",
            "[::1]x",
            "",
        ] {
            assert!(!host_is_loopback(Some(h), 8080), "{h:?} should be refused");
        }
        assert!(!host_is_loopback(None, 8080), "a missing Host is refused");
    }
}
