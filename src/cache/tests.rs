use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::clock::{Clock, ManualClock};

#[derive(Debug)]
struct Token {
    serial: usize,
    expires_at: SystemTime,
}

impl Expiring for Token {
    fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

fn epoch(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn config() -> CacheConfig {
    CacheConfig { refresh_jitter: 0.0, ..CacheConfig::default() }
}

fn cache(clock: &Arc<ManualClock>) -> ExpiringCache<&'static str, Token> {
    ExpiringCache::new("credential", 100, config(), clock.clone(), Arc::new(Metrics::new()))
}

/// A loader that counts calls and issues tokens living `life` from the clock's now.
fn loader(
    clock: &Arc<ManualClock>,
    calls: &Arc<AtomicUsize>,
    life: Duration,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Token, BrokerError>> + Send>> + Send + Sync + 'static {
    let (clock, calls) = (clock.clone(), calls.clone());
    move || {
        let (clock, calls) = (clock.clone(), calls.clone());
        Box::pin(async move {
            let serial = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Token { serial, expires_at: clock.now() + life })
        })
    }
}

#[test]
fn schedule_for_an_hour_long_credential() {
    let s = Schedule::plan(epoch(0), epoch(3600), &config(), 0.5);
    assert_eq!(s.refresh_at, epoch(1800));
    assert_eq!(s.expires_at, epoch(3540));
    assert_eq!(s.usable_until, epoch(3420));
    assert!(s.is_usable(epoch(3419)) && !s.is_usable(epoch(3420)));
    assert!(!s.should_refresh(epoch(1799)) && s.should_refresh(epoch(1800)));
}

#[test]
fn short_lifetimes_keep_proportional_margins() {
    let s = Schedule::plan(epoch(0), epoch(60), &config(), 0.5);
    assert_eq!(s.expires_at, epoch(54));
    assert_eq!(s.usable_until, epoch(39));
    assert_eq!(s.refresh_at, epoch(30));
}

#[test]
fn jitter_spreads_the_refresh_point() {
    let c = CacheConfig { refresh_jitter: 0.1, ..CacheConfig::default() };
    let early = Schedule::plan(epoch(0), epoch(3600), &c, 0.0);
    let late = Schedule::plan(epoch(0), epoch(3600), &c, 1.0);
    assert_eq!(early.refresh_at, epoch(1440));
    assert_eq!(late.refresh_at, epoch(2160));
}

#[tokio::test]
async fn concurrent_misses_share_one_load() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::new(cache(&clock));
    let load = Arc::new(loader(&clock, &calls, Duration::from_secs(3600)));
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (c, load, barrier) = (c.clone(), load.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            c.get_or_load(&"k", move || load()).await.map(|(t, _)| t.serial)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("loaded"), 1);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stale_entry_is_served_while_one_refresh_runs() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = cache(&clock);
    let (first, o) = c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("load");
    assert_eq!((first.serial, o), (1, Outcome::Miss));
    clock.advance(Duration::from_secs(1900));
    for _ in 0..5 {
        let (t, o) = c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("stale");
        assert_eq!((t.serial, o), (1, Outcome::Stale));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "exactly one background refresh");
    let (t, o) = c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("fresh");
    assert_eq!((t.serial, o), (2, Outcome::Hit));
}

#[tokio::test]
async fn failed_refresh_keeps_serving_only_while_usable() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = cache(&clock);
    c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("load");
    let failing = || async {
        Err::<Token, _>(BrokerError::Unavailable {
            action: "GetAuthorizationToken",
            code: "ServiceUnavailable".into(),
            message: String::new(),
            retry_after: Duration::from_secs(1),
        })
    };
    clock.advance(Duration::from_secs(2000));
    let (t, _) = c.get_or_load(&"k", failing).await.expect("still valid");
    assert_eq!(t.serial, 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    clock.advance(Duration::from_secs(1419)); // 3419 s after fetch: 1 s before usable_until
    assert_eq!(c.get_or_load(&"k", failing).await.expect("last usable second").0.serial, 1);
    clock.advance(Duration::from_secs(1)); // usable_until reached: never served again
    let err = c.get_or_load(&"k", failing).await.expect_err("expired must not be served");
    assert_eq!(err.code(), "ServiceUnavailable");
}

