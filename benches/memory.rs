//! Resident memory of the daemon (a child process, `/proc/PID/status` VmRSS): idle, then while
//! filling the credential cache with `MEM_KEYS` (100,000) distinct keys.
//!
//! Keys: 100 Personal registries (regions `cn-r0000`…) × 1,000 service roles of the node's
//! account, so every key is a distinct (region, Personal, chain) cache key costing one token
//! call (plus one AssumeRole per role). Bounded by `MEM_SECONDS` (900 s): when time runs out the
//! report says how many keys were reached, with the slope per entry.
//!
//! Run: `cargo bench --bench memory`. Loopback only.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Ask, ChildDaemon, Conn};

const REGIONS: usize = 100;
const MIB: f64 = 1048576.0;

fn main() {
    common::run_bench(run());
}

async fn run() {
    let keys: usize = common::env_or("MEM_KEYS", 100_000);
    let limit = Duration::from_secs(common::env_or("MEM_SECONDS", 900));
    let roles = keys.div_ceil(REGIONS);
    println!("machine: {}", common::machine());
    let emu = common::emulator(common::world(REGIONS, roles, ""), common::knobs(0)).await;
    // Capacity above the key count so nothing is evicted; warn-level logs (no audit line per fill).
    let daemon = ChildDaemon::spawn(&emu, "[cache]\ncapacity = 250000\n", "warn").await;
    let pid = daemon.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = common::rss_bytes(pid);
    let mut conn = Conn::connect(&daemon.socket).await.expect("connect");
    let (status, _) = Ask::new(common::PERSONAL_HOST, None).send(&mut conn).await.expect("first request");
    assert_eq!(status, 200);
    let one = common::rss_bytes(pid);
    println!("\n== daemon memory (VmRSS), child process ==");
    println!("idle (identity loaded, no credential): {:.1} MiB", idle as f64 / MIB);
    println!("after one credential:                  {:.1} MiB", one as f64 / MIB);

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (next, done, socket) = (Arc::clone(&next), Arc::clone(&done), daemon.socket.clone());
        tasks.spawn(async move {
            let mut conn = Conn::connect(&socket).await.expect("connect");
            let mut errors = 0usize;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= keys || Instant::now() >= deadline {
                    return errors;
                }
                let ask = Ask::new(&common::region_host(k % REGIONS), Some(&common::service_role(k / REGIONS)));
                match ask.send(&mut conn).await {
                    Ok((200, _)) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => errors += 1,
                }
            }
        });
    }
    let mut samples = vec![(1usize, one)];
    let step = (keys / 10).max(1);
    let mut mark = step;
    while !tasks.is_empty() {
        tokio::select! {
            r = tasks.join_next() => {
                if let Some(Ok(e)) = r {
                    if e > 0 {
                        println!("a filler saw {e} failed answers");
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let d = done.load(Ordering::Relaxed);
        if d >= mark {
            let rss = common::rss_bytes(pid);
            println!("{d:>7} credentials: {:6.1} MiB  ({:.0} s)", rss as f64 / MIB, started.elapsed().as_secs_f64());
            samples.push((d, rss));
            mark += step;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let filled = done.load(Ordering::Relaxed);
    let full = common::rss_bytes(pid);
    samples.push((filled + 1, full));
    let calls = emu.count("PersonalGetAuthorizationToken");
    println!(
        "filled {filled} keys in {:.0} s; token calls {calls}, AssumeRole {}",
        started.elapsed().as_secs_f64(),
        emu.count("AssumeRole")
    );
    println!(
        "with {filled} cached credentials: {:.1} MiB; {:.0} bytes per entry ((RSS_full - RSS_one) / keys)",
        full as f64 / MIB,
        (full.saturating_sub(one)) as f64 / filled.max(1) as f64
    );
    if let (Some(a), Some(b)) = (samples.get(samples.len() / 2), samples.last()) {
        if b.0 > a.0 {
            println!(
                "slope over the second half ({} -> {} keys): {:.0} bytes per entry",
                a.0,
                b.0,
                (b.1 as f64 - a.1 as f64) / (b.0 - a.0) as f64
            );
        }
    }
    drop(daemon);
}
