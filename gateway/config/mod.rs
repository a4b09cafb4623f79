//! The configuration file: TOML in, a validated [`Config`] out.
//!
//! Owns: the user-facing key names, their defaults (`config/default.toml`, embedded as the base
//! layer), `${ENV_VAR}` substitution and every validation rule, with errors that name the key and
//! the line.
//! Must not touch: sockets, the store or the network. Loading is a pure function of the file's
//! text, its location and an environment lookup, so tests never mutate the process environment.
//!
//! Two levels, as in ripgrep's `LowArgs` → `HiArgs`: the `Raw*` structs mirror the TOML with
//! every value `Spanned` (so errors can point at a line), then `Config::from_raw` turns them
//! into typed values. Only `Config` leaves this module. The raw layer lives in `config/raw.rs`,
//! the rules' tests in `config/tests.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::endpoint::EndpointSpec;
use crate::retry::RetryPolicy;
use crate::sign::Secret;

/// The embedded base layer. Every key a user may set is in this file with its default.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

pub use crate::endpoint::{
    Endpoint, Origin, RESERVED_FIELDS, Triggers, valid_endpoint_id, valid_trigger, validate_url,
};

/// A validated configuration. Built once at startup and shared as an `Arc`.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub signing: SigningConfig,
    pub delivery: DeliveryConfig,
    pub retention: RetentionConfig,
    /// `[storage]`: redb (the default) or a PostgreSQL database shared by several nodes.
    pub storage: StorageConfig,
    /// `[operations] endpoint`: the endpoint that receives Hookgate's own events.
    pub operations_endpoint: Option<String>,
    /// `[event_types] validate`: payloads of event types with a JSON Schema are checked against
    /// it at ingest (422 naming the path).
    pub validate_event_schemas: bool,
    /// `[telemetry]`: where traces go (each value, when set, over its `OTEL_*` variable).
    pub telemetry: TelemetryConfig,
    /// `[[tenants]]`; the `default` tenant is implicit.
    pub tenants: Vec<TenantConfig>,
    /// `[tenants_defaults]`: quotas of tenants that do not set their own.
    pub tenant_defaults: TenantLimits,
    pub endpoints: Vec<Endpoint>,
    pub plugins: Vec<PluginConfig>,
    /// Plugin chains per trigger, run for every endpoint of that trigger, before the
    /// endpoint's own chain.
    pub trigger_plugins: std::collections::BTreeMap<String, Vec<String>>,
    /// Things that are allowed but probably not meant; `check` prints them, `serve` logs them.
    pub warnings: Vec<String>,
    /// The file this was loaded from (what a reload reads again); `None` for parsed text.
    pub source: Option<PathBuf>,
}

impl Config {
    /// The plugins that run for a delivery of `trigger` to `endpoint`, in order.
    pub fn chain(&self, trigger: &str, endpoint: &Endpoint) -> Vec<String> {
        let mut chain = self.trigger_plugins.get(trigger).cloned().unwrap_or_default();
        chain.extend(endpoint.plugins.iter().cloned());
        chain
    }
}

/// A `[[plugins]]` entry: a WebAssembly component and how to run it.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    /// Absolute, or relative to the config file's folder, resolved at load time.
    pub path: PathBuf,
    /// The `config` table, as key/value text pairs in key order.
    pub config: Vec<(String, String)>,
    pub on_error: OnError,
    /// Hard deadline of one call.
    pub timeout: Duration,
    /// Cap on the plugin's linear memory, in bytes.
    pub memory_limit: usize,
    /// Calls of this plugin that may run at once. Each plugin has its own share of the pool,
    /// so a plugin that loops to its deadline only ever queues its own calls.
    pub concurrency: usize,
}

/// What a plugin failure does to the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The delivery fails with error kind `plugin`; no HTTP attempt is made.
    Fail,
    /// The delivery proceeds as if the plugin were absent.
    Skip,
}

