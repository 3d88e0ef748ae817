//! Walking a plan: pick a role chain, resolve the instance, and load the registry credential,
//! each step through its cache. The only code that calls STS and ACR for a request.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use std::future::Future;

use super::error::EXPIRED_SESSION;
use super::{
    Answer, Base, Broker, BrokerError, ChainKey, CredKey, Edition, Issued, Lookup, NodeIdentity, TargetKey, LOOKUP_TTL,
};
use crate::aliyun::error::UNKNOWN_HOST;
use crate::aliyun::{AssumeRoleRequest, AssumeRoleWithOidcRequest, Credentials, DomainKind, Error as ApiError};
use crate::cache::Outcome;
use crate::ids::{InstanceId, InstanceRef, Region, RoleArn};
use crate::policy::{InstanceSelector, Plan, Target};
use crate::secret::Secret;
use crate::upstream::Api;

type Shared<T> = Result<T, Arc<BrokerError>>;

/// A credential, how the cache served it, and (on a fresh hit) until when it stays fresh.
type Got = (Arc<Issued>, Outcome, Option<std::time::SystemTime>);

/// Largest DurationSeconds STS accepts for a chained hop.
const CHAINED_MAX_SECONDS: u32 = 3600;

impl Broker {
    /// Tries the plan's chains in order, starting with the one that last worked for this plan.
    pub(super) async fn serve_plan(
        self: &Arc<Self>,
        plan: &Plan,
        chains: &[ChainKey],
        sa_token: Option<&Secret>,
    ) -> Shared<(Answer, CredKey)> {
        if chains.is_empty() {
            return Err(Arc::new(BrokerError::bad_request("no_role_chain", "the annotations yield no role chain")));
        }
        if let [only] = chains {
            return self.serve_with_chain(plan, only, sa_token).await;
        }
        let memo = chain_memo(plan, chains);
        let start = self.remembered_chain(plan, chains);
        let mut last_denial = None;
        for i in (start..chains.len()).chain(0..start) {
            match self.serve_with_chain(plan, &chains[i], sa_token).await {
                Ok(answer) => {
                    if i != start {
                        self.working_chain.insert(memo, i);
                    }
                    return Ok(answer);
                }
                Err(e) if matches!(*e, BrokerError::Denied { .. }) => {
                    tracing::debug!(chain = i, code = e.code(), "role chain denied; trying the next one");
                    last_denial = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_denial.unwrap_or_else(|| Arc::new(BrokerError::bad_request("no_role_chain", "no role chain worked"))))
    }

    /// The index of the chain that last worked for this plan (0 when none is remembered).
    pub(super) fn remembered_chain(&self, plan: &Plan, chains: &[ChainKey]) -> usize {
        self.working_chain.get(&chain_memo(plan, chains)).unwrap_or(0).min(chains.len().saturating_sub(1))
    }

    async fn serve_with_chain(
        self: &Arc<Self>,
        plan: &Plan,
        chain: &ChainKey,
        sa: Option<&Secret>,
    ) -> Shared<(Answer, CredKey)> {
        let (key, (credential, outcome, fresh_until)) = match &plan.target {
            Target::Personal { region } => self.credential_at(region.clone(), TargetKey::Personal, chain, sa).await?,
            Target::Enterprise { region, instance: InstanceSelector::ByName(name) } => {
                let id = self.instance_by_name(region, name, chain, sa).await?;
                self.credential_at(region.clone(), TargetKey::Instance(id), chain, sa).await?
            }
            Target::Enterprise { region, instance: InstanceSelector::ById(id) } => {
                self.credential_at(region.clone(), TargetKey::Instance(id.clone()), chain, sa).await?
            }
            Target::Enterprise { instance: InstanceSelector::CustomDomain { candidates }, .. } => {
                self.custom_domain_credential(plan, candidates, chain, sa).await?
            }
        };
        let answer = Answer {
            credential,
            registry: plan.host.as_str().to_owned(),
            chain: chain_arns(chain),
            outcome,
            via_service_account: matches!(chain.base, Base::ServiceAccount(_)),
            fresh_until,
        };
        Ok((answer, key))
    }

    /// The credential of `target` in `region` through `chain`, with the key it is cached under.
    async fn credential_at(
        self: &Arc<Self>,
        region: Region,
        target: TargetKey,
        chain: &ChainKey,
        sa: Option<&Secret>,
    ) -> Shared<(CredKey, Got)> {
        let key = CredKey { region, target, chain: chain.clone() };
        let got = self.credential(&key, sa).await?;
        Ok((key, got))
    }

    /// The credential for `key`, from the cache or loaded once for all callers.
    async fn credential(self: &Arc<Self>, key: &CredKey, sa: Option<&Secret>) -> Shared<Got> {
        // A fresh hit skips building the loader (no key clone, no closure).
        if let Some((credential, until)) = self.credentials.get_fresh_until(key).await {
            return Ok((credential, Outcome::Hit, Some(until)));
        }
        let (this, k, token) = (Arc::clone(self), key.clone(), sa.cloned());
        let (credential, outcome) = self
            .credentials
            .get_or_load(key, move || {
                let (this, k, token) = (Arc::clone(&this), k.clone(), token.clone());
                async move { this.load_credential(&k, token.as_ref()).await }
            })
            .await?;
        Ok((credential, outcome, None))
    }

    /// A custom domain: which listed instance owns it (ListInstanceEndpoint) and that
    /// instance's credential (GetAuthorizationToken) need only the instance id and the session,
    /// so the first candidate's credential is fetched while ownership is checked. It is handed
    /// out only if that instance turns out to own the domain; otherwise it stays cached under
    /// its instance (where it is valid) and the owner's credential is fetched.
    async fn custom_domain_credential(
        self: &Arc<Self>,
        plan: &Plan,
        candidates: &[InstanceRef],
        chain: &ChainKey,
        sa: Option<&Secret>,
    ) -> Shared<(CredKey, Got)> {
        let Some(first) = candidates.first() else {
            return Err(Arc::new(BrokerError::NotOurs { host: plan.host.as_str().to_owned(), reason: None }));
        };
        let first_region = first.region.clone().unwrap_or_else(|| plan.default_region.clone());
        // When the first candidate's answer is cached there is nothing to overlap.
        let lookup = (plan.host.as_str().to_owned(), first_region.clone(), first.id.clone(), chain.clone());
        if matches!(self.domains.peek(&lookup).await, crate::cache::Peek::Ready { .. }) {
            let (region, id) = self.owner_of(plan, candidates, chain, sa).await?;
            return self.credential_at(region, TargetKey::Instance(id), chain, sa).await;
        }
        let speculative_key =
            CredKey { region: first_region, target: TargetKey::Instance(first.id.clone()), chain: chain.clone() };
        let (owner, speculative) =
            tokio::join!(self.owner_of(plan, candidates, chain, sa), self.credential(&speculative_key, sa));
        let (region, id) = owner?;
        if region == speculative_key.region && id == first.id {
            return Ok((speculative_key, speculative?));
        }
        self.credential_at(region, TargetKey::Instance(id), chain, sa).await
    }

    /// Mints a registry credential with a freshly assumed last hop.
    async fn load_credential(self: &Arc<Self>, key: &CredKey, sa: Option<&Secret>) -> Result<Issued, BrokerError> {
        let region = &key.region;
        let (token, creds) = match &key.target {
            TargetKey::Instance(id) => {
                self.acr_call(&key.chain, sa, true, region, "GetAuthorizationToken", |creds| {
                    let (this, creds, id) = (Arc::clone(self), creds, id.clone());
                    async move { this.live().client.get_authorization_token(&creds, region.as_str(), id.as_str()).await }
                })
                .await?
            }
            TargetKey::Personal => {
                self.acr_call(&key.chain, sa, true, region, "PersonalGetAuthorizationToken", |creds| {
                    let this = Arc::clone(self);
                    async move { this.live().client.get_personal_token(&creds, region.as_str()).await }
                })
                .await?
            }
        };
        let mut expires_at = match creds.expires_at {
            Some(session_end) => token.expires_at.min(session_end),
            None => token.expires_at,
        };
        // A credential earned with a service-account token is not served past that token's
        // life: whoever replays an expired token must not hit the cache.
        if let Some(token_end) = sa.and_then(|t| jwt_expiry(t.expose_secret())) {
            expires_at = expires_at.min(token_end);
        }
        tracing::info!(region = region.as_str(), target = ?key.target, hops = key.chain.hops.len(), "issued registry credential");
        Ok(Issued {
            username: token.username,
            password: token.password,
            expires_at,
            region: key.region.clone(),
            instance_id: match &key.target {
                TargetKey::Instance(id) => Some(id.clone()),
                TargetKey::Personal => None,
            },
            edition: match key.target {
                TargetKey::Instance(_) => Edition::Enterprise,
                TargetKey::Personal => Edition::Personal,
            },
            rendered: std::sync::OnceLock::new(),
        })
    }

    /// The node identity, from its cache.
    pub(super) async fn node_credentials(self: &Arc<Self>) -> Shared<Arc<Credentials>> {
        let this = Arc::clone(self);
        self.node_identity
            .get_or_load(&(), move || {
                let this = Arc::clone(&this);
                async move {
                    let live = this.live();
                    let source = Arc::clone(&live.identity);
                    let mut creds = live
                        .upstream
                        .call(Api::Other, "Metadata", || source.fetch())
                        .await
                        .map_err(|e| BrokerError::NoIdentity(format!("{} identity: {e}", source.name())))?;
                    let read_again_at = this.now() + live.config.identity_reread;
                    // An STS token whose source states no end still has one: what is issued
                    // with it is not trusted past the next read of the source.
                    if creds.expires_at.is_none() && creds.security_token.is_some() {
                        creds.expires_at = Some(read_again_at);
                    }
                    Ok(NodeIdentity { credentials: Arc::new(creds), read_again_at })
                }
            })
            .await
            .map(|(identity, _)| Arc::clone(&identity.credentials))
    }

    /// Reads the node identity again after upstream refused `used` as unknown, disabled or
    /// mis-signed (a rotated key); `Some` only when the source now gives different credentials.
    async fn reread_node_identity(self: &Arc<Self>, used: &Credentials) -> Option<Arc<Credentials>> {
        let differs = |c: &Credentials| {
            c.access_key_id != used.access_key_id
                || c.access_key_secret != used.access_key_secret
                || c.security_token != used.security_token
        };
        // Another request may have read it again already.
        if let Ok(current) = self.node_credentials().await {
            if differs(&current) {
                return Some(current);
            }
        }
        self.node_identity.invalidate(&()).await;
        self.forget_answers();
        let fresh = self.node_credentials().await.ok()?;
        tracing::info!(changed = differs(&fresh), "node identity read again after an authentication failure");
        differs(&fresh).then_some(fresh)
    }

    /// Runs `call` signed by `signer`; when the signer is the node identity and upstream says
    /// the key is unknown, disabled or mis-signed, reads the identity again and, if it changed,
    /// calls once more with the new key before answering.
    async fn with_node_reread<T, F, Fut>(
        self: &Arc<Self>,
        signer: Arc<Credentials>,
        node_signed: bool,
        mut call: F,
    ) -> Result<(T, Arc<Credentials>), BrokerError>
    where
        F: FnMut(Arc<Credentials>) -> Fut,
        Fut: Future<Output = Result<T, BrokerError>>,
    {
        match call(Arc::clone(&signer)).await {
            Err(e) if node_signed && is_stale_key(e.code()) => match self.reread_node_identity(&signer).await {
                Some(fresh) => call(Arc::clone(&fresh)).await.map(|v| (v, fresh)),
                None => Err(e),
            },
            other => other.map(|v| (v, signer)),
        }
    }

    /// An ACR API call for `region`, signed by the end of `chain`, within the ACR budget.
    ///
    /// A region whose endpoint does not exist is remembered for the negative TTL; an expired
    /// signing session is dropped so the next attempt renews it; a rotated node key is read
    /// again (see [`with_node_reread`](Self::with_node_reread)).
    async fn acr_call<T, F, Fut>(
        self: &Arc<Self>,
        chain: &ChainKey,
        sa: Option<&Secret>,
        young: bool,
        region: &Region,
        action: &'static str,
        op: F,
    ) -> Result<(T, Arc<Credentials>), BrokerError>
    where
        F: Fn(Arc<Credentials>) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        if let Some(known) = self.dead_regions.get(region) {
            return Err((*known).clone());
        }
        let signer = self.chain_credentials(chain, sa, young).await.map_err(|e| (*e).clone())?;
        let node_signed = matches!(chain.base, Base::Node) && chain.hops.is_empty();
        let (op, upstream) = (&op, &self.live().upstream);
        let result = self
            .with_node_reread(signer, node_signed, |creds| async move {
                let call = upstream.call(Api::Acr, action, || op(Arc::clone(&creds)));
                self.signed_call(chain, action, call).await
            })
            .await;
        if let Err(e) = &result {
            if e.code() == UNKNOWN_HOST {
                self.dead_regions.insert(region.clone(), Arc::new(e.clone()));
            }
        }
        result
    }

    /// Credentials at the end of `chain`; with `young_last`, the last hop is freshly assumed.
    async fn chain_credentials(
        self: &Arc<Self>,
        chain: &ChainKey,
        sa: Option<&Secret>,
        young_last: bool,
    ) -> Shared<Arc<Credentials>> {
        let mut creds = match &chain.base {
            Base::Node => self.node_credentials().await?,
            Base::ServiceAccount(sa_base) => {
                let role = &sa_base.role;
                let key = ChainKey { base: chain.base.clone(), hops: Arc::from(Vec::new()) };
                let token = sa.cloned().ok_or_else(|| {
                    Arc::new(BrokerError::bad_request(
                        "service_account_token_missing",
                        "service-account token required",
                    ))
                })?;
                let (this, role) = (Arc::clone(self), role.clone());
                let load = move || {
                    let (this, role, token) = (Arc::clone(&this), role.clone(), token.clone());
                    async move { this.exchange_service_account_token(&role, token).await }
                };
                let young = young_last && chain.hops.is_empty();
                let got = if young {
                    self.sessions.get_or_load_young(&key, load).await
                } else {
                    self.sessions.get_or_load(&key, load).await
                };
                got?.0
            }
        };
        for i in 0..chain.hops.len() {
            let prefix = ChainKey { base: chain.base.clone(), hops: Arc::from(&chain.hops[..=i]) };
            let (this, role, caller) = (Arc::clone(self), chain.hops[i].clone(), Arc::clone(&creds));
            let node_signed = i == 0 && matches!(chain.base, Base::Node);
            let load = move || {
                let (this, role, caller) = (Arc::clone(&this), role.clone(), Arc::clone(&caller));
                async move {
                    let assume = |signer: Arc<Credentials>| {
                        let (this, role) = (Arc::clone(&this), role.clone());
                        async move { this.assume_role(&signer, &role).await }
                    };
                    this.with_node_reread(caller, node_signed, assume).await.map(|(session, _)| session)
                }
            };
            let young = young_last && i + 1 == chain.hops.len();
            let got = if young {
                self.sessions.get_or_load_young(&prefix, load).await
            } else {
                self.sessions.get_or_load(&prefix, load).await
            };
            if let Err(e) = &got {
                self.forget_expired_signer(chain, i, e).await;
            }
            creds = got?.0;
        }
        Ok(creds)
    }

    /// Awaits an upstream call signed by the end of `chain`, mapping its error; when upstream
    /// says the signing session expired, that session is dropped so the next attempt renews it.
    async fn signed_call<T>(
        &self,
        chain: &ChainKey,
        action: &'static str,
        call: impl std::future::Future<Output = Result<T, crate::aliyun::Error>>,
    ) -> Result<T, BrokerError> {
        let result = call.await.map_err(|e| BrokerError::upstream(action, e));
        if let Err(e) = &result {
            self.forget_expired_signer(chain, chain.hops.len(), e).await;
        }
        result
    }

    /// Drops the cached session that signed hop `i` of `chain` when upstream rejected it as
    /// expired (the node clock lags STS), so the next attempt re-assumes it instead of failing
    /// until our own schedule says it expired.
    async fn forget_expired_signer(&self, chain: &ChainKey, i: usize, e: &BrokerError) {
        if e.code() != EXPIRED_SESSION {
            return;
        }
        tracing::warn!(hop = i, "upstream says a cached session expired (node clock behind?); dropping it");
        self.forget_answers();
        match (&chain.base, i) {
            (Base::Node, 0) => self.node_identity.invalidate(&()).await,
            _ => {
                self.sessions
                    .invalidate(&ChainKey { base: chain.base.clone(), hops: Arc::from(&chain.hops[..i]) })
                    .await
            }
        }
    }

    async fn assume_role(&self, caller: &Credentials, role: &RoleArn) -> Result<Credentials, BrokerError> {
        let action = "AssumeRole";
        let live = self.live();
        let mut req = AssumeRoleRequest {
            role_arn: role.as_str().to_owned(),
            session_name: self.session_name.clone(),
            duration_seconds: u32::try_from(live.config.cache.session_duration.as_secs())
                .unwrap_or(CHAINED_MAX_SECONDS),
            policy: None,
            external_id: None,
        };
        let first = live.upstream.call(Api::Sts, action, || live.client.assume_role(caller, &req)).await;
        let session = match first {
            // Chained hops are capped at one hour; ask again within the cap.
            Err(e) if e.code() == "InvalidParameter.DurationSeconds" && req.duration_seconds > CHAINED_MAX_SECONDS => {
                req.duration_seconds = CHAINED_MAX_SECONDS;
                live.upstream.call(Api::Sts, action, || live.client.assume_role(caller, &req)).await
            }
            other => other,
        }
        .map_err(|e| BrokerError::upstream(action, e))?;
        tracing::debug!(role = role.as_str(), "assumed role");
        Ok(session.credentials)
    }

    async fn exchange_service_account_token(&self, role: &RoleArn, token: Secret) -> Result<Credentials, BrokerError> {
        let action = "AssumeRoleWithOIDC";
        let live = self.live();
        let provider_arn = live.config.oidc_provider_arn.clone().unwrap_or_default();
        let req = AssumeRoleWithOidcRequest {
            role_arn: role.as_str().to_owned(),
            provider_arn,
            oidc_token: token,
            session_name: self.session_name.clone(),
            duration_seconds: CHAINED_MAX_SECONDS,
        };
        let session = live
            .upstream
            .call(Api::Sts, action, || live.client.assume_role_with_oidc(&req))
            .await
            .map_err(|e| BrokerError::upstream(action, e))?;
        Ok(session.credentials)
    }

    /// Maps an Enterprise instance name to its id with the chain's credentials (ListInstance).
    async fn instance_by_name(
        self: &Arc<Self>,
        region: &Region,
        name: &str,
        chain: &ChainKey,
        sa: Option<&Secret>,
    ) -> Shared<InstanceId> {
        let key = (region.clone(), name.to_owned(), chain.clone());
        if let Some(found) = self.instances.get_fresh(&key).await {
            return Ok(found.value.clone());
        }
        let (this, token, k) = (Arc::clone(self), sa.cloned(), key.clone());
        let (found, _) = self
            .instances
            .get_or_load(&k, move || {
                let (this, key, token) = (Arc::clone(&this), key.clone(), token.clone());
                async move {
                    let action = "ListInstance";
                    let (list, _) = this
                        .acr_call(&key.2, token.as_ref(), false, &key.0, action, |creds| {
                            let (this, region, name) = (Arc::clone(&this), key.0.clone(), key.1.clone());
                            async move { this.live().client.list_instance(&creds, region.as_str(), &name).await }
                        })
                        .await?;
                    let hit = list.iter().find(|i| i.instance_name.eq_ignore_ascii_case(&key.1)).ok_or_else(|| {
                        BrokerError::Denied {
                            action,
                            code: String::from("InstanceNotFound"),
                            message: format!(
                                "no Enterprise instance named {:?} in {} is visible to this identity; \
                                 an instance in another account needs acr-service-arns and acr-user-arns",
                                key.1, key.0
                            ),
                        }
                    })?;
                    let id = InstanceId::try_from(hit.instance_id.as_str()).map_err(|e| BrokerError::BadUpstream {
                        action,
                        message: format!("instance id {:?}: {e}", hit.instance_id),
                    })?;
                    Ok(Lookup { value: id, until: this.now() + LOOKUP_TTL })
                }
            })
            .await?;
        Ok(found.value.clone())
    }

    /// Finds which listed instance owns a custom domain (ListInstanceEndpoint, USER or SYSTEM domains).
    async fn owner_of(
        self: &Arc<Self>,
        plan: &Plan,
        candidates: &[InstanceRef],
        chain: &ChainKey,
        sa: Option<&Secret>,
    ) -> Shared<(Region, InstanceId)> {
        let host = plan.host.as_str().to_owned();
        let mut denial = None;
        for c in candidates {
            let region = c.region.clone().unwrap_or_else(|| plan.default_region.clone());
            let key = (host.clone(), region.clone(), c.id.clone(), chain.clone());
            if let Some(l) = self.domains.get_fresh(&key).await {
                if l.value {
                    return Ok((region, c.id.clone()));
                }
                continue;
            }
            let (this, token, k) = (Arc::clone(self), sa.cloned(), key.clone());
            let owns = self
                .domains
                .get_or_load(&k, move || {
                    let (this, key, token) = (Arc::clone(&this), key.clone(), token.clone());
                    async move {
                        let action = "ListInstanceEndpoint";
                        let (domains, _) = this
                            .acr_call(&key.3, token.as_ref(), false, &key.1, action, |creds| {
                                let (this, region, id) = (Arc::clone(&this), key.1.clone(), key.2.clone());
                                async move {
                                    this.live()
                                        .client
                                        .list_instance_endpoint(&creds, region.as_str(), id.as_str())
                                        .await
                                }
                            })
                            .await?;
                        let owns = domains.iter().any(|d| {
                            matches!(d.kind, DomainKind::User | DomainKind::System) && domain_matches(&d.domain, &key.0)
                        });
                        // Binding or unbinding a domain must be seen within minutes: a "no" is
                        // kept like other negative answers, a "yes" for the shorter domain TTL.
                        let cache = &this.live().config.cache;
                        let ttl = if owns { cache.domain_ttl } else { cache.negative_ttl };
                        Ok(Lookup { value: owns, until: this.now() + ttl })
                    }
                })
                .await;
            match owns {
                Ok((l, _)) if l.value => return Ok((region, c.id.clone())),
                Ok(_) => {}
                Err(e) if matches!(*e, BrokerError::Denied { .. }) => denial = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(denial.unwrap_or_else(|| {
            Arc::new(BrokerError::NotOurs {
                host: host.clone(),
                reason: Some(String::from("no instance in acr-instance-ids lists this domain")),
            })
        }))
    }
}

/// The key under which the chain that worked for a host and chain list is remembered.
fn chain_memo(plan: &Plan, chains: &[ChainKey]) -> u64 {
    let mut h = DefaultHasher::new();
    plan.host.as_str().hash(&mut h);
    chains.hash(&mut h);
    h.finish()
}

/// Codes that say the signing key is unknown, disabled or does not match its secret: what a
/// rotated node key looks like before it is read again.
fn is_stale_key(code: &str) -> bool {
    code == "SignatureDoesNotMatch"
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidSecurityToken")
}

/// The `exp` claim of a JWT, read without verifying it: used only to shorten a lifetime.
fn jwt_expiry(token: &str) -> Option<std::time::SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = data_encoding::BASE64URL_NOPAD.decode(payload.trim_end_matches('=').as_bytes()).ok()?;
    let exp = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("exp")?.as_i64()?;
    crate::clock::from_epoch_millis(exp.checked_mul(1000)?)
}

/// `host[:port]` as asked matches a domain exactly; `host:443` also matches the bare host.
fn domain_matches(domain: &str, asked: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    domain.eq_ignore_ascii_case(asked)
        || asked.strip_suffix(":443").is_some_and(|bare| domain.eq_ignore_ascii_case(bare))
}

/// The chain as role ARNs, the service-account role first when there is one.
fn chain_arns(chain: &ChainKey) -> Arc<[RoleArn]> {
    match &chain.base {
        Base::Node => Arc::clone(&chain.hops),
        Base::ServiceAccount(sa) => std::iter::once(sa.role.clone()).chain(chain.hops.iter().cloned()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::{domain_matches, jwt_expiry};

    #[test]
    fn jwt_expiry_reads_exp_and_tolerates_garbage() {
        let payload = data_encoding::BASE64URL_NOPAD.encode(br#"{"sub":"system:serviceaccount:a:b","exp":1700000000}"#);
        let t = jwt_expiry(&format!("hdr.{payload}.sig")).expect("exp");
        assert_eq!(t, std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        assert!(jwt_expiry("not-a-jwt").is_none());
        assert!(jwt_expiry("a.!!!.c").is_none());
        let no_exp = data_encoding::BASE64URL_NOPAD.encode(br#"{"sub":"x"}"#);
        assert!(jwt_expiry(&format!("a.{no_exp}.c")).is_none());
    }

    #[test]
    fn custom_domains_match_exactly() {
        assert!(domain_matches("registry.example.com", "registry.example.com"));
        assert!(domain_matches("Registry.Example.com.", "registry.example.com"));
        assert!(domain_matches("registry.example.com", "registry.example.com:443"));
        assert!(domain_matches("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!domain_matches("127.0.0.1", "127.0.0.1:5000"));
        assert!(!domain_matches("registry.example.com", "registry.example.com.evil.com"));
        assert!(!domain_matches("example.com", "registry.example.com"));
    }
}
