//! From a request to a credential: resolve the host, apply the policy, then walk the plan through
//! the caches. This module and [`chain`] are the only code that walks a role chain.

mod answers;
mod chain;
mod error;
pub mod explain;
mod reload;
mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::Digest;

pub use error::BrokerError;
pub use reload::{changes_what_was_loaded, keep_restart_only, restart_only_changes, ReloadSummary};
pub use token::{RegistryBearer, TokenRequest};

use crate::aliyun::identity::IdentitySource;
use crate::aliyun::{Client, Credentials};
use crate::cache::{Expiring, ExpiringCache, Outcome};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::ids::{InstanceId, Region, RoleArn};
use crate::metrics::Metrics;
use crate::policy::{Annotations, Plan};
use crate::registry::RegistryHost;
use crate::secret::Secret;
use crate::upstream::Upstream;

/// A request for registry credentials, from any surface.
#[derive(Debug, Clone, Default)]
pub struct CredentialRequest {
    /// `host[:port]` as the runtime gave it.
    pub registry: String,
    /// The pod's (or caller's) annotations; only the three `k8s.aliyun.com/acr-*` keys matter.
    pub annotations: BTreeMap<String, String>,
    /// A kubelet-supplied service-account token (KEP-4412).
    pub service_account_token: Option<Secret>,
}

/// Which edition a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edition {
    /// Enterprise Edition instance.
    Enterprise,
    /// Personal Edition (per account and region).
    Personal,
}

impl Edition {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Edition::Enterprise => "enterprise",
            Edition::Personal => "personal",
        }
    }
}

/// A registry credential as issued by ACR.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Registry user name (`cr_temp_user`).
    pub username: String,
    /// Registry password.
    pub password: Secret,
    /// The earlier of ACR's and the STS session's expiry.
    pub expires_at: SystemTime,
    /// Region of the instance.
    pub region: Region,
    /// Enterprise instance, if any.
    pub instance_id: Option<InstanceId>,
    /// Edition.
    pub edition: Edition,
    /// The API's JSON answer for this credential and the registry it names, rendered by the
    /// first request that serves it and shared by the ones after (a [`Secret`]: it holds the
    /// password).
    pub rendered: std::sync::OnceLock<(Box<str>, Secret)>,
}

impl Expiring for Issued {
    fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

/// An answer: the credential plus how it was obtained, for the audit line.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The credential (shared with the cache, not copied).
    pub credential: Arc<Issued>,
    /// The registry host it answers for.
    pub registry: String,
    /// The role chain that worked, as ARNs (empty = node identity).
    pub chain: Arc<[RoleArn]>,
    /// How the cache served it.
    pub outcome: Outcome,
    /// True when the chain started from a kubelet-supplied service-account token.
    pub via_service_account: bool,
    /// Set on a fresh cache hit: until then the same request may be answered the same way.
    pub fresh_until: Option<SystemTime>,
}

#[cfg(test)]
impl Answer {
    /// An Enterprise answer for the demo registry through `chain` (role ARNs), for unit tests.
    pub(crate) fn sample(chain: &[&str]) -> Answer {
        let credential = Issued {
            username: String::from("cr_temp_user"),
            password: Secret::new(String::from("not-in-the-line")),
            expires_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000),
            region: Region::try_from("cn-hangzhou").expect("region"),
            instance_id: Some(InstanceId::try_from("cri-abcdefghijklmnop").expect("instance")),
            edition: Edition::Enterprise,
            rendered: std::sync::OnceLock::new(),
        };
        let chain: Vec<RoleArn> = chain.iter().map(|a| RoleArn::try_from(*a).expect("arn")).collect();
        Answer {
            credential: Arc::new(credential),
            registry: String::from("demo-registry.cn-hangzhou.cr.aliyuncs.com"),
            chain: chain.into(),
            outcome: Outcome::Stale,
            via_service_account: false,
            fresh_until: None,
        }
    }
}

/// Whose identity starts a chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Base {
    /// The node's identity.
    Node,
    /// A service-account token exchanged for a role (behind an `Arc` so every key stays small).
    ServiceAccount(Arc<ServiceAccountBase>),
}

/// A service-account token and the role it is exchanged for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccountBase {
    /// SHA-256 of the token (the key never holds the token itself).
    pub token_hash: [u8; 32],
    /// The role the token is exchanged for.
    pub role: RoleArn,
}