/// Default per-call deadline of a plugin.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(50);
/// Calls of one plugin that may run at once, unless its `concurrency` says otherwise.
pub const DEFAULT_PLUGIN_CONCURRENCY: usize = 4;
/// Default memory cap of a plugin.
pub const DEFAULT_PLUGIN_MEMORY: usize = 32 << 20;
/// The largest memory cap a plugin may be given.
pub const MAX_PLUGIN_MEMORY: usize = 4 << 30;

/// Parses a size such as `32MiB`, `512KiB`, `1GiB`, `64MB` or a plain number of bytes.
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let n: usize = t[..digits].parse().ok()?;
    let unit = match t[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Whether a plugin name is well formed: 1-64 characters of `[a-z0-9_-]`.
pub fn valid_plugin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
}

/// How `serve` writes its log: lines for people, or one JSON object per line for shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format; use \"text\" or \"json\"")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How `serve` writes its log (`[server] log_format`).
    pub log_format: LogFormat,
    /// The base of portal links (`https://hooks.example.com`); `None`: the request's `Host`.
    pub public_url: Option<url::Url>,
    pub listen: SocketAddr,
    /// Absolute, or relative to the config file's folder, resolved at load time.
    pub data_dir: PathBuf,
    /// Larger ingest bodies are refused with 413 before they are parsed.
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight attempts before leaving them to the next start.
    pub shutdown_grace: Duration,
    /// Bytes of database pages kept in memory. Bounded, so a large store or backlog costs disk,
    /// not RAM.
    pub cache_size: usize,
    /// Inbound connections open at once; past it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A request head (and an idle keep-alive connection's wait for one) must arrive within this.
    pub header_read_timeout: Duration,
    /// A request body must arrive within this (408 otherwise).
    pub request_body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub keep_alive_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub ingest_tokens: Vec<Token>,
    pub admin_tokens: Vec<Token>,
}

/// A bearer token. `Debug` hides it so a token cannot reach a log line by accident.
#[derive(Clone)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct SigningConfig {
    pub secret: Secret,
    pub previous_secrets: Vec<Secret>,
    /// After a tenant's secret is rotated through the API, the old one keeps signing this long.
    pub rotation_overlap: Duration,
    /// Seals the secrets stored through the API (`None`: stored in clear).
    pub main_key: Option<crate::seal::MainKey>,
}

/// A `[[tenants]]` entry.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: String,
    pub name: Option<String>,
    /// JSON text of the `metadata` table.
    pub metadata: Option<String>,
    pub secret: Secret,
    /// As written, for the fingerprint.
    pub secret_text: String,
    pub previous_secrets: Vec<Secret>,
    pub limits: TenantLimits,
}

/// Per-tenant quotas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    pub max_endpoints: usize,
    /// Ingest rate; `None`: unlimited.
    pub max_events_per_second: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Bounds a whole attempt: connect, send and reading the response.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub max_in_flight: usize,
    pub max_in_flight_per_endpoint: usize,
    /// Attempts in flight at once for any one tenant (at most `max_in_flight`), so one
    /// tenant's slow endpoints cannot take every slot.
    pub max_in_flight_per_tenant: usize,
    pub allow_http: bool,
    pub allow_private_networks: bool,
    /// Failed attempts in a row (timeouts, connect errors, 5xx, 429) that open an endpoint's
    /// circuit.
    pub breaker_failures: u32,
    /// The first open period of a circuit; it doubles with each failed probe, up to
    /// `retry.max`.
    pub breaker_cooldown: Duration,
    /// An endpoint whose attempts have all failed for this long is disabled; `None`: never.
    pub disable_after: Option<Duration>,
    /// Attempts send a W3C `traceparent` header (their span's), so receivers that trace join
    /// the event's trace.
    pub propagate_trace: bool,
    /// Which signature headers attempts carry (`attendee`, `webhook`, `svix`).
    pub signature_headers: crate::sign::HeaderSets,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP. `None` leaves the standard environment
