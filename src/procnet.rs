//! Who owns a loopback TCP socket, from the kernel's socket table (`/proc/net/tcp` and
//! `/proc/net/tcp6`).
//!
//! A unix-socket peer is named by `SO_PEERCRED`; a loopback TCP peer has no such option, but
//! the kernel lists every socket of this network namespace with the uid that created it. The
//! client end of a connection to us is the line whose *local* address is the peer's address and
//! whose *remote* address is ours; its `uid` column is the caller. The same table gives the inode
//! of a listening socket, which tests use to prove that their own child is the one listening.
//!
//! Format (`net/ipv4/tcp_ipv4.c`, `get_tcp4_sock`): one header line, then
//! `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …`.
//! Addresses are `%08X:%04X` (IPv4: the 32-bit network-order address printed as a native
//! integer) or `%08X%08X%08X%08X:%04X` (IPv6, four such words); the port is plain hex.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The state number of a listening socket (`TCP_LISTEN`).
pub const TCP_LISTEN: u8 = 0x0A;

/// One socket from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// This end's address.
    pub local: SocketAddr,
    /// The other end's address (`0.0.0.0:0` for a listener).
    pub remote: SocketAddr,
    /// TCP state (`TCP_LISTEN`, 0x01 = established, …).
    pub state: u8,
    /// The uid that created the socket.
    pub uid: u32,
    /// The socket's inode (`socket:[N]` in `/proc/PID/fd`); 0 for sockets in TIME_WAIT.
    pub inode: u64,
}

/// Parses one table (the text of `/proc/net/tcp` or `/proc/net/tcp6`); lines that do not
/// parse are skipped (the kernel's format, not user input, but never a reason to panic).
pub fn parse_table(text: &str) -> Vec<TcpSocket> {
    text.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TcpSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    Some(TcpSocket {
        local: parse_addr(f[1])?,
        remote: parse_addr(f[2])?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        uid: f[7].parse().ok()?,
        inode: f[9].parse().ok()?,
    })
}

/// `0100007F:1F90` or `00000000000000000000000001000000:1F90` to a socket address.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// An address with an IPv4-mapped IPv6 address turned into plain IPv4 (a dual-stack socket
/// lists `::ffff:127.0.0.1`, the other end `127.0.0.1`).
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Every TCP socket of this network namespace (IPv4 and IPv6 tables, under `root`, normally `/proc`).
pub fn sockets_under(root: &Path) -> std::io::Result<Vec<TcpSocket>> {
    let mut all = parse_table(&std::fs::read_to_string(root.join("net/tcp"))?);
    // A kernel without IPv6 has no tcp6 table; that is not an error.
    if let Ok(text) = std::fs::read_to_string(root.join("net/tcp6")) {
        all.extend(parse_table(&text));
    }
    Ok(all)
}

/// The uid that owns the client end of the connection `peer` -> `ours`, if the kernel lists it.
pub fn peer_uid_in(sockets: &[TcpSocket], peer: SocketAddr, ours: SocketAddr) -> Option<u32> {
    let (peer, ours) = (canonical(peer), canonical(ours));
    sockets
        .iter()
        .find(|s| canonical(s.local) == peer && canonical(s.remote) == ours && s.state != TCP_LISTEN)
        .map(|s| s.uid)
}

/// The uid of the process that opened the loopback connection `peer` -> `ours` (from `/proc`).
pub fn peer_uid(peer: SocketAddr, ours: SocketAddr) -> std::io::Result<Option<u32>> {
    Ok(peer_uid_in(&sockets_under(Path::new("/proc"))?, peer, ours))
}

/// The inode of the socket listening on `addr` (from `/proc`), if any.
pub fn listener_inode(addr: SocketAddr) -> std::io::Result<Option<u64>> {
    let addr = canonical(addr);
    let all = sockets_under(Path::new("/proc"))?;
    Ok(all.iter().find(|s| s.state == TCP_LISTEN && canonical(s.local) == addr).map(|s| s.inode))
}

/// True when process `pid` holds the socket with `inode` open (one of its `/proc/PID/fd` links
/// reads `socket:[inode]`): the way a test proves its child, not a stranger, listens on a port.
pub fn pid_holds_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    dir.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
}

/// True when process `pid` is the one listening on `addr`.
pub fn pid_listens_on(pid: u32, addr: SocketAddr) -> bool {
    matches!(listener_inode(addr), Ok(Some(inode)) if inode != 0 && pid_holds_socket(pid, inode))
}

/// The primary gid of `uid` from `/etc/passwd` (a TCP peer has no gid in the socket table, so
/// `allowed_gids` is matched against the caller's primary group).
pub fn primary_gid(uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    primary_gid_in(&text, uid)
}

fn primary_gid_in(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[3].parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1575 1 0 100 0 0 10 0\n\
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2001 1 0 20 4 30 10 -1\n\
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0 20 4 30 10 -1\n\
   3: garbage\n";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 0 100 0 0 10 0\n\
   1: 0000000000000000FFFF00000100007F:C351 0000000000000000FFFF00000100007F:1F92 01 00000000:00000000 00:00000000 00000000    65534        0 3002 1 0 20 4 30 10 -1\n";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn ipv4_lines_parse_with_uid_state_and_inode() {
        let t = parse_table(TCP);
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(t[0].local, addr("127.0.0.1:8080"));
        assert_eq!(t[0].state, TCP_LISTEN);
        assert_eq!(t[0].inode, 1575);
        assert_eq!(t[1].uid, 1000);
        assert_eq!(t[1].remote, addr("127.0.0.1:8080"));
    }

    #[test]
    fn the_client_end_names_the_peer_not_our_accepted_socket() {
        let t = parse_table(TCP);
        assert_eq!(peer_uid_in(&t, addr("127.0.0.1:50000"), addr("127.0.0.1:8080")), Some(1000));
        assert_eq!(peer_uid_in(&t, addr("127.0.0.1:50001"), addr("127.0.0.1:8080")), None);
    }

    #[test]
    fn ipv6_and_mapped_addresses_parse() {
        let t = parse_table(TCP6);
        assert_eq!(t[0].local, addr("[::1]:8081"));
        // A dual-stack client end compares equal to the plain IPv4 address accept() reports.
        assert_eq!(peer_uid_in(&t, addr("127.0.0.1:50001"), addr("127.0.0.1:8082")), Some(65534));
    }

    #[test]
    fn primary_group_comes_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(primary_gid_in(passwd, 65534), Some(65534));
        assert_eq!(primary_gid_in(passwd, 4242), None);
    }

    #[test]
    fn this_process_owns_its_own_listener_and_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = l.local_addr().expect("addr");
        assert!(pid_listens_on(std::process::id(), ours), "we should be the listener on {ours}");
        assert!(!pid_listens_on(1, ours) || std::process::id() == 1);
        let c = std::net::TcpStream::connect(ours).expect("connect");
        let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).expect("uid");
        assert_eq!(peer_uid(c.local_addr().expect("local"), ours).expect("read /proc"), Some(me));
    }
}
