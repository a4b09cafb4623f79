//! Telemetry: OpenTelemetry traces of each event's way through the gateway, exported over
//! OTLP/HTTP (protobuf).
//!
//! Owns: the tracer provider of one gateway (built from `[telemetry]` over the standard `OTEL_*`
//! variables, off when no endpoint is named), the bounded export queue and its drop counter,
//! and W3C `traceparent` text. One trace per event: `hookgate.ingest` (a producer's own
//! `traceparent` becomes its parent) with `hookgate.fanout` and `hookgate.commit` under it; each
//! plugin call (`hookgate.plugin`) and each attempt (`hookgate.attempt`) joins the trace through
//! the `traceparent` stored with the event, a retry linked back to the ingest span.
//! Must not touch: delivery decisions. Watching never slows delivering: finished spans go into a
//! queue of [`QUEUE`] spans that a task of its own exports in batches; a full queue drops the
//! span and counts it (`hookgate_telemetry_spans_dropped_total`), it never waits.
//!
//! Each gateway has its own provider rather than a process-wide one, so that gateways running
//! side by side in one process (the tests) keep their traces apart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use tokio::sync::mpsc;

use crate::config::TelemetryConfig;

/// Finished spans waiting for export; past it, spans are dropped (and counted).
pub const QUEUE: usize = 4096;
/// The most spans in one export request.
const BATCH: usize = 512;
/// How long the first span of a batch waits for others: fewer, larger export requests.
const LINGER: Duration = Duration::from_millis(200);
/// How long one export may take before it is abandoned (its spans count as dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// One gateway's tracing: off (every method is a no-op) or a provider with its export task.
#[derive(Clone, Default)]
pub struct Telemetry(Option<Arc<Inner>>);

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    dropped: Arc<AtomicU64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Where spans go and how many: `[telemetry]` over the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The full OTLP/HTTP traces URL, or `None` to let the exporter read
    /// `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`.
    pub traces_url: Option<String>,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
}

impl Settings {
    /// `None` when tracing is off: neither the config nor the environment names an endpoint.
    /// Refuses an `OTEL_EXPORTER_OTLP_PROTOCOL` other than `http/protobuf`, the one spoken here.
    pub fn resolve(config: &TelemetryConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Settings>, String> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let from_env = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if config.endpoint.is_none() && from_env.is_none() {
            return Ok(None);
        }
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(p) = protocol.filter(|p| p != "http/protobuf") {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={p} is not supported: Hookgate exports traces over http/protobuf"
            ));
        }
        let traces_url = config.endpoint.as_ref().map(|e| {
            let e = e.trim_end_matches('/');
            if e.ends_with("/v1/traces") { e.to_owned() } else { format!("{e}/v1/traces") }
        });
        Ok(Some(Settings { traces_url, service_name: config.service_name.clone(), sample_ratio: config.sample_ratio }))
    }
}

impl Telemetry {
    /// Tracing off.
    pub fn off() -> Telemetry {
        Telemetry(None)
    }

    /// Starts the provider and its export task (on the current tokio runtime).
    pub fn start(settings: &Settings) -> Result<Telemetry, String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT);
        if let Some(url) = &settings.traces_url {
            exporter = exporter.with_endpoint(url.clone());
        }
        let exporter = exporter.build().map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let slot = Arc::new(Mutex::new(Some(exporter)));
        let processor = QueueProcessor { tx: Mutex::new(Some(tx)), dropped: dropped.clone(), exporter: slot.clone() };
        let mut resource = opentelemetry_sdk::Resource::builder();
        if let Some(name) = &settings.service_name {
            resource = resource.with_service_name(name.clone());
        } else if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("hookgate");
        }
        let mut builder = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource.build());
        if let Some(ratio) = settings.sample_ratio {
            use opentelemetry_sdk::trace::Sampler;
            builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))));
        }
        let provider = builder.build();
        let tracer = provider.tracer("hookgate");
        let task = tokio::spawn(export_loop(rx, slot, dropped.clone()));
        Ok(Telemetry(Some(Arc::new(Inner { provider, tracer, dropped, task: Mutex::new(Some(task)) }))))
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Spans dropped because the queue was full or an export failed.
    pub fn dropped(&self) -> u64 {
        self.0.as_ref().map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// Starts a span under `parent` and returns the context holding it (the parent itself when
    /// tracing is off). End it with [`end`].
    pub fn start_span(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> Context {
        let Some(inner) = &self.0 else { return parent.clone() };
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(&inner.tracer, parent);
        parent.with_span(span)
    }

    /// A span that already happened (a plugin call timed by the plugin host).
    pub fn past_span(
        &self,
        name: &'static str,
        parent: &Context,
        started: SystemTime,
        elapsed: Duration,
        attributes: Vec<KeyValue>,
        failed: bool,
    ) {
        let Some(inner) = &self.0 else { return };
        let mut span = inner
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(started)
            .with_attributes(attributes)
            .start_with_context(&inner.tracer, parent);
        if failed {
            span.set_status(Status::error("the plugin call failed"));
        }
        span.end_with_timestamp(started + elapsed);
    }

    /// Stops the export task after it has sent what is queued (at most `within`).
    pub async fn shutdown(&self, within: Duration) {
        let Some(inner) = &self.0 else { return };
        // Closes the queue: the task exports what is left and ends.
        let _ = inner.provider.shutdown();
        let task = inner.task.lock().expect("telemetry lock").take();
        if let Some(task) = task
            && tokio::time::timeout(within, task).await.is_err()
        {
            tracing::warn!("trace export did not finish in time; the last spans are lost");
        }
    }
}

/// Ends the span a context holds (nothing when tracing is off).
pub fn end(cx: &Context) {
    cx.span().end();
}

/// Adds attributes to the span a context holds.
pub fn record(cx: &Context, attributes: Vec<KeyValue>) {
    cx.span().set_attributes(attributes);
}

/// Marks the span a context holds as failed.
pub fn fail(cx: &Context, message: String) {
    cx.span().set_status(Status::error(message));
}

/// The W3C `traceparent` of the span a context holds, if it is a real (sampled) one.
pub fn traceparent(cx: &Context) -> Option<String> {
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| format_traceparent(&sc))
}