/// variable (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER[_ARG]`)
/// in charge; tracing is off when neither names an endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// The collector's base URL (`http://collector:4318`); spans go to `{endpoint}/v1/traces`.
    pub endpoint: Option<String>,
    pub service_name: Option<String>,
    /// The share of traces kept (0 to 1), for traces that do not come with a sampled parent.
    pub sample_ratio: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Final deliveries (and, with their last delivery, events) older than this are removed.
    pub deliveries: Duration,
    /// How long an ingest `Idempotency-Key` is remembered.
    pub idempotency: Duration,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageConfig {
    /// One redb file in `server.data_dir`.
    Redb,
    Postgres(PostgresConfig),
}

/// `[storage] backend = "postgres"`.
#[derive(Clone, PartialEq)]
pub struct PostgresConfig {
    /// The libpq-style URL, validated at load time. It may hold a password: `Debug` hides it.
    pub url: String,
    /// Connections in the pool.
    pub pool: usize,
    /// How long a claimed delivery stays this node's before others may take it.
    pub lease: Duration,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("pool", &self.pool)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A configuration error, naming the file, the line (when the value came from the user's file)
/// and the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": `{}`: {}", self.key, self.message)
        }
    }
}

/// Parses a duration such as `500ms`, `10s`, `5m`, `1h`, `1d` or a sum like `1m30s` (jiff's
/// "friendly" format, which also reads `1 hour 30 mins`). Whole numbers of units only: a
/// fraction (`1.5s`) is refused as easy to misread in a config file, and so are negative
/// durations and calendar units (months, years), which have no fixed length.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.contains('.') {
        return None;
    }
    let span = jiff::fmt::friendly::SpanParser::new().parse_span(text.trim()).ok()?;
    if span.is_negative() {
        return None;
    }
    let d = span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).ok()?;
    Duration::try_from(d).ok()
}

impl Config {
    /// Reads and validates the file at `path`. `env` resolves `${NAME}` references.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::parse(&text, &path.display().to_string(), base, env)?;
        config.source = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(config)
    }

    /// Validates config text. `file` names it in errors; relative paths resolve against `base`.
    pub fn parse(
        text: &str,
        file: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let user: RawConfig = toml::from_str(text).map_err(|e| toml_error(&e, text, file))?;
        let defaults: RawConfig =
            toml::from_str(DEFAULT_TOML).map_err(|e| toml_error(&e, DEFAULT_TOML, "config/default.toml (embedded)"))?;
        let ctx = Ctx { text, file, env };
        Self::from_raw(user.over(defaults), &ctx, base)
    }

    fn from_raw(raw: RawConfig, ctx: &Ctx<'_>, base: &Path) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let server = Self::server_from_raw(raw.server.unwrap_or_default(), ctx, base)?;
        let auth = Self::auth_from_raw(raw.auth.unwrap_or_default(), ctx, &mut warnings)?;
        let signing = Self::signing_from_raw(raw.signing.unwrap_or_default(), ctx, &mut warnings)?;
        let delivery = Self::delivery_from_raw(raw.delivery.unwrap_or_default(), ctx)?;
        let retention = Self::retention_from_raw(raw.retention.unwrap_or_default(), ctx)?;
        let storage = Self::storage_from_raw(raw.storage.unwrap_or_default(), ctx)?;
        let plugins = Self::plugins_from_raw(raw.plugins.unwrap_or_default(), ctx, base)?;
        let chains = endpoints::Chains { known: plugins.iter().map(|p| p.name.clone()).collect() };
        let mut trigger_plugins = std::collections::BTreeMap::new();
        for (trigger, t) in raw.triggers.unwrap_or_default() {
            let key = format!("triggers.\"{trigger}\".plugins");
            if !valid_trigger(&trigger) {
                return Err(ctx.error(&key, ctx.line(&t), format!("{trigger:?} is not a trigger name")));
            }
            trigger_plugins.insert(trigger, chains.check(ctx, t.into_inner().plugins, &key)?);
        }
        let tenant_defaults = Self::tenant_defaults_from_raw(raw.tenants_defaults.unwrap_or_default(), ctx)?;
        let tenants = Self::tenants_from_raw(raw.tenants.unwrap_or_default(), ctx, tenant_defaults)?;
        let endpoints = endpoints::endpoints_from_raw(
            raw.endpoints.unwrap_or_default(),
            ctx,
            &tenants,
            &delivery,
            &chains,
            &mut warnings,
        )?;
        if endpoints.is_empty() {
            warnings.push("no [[endpoints]]: events will be stored but delivered nowhere".into());
        }
        let operations_endpoint = Self::operations_from_raw(raw.operations.unwrap_or_default(), ctx, &endpoints)?;
        let telemetry = Self::telemetry_from_raw(raw.telemetry.unwrap_or_default(), ctx)?;
        let validate_event_schemas =
            ctx.boolean(raw.event_types.unwrap_or_default().validate, "event_types.validate")?;
        Ok(Config {
            server,
            auth,
            signing,
            delivery,
            retention,
            storage,
            operations_endpoint,
            validate_event_schemas,
            telemetry,
            tenants,
            tenant_defaults,
            endpoints,
            plugins,
            trigger_plugins,
            warnings,
            source: None,
        })
    }
}

