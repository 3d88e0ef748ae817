//! In-process hot path: `Broker::credentials` on a warm key (host parse, annotations, policy
//! plan, cache hits), measured with criterion; plus allocations per hit from a counting allocator
//! and a check that a hit hands out the cached `Arc<Issued>` (no copy of the secret).
//!
//! Run: `cargo bench --bench hot_path`. The emulator and the daemon run in this process on
//! loopback; only the warm-up touches them.

#[path = "common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acr_broker::broker::{Broker, CredentialRequest};
use acr_broker::daemon::Daemon;
use criterion::{criterion_group, criterion_main, Criterion};

/// Counts allocations so a hit's allocations can be reported.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Setup {
    rt: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    _daemon: Daemon,
    _emu: acr_emulator::Emulator,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (emu, daemon, dir) = rt.block_on(async {
        let emu = common::emulator(common::world(0, 0, ""), common::knobs(0)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let text = common::config_text(&emu, &dir.path().join("broker.sock"), "");
        let config = acr_broker::config::Config::from_toml(&text, "<bench>").expect("config");
        let daemon = Daemon::start(config, acr_broker::clock::system()).await.expect("daemon");
        (emu, daemon, dir)
    });
    let broker = Arc::clone(&daemon.broker);
    Setup { rt, broker, _daemon: daemon, _emu: emu, _dir: dir }
}

fn requests() -> Vec<(&'static str, CredentialRequest)> {
    let svc = BTreeMap::from([(
        String::from(common::SERVICE_ARNS),
        String::from("acs:ram::1111111111111111:role/eci-acr-service"),
    )]);
    vec![
        ("ee_default_domain", CredentialRequest { registry: common::DEMO_HOST.into(), ..Default::default() }),
        ("personal", CredentialRequest { registry: common::PERSONAL_HOST.into(), ..Default::default() }),
        (
            "ee_service_role",
            CredentialRequest { registry: common::DEMO_HOST.into(), annotations: svc, ..Default::default() },
        ),
    ]
}

/// Warms every key and checks that hits share the cached credential; prints allocations per hit.
fn warm_and_check(s: &Setup) {
    for (name, req) in requests() {
        let first = s.rt.block_on(s.broker.credentials(&req)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let second = s.rt.block_on(s.broker.credentials(&req)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(Arc::ptr_eq(&first.credential, &second.credential), "{name}: a hit copied the credential");
        assert_eq!(second.outcome.as_str(), "hit", "{name}: second lookup was not a hit");
        const N: u64 = 10_000;
        let (a0, b0) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        let t = Instant::now();
        s.rt.block_on(async {
            for _ in 0..N {
                black_box(s.broker.credentials(&req).await.ok());
            }
        });
        let per = t.elapsed() / N as u32;
        let (a, b) = (ALLOCS.load(Ordering::Relaxed) - a0, BYTES.load(Ordering::Relaxed) - b0);
        println!(
            "{name}: {:.1} allocations / {:.0} bytes per hit, {:?} per hit (plain loop), credential Arc shared by {} holders",
            a as f64 / N as f64,
            b as f64 / N as f64,
            per,
            Arc::strong_count(&second.credential)
        );
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    println!("machine: {}", common::machine());
    warm_and_check(&s);
    let mut g = c.benchmark_group("credentials_hit");
    g.measurement_time(Duration::from_secs(5));
    for (name, req) in requests() {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                s.rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        black_box(s.broker.credentials(black_box(&req)).await.ok());
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("pieces");
    g.bench_function("registry_host_parse", |b| {
        b.iter(|| acr_broker::registry::RegistryHost::parse(black_box(common::DEMO_HOST)))
    });
    let config = s.broker.config();
    let host = acr_broker::registry::RegistryHost::parse(common::DEMO_HOST).expect("host");
    g.bench_function("policy_plan", |b| {
        b.iter(|| {
            let a = acr_broker::policy::Annotations::from_map(std::iter::empty()).ok().flatten();
            acr_broker::policy::plan(black_box(&host), a.as_ref(), &config.defaults, &config.aliyun.region)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
