//! Who listens on a TCP port: the kernel's socket tables (`/proc/net/tcp`, `tcp6`) give the
//! listening socket's inode, and `/proc/PID/fd` shows whether a process holds it. Tests use it to
//! make sure the server they started — not a stranger that took the port between picking and
//! binding — is the one answering.

use std::collections::HashSet;

/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Inodes of the sockets listening on `port` (any address, IPv4 or IPv6).
pub fn listening_inodes(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let local_port = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *st == TCP_LISTEN && local_port == Some(port) {
                if let Ok(i) = inode.parse() {
                    inodes.insert(i);
                }
            }
        }
    }
    inodes
}

/// True when process `pid` holds a socket listening on `port`.
pub fn pid_listens_on(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok).filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|target| {
        let t = target.to_string_lossy();
        t.strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| inodes.contains(&n))
    })
}

#[test]
fn finds_our_own_listener_and_not_a_closed_port() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    assert!(pid_listens_on(std::process::id(), port));
    drop(l);
    assert!(!pid_listens_on(std::process::id(), port));
}
