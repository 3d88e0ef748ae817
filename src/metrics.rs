//! Prometheus metrics: names, label sets and the registry they live in.
//!
//! Every label value comes from a small fixed set (surfaces, outcomes, cache names, API
//! actions); no instance ids, hosts or ARNs ever become labels. Known series are created at
//! start so dashboards see zeros rather than gaps.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Where a request came from.
pub const SURFACES: &[&str] = &["api", "helper", "kubelet", "cli", "token", "prefetch"];
/// How a request ended.
pub const OUTCOMES: &[&str] = &["ok", "not_found", "bad_request", "denied", "unavailable", "error"];
/// The caches the broker keeps.
pub const CACHES: &[&str] = &["identity", "session", "instance", "domain", "credential"];
/// Upstream actions.
pub const ACTIONS: &[&str] = &[
    "AssumeRole",
    "AssumeRoleWithOIDC",
    "GetAuthorizationToken",
    "ListInstance",
    "ListInstanceEndpoint",
    "PersonalGetAuthorizationToken",
    "Metadata",
    "RegistryToken",
];
/// How a config reload ended.
pub const RELOAD_OUTCOMES: &[&str] = &["ok", "invalid", "error"];
/// Upstream outcomes.
pub const UPSTREAM_OUTCOMES: &[&str] = &["ok", "throttled", "denied", "error"];

const LATENCY_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// All metrics of one daemon, in their own registry (no global state).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `acr_broker_requests_total` per (surface, outcome), resolved once: `[s * OUTCOMES.len() + o]`.
    requests_by: Vec<prometheus::IntCounter>,
    /// `acr_broker_request_duration_seconds` per surface, resolved once.
    duration_by: Vec<prometheus::Histogram>,
    cache_hits: IntCounterVec,
    cache_misses: IntCounterVec,
    cache_coalesced: IntCounterVec,
    cache_refreshes: IntCounterVec,
    cache_stale_served: IntCounterVec,
    cache_entries: IntGaugeVec,
    cache_soonest_expiry: prometheus::GaugeVec,
    upstream_calls: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_in_flight: IntGauge,
    audit_denied: prometheus::IntCounter,
    config_reloads: IntCounterVec,
    config_last_reload_success: prometheus::Gauge,
    audit_queue_depth: IntGauge,
    audit_waits: prometheus::IntCounter,
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a IntGauge);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable_metric(name, e));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    let _ = registry.register(Box::new(h.clone()));
    h
}

/// Metric definitions are static; a failure here is a programming error caught by the tests.
fn unreachable_metric<T>(name: &str, e: prometheus::Error) -> T {
    panic!("invalid metric definition {name}: {e}")
}

