//! Mutable emulator state shared by all connections: knobs, counters, nonces, buckets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::creds::StsCredentials;
use crate::knobs::{Buckets, Knobs};
use crate::world::World;

/// A wall-clock source (tests pass a manual one).
pub type ClockFn = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How long a signature nonce is remembered: 16 minutes (the 15-minute date window plus slack).
pub const NONCE_MEMORY: Duration = Duration::from_secs(16 * 60);
/// Upper bound on remembered nonces (bounded memory); beyond it new requests are throttled.
pub const MAX_NONCES: usize = 200_000;
/// Upper bound on remembered issued secrets (for leak tests).
pub const MAX_ISSUED_SECRETS: usize = 100_000;
/// Upper bound on live metadata session tokens.
pub const MAX_METADATA_TOKENS: usize = 10_000;

/// Locks a mutex, recovering the data if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembered nonces with their first-use times.
#[derive(Debug, Default)]
pub struct NonceStore {
    seen: HashMap<String, SystemTime>,
    order: VecDeque<(SystemTime, String)>,
}

/// Result of recording a nonce.
#[derive(Debug, PartialEq, Eq)]
pub enum NonceOutcome {
    /// First use.
    Fresh,
    /// Seen within the memory window.
    Reused,
    /// The store is full.
    Full,
}

impl NonceStore {
    /// Records `nonce` at `now`, forgetting entries older than [`NONCE_MEMORY`].
    pub fn record(&mut self, nonce: &str, now: SystemTime) -> NonceOutcome {
        while let Some((t, _)) = self.order.front() {
            let old = now.duration_since(*t).map(|d| d > NONCE_MEMORY).unwrap_or(false);
            if !old {
                break;
            }
            if let Some((_, n)) = self.order.pop_front() {
                self.seen.remove(&n);
            }
        }
        if self.seen.contains_key(nonce) {
            return NonceOutcome::Reused;
        }
        if self.seen.len() >= MAX_NONCES {
            return NonceOutcome::Full;
        }
        self.seen.insert(nonce.to_string(), now);
        self.order.push_back((now, nonce.to_string()));
        NonceOutcome::Fresh
    }
}

/// Cached credentials of the metadata service.
#[derive(Debug, Clone)]
pub struct MetadataSession {
    /// The credentials.
    pub creds: StsCredentials,
    /// Issue time.
    pub issued: SystemTime,
    /// Expiry.
    pub expires: SystemTime,
    /// Lifetime used when issued (seconds).
    pub lifetime: u64,
}

/// Everything the handlers share.
pub struct State {
    /// The world.
    pub world: World,
    /// Wall clock.
    pub clock: ClockFn,
    /// Current knobs.
    pub knobs: Mutex<Knobs>,
    /// Calls per action.
    pub counters: Mutex<BTreeMap<String, u64>>,
    /// Signature nonces.
    pub nonces: Mutex<NonceStore>,
    /// AssumeRole buckets per account.
    pub buckets: Mutex<Buckets>,
    /// Hardened-mode metadata tokens and their expiry.
    pub metadata_tokens: Mutex<HashMap<String, SystemTime>>,
    /// Current metadata credentials.
    pub metadata_session: Mutex<Option<MetadataSession>>,
    /// Every secret handed out.
    pub issued: Mutex<VecDeque<String>>,
}

impl State {
    /// Fresh state for `world`.
    pub fn new(world: World, clock: ClockFn) -> State {
        State {
            knobs: Mutex::new(world.knobs()),
            world,
            clock,
            counters: Mutex::new(BTreeMap::new()),
            nonces: Mutex::new(NonceStore::default()),
            buckets: Mutex::new(Buckets::default()),
            metadata_tokens: Mutex::new(HashMap::new()),
            metadata_session: Mutex::new(None),
            issued: Mutex::new(VecDeque::new()),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// A copy of the knobs.
    pub fn knobs(&self) -> Knobs {
        lock(&self.knobs).clone()
    }

    /// Adds one call to `action`.
    pub fn count(&self, action: &str) {
        *lock(&self.counters).entry(action.to_string()).or_insert(0) += 1;
    }

    /// Remembers an issued secret (bounded).
    pub fn record_secret(&self, secret: &str) {
        let mut v = lock(&self.issued);
        if v.len() >= MAX_ISSUED_SECRETS {
            v.pop_front();
        }
        v.push_back(secret.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn nonces_are_single_use_within_the_window() {
        let mut s = NonceStore::default();
        let t = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(s.record("a", t), NonceOutcome::Fresh);
        assert_eq!(s.record("a", t + Duration::from_secs(60)), NonceOutcome::Reused);
        assert_eq!(s.record("a", t + Duration::from_secs(17 * 60)), NonceOutcome::Fresh);
    }
}
