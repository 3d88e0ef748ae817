//! The daemon's TOML configuration: parsed strictly, validated completely, reported all at once.
//!
//! Unknown keys are rejected by name (a typo must not silently fall back to a default). Every
//! semantic problem is collected with the line it stands on, so `acr-broker check-config` shows
//! them all in one run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ids::Region;
use crate::policy::Annotations;
use crate::secret::Secret;

/// Default unix socket path of the daemon API.
pub const DEFAULT_SOCKET: &str = "/run/acr-broker/broker.sock";
/// Default metrics and health listener: loopback only, port 9465.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9465";
/// Default `[cache] capacity`: 20,000 registry credentials, about 32 MiB of RSS at about 1.15 KB
/// per entry (BENCHMARKS.md, memory), which leaves the DaemonSet's 128 MiB limit room for the
/// rest of the daemon. A node rarely needs more than a few hundred distinct keys.
pub const DEFAULT_CACHE_CAPACITY: u64 = 20_000;
/// Default ECS metadata service base URL.
pub const DEFAULT_METADATA: &str = "http://100.100.100.200";
/// Default ACR endpoint template; `{region}` is replaced per call.
pub const DEFAULT_CR_ENDPOINT: &str = "https://cr.{region}.aliyuncs.com";
/// Default STS endpoint template (regional STS); `{region}` is the node's region.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.{region}.aliyuncs.com";

/// Upper bound for connection and concurrency limits (tokio semaphores panic far above it).
const MAX_LIMIT: usize = 65_536;

/// A configuration problem, with the line it was found on when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// 1-based line in the file, when the key could be located.
    pub line: Option<usize>,
    /// The key, as `section.key`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in {source_name}:\n{}", issues.len(), issues.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// File name or `<string>`.
    pub source_name: String,
    /// The problems, in file order where known.
    pub issues: Vec<ConfigIssue>,
}

