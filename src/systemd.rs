//! systemd integration: readiness, status and watchdog notifications (`sd_notify(3)`) and socket
//! activation (`sd_listen_fds(3)`).
//!
//! Everything here is a no-op outside systemd: with `NOTIFY_SOCKET`, `WATCHDOG_USEC` or
//! `LISTEN_PID` unset the daemon behaves exactly as when started by hand. The wire protocol is
//! small enough to speak with `std` alone (one `SOCK_DGRAM` datagram of `KEY=VALUE` lines; fds
//! from 3 named by `LISTEN_FDNAMES`), which also lets the tests pass socket paths and environment
//! values explicitly instead of mutating the process environment.
//!
//! The units that drive this live in `systemd/acr-broker.{service,socket}` at the repository root:
//! `Type=notify` (we send `READY=1` once the listeners are up), `WatchdogSec=30s` (we ping every
//! 15 s while healthy) and a socket unit whose fd is named `api`.

use std::env;
use std::ffi::{OsStr, OsString};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// First fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Upper bound on `LISTEN_FDS` we accept; the socket unit passes one, anything huge is garbage.
const MAX_LISTEN_FDS: u32 = 1024;

/// How long a notification may block when the manager's queue is full: 500 ms. A lost
/// `WATCHDOG=1` is retried on the next tick; a runtime thread blocked for long is worse.
const NOTIFY_SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// Name systemd's `sd_listen_fds_with_names` reports when `LISTEN_FDNAMES` is unset.
const UNKNOWN_FD_NAME: &str = "unknown";

/// One state change reported to the service manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notify {
    /// `READY=1`: listeners are bound, the unit leaves "activating".
    Ready,
    /// `STATUS=…`: one line shown by `systemctl status`; newlines are replaced by spaces.
    Status(String),
    /// `STOPPING=1`: shutdown has begun (drain in progress).
    Stopping,
    /// `WATCHDOG=1`: the service is alive; must arrive within `WatchdogSec=`.
    Watchdog,
    /// `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC now): a config reload began; systemd
    /// waits for the next `READY=1` before it calls the reload done.
    Reloading,
}

impl Notify {
    /// The `KEY=VALUE` line for this state (without the trailing newline).
    fn line(&self) -> String {
        match self {
            Notify::Ready => "READY=1".to_owned(),
            Notify::Stopping => "STOPPING=1".to_owned(),
            Notify::Watchdog => "WATCHDOG=1".to_owned(),
            Notify::Reloading => format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()),
            Notify::Status(text) => {
                let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                format!("STATUS={one_line}")
            }
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC=` wants it (0 if the clock fails).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`, which we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1000)
}

/// The datagram payload for `states`: one `KEY=VALUE` line each, newline-terminated.
fn payload(states: &[Notify]) -> String {
    let mut msg = String::new();
    for state in states {
        msg.push_str(&state.line());
        msg.push('\n');
    }
    msg
}

/// Tells systemd about `states`; does nothing when `NOTIFY_SOCKET` is unset (not under systemd).
///
/// A failure to send is logged, never returned: the daemon keeps serving whether or not the
/// manager hears it (a missed `READY=1` shows up as a start timeout in `systemctl status`).
pub fn notify(states: &[Notify]) {
    let Some(socket) = env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = notify_to(&socket, states) {
        tracing::warn!(error = %err, socket = ?socket, "sd_notify failed");
    }
}

/// Sends `states` as one datagram to the notification socket `socket` (a `NOTIFY_SOCKET` value:
/// an absolute path, or `@name` for the abstract namespace).
fn notify_to(socket: &OsStr, states: &[Notify]) -> io::Result<()> {
    if states.is_empty() {
        return Ok(());
    }
    let msg = payload(states);
    let sock = UnixDatagram::unbound()?;
    sock.set_write_timeout(Some(NOTIFY_SEND_TIMEOUT))?;
    let bytes = socket.as_bytes();
    let sent = match bytes.first() {
        Some(b'/') => sock.send_to(msg.as_bytes(), socket)?,
        Some(b'@') => send_abstract(&sock, &bytes[1..], msg.as_bytes())?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET must be an absolute path or start with '@' (abstract socket)",
            ))
        }
    };
    if sent != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sd_notify datagram truncated: sent {sent} of {} bytes", msg.len()),
        ));
    }
    Ok(())
}

/// Sends `msg` to the abstract-namespace socket `name` (the `@` already stripped).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], msg: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr)
}

/// Abstract sockets exist only on Linux; elsewhere an `@` socket is an error.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _msg: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract NOTIFY_SOCKET is supported on Linux only"))
}

