//! Typed, layered configuration: defaults, then a TOML file, then `AUTH_BROKER__SECTION__KEY`
//! environment variables. Parsed and validated once at start-up and passed down; no globals.
//!
//! Secrets never appear inline: they are given as a hash (`sha256:<hex>`), or as a reference
//! to an environment variable (`*_env`) or a file (`*_file`) holding the plain value, which is
//! hashed on load and then dropped. Unknown keys are rejected, and every problem names its key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The file looked for when neither `--config` nor `AUTH_BROKER_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "config/auth-broker.toml";
/// Prefix of environment overrides; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "AUTH_BROKER__";
/// The org created by the embedded default when the config declares none.
pub const BOOTSTRAP_ORG: &str = "default";
/// PostgreSQL connections kept open while idle when `storage.min_connections` is unset: a
/// deactivation and the reactivation after it use five at once.
pub const DEFAULT_IDLE_CONNECTIONS: u32 = 8;

/// The whole configuration tree; see `config/example.toml` for every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listener and request limits.
    pub server: ServerConfig,
    /// System of record and local data directory.
    pub storage: StorageConfig,
    /// SCIM service-provider limits.
    pub scim: ScimConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Vault key ring (sealing of stored tokens).
    pub vault: VaultConfig,
    /// The broker as authorization server (tokens it mints).
    pub broker: BrokerConfig,
    /// The background repair of projections that disagree with the system of record.
    pub reconciler: ReconcilerConfig,
    /// Upstream connectors' background work: token renewal and revocation delivery.
    pub upstream: UpstreamSettings,
    /// Tenants keyed by org id (used in URLs, e.g. `/scim/v2/{org}`).
    pub orgs: BTreeMap<String, OrgConfig>,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Externally visible base URL (for SCIM `meta.location`); derived from `listen` when unset.
    pub public_url: Option<String>,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Per-request time limit in seconds.
    pub request_timeout_secs: u64,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Sign-ins one org may start within a login's lifetime (10 minutes); beyond it
    /// `GET /auth/{org}/login` answers 429. Bounds the state anonymous requests can store.
    pub max_pending_logins: u64,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory for the embedded database and generated material.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; unset means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Connection pool size (SQLite always uses one writer connection).
    pub max_connections: u32,
    /// PostgreSQL connections kept open while idle, so that a burst of SCIM writes or an
    /// offboarding does not wait for new connections (each costs a TLS handshake and a server
    /// process start: ~90 ms measured on a local server). Unset: 8, or the pool size if smaller.
    pub min_connections: Option<u32>,
    /// How long a request waits for a database connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// `redis://…` (standalone), `redis+sentinel://s1:p1,s2:p2/<master>` (Sentinel) or
    /// `redis+cluster://h1:p1,h2:p2` (Cluster) for the token vault and cross-replica events;
    /// unset means the in-process vault (single replica only).
    pub redis_url: Option<String>,
    /// Time limit of every vault call; beyond it the call fails closed with 503.
    pub redis_timeout_ms: u64,
    /// Replicas that must hold a revocation (or projection) before it answers, so a master's
    /// crash cannot bring tokens back; unset: 1 behind Sentinel, none otherwise (with Cluster,
    /// set it when the masters have replicas).
    pub redis_wait_replicas: Option<u32>,
}

/// `[vault]`: the AES-256-GCM key ring that seals stored tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Id of the key that seals new records (the others only open old ones).
    pub active_key: Option<String>,
    /// Keys by id; each a base64 32-byte key (`auth-broker keys generate`) from env or file.
    /// Empty: the embedded default keeps a generated key in `data_dir/vault.key`.
    pub keys: BTreeMap<String, SecretRef>,
}

/// A secret given by reference: an environment variable or a file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretRef {
    /// Environment variable holding the secret.
    pub env: Option<String>,
    /// File holding the secret.
    pub file: Option<PathBuf>,
}

/// `[broker]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// The base of every org's issuer: tokens of org `o` carry `iss` = `{issuer}/orgs/o`.
    /// Defaults to the public URL.
    pub issuer: Option<String>,
    /// Default lifetime of minted access tokens (a connector may override it).
    pub token_ttl_secs: u64,
    /// A cached token closer than this to expiry is re-minted instead of served.
    pub refresh_margin_secs: u64,
    /// Each org's signing key is replaced once it has signed for this long (checked at
    /// start-up and at every reload); the old key stays published in the JWKS until every
    /// token it signed has expired.
    pub signing_key_max_age_days: u64,
    /// A new signing key is published this long before it signs, so that every replica (and
    /// every JWKS cache) has it first.
    pub signing_key_publish_lead_secs: u64,
    /// How often each replica reloads the signing keys from the database (well below the
    /// lead).
    pub signing_key_poll_interval_ms: u64,
}