/// Which base identity the node uses.
#[derive(Debug, Clone, PartialEq)]
pub enum IdentityConfig {
    /// The SDK order: environment, then OIDC env, then the credentials file if it exists, then ECS RAM role.
    Default,
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` / `_SECURITY_TOKEN`.
    Env,
    /// A long-term access key written in the config (prefer `ecs-ram-role`).
    Static { access_key_id: String, access_key_secret: Secret, security_token: Option<Secret> },
    /// The instance's RAM role from the metadata service.
    EcsRamRole { role_name: Option<String>, imdsv1_disabled: bool },
    /// RRSA: a service-account token file exchanged with AssumeRoleWithOIDC.
    Oidc { role_arn: String, provider_arn: String, token_file: PathBuf },
    /// A profile of the SDK credentials file (`access_key` or `sts`), re-read on every fetch.
    /// `profile_file: None` means `ALIBABA_CLOUD_CREDENTIALS_FILE`, else `~/.alibabacloud/credentials`.
    Profile { profile_file: Option<PathBuf>, profile_name: String },
}

/// Cache knobs (see the `[cache]` table in the README).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Upper bound on cached registry credentials.
    pub capacity: u64,
    /// Fraction of an entry's lifetime after which it is refreshed in the background.
    pub refresh_fraction: f64,
    /// Random spread added to the refresh point, as a fraction of the lifetime (±).
    pub refresh_jitter: f64,
    /// Subtracted from every upstream expiry (capped at 10 % of the lifetime).
    pub expiry_margin: Duration,
    /// A credential is served only while at least this much is left (capped at 25 % of its lifetime).
    pub min_remaining: Duration,
    /// How long a terminal denial is remembered.
    pub negative_ttl: Duration,
    /// Keys unused this long are dropped.
    pub idle: Duration,
    /// DurationSeconds asked of STS for each hop.
    pub session_duration: Duration,
    /// How long "this instance owns that custom domain" is trusted (a "does not own" answer
    /// follows `negative_ttl`), so binding or unbinding a domain is seen within minutes.
    pub domain_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: DEFAULT_CACHE_CAPACITY,
            refresh_fraction: 0.5,
            refresh_jitter: 0.1,
            expiry_margin: Duration::from_secs(60),
            min_remaining: Duration::from_secs(120),
            negative_ttl: Duration::from_secs(30),
            idle: Duration::from_secs(3600),
            session_duration: Duration::from_secs(3600),
            domain_ttl: Duration::from_secs(300),
        }
    }
}

/// Upstream budget knobs (see the `[upstream]` table in the README).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Sustained STS calls per second from this node.
    pub sts_rate_per_second: f64,
    /// STS calls allowed in a burst.
    pub sts_burst: u32,
    /// Sustained ACR API calls (ListInstance, ListInstanceEndpoint, GetAuthorizationToken) per second.
    pub acr_rate_per_second: f64,
    /// ACR API calls allowed in a burst.
    pub acr_burst: u32,
    /// Upstream calls (all APIs) in flight at once.
    pub max_concurrent: usize,
    /// Attempts per upstream call, the first included.
    pub max_attempts: u32,
    /// First backoff step; doubles per attempt, full jitter.
    pub backoff_base: Duration,
    /// Largest backoff step.
    pub backoff_max: Duration,
    /// Timeout of one cloud API call.
    pub api_timeout: Duration,
    /// Timeout of one metadata call.
    pub metadata_timeout: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            sts_rate_per_second: 10.0,
            sts_burst: 20,
            acr_rate_per_second: 20.0,
            acr_burst: 40,
            max_concurrent: 128,
            max_attempts: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            api_timeout: Duration::from_secs(5),
            metadata_timeout: Duration::from_secs(1),
        }
    }
}

/// Listener and access settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Unix socket of the API.
    pub socket: PathBuf,
    /// File mode of the socket.
    pub socket_mode: u32,
    /// Group owning the socket (name or number); `None` leaves the process group.
    pub socket_group: Option<String>,
    /// Optional loopback TCP listener for the API.
    pub listen: Option<std::net::SocketAddr>,
    /// Metrics and health listener: loopback by default; any address when configured explicitly
    /// (it serves only `/metrics`, `/healthz` and `/readyz`, never a credential).
    pub metrics: Option<std::net::SocketAddr>,
    /// Peer uids allowed on the socket (root is always allowed).
    pub allowed_uids: Vec<u32>,
    /// Peer gids allowed on the socket.
    pub allowed_gids: Vec<u32>,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Time allowed to send request headers.
    pub header_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: 0o660,
            socket_group: None,
            listen: None,
            metrics: DEFAULT_METRICS.parse().ok(),
            allowed_uids: vec![0],
            allowed_gids: Vec::new(),
            max_connections: 1024,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Cloud endpoints and region.
#[derive(Debug, Clone, PartialEq)]
pub struct AliyunConfig {
    /// The node's region: the default for instance ids without a region prefix.
    pub region: Region,
    /// STS base URL (a `{region}` placeholder is filled with `region`).
    pub sts_endpoint: String,
    /// ACR endpoint template with `{region}`.
    pub cr_endpoint: String,
    /// Metadata service base URL.
    pub metadata_endpoint: String,
    /// Public or VPC addresses for the default STS and ACR endpoints (`network`).
    pub network: crate::aliyun::regions::Network,
    /// True when `sts_endpoint` was written in the file: the SDK's STS environment variables
    /// (`ALIBABA_CLOUD_STS_REGION`, `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`) then do not apply.
    pub sts_endpoint_explicit: bool,
    /// Extra PEM roots trusted for cloud API calls besides the compiled-in ones (`ca_file`).
    pub ca_file: Option<PathBuf>,
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listeners.
    pub server: ServerConfig,
    /// Node identity source.
    pub identity: IdentityConfig,
    /// How often an identity without an upstream expiry (access keys from a file, the
    /// environment or the config) is read again, so a rotated key takes effect.
    pub identity_reread: Duration,
    /// Endpoints and region.
    pub aliyun: AliyunConfig,
    /// Node-wide annotations, used for requests that carry none.
    pub defaults: Annotations,
    /// RRSA provider for kubelet service-account tokens.
    pub oidc_provider_arn: Option<String>,
    /// Cache knobs.
    pub cache: CacheConfig,
    /// Upstream budget.
    pub upstream: UpstreamConfig,
    /// Extra registry token realm hosts allowed besides `dockerauth*.aliyuncs.com`.
    pub allowed_realm_hosts: Vec<String>,
    /// Images warmed at boot.
    pub prefetch: Vec<String>,
    /// The loopback registry mirror for containerd (`[mirror]`); off when absent.
    pub mirror: Option<MirrorConfig>,
}

/// `[mirror]`: the loopback registry mirror that containerd's `hosts.toml` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Loopback address to listen on (`listen = "127.0.0.1:PORT"`; required, loopback only).
    pub listen: std::net::SocketAddr,
    /// Registries the mirror serves (any other `ns` is a 404 before the broker is asked) and
    /// that `acr-broker containerd-hosts` writes a `hosts.toml` for when none are named. Empty:
    /// whatever the node defaults serve.
    pub registries: Vec<String>,
    /// Time allowed for the registry to answer with headers (the body then streams without a
    /// limit). Default [`DEFAULT_MIRROR_UPSTREAM_TIMEOUT`].
    pub upstream_timeout: Duration,
}

/// Default `[mirror] upstream_timeout_seconds`: 30 s.
pub const DEFAULT_MIRROR_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    identity: RawIdentity,
    aliyun: Option<RawAliyun>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    service_account_tokens: RawSaTokens,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    registry_token: RawRegistryToken,
    #[serde(default)]
    prefetch: Vec<String>,
    mirror: Option<RawMirror>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    listen: Option<String>,
    #[serde(default)]
    registries: Vec<String>,
    upstream_timeout_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    socket_group: Option<String>,
    listen: Option<String>,
    metrics: Option<String>,
    allowed_uids: Option<Vec<u32>>,
    allowed_gids: Option<Vec<u32>>,
    max_connections: Option<usize>,
    header_timeout_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    source: Option<String>,
    access_key_id: Option<String>,
    access_key_secret: Option<Secret>,
    security_token: Option<Secret>,
    role_name: Option<String>,
    imdsv1_disabled: Option<bool>,
    role_arn: Option<String>,
    oidc_provider_arn: Option<String>,
    oidc_token_file: Option<PathBuf>,
    profile_file: Option<PathBuf>,
    profile_name: Option<String>,
    reread_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAliyun {
    region: Option<String>,
    sts_endpoint: Option<String>,
    cr_endpoint: Option<String>,
    metadata_endpoint: Option<String>,
    network: Option<String>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    acr_instance_ids: Vec<String>,
    #[serde(default)]
    acr_service_arns: Vec<String>,
    #[serde(default)]
    acr_user_arns: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSaTokens {
    oidc_provider_arn: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    capacity: Option<u64>,
    refresh_fraction: Option<f64>,
    refresh_jitter: Option<f64>,
    expiry_margin_seconds: Option<u64>,
    min_remaining_seconds: Option<u64>,
    negative_ttl_seconds: Option<u64>,
    idle_seconds: Option<u64>,
    session_duration_seconds: Option<u64>,
    domain_ttl_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    sts_rate_per_second: Option<f64>,
    sts_burst: Option<u32>,
    acr_rate_per_second: Option<f64>,
    acr_burst: Option<u32>,
    max_concurrent: Option<usize>,
    max_attempts: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    api_timeout_ms: Option<u64>,
    metadata_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRegistryToken {
    #[serde(default)]
    allowed_realm_hosts: Vec<String>,
}

/// Collects issues while validating, locating each key's line in the source.
struct Issues<'a> {
    source: &'a str,
    list: Vec<ConfigIssue>,
}

impl Issues<'_> {
    fn push(&mut self, section: &str, key: &str, message: impl Into<String>) {
        let line = line_of(self.source, section, key);
        let key = if section.is_empty() { key.to_owned() } else { format!("{section}.{key}") };
        self.list.push(ConfigIssue { line, key, message: message.into() });
    }
}

/// Finds the 1-based line of `key` inside `[section]` (or at top level when `section` is empty).
fn line_of(source: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in source.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            continue;
        }
        if current == section && t.split('=').next().map(str::trim) == Some(key) {
            return Some(i + 1);
        }
    }
    None
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            issues: vec![ConfigIssue { line: None, key: String::from("<file>"), message: format!("cannot read: {e}") }],
        })?;
        Config::from_toml(&text, &name)
    }

    /// Parses and validates TOML text; `name` labels the errors. Unknown keys, type errors and
    /// semantic problems are all reported together, in line order.
    pub fn from_toml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let (raw, structural) =
            schema::prune(text).map_err(|issue| ConfigError { source_name: name.to_owned(), issues: vec![issue] })?;
        let mut issues = Issues { source: text, list: structural };
        let config = validate(raw, &mut issues);
        match config {
            Some(c) if issues.list.is_empty() => Ok(c),
            _ => {
                let mut list = issues.list;
                list.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
                Err(ConfigError { source_name: name.to_owned(), issues: list })
            }
        }
    }
}

fn validate(raw: RawConfig, issues: &mut Issues<'_>) -> Option<Config> {
    let server = validate_server(raw.server, issues);
    let identity_reread = match raw.identity.reread_seconds {
        Some(v) => Duration::from_secs(bounded(issues, "identity", "reread_seconds", v, 30..=86_400)),
        None => DEFAULT_IDENTITY_REREAD,
    };
    let identity = validate_identity(raw.identity, issues);
    let aliyun = match raw.aliyun {
        Some(a) => validate_aliyun(a, issues),
        None => {
            issues.push("aliyun", "region", "missing: the node's region is required (e.g. region = \"cn-hangzhou\")");
            None
        }
    };
    let defaults = validate_defaults(raw.defaults, issues);
    let oidc_provider_arn = raw.service_account_tokens.oidc_provider_arn.and_then(|arn| {
        match crate::ids::OidcProviderArn::try_from(arn.as_str()) {
            Ok(_) => Some(arn),
            Err(e) => {
                issues.push("service_account_tokens", "oidc_provider_arn", e.to_string());
                None
            }
        }
    });
    let cache = validate_cache(raw.cache, issues);
    let upstream = validate_upstream(raw.upstream, issues);
    let mut allowed_realm_hosts = Vec::new();
    for h in raw.registry_token.allowed_realm_hosts {
        match crate::registry::RegistryHost::parse(&h) {
            Ok(host) => allowed_realm_hosts.push(host.as_str().to_owned()),
            Err(e) => issues.push("registry_token", "allowed_realm_hosts", format!("{h:?}: {e}")),
        }
    }
    for image in &raw.prefetch {
        if let Err(e) = crate::registry::host_from_image(image) {
            issues.push("", "prefetch", format!("{image:?}: {e}"));
        }
    }
    let mirror = raw.mirror.and_then(|m| validate_mirror(m, issues));
    if let (Some(m), Some(d), Some(a)) = (&mirror, &defaults, &aliyun) {
        // The mirror serves node defaults only: a listed registry they cannot serve is a mistake.
        for r in &m.registries {
            if let Ok(host) = crate::registry::RegistryHost::parse(r) {
                if let Err(e) = crate::policy::plan(&host, None, d, &a.region) {
                    issues.push("mirror", "registries", format!("{r:?} is not served with [defaults]: {e}"));
                }
            }
        }
    }
    Some(Config {
        mirror,
        server,
        identity: identity?,
        identity_reread,
        aliyun: aliyun?,
        defaults: defaults?,
        oidc_provider_arn,
        cache,
        upstream,
        allowed_realm_hosts,
        prefetch: raw.prefetch,
    })
}

fn validate_mirror(raw: RawMirror, issues: &mut Issues<'_>) -> Option<MirrorConfig> {
    let listen = match raw.listen.as_deref().map(str::parse::<std::net::SocketAddr>) {
        Some(Ok(a)) if a.ip().is_loopback() => Some(a),
        Some(Ok(a)) => {
            issues.push(
                "mirror",
                "listen",
                format!("{a}: only loopback addresses are allowed (e.g. \"127.0.0.1:5005\")"),
            );
            None
        }
        Some(Err(e)) => {
            let v = raw.listen.unwrap_or_default();
            issues.push("mirror", "listen", format!("{v:?}: {e} (expected host:port, e.g. \"127.0.0.1:5005\")"));
            None
        }
        None => {
            issues.push(
                "mirror",
                "listen",
                "missing: [mirror] needs listen = \"127.0.0.1:PORT\" (remove [mirror] to turn it off)",
            );
            None
        }
    };
    let mut registries = Vec::new();
    for r in raw.registries {
        match crate::registry::RegistryHost::parse(&r) {
            Ok(h) => registries.push(h.as_str().to_owned()),
            Err(e) => issues.push("mirror", "registries", format!("{r:?}: {e}")),
        }
    }
    let upstream_timeout = match raw.upstream_timeout_seconds {
        None => DEFAULT_MIRROR_UPSTREAM_TIMEOUT,
        Some(t @ 1..=600) => Duration::from_secs(t),
        Some(t) => {
            issues.push("mirror", "upstream_timeout_seconds", format!("{t}: must be 1..=600"));
            DEFAULT_MIRROR_UPSTREAM_TIMEOUT
        }
    };
    Some(MirrorConfig { listen: listen?, registries, upstream_timeout })
}

fn validate_server(raw: RawServer, issues: &mut Issues<'_>) -> ServerConfig {
    let mut s = ServerConfig::default();
    if let Some(p) = raw.socket {
        if p.is_relative() {
            issues.push("server", "socket", format!("{}: must be an absolute path", p.display()));
        }
        s.socket = p;
    }
    if let Some(m) = raw.socket_mode {
        match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o777 && mode & 0o007 == 0 => s.socket_mode = mode,
            Ok(_) => {
                issues.push("server", "socket_mode", format!("{m:?}: must not grant access to others (e.g. \"0660\")"))
            }
            Err(_) => issues.push("server", "socket_mode", format!("{m:?}: not an octal mode like \"0660\"")),
        }
    }
    s.socket_group = raw.socket_group.filter(|g| !g.is_empty());
    for (key, value, slot) in [("listen", raw.listen, &mut s.listen), ("metrics", raw.metrics, &mut s.metrics)] {
        let Some(v) = value else { continue };
        if v.is_empty() || v == "off" {
            *slot = None;
            continue;
        }
        match v.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() || key == "metrics" => *slot = Some(a),
            Ok(_) => issues.push(
                "server",
                key,
                format!("{v:?}: only loopback addresses are allowed (the API serves credentials)"),
            ),
            Err(e) => issues.push("server", key, format!("{v:?}: {e} (expected host:port)")),
        }
    }
    if let Some(u) = raw.allowed_uids {
        s.allowed_uids = u;
    }
    if let Some(g) = raw.allowed_gids {
        s.allowed_gids = g;
    }
    if let Some(n) = raw.max_connections {
        s.max_connections = bounded(issues, "server", "max_connections", n, 1..=MAX_LIMIT);
    }
    if let Some(t) = raw.header_timeout_seconds {
        s.header_timeout = Duration::from_secs(bounded(issues, "server", "header_timeout_seconds", t, 1..=300));
    }
    s
}

/// Default re-read interval of an identity without an upstream expiry: five minutes.
pub const DEFAULT_IDENTITY_REREAD: Duration = Duration::from_secs(300);

fn validate_identity(raw: RawIdentity, issues: &mut Issues<'_>) -> Option<IdentityConfig> {
    let source = raw.source.as_deref().unwrap_or("default");
    let id = match source {
        "default" => IdentityConfig::Default,
        "env" => IdentityConfig::Env,
        "static" => match (raw.access_key_id, raw.access_key_secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => IdentityConfig::Static {
                access_key_id: id,
                access_key_secret: secret,
                security_token: raw.security_token,
            },
            _ => {
                issues.push("identity", "source", "\"static\" needs access_key_id and access_key_secret");
                return None;
            }
        },
        "ecs-ram-role" => IdentityConfig::EcsRamRole {
            role_name: raw.role_name.filter(|r| !r.is_empty()),
            imdsv1_disabled: raw.imdsv1_disabled.unwrap_or(false),
        },
        "oidc" => match (raw.role_arn, raw.oidc_provider_arn, raw.oidc_token_file) {
            (Some(role_arn), Some(provider_arn), Some(token_file)) => {
                if let Err(e) = crate::ids::RoleArn::try_from(role_arn.as_str()) {
                    issues.push("identity", "role_arn", e.to_string());
                }
                if let Err(e) = crate::ids::OidcProviderArn::try_from(provider_arn.as_str()) {
                    issues.push("identity", "oidc_provider_arn", e.to_string());
                }
                IdentityConfig::Oidc { role_arn, provider_arn, token_file }
            }
            _ => {
                issues.push("identity", "source", "\"oidc\" needs role_arn, oidc_provider_arn and oidc_token_file");
                return None;
            }
        },
        "profile" => {
            if let Some(p) = raw.profile_file.as_ref().filter(|p| p.is_relative()) {
                issues.push("identity", "profile_file", format!("{}: must be an absolute path", p.display()));
            }
            let profile_name = raw.profile_name.unwrap_or_else(|| crate::aliyun::identity::DEFAULT_PROFILE.to_owned());
            if let Err(e) = crate::aliyun::identity::validate_profile_name(&profile_name) {
                issues.push("identity", "profile_name", e);
            }
            // The daemon refuses a credentials file others may read on every fetch: say so now.
            if let Some(e) = raw.profile_file.as_deref().and_then(crate::aliyun::identity::profile_file_problem) {
                issues.push("identity", "profile_file", e);
            }
            IdentityConfig::Profile { profile_file: raw.profile_file, profile_name }
        }
        other => {
            issues.push(
                "identity",
                "source",
                format!("{other:?}: expected one of default, env, static, ecs-ram-role, oidc, profile"),
            );
            return None;
        }
    };
    Some(id)
}

fn validate_defaults(raw: RawDefaults, issues: &mut Issues<'_>) -> Option<Annotations> {
    let joined: BTreeMap<&str, String> = [
        ("k8s.aliyun.com/acr-instance-ids", raw.acr_instance_ids.join(",")),
        ("k8s.aliyun.com/acr-service-arns", raw.acr_service_arns.join(",")),
        ("k8s.aliyun.com/acr-user-arns", raw.acr_user_arns.join(",")),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    match Annotations::from_map(joined.iter().map(|(k, v)| (*k, v.as_str()))) {
        Ok(Some(a)) if !a.user_arns.is_empty() && a.service_arns.is_empty() => {
            issues.push(
                "defaults",
                "acr_user_arns",
                "user roles need acr_service_arns to assume them from (identity -> service role -> user role)",
            );
            None
        }
        Ok(Some(a)) => Some(a),
        Ok(None) => Some(Annotations::default()),
        Err(e) => {
            // Name the config key (and so find its line), not the annotation it stands for.
            let key = match &e {
                crate::policy::PolicyError::InvalidAnnotation { key, .. } => key.trim_start_matches("k8s.aliyun.com/"),
                _ => "acr_user_arns",
            };
            issues.push("defaults", &key.replace('-', "_"), e.to_string());
            None
        }
    }
}

/// Reports `value` when it is outside `range` (naming the key and the range) and returns it
/// clamped, so every duration and size reaches its consumer within what that consumer accepts.
fn bounded<T>(issues: &mut Issues<'_>, section: &str, key: &str, value: T, range: std::ops::RangeInclusive<T>) -> T
where
    T: PartialOrd + Copy + std::fmt::Display,
{
    let (lo, hi) = (*range.start(), *range.end());
    if !(value >= lo && value <= hi) {
        issues.push(section, key, format!("{value}: must be {lo}..={hi}"));
    }
    use std::cmp::Ordering::{Greater, Less};
    match (value.partial_cmp(&lo), value.partial_cmp(&hi)) {
        // NaN compares to nothing: take the lower bound.
        (None, _) | (_, None) | (Some(Less), _) => lo,
        (_, Some(Greater)) => hi,
        _ => value,
    }
}

/// Largest cache capacity: ten million keys (about 12 GiB of credentials; far beyond a node).
const MAX_CAPACITY: u64 = 10_000_000;
/// Longest idle time and the longest lookup lifetimes: one week.
const MAX_IDLE_SECONDS: u64 = 7 * 86_400;

fn validate_cache(raw: RawCache, issues: &mut Issues<'_>) -> CacheConfig {
    let mut c = CacheConfig::default();
    let secs = Duration::from_secs;
    if let Some(v) = raw.capacity {
        c.capacity = bounded(issues, "cache", "capacity", v, 1..=MAX_CAPACITY);
    }
    if let Some(f) = raw.refresh_fraction {
        c.refresh_fraction = bounded(issues, "cache", "refresh_fraction", f, 0.1..=0.9);
    }
    if let Some(j) = raw.refresh_jitter {
        c.refresh_jitter = bounded(issues, "cache", "refresh_jitter", j, 0.0..=0.3);
    }
    if let Some(v) = raw.expiry_margin_seconds {
        c.expiry_margin = secs(bounded(issues, "cache", "expiry_margin_seconds", v, 0..=3600));
    }
    if let Some(v) = raw.min_remaining_seconds {
        c.min_remaining = secs(bounded(issues, "cache", "min_remaining_seconds", v, 0..=3600));
    }
    if let Some(v) = raw.negative_ttl_seconds {
        c.negative_ttl = secs(bounded(issues, "cache", "negative_ttl_seconds", v, 1..=3600));
    }
    if let Some(v) = raw.idle_seconds {
        c.idle = secs(bounded(issues, "cache", "idle_seconds", v, 60..=MAX_IDLE_SECONDS));
    }
    if let Some(v) = raw.session_duration_seconds {
        c.session_duration = secs(bounded(issues, "cache", "session_duration_seconds", v, 900..=43200));
    }
    if let Some(v) = raw.domain_ttl_seconds {
        c.domain_ttl = secs(bounded(issues, "cache", "domain_ttl_seconds", v, 10..=3600));
    }
    c
}

fn validate_upstream(raw: RawUpstream, issues: &mut Issues<'_>) -> UpstreamConfig {
    let mut u = UpstreamConfig::default();
    let ms = Duration::from_millis;
    if let Some(r) = raw.sts_rate_per_second {
        u.sts_rate_per_second = bounded(issues, "upstream", "sts_rate_per_second", r, 0.01..=1000.0);
    }
    if let Some(b) = raw.sts_burst {
        u.sts_burst = bounded(issues, "upstream", "sts_burst", b, 1..=10_000);
    }
    if let Some(r) = raw.acr_rate_per_second {
        u.acr_rate_per_second = bounded(issues, "upstream", "acr_rate_per_second", r, 0.01..=1000.0);
    }
    if let Some(b) = raw.acr_burst {
        u.acr_burst = bounded(issues, "upstream", "acr_burst", b, 1..=10_000);
    }
    if let Some(m) = raw.max_concurrent {
        u.max_concurrent = bounded(issues, "upstream", "max_concurrent", m, 1..=MAX_LIMIT);
    }
    if let Some(a) = raw.max_attempts {
        u.max_attempts = bounded(issues, "upstream", "max_attempts", a, 1..=10);
    }
    if let Some(v) = raw.backoff_base_ms {
        u.backoff_base = ms(bounded(issues, "upstream", "backoff_base_ms", v, 1..=10_000));
    }
    if let Some(v) = raw.backoff_max_ms {
        u.backoff_max = ms(bounded(issues, "upstream", "backoff_max_ms", v, 1..=120_000));
    }
    if let Some(v) = raw.api_timeout_ms {
        u.api_timeout = ms(bounded(issues, "upstream", "api_timeout_ms", v, 100..=120_000));
    }
    if let Some(v) = raw.metadata_timeout_ms {
        u.metadata_timeout = ms(bounded(issues, "upstream", "metadata_timeout_ms", v, 100..=60_000));
    }
    u
}

mod aliyun;
mod schema;

use aliyun::validate_aliyun;

#[cfg(test)]
mod tests;
