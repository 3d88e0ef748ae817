//! `explain`: why a registry would (or would not) get a credential, read from the policy and
//! the caches without any upstream call.
//!
//! It walks the same plan as [`Broker::credentials`](super::Broker::credentials) — host
//! grammar, policy row, role chains in the order they would be tried — and for each stage of
//! the walk says whether the cache holds it, for how long, and what a miss would call. It
//! never loads, refreshes or counts a cache hit, and never shows a secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Base, Broker, BrokerError, ChainKey, CredKey, TargetKey};
use crate::cache::Peek;
use crate::ids::{InstanceId, Region};
use crate::policy::{Annotations, InstanceSelector, Plan, Target};
use crate::registry::{RegistryHost, RegistryKind};

/// The whole explanation, as `POST /v1/explain` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    /// The registry host the question is about (`host[:port]`).
    pub registry: String,
    /// What the host name alone says.
    pub host: HostFacts,
    /// Where the annotations came from: `request`, `node defaults` or `none`.
    pub annotations_from: String,
    /// The row of the policy table that applies, and why.
    pub policy: PolicyRow,
    /// `cached` (answered from the cache), `load` (upstream calls needed), `not_ours`,
    /// `bad_request` or `denied` (a remembered refusal).
    pub decision: String,
    /// One line saying what happens next.
    pub summary: String,
    /// The role chains in the order they would be tried.
    pub chains: Vec<ChainWalk>,
}

/// What the host grammar tells.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostFacts {
    /// `enterprise`, `personal` or `custom` (a custom domain, or not ACR at all).
    pub edition: String,
    /// The region in the host name, if any.
    pub region: Option<String>,
    /// The Enterprise instance name in a default domain.
    pub instance_name: Option<String>,
    /// `default`, `vpc`, `internal`, `intl` … or `custom`.
    pub domain_kind: String,
}

/// The policy table row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRow {
    /// Short name of the row.
    pub row: String,
    /// Why this row applies.
    pub why: String,
}

/// One role chain and its stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainWalk {
    /// `identity -> role -> role`.
    pub chain: String,
    /// True for the chain tried first when there are several (the one that worked last time).
    pub tried_first: bool,
    /// The stages in walk order.
    pub stages: Vec<Stage>,
}

/// One stage of a walk: identity, a session, an instance lookup, a domain check, the credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    /// What this stage obtains.
    pub stage: String,
    /// `cached`, `stale` (served while a refresh runs), `missing` or `refused`.
    pub state: String,
    /// Seconds the cached value is still served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usable_for_seconds: Option<u64>,
    /// Seconds until a background refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_in_seconds: Option<u64>,
    /// What is known (an instance id, "owns the domain"), never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The upstream call a miss makes.
    pub on_miss: String,
    /// For a domain-ownership stage with a cached answer: whether the instance owns the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owns_domain: Option<bool>,
}

impl Stage {
    fn from_peek<T>(stage: String, peek: &Peek<T>, on_miss: String, detail: Option<String>) -> Stage {
        let secs = |d: &Duration| Some(d.as_secs());
        match peek {
            Peek::Empty => Stage {
                stage,
                state: String::from("missing"),
                usable_for_seconds: None,
                refresh_in_seconds: None,
                detail: None,
                on_miss,
                owns_domain: None,
            },
            Peek::Ready { usable_for, refresh_in, .. } => Stage {
                stage,
                state: String::from(if refresh_in.is_zero() { "stale" } else { "cached" }),
                usable_for_seconds: secs(usable_for),
                refresh_in_seconds: secs(refresh_in),
                detail,
                on_miss,
                owns_domain: None,
            },
            Peek::Failed { code, remembered_for } => Stage {
                stage,
                state: String::from("refused"),
                usable_for_seconds: secs(remembered_for),
                refresh_in_seconds: None,
                detail: Some(format!("upstream refused: {code}")),
                on_miss,
                owns_domain: None,
            },
        }
    }

    fn is_cached(&self) -> bool {
        matches!(self.state.as_str(), "cached" | "stale")
    }
}