impl SecretRef {
    /// Reads the referenced secret; the problem names `key`.
    pub fn read(&self, key: &str) -> Result<SecretString, ConfigProblem> {
        match (&self.env, &self.file) {
            (Some(var), None) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
                _ => Err(problem(
                    format!("{key}.env"),
                    format!("environment variable {var} is unset or empty"),
                )),
            },
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
                _ => Err(problem(
                    format!("{key}.file"),
                    format!("{} is unreadable or empty", path.display()),
                )),
            },
            _ => Err(problem(key, "give exactly one of env or file")),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            token_ttl_secs: 900,
            refresh_margin_secs: 60,
            signing_key_max_age_days: 30,
            signing_key_publish_lead_secs: 600,
            signing_key_poll_interval_ms: 10_000,
        }
    }
}

/// `[reconciler]`: every replica follows the directory's event outbox and sweeps the
/// projections, repairing any that disagrees with the system of record (a revocation that a
/// fault interrupted and nobody retried).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcilerConfig {
    /// How often the directory events written since the last pass are followed up.
    pub events_interval_ms: u64,
    /// How often every user's projection is compared with the system of record.
    pub sweep_interval_secs: u64,
}

/// `[upstream]`: the background work behind upstream connectors, on every replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// How often the refresher renews upstream tokens that are due (milliseconds; 0: never,
    /// vends then refresh on read).
    pub refresher_interval_ms: u64,
    /// How often queued upstream revocations are delivered (milliseconds, at least 100).
    pub revocation_interval_ms: u64,
    /// Calls per second to any one upstream (its origin), from every replica sharing the
    /// vault's Redis together; 0 turns the budget off.
    pub rate_per_second: f64,
    /// Calls that may go at once to one upstream after a quiet spell.
    pub rate_burst: u32,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            refresher_interval_ms: 1000,
            revocation_interval_ms: 1000,
            rate_per_second: 20.0,
            rate_burst: 40,
        }
    }
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            events_interval_ms: 2000,
            sweep_interval_secs: 300,
        }
    }
}

/// `[scim]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScimConfig {
    /// Upper bound on `count` (advertised as `filter.maxResults`).
    pub max_results: u32,
    /// Page size when the client sends no `count`.
    pub default_count: u32,
    /// Most resources a filter that cannot use an index may examine; beyond it, 400 `tooMany`.
    pub max_filter_scan: u32,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (one object per line) or `pretty`.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `auth_broker=debug,info`.
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Machine-readable, one JSON object per line.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// `[orgs.<id>]`: one tenant and its credentials.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrgConfig {
    /// Human-readable name.
    pub display_name: Option<String>,
    /// Accepted SCIM bearer tokens, as `sha256:<hex>` (several allow rotation).
    pub scim_token_hashes: Vec<String>,
    /// Environment variable holding a plain SCIM token.
    pub scim_token_env: Option<String>,
    /// File holding a plain SCIM token.
    pub scim_token_file: Option<PathBuf>,
    /// Accepted admin API keys, as `sha256:<hex>`.
    pub admin_key_hashes: Vec<String>,
    /// Environment variable holding a plain admin key.
    pub admin_key_env: Option<String>,
    /// File holding a plain admin key.
    pub admin_key_file: Option<PathBuf>,
    /// Accepted gateway keys, as `sha256:<hex>`.
    pub gateway_key_hashes: Vec<String>,
    /// Environment variable holding a plain gateway key.
    pub gateway_key_env: Option<String>,
    /// File holding a plain gateway key.
    pub gateway_key_file: Option<PathBuf>,
    /// Connectors declared in config (GitOps), by id.
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// Grants declared in config.
    pub grants: Vec<GrantConfig>,
    /// How the org's people sign in to the broker.
    #[serde(default)]
    pub sign_in: Option<SignInConfig>,
}

/// `[orgs.<org>.connectors.<id>]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Human-readable name (defaults to the id).
    #[serde(default)]
    pub display_name: Option<String>,
    /// `broker_jwt`, `id_jag`, `token_exchange` or `authorization_code`.
    pub strategy: crate::domain::connector::Strategy,
    /// `aud` of the tokens minted for it.
    pub audience: String,
    /// The most scopes any grant may give.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Tool name → `read` | `write` | `delete`.
    #[serde(default)]
    pub tools: BTreeMap<String, crate::domain::connector::Category>,
    /// Ceiling per category (default: all `allow`).
    #[serde(default)]
    pub default_actions: Option<crate::domain::connector::ActionSet>,
    /// A disabled connector grants nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Token lifetime override, seconds.
    #[serde(default)]
    pub token_ttl_secs: Option<u64>,
    /// The connector's own authorization server (`[orgs.<org>.connectors.<id>.upstream]`);
    /// its client secret comes from `client_secret_env`.
    #[serde(default)]
    pub upstream: Option<crate::domain::upstream::UpstreamInput>,
}

fn yes() -> bool {
    true
}

