//! One pass of one delivery through the stages, as a typed pipeline:
//!
//! ```text
//! Loaded ──prepare──▶ Prepared ──send──▶ Sent ──decide──▶ Decided ──record──▶ Recorded
//!            │ (plugin drop/failure, unreadable records: Decided directly)
//! ```
//!
//! Owns: the order of the steps and what each one hands the next. Every path ends in a
//! [`Decided`] that carries exactly one durable write (`store::Finish`), so no early return can
//! leave a delivery due without a record of why.
//! Must not touch: the scheduler's bookkeeping (claims, slots, cooldowns live in `dispatch`),
//! HTTP details (`deliver`), signing recipes (`sign`) or retry math (`retry`).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use uuid::Uuid;

use super::Ctx;
use crate::config::Endpoint;
use crate::deliver::Outcome;
use crate::json;
use crate::model::{AttemptError, AttemptRecord, DeliveryRecord, DeliveryState, ErrorKind, EventRecord, PluginNote};
use crate::plugin::{CallInput, CallReport, ChainOutcome};
use crate::retry::RetryPolicy;
use crate::sign;
use crate::store::{ChainResult, Effects, Finish, Loaded, Next, StoreError};
use crate::telemetry;

/// How an attempt came about, which decides what follows a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// The retry schedule: failures retry until the policy says stop.
    Scheduled,
    /// A resend: one attempt; a failure leaves state and schedule as they were.
    Manual,
    /// Queued by a bulk resend: one attempt; a failure ends the delivery as failed again.
    Requeued,
}

/// Step 1's result: what to send, or how the delivery ends without sending.
pub enum Prepared {
    Send(Box<Ready>),
    /// Ends here: the durable write and what it means.
    Done(Box<Decided>),
}

/// A delivery ready to go out: its endpoint as of now and the exact bytes to sign and send.
pub struct Ready {
    pub delivery: DeliveryRecord,
    pub endpoint: Option<Endpoint>,
    pub body: String,
    /// The plugin chain's result when it ran in this pass (stored with the attempt).
    pub chain: Option<ChainResult>,
    pub mode: Mode,
    /// The event's `traceparent`: the attempt's span joins that trace.
    pub trace: Option<String>,
    /// The id the signature covers and `webhook-id` carries: a Svix-compatible message's id
    /// (the same for each of its deliveries); `None`: the delivery's idempotency key.
    pub sign_id: Option<String>,
}

/// Step 2's result: the attempt was made (or refused without a request).
pub struct Sent {
    pub delivery: DeliveryRecord,
    pub chain: Option<ChainResult>,
    pub mode: Mode,
    pub started_at_ms: u64,
    pub outcome: Outcome,
    /// The event's trace id (tracing on), for the attempt's log line.
    pub trace_id: Option<String>,
}

/// Step 3's result: the one durable write that ends this pass, and what it means for metrics.
#[derive(Debug)]
pub struct Decided {
    pub finish: Finish,
    /// The state the delivery reaches if this write commits, when that is a final state it was
    /// not in before (outcome metrics count transitions).
    pub newly_final: Option<DeliveryState>,
    /// When the delivery was created, for the end-to-end latency of a success.
    pub created_at_ms: u64,
    /// Written with `finish`: the endpoint's health and operational events.
    pub effects: Effects,
}

/// Step 4's result: the write is durable.
pub struct Recorded {
    pub newly_final: Option<DeliveryState>,
    pub created_at_ms: u64,
    /// What the charts count of this pass.
    pub sample: crate::tally::Sample,
}

/// Step 1: turns what the scan loaded into the body to send, running the plugin chain on the
/// first pass. Unreadable or missing records end the delivery durably instead of leaving it
/// due (which would make the scheduler find it again at once).
pub async fn prepare(
    ctx: &Ctx,
    delivery_id: Uuid,
    endpoint_id: &str,
    due_ms: u64,
    loaded: Loaded,
    scheduled: bool,
) -> Prepared {
    let drop_due = |why: &str| {
        tracing::error!(delivery_id = %delivery_id, endpoint = endpoint_id, problem = why, "due entry dropped");
        Prepared::Done(Box::new(Decided {
            finish: Finish::DropDue { endpoint_id: endpoint_id.to_owned(), due_ms, delivery_id },
            newly_final: None,
            created_at_ms: 0,
            effects: Effects::default(),
        }))
    };
    let (delivery, event) = match loaded {
        Loaded::Ready(d, e) => (*d, *e),
        Loaded::NoDelivery => return drop_due("the delivery record is missing"),
        Loaded::Unreadable(why) => return drop_due(&why),
        Loaded::NoEvent(d) => return internal_failure(*d, "the delivery's event record is missing".into()),
        Loaded::UnreadableEvent(d, why) => return internal_failure(*d, why),
    };
    // A due entry must belong to a pending delivery; anything else is a stale entry.
    if scheduled && delivery.state != DeliveryState::Pending {
        return drop_due("the delivery is not pending");
    }
    let mode = if !scheduled {
        Mode::Manual
    } else if delivery.requeued {
        Mode::Requeued
    } else {
        Mode::Scheduled
    };
    prepare_loaded(ctx, delivery, event, mode).await
}

