//! The live configuration and its reload: which generation of the config file, plugins, tokens
//! and delivery client the gateway is running, and the one place that swaps them.
//!
//! Owns: [`Live`] (the current [`Generation`], read per request and per attempt as a cheap
//! `Arc`), the reload status shown by `/metrics` and `/healthz`, and [`Reloader`], which parses,
//! validates and compiles a new generation before anything changes, then applies it.
//! Must not touch: the store's records. A reload changes what the gateway does next, never what
//! it already accepted: deliveries keep their endpoint ids, and one whose endpoint is gone ends
//! `failed` with `endpoint_gone` when it comes due (unless the endpoint is back by then).
//!
//! Atomicity: the endpoints from the file change in one swap of the registry's index, so an
//! event fans out over the old set or the new one, never a mix. Plugins, tokens, signing keys,
//! the delivery policy and the HTTP client change in one swap of the generation; an attempt or
//! request already running keeps the generation it started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::{Config, ConfigError};
use crate::deliver::{Deliverer, Policy};
use crate::health::HealthBook;
pub use crate::metrics::ReloadStatus;
use crate::plugin::PluginHost;
use crate::registry::Registry;
use crate::store::Store;
use crate::tenants::{Tenants, TokenSet};

/// One version of everything the config file decides at runtime.
pub struct Generation {
    /// 1 at start, +1 per applied reload.
    pub number: u64,
    pub config: Arc<Config>,
    pub plugins: Option<Arc<PluginHost>>,
    pub ingest_tokens: TokenSet,
    pub admin_tokens: TokenSet,
    /// The HTTP client with this generation's timeout and address rules.
    pub deliverer: Deliverer,
}

impl Generation {
    pub fn new(number: u64, config: Arc<Config>, plugins: Option<Arc<PluginHost>>) -> anyhow::Result<Generation> {
        let deliverer = Deliverer::new(Policy {
            timeout: config.delivery.timeout,
            allow_http: config.delivery.allow_http,
            allow_private_networks: config.delivery.allow_private_networks,
        })?;
        Ok(Generation {
            number,
            ingest_tokens: TokenSet::new(&config.auth.ingest_tokens),
            admin_tokens: TokenSet::new(&config.auth.admin_tokens),
            config,
            plugins,
            deliverer,
        })
    }
}

/// The current generation.
pub struct Live {
    current: RwLock<Arc<Generation>>,
    status: Mutex<ReloadStatus>,
}

impl Live {
    pub fn new(first: Generation) -> Live {
        Live { current: RwLock::new(Arc::new(first)), status: Mutex::default() }
    }

    /// The generation to use for one request or one attempt.
    pub fn get(&self) -> Arc<Generation> {
        self.current.read().expect("live lock").clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.get().config.clone()
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().expect("status lock").clone()
    }

    fn swap(&self, next: Generation) {
        *self.current.write().expect("live lock") = Arc::new(next);
    }

    fn record(&self, at_ms: u64, error: Option<String>) {
        *self.status.lock().expect("status lock") = ReloadStatus { at_ms: Some(at_ms), error };
    }
}

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Plugin(#[from] crate::plugin::LoadError),
    #[error("the gateway was not started from a config file, so there is nothing to reload")]
    NoFile,
    #[error("{0}")]
    Other(String),
}

/// What a reload applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub generation: u64,
    /// Keys whose new values wait for a restart; everything else is applied.
    pub restart_required: Vec<&'static str>,
    pub endpoints: usize,
    pub plugins: usize,
}

/// Everything a reload touches besides [`Live`].
pub struct Reloader {
    pub path: Option<PathBuf>,
    pub live: Arc<Live>,
    pub registry: Arc<Registry>,
    pub health: Arc<HealthBook>,
    pub tenants: Arc<Tenants>,
    pub store: Store,
    pub clock: crate::clock::SharedClock,
    /// One reload at a time: a second waits for the first and then reads the file again.
    pub lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reads the file again, validates it and compiles every plugin; only then applies it. On
    /// any error nothing changes, the error is logged and returned.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.lock.lock().await;
        let now = self.clock.now_ms();
        let result = self.prepare_and_apply().await;
        match &result {
            Ok(r) => {
                self.live.record(now, None);
                tracing::info!(
                    generation = r.generation,
                    endpoints = r.endpoints,
                    plugins = r.plugins,
                    restart_required = ?r.restart_required,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.live.record(now, Some(e.to_string()));
                tracing::error!(error = %e, "configuration reload failed; still running the previous one");
            }
        }
        result
    }

