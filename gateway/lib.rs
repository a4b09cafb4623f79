//! Hookgate: a self-hosted webhook delivery gateway in one process.
//!
//! Read `ARCHITECTURE.md` first: it opens with the layers below (imports only go down them,
//! `tests/tidy.rs` checks it) and a reading order. Every module, by layer:
//!
//! - HTTP surface: `http` (the router).
//! - Handlers: `api` (`events`, `log`, `endpoints`, `tenants`, `admin`, and the shared `state`
//!   and `error`).
//! - Services: `ingest` (a validated event becomes a committed one), `dispatch` (the only module
//!   that knows the stage order: due → prepare → sign → deliver → record), `tenants`
//!   (tenants, tokens, quotas), `live` (the running config
//!   and its reload), `retention`, `workbench` (`hookgate plugin run|new`), `listen` (`hookgate
//!   listen`).
//! - Domain and storage: `store` (redb or PostgreSQL; the only module that imports `redb` or
//!   `tokio_postgres`; group commit; leases between nodes), `plugin` (the only module that
//!   imports `wasmtime`), `deliver` (the only outbound HTTP; SSRF guard), `health` (circuits,
//!   pauses, rate limits), `registry` (the live endpoints), `events` (building events),
//!   `operations` (Hookgate's own events), `telemetry` (OpenTelemetry traces),
//!   `fanout` (who receives an event), `metrics`, `serve` (the inbound server and its limits).
//! - Pure leaves: `sign`, `json` (strict parser, canonical writer), `retry`, `clock`, `seal`,
//!   `config` (TOML → validated `Config`), `endpoint` (what an endpoint is), `model` (records),
//!   `tally` (the charts' buckets).
//!
//! The entry point is [`run`]: it takes a bound listener, a validated config and a shutdown
//! future, so tests run the real gateway on `127.0.0.1:0` in-process.

#![deny(unsafe_code)]

pub mod api;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod dispatch;
pub mod endpoint;
pub mod events;
pub mod fanout;
pub mod health;
pub mod http;
pub mod ingest;
pub mod json;
pub mod listen;
pub mod live;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod operations;
pub mod plugin;
pub mod registry;
pub mod retention;
pub mod retry;
pub mod schemas;
pub mod seal;
pub mod serve;
pub mod sign;
pub mod store;
pub mod tally;
pub mod telemetry;
pub mod tenants;
pub mod workbench;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// How long shutdown waits for the store's writer to commit its last batch.
const WRITER_JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What tests may swap in: the clock, and the store's fault switches. `Hooks::default()` is
/// production: the system clock and no faults.
#[derive(Clone)]
pub struct Hooks {
    pub clock: clock::SharedClock,
    pub faults: Arc<store::Faults>,
    /// The scheduler's wake-up: a test that moves a manual clock notifies it so the
    /// dispatcher looks at the due index again.
    pub wake: Arc<Notify>,
    /// `serve --watch`: how often to look at the config file and the plugins for changes.
    pub watch: Option<std::time::Duration>,
    /// PostgreSQL: apply the embedded migrations at start (`serve` without `--no-migrate`).
    pub migrate: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { clock: clock::system(), faults: Arc::default(), wake: Arc::default(), watch: None, migrate: true }
    }
}

/// Runs the gateway on `listener` until `shutdown` resolves, then shuts down in order: stop
/// accepting and let in-flight requests finish (each commits before it answers), stop
/// scheduling, give in-flight attempts `server.shutdown_grace`, let the store commit its last
/// batch, return.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(config, listener, shutdown, Hooks::default()).await
}

