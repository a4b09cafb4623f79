//! Metrics: counters and histograms kept in atomics, rendered in Prometheus text format.
//!
//! Owns: metric names, labels and bucket bounds.
//! Must not touch: I/O. Stages record into a shared [`Metrics`]; `api` renders it at scrape
//! time together with gauges read then (pending deliveries, store commits, plugin calls).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::model::{DeliveryState, ErrorKind};

/// The last reload's outcome, for `/metrics` and `/healthz` (kept by `live`).
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Unix milliseconds of the last reload attempt, if any.
    pub at_ms: Option<u64>,
    /// `None` if it applied; the error otherwise.
    pub error: Option<String>,
}

/// Latency buckets in seconds: from sub-millisecond commits to attempts near the timeout.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// End-to-end delivery latency spans retries, so its buckets reach hours.
const E2E_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0];

pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything the gateway counts.
pub struct Metrics {
    pub events_ingested: AtomicU64,
    pub deliveries_created: AtomicU64,
    /// Passes through the attempt pipeline whose durable record could not be written; each
    /// put its delivery into a cooldown.
    pub record_failures: AtomicU64,
    /// Rows removed by retention.
    pub pruned_deliveries: AtomicU64,
    pub pruned_events: AtomicU64,
    /// Final outcomes by state name.
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    /// Attempts by (status class, error kind).
    attempts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub ingest_commit: Histogram,
    pub attempt_duration: Histogram,
    pub delivery_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events_ingested: AtomicU64::new(0),
            deliveries_created: AtomicU64::new(0),
            record_failures: AtomicU64::new(0),
            pruned_deliveries: AtomicU64::new(0),
            pruned_events: AtomicU64::new(0),
            outcomes: Mutex::default(),
            attempts: Mutex::default(),
            ingest_commit: Histogram::new(BUCKETS),
            attempt_duration: Histogram::new(BUCKETS),
            delivery_latency: Histogram::new(E2E_BUCKETS),
        }
    }
}

/// Values read at scrape time.
pub struct Gauges {
    pub pending: u64,
    pub store_commits: u64,
    pub store_operations: u64,
    pub store_failed_commits: u64,
    /// Deliveries held back in memory because their last record could not be written.
    pub cooling_down: u64,
    /// The database file's size in bytes.
    pub db_file_bytes: u64,
    /// Endpoints whose circuit is not closed, and disabled endpoints.
    pub circuits_open: u64,
    pub endpoints_disabled: u64,
    /// Counters per plugin.
    pub plugins: Vec<crate::plugin::PluginStats>,
    /// The running config generation and the last reload.
    pub config_generation: u64,
    pub last_reload: ReloadStatus,
}

impl Metrics {
    pub fn outcome(&self, state: DeliveryState) {
        *self.outcomes.lock().expect("metrics lock").entry(state.as_str()).or_default() += 1;
    }

