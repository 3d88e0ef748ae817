//! Upstream authorization for the mirror: what the registry asked for last time (its challenge)
//! and the `Authorization` value that answers it, per registry and scope, until it expires.
//!
//! The credential itself always comes from the broker (same caches as `/v1/credentials`); a
//! bearer token comes from the realm through [`Broker::registry_token`], which applies the realm
//! allow-list. So a warm pull costs no cloud call and no realm call, and a cold one costs what
//! `docker pull` through the helper would.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use crate::broker::{Answer, Broker, BrokerError, TokenRequest};
use crate::challenge::Challenge;
use crate::clock::SharedClock;

/// A cached authorization is not used within this long of its end (a pull step that starts
/// with it must not have it expire in flight). Default 10 s.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Registries x scopes remembered (LRU beyond).
const CAPACITY: u64 = 10_000;

/// How a registry wants to be authenticated, learnt from its `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Docker token auth; the realm and service to ask (scope comes from the request).
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter, when given.
        service: Option<String>,
    },
    /// HTTP Basic with the registry credential.
    Basic,
}

#[derive(Clone)]
struct Cached {
    value: HeaderValue,
    until: SystemTime,
}

/// The per-registry schemes and per-(registry, scope) authorizations.
pub struct AuthCache {
    schemes: moka::sync::Cache<String, Scheme>,
    values: moka::sync::Cache<Key, Cached>,
    /// One fetch at a time per key: concurrent cold requests (containerd fetches layers in
    /// parallel) wait for the first fetch instead of each asking the realm.
    in_flight: moka::sync::Cache<Key, Arc<tokio::sync::Mutex<()>>>,
    clock: SharedClock,
}

/// Registry and scope.
type Key = (String, Option<String>);

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache").field("entries", &self.values.entry_count()).finish()
    }
}

impl AuthCache {
    /// An empty cache reading time from `clock`.
    pub fn new(clock: SharedClock) -> AuthCache {
        AuthCache {
            schemes: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            values: moka::sync::Cache::builder().max_capacity(CAPACITY).build(),
            in_flight: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            clock,
        }
    }

    /// A still-usable `Authorization` value for `registry` and `scope`.
    pub fn cached(&self, registry: &str, scope: Option<&str>) -> Option<HeaderValue> {
        let key = (registry.to_owned(), scope.map(str::to_owned));
        let c = self.values.get(&key)?;
        if is_usable(c.until, self.clock.now()) {
            Some(c.value)
        } else {
            self.values.invalidate(&key);
            None
        }
    }

    /// A usable authorization for `registry` and `scope` that is not `refused` (the value the
    /// registry just turned down): the cached one when another request already renewed it,
    /// else a fetch, one at a time per key. The flag says whether this call fetched.
    pub async fn get_or_fetch(
        &self,
        broker: &Arc<Broker>,
        registry: &str,
        scope: Option<&str>,
        scheme: &Scheme,
        answer: &Answer,
        refused: Option<&HeaderValue>,
    ) -> Result<(HeaderValue, bool), Arc<BrokerError>> {
        let key: Key = (registry.to_owned(), scope.map(str::to_owned));
        let gate = self.in_flight.get_with(key.clone(), || Arc::new(tokio::sync::Mutex::new(())));
        let _turn = gate.lock().await;
        if let Some(v) = self.cached(registry, scope).filter(|v| Some(v) != refused) {
            return Ok((v, false));
        }
        if refused.is_some() {
            self.values.invalidate(&key);
        }
        self.fetch(broker, registry, scope, scheme, answer).await.map(|v| (v, true))
    }

    /// The scheme `registry` asked for last, if it ever challenged us.
    pub fn scheme(&self, registry: &str) -> Option<Scheme> {
        self.schemes.get(registry)
    }

    /// Remembers the scheme from a `WWW-Authenticate` value; returns it (None when unparseable).
    pub fn learn(&self, registry: &str, www_authenticate: &str) -> Option<Scheme> {
        let scheme = match crate::challenge::parse(www_authenticate).ok()? {
            Challenge::Bearer { realm, service, .. } => Scheme::Bearer { realm, service },
            Challenge::Basic { .. } => Scheme::Basic,
        };
        self.schemes.insert(registry.to_owned(), scheme.clone());
        Some(scheme)
    }

