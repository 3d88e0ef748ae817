//! The DaemonSet's metrics listener is reachable by the cluster's Prometheus (PodMonitor and
//! `prometheus.io/*` annotations agree with the ConfigMap), and its memory limit fits the
//! default cache with headroom.

use super::{doc_of_kind, named, yaml_docs};
use serde_yaml::Value;

/// RSS of an idle daemon, rounded up (BENCHMARKS.md §5: 9.3 MiB).
const IDLE_BYTES: u64 = 10 << 20;
/// RSS per cached credential (BENCHMARKS.md §5: 1,151 bytes per entry at 100,000 entries).
const BYTES_PER_ENTRY: u64 = 1_151;
/// Budget for everything else that grows with load: connections, in-flight upstream calls and
/// the registry mirror's buffers.
const WORKING_SET_BYTES: u64 = 32 << 20;
/// The limit must be at least this multiple of the estimate.
const HEADROOM: f64 = 1.5;

struct Deployed {
    config: acr_broker::config::Config,
    pod: Value,
}

fn deployed() -> Deployed {
    let docs = yaml_docs("docker/daemonset.yaml");
    let toml = doc_of_kind(&docs, "ConfigMap")["data"]["config.toml"].as_str().expect("config.toml").to_owned();
    let config =
        acr_broker::config::Config::from_toml(&toml, "daemonset.yaml ConfigMap").unwrap_or_else(|e| panic!("{e}"));
    Deployed { config, pod: doc_of_kind(&docs, "DaemonSet")["spec"]["template"].clone() }
}

/// Kubernetes quantity (`128Mi`, `1Gi`, `64M`, plain bytes) in bytes.
fn quantity_bytes(q: &str) -> u64 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q:?}"));
    let scale = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => panic!("unit {unit:?} in {q:?}"),
    };
    n * scale
}

#[test]
fn quantities_parse() {
    assert_eq!(quantity_bytes("128Mi"), 134_217_728);
    assert_eq!(quantity_bytes("64M"), 64_000_000);
    assert_eq!(quantity_bytes("1Gi"), 1 << 30);
}

#[test]
fn metrics_listen_on_the_node_and_prometheus_finds_them() {
    let d = deployed();
    let addr = d.config.server.metrics.expect("metrics listener");
    assert!(addr.ip().is_unspecified(), "metrics {addr}: bind every node address so Prometheus can scrape it");
    let default_port = acr_broker::config::DEFAULT_METRICS.parse::<std::net::SocketAddr>().unwrap().port();
    assert_eq!(addr.port(), default_port, "the documented port");

    // No declared port: with hostNetwork it would be a host port and block surge rollouts.
    let broker = named(&d.pod["spec"]["containers"], "acr-broker", "container");
    assert!(broker["ports"].is_null(), "the broker container must declare no port: {:?}", broker["ports"]);

    let ann = &d.pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(ann["prometheus.io/port"].as_str(), Some(addr.port().to_string().as_str()));
    assert_eq!(ann["prometheus.io/path"].as_str(), Some("/metrics"));

    let monitor = &yaml_docs("docker/podmonitor.yaml")[0];
    assert_eq!(monitor["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(monitor["kind"].as_str(), Some("PodMonitor"));
    let labels = &d.pod["metadata"]["labels"];
    let selector = monitor["spec"]["selector"]["matchLabels"].as_mapping().expect("matchLabels");
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "PodMonitor selector {k:?} must match the pod's labels");
    }
    let ds_ns = doc_of_kind(&yaml_docs("docker/daemonset.yaml"), "DaemonSet")["metadata"]["namespace"].clone();
    let namespaces = monitor["spec"]["namespaceSelector"]["matchNames"].as_sequence().expect("namespaceSelector");
    assert!(namespaces.contains(&ds_ns), "PodMonitor must look in {ds_ns:?}");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert!(endpoint["port"].is_null(), "no named port to refer to");
    let relabel = &endpoint["relabelings"][0];
    assert_eq!(relabel["sourceLabels"][0].as_str(), Some("__meta_kubernetes_pod_ip"));
    assert_eq!(relabel["targetLabel"].as_str(), Some("__address__"));
    assert_eq!(relabel["replacement"].as_str(), Some(format!("$1:{}", addr.port()).as_str()));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    // Series get job="acr-broker", as the README's queries and alerts expect.
    let job_label = monitor["spec"]["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(labels[job_label].as_str(), Some("acr-broker"));
}

#[test]
fn memory_limit_fits_the_default_cache_with_headroom() {
    let d = deployed();
    let capacity = d.config.cache.capacity;
    assert_eq!(capacity, acr_broker::config::DEFAULT_CACHE_CAPACITY, "the DaemonSet runs the default capacity");
    let broker = named(&d.pod["spec"]["containers"], "acr-broker", "container");
    let limit = quantity_bytes(broker["resources"]["limits"]["memory"].as_str().expect("memory limit"));
    let request = quantity_bytes(broker["resources"]["requests"]["memory"].as_str().expect("memory request"));
    let estimate = IDLE_BYTES + capacity * BYTES_PER_ENTRY + WORKING_SET_BYTES;
    eprintln!("full cache estimate {} MiB, limit {} MiB", estimate >> 20, limit >> 20);
    assert!(
        (estimate as f64) * HEADROOM <= limit as f64,
        "a full cache ({capacity} entries) needs about {} MiB; the limit {} MiB leaves less than {HEADROOM}x",
        estimate >> 20,
        limit >> 20
    );
    assert!(request >= IDLE_BYTES * 2, "request {request} below twice the idle RSS");
}
