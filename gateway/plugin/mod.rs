//! Plugins: user WebAssembly components that filter or transform deliveries.
//!
//! Owns: the only `wasmtime` import, the engine and its pooling allocator, the epoch ticker that
//! enforces deadlines, the memory limiter, the deny-all WASI context, and running a chain of
//! plugins over one delivery.
//! Must not touch: the store, HTTP or signing. `dispatch` hands it an envelope and gets back a
//! [`ChainOutcome`]; what happens next is dispatch's business.
//!
//! Lifetimes, wasmtime's `examples/fast_instantiation` way: one `Engine` and one `Linker` for
//! the process; each component compiled once (or loaded from the cache) and pre-instantiated
//! (`PluginPre`); every call gets a fresh `Store` and instance from the pooling allocator, so no
//! state leaks from one delivery to the next and a trap poisons nothing.
//!
//! Calls are synchronous CPU work bounded by the plugin's deadline. [`PluginHost::run_chain`]
//! runs them on tokio's blocking pool behind a semaphore, so a looping plugin costs one
//! blocking thread for at most its deadline and never stalls the async runtime.

mod bindings;
pub mod cache;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub use cache::Source;

use crate::config::{MAX_PLUGIN_MEMORY, OnError, PluginConfig};
use crate::json;

/// Granularity of plugin deadlines: the epoch ticker advances the engine's epoch this often.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Plugin calls running at once. Each holds a pooling-allocator slot and a blocking thread;
/// the pool is sized from this number, so the semaphore guarantees a slot is always free.
pub const MAX_CONCURRENT_CALLS: usize = 16;

/// How much of a plugin's stderr is kept per call (a panic message fits comfortably).
const STDERR_CAPACITY: usize = 4096;

/// Longest plugin log line forwarded to the gateway's log.
const LOG_MESSAGE_LIMIT: usize = 2048;

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    #[error("ran past its {0:?} deadline")]
    Deadline(Duration),
    #[error("exceeded its memory limit of {0} bytes")]
    Memory(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Rejected(String),
    #[error("returned an invalid body: {0}")]
    InvalidOutput(String),
}

/// A plugin that cannot be loaded, named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plugin {plugin:?}: {message}")]
pub struct LoadError {
    pub plugin: String,
    pub message: String,
}

/// One plugin's answer, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Keep,
    Drop(String),
    /// The replacement body, canonical JSON of an object.
    Replace(String),
}

/// What a chain decided for one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainOutcome {
    /// Deliver; `body` is the transformed body, or `None` to send the envelope as is.
    Deliver {
        body: Option<String>,
    },
    Filtered {
        plugin: String,
        reason: String,
    },
    Failed {
        plugin: String,
        message: String,
    },
}

/// The delivery a chain runs over.
#[derive(Debug, Clone)]
pub struct CallInput {
    pub trigger: String,
    pub event_id: String,
    pub endpoint_id: String,
    /// The envelope, canonical JSON.
    pub envelope: String,
    /// Transformed bodies larger than this are invalid (`server.max_body_bytes`).
    pub max_body_bytes: usize,
}

/// The loaded plugins and the machinery to call them.
pub struct PluginHost {
    engine: Engine,
    plugins: HashMap<String, Plugin>,
    permits: Arc<tokio::sync::Semaphore>,
    _ticker: EpochTicker,
}

struct Plugin {
    name: Arc<str>,
    pre: bindings::PluginPre<HostState>,
    config: Vec<(String, String)>,
    timeout: Duration,
    memory_limit: usize,
    on_error: OnError,
    source: Source,
    calls: std::sync::atomic::AtomicU64,
    failures: std::sync::atomic::AtomicU64,
}