    /// Obtains (and caches) the `Authorization` value answering `scheme` for `scope`, with the
    /// credential `answer` the broker served for `registry`.
    async fn fetch(
        &self,
        broker: &Arc<Broker>,
        registry: &str,
        scope: Option<&str>,
        scheme: &Scheme,
        answer: &Answer,
    ) -> Result<HeaderValue, Arc<BrokerError>> {
        let now = self.clock.now();
        let (text, until) = match scheme {
            Scheme::Basic => {
                let c = &answer.credential;
                let raw = format!("{}:{}", c.username, c.password.expose_secret());
                (format!("Basic {}", data_encoding::BASE64.encode(raw.as_bytes())), c.expires_at)
            }
            Scheme::Bearer { realm, service } => {
                let req = TokenRequest {
                    registry: registry.to_owned(),
                    challenge: challenge_text(realm, service.as_deref(), scope),
                    ..TokenRequest::default()
                };
                let (bearer, _) = broker.registry_token(&req).await?;
                let until = now + Duration::from_secs(bearer.expires_in);
                (format!("Bearer {}", bearer.token.expose_secret()), until)
            }
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            Arc::new(BrokerError::BadUpstream {
                action: "RegistryToken",
                message: String::from("the registry token is not a valid header value"),
            })
        })?;
        value.set_sensitive(true);
        self.values.insert((registry.to_owned(), scope.map(str::to_owned)), Cached { value: value.clone(), until });
        Ok(value)
    }
}

/// True while `until` is more than [`EXPIRY_MARGIN`] away: a bearer token issued at 12:00:00
/// for 300 s is used until 12:04:50, then fetched anew.
pub fn is_usable(until: SystemTime, now: SystemTime) -> bool {
    until.duration_since(now).is_ok_and(|left| left > EXPIRY_MARGIN)
}

/// A Bearer challenge for `scope`, in the syntax [`crate::challenge::parse`] reads, so the broker's
/// one challenge path (realm allow-list included) handles scopes the registry has not named yet.
fn challenge_text(realm: &str, service: Option<&str>, scope: Option<&str>) -> String {
    let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("Bearer realm={}", q(realm));
    if let Some(s) = service {
        out.push_str(&format!(",service={}", q(s)));
    }
    if let Some(s) = scope {
        out.push_str(&format!(",scope={}", q(s)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    #[test]
    fn tokens_are_used_until_the_margin_before_their_end() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let until = t0 + Duration::from_secs(300);
        assert!(is_usable(until, t0));
        assert!(is_usable(until, t0 + Duration::from_secs(289)));
        assert!(!is_usable(until, t0 + Duration::from_secs(290)));
        assert!(!is_usable(until, t0 + Duration::from_secs(400)));
    }

    #[test]
    fn synthesized_challenges_round_trip_through_the_shared_parser() {
        let text = challenge_text(
            "https://dockerauth.cn-hangzhou.aliyuncs.com/auth",
            Some("svc \"x\""),
            Some("repository:a/b:pull"),
        );
        let parsed = crate::challenge::parse(&text).expect("parses");
        assert_eq!(
            parsed,
            Challenge::Bearer {
                realm: String::from("https://dockerauth.cn-hangzhou.aliyuncs.com/auth"),
                service: Some(String::from("svc \"x\"")),
                scopes: vec![String::from("repository:a/b:pull")],
            }
        );
    }

    #[test]
    fn learnt_schemes_and_cached_values_expire_by_the_clock() {
        let clock = crate::clock::ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let cache = AuthCache::new(clock.clone());
        assert_eq!(cache.learn("r:1", "Basic realm=\"x\""), Some(Scheme::Basic));
        assert_eq!(cache.scheme("r:1"), Some(Scheme::Basic));
        assert_eq!(cache.learn("r:1", "Negotiate"), None);
        let until = clock.now() + Duration::from_secs(60);
        cache
            .values
            .insert((String::from("r:1"), None), Cached { value: HeaderValue::from_static("Basic eA=="), until });
        assert!(cache.cached("r:1", None).is_some());
        clock.advance(Duration::from_secs(55));
        assert!(cache.cached("r:1", None).is_none(), "inside the margin: fetched anew");
    }
}