/// What was wrong with a systemd environment variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// The variable is present but is not what sd_notify(3)/sd_listen_fds(3) allow.
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        /// Variable name, e.g. `WATCHDOG_USEC`.
        name: &'static str,
        /// The value as found.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

fn invalid(name: &'static str, value: &str, reason: &'static str) -> EnvError {
    EnvError::Invalid { name, value: value.to_owned(), reason }
}

/// The interval at which to send `WATCHDOG=1`, or `None` when the watchdog is off.
///
/// That is half of `WATCHDOG_USEC` (sd_watchdog_enabled(3)), and only when `WATCHDOG_PID` is unset
/// or names this process. A malformed value is logged and treated as "off".
pub fn watchdog_interval() -> Option<Duration> {
    let usec = env::var("WATCHDOG_USEC").ok();
    let pid = env::var("WATCHDOG_PID").ok();
    match watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id()) {
        Ok(interval) => interval,
        Err(err) => {
            tracing::warn!(error = %err, "systemd watchdog disabled");
            None
        }
    }
}

/// [`watchdog_interval`] on explicit inputs: `WATCHDOG_USEC`, `WATCHDOG_PID` and our pid.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Result<Option<Duration>, EnvError> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        let pid: u32 = pid.parse().map_err(|_| invalid("WATCHDOG_PID", pid, "expected a process id"))?;
        if pid != our_pid {
            return Ok(None);
        }
    }
    let micros: u64 =
        usec.parse().map_err(|_| invalid("WATCHDOG_USEC", usec, "expected microseconds as an integer"))?;
    if micros == 0 {
        return Err(invalid("WATCHDOG_USEC", usec, "must be greater than 0"));
    }
    Ok(Some(Duration::from_micros(micros) / 2))
}

/// Starts a tokio task that sends `WATCHDOG=1` every [`watchdog_interval`] while `health()`
/// returns true; returns `None` (and starts nothing) when the watchdog is off or no tokio
/// runtime is running.
///
/// While `health()` is false the pings stop, so systemd kills and restarts a wedged daemon after
/// `WatchdogSec=`; when health returns, pings resume. Call it from inside the runtime.
pub fn spawn_watchdog<F, Fut>(health: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let interval = watchdog_interval()?;
    let socket = env::var_os("NOTIFY_SOCKET")?;
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::warn!(error = %err, "systemd watchdog not started: no tokio runtime");
            return None;
        }
    };
    tracing::info!(interval_ms = interval.as_millis() as u64, "systemd watchdog enabled");
    Some(runtime.spawn(watchdog_loop(socket, interval, health)))
}

/// Pings `socket` every `interval` while `health()` holds; runs until the task is aborted.
async fn watchdog_loop<F, Fut>(socket: OsString, interval: Duration, health: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        ticker.tick().await;
        let healthy = health().await;
        if healthy {
            if let Err(err) = notify_to(&socket, &[Notify::Watchdog]) {
                tracing::warn!(error = %err, "sd_notify WATCHDOG=1 failed");
            }
        } else if was_healthy {
            tracing::error!("health check failed: withholding systemd watchdog pings");
        }
        if healthy && !was_healthy {
            tracing::info!("health restored: systemd watchdog pings resumed");
        }
        was_healthy = healthy;
    }
}

/// A listening socket handed over by systemd (socket activation).
#[derive(Debug)]
pub struct ListenFd {
    /// The `FileDescriptorName=` of the socket unit (`api` for ours), or `unknown`.
    pub name: String,
    /// The listener, already `FD_CLOEXEC` and non-blocking (ready for tokio's `from_std`).
    pub listener: Listener,
}

/// The kind of a socket-activated listener, told apart by its address family.
#[derive(Debug)]
pub enum Listener {
    /// An `AF_UNIX` stream socket (`ListenStream=/run/...`).
    Unix(UnixListener),
    /// An `AF_INET`/`AF_INET6` stream socket (`ListenStream=127.0.0.1:9465`).
    Tcp(TcpListener),
}

