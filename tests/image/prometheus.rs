//! Debian's real Prometheus server (2.42, extracted from the `prometheus` package by
//! scripts/install-test-deps.sh) scraping a target, and its HTTP query API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http;
use super::listeners::pid_listens_on;

/// The server binary.
pub const PROMETHEUS_BIN: &str = "prometheus";

/// A running Prometheus on `127.0.0.1:port`; killed on drop.
pub struct Prometheus {
    /// `127.0.0.1:PORT` of its web API.
    pub addr: String,
    log: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus in `dir` scraping `target` (`host:port`) every second as job `job`, on a
    /// loopback port it picks; retries on another port when a stranger took it first.
    pub async fn start(dir: &Path, job: &str, target: &str) -> Prometheus {
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {job}\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(&config, yaml).expect("write prometheus.yml");
        for attempt in 0..3 {
            let port = super::free_port();
            let addr = format!("127.0.0.1:{port}");
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let child = Command::new(PROMETHEUS_BIN)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join(format!("data-{attempt}")).display()))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("prometheus log"))
                .spawn()
                .expect("spawn prometheus");
            let mut p = Prometheus { addr, log, child };
            if p.wait_ready(port, Duration::from_secs(20)).await {
                return p;
            }
            eprintln!("prometheus could not take {port} (attempt {attempt}); log:\n{}", p.log());
        }
        panic!("prometheus never started on a free port");
    }

    /// True once its own pid listens on `port` and `/-/ready` answers 200; false when it exited
    /// (e.g. the port was taken).
    async fn wait_ready(&mut self, port: u16, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if pid_listens_on(self.child.id(), port) {
                if let Ok(a) = http::get(&self.addr, "/-/ready", &[]).await {
                    if a.status == 200 {
                        return true;
                    }
                }
            }
            assert!(started.elapsed() < limit, "prometheus not ready after {limit:?}; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The result vector of an instant query (`data.result`).
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let q: String = form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
        let a = http::get(&self.addr, &format!("/api/v1/query?{q}"), &[]).await.expect("query prometheus");
        assert_eq!(a.status, 200, "query {promql}: {}", String::from_utf8_lossy(&a.body));
        let v: Value = serde_json::from_slice(&a.body).expect("query JSON");
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `promql` until `accept` likes the result (or panics after `limit`).
    pub async fn query_until(&self, promql: &str, limit: Duration, accept: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let r = self.query(promql).await;
            if accept(&r) {
                return r;
            }
            let targets = http::get(&self.addr, "/api/v1/targets", &[]).await.map(|a| a.body).unwrap_or_default();
            assert!(
                started.elapsed() < limit,
                "{promql} never matched within {limit:?}: {r:?}\ntargets: {}\nlog:\n{}",
                String::from_utf8_lossy(&targets),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