    pub fn attempt(&self, status: Option<u16>, error: Option<ErrorKind>, duration: Duration) {
        let class = match status {
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
            None => "none",
        };
        let kind = error.map_or("none", ErrorKind::as_str);
        *self.attempts.lock().expect("metrics lock").entry((class, kind)).or_default() += 1;
        self.attempt_duration.observe(duration);
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut out,
            "hookgate_events_ingested_total",
            "Events accepted (202) by ingest.",
            self.events_ingested.load(Relaxed),
        );
        counter(
            &mut out,
            "hookgate_deliveries_created_total",
            "Deliveries created by fan-out.",
            self.deliveries_created.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP hookgate_deliveries_total Deliveries that reached a final state, by outcome.\n# TYPE hookgate_deliveries_total counter"
        );
        for (state, n) in self.outcomes.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "hookgate_deliveries_total{{outcome=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP hookgate_attempts_total Delivery attempts by response status class and error kind.\n# TYPE hookgate_attempts_total counter"
        );
        for ((class, kind), n) in self.attempts.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "hookgate_attempts_total{{status_class=\"{class}\",error=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP hookgate_config_generation The running configuration's generation (1 at start, +1 per applied reload).\n# TYPE hookgate_config_generation gauge\nhookgate_config_generation {}",
            g.config_generation
        );
        if let Some(at) = g.last_reload.at_ms {
            let _ = writeln!(
                out,
                "# HELP hookgate_config_last_reload_timestamp_seconds When the last reload was attempted.\n# TYPE hookgate_config_last_reload_timestamp_seconds gauge\nhookgate_config_last_reload_timestamp_seconds {}",
                at / 1000
            );
            let _ = writeln!(
                out,
                "# HELP hookgate_config_last_reload_success 1 if the last reload applied, 0 if it was refused.\n# TYPE hookgate_config_last_reload_success gauge\nhookgate_config_last_reload_success {}",
                u8::from(g.last_reload.error.is_none())
            );
        }
        type Family = (&'static str, &'static str, fn(&crate::plugin::PluginStats) -> u64);
        let families: [Family; 4] = [
            ("hookgate_plugin_calls_total", "Plugin calls, by plugin.", |p| p.calls),
            (
                "hookgate_plugin_failures_total",
                "Plugin calls that failed (trap, deadline, memory, error, invalid output).",
                |p| p.failures,
            ),
            ("hookgate_plugin_timeouts_total", "Plugin calls stopped at their deadline.", |p| p.timeouts),
            (
                "hookgate_plugin_log_lines_dropped_total",
                "host.log lines dropped because a call went over its log budget.",
                |p| p.log_dropped,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for p in &g.plugins {
                let _ = writeln!(out, "{name}{{plugin=\"{}\"}} {}", p.plugin, value(p));
            }
        }
        let _ = writeln!(
            out,
            "# HELP hookgate_pending_deliveries Deliveries waiting for an attempt.\n# TYPE hookgate_pending_deliveries gauge\nhookgate_pending_deliveries {}",
            g.pending
        );
        counter(&mut out, "hookgate_store_commits_total", "Durable (fsync'd) store commits.", g.store_commits);
        counter(
            &mut out,
            "hookgate_store_operations_total",
            "Write operations carried by those commits.",
            g.store_operations,
        );
        counter(
            &mut out,
            "hookgate_store_failed_commits_total",
            "Store commits that failed; every write in them was refused.",
            g.store_failed_commits,
        );
        counter(
            &mut out,
            "hookgate_attempt_record_failures_total",
            "Attempt outcomes whose durable record failed; the delivery cools down and is tried again.",
            self.record_failures.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP hookgate_deliveries_cooling_down Deliveries held back after a failed record write.\n# TYPE hookgate_deliveries_cooling_down gauge\nhookgate_deliveries_cooling_down {}",
            g.cooling_down
        );
        let _ = writeln!(
            out,
            "# HELP hookgate_db_file_bytes Size of the database file.\n# TYPE hookgate_db_file_bytes gauge\nhookgate_db_file_bytes {}",
            g.db_file_bytes
        );
        counter(
            &mut out,
            "hookgate_pruned_deliveries_total",
            "Final deliveries removed by retention.",
            self.pruned_deliveries.load(Relaxed),
        );
        counter(
            &mut out,
            "hookgate_pruned_events_total",
            "Events removed by retention (with their last delivery).",
            self.pruned_events.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP hookgate_endpoints_circuit_open Endpoints whose circuit is open or half-open.\n# TYPE hookgate_endpoints_circuit_open gauge\nhookgate_endpoints_circuit_open {}",
            g.circuits_open
        );
        let _ = writeln!(
            out,
            "# HELP hookgate_endpoints_disabled Disabled endpoints.\n# TYPE hookgate_endpoints_disabled gauge\nhookgate_endpoints_disabled {}",
            g.endpoints_disabled
        );
        self.ingest_commit.render(
            &mut out,
            "hookgate_ingest_commit_seconds",
            "Time from an accepted request to its durable commit.",
        );
        self.attempt_duration.render(
            &mut out,
            "hookgate_attempt_duration_seconds",
            "Duration of one delivery attempt.",
        );
        self.delivery_latency.render(
            &mut out,
            "hookgate_delivery_latency_seconds",
            "Time from event receipt to successful delivery.",
        );
        out
    }
}
