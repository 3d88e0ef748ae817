//! The mirror's metrics, registered in the daemon's Prometheus registry.

use prometheus::{IntCounter, IntCounterVec};

use crate::metrics::{counter_vec, Metrics};

/// Counters of the registry mirror.
#[derive(Debug, Clone)]
pub struct MirrorMetrics {
    requests: IntCounterVec,
    bytes: IntCounterVec,
    token_fetches: IntCounterVec,
}

impl MirrorMetrics {
    /// Registers the mirror's counters next to the daemon's.
    pub fn new(metrics: &Metrics) -> MirrorMetrics {
        let r = metrics.registry();
        let bytes = counter_vec(
            r,
            "acr_broker_mirror_bytes_total",
            "Response body bytes streamed from registries to mirror clients.",
            &["kind"],
        );
        // Shown at zero before the first pull, so a dashboard can tell "no traffic" from "no mirror".
        for k in ["manifest", "blob", "other"] {
            bytes.with_label_values(&[k]);
        }
        MirrorMetrics {
            requests: counter_vec(
                r,
                "acr_broker_mirror_requests_total",
                "Registry mirror requests by route kind (manifest, blob, other) and outcome.",
                &["kind", "outcome"],
            ),
            bytes,
            token_fetches: counter_vec(
                r,
                "acr_broker_mirror_token_fetches_total",
                "Registry authorizations the mirror obtained (bearer from the realm, or basic), by scheme and outcome.",
                &["scheme", "outcome"],
            ),
        }
    }

    /// Counts one answered mirror request. `kind` is `manifest`, `blob`, `other` or `refused`.
    pub fn request(&self, kind: &str, outcome: &str) {
        self.requests.with_label_values(&[kind, outcome]).inc();
    }

    /// The byte counter for one route kind (resolved once per response, bumped per chunk).
    pub fn bytes(&self, kind: &str) -> IntCounter {
        self.bytes.with_label_values(&[kind])
    }

    /// Counts one authorization fetched for an upstream registry.
    pub fn token_fetch(&self, scheme: &str, outcome: &str) {
        self.token_fetches.with_label_values(&[scheme, outcome]).inc();
    }
}