impl PluginHost {
    /// Compiles (or loads from `data_dir/plugin-cache`) and pre-instantiates every plugin.
    /// Fails naming the first plugin that is missing, not a component, or does not fit the
    /// world.
    pub fn load(configs: &[PluginConfig], data_dir: &Path) -> Result<PluginHost, LoadError> {
        let engine = new_engine()
            .map_err(|e| LoadError { plugin: String::new(), message: format!("cannot start the Wasm engine: {e}") })?;
        let mut linker = Linker::<HostState>::new(&engine);
        let linked = wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s));
        if let Err(e) = linked {
            return Err(LoadError { plugin: String::new(), message: format!("cannot set up the plugin linker: {e}") });
        }
        let cache_dir = data_dir.join("plugin-cache");
        let mut plugins = HashMap::new();
        for c in configs {
            let fail = |message: String| LoadError { plugin: c.name.clone(), message };
            let (component, source) = cache::load(&engine, &c.path, &cache_dir).map_err(fail)?;
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(|e| fail(format!("does not fit the hookgate:plugin@0.1.0 world: {e}")))?;
            let pre = bindings::PluginPre::new(instance_pre)
                .map_err(|e| fail(format!("does not export the hookgate:plugin@0.1.0 `handle` function: {e}")))?;
            tracing::info!(plugin = %c.name, ?source, "plugin ready");
            plugins.insert(
                c.name.clone(),
                Plugin {
                    name: c.name.as_str().into(),
                    pre,
                    config: c.config.clone(),
                    timeout: c.timeout,
                    memory_limit: c.memory_limit,
                    on_error: c.on_error,
                    source,
                    calls: Default::default(),
                    failures: Default::default(),
                },
            );
        }
        let ticker = EpochTicker::start(engine.clone()).map_err(|e| LoadError {
            plugin: String::new(),
            message: format!("cannot start the epoch thread that enforces plugin deadlines: {e}"),
        })?;
        Ok(PluginHost {
            engine,
            plugins,
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS)),
            _ticker: ticker,
        })
    }

    /// Where each plugin's compiled code came from at load.
    pub fn sources(&self) -> Vec<(String, Source)> {
        let mut v: Vec<_> = self.plugins.values().map(|p| (p.name.to_string(), p.source)).collect();
        v.sort();
        v
    }

    /// (plugin, calls, failures) for every plugin, for the metrics.
    pub fn stats(&self) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = self
            .plugins
            .values()
            .map(|p| (p.name.to_string(), p.calls.load(Ordering::Relaxed), p.failures.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
    }

    /// Runs `chain` over a delivery on the blocking pool, at most [`MAX_CONCURRENT_CALLS`]
    /// chains at once.
    pub async fn run_chain(self: &Arc<Self>, chain: Vec<String>, input: CallInput) -> ChainOutcome {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return ChainOutcome::Failed { plugin: String::new(), message: "the plugin host is shut down".into() };
        };
        let host = self.clone();
        match tokio::task::spawn_blocking(move || host.run_chain_blocking(&chain, input)).await {
            Ok(outcome) => outcome,
            Err(e) => ChainOutcome::Failed { plugin: String::new(), message: format!("plugin task failed: {e}") },
        }
    }

    /// Runs `chain` in order on this thread. Each plugin sees the body the previous one produced;
    /// a drop or a failure ends the chain.
    pub fn run_chain_blocking(&self, chain: &[String], input: CallInput) -> ChainOutcome {
        let mut body = input.envelope.clone();
        let mut changed = false;
        for name in chain {
            let Some(plugin) = self.plugins.get(name) else {
                return ChainOutcome::Failed { plugin: name.clone(), message: "is not loaded".into() };
            };
            match self.call(plugin, &input, &body) {
                Ok(Decision::Keep) => {}
                Ok(Decision::Drop(reason)) => {
                    return ChainOutcome::Filtered { plugin: name.clone(), reason };
                }
                Ok(Decision::Replace(new)) => {
                    body = new;
                    changed = true;
                }
                Err(e) if plugin.on_error == OnError::Skip => {
                    tracing::warn!(plugin = %name, error = %e, "plugin failed; skipped (on_error = \"skip\")");
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "plugin failed; the delivery fails");
                    return ChainOutcome::Failed { plugin: name.clone(), message: format!("plugin {name:?} {e}") };
                }
            }
        }
        ChainOutcome::Deliver { body: changed.then_some(body) }
    }

    /// Calls one plugin by name on this thread (benchmarks and tests use this directly).
    ///
    /// Blocking: call it from a plain thread or `spawn_blocking`, never from an async task (the
    /// WASI host blocks on its own I/O, which tokio forbids on a runtime thread).
    pub fn call_by_name(&self, name: &str, input: &CallInput) -> Result<Decision, PluginError> {
        let plugin =
            self.plugins.get(name).ok_or_else(|| PluginError::Rejected(format!("no plugin named {name:?}")))?;
        self.call(plugin, input, &input.envelope)
    }

    fn call(&self, p: &Plugin, input: &CallInput, envelope: &str) -> Result<Decision, PluginError> {
        p.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_inner(p, input, envelope);
        if result.is_err() {
            p.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn call_inner(&self, p: &Plugin, input: &CallInput, envelope: &str) -> Result<Decision, PluginError> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // Deny-all WASI: no preopened directories, no environment, no arguments, no sockets,
        // no name lookups. Only stderr is wired, into memory, so panic messages reach our log.
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limits { memory: p.memory_limit, exceeded: false },
            plugin: p.name.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(ticks(p.timeout));
        store.epoch_deadline_trap();
        let delivery = bindings::Delivery {
            trigger: input.trigger.clone(),
            event_id: input.event_id.clone(),
            endpoint_id: input.endpoint_id.clone(),
            envelope: envelope.to_owned(),
            config: p.config.clone(),
        };
        let result = p.pre.instantiate(&mut store).and_then(|instance| instance.call_handle(&mut store, &delivery));
        let written = stderr.contents();
        let stderr_text = String::from_utf8_lossy(&written).trim_end().to_owned();
        if !stderr_text.is_empty() {
            tracing::warn!(plugin = %p.name, stderr = %stderr_text, "plugin wrote to stderr");
        }
        match result {
            Ok(Ok(decision)) => validate(decision, input.max_body_bytes),
            Ok(Err(message)) => Err(PluginError::Rejected(message)),
            Err(e) => Err(if store.data().limits.exceeded {
                PluginError::Memory(p.memory_limit)
            } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                PluginError::Deadline(p.timeout)
            } else {
                let what = match e.downcast_ref::<Trap>() {
                    Some(trap) => trap.to_string(),
                    None => e.to_string(),
                };
                // A Rust guest's panic message goes to stderr just before the trap; it is the
                // most useful part of the error, so it travels with it to the delivery log.
                PluginError::Trap(if stderr_text.is_empty() {
                    what
                } else {
                    format!("{what}; stderr: {}", truncate(&stderr_text, 500))
                })
            }),
        }
    }
}