/// [`run`] with test hooks.
pub async fn run_with(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    hooks: Hooks,
) -> anyhow::Result<()> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let plugins = load_plugins(&config).await?;
    let live = Arc::new(live::Live::new(live::Generation::new(1, config.clone(), plugins)?));
    let (store, writer) = open_store(&config, &hooks).await?;
    let stop = CancellationToken::new();
    // On a shared database, other nodes announce new due work and changed settings; this node
    // listens for both.
    let settings_changed = Arc::new(Notify::new());
    let listener_task =
        store.postgres().map(|pg| pg.spawn_listener(hooks.wake.clone(), settings_changed.clone(), stop.clone()));
    let telemetry = match telemetry::Settings::resolve(&config.telemetry, &|name| std::env::var(name).ok())
        .map_err(|e| anyhow::anyhow!("telemetry: {e}"))?
    {
        Some(settings) => telemetry::Telemetry::start(&settings).map_err(|e| anyhow::anyhow!("telemetry: {e}"))?,
        None => telemetry::Telemetry::off(),
    };
    let state = services(&config, live, store.clone(), &hooks, telemetry.clone()).await?;
    let background = Background::spawn(&state, &config, &hooks, settings_changed, &stop);
    let connections = state.connections.clone();
    let endpoint_count = state.endpoints.snapshot().len();
    let app = http::router(state);
    tracing::info!(listen = %listener.local_addr()?, endpoints = endpoint_count, "hookgate is serving");
    let stop_server = stop.clone();
    let limits = serve::Limits {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        request_body_timeout: config.server.request_body_timeout,
        keep_alive_timeout: config.server.keep_alive_timeout,
    };
    let served = serve::serve(listener, app, limits, connections, async move {
        tokio::select! {
            () = shutdown => {}
            () = stop_server.cancelled() => {}
        }
    })
    .await;
    stop.cancel();
    let dispatched = background.join().await;
    telemetry.shutdown(Duration::from_secs(5)).await;
    if let Some(t) = listener_task {
        let _ = t.await;
    }
    drop(store);
    let joined = tokio::time::timeout(WRITER_JOIN_TIMEOUT, writer.finish()).await;
    if joined.is_err() {
        tracing::error!("the store writer did not finish in time");
    }
    served?;
    dispatched?;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the configured store. Secrets stored through the API are sealed under
/// `[signing] main_key` from here on, and those still in clear are sealed now.
async fn open_store(config: &Config, hooks: &Hooks) -> anyhow::Result<(store::Store, store::WriterThread)> {
    let (store, writer) = store::Store::open_configured(store::OpenOptions {
        storage: &config.storage,
        data_dir: &config.server.data_dir,
        cache_bytes: config.server.cache_size,
        faults: hooks.faults.clone(),
        migrate: hooks.migrate,
    })
    .await?;
    store.set_main_key(config.signing.main_key.clone());
    let sealed = store.seal_stored(None).await?;
    if sealed > 0 {
        tracing::info!(records = sealed, "sealed stored secrets under [signing] main_key");
    }
    Ok((store, writer))
}

/// Every service of the gateway, built from the config and what the store holds, as the
/// handlers see them.
async fn services(
    config: &Config,
    live: Arc<live::Live>,
    store: store::Store,
    hooks: &Hooks,
    telemetry: telemetry::Telemetry,
) -> anyhow::Result<api::AppState> {
    let registry = Arc::new(registry::Registry::new(&config.endpoints, store.endpoints().await?));
    store.set_idempotency_ttl(config.retention.idempotency);
    let metrics = Arc::new(metrics::Metrics::default());
    let health =
        Arc::new(health::HealthBook::new(health::Policy::from_config(&config.delivery), store.health_records().await?));
    let tenants = Arc::new(tenants::Tenants::new(config, store.tenants().await?, store.tokens().await?));
    let reloader = Arc::new(live::Reloader {
        path: config.source.clone(),
        live: live.clone(),
        registry: registry.clone(),
        health: health.clone(),
        tenants: tenants.clone(),
        store: store.clone(),
        clock: hooks.clock.clone(),
        lock: tokio::sync::Mutex::new(()),
    });
    let dispatcher = dispatch::Dispatcher::new(dispatch::Parts {
        live: live.clone(),
        store: store.clone(),
        endpoints: registry.clone(),
        metrics: metrics.clone(),
        wake: hooks.wake.clone(),
        clock: hooks.clock.clone(),
        health: health.clone(),
        tenants: tenants.clone(),
        telemetry: telemetry.clone(),
    })?;
    let ingest = Arc::new(ingest::Ingest {
        store: store.clone(),
        registry: registry.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        wake: hooks.wake.clone(),
        clock: hooks.clock.clone(),
        telemetry: telemetry.clone(),
    });
    Ok(api::AppState {
        live,
        reloader,
        schemas: Arc::new(schemas::Schemas::new(store.clone())),
        store,
        wake: hooks.wake.clone(),
        endpoints: registry,
        dispatcher,
        metrics,
        clock: hooks.clock.clone(),
        connections: Arc::default(),
        health,
        tenants,
        ingest,
        telemetry,
        openapi: Arc::from(""),
    })
}

