//! Metrics: what the gateway counts, kept in `prometheus-client`'s metric types and rendered
//! in the Prometheus text format (0.0.4) at scrape time.
//!
//! Owns: metric names, labels and bucket bounds.
//! Must not touch: I/O. Stages record into a shared [`Metrics`]; `api` renders it at scrape
//! time together with gauges read then (pending deliveries, store commits, plugin calls).
//!
//! Recording is an atomic add (counters) or a short uncontended lock (histograms, label
//! families); a scrape registers the long-lived metrics and that moment's gauges in a fresh
//! registry and encodes it, so nothing of the exposition format is written by hand.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::model::{DeliveryState, ErrorKind};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

/// A latency histogram, observed in `Duration`s and exposed in seconds.
#[derive(Debug, Clone)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(bounds.iter().copied()))
    }

    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Everything the gateway counts.
#[derive(Debug)]
pub struct Metrics {
    pub events_ingested: Counter,
    pub deliveries_created: Counter,
    /// Passes through the attempt pipeline whose durable record could not be written; each
    /// put its delivery into a cooldown.
    pub record_failures: Counter,
    /// Rows removed by retention.
    pub pruned_deliveries: Counter,
    pub pruned_events: Counter,
    /// Final outcomes by state name.
    outcomes: Family<Labels<1>, Counter>,
    /// Attempts by (status class, error kind).
    attempts: Family<Labels<2>, Counter>,
    pub ingest_commit: Histogram,
    pub attempt_duration: Histogram,
    pub delivery_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events_ingested: Counter::default(),
            deliveries_created: Counter::default(),
            record_failures: Counter::default(),
            pruned_deliveries: Counter::default(),
            pruned_events: Counter::default(),
            outcomes: Family::default(),
            attempts: Family::default(),
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
    /// Trace spans dropped: the export queue was full, or an export failed.
    pub spans_dropped: u64,
}

impl Metrics {
    pub fn outcome(&self, state: DeliveryState) {
        self.outcomes.get_or_create(&[("outcome", state.as_str())]).inc();
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
        self.attempts.get_or_create(&[("status_class", class), ("error", kind)]).inc();
        self.attempt_duration.observe(duration);
    }

    /// The Prometheus text exposition of every metric, with `g` read at this scrape.
    pub fn render(&self, g: &Gauges) -> String {
        let mut r = Registry::default();
        self.register(&mut r);
        g.register(&mut r);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &r);
        out
    }

    /// The long-lived metrics (clones share their values).
    fn register(&self, r: &mut Registry) {
        r.register("hookgate_events_ingested", "Events accepted (202) by ingest", self.events_ingested.clone());
        r.register("hookgate_deliveries_created", "Deliveries created by fan-out", self.deliveries_created.clone());
        r.register("hookgate_deliveries", "Deliveries that reached a final state, by outcome", self.outcomes.clone());
        r.register(
            "hookgate_attempts",
            "Delivery attempts by response status class and error kind",
            self.attempts.clone(),
        );
        r.register(
            "hookgate_attempt_record_failures",
            "Attempt outcomes whose durable record failed; the delivery cools down and is tried again",
            self.record_failures.clone(),
        );
        r.register(
            "hookgate_pruned_deliveries",
            "Final deliveries removed by retention",
            self.pruned_deliveries.clone(),
        );
        r.register(
            "hookgate_pruned_events",
            "Events removed by retention (with their last delivery)",
            self.pruned_events.clone(),
        );
        r.register(
            "hookgate_ingest_commit_seconds",
            "Time from an accepted request to its durable commit",
            self.ingest_commit.0.clone(),
        );
        r.register(
            "hookgate_attempt_duration_seconds",
            "Duration of one delivery attempt",
            self.attempt_duration.0.clone(),
        );
        r.register(
            "hookgate_delivery_latency_seconds",
            "Time from event receipt to successful delivery",
            self.delivery_latency.0.clone(),
        );
    }
}