impl Config {
    fn storage_from_raw(s: raw::RawStorage, ctx: &Ctx<'_>) -> Result<StorageConfig, ConfigError> {
        let (line, backend) = ctx.string(s.backend, "storage.backend")?;
        match backend.as_str() {
            "redb" => Ok(StorageConfig::Redb),
            "postgres" => {
                let (url_line, url) = ctx.string(s.postgres_url, "storage.postgres_url")?;
                if url.trim().is_empty() {
                    return Err(ctx.error(
                        "storage.postgres_url",
                        url_line.or(line),
                        "is required with backend = \"postgres\" (e.g. \"${DATABASE_URL}\")".into(),
                    ));
                }
                // The parser's message never repeats the URL, so a password cannot leak here.
                if let Err(e) = postgres_url_problem(&url) {
                    return Err(ctx.error(
                        "storage.postgres_url",
                        url_line,
                        format!("is not a PostgreSQL connection URL like \"postgres://user:pass@host:5432/db\": {e}"),
                    ));
                }
                let pool = ctx.number(s.postgres_pool, "storage.postgres_pool", 2, 1000)?;
                let lease =
                    ctx.bounded_duration(s.lease, "storage.lease", Duration::from_secs(2), Duration::from_secs(3600))?;
                Ok(StorageConfig::Postgres(PostgresConfig { url, pool, lease }))
            }
            other => Err(ctx.error(
                "storage.backend",
                line,
                format!("{other:?} is not a storage backend; use \"redb\" or \"postgres\""),
            )),
        }
    }
}

mod endpoints;
mod parts;
mod raw;
mod sections;
#[cfg(test)]
mod tests;

/// Why `url` is not a PostgreSQL connection URL, checked by syntax only: the store parses it
/// again with the driver when it connects. Either a `postgres://` (or `postgresql://`) URL or a
/// `key=value` connection string. The message never repeats the URL, so a password cannot
/// reach it.
fn postgres_url_problem(url: &str) -> Result<(), String> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return match url::Url::parse(url) {
            Ok(_) => Ok(()),
            // Several hosts (`h1:5432,h2:5433`) are the driver's to read.
            Err(_) if url.split('/').nth(2).is_some_and(|authority| authority.contains(',')) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
    }
    if url.contains("://") {
        return Err("the scheme must be postgres:// or postgresql://".into());
    }
    if url.split_whitespace().all(|pair| pair.split_once('=').is_some_and(|(k, _)| !k.is_empty())) {
        Ok(())
    } else {
        Err("a connection string is `key=value` pairs separated by spaces".into())
    }
}

use raw::{Ctx, RawConfig, toml_error};