fn host_facts(host: &RegistryHost) -> HostFacts {
    match host.kind() {
        RegistryKind::Enterprise { instance_name, region, vpc } => HostFacts {
            edition: String::from("enterprise"),
            region: Some(region.as_str().to_owned()),
            instance_name: Some(instance_name),
            domain_kind: String::from(if vpc { "vpc" } else { "default" }),
        },
        RegistryKind::Personal { region, variant } => HostFacts {
            edition: String::from("personal"),
            region: Some(region.as_str().to_owned()),
            instance_name: None,
            domain_kind: format!("{variant:?}").to_lowercase(),
        },
        RegistryKind::Custom => HostFacts {
            edition: String::from("custom"),
            region: None,
            instance_name: None,
            domain_kind: String::from("custom"),
        },
    }
}

fn policy_row(plan: &Plan) -> PolicyRow {
    let hops = plan.chains.first().map(|c| c.0.len()).unwrap_or(0);
    match (&plan.target, hops) {
        (Target::Enterprise { instance: InstanceSelector::CustomDomain { candidates }, .. }, _) => PolicyRow {
            row: String::from("custom domain"),
            why: format!(
                "not an ACR default domain; served only if one of the {} instance(s) in acr-instance-ids lists it \
                 (ListInstanceEndpoint)",
                candidates.len()
            ),
        },
        (_, 2) => PolicyRow {
            row: String::from("cross account"),
            why: String::from("acr-service-arns and acr-user-arns: identity -> service role -> user role"),
        },
        (_, 1) => PolicyRow {
            row: String::from("same account, narrowed"),
            why: String::from("acr-service-arns: the service role is assumed first"),
        },
        (Target::Personal { .. }, _) => PolicyRow {
            row: String::from("personal, same account"),
            why: String::from("Personal Edition domain: served with the node identity"),
        },
        _ => PolicyRow {
            row: String::from("enterprise default domain, same account"),
            why: String::from("Enterprise default domain: served with the node identity"),
        },
    }
}

