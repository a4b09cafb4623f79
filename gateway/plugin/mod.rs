//! Plugins: user WebAssembly components that filter or transform deliveries.
//!
//! Owns: the only `wasmtime` import (with `sandbox` and `cache`), loading plugins, the per-plugin
//! call shares, and running a chain of plugins over one delivery.
//! Must not touch: the store, HTTP or signing. `dispatch` hands it an envelope and gets back a
//! [`ChainOutcome`]; what happens next is dispatch's business.
//!
//! Lifetimes, wasmtime's `examples/fast_instantiation` way: one `Engine` and one `Linker` per
//! host; each component compiled once (or loaded from the cache) and pre-instantiated
//! (`PluginPre`); every call gets a fresh `Store` and instance from the pooling allocator, so no
//! state leaks from one delivery to the next and a trap poisons nothing.
//!
//! Calls run on the async runtime (the limits are in `sandbox`): a guest yields at every epoch
//! tick, waits inside the host are asynchronous, and the call's future is dropped at its
//! deadline, so no guest holds a thread past its `timeout`, sleeping or spinning. Each plugin has
//! its own share of concurrent calls (`concurrency`): a plugin that misbehaves queues only its
//! own calls, and another plugin's call waits behind it for at most the CPU it shares.

mod bindings;
pub mod cache;
mod sandbox;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub use cache::Source;
use sandbox::{EpochTicker, HostState, STDERR_CAPACITY};
pub use sandbox::{LOG_BYTES_PER_CALL, LOG_LINES_PER_CALL, RESOURCES_PER_CALL};

use crate::config::{OnError, PluginConfig};
use crate::json;

/// Longest `drop` reason or `err` message kept: it is stored with the delivery and served by
/// the API, so it is capped like a log line.
pub const REASON_LIMIT: usize = 1024;

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

impl Decision {
    /// `keep`, `drop` or `replace`, as traces and reports name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Keep => "keep",
            Decision::Drop(_) => "drop",
            Decision::Replace(_) => "replace",
        }
    }
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

/// What one call did, for the workbench (`hookgate plugin run`).
#[derive(Debug, Clone)]
pub struct CallReport {
    pub plugin: String,
    pub result: Result<Decision, PluginError>,
    /// Whether a failure was skipped (`on_error = "skip"`).
    pub skipped: bool,
    pub elapsed: Duration,
    /// The largest linear memory the call asked for, in bytes.
    pub peak_memory: usize,
    /// `host.log` lines as (level, message), then stderr as one `stderr` line.
    pub log: Vec<(String, String)>,
    pub log_dropped: u64,
}

/// The loaded plugins and the machinery to call them.
pub struct PluginHost {
    engine: Engine,
    plugins: HashMap<String, Plugin>,
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
    /// This plugin's share of the pool: its calls wait here, never behind another plugin's.
    permits: tokio::sync::Semaphore,
    calls: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    log_dropped: AtomicU64,
}

/// Per-plugin counters, for the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginStats {
    pub plugin: String,
    pub calls: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub log_dropped: u64,
}