/// Step 1 for a delivery whose records are in hand (the scan's, or a resend's own read).
pub async fn prepare_loaded(ctx: &Ctx, delivery: DeliveryRecord, event: EventRecord, mode: Mode) -> Prepared {
    let sign_id = event.message.as_ref().map(|_| event.message_id());
    let Some(endpoint) = ctx.endpoints.get(&delivery.endpoint_id) else {
        let trace = event.trace;
        return Prepared::Send(Box::new(Ready {
            delivery,
            endpoint: None,
            body: String::new(),
            chain: None,
            mode,
            trace,
            sign_id,
        }));
    };
    // A disabled endpoint's pending deliveries end here; a resend by hand still goes.
    if mode != Mode::Manual && !ctx.health.is_enabled(&endpoint.id) {
        let message = format!("endpoint {:?} is disabled", endpoint.id);
        let note = PluginNote { plugin: String::new(), message, kind: Some(ErrorKind::EndpointDisabled) };
        return Prepared::Done(Box::new(settle(delivery, DeliveryState::Failed, note)));
    }
    let envelope = match envelope(&event, delivery.idempotency_key) {
        Ok(body) => body,
        Err(e) => return internal_failure(delivery, format!("the stored event payload is unreadable: {e}")),
    };
    if delivery.prepared {
        let body = delivery.body.clone().unwrap_or(envelope);
        let trace = event.trace;
        let ready = Ready { delivery, endpoint: Some(endpoint), body, chain: None, mode, trace, sign_id };
        return Prepared::Send(Box::new(ready));
    }
    // One generation for the whole chain: a reload meanwhile does not mix old and new plugins.
    let generation = ctx.live.get();
    let chain = generation.config.chain(&delivery.trigger, &endpoint);
    let Some(host) = generation.plugins.as_ref().filter(|_| !chain.is_empty()) else {
        return Prepared::Send(Box::new(Ready {
            delivery,
            endpoint: Some(endpoint),
            body: envelope,
            chain: None,
            mode,
            trace: event.trace,
            sign_id,
        }));
    };
    let input = CallInput {
        trigger: delivery.trigger.clone(),
        event_id: delivery.event_id.to_string(),
        endpoint_id: delivery.endpoint_id.clone(),
        envelope: envelope.clone(),
        max_body_bytes: generation.config.server.max_body_bytes,
    };
    let outcome = if ctx.telemetry.enabled() {
        // Each call becomes a span of the event's trace, timed by the plugin host.
        let started = std::time::SystemTime::now();
        let (outcome, calls) = host.run_chain_traced(&chain, input).await;
        trace_plugin_calls(ctx, event.trace.as_deref(), started, &calls);
        outcome
    } else {
        host.run_chain(&chain, input).await
    };
    let trace = event.trace;
    let (state, note) = match outcome {
        ChainOutcome::Deliver { body } => {
            let chain = Some(ChainResult { body: body.clone() });
            let body = body.unwrap_or(envelope);
            let ready = Ready { delivery, endpoint: Some(endpoint), body, chain, mode, trace, sign_id };
            return Prepared::Send(Box::new(ready));
        }
        ChainOutcome::Filtered { plugin, reason } => {
            (DeliveryState::Filtered, PluginNote { plugin, message: reason, kind: None })
        }
        ChainOutcome::Failed { plugin, message } => (DeliveryState::Failed, PluginNote { plugin, message, kind: None }),
    };
    tracing::info!(delivery_id = %delivery.id, plugin = %note.plugin, state = state.as_str(), reason = %note.message, "delivery settled by a plugin");
    Prepared::Done(Box::new(settle(delivery, state, note)))
}

