//! The sandbox one plugin call runs in: the engine and its pooling allocator, the epoch ticker,
//! the per-call store state (deny-all WASI, memory cap, bounded resource table, bounded log).
//!
//! Owns: every limit a guest meets, and what a guest can observe of the host.
//! Must not touch: chains, decisions or the cache (`plugin::mod` and `plugin::cache`).
//!
//! What a plugin can observe, the same for every language (a Rust, JavaScript or Python guest all
//! reach the host through WASI 0.2 and `host.log` only):
//! - the wall clock and the monotonic clock, and random bytes. They are harmless, and useful for
//!   sampling ("keep 1% of transcripts") and for timestamps in a transformed body;
//! - nothing else: no files, no environment, no arguments, no sockets, no name lookups, an empty
//!   stdin, stdout discarded, stderr captured (at most [`STDERR_CAPACITY`] bytes) into the log.
//!
//! A guest may sleep or wait on a pollable, but every host call is asynchronous and the whole
//! call runs under a tokio deadline, so waiting inside the host cannot outlast the plugin's
//! `timeout`. Code that spins is stopped by epoch interruption; between ticks it yields to the
//! runtime, so a spinning guest shares a worker thread instead of owning it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::{MemoryOutputPipe, SinkOutputStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings;
use crate::config::MAX_PLUGIN_MEMORY;

/// Granularity of plugin deadlines: the epoch ticker advances the engine's epoch this often, and
/// a running guest yields to the async runtime at every tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How much of a plugin's stderr is kept per call (a panic message fits comfortably).
pub const STDERR_CAPACITY: usize = 4096;

/// Longest `host.log` message kept; longer ones are cut.
pub const LOG_MESSAGE_LIMIT: usize = 2048;
/// `host.log` lines one call may write; the rest are counted and dropped.
pub const LOG_LINES_PER_CALL: usize = 64;
/// `host.log` bytes one call may write; the rest are counted and dropped.
pub const LOG_BYTES_PER_CALL: usize = 16 << 10;

/// Host-side resources (streams, pollables) one call may hold at once. A guest needs a handful;
/// the cap keeps a guest that creates them in a loop from growing host memory outside its
/// `memory_limit`.
pub const RESOURCES_PER_CALL: usize = 1024;

/// Everything one call's `Store` holds.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: Limits,
    pub log: LogBook,
}

impl HostState {
    pub fn new(plugin: Arc<str>, memory: usize, stderr: MemoryOutputPipe, capture: bool) -> HostState {
        // Deny-all WASI: no preopened directories, no environment, no arguments, no sockets,
        // no name lookups. Stdout goes nowhere; stderr is kept in memory, so panic messages reach
        // our log. Clocks and randomness are WASI's defaults (see the module header).
        let wasi = WasiCtxBuilder::new()
            .stdout(SinkOutputStream)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCES_PER_CALL);
        HostState {
            wasi,
            table,
            limits: Limits { memory, peak: 0, exceeded: false },
            log: LogBook { plugin, lines: 0, bytes: 0, dropped: 0, captured: capture.then(Vec::new) },
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// One call's `host.log` lines: forwarded to the gateway's log within the per-call budget, and
/// kept for the workbench when it asks.
pub struct LogBook {
    plugin: Arc<str>,
    lines: usize,
    bytes: usize,
    /// Lines over the budget, not written anywhere.
    pub dropped: u64,
    /// Every kept line, when the caller asked for them (`hookgate plugin run`).
    pub captured: Option<Vec<(String, String)>>,
}

impl LogBook {
    fn write(&mut self, level: bindings::Level, message: String) {
        let message = super::truncate(&message, LOG_MESSAGE_LIMIT);
        if self.lines >= LOG_LINES_PER_CALL || self.bytes + message.len() > LOG_BYTES_PER_CALL {
            self.dropped += 1;
            return;
        }
        self.lines += 1;
        self.bytes += message.len();
        let plugin = &*self.plugin;
        let name = match level {
            bindings::Level::Trace => "trace",
            bindings::Level::Debug => "debug",
            bindings::Level::Info => "info",
            bindings::Level::Warn => "warn",
            bindings::Level::Error => "error",
        };
        match level {
            bindings::Level::Trace => tracing::trace!(plugin, "{message}"),
            bindings::Level::Debug => tracing::debug!(plugin, "{message}"),
            bindings::Level::Info => tracing::info!(plugin, "{message}"),
            bindings::Level::Warn => tracing::warn!(plugin, "{message}"),
            bindings::Level::Error => tracing::error!(plugin, "{message}"),
        }
        if let Some(c) = &mut self.captured {
            c.push((name.to_owned(), message));
        }
    }
}

impl bindings::hookgate::plugin::types::Host for HostState {}

impl bindings::hookgate::plugin::host::Host for HostState {
    fn log(&mut self, level: bindings::Level, message: String) {
        self.log.write(level, message);
    }
}

/// The memory cap. Refusing a `memory.grow` (instead of trapping) lets a guest that handles
/// allocation failure carry on; `exceeded` tells us afterwards why a guest that did not
/// handle it trapped. `peak` is the largest memory the call asked for, for the workbench.
pub struct Limits {
    memory: usize,
    pub peak: usize,
    pub exceeded: bool,
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.exceeded = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 16)
    }
}

/// A store for one call: memory cap, and an epoch callback that yields at every tick and stops
/// the guest once `timeout` has passed since `started`.
pub fn store(engine: &Engine, state: HostState, timeout: Duration) -> Store<HostState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    let started = Instant::now();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if started.elapsed() >= timeout {
            Ok(UpdateDeadline::Interrupt)
        } else {
            // tokio's own yield puts the call behind every task that is ready, HTTP requests
            // included, so a spinning guest gives up its worker for a turn at every tick.
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
        }
    });
    store
}

/// The process's engine: component model, epoch interruption, and a pooling allocator sized for
/// `slots` calls at once.
pub fn engine(slots: u32) -> wasmtime::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::default();
    // Room for the core instances, memories and tables of the components each toolchain makes:
    // a Rust component has a few, a componentize-py one about a dozen.
    pool.total_component_instances(slots)
        .total_core_instances(slots * 32)
        .total_memories(slots * 4)
        .total_tables(slots * 32)
        .total_stacks(slots)
        .max_memory_size(MAX_PLUGIN_MEMORY);
    // Recycling an instance slot is the dominant cost of a call: resetting memory with
    // `madvise` makes the next call page-fault its stack and heap back in (and costs TLB
    // shoot-downs). With Linux's PAGEMAP_SCAN, wasmtime resets only the pages a call dirtied,
    // in place, so a generous keep-resident window is cheap: this took a filter call from about
    // 50 µs to about 13 µs here (benches/plugins.rs). Without it, a large window would mean a
    // large memset per call, so older kernels keep a small one.
    if pagemap_scan_supported() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(16 << 10)
            .async_stack_keep_resident(64 << 10);
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

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own, until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> std::io::Result<EpochTicker> {
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