impl PluginHost {
    /// Compiles (or loads from `data_dir/plugin-cache`) and pre-instantiates every plugin.
    /// Fails naming the first plugin that is missing, not a component, or does not fit the
    /// world. Blocking: Cranelift may run for seconds.
    pub fn load(configs: &[PluginConfig], data_dir: &Path) -> Result<PluginHost, LoadError> {
        let slots: usize = configs.iter().map(|c| c.concurrency).sum::<usize>().max(1);
        let engine = sandbox::engine(slots as u32)
            .map_err(|e| LoadError { plugin: String::new(), message: format!("cannot start the Wasm engine: {e}") })?;
        let mut linker = Linker::<HostState>::new(&engine);
        let linked = wasmtime_wasi::p2::add_to_linker_async(&mut linker)
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
                .map_err(|e| fail(format!("does not fit the hookgate:plugin@0.1.0 world: {e:#}")))?;
            let pre = bindings::PluginPre::new(instance_pre)
                .map_err(|e| fail(format!("does not export the hookgate:plugin@0.1.0 `handle` function: {e:#}")))?;
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
                    permits: tokio::sync::Semaphore::new(c.concurrency),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    timeouts: AtomicU64::new(0),
                    log_dropped: AtomicU64::new(0),
                },
            );
        }
        let ticker = EpochTicker::start(engine.clone()).map_err(|e| LoadError {
            plugin: String::new(),
            message: format!("cannot start the epoch thread that enforces plugin deadlines: {e}"),
        })?;
        Ok(PluginHost { engine, plugins, _ticker: ticker })
    }

    /// Where each plugin's compiled code came from at load.
    pub fn sources(&self) -> Vec<(String, Source)> {
        let mut v: Vec<_> = self.plugins.values().map(|p| (p.name.to_string(), p.source)).collect();
        v.sort();
        v
    }

    /// Counters for every plugin, by name.
    pub fn stats(&self) -> Vec<PluginStats> {
        let mut v: Vec<_> = self
            .plugins
            .values()
            .map(|p| PluginStats {
                plugin: p.name.to_string(),
                calls: p.calls.load(Ordering::Relaxed),
                failures: p.failures.load(Ordering::Relaxed),
                timeouts: p.timeouts.load(Ordering::Relaxed),
                log_dropped: p.log_dropped.load(Ordering::Relaxed),
            })
            .collect();
        v.sort_by(|a, b| a.plugin.cmp(&b.plugin));
        v
    }

    /// Runs `chain` over a delivery in order. Each plugin sees the body the previous one
    /// produced; a drop or a failure ends the chain.
    pub async fn run_chain(&self, chain: &[String], input: CallInput) -> ChainOutcome {
        self.run_chain_inner(chain, input, None).await
    }

    /// [`run_chain`](Self::run_chain), also reporting every call (the workbench).
    pub async fn run_chain_traced(&self, chain: &[String], input: CallInput) -> (ChainOutcome, Vec<CallReport>) {
        let mut reports = Vec::new();
        let outcome = self.run_chain_inner(chain, input, Some(&mut reports)).await;
        (outcome, reports)
    }

    async fn run_chain_inner(
        &self,
        chain: &[String],
        input: CallInput,
        mut reports: Option<&mut Vec<CallReport>>,
    ) -> ChainOutcome {
        let mut body = input.envelope.clone();
        let mut changed = false;
        for name in chain {
            let Some(plugin) = self.plugins.get(name) else {
                return ChainOutcome::Failed { plugin: name.clone(), message: "is not loaded".into() };
            };
            let (result, report) = self.call(plugin, &input, &body, reports.is_some()).await;
            if let (Some(r), Some(report)) = (reports.as_deref_mut(), report) {
                r.push(CallReport { skipped: result.is_err() && plugin.on_error == OnError::Skip, ..report });
            }
            match result {
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

    /// Calls one plugin by name (benchmarks and tests use this directly).
    pub async fn call_by_name(&self, name: &str, input: &CallInput) -> Result<Decision, PluginError> {
        let plugin =
            self.plugins.get(name).ok_or_else(|| PluginError::Rejected(format!("no plugin named {name:?}")))?;
        self.call(plugin, input, &input.envelope, false).await.0
    }

    async fn call(
        &self,
        p: &Plugin,
        input: &CallInput,
        envelope: &str,
        capture: bool,
    ) -> (Result<Decision, PluginError>, Option<CallReport>) {
        // The semaphore is never closed, so acquiring only fails if it were; treat that as a
        // failed call rather than a panic.
        let Ok(_permit) = p.permits.acquire().await else {
            return (Err(PluginError::Trap("the plugin host is shutting down".into())), None);
        };
        p.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let state = HostState::new(p.name.clone(), p.memory_limit, stderr.clone(), capture);
        let mut store = sandbox::store(&self.engine, state, p.timeout);
        let delivery = bindings::Delivery {
            trigger: input.trigger.clone(),
            event_id: input.event_id.clone(),
            endpoint_id: input.endpoint_id.clone(),
            envelope: envelope.to_owned(),
            config: p.config.clone(),
        };
        let run = async {
            let instance = p.pre.instantiate_async(&mut store).await?;
            instance.call_handle(&mut store, &delivery).await
        };
        // The epoch callback stops a guest that computes past the deadline; this stops one that
        // waits inside the host (a sleep, a poll). Either way the call ends at its deadline.
        let outcome = tokio::time::timeout(p.timeout, run).await;
        let written = stderr.contents();
        let stderr_text = String::from_utf8_lossy(&written).trim_end().to_owned();
        if !stderr_text.is_empty() {
            tracing::warn!(plugin = %p.name, stderr = %truncate(&stderr_text, STDERR_CAPACITY), "plugin wrote to stderr");
        }
        let result = match outcome {
            Err(_elapsed) => Err(PluginError::Deadline(p.timeout)),
            Ok(Ok(Ok(decision))) => validate(decision, input.max_body_bytes),
            Ok(Ok(Err(message))) => Err(PluginError::Rejected(truncate(&message, REASON_LIMIT))),
            Ok(Err(e)) => Err(classify(&e, store.data().limits.exceeded, p, &stderr_text)),
        };
        let elapsed = started.elapsed();
        let state = store.data_mut();
        if state.log.dropped > 0 {
            p.log_dropped.fetch_add(state.log.dropped, Ordering::Relaxed);
            tracing::warn!(
                plugin = %p.name,
                dropped = state.log.dropped,
                "plugin wrote more than {LOG_LINES_PER_CALL} lines or {LOG_BYTES_PER_CALL} bytes of log in one call; the rest was dropped"
            );
        }
        if result.is_err() {
            p.failures.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(result, Err(PluginError::Deadline(_))) {
            p.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        let report = capture.then(|| {
            let mut log = state.log.captured.take().unwrap_or_default();
            if !stderr_text.is_empty() {
                log.push(("stderr".into(), stderr_text.clone()));
            }
            CallReport {
                plugin: p.name.to_string(),
                result: result.clone(),
                skipped: false,
                elapsed,
                peak_memory: state.limits.peak,
                log,
                log_dropped: state.log.dropped,
            }
        });
        (result, report)
    }
}

/// Turns a host-side failure into the error stored with the delivery, keeping its cause: the
/// trap, a guest's `exit`, a full resource table, with the guest's stderr when it wrote any.
fn classify(e: &wasmtime::Error, memory_exceeded: bool, p: &Plugin, stderr: &str) -> PluginError {
    if memory_exceeded {
        return PluginError::Memory(p.memory_limit);
    }
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return PluginError::Deadline(p.timeout);
    }
    let what = if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        format!("the plugin called exit({}) instead of returning a decision", exit.0)
    } else if let Some(trap) = e.downcast_ref::<Trap>() {
        trap.to_string()
    } else {
        // The whole chain ("error while executing …: resource table has no free keys"): the
        // plain display stops at the first line, which names the symptom but not the cause.
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        chain.join(": ")
    };
    let what = truncate(&what, REASON_LIMIT);
    // A Rust guest's panic message goes to stderr just before the trap; it is the most useful
    // part of the error, so it travels with it to the delivery log.
    PluginError::Trap(if stderr.is_empty() { what } else { format!("{what}; stderr: {}", truncate(stderr, 500)) })
}

/// Checks a plugin's decision: a replacement must be a JSON object within the body limit; it is
/// canonicalised so it is signed like any body.
fn validate(d: bindings::Decision, max_body_bytes: usize) -> Result<Decision, PluginError> {
    match d {
        bindings::Decision::Keep => Ok(Decision::Keep),
        bindings::Decision::Drop(reason) => Ok(Decision::Drop(truncate(&reason, REASON_LIMIT))),
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
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