/// A counter whose total is kept elsewhere (the store's writer, the plugin host) and read at
/// scrape time.
fn total(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

impl Gauges {
    fn register(&self, r: &mut Registry) {
        r.register(
            "hookgate_config_generation",
            "The running configuration's generation (1 at start, +1 per applied reload)",
            gauge(self.config_generation),
        );
        // Only once a reload was tried: before that there is no outcome to report.
        if let Some(at) = self.last_reload.at_ms {
            r.register(
                "hookgate_config_last_reload_timestamp_seconds",
                "When the last reload was attempted",
                gauge(at / 1000),
            );
            r.register(
                "hookgate_config_last_reload_success",
                "1 if the last reload applied, 0 if it was refused",
                gauge(u64::from(self.last_reload.error.is_none())),
            );
        }
        type PerPlugin = fn(&crate::plugin::PluginStats) -> u64;
        let families: [(&str, &str, PerPlugin); 4] = [
            ("hookgate_plugin_calls", "Plugin calls, by plugin", |p| p.calls),
            (
                "hookgate_plugin_failures",
                "Plugin calls that failed (trap, deadline, memory, error, invalid output)",
                |p| p.failures,
            ),
            ("hookgate_plugin_timeouts", "Plugin calls stopped at their deadline", |p| p.timeouts),
            (
                "hookgate_plugin_log_lines_dropped",
                "host.log lines dropped because a call went over its log budget",
                |p| p.log_dropped,
            ),
        ];
        for (name, help, value) in families {
            let family = Family::<[(&'static str, String); 1], Counter>::default();
            for p in &self.plugins {
                family.get_or_create(&[("plugin", p.plugin.clone())]).inc_by(value(p));
            }
            r.register(name, help, family);
        }
        r.register("hookgate_pending_deliveries", "Deliveries waiting for an attempt", gauge(self.pending));
        r.register("hookgate_store_commits", "Durable (fsync'd) store commits", total(self.store_commits));
        r.register(
            "hookgate_store_operations",
            "Write operations carried by those commits",
            total(self.store_operations),
        );
        r.register(
            "hookgate_store_failed_commits",
            "Store commits that failed; every write in them was refused",
            total(self.store_failed_commits),
        );
        r.register(
            "hookgate_deliveries_cooling_down",
            "Deliveries held back after a failed record write",
            gauge(self.cooling_down),
        );
        r.register("hookgate_db_file_bytes", "Size of the database file", gauge(self.db_file_bytes));
        r.register(
            "hookgate_endpoints_circuit_open",
            "Endpoints whose circuit is open or half-open",
            gauge(self.circuits_open),
        );
        r.register("hookgate_endpoints_disabled", "Disabled endpoints", gauge(self.endpoints_disabled));
        r.register(
            "hookgate_telemetry_spans_dropped",
            "Trace spans dropped because the export queue was full or an export failed",
            total(self.spans_dropped),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            pending: 3,
            store_commits: 2,
            store_operations: 9,
            store_failed_commits: 0,
            cooling_down: 0,
            db_file_bytes: 4096,
            circuits_open: 1,
            endpoints_disabled: 0,
            plugins: Vec::new(),
            config_generation: 1,
            last_reload: ReloadStatus::default(),
            spans_dropped: 0,
        }
    }

    /// The exposition is Prometheus text 0.0.4: counters end in `_total` in their HELP, TYPE
    /// and samples alike, histogram buckets are cumulative, labels are quoted, and the reload
    /// gauges appear only once a reload was tried.
    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.events_ingested.inc_by(4);
        m.outcome(DeliveryState::Succeeded);
        m.attempt(Some(200), None, Duration::from_millis(3));
        m.attempt(Some(503), Some(ErrorKind::Status), Duration::from_millis(30));
        let text = m.render(&gauges());
        for line in [
            "# TYPE hookgate_events_ingested_total counter",
            "hookgate_events_ingested_total 4",
            "hookgate_deliveries_total{outcome=\"succeeded\"} 1",
            "hookgate_attempts_total{status_class=\"2xx\",error=\"none\"} 1",
            "hookgate_attempts_total{status_class=\"5xx\",error=\"status\"} 1",
            "# TYPE hookgate_attempt_duration_seconds histogram",
            "hookgate_attempt_duration_seconds_bucket{le=\"0.005\"} 1",
            "hookgate_attempt_duration_seconds_bucket{le=\"0.05\"} 2",
            "hookgate_attempt_duration_seconds_bucket{le=\"+Inf\"} 2",
            "hookgate_attempt_duration_seconds_count 2",
            "hookgate_pending_deliveries 3",
            "hookgate_store_operations_total 9",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("last_reload"), "{text}");
        // The registry ends each HELP with a period itself.
        assert!(
            text.lines().filter(|l| l.starts_with("# HELP")).all(|l| l.ends_with('.') && !l.ends_with("..")),
            "{text}"
        );
        let mut g = gauges();
        g.last_reload = ReloadStatus { at_ms: Some(5_000), error: Some("bad".into()) };
        let text = m.render(&g);
        assert!(text.lines().any(|l| l == "hookgate_config_last_reload_success 0"), "{text}");
    }

    /// The Grafana board in `config/` asks only for series this exposition has: a metric
    /// renamed here and not there fails this test.
    #[test]
    fn the_grafana_board_uses_only_exposed_series() {
        let m = Metrics::default();
        m.outcome(DeliveryState::Succeeded);
        m.attempt(Some(200), None, Duration::from_millis(3));
        let mut g = gauges();
        g.plugins = vec![crate::plugin::PluginStats { plugin: "p".into(), calls: 1, ..Default::default() }];
        g.last_reload = ReloadStatus { at_ms: Some(5_000), error: None };
        let text = m.render(&g);
        let exposed: std::collections::HashSet<&str> =
            text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
        let board: serde_json::Value =
            serde_json::from_str(include_str!("../config/grafana-dashboard.json")).expect("the board is JSON");
        let panels = board["panels"].as_array().expect("panels");
        assert!(panels.len() >= 10, "{}", panels.len());
        let mut asked = 0;
        for panel in panels {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for (i, _) in expr.match_indices("hookgate_") {
                    let name: String =
                        expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    assert!(exposed.contains(name.as_str()), "{}: {name} is not exposed", panel["title"]);
                    asked += 1;
                }
            }
        }
        assert!(asked >= 25, "{asked}");
    }
}