/// The tasks that run beside the HTTP server until `stop`: the scheduler, retention, config
/// reloads and (on PostgreSQL) the refresh of settings other nodes changed.
struct Background {
    scheduler: tokio::task::JoinHandle<anyhow::Result<()>>,
    others: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn spawn(
        st: &api::AppState,
        config: &Config,
        hooks: &Hooks,
        settings_changed: Arc<Notify>,
        stop: &CancellationToken,
    ) -> Background {
        let scheduler = {
            let (d, stop) = (st.dispatcher.clone(), stop.clone());
            tokio::spawn(async move { d.run(stop).await })
        };
        let mut others = vec![
            tokio::spawn(retention::run(
                st.store.clone(),
                config.retention.clone(),
                hooks.clock.clone(),
                st.metrics.clone(),
                stop.clone(),
            )),
            tokio::spawn(live::watch_for_reloads(st.reloader.clone(), hooks.watch, stop.clone())),
        ];
        if st.store.postgres().is_some() {
            others.push(tokio::spawn(refresh_settings(
                settings_changed,
                st.store.clone(),
                st.live.clone(),
                st.endpoints.clone(),
                st.tenants.clone(),
                stop.clone(),
            )));
        }
        Background { scheduler, others }
    }

    /// Waits for every task (after `stop`); the scheduler's own error, if it failed.
    async fn join(self) -> anyhow::Result<()> {
        let dispatched = self.scheduler.await;
        for t in self.others {
            let _ = t.await;
        }
        dispatched?
    }
}

/// Several nodes on one database: when another node announces changed endpoints, tenants or
/// tokens (created through its API), reload this node's copies from the store. A read that
/// fails is retried at the next announcement or reconnect.
async fn refresh_settings(
    changed: Arc<Notify>,
    store: store::Store,
    live: Arc<live::Live>,
    registry: Arc<registry::Registry>,
    tenants: Arc<tenants::Tenants>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = changed.notified() => {}
        }
        let read = async {
            Ok::<_, store::StoreError>((store.endpoints().await?, store.tenants().await?, store.tokens().await?))
        };
        match read.await {
            Ok((endpoints, stored_tenants, tokens)) => {
                registry.replace_api_endpoints(&live.config().endpoints, endpoints);
                tenants.replace_stored(stored_tenants, tokens);
                tracing::debug!("reloaded endpoints, tenants and tokens changed by another node");
            }
            Err(e) => tracing::warn!(error = %e, "cannot reload endpoints and tenants changed by another node"),
        }
    }
}

/// `hookgate rotate-main-key`: re-seals every stored secret under `new`, opening those sealed
/// under the config's `[signing] main_key` (and sealing those in clear). The gateway must be
/// stopped (every node, on PostgreSQL): a node still running with the old key could not read
/// what this writes. Returns how many records were written.
pub async fn rotate_main_key(config: &Config, new: seal::MainKey) -> anyhow::Result<usize> {
    let (store, writer) = store::Store::open_configured(store::OpenOptions {
        storage: &config.storage,
        data_dir: &config.server.data_dir,
        cache_bytes: config.server.cache_size,
        faults: Arc::default(),
        migrate: false,
    })
    .await?;
    let old = config.signing.main_key.clone();
    // Everything stored must open with the old key first: refuse before writing anything.
    store.set_main_key(old.clone());
    store.tenants().await?;
    store.endpoints().await?;
    store.set_main_key(Some(new));
    let written = store.seal_stored(old.as_ref()).await;
    drop(store);
    writer.finish().await;
    Ok(written?)
}

/// Compiles (or loads from the cache) every configured plugin, off the async runtime: Cranelift
/// takes a while on a cold cache.
pub async fn load_plugins(config: &Arc<Config>) -> anyhow::Result<Option<Arc<plugin::PluginHost>>> {
    if config.plugins.is_empty() {
        return Ok(None);
    }
    let c = config.clone();
    let host = tokio::task::spawn_blocking(move || plugin::PluginHost::load(&c.plugins, &c.server.data_dir)).await??;
    Ok(Some(Arc::new(host)))
}