/// A chain of roles from a base identity: the key of STS sessions and of everything loaded with them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainKey {
    /// Who starts.
    pub base: Base,
    /// Roles assumed in order after the base.
    pub hops: Arc<[RoleArn]>,
}

/// What a registry credential is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetKey {
    /// An Enterprise instance.
    Instance(InstanceId),
    /// The Personal registry of whoever ends the chain.
    Personal,
}

/// Key of the registry credential cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredKey {
    /// Region of the registry.
    pub region: Region,
    /// Instance or Personal.
    pub target: TargetKey,
    /// The chain used.
    pub chain: ChainKey,
}

/// A looked-up value (instance id, domain owner) kept for a fixed time.
#[derive(Debug, Clone)]
pub struct Lookup<T> {
    /// The value.
    pub value: T,
    /// When to look again.
    pub until: SystemTime,
}

impl<T> Expiring for Lookup<T> {
    fn expires_at(&self) -> SystemTime {
        self.until
    }
}

impl Expiring for Credentials {
    fn expires_at(&self) -> SystemTime {
        // Sessions always carry their end; a key without one is wrapped in `NodeIdentity`.
        self.expires_at.unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The node identity as cached: credentials whose source states no end (access keys from a
/// file, the environment or the config) are read again at `read_again_at`, so a rotated key
/// takes effect without a restart.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The credentials (shared with every chain that starts from them).
    pub credentials: Arc<Credentials>,
    /// When to read the source again if upstream gave no expiry.
    pub read_again_at: SystemTime,
}

impl Expiring for NodeIdentity {
    fn expires_at(&self) -> SystemTime {
        self.credentials.expires_at.unwrap_or(self.read_again_at)
    }
}

/// After a registry refuses a credential, it is dropped and fetched anew at most once per window.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Most role chains (service roles x user roles) one request may ask to be tried.
pub const MAX_CHAINS: usize = 16;

/// How long instance-name lookups are trusted (an instance id never changes for a name).
pub const LOOKUP_TTL: Duration = Duration::from_secs(3600);

/// What a config reload swaps while the caches stay warm: the config and what is built from it.
pub struct Live {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The cloud API client (endpoints, timeouts).
    pub client: Client,
    /// The node identity source.
    pub identity: Arc<dyn IdentitySource>,
    /// The upstream budget (token buckets, concurrency, retries).
    pub upstream: Arc<Upstream>,
}

/// The broker: caches plus the clients that fill them.
pub struct Broker {
    live: std::sync::RwLock<Arc<Live>>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    node_identity: ExpiringCache<(), NodeIdentity>,
    sessions: ExpiringCache<ChainKey, Credentials>,
    instances: ExpiringCache<(Region, String, ChainKey), Lookup<InstanceId>>,
    domains: ExpiringCache<(String, Region, InstanceId, ChainKey), Lookup<bool>>,
    credentials: ExpiringCache<CredKey, Issued>,
    /// Regions whose ACR endpoint does not exist, remembered for the negative TTL so made-up
    /// hosts cost no DNS lookups or retries.
    dead_regions: moka::sync::Cache<Region, Arc<BrokerError>>,
    /// Credentials a registry refused recently: each is dropped and re-fetched once per window.
    refused: moka::sync::Cache<CredKey, ()>,
    /// Answers repeated to identical requests while their credential is fresh.
    answers: answers::AnswerCache,
    working_chain: moka::sync::Cache<u64, usize>,
    /// One shared copy of each distinct role chain, so cache keys do not each hold their own.
    interned_chains: moka::sync::Cache<Arc<[RoleArn]>, Arc<[RoleArn]>>,
    session_name: String,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("identity", &self.live().identity.name()).finish_non_exhaustive()
    }
}

impl Broker {
    /// Builds a broker over `client` with the node identity from `identity`.
    pub fn new(
        config: Arc<Config>,
        client: Client,
        identity: Arc<dyn IdentitySource>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Arc<Broker> {
        let c = &config.cache;
        let small = (c.capacity / 10).max(1000);
        let upstream = Arc::new(Upstream::new(config.upstream.clone(), Arc::clone(&metrics)));
        Arc::new(Broker {
            node_identity: ExpiringCache::new("identity", 1, c.clone(), Arc::clone(&clock), Arc::clone(&metrics)),
            sessions: ExpiringCache::new("session", small, c.clone(), Arc::clone(&clock), Arc::clone(&metrics)),
            instances: ExpiringCache::new("instance", small, c.clone(), Arc::clone(&clock), Arc::clone(&metrics)),
            domains: ExpiringCache::new("domain", small, c.clone(), Arc::clone(&clock), Arc::clone(&metrics)),
            credentials: ExpiringCache::new(
                "credential",
                c.capacity,
                c.clone(),
                Arc::clone(&clock),
                Arc::clone(&metrics),
            ),
            dead_regions: moka::sync::Cache::builder().max_capacity(small).time_to_live(c.negative_ttl).build(),
            refused: moka::sync::Cache::builder().max_capacity(small).time_to_live(REFUSAL_WINDOW).build(),
            answers: answers::AnswerCache::default(),
            working_chain: moka::sync::Cache::builder().max_capacity(small).time_to_idle(c.idle).build(),
            interned_chains: moka::sync::Cache::builder().max_capacity(small).time_to_idle(c.idle).build(),
            session_name: session_name_for_host(),
            live: std::sync::RwLock::new(Arc::new(Live { config, client, identity, upstream })),
            clock,
            metrics,
        })
    }

    /// The config and clients in force now (a reload swaps them; a load in flight keeps the
    /// ones it started with).
    pub fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(live) => Arc::clone(&live),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The clock expiry is judged by.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The metrics registry this broker reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.live().config)
    }

