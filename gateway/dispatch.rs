//! Dispatch: the only module that knows the order of the delivery stages.
//!
//! Owns: the scheduler loop (find due deliveries on disk → claim a slot → attempt → record) and
//! the concurrency limits, global and per endpoint.
//! Must not touch: HTTP details (that is `deliver`), the on-disk layout (that is `store`) or the
//! signing recipes (that is `sign`). It calls them in order:
//!
//! ```text
//! store.scan_due → envelope → plugin chain (first attempt only) → sign → deliver.send
//!     → decide (retry math) → store.record_attempt
//! ```
//!
//! The plugin chain's result is stored with the first attempt, so every retry sends and signs
//! the same bytes; a drop or a plugin failure settles the delivery without an attempt.
//!
//! **Invariant:** nothing about pending work lives only in memory. The scheduler re-reads the
//! due index each round; the in-memory state is just which deliveries are in flight right now.
//! A crash therefore loses no work: the due entries of in-flight attempts are still on disk and
//! are attempted again after a restart (the only duplicates a crash can cause).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Config, Endpoint};
use crate::deliver::{Deliverer, Outcome, Policy};
use crate::json;
use crate::model::{AttemptError, AttemptRecord, DeliveryState, ErrorKind, PluginNote, now_ms};
use crate::plugin::{CallInput, ChainOutcome, PluginHost};
use crate::retry::RetryPolicy;
use crate::sign;
use crate::store::{DueItem, Next, Prepared, Store};

/// The longest the scheduler sleeps without looking at the due index. Wake-ups come from
/// ingest and from finished attempts; this bound is only a safety net.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How long to wait before scanning again after the store failed a read.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Deliveries in flight, by id and per endpoint. Guarded by a std mutex: it is held for a few
/// map operations only and never across an `.await`.
#[derive(Default)]
struct InFlight {
    ids: HashSet<Uuid>,
    per_endpoint: HashMap<String, usize>,
}

struct Ctx {
    config: Arc<Config>,
    store: Store,
    deliverer: Deliverer,
    endpoints: HashMap<String, Endpoint>,
    plugins: Option<Arc<PluginHost>>,
    in_flight: Mutex<InFlight>,
    /// Signalled by ingest after a commit and by every finished attempt.
    wake: Arc<Notify>,
}

/// Releases an in-flight slot when an attempt task ends, however it ends (even when aborted at
/// shutdown), and wakes the scheduler so the slot is reused at once.
struct Slot {
    ctx: Arc<Ctx>,
    id: Uuid,
    endpoint: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut f = self.ctx.in_flight.lock().expect("in-flight lock");
        f.ids.remove(&self.id);
        if let Some(n) = f.per_endpoint.get_mut(&self.endpoint) {
            *n -= 1;
            if *n == 0 {
                f.per_endpoint.remove(&self.endpoint);
            }
        }
        drop(f);
        self.ctx.wake.notify_one();
    }
}

/// Runs the scheduler until `shutdown` fires, then gives in-flight attempts
/// `server.shutdown_grace` to finish. Attempts still running after that are dropped; their due
/// entries are untouched on disk, so the next start resumes them.
pub async fn run(
    config: Arc<Config>,
    store: Store,
    plugins: Option<Arc<PluginHost>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let deliverer = Deliverer::new(Policy {
        timeout: config.delivery.timeout,
        allow_http: config.delivery.allow_http,
        allow_private_networks: config.delivery.allow_private_networks,
    })?;
    let endpoints = config
        .endpoints
        .iter()
        .map(|e| (e.id.clone(), e.clone()))
        .collect();
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        store,
        deliverer,
        endpoints,
        plugins,
        in_flight: Mutex::new(InFlight::default()),
        wake,
    });
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let sleep_for = match schedule_round(&ctx, &mut tasks).await {
            Ok(Some(next_due)) => {
                Duration::from_millis(next_due.saturating_sub(now_ms())).min(MAX_IDLE)
            }
            Ok(None) => MAX_IDLE,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the due index; retrying");
                STORE_ERROR_BACKOFF
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
    let grace = config.server.shutdown_grace;
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(in_flight, ?grace, "waiting for in-flight attempts");
    }
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "attempts still running after the grace period; they will be retried on the next start"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// Claims every due delivery that fits in the free slots and starts its attempt. Returns the
/// next future due time seen, if any.
async fn schedule_round(
    ctx: &Arc<Ctx>,
    tasks: &mut JoinSet<()>,
) -> Result<Option<u64>, crate::store::StoreError> {
    let (ids, counts, global_free) = {
        let f = ctx.in_flight.lock().expect("in-flight lock");
        let free = ctx
            .config
            .delivery
            .max_in_flight
            .saturating_sub(f.ids.len());
        (f.ids.clone(), f.per_endpoint.clone(), free)
    };
    if global_free == 0 {
        // Every slot is busy; a finishing attempt wakes us.
        return Ok(None);
    }
    let per_endpoint = ctx.config.delivery.max_in_flight_per_endpoint;
    let scan = ctx
        .store
        .scan_due(
            now_ms(),
            ids,
            move |ep| per_endpoint.saturating_sub(counts.get(ep).copied().unwrap_or(0)),
            global_free,
        )
        .await?;
    for item in scan.items {
        let slot = claim(ctx, &item);
        tasks.spawn(attempt(ctx.clone(), item, slot));
    }
    Ok(scan.next_due_ms)
}