/// Why the passed fds could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ListenFdsError {
    /// A `LISTEN_*` variable was malformed.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// An fd that `LISTEN_FDS` announced is not open or is not a unix/inet socket.
    #[error("socket-activation fd {fd} (name {name:?}): {reason}")]
    Fd {
        /// The fd number.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// Set once the fds were taken, so a second call cannot claim the same fd numbers again.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the listeners systemd passed (empty when not socket-activated), logging any error.
///
/// See [`try_take_listen_fds`]; a daemon that must not fall back to binding its own socket
/// should call that one and stop on error.
pub fn take_listen_fds() -> Vec<ListenFd> {
    match try_take_listen_fds() {
        Ok(fds) => fds,
        Err(err) => {
            tracing::error!(error = %err, "ignoring socket-activation fds");
            Vec::new()
        }
    }
}

/// Takes the listeners systemd passed via `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`.
///
/// Returns an empty list when the variables are unset or meant for another process. The
/// variables are removed either way so children do not inherit them; call this early, before
/// other threads read the environment. Only the first call takes anything.
pub fn try_take_listen_fds() -> Result<Vec<ListenFd>, ListenFdsError> {
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let pid = env::var("LISTEN_PID").ok();
    let count = env::var("LISTEN_FDS").ok();
    let names = env::var("LISTEN_FDNAMES").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        env::remove_var(name);
    }
    let planned = parse_listen_env(pid.as_deref(), count.as_deref(), names.as_deref(), std::process::id())?;
    let mut taken = Vec::with_capacity(planned.len());
    for (fd, name) in planned {
        // SAFETY: LISTEN_PID named this process, so per sd_listen_fds(3) systemd passed us fds
        // 3..3+LISTEN_FDS and nothing else in the process owns them; the LISTEN_FDS_TAKEN flag and
        // the removed variables make sure they are adopted only here, once.
        taken.push(unsafe { adopt_listen_fd(fd, name) }?);
    }
    Ok(taken)
}

/// The `(fd, name)` pairs described by `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
fn parse_listen_env(
    pid: Option<&str>,
    count: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Vec<(RawFd, String)>, EnvError> {
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid.parse().map_err(|_| invalid("LISTEN_PID", pid, "expected a process id"))?;
    if pid != our_pid {
        return Ok(Vec::new());
    }
    let n: u32 = count.parse().map_err(|_| invalid("LISTEN_FDS", count, "expected a count of fds"))?;
    if n > MAX_LISTEN_FDS {
        return Err(invalid("LISTEN_FDS", count, "more than 1024 fds"));
    }
    let names: Vec<String> = match names {
        None => vec![UNKNOWN_FD_NAME.to_owned(); n as usize],
        Some(list) => {
            let split: Vec<String> =
                if n == 0 && list.is_empty() { Vec::new() } else { list.split(':').map(str::to_owned).collect() };
            if split.len() != n as usize {
                return Err(invalid("LISTEN_FDNAMES", list, "expected one ':'-separated name per fd in LISTEN_FDS"));
            }
            split
        }
    };
    // n <= MAX_LISTEN_FDS, so every fd number fits in RawFd.
    Ok((0..n as RawFd).map(|i| LISTEN_FDS_START + i).zip(names).collect())
}

/// Wraps the listening socket `fd` as a [`ListenFd`], with `FD_CLOEXEC` and non-blocking set.
///
/// The listener ends up on a fresh fd made with `F_DUPFD_CLOEXEC`; `fd` itself is closed.
///
/// # Safety
/// The caller must own `fd` (an open fd nobody else will use or close) or `fd` must be closed;
/// a closed fd is reported as an error and not touched again.
unsafe fn adopt_listen_fd(fd: RawFd, name: String) -> Result<ListenFd, ListenFdsError> {
    let fd_error = |reason: String| ListenFdsError::Fd { fd, name: name.clone(), reason };
    // SAFETY: used only for the duration of this dup; if `fd` is not open, fcntl answers EBADF
    // and we stop before claiming ownership of a number that is not ours.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let dup = borrowed.try_clone_to_owned().map_err(|err| fd_error(format!("not an open fd: {err}")))?;
    // SAFETY: the dup above proved `fd` open, and the caller guarantees we own it; dropping the
    // OwnedFd closes the original, which (unlike the dup) lacks FD_CLOEXEC.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });

    let listener = classify(dup).map_err(fd_error)?;
    let nonblocking = match &listener {
        Listener::Unix(l) => l.set_nonblocking(true),
        Listener::Tcp(l) => l.set_nonblocking(true),
    };
    nonblocking.map_err(|err| fd_error(format!("cannot set O_NONBLOCK: {err}")))?;
    Ok(ListenFd { name, listener })
}

/// Tells a unix listener from an inet one by `getsockname`'s address family.
///
/// Both checks are on the address only: a datagram socket would pass too, so the socket unit
/// must use `ListenStream=` (ours does).
fn classify(fd: OwnedFd) -> Result<Listener, String> {
    let raw = fd.as_raw_fd();
    let unix = UnixListener::from(fd);
    if unix.local_addr().is_ok() {
        return Ok(Listener::Unix(unix));
    }
    let tcp = TcpListener::from(OwnedFd::from(unix));
    match tcp.local_addr() {
        Ok(_) => Ok(Listener::Tcp(tcp)),
        Err(err) => Err(format!("fd {raw} is neither an AF_UNIX nor an AF_INET/AF_INET6 socket: {err}")),
    }
}

#[cfg(test)]
mod tests;
