//! Ingest: a validated event becomes a durable event with its pending deliveries, committed
//! before anyone hears "accepted".
//!
//! Owns: fan-out at ingest time (within the tenant's endpoints, skipping disabled ones), the
//! idempotency claim (keys are per tenant, bodies compared by hash), the commit, and waking the
//! dispatcher after it.
//! Must not touch: HTTP (the request rules are `api::events`'), outbound HTTP, signing or
//! plugins.

use std::sync::Arc;

use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, KeyValue};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::config::Endpoint;
use crate::events::{ValidEvent, build_write, set_tenant};
use crate::health::HealthBook;
use crate::json;
use crate::metrics::Metrics;
use crate::model::{DEFAULT_TENANT, ErrorKind, Skipped};
use crate::registry::Registry;
use crate::store::{IdempotencyClaim, IngestOutcome, Store, StoreError};
use crate::telemetry::{self, Telemetry};

/// What an ingest touches.
pub struct Ingest {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub health: Arc<HealthBook>,
    pub metrics: Arc<Metrics>,
    /// Tells the dispatcher that new deliveries are due.
    pub wake: Arc<Notify>,
    /// "Now" for the event's timestamps: the same clock dispatch schedules by.
    pub clock: SharedClock,
    pub telemetry: Telemetry,
}

impl Ingest {
    /// Fans `event` out to `tenant`'s endpoints and commits it with its deliveries (or finds
    /// the event an earlier request with the same `idempotency_key` stored). `span` is the
    /// request's ingest span: fan-out and the commit are its children, and the event keeps its
    /// `traceparent` so that every attempt joins the trace.
    pub async fn accept(
        &self,
        tenant: &str,
        event: &ValidEvent,
        idempotency_key: Option<String>,
        span: &Context,
    ) -> Result<IngestOutcome, StoreError> {
        // The slot lets dispatch add each delivery's idempotency key by splicing text.
        let (payload, envelope_slot) = json::canonical_with_slot(&event.fields, "idempotency_key");
        self.commit(tenant, event, (payload, Some(envelope_slot)), None, idempotency_key, span).await
    }

    /// [`accept`](Self::accept) for a message of the Svix-compatible API: `payload` (the JSON
    /// text as the producer sent it) is stored and delivered exactly as it is; `event`'s fields
    /// (the payload's members) serve fan-out and the log's resource index.
    pub async fn accept_message(
        &self,
        tenant: &str,
        event: &ValidEvent,
        payload: String,
        meta: crate::model::MessageMeta,
        idempotency_key: Option<String>,
        span: &Context,
    ) -> Result<IngestOutcome, StoreError> {
        self.commit(tenant, event, (payload, None), Some(meta), idempotency_key, span).await
    }

    async fn commit(
        &self,
        tenant: &str,
        event: &ValidEvent,
        (payload, envelope_slot): (String, Option<usize>),
        message: Option<crate::model::MessageMeta>,
        idempotency_key: Option<String>,
        span: &Context,
    ) -> Result<IngestOutcome, StoreError> {
        let now = self.clock.now_ms();
        // Fan-out (and Attendee's override rule) within the tenant's own endpoints.
        let fanout = self.telemetry.start_span("hookgate.fanout", SpanKind::Internal, span, vec![], vec![]);
        let endpoints = self.registry.of_tenant(tenant);
        let channels = message.as_ref().map_or(&[][..], |m| &m.channels[..]);
        let receivers: Vec<&Endpoint> = crate::fanout::select(&endpoints, &event.trigger, &event.fields)
            .into_iter()
            .filter(|e| crate::fanout::in_channels(e, channels))
            .collect();
        // A disabled endpoint gets no delivery; the event's record says why.
        let (receivers, disabled): (Vec<&Endpoint>, Vec<&Endpoint>) =
            receivers.into_iter().partition(|e| self.health.is_enabled(&e.id));
        let skipped = disabled
            .iter()
            .map(|e| Skipped { endpoint_id: e.id.clone(), reason: ErrorKind::EndpointDisabled.as_str().into() })
            .collect();
        // Keys are per tenant: the same key from two tenants is two keys.
        let claim = idempotency_key.map(|key| IdempotencyClaim {
            key: if tenant == DEFAULT_TENANT { key } else { format!("{tenant}\u{0}{key}") },
            request_hash: hex(&Sha256::digest(payload.as_bytes())),
        });
        let mut write = build_write(
            &event.trigger,
            &event.fields,
            (payload, envelope_slot.unwrap_or(0)),
            &receivers,
            skipped,
            now,
            claim,
        );
        write.event.envelope_slot = envelope_slot;
        write.event.message = message;
        set_tenant(&mut write, tenant);
        write.event.trace = telemetry::traceparent(span);
        telemetry::record(&fanout, vec![KeyValue::new("hookgate.deliveries", write.deliveries.len() as i64)]);
        telemetry::end(&fanout);
        let commit = self.telemetry.start_span("hookgate.commit", SpanKind::Internal, span, vec![], vec![]);
        let commit_started = std::time::Instant::now();
        let outcome = self.store.ingest(write).await;
        self.metrics.ingest_commit.observe(commit_started.elapsed());
        if let Err(e) = &outcome {
            telemetry::fail(&commit, e.to_string());
        }
        telemetry::end(&commit);
        let outcome = outcome?;
        if let IngestOutcome::Created { event_id, deliveries } = &outcome {
            self.wake.notify_one();
            self.metrics.events_ingested.inc();
            self.metrics.deliveries_created.inc_by(*deliveries as u64);
            let trace_id = telemetry::traceparent(span).as_deref().and_then(telemetry::trace_id);
            tracing::debug!(%event_id, trigger = %event.trigger, deliveries, trace_id, "event accepted");
        }
        Ok(outcome)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