/// The trace id of a `traceparent`, as shown in the delivery log.
pub fn trace_id(traceparent: &str) -> Option<String> {
    parse_traceparent(traceparent).map(|sc| sc.trace_id().to_string())
}

/// A context whose parent is the remote span of a `traceparent` (a producer's, or the one
/// stored with an event); an empty context for `None` or text that is not one.
pub fn remote(traceparent: Option<&str>) -> Context {
    match traceparent.and_then(parse_traceparent) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// A link to the span of a `traceparent` (a retry's link to its event's ingest).
pub fn link_to(traceparent: &str) -> Option<Link> {
    parse_traceparent(traceparent).map(Link::with_context)
}

/// `00-<trace id>-<span id>-<flags>` (W3C Trace Context, version 00).
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// Parses a W3C `traceparent` (version 00, or a later version read as 00); all-zero ids and
/// malformed text are `None`.
pub fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1);
    Some(SpanContext::new(trace, span, flags, true, TraceState::default()))
}

/// The span processor: finished spans into the bounded queue, never waiting.
#[derive(Debug)]
struct QueueProcessor {
    tx: Mutex<Option<mpsc::Sender<SpanData>>>,
    dropped: Arc<AtomicU64>,
    /// Held here until the export task takes it, so that the provider can hand it its resource.
    exporter: Arc<Mutex<Option<opentelemetry_otlp::SpanExporter>>>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let sent = match self.tx.lock().expect("telemetry lock").as_ref() {
            Some(tx) => tx.try_send(span).is_ok(),
            None => false,
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.tx.lock().expect("telemetry lock").take();
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(e) = self.exporter.lock().expect("telemetry lock").as_mut() {
            e.set_resource(resource);
        }
    }
}

/// Exports queued spans in batches of up to [`BATCH`] (a batch waits at most [`LINGER`] to
/// fill) until the queue closes and is empty. A failed export drops its batch (counted) and is
/// logged once per failure streak.
async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    slot: Arc<Mutex<Option<opentelemetry_otlp::SpanExporter>>>,
    dropped: Arc<AtomicU64>,
) {
    let Some(exporter) = slot.lock().expect("telemetry lock").take() else { return };
    let mut failing = false;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                // Closed (its last spans are in this batch) or the linger is over.
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match exporter.export(std::mem::take(&mut batch)).await {
            Ok(()) => failing = false,
            Err(e) => {
                dropped.fetch_add(n, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %e, spans = n, "trace export failed; spans are dropped until it works again");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_what_is_not_one() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(text).unwrap();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(format_traceparent(&sc), text);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
        assert_eq!(trace_id(text).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[test]
    fn off_unless_an_endpoint_is_named() {
        let none = |_: &str| None;
        assert_eq!(Settings::resolve(&TelemetryConfig::default(), &none), Ok(None));
        let env = |n: &str| (n == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4318".to_owned());
        let s = Settings::resolve(&TelemetryConfig::default(), &env).unwrap().unwrap();
        assert_eq!(s.traces_url, None, "the exporter reads the variable itself");
        let cfg = TelemetryConfig { endpoint: Some("http://c:4318/".into()), ..Default::default() };
        let s = Settings::resolve(&cfg, &none).unwrap().unwrap();
        assert_eq!(s.traces_url.as_deref(), Some("http://c:4318/v1/traces"));
        let grpc = |n: &str| match n {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".to_owned()),
            _ => None,
        };
        assert!(Settings::resolve(&TelemetryConfig::default(), &grpc).unwrap_err().contains("http/protobuf"));
    }
}