    /// Credentials for one request: the policy decides, the caches answer.
    pub async fn credentials(self: &Arc<Self>, req: &CredentialRequest) -> Result<Answer, Arc<BrokerError>> {
        let repeat = answers::AnswerCache::key(req);
        let now = self.now();
        if let Some(answer) = repeat.as_deref().and_then(|k| self.answers.get(k, now)) {
            self.credentials.record_hit();
            return Ok(answer);
        }
        let walked = self.answers.generation();
        // Boxed: the walk's state is ~5 KB, and every request in flight would carry it (and copy
        // it when its task is spawned and finishes) though the repeat table answers most.
        let (answer, _) = Box::pin(self.credentials_keyed(req)).await?;
        if let (Some(key), Some(until)) = (repeat, answer.fresh_until) {
            self.answers.put(key, &answer, walked, until, now);
        }
        Ok(answer)
    }

    /// Forgets the answers repeated to identical requests (something they were built on changed).
    fn forget_answers(&self) {
        self.answers.forget_all();
    }

    /// [`credentials`](Self::credentials), with the cache key that holds the answer.
    pub(crate) async fn credentials_keyed(
        self: &Arc<Self>,
        req: &CredentialRequest,
    ) -> Result<(Answer, CredKey), Arc<BrokerError>> {
        let host = RegistryHost::parse(&req.registry).map_err(|e| {
            Arc::new(BrokerError::bad_request("invalid_registry", format!("registry {:?}: {e}", req.registry)))
        })?;
        let annotations = Annotations::from_map(req.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| Arc::new(policy_error(e)))?;
        let config = self.config();
        let plan = crate::policy::plan(&host, annotations.as_ref(), &config.defaults, &config.aliyun.region)
            .map_err(|e| Arc::new(policy_error(e)))?;
        // A service-account token is exchanged only for a role the ServiceAccount itself names.
        // Kubelets send a token for every pod once tokenAttributes are configured; a pod whose
        // ServiceAccount asks for no role is served like any other pod (node identity, defaults).
        let wants_own_role = annotations.as_ref().is_some_and(|a| !a.service_arns.is_empty());
        let sa_token = req.service_account_token.as_ref().filter(|_| wants_own_role);
        let chains = self.chains_for(&plan, sa_token)?;
        self.serve_plan(&plan, &chains, sa_token).await
    }