fn claim(ctx: &Arc<Ctx>, item: &DueItem) -> Slot {
    let mut f = ctx.in_flight.lock().expect("in-flight lock");
    f.ids.insert(item.delivery_id);
    *f.per_endpoint.entry(item.endpoint_id.clone()).or_default() += 1;
    Slot {
        ctx: ctx.clone(),
        id: item.delivery_id,
        endpoint: item.endpoint_id.clone(),
    }
}

/// One attempt of one delivery, from reading it to recording what happened.
async fn attempt(ctx: Arc<Ctx>, item: DueItem, _slot: Slot) {
    let id = item.delivery_id;
    let (delivery, event) = match ctx.store.delivery_with_event(id).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            tracing::error!(delivery_id = %id, "due delivery has no record");
            return;
        }
        Err(e) => {
            tracing::error!(delivery_id = %id, error = %e, "cannot load a due delivery");
            return;
        }
    };
    if delivery.state != DeliveryState::Pending {
        return;
    }
    let number = delivery.attempts.len() as u32 + 1;
    let started_at_ms = now_ms();
    let mut prepared = None;
    let outcome = match ctx.endpoints.get(&delivery.endpoint_id) {
        None => Outcome {
            status_code: None,
            error: Some(AttemptError {
                kind: ErrorKind::EndpointGone,
                message: format!(
                    "endpoint {:?} is no longer configured",
                    delivery.endpoint_id
                ),
            }),
            response_body: String::new(),
            duration: Duration::ZERO,
            retry_after: None,
        },
        Some(endpoint) => {
            let envelope = match envelope(&event.payload, delivery.idempotency_key) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(delivery_id = %id, error = %e, "stored event payload is unreadable");
                    return;
                }
            };
            let body = if delivery.prepared {
                delivery.body.clone().unwrap_or(envelope)
            } else {
                let chain = ctx.config.chain(&delivery.trigger, endpoint);
                match (&ctx.plugins, chain.is_empty()) {
                    (_, true) | (None, _) => envelope,
                    (Some(host), false) => {
                        let input = CallInput {
                            trigger: delivery.trigger.clone(),
                            event_id: delivery.event_id.to_string(),
                            endpoint_id: delivery.endpoint_id.clone(),
                            envelope: envelope.clone(),
                            max_body_bytes: ctx.config.server.max_body_bytes,
                        };
                        match host.run_chain(chain, input).await {
                            ChainOutcome::Deliver { body } => {
                                prepared = Some(Prepared { body: body.clone() });
                                body.unwrap_or(envelope)
                            }
                            ChainOutcome::Filtered { plugin, reason } => {
                                let note = PluginNote {
                                    plugin,
                                    message: reason,
                                };
                                settle(&ctx, id, DeliveryState::Filtered, note).await;
                                return;
                            }
                            ChainOutcome::Failed { plugin, message } => {
                                let note = PluginNote { plugin, message };
                                settle(&ctx, id, DeliveryState::Failed, note).await;
                                return;
                            }
                        }
                    }
                }
            };
            let signing = &ctx.config.signing;
            let (secret, previous) = match &endpoint.secret {
                Some(s) => (s, &[][..]),
                None => (&signing.secret, signing.previous_secrets.as_slice()),
            };
            let key = delivery.idempotency_key.to_string();
            let signed = sign::sign(
                secret,
                previous,
                &key,
                (started_at_ms / 1000) as i64,
                body.as_bytes(),
            );
            ctx.deliverer
                .send(&endpoint.url, &signed.pairs(), body.into_bytes())
                .await
        }
    };
    let next = decide(
        &ctx.config.delivery.retry,
        number,
        &outcome,
        now_ms(),
        fastrand::f64() * 2.0 - 1.0,
    );
    let kind = outcome.error.as_ref().map(|e| e.kind.as_str());
    tracing::info!(
        delivery_id = %id,
        endpoint = %delivery.endpoint_id,
        attempt = number,
        status = outcome.status_code,
        error = kind,
        duration_ms = outcome.duration.as_millis() as u64,
        next_attempt_at = match next {
            Next::RetryAt(at) => crate::model::rfc3339(at),
            Next::Succeeded => "none (succeeded)".into(),
            Next::Failed => "none (failed)".into(),
        },
        "attempt finished"
    );
    let record = AttemptRecord {
        number,
        started_at_ms,
        duration_ms: outcome.duration.as_millis() as u64,
        status_code: outcome.status_code,
        error: outcome.error,
        response_body: outcome.response_body,
    };
    if let Err(e) = ctx.store.record_attempt(id, record, next, prepared).await {
        // The due entry is unchanged, so the delivery is attempted again: at worst a duplicate.
        tracing::error!(delivery_id = %id, error = %e, "cannot record an attempt");
    }
}

