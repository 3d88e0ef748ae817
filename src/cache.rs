//! Expiring caches on moka: one coalesced load per key, refresh ahead of expiry, stale-while-valid,
//! and brief memory of terminal denials.
//!
//! moka's own clock cannot be injected, so each entry carries its times and freshness is decided
//! by two pure functions over our [`Clock`](crate::clock::Clock): [`Schedule::is_usable`] and
//! [`Schedule::should_refresh`]. The three-way rule (fresh, stale-but-usable, unusable) lives in
//! [`ExpiringCache::get_or_load`]: a fresh entry is served; a usable entry past its refresh point
//! is served while one background refresh runs; an unusable entry is never served.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::broker::BrokerError;
use crate::clock::SharedClock;
use crate::config::CacheConfig;
use crate::metrics::{CacheCounters, CacheEvent, Metrics};

/// Something with an upstream expiry.
pub trait Expiring {
    /// When upstream says this value stops working.
    fn expires_at(&self) -> SystemTime;
}

/// When an entry is refreshed, how long it is served, and when it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Start a background refresh at or after this time.
    pub refresh_at: SystemTime,
    /// Serve the entry only before this time.
    pub usable_until: SystemTime,
    /// Upstream expiry less the safety margin.
    pub expires_at: SystemTime,
}

impl Schedule {
    /// Plans an entry fetched at `fetched` that upstream says expires at `upstream_expiry`.
    ///
    /// Example with the defaults (margin 60 s, minimum remaining 120 s, refresh at 50 % ± 10 %):
    /// a one-hour credential fetched at 12:00 is refreshed between 12:24 and 12:36, is served
    /// until 12:57 at the latest if refreshes keep failing, and counts as expired from 12:59.
    /// Margins are capped at 10 % and 25 % of the lifetime so short-lived credentials stay useful.
    pub fn plan(fetched: SystemTime, upstream_expiry: SystemTime, cfg: &CacheConfig, unit_random: f64) -> Schedule {
        let lifetime = upstream_expiry.duration_since(fetched).unwrap_or_default();
        let margin = cfg.expiry_margin.min(lifetime / 10);
        let expires_at = upstream_expiry - margin;
        let min_remaining = cfg.min_remaining.min(lifetime / 4);
        let usable_until = expires_at - min_remaining;
        let spread = cfg.refresh_jitter * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0);
        let fraction = (cfg.refresh_fraction + spread).clamp(0.05, 0.95);
        let refresh_at = (fetched + lifetime.mul_f64(fraction)).min(usable_until);
        Schedule { refresh_at, usable_until, expires_at }
    }

    /// True while the entry may be handed out.
    pub fn is_usable(&self, now: SystemTime) -> bool {
        now < self.usable_until
    }

    /// True once a background refresh should start.
    pub fn should_refresh(&self, now: SystemTime) -> bool {
        now >= self.refresh_at
    }
}

/// A cached value with its schedule and refresh state.
#[derive(Debug)]
pub struct Entry<T> {
    /// The value, shared with every caller.
    pub value: Arc<T>,
    /// When it was fetched.
    pub fetched_at: SystemTime,
    /// Its freshness plan.
    pub schedule: Schedule,
    refreshing: AtomicBool,
    /// No refresh attempt before this time (ms since epoch), after a failed one.
    retry_after_ms: AtomicU64,
}

/// How a lookup was served, for metrics and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A fresh entry.
    Hit,
    /// A valid entry past its refresh point; a refresh runs in the background.
    Stale,
    /// Loaded upstream by this caller.
    Miss,
    /// Waited on a load another caller started.
    Coalesced,
}

impl Outcome {
    /// The label used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Miss => "miss",
            Outcome::Coalesced => "coalesced",
        }
    }
}