impl Metrics {
    /// Creates every metric, pre-initialises the known series and registers process metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "acr_broker_requests_total",
            "Credential requests answered, by surface and outcome.",
            &["surface", "outcome"],
        );
        let request_duration = histogram_vec(
            &registry,
            "acr_broker_request_duration_seconds",
            "Time to answer a request, by surface.",
            &["surface"],
        );
        let cache_hits =
            counter_vec(&registry, "acr_broker_cache_hits_total", "Lookups served from the cache.", &["cache"]);
        let cache_misses =
            counter_vec(&registry, "acr_broker_cache_misses_total", "Lookups that had to load upstream.", &["cache"]);
        let cache_coalesced = counter_vec(
            &registry,
            "acr_broker_cache_coalesced_loads_total",
            "Lookups that waited on a load another caller had started.",
            &["cache"],
        );
        let cache_refreshes = counter_vec(
            &registry,
            "acr_broker_cache_refreshes_total",
            "Background refreshes ahead of expiry, by outcome.",
            &["cache", "outcome"],
        );
        let cache_stale_served = counter_vec(
            &registry,
            "acr_broker_cache_stale_served_total",
            "Answers served from an entry past its refresh point (still valid).",
            &["cache"],
        );
        let cache_entries =
            IntGaugeVec::new(Opts::new("acr_broker_cache_entries", "Entries held, per cache."), &["cache"])
                .unwrap_or_else(|e| unreachable_metric("acr_broker_cache_entries", e));
        let _ = registry.register(Box::new(cache_entries.clone()));
        let cache_soonest_expiry = prometheus::GaugeVec::new(
            Opts::new("acr_broker_cache_soonest_expiry_seconds", "Seconds until the soonest entry expiry, per cache."),
            &["cache"],
        )
        .unwrap_or_else(|e| unreachable_metric("acr_broker_cache_soonest_expiry_seconds", e));
        let _ = registry.register(Box::new(cache_soonest_expiry.clone()));
        let upstream_calls = counter_vec(
            &registry,
            "acr_broker_upstream_calls_total",
            "Calls to cloud APIs, by action and outcome.",
            &["action", "outcome"],
        );
        let upstream_duration = histogram_vec(
            &registry,
            "acr_broker_upstream_call_duration_seconds",
            "Latency of cloud API calls, by action.",
            &["action"],
        );
        let upstream_in_flight = IntGauge::new("acr_broker_upstream_in_flight", "Cloud API calls in flight.")
            .unwrap_or_else(|e| unreachable_metric("acr_broker_upstream_in_flight", e));
        let _ = registry.register(Box::new(upstream_in_flight.clone()));
        let audit_denied = prometheus::IntCounter::new(
            "acr_broker_peer_denied_total",
            "Socket connections refused because the peer uid/gid is not allowed.",
        )
        .unwrap_or_else(|e| unreachable_metric("acr_broker_peer_denied_total", e));
        let _ = registry.register(Box::new(audit_denied.clone()));
        let config_reloads = counter_vec(
            &registry,
            "acr_broker_config_reloads_total",
            "Config reloads (SIGHUP, systemctl reload), by outcome: ok, invalid (file refused, old config kept), error.",
            &["outcome"],
        );
        for o in RELOAD_OUTCOMES {
            config_reloads.with_label_values(&[o]);
        }
        let config_last_reload_success = prometheus::Gauge::new(
            "acr_broker_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (start or reload).",
        )
        .unwrap_or_else(|e| unreachable_metric("acr_broker_config_last_reload_success_timestamp_seconds", e));
        let _ = registry.register(Box::new(config_last_reload_success.clone()));
        let audit_queue_depth = IntGauge::new(
            "acr_broker_audit_queue_depth",
            "Audit lines waiting for the writer (credentials served but not yet logged).",
        )
        .unwrap_or_else(|e| unreachable_metric("acr_broker_audit_queue_depth", e));
        let _ = registry.register(Box::new(audit_queue_depth.clone()));
        let audit_waits = prometheus::IntCounter::new(
            "acr_broker_audit_waits_total",
            "Requests that waited for room in the audit queue (the writer fell behind; no line is dropped).",
        )
        .unwrap_or_else(|e| unreachable_metric("acr_broker_audit_waits_total", e));
        let _ = registry.register(Box::new(audit_waits.clone()));
        let build_info = IntGaugeVec::new(
            Opts::new("acr_broker_build_info", "Build information; the value is always 1."),
            &["version"],
        )
        .unwrap_or_else(|e| unreachable_metric("acr_broker_build_info", e));
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let _ = registry.register(Box::new(build_info));
        let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));

        for s in SURFACES {
            request_duration.with_label_values(&[s]);
            for o in OUTCOMES {
                requests.with_label_values(&[s, o]);
            }
        }
        for c in CACHES {
            for m in [&cache_hits, &cache_misses, &cache_coalesced, &cache_stale_served] {
                m.with_label_values(&[c]);
            }
            cache_refreshes.with_label_values(&[c, "ok"]);
            cache_refreshes.with_label_values(&[c, "error"]);
            cache_entries.with_label_values(&[c]);
        }
        for a in ACTIONS {
            upstream_duration.with_label_values(&[a]);
            for o in UPSTREAM_OUTCOMES {
                upstream_calls.with_label_values(&[a, o]);
            }
        }
        let requests_by = SURFACES
            .iter()
            .flat_map(|s| OUTCOMES.iter().map(move |o| (*s, *o)))
            .map(|(s, o)| requests.with_label_values(&[s, o]))
            .collect();
        let duration_by = SURFACES.iter().map(|s| request_duration.with_label_values(&[s])).collect();
        Metrics {
            registry,
            requests_by,
            duration_by,
            cache_hits,
            cache_misses,
            cache_coalesced,
            cache_refreshes,
            cache_stale_served,
            cache_entries,
            cache_soonest_expiry,
            upstream_calls,
            upstream_duration,
            upstream_in_flight,
            audit_denied,
            config_reloads,
            config_last_reload_success,
            audit_queue_depth,
            audit_waits,
        }
    }

    /// Sets how many audit lines wait for the writer.
    pub fn set_audit_queue_depth(&self, depth: usize) {
        self.audit_queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Counts a request that waited for room in the audit queue.
    pub fn audit_waited(&self) {
        self.audit_waits.inc();
    }

    /// Counts one config reload (`outcome` one of [`RELOAD_OUTCOMES`]); a successful one also
    /// sets the last-success time to `at`.
    pub fn observe_reload(&self, outcome: &str, at: std::time::SystemTime) {
        let outcome = if RELOAD_OUTCOMES.contains(&outcome) { outcome } else { "error" };
        self.config_reloads.with_label_values(&[outcome]).inc();
        if outcome == "ok" {
            self.mark_config_loaded(at);
        }
    }

    /// Records when the config in force was loaded (at start, and after each good reload).
    pub fn mark_config_loaded(&self, at: std::time::SystemTime) {
        let secs = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.config_last_reload_success.set(secs);
    }

    /// The Prometheus registry, for modules that own their metrics (the registry mirror).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered request.
    pub fn observe_request(&self, surface: &str, outcome: &str, took: Duration) {
        // Series resolved at start: no label hashing or map lock on the request path.
        let s = SURFACES.iter().position(|x| *x == surface).unwrap_or(0);
        let o = OUTCOMES.iter().position(|x| *x == outcome).unwrap_or(OUTCOMES.len() - 1);
        if let Some(c) = self.requests_by.get(s * OUTCOMES.len() + o) {
            c.inc();
        }
        if let Some(h) = self.duration_by.get(s) {
            h.observe(took.as_secs_f64());
        }
    }

    /// Counts one upstream call and its latency.
    pub fn observe_upstream<T>(&self, action: &str, result: &Result<T, crate::aliyun::Error>, took: Duration) {
        use crate::aliyun::ErrorKind;
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => match e.kind() {
                ErrorKind::Throttled => "throttled",
                ErrorKind::Denied => "denied",
                _ => "error",
            },
        };
        self.upstream_calls.with_label_values(&[action, outcome]).inc();
        self.upstream_duration.with_label_values(&[action]).observe(took.as_secs_f64());
    }

    /// Marks one upstream call in flight until the guard drops.
    pub fn upstream_in_flight_guard(&self) -> InFlightGuard<'_> {
        self.upstream_in_flight.inc();
        InFlightGuard(&self.upstream_in_flight)
    }

    /// The counters of `cache` (one of [`CACHES`]).
    pub fn cache_counters(&self, cache: &str) -> CacheCounters {
        CacheCounters {
            hit: self.cache_hits.with_label_values(&[cache]),
            miss: self.cache_misses.with_label_values(&[cache]),
            coalesced: self.cache_coalesced.with_label_values(&[cache]),
            stale: self.cache_stale_served.with_label_values(&[cache]),
            refresh_ok: self.cache_refreshes.with_label_values(&[cache, "ok"]),
            refresh_failed: self.cache_refreshes.with_label_values(&[cache, "error"]),
        }
    }

    /// Sets the size gauges of `cache`, measured at scrape time.
    pub fn set_cache_stats(&self, cache: &str, entries: u64, soonest_expiry: Option<Duration>) {
        self.cache_entries.with_label_values(&[cache]).set(i64::try_from(entries).unwrap_or(i64::MAX));
        if let Some(d) = soonest_expiry {
            self.cache_soonest_expiry.with_label_values(&[cache]).set(d.as_secs_f64());
        }
    }

    /// Counts a connection refused by the peer check.
    pub fn peer_denied(&self) {
        self.audit_denied.inc();
    }

    /// Renders the registry in the Prometheus text format 0.0.4.
    pub fn render(&self) -> (String, Vec<u8>) {
        let encoder = TextEncoder::new();
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        (encoder.format_type().to_owned(), buf)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// One cache's counters, resolved once so a hit does not hash label values.
#[derive(Debug, Clone)]
pub struct CacheCounters {
    hit: prometheus::IntCounter,
    miss: prometheus::IntCounter,
    coalesced: prometheus::IntCounter,
    stale: prometheus::IntCounter,
    refresh_ok: prometheus::IntCounter,
    refresh_failed: prometheus::IntCounter,
}

impl CacheCounters {
    /// Counts one event.
    pub fn record(&self, event: CacheEvent) {
        match event {
            CacheEvent::Hit => self.hit.inc(),
            CacheEvent::Miss => self.miss.inc(),
            CacheEvent::Coalesced => self.coalesced.inc(),
            CacheEvent::StaleServed => self.stale.inc(),
            CacheEvent::RefreshOk => self.refresh_ok.inc(),
            CacheEvent::RefreshFailed => self.refresh_failed.inc(),
        }
    }
}

/// Something that happened in a cache, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// Served from a fresh entry.
    Hit,
    /// Had to load.
    Miss,
    /// Waited on another caller's load.
    Coalesced,
    /// Served from an entry past its refresh point.
    StaleServed,
    /// A background refresh succeeded.
    RefreshOk,
    /// A background refresh failed; the old entry stays while valid.
    RefreshFailed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_series_with_zeros() {
        let m = Metrics::new();
        m.observe_request("helper", "ok", Duration::from_millis(1));
        let (ct, body) = m.render();
        let text = String::from_utf8(body).expect("utf8");
        assert!(ct.starts_with("text/plain; version=0.0.4"));
        assert!(text.contains("acr_broker_requests_total{outcome=\"ok\",surface=\"helper\"} 1"));
        assert!(text.contains("acr_broker_cache_hits_total{cache=\"credential\"} 0"));
        assert!(text.contains("acr_broker_build_info{version="));
    }
}