/// One `hookgate.plugin` span per call of a chain that started at `started`, under the event's
/// trace.
fn trace_plugin_calls(ctx: &Ctx, trace: Option<&str>, started: std::time::SystemTime, calls: &[CallReport]) {
    let parent = telemetry::remote(trace);
    let mut at = started;
    for call in calls {
        let decision = match &call.result {
            Ok(d) => d.kind(),
            Err(_) if call.skipped => "failed, skipped",
            Err(_) => "failed",
        };
        let attributes = vec![
            KeyValue::new("hookgate.plugin", call.plugin.clone()),
            KeyValue::new("hookgate.plugin.decision", decision),
            KeyValue::new("hookgate.plugin.peak_memory_bytes", call.peak_memory as i64),
        ];
        ctx.telemetry.past_span("hookgate.plugin", &parent, at, call.elapsed, attributes, call.result.is_err());
        at += call.elapsed;
    }
}

fn internal_failure(delivery: DeliveryRecord, message: String) -> Prepared {
    tracing::error!(delivery_id = %delivery.id, error = %message, "delivery failed: its stored records are unreadable");
    let note = PluginNote { plugin: String::new(), message, kind: Some(ErrorKind::Internal) };
    Prepared::Done(Box::new(settle(delivery, DeliveryState::Failed, note)))
}

fn settle(delivery: DeliveryRecord, state: DeliveryState, note: PluginNote) -> Decided {
    Decided {
        newly_final: (delivery.state != state).then_some(state),
        created_at_ms: delivery.created_at_ms,
        finish: Finish::Settle { delivery_id: delivery.id, state, note },
        effects: Effects::default(),
    }
}

