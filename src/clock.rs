//! Wall-clock time as an input, so expiry logic is testable.
//!
//! Every freshness decision (is a credential usable, should it be refreshed) reads the time
//! from a [`Clock`]. Production uses [`SystemClock`]; tests use [`ManualClock`] and move it.
//! Timers, timeouts and backoff use `tokio::time`, which tests can pause separately.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Source of the current wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        // The one permitted read of the system clock; everything else asks a `Clock`.
        #[allow(clippy::disallowed_methods)]
        SystemTime::now()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    nanos_since_epoch: AtomicU64,
}

impl ManualClock {
    /// A clock set to `start`.
    pub fn new(start: SystemTime) -> Arc<Self> {
        let nanos = start.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        Arc::new(ManualClock { nanos_since_epoch: AtomicU64::new(nanos) })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.nanos_since_epoch.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to an absolute time.
    pub fn set(&self, to: SystemTime) {
        let nanos = to.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        self.nanos_since_epoch.store(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos_since_epoch.load(Ordering::SeqCst))
    }
}

/// The system clock as a shared handle.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Formats a time as RFC 3339 UTC with whole seconds (`2026-11-28T12:24:56Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => dt
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z")),
        Err(_) => String::from("1970-01-01T00:00:00Z"),
    }
}

/// Parses an RFC 3339 timestamp such as STS's `Expiration` (`2015-04-09T11:52:19Z`).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = dt.unix_timestamp_nanos();
    if nanos < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// Converts epoch milliseconds (ACR's `ExpireTime`) to a time.
pub fn from_epoch_millis(ms: i64) -> Option<SystemTime> {
    u64::try_from(ms).ok().map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_whole_seconds() {
        let t = parse_rfc3339("2015-04-09T11:52:19Z").expect("valid");
        assert_eq!(rfc3339(t), "2015-04-09T11:52:19Z");
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(UNIX_EPOCH + Duration::from_secs(100));
        assert_eq!(c.now(), UNIX_EPOCH + Duration::from_secs(100));
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now(), UNIX_EPOCH + Duration::from_secs(105));
    }
}