/// Checks a plugin's decision: a replacement must be a JSON object within the body limit; it is
/// canonicalised so it is signed like any body.
fn validate(d: bindings::Decision, max_body_bytes: usize) -> Result<Decision, PluginError> {
    match d {
        bindings::Decision::Keep => Ok(Decision::Keep),
        bindings::Decision::Drop(reason) => Ok(Decision::Drop(reason)),
        bindings::Decision::Replace(body) => {
            if body.len() > max_body_bytes {
                return Err(PluginError::InvalidOutput(format!(
                    "{} bytes is over server.max_body_bytes ({max_body_bytes})",
                    body.len()
                )));
            }
            let value = json::parse(body.as_bytes()).map_err(|e| PluginError::InvalidOutput(e.message))?;
            if value.as_object().is_none() {
                return Err(PluginError::InvalidOutput(format!("it must be a JSON object, not {}", value.kind())));
            }
            Ok(Decision::Replace(value.to_canonical()))
        }
    }
}

/// At most `limit` bytes of `text`, cut at a character boundary, with an ellipsis if cut.
fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn ticks(timeout: Duration) -> u64 {
    // One extra tick: the deadline may land just after a tick, and must never be shorter
    // than configured.
    (timeout.as_micros() / EPOCH_TICK.as_micros()) as u64 + 1
}

fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let n = MAX_CONCURRENT_CALLS as u32;
    let mut pool = PoolingAllocationConfig::default();
    // Sized from MAX_CONCURRENT_CALLS with room for the few core instances, memories and
    // tables a component made by wit-bindgen and wasm-component-ld contains.
    pool.total_component_instances(n)
        .total_core_instances(n * 16)
        .total_memories(n * 2)
        .total_tables(n * 16)
        .max_memory_size(MAX_PLUGIN_MEMORY);
    // Recycling an instance slot is the dominant cost of a call: resetting memory with
    // `madvise` makes the next call page-fault its stack and heap back in (and costs TLB
    // shoot-downs). With Linux's PAGEMAP_SCAN, wasmtime resets only the pages a call dirtied,
    // in place, so a generous keep-resident window is cheap: this took a filter call from about
    // 50 µs to about 13 µs here (benches/plugins.rs). Without it, a large window would mean a
    // large memset per call, so older kernels keep a small one.
    if pagemap_scan_supported() {
        pool.pagemap_scan(wasmtime::Enabled::Yes).linear_memory_keep_resident(4 << 20).table_keep_resident(1 << 20);
    } else {
        pool.linear_memory_keep_resident(64 << 10).table_keep_resident(64 << 10);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Whether the kernel has the PAGEMAP_SCAN ioctl (Linux 6.7 and later).
fn pagemap_scan_supported() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 7)
}

/// Everything one call's `Store` holds.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    plugin: Arc<str>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::hookgate::plugin::types::Host for HostState {}

impl bindings::hookgate::plugin::host::Host for HostState {
    fn log(&mut self, level: bindings::Level, message: String) {
        let message = truncate(&message, LOG_MESSAGE_LIMIT);
        let plugin = &*self.plugin;
        match level {
            bindings::Level::Trace => tracing::trace!(plugin, "{message}"),
            bindings::Level::Debug => tracing::debug!(plugin, "{message}"),
            bindings::Level::Info => tracing::info!(plugin, "{message}"),
            bindings::Level::Warn => tracing::warn!(plugin, "{message}"),
            bindings::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// The memory cap. Refusing a `memory.grow` (instead of trapping) lets a guest that handles
/// allocation failure carry on; `exceeded` tells us afterwards why a guest that did not
/// handle it trapped.
struct Limits {
    memory: usize,
    exceeded: bool,
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 16)
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own, until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("hookgate-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
