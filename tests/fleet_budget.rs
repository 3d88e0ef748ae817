//! Fleet budget: a deterministic simulation of the account-wide AssumeRole rate produced by N
//! nodes, each with C role chains of two hops (service role → user role), using the real refresh
//! schedule ([`Schedule::plan`] with the config defaults) and seeded jitter.
//!
//! Model of one (node, chain), following `src/broker/chain.rs` and `src/cache.rs`, with pulls
//! arriving continuously (every refresh happens right at its refresh point: the worst case):
//! - boot: `ListInstance` walks the chain (both hops assumed), then the registry credential is
//!   minted with the (still young) last hop;
//! - at the credential's refresh point the chain is walked with a fresh last hop: the last hop
//!   is assumed again unless it is young (first 10 % of its life); the first hop is reused, or
//!   refreshed in the background once past its own refresh point, or reloaded when unusable;
//! - at the instance lookup's refresh point the chain is walked without the young rule, so a
//!   last hop past its refresh point is refreshed then too.
//!
//! STS sessions live `[cache] session_duration_seconds` (3600 s by default; chained hops are
//! capped at 3600 s) and registry passwords one hour. Calls are counted per second over six
//! hours; the boot loads (2 per chain, spread by when nodes start pulling) are reported apart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acr_broker::cache::{Schedule, YOUNG_FRACTION};
use acr_broker::config::CacheConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The account-wide AssumeRole quota.
const QUOTA: f64 = 100.0;
const HOURS: u64 = 6;
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const CHAINS: usize = 3;

/// How nodes start pulling.
#[derive(Clone, Copy, Debug)]
enum Boot {
    /// Every node at the same second (a fleet-wide restart: the worst case for later waves).
    Lockstep,
    /// Uniformly over this many seconds (a rolling restart).
    Rolling(u64),
}

#[derive(Debug)]
struct Result {
    /// Largest calls in one second, boot loads excluded.
    peak: u64,
    /// Mean calls per second over the run, boot loads excluded.
    mean: f64,
    /// Largest calls in one second after the first two hours (the waves after a restart have spread).
    steady_peak: u64,
    /// Calls made by the first (cold) loads.
    boot_calls: u64,
}

struct Session {
    fetched: SystemTime,
    upstream_expiry: SystemTime,
    schedule: Schedule,
}

impl Session {
    fn new(at: SystemTime, lifetime: Duration, cfg: &CacheConfig, rng: &mut StdRng) -> Session {
        Session {
            fetched: at,
            upstream_expiry: at + lifetime,
            schedule: Schedule::plan(at, at + lifetime, cfg, rng.gen()),
        }
    }

    fn is_young(&self, now: SystemTime) -> bool {
        let life = self.schedule.expires_at.duration_since(self.fetched).unwrap_or_default();
        now.duration_since(self.fetched).unwrap_or_default() <= life.mul_f64(YOUNG_FRACTION)
    }
}

struct Chain {
    first: Session,
    last: Session,
    instance_refresh: SystemTime,
    credential_refresh: SystemTime,
}

fn simulate(nodes: usize, cfg: &CacheConfig, boot: Boot, seed: u64) -> Result {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let end = t0 + Duration::from_secs(HOURS * 3600);
    let session = cfg.session_duration.min(Duration::from_secs(3600));
    let mut bins = vec![0u64; (HOURS * 3600) as usize + 1];
    let mut counted = 0u64;
    let mut boot_calls = 0u64;
    let mut call = |at: SystemTime, bins: &mut Vec<u64>| {
        let s = at.duration_since(t0).unwrap_or_default().as_secs() as usize;
        if let Some(b) = bins.get_mut(s) {
            *b += 1;
            counted += 1;
        }
    };
    for _ in 0..nodes * CHAINS {
        let start = match boot {
            Boot::Lockstep => t0,
            Boot::Rolling(secs) => t0 + Duration::from_secs_f64(rng.gen::<f64>() * secs as f64),
        };
        // Boot: ListInstance assumes both hops; the credential reuses the young last hop.
        boot_calls += 2;
        let first = Session::new(start, cfg.session_duration, cfg, &mut rng);
        let last = Session::new(start, session, cfg, &mut rng);
        let lookup = Schedule::plan(start, start + Duration::from_secs(3600), cfg, rng.gen());
        let cred_expiry = (start + TOKEN_LIFETIME).min(last.upstream_expiry);
        let cred = Schedule::plan(start, cred_expiry, cfg, rng.gen());
        let mut c = Chain { first, last, instance_refresh: lookup.refresh_at, credential_refresh: cred.refresh_at };
        loop {
            let (t, is_credential) = if c.credential_refresh <= c.instance_refresh {
                (c.credential_refresh, true)
            } else {
                (c.instance_refresh, false)
            };
            if t >= end {
                break;
            }
            // First hop: plain get_or_load.
            if !c.first.schedule.is_usable(t) || c.first.schedule.should_refresh(t) {
                call(t, &mut bins);
                c.first = Session::new(t, cfg.session_duration, cfg, &mut rng);
            }
            // Last hop: young rule for a credential load, plain get_or_load for a lookup.
            let renew = if is_credential {
                !(c.last.schedule.is_usable(t) && c.last.is_young(t))
            } else {
                !c.last.schedule.is_usable(t) || c.last.schedule.should_refresh(t)
            };
            if renew {
                call(t, &mut bins);
                c.last = Session::new(t, session, cfg, &mut rng);
            }
            if is_credential {
                let expiry = (t + TOKEN_LIFETIME).min(c.last.upstream_expiry);
                c.credential_refresh = Schedule::plan(t, expiry, cfg, rng.gen()).refresh_at;
            } else {
                c.instance_refresh = Schedule::plan(t, t + Duration::from_secs(3600), cfg, rng.gen()).refresh_at;
            }
        }
    }
    let peak = bins.iter().copied().max().unwrap_or(0);
    let steady_peak = bins[2 * 3600..].iter().copied().max().unwrap_or(0);
    Result { peak, mean: counted as f64 / (HOURS * 3600) as f64, steady_peak, boot_calls }
}

