//! Taking a new configuration without a restart: what may change live, what must wait for a
//! restart, and which cached values a change makes stale.
//!
//! The rule: a cached value stays warm unless something it was loaded with changed. Defaults,
//! realm hosts and the upstream budget change no cached value; new cache margins re-plan the
//! entries in place; a new identity, region, endpoint, timeout or OIDC provider drops them all.
//! Listener settings and the caches' sizes are fixed for the life of the process.

use std::sync::Arc;

use super::{Broker, Live};
use crate::aliyun::identity::IdentitySource;
use crate::aliyun::Client;
use crate::config::Config;
use crate::upstream::Upstream;

/// What a reload did, for its log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Settings that differ but only take effect after a restart (kept as they were).
    pub needs_restart: Vec<&'static str>,
    /// The identity or the endpoints changed: every cached value was dropped.
    pub caches_dropped: bool,
    /// Cache margins changed: cached values were planned again, not fetched again.
    pub caches_replanned: bool,
    /// The upstream budget was rebuilt.
    pub budget_changed: bool,
}

/// The settings of `new` that differ from `old` but are fixed for the life of the process.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let checks = [
        ("server.socket", o.socket != n.socket),
        ("server.socket_mode", o.socket_mode != n.socket_mode),
        ("server.socket_group", o.socket_group != n.socket_group),
        ("server.listen", o.listen != n.listen),
        ("server.metrics", o.metrics != n.metrics),
        ("server.allowed_uids", o.allowed_uids != n.allowed_uids),
        ("server.allowed_gids", o.allowed_gids != n.allowed_gids),
        ("server.max_connections", o.max_connections != n.max_connections),
        ("server.header_timeout_seconds", o.header_timeout != n.header_timeout),
        ("cache.capacity", old.cache.capacity != new.cache.capacity),
        ("cache.idle_seconds", old.cache.idle != new.cache.idle),
    ];
    checks.into_iter().filter(|(_, changed)| *changed).map(|(name, _)| name).collect()
}

/// `new`, with the settings that need a restart kept as they are in `old`.
pub fn keep_restart_only(old: &Config, mut new: Config) -> Config {
    new.server = old.server.clone();
    new.cache.capacity = old.cache.capacity;
    new.cache.idle = old.cache.idle;
    new
}

/// True when values cached under `old` were loaded with something `new` changes: who the node
/// is, where the APIs are, how long calls may take, which OIDC provider exchanges tokens.
pub fn changes_what_was_loaded(old: &Config, new: &Config) -> bool {
    old.identity != new.identity
        || old.identity_reread != new.identity_reread
        || old.aliyun != new.aliyun
        || old.oidc_provider_arn != new.oidc_provider_arn
        || old.upstream.api_timeout != new.upstream.api_timeout
        || old.upstream.metadata_timeout != new.upstream.metadata_timeout
}

impl Broker {
    /// Swaps in `new` (validated; restart-only settings are kept as they were). `rebuild` makes
    /// the client and identity source for it, and is called only when those must change.
    pub async fn reload<F>(&self, new: Config, rebuild: F) -> Result<ReloadSummary, String>
    where
        F: FnOnce(&Config) -> Result<(Client, Arc<dyn IdentitySource>), String>,
    {
        let live = self.live();
        let old = &live.config;
        let mut summary = ReloadSummary { needs_restart: restart_only_changes(old, &new), ..Default::default() };
        let new = keep_restart_only(old, new);
        let (client, identity) = if changes_what_was_loaded(old, &new) {
            summary.caches_dropped = true;
            rebuild(&new)?
        } else {
            (live.client.clone(), Arc::clone(&live.identity))
        };
        let upstream = if old.upstream != new.upstream {
            summary.budget_changed = true;
            Arc::new(Upstream::new(new.upstream.clone(), Arc::clone(&self.metrics)))
        } else {
            Arc::clone(&live.upstream)
        };
        let cache_changed = old.cache != new.cache;
        let next = Arc::new(Live { config: Arc::new(new), client, identity, upstream });
        let cache_config = next.config.cache.clone();
        match self.live.write() {
            Ok(mut slot) => *slot = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        // New defaults, realm hosts or margins change what a repeated answer would be
        // (clear_caches forgets them too).
        if summary.caches_dropped {
            self.clear_caches();
        } else {
            self.forget_answers();
        }
        if cache_changed {
            summary.caches_replanned = !summary.caches_dropped;
            self.node_identity.replan(cache_config.clone()).await;
            self.sessions.replan(cache_config.clone()).await;
            self.instances.replan(cache_config.clone()).await;
            self.domains.replan(cache_config.clone()).await;
            self.credentials.replan(cache_config).await;
        }
        Ok(summary)
    }

    /// Drops every cached value: what a reload with a new identity does, and what a benchmark
    /// of the cold path needs.
    pub fn clear_caches(&self) {
        self.forget_answers();
        self.node_identity.clear();
        self.sessions.clear();
        self.instances.clear();
        self.domains.clear();
        self.credentials.clear();
        self.dead_regions.invalidate_all();
        self.refused.invalidate_all();
        self.working_chain.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!("[aliyun]\nregion = \"cn-hangzhou\"\n{extra}"), "t").expect("valid")
    }

    #[test]
    fn listener_and_size_settings_need_a_restart_and_are_kept() {
        let old = config("");
        let new = config("[server]\nsocket = \"/tmp/other.sock\"\nallowed_uids = [0, 7]\n[cache]\ncapacity = 5\n");
        assert_eq!(restart_only_changes(&old, &new), vec!["server.socket", "server.allowed_uids", "cache.capacity"]);
        let kept = keep_restart_only(&old, new);
        assert_eq!(kept.server, old.server);
        assert_eq!(kept.cache.capacity, old.cache.capacity);
    }

    #[test]
    fn only_identity_endpoints_and_timeouts_invalidate_what_was_loaded() {
        let old = config("");
        for same in [
            "[defaults]\nacr_instance_ids = [\"cri-aaaaaaaaaaaaaaaa\"]\n",
            "[upstream]\nsts_rate_per_second = 3.0\n",
            "[cache]\nrefresh_fraction = 0.7\n",
            "[registry_token]\nallowed_realm_hosts = [\"auth.example.com\"]\n",
        ] {
            assert!(!changes_what_was_loaded(&old, &config(same)), "{same}");
        }
        for different in [
            "[identity]\nsource = \"ecs-ram-role\"\n",
            "[identity]\nreread_seconds = 60\n",
            "[upstream]\napi_timeout_ms = 900\n",
            "[service_account_tokens]\noidc_provider_arn = \"acs:ram::1111111111111111:oidc-provider/x\"\n",
        ] {
            assert!(changes_what_was_loaded(&old, &config(different)), "{different}");
        }
        let moved = Config::from_toml("[aliyun]\nregion = \"cn-beijing\"\n", "t").expect("valid");
        assert!(changes_what_was_loaded(&old, &moved));
    }
}