#[derive(Debug)]
enum Slot<T> {
    Ready(Arc<Entry<T>>),
    Failed { error: Arc<BrokerError>, until: SystemTime },
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        match self {
            Slot::Ready(e) => Slot::Ready(Arc::clone(e)),
            Slot::Failed { error, until } => Slot::Failed { error: Arc::clone(error), until: *until },
        }
    }
}

/// Share of its lifetime within which an entry counts as young.
pub const YOUNG_FRACTION: f64 = 0.1;

impl<T> Entry<T> {
    /// True while the entry is within the first [`YOUNG_FRACTION`] of its lifetime.
    pub fn is_young(&self, now: SystemTime) -> bool {
        let lifetime = self.schedule.expires_at.duration_since(self.fetched_at).unwrap_or_default();
        now.duration_since(self.fetched_at).unwrap_or_default() <= lifetime.mul_f64(YOUNG_FRACTION)
    }
}

impl<T> Slot<T> {
    fn still_good(&self, now: SystemTime) -> bool {
        match self {
            Slot::Ready(e) => e.schedule.is_usable(now),
            Slot::Failed { until, .. } => now < *until,
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What a cache holds for a key, seen without loading, refreshing or counting anything.
#[derive(Debug)]
pub enum Peek<T> {
    /// Nothing usable: the next request loads it.
    Empty,
    /// A usable value; after `refresh_in` the next request refreshes it in the background.
    Ready {
        /// The value.
        value: Arc<T>,
        /// How long it is still served.
        usable_for: Duration,
        /// Time until a background refresh starts (zero when due).
        refresh_in: Duration,
    },
    /// A remembered terminal failure.
    Failed {
        /// Its code.
        code: String,
        /// How long it is still remembered.
        remembered_for: Duration,
    },
}

/// One named cache of expiring values keyed by `K`.
pub struct ExpiringCache<K, T> {
    name: &'static str,
    inner: moka::future::Cache<K, Slot<T>>,
    clock: SharedClock,
    config: std::sync::RwLock<CacheConfig>,
    counters: CacheCounters,
}

impl<K, T> std::fmt::Debug for ExpiringCache<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiringCache").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<K, T> ExpiringCache<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Expiring + Send + Sync + 'static,
{
    /// A cache named `name` (one of [`crate::metrics::CACHES`]) holding up to `capacity` keys.
    pub fn new(
        name: &'static str,
        capacity: u64,
        config: CacheConfig,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Self {
        let inner = moka::future::Cache::builder().max_capacity(capacity).time_to_idle(config.idle).build();
        ExpiringCache {
            name,
            inner,
            clock,
            config: std::sync::RwLock::new(config),
            counters: metrics.cache_counters(name),
        }
    }

    /// Returns a usable value for `key`, loading it with `load` when there is none.
    ///
    /// Concurrent callers of a missing key share one `load`. A usable entry past its refresh
    /// point is returned at once and refreshed by one background task; if that refresh fails the
    /// old entry keeps being served while it is usable. A terminal denial is remembered for
    /// the negative TTL; any other failure is handed to the callers that waited for it and then
    /// forgotten.
    pub async fn get_or_load<F, Fut>(&self, key: &K, load: F) -> Result<(Arc<T>, Outcome), Arc<BrokerError>>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, BrokerError>> + Send + 'static,
    {
        self.lookup(key, false, load).await
    }

    /// The value for `key` when a fresh entry holds it (usable and not yet due for refresh),
    /// counted as a hit; `None` otherwise, and then [`get_or_load`](Self::get_or_load) decides.
    ///
    /// The hot path tries this first so a hit clones no key and builds no loader.
    pub async fn get_fresh(&self, key: &K) -> Option<Arc<T>> {
        self.get_fresh_until(key).await.map(|(value, _)| value)
    }

    /// Like [`get_fresh`](Self::get_fresh), with the time until which the value stays fresh
    /// (its refresh point, never past its usable time): a caller may hand it out again until then.
    pub async fn get_fresh_until(&self, key: &K) -> Option<(Arc<T>, SystemTime)> {
        let now = self.clock.now();
        match self.inner.get(key).await {
            Some(Slot::Ready(entry)) if entry.schedule.is_usable(now) && !entry.schedule.should_refresh(now) => {
                self.counters.record(CacheEvent::Hit);
                Some((Arc::clone(&entry.value), entry.schedule.refresh_at.min(entry.schedule.usable_until)))
            }
            _ => None,
        }
    }

    /// Counts a hit served from a copy of this cache's value held elsewhere (the broker's
    /// answer cache), so the hit counters stay true.
    pub fn record_hit(&self) {
        self.counters.record(CacheEvent::Hit);
    }

    /// Like [`get_or_load`](Self::get_or_load), but accepts only an entry fetched within the
    /// first tenth of its lifetime, loading a new one otherwise.
    ///
    /// Used for the last hop of a role chain: a registry credential minted with an old session
    /// would inherit that session's short remaining life.
    pub async fn get_or_load_young<F, Fut>(&self, key: &K, load: F) -> Result<(Arc<T>, Outcome), Arc<BrokerError>>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, BrokerError>> + Send + 'static,
    {
        self.lookup(key, true, load).await
    }

    async fn lookup<F, Fut>(&self, key: &K, young: bool, load: F) -> Result<(Arc<T>, Outcome), Arc<BrokerError>>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, BrokerError>> + Send + 'static,
    {
        let now = self.clock.now();
        // A usable entry set aside by a young lookup, put back if the reload fails.
        let mut set_aside = None;
        match self.inner.get(key).await {
            Some(Slot::Ready(entry)) if young && !entry.is_young(now) => {
                set_aside = Some(entry).filter(|e| e.schedule.is_usable(now));
            }
            Some(Slot::Ready(entry)) if entry.schedule.is_usable(now) => {
                if entry.schedule.should_refresh(now) {
                    self.counters.record(CacheEvent::StaleServed);
                    self.refresh_in_background(key, &entry, Arc::new(load));
                    return Ok((Arc::clone(&entry.value), Outcome::Stale));
                }
                self.counters.record(CacheEvent::Hit);
                return Ok((Arc::clone(&entry.value), Outcome::Hit));
            }
            Some(Slot::Failed { error, until }) if now < until => {
                self.counters.record(CacheEvent::Hit);
                return Err(error);
            }
            _ => {}
        }
        let (clock, inner, owned_key, init) =
            (Arc::clone(&self.clock), self.inner.clone(), key.clone(), self.load_slot(load));
        // The shared load runs in its own task: a caller that disconnects must not abort a load
        // the other waiters (and the account's STS quota) are already paying for.
        let joined = tokio::spawn(async move {
            let entry = inner
                .entry(owned_key)
                .or_insert_with_if(init, move |slot| {
                    let now = clock.now();
                    !slot.still_good(now) || (young && matches!(slot, Slot::Ready(e) if !e.is_young(now)))
                })
                .await;
            (entry.is_fresh(), entry.into_value())
        })
        .await;
        let (fresh, slot) = joined.map_err(|e| {
            Arc::new(BrokerError::Unavailable {
                action: self.name,
                code: String::from("LoadAborted"),
                message: format!("the {} load ended early: {e}", self.name),
                retry_after: Duration::from_secs(1),
            })
        })?;
        let outcome = if fresh { Outcome::Miss } else { Outcome::Coalesced };
        self.counters.record(if outcome == Outcome::Miss { CacheEvent::Miss } else { CacheEvent::Coalesced });
        match slot {
            Slot::Ready(e) if e.schedule.is_usable(self.clock.now()) => Ok((Arc::clone(&e.value), outcome)),
            Slot::Ready(_) => Err(Arc::new(BrokerError::expired_upstream(self.name))),
            Slot::Failed { error, .. } => {
                // A passing failure puts the still-valid entry back — but only while
                // the slot holds this very failure: a fresher entry installed meanwhile, or a
                // terminal denial that must be remembered, is left as it is.
                if let Some(previous) = set_aside.filter(|e| e.schedule.is_usable(self.clock.now())) {
                    if !error.is_terminal() {
                        self.replace_if(
                            key,
                            |slot| matches!(slot, Slot::Failed { error: e, .. } if Arc::ptr_eq(e, &error)),
                            Some(Slot::Ready(previous)),
                        )
                        .await;
                    }
                }
                Err(error)
            }
        }
    }

    /// Loads and wraps one value, turning failures into a slot (remembered if terminal).
    ///
    /// Every caller that misses hands one of these to the cache, and only one runs. So the walk
    /// is started (and boxed) only when it runs: the others wait carrying a few bytes, not the
    /// whole walk's state (5 KB for a credential) — with 10,000 callers on one cold key, copying
    /// those was most of their wait.
    fn load_slot<F, Fut>(&self, load: F) -> impl Future<Output = Slot<T>> + Send + 'static
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, BrokerError>> + Send + 'static,
    {
        let clock = Arc::clone(&self.clock);
        let config = self.config();
        async move {
            let result = Box::pin(load()).await;
            let now = clock.now();
            match result {
                Ok(v) => Slot::Ready(Arc::new(make_entry(v, now, &config))),
                Err(e) => {
                    let until = if e.is_terminal() { now + config.negative_ttl } else { now };
                    Slot::Failed { error: Arc::new(e), until }
                }
            }
        }
    }

    fn refresh_in_background<F, Fut>(&self, key: &K, entry: &Arc<Entry<T>>, load: Arc<F>)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, BrokerError>> + Send + 'static,
    {
        let now = self.clock.now();
        if millis(now) < entry.retry_after_ms.load(Ordering::Relaxed) {
            return;
        }
        if entry.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (inner, clock, config, metrics, name) =
            (self.inner.clone(), Arc::clone(&self.clock), self.config(), self.counters.clone(), self.name);
        let (key, entry) = (key.clone(), Arc::clone(entry));
        tokio::spawn(async move {
            // Cleared however the task ends (even a panic), so refresh-ahead never stalls.
            let _refreshing = ClearRefreshing(Arc::clone(&entry));
            let result = load().await;
            let now = clock.now();
            match result {
                Ok(v) => {
                    metrics.record(CacheEvent::RefreshOk);
                    inner.insert(key, Slot::Ready(Arc::new(make_entry(v, now, &config)))).await;
                }
                Err(e) => {
                    metrics.record(CacheEvent::RefreshFailed);
                    let left = entry.schedule.usable_until.duration_since(now).unwrap_or_default();
                    // Try again soon, but not on every request: a tenth of what is left, 1 s to 30 s.
                    let pause = (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
                    entry.retry_after_ms.store(millis(now + pause), Ordering::Relaxed);
                    tracing::warn!(cache = name, code = e.code(), error = %e,
                        remaining_secs = left.as_secs(), "refresh failed; serving the cached value while it is valid");
                }
            }
        });
    }

    /// What the cache holds for `key` now, without loading or counting a hit (for `explain`).
    pub async fn peek(&self, key: &K) -> Peek<T> {
        let now = self.clock.now();
        let left = |t: SystemTime| t.duration_since(now).unwrap_or_default();
        match self.inner.get(key).await {
            Some(Slot::Ready(e)) if e.schedule.is_usable(now) => Peek::Ready {
                value: Arc::clone(&e.value),
                usable_for: left(e.schedule.usable_until),
                refresh_in: left(e.schedule.refresh_at),
            },
            Some(Slot::Failed { error, until }) if now < until => {
                Peek::Failed { code: error.code().to_owned(), remembered_for: left(until) }
            }
            _ => Peek::Empty,
        }
    }

    /// The cache settings in force (a reload may change them).
    fn config(&self) -> CacheConfig {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Takes new cache settings (a config reload): loads from now on use them, and every ready
    /// entry is planned again from its own fetch time and expiry, so new margins apply to values
    /// already cached without fetching them again.
    pub async fn replan(&self, config: CacheConfig) {
        match self.config.write() {
            Ok(mut c) => *c = config.clone(),
            Err(poisoned) => *poisoned.into_inner() = config.clone(),
        }
        let ready: Vec<(Arc<K>, Arc<Entry<T>>)> = self
            .inner
            .iter()
            .filter_map(|(k, slot)| match slot {
                Slot::Ready(e) => Some((k, e)),
                Slot::Failed { .. } => None,
            })
            .collect();
        for (key, old) in ready {
            let schedule = Schedule::plan(old.fetched_at, old.value.expires_at(), &config, rand::random::<f64>());
            let entry = Entry {
                value: Arc::clone(&old.value),
                fetched_at: old.fetched_at,
                schedule,
                refreshing: AtomicBool::new(false),
                retry_after_ms: AtomicU64::new(0),
            };
            // Only over the entry planned before; a value loaded meanwhile is already on the new plan.
            self.replace_if(
                &key,
                |slot| matches!(slot, Slot::Ready(e) if Arc::ptr_eq(e, &old)),
                Some(Slot::Ready(Arc::new(entry))),
            )
            .await;
        }
    }

    /// Drops every entry (a reload changed what they were loaded with: identity, endpoints).
    pub fn clear(&self) {
        self.inner.invalidate_all();
    }

    /// Drops one key (used when upstream says a cached value no longer works).
    pub async fn invalidate(&self, key: &K) {
        self.inner.invalidate(key).await;
    }

    /// Drops `key` only while it still holds `value` (the one a caller found not to work), so
    /// a fresher value another caller loaded meanwhile stays. True when it was dropped.
    pub async fn invalidate_value(&self, key: &K, value: &Arc<T>) -> bool {
        self.replace_if(key, |slot| matches!(slot, Slot::Ready(e) if Arc::ptr_eq(&e.value, value)), None).await
    }

    /// Atomically replaces (or with `None`, removes) the slot for `key` when `holds` says it is
    /// still the one the caller saw: a compare-and-swap on the entry's identity.
    async fn replace_if(&self, key: &K, holds: impl FnOnce(&Slot<T>) -> bool, with: Option<Slot<T>>) -> bool {
        use moka::ops::compute::{CompResult, Op};
        let result = self
            .inner
            .entry(key.clone())
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if holds(entry.value()) => with.map_or(Op::Remove, Op::Put),
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        matches!(result, CompResult::Inserted(_) | CompResult::ReplacedWith(_) | CompResult::Removed(_))
    }

    /// Entry count and time until the soonest usable-until among ready entries.
    pub fn stats(&self) -> (u64, Option<Duration>) {
        let now = self.clock.now();
        let mut soonest: Option<Duration> = None;
        let mut count = 0u64;
        for (_, slot) in self.inner.iter() {
            count += 1;
            if let Slot::Ready(e) = slot {
                let left = e.schedule.usable_until.duration_since(now).unwrap_or_default();
                soonest = Some(soonest.map_or(left, |s| s.min(left)));
            }
        }
        (count, soonest)
    }
}

/// Clears an entry's refresh-in-flight flag when dropped.
struct ClearRefreshing<T>(Arc<Entry<T>>);

impl<T> Drop for ClearRefreshing<T> {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

fn make_entry<T: Expiring>(value: T, now: SystemTime, config: &CacheConfig) -> Entry<T> {
    let schedule = Schedule::plan(now, value.expires_at(), config, rand::random::<f64>());
    Entry {
        value: Arc::new(value),
        fetched_at: now,
        schedule,
        refreshing: AtomicBool::new(false),
        retry_after_ms: AtomicU64::new(0),
    }
}

#[cfg(test)]
mod tests;
