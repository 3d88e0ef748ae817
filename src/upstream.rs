//! The node's budget for upstream calls: a token bucket on STS, a bound on calls in flight, and
//! retries with exponential backoff and full jitter that honour `x-acs-retry-after`.
//!
//! The account-wide AssumeRole quota (100/s) is shared by every node, so one node must never
//! burst through it; and a throttled upstream must see fewer calls, not a retry storm.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::aliyun::Error as ApiError;
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;

/// Which upstream API a call goes to; STS and ACR calls each pass through their own token
/// bucket, because each draws on an account-wide quota that every node shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// STS AssumeRole / AssumeRoleWithOIDC.
    Sts,
    /// The ACR API: ListInstance, ListInstanceEndpoint, GetAuthorizationToken.
    Acr,
    /// The metadata service and registry token realms (node-local or per-registry, no quota).
    Other,
}

/// A token bucket refilled continuously; `acquire` waits for a token.
#[derive(Debug)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate_per_sec`.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate_per_sec: rate_per_sec.max(0.001), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut st = self.state.lock().await;
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
                st.0 = (st.0 + elapsed * self.rate_per_sec).min(self.burst);
                st.1 = now;
                if st.0 >= 1.0 {
                    st.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - st.0) / self.rate_per_sec)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Delay before retry `attempt` (1-based): full jitter over `base * 2^(attempt-1)`, capped,
/// and never shorter than what the server asked for.
pub fn backoff_delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    server_asked: Option<Duration>,
    unit_random: f64,
) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX));
    let ceiling = exp.min(max);
    let jittered = ceiling.mul_f64(unit_random.clamp(0.0, 1.0));
    match server_asked {
        Some(asked) => jittered.max(asked.min(Duration::from_secs(60))),
        None => jittered,
    }
}

/// Runs upstream calls within the node's budget.
#[derive(Debug)]
pub struct Upstream {
    sts_bucket: TokenBucket,
    acr_bucket: TokenBucket,
    in_flight: Semaphore,
    config: UpstreamConfig,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// A budget from the `[upstream]` settings.
    pub fn new(config: UpstreamConfig, metrics: Arc<Metrics>) -> Self {
        Upstream {
            sts_bucket: TokenBucket::new(config.sts_rate_per_second, config.sts_burst),
            acr_bucket: TokenBucket::new(config.acr_rate_per_second, config.acr_burst),
            in_flight: Semaphore::new(config.max_concurrent),
            config,
            metrics,
        }
    }

    /// Calls `op` (named `action` in metrics), retrying retryable failures with backoff.
    pub async fn call<T, F, Fut>(&self, api: Api, action: &'static str, mut op: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 1;
        loop {
            match api {
                Api::Sts => self.sts_bucket.acquire().await,
                Api::Acr => self.acr_bucket.acquire().await,
                Api::Other => {}
            }
            let result = {
                let _permit = self.in_flight.acquire().await;
                let _gauge = self.metrics.upstream_in_flight_guard();
                let started = Instant::now();
                let r = op().await;
                self.metrics.observe_upstream(action, &r, started.elapsed());
                r
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.config.max_attempts => {
                    let delay = backoff_delay(
                        attempt,
                        self.config.backoff_base,
                        self.config.backoff_max,
                        e.retry_after(),
                        rand::random::<f64>(),
                    );
                    tracing::debug!(
                        action,
                        attempt,
                        code = e.code(),
                        delay_ms = delay.as_millis() as u64,
                        "retrying upstream call"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        assert_eq!(backoff_delay(1, b, m, None, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(3, b, m, None, 1.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(10, b, m, None, 1.0), m);
        assert_eq!(backoff_delay(3, b, m, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn backoff_never_undercuts_the_server() {
        let asked = Some(Duration::from_millis(1500));
        let d = backoff_delay(1, Duration::from_millis(100), Duration::from_secs(1), asked, 0.5);
        assert_eq!(d, Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_limits_the_rate_after_the_burst() {
        let bucket = TokenBucket::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..25 {
            bucket.acquire().await;
        }
        // 5 from the burst, 20 more at 10/s = about 2 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900) && took <= Duration::from_millis(2200), "{took:?}");
    }
}