/// Ends a delivery without an attempt because of its plugin chain.
async fn settle(ctx: &Ctx, id: Uuid, state: DeliveryState, note: PluginNote) {
    tracing::info!(delivery_id = %id, plugin = %note.plugin, state = state.as_str(), reason = %note.message, "delivery settled by a plugin");
    if let Err(e) = ctx.store.settle(id, state, note).await {
        // Still due: the chain runs again on the next round.
        tracing::error!(delivery_id = %id, error = %e, "cannot record a plugin outcome");
    }
}

/// The body a delivery sends: the event's fields plus its `idempotency_key`, in canonical JSON.
/// These bytes are exactly the bytes signed.
pub fn envelope(payload: &str, idempotency_key: Uuid) -> Result<String, json::ParseError> {
    let json::Value::Object(mut fields) = json::parse(payload.as_bytes())? else {
        return Err(json::ParseError {
            message: "stored payload is not an object".into(),
        });
    };
    fields.insert(
        "idempotency_key".into(),
        json::Value::String(idempotency_key.to_string()),
    );
    Ok(json::Value::Object(fields).to_canonical())
}

/// What follows an attempt: success on 2xx; otherwise a retry while the policy allows and the
/// failure is retryable; otherwise a permanent failure. `jitter` is a sample in `[-1, 1]`.
pub fn decide(
    policy: &RetryPolicy,
    attempts_made: u32,
    outcome: &Outcome,
    now_ms: u64,
    jitter: f64,
) -> Next {
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
            error: kind.map(|kind| AttemptError {
                kind,
                message: String::new(),
            }),
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
        assert_eq!(
            decide(&p, 1, &outcome(Some(ErrorKind::Status), None), 0, 0.0),
            Next::RetryAt(5_000)
        );
        assert_eq!(
            decide(&p, 2, &outcome(Some(ErrorKind::Timeout), None), 0, 0.0),
            Next::RetryAt(25_000)
        );
        assert_eq!(
            decide(&p, 3, &outcome(Some(ErrorKind::Status), None), 0, 0.0),
            Next::Failed
        );
        assert_eq!(
            decide(&p, 1, &outcome(Some(ErrorKind::Blocked), None), 0, 0.0),
            Next::Failed
        );
        let asked = Some(Duration::from_secs(40));
        assert_eq!(
            decide(&p, 1, &outcome(Some(ErrorKind::Status), asked), 0, 0.0),
            Next::RetryAt(40_000)
        );
    }

    #[test]
    fn envelope_matches_the_vector() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");
        let input = std::fs::read(format!("{dir}attendee-a.input.json")).unwrap();
        let expected = std::fs::read_to_string(format!("{dir}attendee-a.canonical")).unwrap();
        let mut v = json::parse(&input).unwrap();
        let json::Value::Object(o) = &mut v else {
            panic!()
        };
        let key: Uuid = o
            .remove("idempotency_key")
            .unwrap()
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(envelope(&v.to_canonical(), key).unwrap(), expected);
    }
}