/// `[[orgs.<org>.grants]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// Stable id (default: derived from group and connector).
    #[serde(default)]
    pub id: Option<String>,
    /// Group by display name.
    #[serde(default)]
    pub group: Option<String>,
    /// Group by SCIM id.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Connector id.
    pub connector: String,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Action per tool category.
    pub actions: crate::domain::connector::ActionSet,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 20,
            max_pending_logins: 10_000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            max_connections: 16,
            min_connections: None,
            acquire_timeout_ms: 2000,
            redis_url: None,
            redis_timeout_ms: 150,
            redis_wait_replicas: None,
        }
    }
}

impl Default for ScimConfig {
    fn default() -> Self {
        Self {
            max_results: 1000,
            default_count: 100,
            max_filter_scan: 50_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file was read.
    File(PathBuf),
    /// No file anywhere: the embedded default (defaults + environment only).
    Embedded,
}

/// A configuration problem, naming the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `orgs.acme.scim_token_env`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into the typed tree.
    #[error("{0}")]
    Parse(String),
    /// The tree parsed but failed validation.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

/// Overrides from the command line, applied after every other layer.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
}

/// Finds the config file: `--config`, then `AUTH_BROKER_CONFIG`, then `config/auth-broker.toml`.
pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(ConfigError::Parse(format!(
                "config file {} does not exist",
                p.display()
            )));
        }
        return Ok(Some(p.to_path_buf()));
    }
    if let Ok(p) = std::env::var("AUTH_BROKER_CONFIG")
        && !p.is_empty()
    {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(ConfigError::Parse(format!(
                "AUTH_BROKER_CONFIG names {} which does not exist",
                p.display()
            )));
        }
        return Ok(Some(p));
    }
    let default = PathBuf::from(DEFAULT_CONFIG_PATH);
    Ok(default.is_file().then_some(default))
}

/// Loads defaults, the located TOML file and the environment, applies CLI overrides, validates.
pub fn load(
    explicit: Option<&Path>,
    overrides: &CliOverrides,
) -> Result<(Config, ConfigSource), ConfigError> {
    let path = locate(explicit)?;
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(p) = &path {
        figment = figment.merge(Toml::file_exact(p));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    let mut config: Config = figment
        .extract()
        .map_err(|e| ConfigError::Parse(render_figment(e)))?;
    if let Some(l) = &overrides.listen {
        config.server.listen = l.clone();
    }
    if let Some(d) = &overrides.data_dir {
        config.storage.data_dir = d.clone();
    }
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let source = path
        .map(ConfigSource::File)
        .unwrap_or(ConfigSource::Embedded);
    Ok((config, source))
}

/// Keys earlier releases accepted, with what replaced them: a config that still sets one is
/// refused with this message rather than the generic "unknown field".
const REMOVED_KEYS: &[(&str, &str)] = &[
    (
        "server.io_threads",
        "the broker serves with axum on tokio's multi-thread runtime, one thread per CPU",
    ),
    (
        "server.pin_io_threads",
        "the broker no longer pins threads to CPUs",
    ),
    (
        "server.io_thread_nice",
        "the broker no longer sets thread priorities; use `nice` or the service manager",
    ),
];

fn render_figment(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                e.path.join(".")
            };
            if let figment::error::Kind::UnknownField(field, _) = &e.kind {
                let full = if key.is_empty() || key.ends_with(field.as_str()) {
                    key.clone()
                } else {
                    format!("{key}.{field}")
                };
                if let Some((k, why)) = REMOVED_KEYS.iter().find(|(k, _)| *k == full) {
                    return format!("{k}: this key was removed ({why}); delete it");
                }
            }
            let msg = e.kind.to_string();
            let origin = e
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            if key.is_empty() {
                format!("{msg} ({origin})")
            } else {
                format!("{key}: {msg} ({origin})")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.into(),
        message: message.into(),
    }
}

pub use crate::domain::valid_org_id;

impl Config {
    /// PostgreSQL connections the pool keeps open while idle: as configured, else
    /// [`DEFAULT_IDLE_CONNECTIONS`] or the pool size if smaller.
    pub fn idle_connections(&self) -> u32 {
        self.storage
            .min_connections
            .unwrap_or(DEFAULT_IDLE_CONNECTIONS)
            .min(self.storage.max_connections)
    }

    /// The database URL in force: the configured one, or SQLite inside `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.storage.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.storage.data_dir.join("auth-broker.db").display()
            ),
        }
    }

    /// The base URL clients see, for `meta.location` and discovery documents.
    pub fn public_url(&self, bound: Option<SocketAddr>) -> String {
        match &self.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!(
                "http://{}",
                bound
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| self.server.listen.clone())
            ),
        }
    }
}

mod orgs;
mod sign_in;
mod validate;

pub use orgs::OrgSpec;
pub use sign_in::{
    GroupsSource, OIDC_ALGORITHMS, OidcConfig, SAML_ALGORITHMS, SamlConfig, SignInConfig,
    read_secret,
};

#[cfg(test)]
mod tests;
