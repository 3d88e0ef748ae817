//! Any configuration `check-config` accepts must start the daemon without a panic: every
//! duration and size key is bounded to what its consumer (moka, tokio, STS) accepts.

use std::time::Duration;

use acr_broker::config::Config;
use acr_broker::daemon::Daemon;
use proptest::prelude::*;

/// A key left out (most often), a value near the edges of the documented ranges, or a wild one
/// (the largest TOML integer, the value that once panicked moka).
fn any_count() -> impl Strategy<Value = Option<i64>> {
    let edges = prop::sample::select(vec![0i64, 1, 10, 30, 60, 100, 300, 900, 3600, 43_200, 86_400, 604_800, 65_536]);
    let wild = prop_oneof![Just(40_000_000_000i64), Just(i64::MAX), any::<i64>(), 0..200_000i64];
    prop::option::weighted(0.12, prop_oneof![8 => edges, 1 => wild])
}

fn any_ratio() -> impl Strategy<Value = Option<f64>> {
    let wild = prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(1e300)];
    prop::option::weighted(0.12, prop_oneof![8 => 0.0..1.0f64, 1 => wild])
}

/// TOML for a float (TOML spells NaN and infinity `nan` and `inf`).
fn toml_float(f: f64) -> String {
    if f.is_nan() {
        String::from("nan")
    } else if f.is_infinite() {
        String::from(if f > 0.0 { "inf" } else { "-inf" })
    } else {
        format!("{f:?}")
    }
}

fn config_text(socket: &std::path::Path, ints: &[Option<i64>], floats: &[Option<f64>]) -> String {
    let int_keys = [
        ("server", "max_connections"),
        ("server", "header_timeout_seconds"),
        ("identity", "reread_seconds"),
        ("cache", "capacity"),
        ("cache", "expiry_margin_seconds"),
        ("cache", "min_remaining_seconds"),
        ("cache", "negative_ttl_seconds"),
        ("cache", "idle_seconds"),
        ("cache", "session_duration_seconds"),
        ("cache", "domain_ttl_seconds"),
        ("upstream", "sts_burst"),
        ("upstream", "acr_burst"),
        ("upstream", "max_concurrent"),
        ("upstream", "max_attempts"),
        ("upstream", "backoff_base_ms"),
        ("upstream", "backoff_max_ms"),
        ("upstream", "api_timeout_ms"),
        ("upstream", "metadata_timeout_ms"),
    ];
    let float_keys = [
        ("cache", "refresh_fraction"),
        ("cache", "refresh_jitter"),
        ("upstream", "sts_rate_per_second"),
        ("upstream", "acr_rate_per_second"),
    ];
    let mut sections: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
    sections.insert("server", format!("socket = \"{}\"\nmetrics = \"127.0.0.1:0\"\n", socket.display()));
    sections.insert(
        "identity",
        String::from(
            "source = \"static\"\naccess_key_id = \"LTAIexample\"\naccess_key_secret = \"not-a-real-secret\"\n",
        ),
    );
    sections.insert(
        "aliyun",
        String::from(
            "region = \"cn-hangzhou\"\nsts_endpoint = \"http://127.0.0.1:9\"\ncr_endpoint = \"http://127.0.0.1:9/{region}\"\n",
        ),
    );
    for ((section, key), v) in int_keys.iter().zip(ints) {
        if let Some(v) = v {
            sections.entry(section).or_default().push_str(&format!("{key} = {v}\n"));
        }
    }
    for ((section, key), v) in float_keys.iter().zip(floats) {
        if let Some(v) = v {
            sections.entry(section).or_default().push_str(&format!("{key} = {}\n", toml_float(*v)));
        }
    }
    sections.iter().map(|(name, body)| format!("[{name}]\n{body}\n")).collect()
}

fn start_and_stop(config: Config) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async {
        let daemon = Daemon::start(config, acr_broker::clock::system()).await.expect("an accepted config starts");
        tokio::time::sleep(Duration::from_millis(5)).await;
        daemon.shutdown().await;
    });
}

#[test]
fn any_accepted_config_starts_without_a_panic() {
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};
    let accepted = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(RunnerConfig { cases: 240, ..RunnerConfig::default() });
    let inputs = (proptest::collection::vec(any_count(), 18), proptest::collection::vec(any_ratio(), 4));
    runner
        .run(&inputs, |(ints, floats)| {
            let dir = tempfile::tempdir().expect("tempdir");
            let text = config_text(&dir.path().join("broker.sock"), &ints, &floats);
            if let Ok(config) = Config::from_toml(&text, "<proptest>") {
                accepted.set(accepted.get() + 1);
                start_and_stop(config);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // The property is about accepted configs: make sure enough of them were tried.
    assert!(accepted.get() >= 20, "only {} of 240 generated configs were accepted", accepted.get());
}

/// The value the review found: it passed `check-config`, then panicked in moka at start.
#[test]
fn an_idle_time_moka_cannot_take_is_a_config_error() {
    let text = "[aliyun]\nregion = \"cn-hangzhou\"\n[cache]\nidle_seconds = 40000000000\n";
    let e = Config::from_toml(text, "broker.toml").expect_err("out of range");
    let shown = e.to_string();
    assert!(shown.contains("cache.idle_seconds") && shown.contains("60..=604800"), "{shown}");
    assert_eq!(e.issues[0].line, Some(4));
}

/// Every bounded key names its range, and all problems come in one report.
#[test]
fn out_of_range_values_are_all_reported_at_once() {
    let text = "[aliyun]\nregion = \"cn-hangzhou\"\n[server]\nheader_timeout_seconds = 0\n\
                [upstream]\napi_timeout_ms = 5\nsts_burst = 0\nacr_rate_per_second = nan\n\
                [cache]\nnegative_ttl_seconds = 999999\ndomain_ttl_seconds = 1\n";
    let e = Config::from_toml(text, "broker.toml").expect_err("out of range");
    let keys: Vec<&str> = e.issues.iter().map(|i| i.key.as_str()).collect();
    for want in [
        "server.header_timeout_seconds",
        "upstream.api_timeout_ms",
        "upstream.sts_burst",
        "upstream.acr_rate_per_second",
        "cache.negative_ttl_seconds",
        "cache.domain_ttl_seconds",
    ] {
        assert!(keys.contains(&want), "{want} missing from {keys:?}");
    }
}