/// Step 2: signs the body with a fresh timestamp and makes the attempt.
pub async fn send(ctx: &Ctx, ready: Box<Ready>) -> Sent {
    let started_at_ms = ctx.clock.now_ms();
    let Ready { delivery, endpoint, body, chain, mode, trace, sign_id } = *ready;
    // The attempt's span joins the event's trace; a retry also links back to the ingest.
    let number = delivery.attempts.len() + 1;
    let links = if number > 1 { trace.as_deref().and_then(telemetry::link_to).into_iter().collect() } else { vec![] };
    let span = ctx.telemetry.start_span(
        "hookgate.attempt",
        SpanKind::Client,
        &telemetry::remote(trace.as_deref()),
        vec![
            KeyValue::new("hookgate.delivery.id", delivery.id.to_string()),
            KeyValue::new("hookgate.endpoint.id", delivery.endpoint_id.clone()),
            KeyValue::new("hookgate.attempt.number", number as i64),
            KeyValue::new("hookgate.attempt.manual", mode != Mode::Scheduled),
        ],
        links,
    );
    let not_sent = |kind: ErrorKind, message: String| Outcome {
        status_code: None,
        error: Some(AttemptError { kind, message }),
        response_body: String::new(),
        duration: Duration::ZERO,
        retry_after: None,
    };
    let outcome = match endpoint {
        None => not_sent(ErrorKind::EndpointGone, format!("endpoint {:?} no longer exists", delivery.endpoint_id)),
        Some(endpoint) => {
            // The endpoint's own secret, else its tenant's (with a rotated-out one during the
            // overlap); the default tenant's are `[signing]`'s. An endpoint whose tenant is
            // gone sends nothing: its deliveries must not be signed with anyone else's key.
            let keys = ctx.tenants.signing_keys(&endpoint.tenant, started_at_ms);
            match (keys, &endpoint.secret) {
                (None, _) => not_sent(
                    ErrorKind::TenantGone,
                    format!("tenant {:?} of endpoint {:?} no longer exists", endpoint.tenant, delivery.endpoint_id),
                ),
                (Some(tenant_keys), own) => {
                    let (secret, previous) = match own {
                        // A rotated-out secret signs beside the new one until its overlap ends.
                        Some(s) => {
                            let until = |(_, until): &&(sign::Secret, u64)| *until > started_at_ms;
                            (s.clone(), endpoint.previous_secret.iter().filter(until).map(|(p, _)| p.clone()).collect())
                        }
                        None => tenant_keys,
                    };
                    let key = sign_id.unwrap_or_else(|| delivery.idempotency_key.to_string());
                    let signed = sign::sign(&secret, &previous, &key, (started_at_ms / 1000) as i64, body.as_bytes());
                    let generation = ctx.live.get();
                    let mut headers = signed.pairs_for(generation.config.delivery.signature_headers);
                    // The endpoint's custom headers (validated to never name one of these).
                    headers.extend(endpoint.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    let traceparent = telemetry::traceparent(&span);
                    if let Some(tp) = traceparent.as_deref().filter(|_| generation.config.delivery.propagate_trace) {
                        headers.push(("traceparent", tp));
                    }
                    generation.deliverer.send(&endpoint.url, &headers, body.into_bytes()).await
                }
            }
        }
    };
    let mut attributes = vec![KeyValue::new("hookgate.attempt.duration_ms", outcome.duration.as_millis() as i64)];
    if let Some(code) = outcome.status_code {
        attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
    }
    if let Some(e) = &outcome.error {
        attributes.push(KeyValue::new("error.type", e.kind.as_str()));
        telemetry::fail(&span, e.message.clone());
    }
    telemetry::record(&span, attributes);
    telemetry::end(&span);
    let trace_id = trace.as_deref().and_then(telemetry::trace_id);
    Sent { delivery, chain, mode, started_at_ms, outcome, trace_id }
}

/// Step 3: what follows the attempt, as the write that records it. `jitter` is a sample in
/// `[-1, 1]`.
pub fn decide_sent(policy: &RetryPolicy, sent: Sent, now_ms: u64, jitter: f64) -> Decided {
    let Sent { delivery, chain, mode, started_at_ms, outcome, trace_id } = sent;
    let next = match mode {
        Mode::Scheduled => decide(policy, delivery.automatic_attempts() + 1, &outcome, now_ms, jitter),
        Mode::Manual | Mode::Requeued if outcome.error.is_none() => Next::Succeeded,
        Mode::Manual => Next::Keep,
        Mode::Requeued => Next::Failed,
    };
    let number = delivery.attempts.len() as u32 + 1;
    let kind = outcome.error.as_ref().map(|e| e.kind);
    let fields = (delivery.id, &delivery.endpoint_id, number, mode != Mode::Scheduled, outcome.status_code);
    let next_text = || match next {
        Next::RetryAt(at) => crate::model::rfc3339(at),
        Next::Succeeded => "none (succeeded)".into(),
        Next::Failed => "none (failed)".into(),
        Next::Keep => "unchanged".into(),
    };
    // Successes are the bulk of the traffic and are in the delivery log; failures are what an
    // operator reads the log for.
    if kind.is_some() {
        tracing::info!(delivery_id = %fields.0, endpoint = %fields.1, attempt = fields.2, manual = fields.3, status = fields.4,
            error = kind.map(ErrorKind::as_str), duration_ms = outcome.duration.as_millis() as u64,
            next_attempt_at = next_text(), trace_id = trace_id.as_deref(), "attempt failed");
    } else {
        tracing::debug!(delivery_id = %fields.0, endpoint = %fields.1, attempt = fields.2, manual = fields.3, status = fields.4,
            duration_ms = outcome.duration.as_millis() as u64, trace_id = trace_id.as_deref(), "attempt succeeded");
    }
    let newly_final = match next {
        Next::Succeeded if delivery.state != DeliveryState::Succeeded => Some(DeliveryState::Succeeded),
        Next::Failed if delivery.state != DeliveryState::Failed => Some(DeliveryState::Failed),
        _ => None,
    };
    let attempt = AttemptRecord {
        number,
        started_at_ms,
        duration_ms: outcome.duration.as_millis() as u64,
        status_code: outcome.status_code,
        error: outcome.error,
        response_body: outcome.response_body,
        manual: mode != Mode::Scheduled,
    };
    Decided {
        finish: Finish::Attempt { delivery_id: delivery.id, attempt, next, prepared: chain },
        newly_final,
        created_at_ms: delivery.created_at_ms,
        effects: Effects::default(),
    }
}

/// Step 4: makes the decision durable through the store's group commit.
pub async fn record(ctx: &Ctx, decided: Decided) -> Result<Recorded, StoreError> {
    let Decided { finish, newly_final, created_at_ms, effects } = decided;
    let sample = super::charts::sample(&finish, newly_final);
    ctx.store.finish_with(finish, effects).await?;
    Ok(Recorded { newly_final, created_at_ms, sample })
}

/// The body a delivery sends: the event's fields plus its `idempotency_key`, in canonical JSON
/// (a Svix-compatible message: its payload as stored). These bytes are exactly the bytes signed.
/// Events stored with an envelope slot get the key spliced in; older ones are parsed and
/// rewritten.
pub fn envelope(event: &EventRecord, idempotency_key: Uuid) -> Result<String, json::ParseError> {
    // A Svix-compatible message is sent exactly as the producer wrote its payload.
    if event.message.is_some() {
        return Ok(event.payload.clone());
    }
    let key = idempotency_key.hyphenated().to_string();
    if let Some(spliced) =
        event.envelope_slot.and_then(|slot| json::splice_member(&event.payload, slot, "idempotency_key", &key))
    {
        return Ok(spliced);
    }
    let json::Value::Object(mut fields) = json::parse(event.payload.as_bytes())? else {
        return Err(json::ParseError { message: "stored payload is not an object".into() });
    };
    fields.insert("idempotency_key".into(), json::Value::String(key));
    Ok(json::Value::Object(fields).to_canonical())
}

/// What follows a scheduled attempt: success on 2xx; otherwise a retry while the policy allows
/// and the failure is retryable; otherwise a permanent failure. `attempts_made` counts this
/// attempt; `jitter` is a sample in `[-1, 1]`.
pub fn decide(policy: &RetryPolicy, attempts_made: u32, outcome: &Outcome, now_ms: u64, jitter: f64) -> Next {
    let Some(error) = &outcome.error else {
        return Next::Succeeded;
    };
    if !error.kind.is_retryable() || !policy.may_retry(attempts_made) {
        return Next::Failed;
    }
    let delay = policy.next_delay(attempts_made - 1, outcome.retry_after, jitter);
    Next::RetryAt(now_ms + delay.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(kind: Option<ErrorKind>, retry_after: Option<Duration>) -> Outcome {
        Outcome {
            status_code: None,
            error: kind.map(|kind| AttemptError { kind, message: String::new() }),
            response_body: String::new(),
            duration: Duration::ZERO,
            retry_after,
        }
    }

    #[test]
    fn decide_follows_the_policy() {
        let p = RetryPolicy {
            max_retries: 2,
            initial: Duration::from_secs(5),
            multiplier: 5.0,
            max: Duration::from_secs(60),
            jitter: 0.0,
        };
        assert_eq!(decide(&p, 1, &outcome(None, None), 0, 0.0), Next::Succeeded);
        assert_eq!(decide(&p, 1, &outcome(Some(ErrorKind::Status), None), 0, 0.0), Next::RetryAt(5_000));
        assert_eq!(decide(&p, 2, &outcome(Some(ErrorKind::Timeout), None), 0, 0.0), Next::RetryAt(25_000));
        assert_eq!(decide(&p, 3, &outcome(Some(ErrorKind::Status), None), 0, 0.0), Next::Failed);
        assert_eq!(decide(&p, 1, &outcome(Some(ErrorKind::Blocked), None), 0, 0.0), Next::Failed);
        assert_eq!(decide(&p, 1, &outcome(Some(ErrorKind::Internal), None), 0, 0.0), Next::Failed);
        let asked = Some(Duration::from_secs(40));
        assert_eq!(decide(&p, 1, &outcome(Some(ErrorKind::Status), asked), 0, 0.0), Next::RetryAt(40_000));
    }

    fn event_of(input: &[u8]) -> (EventRecord, Uuid) {
        let mut v = json::parse(input).unwrap();
        let json::Value::Object(o) = &mut v else { panic!() };
        let key: Uuid = o.remove("idempotency_key").map_or_else(Uuid::new_v4, |k| k.as_str().unwrap().parse().unwrap());
        let (payload, slot) = json::canonical_with_slot(o, "idempotency_key");
        let event = EventRecord {
            id: Uuid::now_v7(),
            received_at_ms: 0,
            trigger: "t".into(),
            payload,
            envelope_slot: Some(slot),
            delivery_ids: vec![],
            skipped: vec![],
            tenant: None,
            trace: None,
            message: None,
        };
        (event, key)
    }

    #[test]
    fn envelope_matches_the_vector_spliced_and_parsed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");
        let input = std::fs::read(format!("{dir}attendee-a.input.json")).unwrap();
        let expected = std::fs::read_to_string(format!("{dir}attendee-a.canonical")).unwrap();
        let (mut event, key) = event_of(&input);
        assert_eq!(envelope(&event, key).unwrap(), expected, "spliced at the stored slot");
        event.envelope_slot = None;
        assert_eq!(envelope(&event, key).unwrap(), expected, "parsed (records from before the slot)");
        event.envelope_slot = Some(3);
        assert_eq!(envelope(&event, key).unwrap(), expected, "a bad slot falls back to parsing");
    }

    proptest::proptest! {
        /// Splicing the key in gives the same bytes as parsing, inserting and rewriting.
        #[test]
        fn spliced_envelopes_equal_rewritten_ones(
            fields in proptest::collection::btree_map("[a-z_]{1,20}", "[a-z0-9 ]{0,8}", 0..8),
        ) {
            let mut doc = serde_json::Map::new();
            for (k, v) in fields {
                doc.insert(k, serde_json::Value::String(v));
            }
            doc.remove("idempotency_key");
            let (event, key) = event_of(serde_json::Value::Object(doc).to_string().as_bytes());
            let spliced = envelope(&event, key).unwrap();
            let parsed = envelope(&EventRecord { envelope_slot: None, ..event.clone() }, key).unwrap();
            proptest::prop_assert_eq!(spliced, parsed);
        }
    }
}