impl Broker {
    /// Explains what [`credentials`](Self::credentials) would do for `registry` with
    /// `annotations`, from the policy and the caches alone.
    pub async fn explain(self: &Arc<Self>, registry: &str, annotations: &BTreeMap<String, String>) -> Explanation {
        let config = self.config();
        let host = match RegistryHost::parse(registry) {
            Ok(h) => h,
            Err(e) => {
                return Explanation {
                    registry: registry.to_owned(),
                    host: HostFacts {
                        edition: String::from("custom"),
                        region: None,
                        instance_name: None,
                        domain_kind: String::new(),
                    },
                    annotations_from: String::from("none"),
                    policy: PolicyRow { row: String::from("invalid host"), why: e.to_string() },
                    decision: String::from("bad_request"),
                    summary: format!("registry {registry:?}: {e}"),
                    chains: Vec::new(),
                }
            }
        };
        let facts = host_facts(&host);
        let parsed = Annotations::from_map(annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let request_annotations = match parsed {
            Ok(a) => a.filter(|a| !a.is_empty()),
            Err(e) => return refusal(&host, facts, "request", &BrokerError::bad_request(e.code(), e.to_string())),
        };
        let annotations_from = match (&request_annotations, config.defaults.is_empty()) {
            (Some(_), _) => "request",
            (None, false) => "node defaults",
            (None, true) => "none",
        };
        let plan =
            match crate::policy::plan(&host, request_annotations.as_ref(), &config.defaults, &config.aliyun.region) {
                Ok(p) => p,
                Err(e) => return refusal(&host, facts, annotations_from, &super::policy_error(e)),
            };
        let chains = match self.chains_for(&plan, None) {
            Ok(c) => c,
            Err(e) => return refusal(&host, facts, annotations_from, &e),
        };
        let first = (chains.len() > 1).then(|| self.remembered_chain(&plan, &chains));
        let mut walks = Vec::with_capacity(chains.len());
        for (i, chain) in chains.iter().enumerate() {
            walks.push(self.walk(&plan, chain, first == Some(i)).await);
        }
        let (decision, summary) = decide(&plan, &walks);
        Explanation {
            registry: host.as_str().to_owned(),
            host: facts,
            annotations_from: annotations_from.to_owned(),
            policy: policy_row(&plan),
            decision: decision.to_owned(),
            summary,
            chains: walks,
        }
    }

    /// The stages of one chain, from the caches.
    async fn walk(&self, plan: &Plan, chain: &ChainKey, tried_first: bool) -> ChainWalk {
        let mut stages = Vec::new();
        if let Base::Node = chain.base {
            let peek = self.node_identity.peek(&()).await;
            let source = self.live().identity.name();
            stages.push(Stage::from_peek(
                String::from("node identity"),
                &peek,
                format!("read the {source} identity source"),
                None,
            ));
        }
        for i in 0..chain.hops.len() {
            let prefix = ChainKey { base: chain.base.clone(), hops: Arc::from(&chain.hops[..=i]) };
            let peek = self.sessions.peek(&prefix).await;
            let fresh = if i + 1 == chain.hops.len() {
                " (the last hop is assumed afresh for each new credential)"
            } else {
                ""
            };
            stages.push(Stage::from_peek(
                format!("session {}", chain.hops[i]),
                &peek,
                format!("STS AssumeRole {}{fresh}", chain.hops[i]),
                None,
            ));
        }
        let target = match &plan.target {
            Target::Personal { region } => Some((region.clone(), TargetKey::Personal)),
            Target::Enterprise { region, instance } => match instance {
                InstanceSelector::ById(id) => Some((region.clone(), TargetKey::Instance(id.clone()))),
                InstanceSelector::ByName(name) => {
                    let peek = self.instances.peek(&(region.clone(), name.clone(), chain.clone())).await;
                    let id = match &peek {
                        Peek::Ready { value, .. } => Some(value.value.clone()),
                        _ => None,
                    };
                    stages.push(Stage::from_peek(
                        format!("instance id of {name:?} in {region}"),
                        &peek,
                        format!("ACR ListInstance(InstanceName={name}) in {region}"),
                        id.as_ref().map(|i| i.as_str().to_owned()),
                    ));
                    id.map(|id| (region.clone(), TargetKey::Instance(id)))
                }
                InstanceSelector::CustomDomain { candidates } => {
                    let mut owner: Option<(Region, InstanceId)> = None;
                    for c in candidates {
                        let region = c.region.clone().unwrap_or_else(|| plan.default_region.clone());
                        let key = (plan.host.as_str().to_owned(), region.clone(), c.id.clone(), chain.clone());
                        let peek = self.domains.peek(&key).await;
                        let detail = match &peek {
                            Peek::Ready { value, .. } if value.value => Some(String::from("owns the domain")),
                            Peek::Ready { .. } => Some(String::from("does not own the domain")),
                            _ => None,
                        };
                        if matches!(&peek, Peek::Ready { value, .. } if value.value) && owner.is_none() {
                            owner = Some((region.clone(), c.id.clone()));
                        }
                        let mut stage = Stage::from_peek(
                            format!("does {} ({region}) own {}", c.id, plan.host),
                            &peek,
                            format!("ACR ListInstanceEndpoint(InstanceId={}) in {region}", c.id),
                            detail,
                        );
                        stage.owns_domain = match &peek {
                            Peek::Ready { value, .. } => Some(value.value),
                            _ => None,
                        };
                        stages.push(stage);
                    }
                    owner.map(|(region, id)| (region, TargetKey::Instance(id)))
                }
            },
        };
        match target {
            Some((region, target)) => {
                let call = match &target {
                    TargetKey::Instance(id) => format!("ACR GetAuthorizationToken(InstanceId={id}) in {region}"),
                    TargetKey::Personal => format!("ACR Personal GET /tokens in {region}"),
                };
                let key = CredKey { region, target, chain: chain.clone() };
                let peek = self.credentials.peek(&key).await;
                let detail = match &peek {
                    Peek::Ready { value, .. } => Some(format!("expires {}", crate::clock::rfc3339(value.expires_at))),
                    _ => None,
                };
                stages.push(Stage::from_peek(String::from("registry credential"), &peek, call, detail));
            }
            None => stages.push(Stage {
                stage: String::from("registry credential"),
                state: String::from("missing"),
                usable_for_seconds: None,
                refresh_in_seconds: None,
                detail: Some(String::from("the instance is known only after the lookup above")),
                on_miss: String::from("ACR GetAuthorizationToken for the instance found above"),
                owns_domain: None,
            }),
        }
        ChainWalk { chain: chain_text(chain), tried_first, stages }
    }
}

fn chain_text(chain: &ChainKey) -> String {
    let mut text = String::from(match chain.base {
        Base::Node => "node identity",
        Base::ServiceAccount(_) => "service-account token",
    });
    for hop in chain.hops.iter() {
        text.push_str(" -> ");
        text.push_str(hop.as_str());
    }
    text
}

/// The decision for the first chain that would be tried.
fn decide(plan: &Plan, walks: &[ChainWalk]) -> (&'static str, String) {
    let Some(first) = walks.iter().find(|w| w.tried_first).or(walks.first()) else {
        return ("bad_request", String::from("no role chain"));
    };
    if let Some(refused) = first.stages.iter().find(|s| s.state == "refused") {
        return (
            "denied",
            format!(
                "{} was refused upstream; the refusal is remembered for {} s more",
                refused.stage,
                refused.usable_for_seconds.unwrap_or(0)
            ),
        );
    }
    // A custom domain no candidate owns, by cached answers for every candidate.
    let candidates = match &plan.target {
        Target::Enterprise { instance: InstanceSelector::CustomDomain { candidates }, .. } => candidates.len(),
        _ => 0,
    };
    let disowned = first.stages.iter().filter(|s| s.owns_domain == Some(false)).count();
    if candidates > 0 && disowned == candidates {
        return (
            "not_ours",
            format!(
                "no instance in acr-instance-ids owns {} (cached); the runtime falls back to its own secrets",
                plan.host
            ),
        );
    }
    let credential = first.stages.last();
    if credential.is_some_and(Stage::is_cached) {
        return ("cached", format!("served from the cache via {}, no upstream call", first.chain));
    }
    let calls: Vec<&str> = first.stages.iter().filter(|s| !s.is_cached()).map(|s| s.on_miss.as_str()).collect();
    ("load", format!("via {}: {}", first.chain, calls.join("; then ")))
}

fn refusal(host: &RegistryHost, facts: HostFacts, from: &'static str, e: &BrokerError) -> Explanation {
    let (decision, row) = match e {
        BrokerError::NotOurs { .. } => ("not_ours", "not ACR"),
        _ => ("bad_request", "refused before any lookup"),
    };
    let why = match e {
        BrokerError::NotOurs { .. } => String::from(
            "not an ACR default domain, and no acr-instance-ids to check it as a custom domain: \
             the runtime falls back to its own secrets",
        ),
        other => other.to_string(),
    };
    Explanation {
        registry: host.as_str().to_owned(),
        host: facts,
        annotations_from: from.to_owned(),
        policy: PolicyRow { row: row.to_owned(), why: why.clone() },
        decision: decision.to_owned(),
        summary: why,
        chains: Vec::new(),
    }
}

/// Renders an explanation as text lines for a terminal.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let region = e.host.region.as_deref().unwrap_or("-");
    let name = e.host.instance_name.as_deref().map(|n| format!(", instance name {n}")).unwrap_or_default();
    out.push_str(&format!("registry   {}\n", e.registry));
    out.push_str(&format!("host       {} ({} domain), region {region}{name}\n", e.host.edition, e.host.domain_kind));
    out.push_str(&format!("policy     {}: {}\n", e.policy.row, e.policy.why));
    out.push_str(&format!("annotations from {}\n", e.annotations_from));
    for (i, c) in e.chains.iter().enumerate() {
        let first = if c.tried_first { " (tried first: it worked last time)" } else { "" };
        out.push_str(&format!("chain {}    {}{first}\n", i + 1, c.chain));
        for s in &c.stages {
            let when = match (s.usable_for_seconds, s.refresh_in_seconds) {
                (Some(u), Some(r)) => format!(" for {u}s (refresh in {r}s)"),
                (Some(u), None) => format!(" for {u}s"),
                _ => String::new(),
            };
            let detail = s.detail.as_deref().map(|d| format!(" [{d}]")).unwrap_or_default();
            let miss = if s.is_cached() { String::new() } else { format!(" -> {}", s.on_miss) };
            out.push_str(&format!("  {:<9}{}{when}{detail}{miss}\n", s.state, s.stage));
        }
    }
    out.push_str(&format!("decision   {}: {}\n", e.decision, e.summary));
    out
}