#[tokio::test]
async fn terminal_denials_are_remembered_briefly() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = cache(&clock);
    let denied = {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<Token, _>(BrokerError::Denied {
                    action: "AssumeRole",
                    code: "NoPermission".into(),
                    message: String::new(),
                })
            }
        }
    };
    for _ in 0..10 {
        assert_eq!(c.get_or_load(&"k", denied.clone()).await.expect_err("denied").code(), "NoPermission");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(31));
    let _ = c.get_or_load(&"k", denied.clone()).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn young_lookup_reloads_an_aged_entry() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = cache(&clock);
    c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("load");
    clock.advance(Duration::from_secs(300));
    assert_eq!(
        c.get_or_load_young(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("young").0.serial,
        1
    );
    clock.advance(Duration::from_secs(400));
    let (t, o) = c.get_or_load_young(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("reload");
    assert_eq!((t.serial, o), (2, Outcome::Miss));
}

#[tokio::test]
async fn failed_young_reload_keeps_the_valid_entry() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = cache(&clock);
    c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("load");
    clock.advance(Duration::from_secs(700));
    let failing = || async {
        Err::<Token, _>(BrokerError::Unavailable {
            action: "AssumeRole",
            code: "ServiceUnavailable".into(),
            message: String::new(),
            retry_after: Duration::from_secs(1),
        })
    };
    assert!(c.get_or_load_young(&"k", failing).await.is_err(), "the young reload itself fails");
    let (t, o) = c.get_or_load(&"k", failing).await.expect("the old, still valid entry survives");
    assert_eq!((t.serial, o), (1, Outcome::Hit));
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_abort_the_shared_load() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::new(cache(&clock));
    let slow = {
        let (clock, calls) = (clock.clone(), calls.clone());
        move || {
            let (clock, calls) = (clock.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, BrokerError>(Token { serial: 1, expires_at: clock.now() + Duration::from_secs(3600) })
            }
        }
    };
    // The first caller gives up after 20 ms (a helper timing out, a client disconnecting).
    let impatient = tokio::time::timeout(Duration::from_millis(20), c.get_or_load(&"k", slow.clone())).await;
    assert!(impatient.is_err());
    let (t, _) = c.get_or_load(&"k", slow).await.expect("the load went on without its first caller");
    assert_eq!(t.serial, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one upstream call, not two");
}

/// Before the fix, a failed young reload put the old entry back unconditionally, discarding
/// the terminal denial the reload had just cached (and so calling upstream again at once).
#[tokio::test]
async fn failed_young_reload_keeps_a_terminal_denial() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = cache(&clock);
    c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("load");
    clock.advance(Duration::from_secs(700));
    let denials = Arc::new(AtomicUsize::new(0));
    let denied = {
        let denials = denials.clone();
        move || {
            let denials = denials.clone();
            async move {
                denials.fetch_add(1, Ordering::SeqCst);
                Err::<Token, _>(BrokerError::Denied {
                    action: "AssumeRole",
                    code: "NoPermission".into(),
                    message: String::from("trust revoked"),
                })
            }
        }
    };
    assert!(c.get_or_load_young(&"k", denied.clone()).await.is_err());
    let again = c.get_or_load(&"k", denied).await;
    let denial = again.expect_err("the denial is remembered");
    assert!(matches!(*denial, BrokerError::Denied { .. }), "{denial}");
    assert_eq!(denials.load(Ordering::SeqCst), 1, "no second upstream call within the negative TTL");
}

#[tokio::test]
async fn invalidate_value_drops_only_the_value_the_caller_saw() {
    let clock = ManualClock::new(epoch(1_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = cache(&clock);
    let (first, _) = c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("load");
    assert!(c.invalidate_value(&"k", &first).await, "the value seen is dropped");
    let (second, _) = c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("reload");
    assert_eq!(second.serial, 2);
    // A second caller holding the old value must not drop the fresher one.
    assert!(!c.invalidate_value(&"k", &first).await);
    let (still, o) = c.get_or_load(&"k", loader(&clock, &calls, Duration::from_secs(3600))).await.expect("hit");
    assert_eq!((still.serial, o), (2, Outcome::Hit));
}