    async fn prepare_and_apply(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.path.clone().ok_or(ReloadError::NoFile)?;
        let old = self.live.get();
        let config = tokio::task::spawn_blocking(move || Config::load(&path, &|n| std::env::var(n).ok()))
            .await
            .map_err(|e| ReloadError::Other(e.to_string()))??;
        let config = Arc::new(config);
        // The new plugins compile into the old data dir's cache: data_dir itself needs a restart.
        let plugins = if config.plugins.is_empty() {
            None
        } else {
            let (c, dir) = (config.clone(), old.config.server.data_dir.clone());
            let host = tokio::task::spawn_blocking(move || PluginHost::load(&c.plugins, &dir))
                .await
                .map_err(|e| ReloadError::Other(e.to_string()))??;
            Some(Arc::new(host))
        };
        let restart_required = restart_required(&old.config, &config);
        let next = Generation::new(old.number + 1, config.clone(), plugins)
            .map_err(|e| ReloadError::Other(format!("{e:#}")))?;

        // Everything is ready; apply. Endpoints first (one swap), then the generation.
        self.registry.replace_config_endpoints(&config.endpoints);
        self.health.set_policy(crate::health::Policy::from_config(&config.delivery));
        // A tenant gone from the file takes its tokens with it; deleting the stored ones may
        // fail (the store is down): they are revoked here already, and the next reload or
        // start (which loads no tokens of tenants that are not there) tries again.
        for token in self.tenants.apply_config(&config) {
            if let Err(e) = self.store.delete_token(token.clone()).await {
                tracing::warn!(token_id = %token, error = %e, "cannot delete a removed tenant's token from the store");
            }
        }
        self.store.set_idempotency_ttl(config.retention.idempotency);
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let report = ReloadReport {
            generation: next.number,
            restart_required,
            endpoints: config.endpoints.len(),
            plugins: config.plugins.len(),
        };
        self.live.swap(next);
        Ok(report)
    }
}

/// The keys that differ between `old` and `new` but only take effect at a restart: the listener,
/// the data dir and what is sized once at start.
fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let key_id = |c: &Config| c.signing.main_key.as_ref().map(|k| k.id().to_owned());
    let checks: [(&'static str, bool); 13] = [
        ("server.listen", o.listen != n.listen),
        ("server.data_dir", o.data_dir != n.data_dir),
        ("server.cache_size", o.cache_size != n.cache_size),
        ("server.max_connections", o.max_connections != n.max_connections),
        ("server.header_read_timeout", o.header_read_timeout != n.header_read_timeout),
        ("server.keep_alive_timeout", o.keep_alive_timeout != n.keep_alive_timeout),
        ("server.log_format", o.log_format != n.log_format),
        ("delivery.max_in_flight", old.delivery.max_in_flight != new.delivery.max_in_flight),
        (
            "delivery.max_in_flight_per_endpoint",
            old.delivery.max_in_flight_per_endpoint != new.delivery.max_in_flight_per_endpoint,
        ),
        (
            "delivery.max_in_flight_per_tenant",
            old.delivery.max_in_flight_per_tenant != new.delivery.max_in_flight_per_tenant,
        ),
        ("retention.deliveries", old.retention.deliveries != new.retention.deliveries),
        ("storage", old.storage != new.storage),
        // Stored secrets are re-sealed under a new key by `hookgate rotate-main-key`, offline.
        ("signing.main_key", key_id(old) != key_id(new)),
    ];
    checks.into_iter().filter(|(_, differs)| *differs).map(|(k, _)| k).collect()
}

/// The config file and the plugin components `serve --watch` looks at, with their modification
/// times and sizes; a reload is due when this changes.
pub fn fingerprint(path: &Path, config: &Config) -> Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)> {
    std::iter::once(path.to_path_buf())
        .chain(config.plugins.iter().map(|p| p.path.clone()))
        .map(|p| {
            let meta = std::fs::metadata(&p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, meta)
        })
        .collect()
}

/// Reloads on `SIGHUP` (when the gateway runs from a file) and, with `watch`, when the config
/// file or a plugin's component changes, until `stop`.
pub async fn watch_for_reloads(
    reloader: Arc<Reloader>,
    watch: Option<std::time::Duration>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(path) = reloader.path.clone() else { return };
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the API instead");
            None
        }
    };
    let mut seen = fingerprint(&path, &reloader.live.config());
    let mut tick = tokio::time::interval(watch.unwrap_or(std::time::Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        tokio::select! {
            () = stop.cancelled() => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reloader.reload().await;
            }
            _ = tick.tick(), if watch.is_some() => {
                let now = fingerprint(&path, &reloader.live.config());
                if now != seen {
                    tracing::info!("the config file or a plugin changed: reloading");
                    let _ = reloader.reload().await;
                    // Whatever the outcome, wait for the next change rather than retrying a bad
                    // file in a loop.
                    seen = fingerprint(&path, &reloader.live.config());
                }
            }
        }
    }
}