    /// Turns the plan's role chains into cache keys, starting from the node or a service account.
    fn chains_for(&self, plan: &Plan, sa_token: Option<&Secret>) -> Result<Vec<ChainKey>, Arc<BrokerError>> {
        if plan.chains.len() > MAX_CHAINS {
            // Every chain tried costs STS calls; one pod must not spend the node's budget.
            return Err(Arc::new(BrokerError::bad_request(
                "too_many_role_chains",
                format!(
                    "acr-service-arns x acr-user-arns make {} role chains; at most {MAX_CHAINS} are tried",
                    plan.chains.len()
                ),
            )));
        }
        let Some(token) = sa_token else {
            return Ok(plan.chains.iter().map(|c| ChainKey { base: Base::Node, hops: self.intern(&c.0) }).collect());
        };
        if self.live().config.oidc_provider_arn.is_none() {
            return Err(Arc::new(BrokerError::bad_request(
                "service_account_tokens_disabled",
                "a service-account token was sent but [service_account_tokens] oidc_provider_arn is not configured",
            )));
        }
        let first = plan.chains.first().and_then(|c| c.0.first()).cloned().ok_or_else(|| {
            Arc::new(BrokerError::bad_request(
                "service_account_role_missing",
                "a service-account token needs the ServiceAccount annotation k8s.aliyun.com/acr-service-arns",
            ))
        })?;
        let token_hash: [u8; 32] = sha2::Sha256::digest(token.expose_secret().as_bytes()).into();
        let base = Base::ServiceAccount(Arc::new(ServiceAccountBase { token_hash, role: first.clone() }));
        // The token is exchanged for the first service role only; the user roles follow it.
        Ok(plan
            .chains
            .iter()
            .filter(|c| c.0.first() == Some(&first))
            .map(|c| ChainKey { base: base.clone(), hops: self.intern(&c.0[1..]) })
            .collect())
    }

    /// The shared copy of a role chain (looked up by slice: no allocation when known).
    fn intern(&self, hops: &[RoleArn]) -> Arc<[RoleArn]> {
        if let Some(shared) = self.interned_chains.get(hops) {
            return shared;
        }
        let shared: Arc<[RoleArn]> = Arc::from(hops);
        self.interned_chains.insert(Arc::clone(&shared), Arc::clone(&shared));
        shared
    }

    /// Whether the node identity can be obtained now (readiness).
    pub async fn check_identity(self: &Arc<Self>) -> Result<(), Arc<BrokerError>> {
        self.node_credentials().await.map(|_| ())
    }

    /// Publishes cache sizes and expiries to the metrics (called at scrape time).
    pub fn publish_cache_stats(&self) {
        let stats = [
            self.node_identity.stats(),
            self.sessions.stats(),
            self.instances.stats(),
            self.domains.stats(),
            self.credentials.stats(),
        ];
        for (name, (n, soonest)) in crate::metrics::CACHES.iter().zip(stats) {
            self.metrics.set_cache_stats(name, n, soonest);
        }
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The RoleSessionName sent to STS (fixed per node; annotations cannot change it).
    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    /// Warms the cache for `images` with the node defaults; one result per image, in order.
    pub async fn prefetch(self: &Arc<Self>, images: &[String]) -> Vec<(String, Result<Answer, Arc<BrokerError>>)> {
        let handles: Vec<_> = images
            .iter()
            .map(|image| {
                let (this, image) = (Arc::clone(self), image.clone());
                tokio::spawn(async move {
                    let host = crate::registry::host_from_image(&image).map_err(|e| {
                        Arc::new(BrokerError::bad_request("invalid_image", format!("image {image:?}: {e}")))
                    })?;
                    this.credentials(&CredentialRequest { registry: host.as_str().to_owned(), ..Default::default() })
                        .await
                })
            })
            .collect();
        let mut out = Vec::with_capacity(images.len());
        for (image, handle) in images.iter().zip(handles) {
            let result = handle.await.unwrap_or_else(|e| {
                Err(Arc::new(BrokerError::BadUpstream {
                    action: "Prefetch",
                    message: format!("prefetch task ended: {e}"),
                }))
            });
            out.push((image.clone(), result));
        }
        out
    }
}

fn policy_error(e: crate::policy::PolicyError) -> BrokerError {
    use crate::policy::PolicyError;
    match e {
        PolicyError::NotAcrRegistry { host } => BrokerError::NotOurs { host: host.to_string(), reason: None },
        other => BrokerError::BadRequest { code: other.code(), message: other.to_string() },
    }
}

/// `acr-broker-<hostname>`, cut to STS's 64 characters of `[A-Za-z0-9.@_-]`.
fn session_name_for_host() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') { c } else { '-' })
        .collect();
    let mut name = format!("acr-broker-{clean}");
    name.truncate(64);
    if name.ends_with('-') && clean.is_empty() {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_name_is_valid_for_sts() {
        let n = session_name_for_host();
        assert!((2..=64).contains(&n.len()), "{n}");
        assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')), "{n}");
    }
}