/// Smallest node count (to within `step`) whose peak reaches the quota.
fn limit(cfg: &CacheConfig, boot: Boot, from: usize, step: usize) -> (usize, Result) {
    let mut n = from;
    loop {
        let r = simulate(n, cfg, boot, 7);
        if r.peak as f64 >= QUOTA || n > 1_000_000 {
            return (n, r);
        }
        n += step;
    }
}

#[test]
fn five_thousand_nodes_stay_under_the_sts_quota() {
    let cfg = CacheConfig::default();
    for boot in [Boot::Lockstep, Boot::Rolling(600)] {
        let r = simulate(5_000, &cfg, boot, 1);
        println!(
            "5000 nodes x {CHAINS} chains x 2 hops, 1-hour sessions, {boot:?}: peak {} AssumeRole/s, mean {:.1}/s over {HOURS} h, peak after 2 h {} (boot loads apart: {})",
            r.peak, r.mean, r.steady_peak, r.boot_calls
        );
        assert!((r.peak as f64) < QUOTA, "{boot:?}: peak {} reaches the quota", r.peak);
        assert!(r.mean < QUOTA);
        // Sanity: each chain refreshes about twice an hour per hop (about 0.0033 calls/s per chain-hop).
        let per_chain_hop = r.mean / (5_000 * CHAINS * 2) as f64;
        assert!((0.0004..0.002).contains(&per_chain_hop), "{per_chain_hop}");
    }
}

#[test]
fn the_limit_is_found_and_longer_first_hops_raise_it() {
    let cfg = CacheConfig::default();
    let (n, r) = limit(&cfg, Boot::Rolling(600), 6_000, 1_000);
    println!(
        "default schedule, rolling boot: the peak reaches {QUOTA}/s at about {n} nodes (peak {}, mean {:.1}/s)",
        r.peak, r.mean
    );
    assert!(n > 5_000);
    // 12-hour first hops: only the (capped) last hop and its lookups still refresh every half hour.
    let long = CacheConfig { session_duration: Duration::from_secs(43_200), ..CacheConfig::default() };
    let a = simulate(n, &cfg, Boot::Rolling(600), 3);
    let b = simulate(n, &long, Boot::Rolling(600), 3);
    println!(
        "{n} nodes: session_duration 3600 s -> peak {} mean {:.1}/s; 43200 s -> peak {} mean {:.1}/s",
        a.peak, a.mean, b.peak, b.mean
    );
    assert!(b.mean < a.mean * 0.8, "longer first-hop sessions must cut the rate: {} vs {}", b.mean, a.mean);
    let wide = CacheConfig { refresh_jitter: 0.25, ..CacheConfig::default() };
    let late = CacheConfig { refresh_fraction: 0.7, ..CacheConfig::default() };
    for (name, c) in [("refresh_jitter 0.25", &wide), ("refresh_fraction 0.7", &late)] {
        let r = simulate(n, c, Boot::Rolling(600), 3);
        println!("{n} nodes, {name}: peak {} mean {:.1}/s, peak after 2 h {}", r.peak, r.mean, r.steady_peak);
    }
    let (m, r) = limit(&long, Boot::Rolling(600), n, 2_000);
    println!("session_duration 43200 s (long-term-key node identity): the peak reaches {QUOTA}/s at about {m} nodes (peak {})", r.peak);
    assert!(m > n);
}

#[test]
fn the_simulation_is_deterministic() {
    let cfg = CacheConfig::default();
    let a = simulate(200, &cfg, Boot::Lockstep, 9);
    let b = simulate(200, &cfg, Boot::Lockstep, 9);
    assert_eq!((a.peak, a.boot_calls), (b.peak, b.boot_calls));
    assert!((a.mean - b.mean).abs() < 1e-12);
}
