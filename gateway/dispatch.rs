//! Dispatch: the only module that knows the order of the delivery stages.
//!
//! Owns: the scheduler loop (find due deliveries on disk → claim a slot → attempt → record), the
//! concurrency limits, global and per endpoint, and manual resends, which go through the same
//! attempt path.
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

use crate::config::Config;
use crate::deliver::{Deliverer, Outcome, Policy};
use crate::endpoints::Registry;
use crate::json;
use crate::metrics::Metrics;
use crate::model::{
    AttemptError, AttemptRecord, DeliveryRecord, DeliveryState, ErrorKind, EventRecord, MAX_ATTEMPTS, PluginNote,
    now_ms,
};
use crate::plugin::{CallInput, ChainOutcome, PluginHost};
use crate::retry::RetryPolicy;
use crate::sign;
use crate::store::{DueItem, Next, Prepared, Store, StoreError};

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

/// A handle to the delivery machinery, shared by the scheduler and the API's resend routes.
#[derive(Clone)]
pub struct Dispatcher {
    ctx: Arc<Ctx>,
}

struct Ctx {
    config: Arc<Config>,
    store: Store,
    deliverer: Deliverer,
    endpoints: Arc<Registry>,
    plugins: Option<Arc<PluginHost>>,
    metrics: Arc<Metrics>,
    in_flight: Mutex<InFlight>,
    /// Signalled by ingest after a commit and by every finished attempt.
    wake: Arc<Notify>,
}

/// Releases an in-flight slot when an attempt ends, however it ends (even when aborted at
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

/// Why a manual resend was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no delivery with this id")]
    NotFound,
    #[error("an attempt of this delivery is in progress; try again when it has finished")]
    InProgress,
    #[error("a plugin filtered this delivery; there is no body to send")]
    Filtered,
    #[error("this delivery has reached the cap of {MAX_ATTEMPTS} attempts")]
    AttemptCap,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an attempt came about, which decides what follows a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// The retry schedule: failures retry until the policy says stop.
    Scheduled,
    /// A resend: one attempt; a failure leaves state and schedule as they were.
    Manual,
    /// Queued by a bulk resend: one attempt; a failure ends the delivery as failed again.
    Requeued,
}

impl Dispatcher {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        endpoints: Arc<Registry>,
        plugins: Option<Arc<PluginHost>>,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Dispatcher> {
        let deliverer = Deliverer::new(Policy {
            timeout: config.delivery.timeout,
            allow_http: config.delivery.allow_http,
            allow_private_networks: config.delivery.allow_private_networks,
        })?;
        Ok(Dispatcher {
            ctx: Arc::new(Ctx {
                config,
                store,
                deliverer,
                endpoints,
                plugins,
                metrics,
                in_flight: Mutex::new(InFlight::default()),
                wake,
            }),
        })
    }

    /// Runs the scheduler until `shutdown` fires, then gives in-flight attempts
    /// `server.shutdown_grace` to finish. Attempts still running after that are dropped; their
    /// due entries are untouched on disk, so the next start resumes them.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let ctx = &self.ctx;
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let sleep_for = match schedule_round(ctx, &mut tasks).await {
                Ok(Some(next_due)) => Duration::from_millis(next_due.saturating_sub(now_ms())).min(MAX_IDLE),
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
        let grace = ctx.config.server.shutdown_grace;
        if !tasks.is_empty() {
            tracing::info!(in_flight = tasks.len(), ?grace, "waiting for in-flight attempts");
        }
        let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "attempts still running after the grace period; they will be retried on the next start"
            );
            tasks.shutdown().await;
        }
        Ok(())
    }

    /// Makes one manual attempt of a delivery now (same idempotency key, freshly signed) and
    /// records it. Refused for filtered deliveries, past the attempt cap, and while another
    /// attempt of the same delivery runs.
    pub async fn resend(&self, id: Uuid) -> Result<(), ResendError> {
        let ctx = &self.ctx;
        let (delivery, event) = ctx.store.delivery_with_event(id).await?.ok_or(ResendError::NotFound)?;
        if delivery.state == DeliveryState::Filtered {
            return Err(ResendError::Filtered);
        }
        if delivery.attempts.len() >= MAX_ATTEMPTS {
            return Err(ResendError::AttemptCap);
        }
        let slot = try_claim(ctx, id, &delivery.endpoint_id).ok_or(ResendError::InProgress)?;
        perform(ctx, delivery, event, Mode::Manual).await;
        drop(slot);
        Ok(())
    }
}

/// Claims every due delivery that fits in the free slots and starts its attempt. Returns the
/// next future due time seen, if any.
async fn schedule_round(ctx: &Arc<Ctx>, tasks: &mut JoinSet<()>) -> Result<Option<u64>, StoreError> {
    let (ids, counts, global_free) = {
        let f = ctx.in_flight.lock().expect("in-flight lock");
        let free = ctx.config.delivery.max_in_flight.saturating_sub(f.ids.len());
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
        if let Some(slot) = try_claim(ctx, item.delivery_id, &item.endpoint_id) {
            tasks.spawn(scheduled_attempt(ctx.clone(), item, slot));
        }
    }
    Ok(scan.next_due_ms)
}

/// Marks a delivery in flight, unless it already is.
fn try_claim(ctx: &Arc<Ctx>, id: Uuid, endpoint: &str) -> Option<Slot> {
    let mut f = ctx.in_flight.lock().expect("in-flight lock");
    if !f.ids.insert(id) {
        return None;
    }
    *f.per_endpoint.entry(endpoint.to_owned()).or_default() += 1;
    Some(Slot { ctx: ctx.clone(), id, endpoint: endpoint.to_owned() })
}

async fn scheduled_attempt(ctx: Arc<Ctx>, item: DueItem, _slot: Slot) {
    let id = item.delivery_id;
    match ctx.store.delivery_with_event(id).await {
        Ok(Some((d, e))) if d.state == DeliveryState::Pending => {
            let mode = if d.requeued { Mode::Requeued } else { Mode::Scheduled };
            perform(&ctx, d, e, mode).await;
        }
        Ok(Some(_)) => {}
        Ok(None) => tracing::error!(delivery_id = %id, "due delivery has no record"),
        Err(e) => tracing::error!(delivery_id = %id, error = %e, "cannot load a due delivery"),
    }
}

/// One attempt of one delivery, from building its body to recording what happened.
async fn perform(ctx: &Ctx, delivery: DeliveryRecord, event: EventRecord, mode: Mode) {
    let id = delivery.id;
    let number = delivery.attempts.len() as u32 + 1;
    let started_at_ms = now_ms();
    let mut prepared = None;
    let outcome = match ctx.endpoints.get(&delivery.endpoint_id) {
        None => Outcome {
            status_code: None,
            error: Some(AttemptError {
                kind: ErrorKind::EndpointGone,
                message: format!("endpoint {:?} no longer exists", delivery.endpoint_id),
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
                let chain = ctx.config.chain(&delivery.trigger, &endpoint);
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
                                let note = PluginNote { plugin, message: reason };
                                settle(ctx, &delivery, DeliveryState::Filtered, note).await;
                                return;
                            }
                            ChainOutcome::Failed { plugin, message } => {
                                settle(ctx, &delivery, DeliveryState::Failed, PluginNote { plugin, message }).await;
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
            let signed = sign::sign(secret, previous, &key, (started_at_ms / 1000) as i64, body.as_bytes());
            ctx.deliverer.send(&endpoint.url, &signed.pairs(), body.into_bytes()).await
        }
    };
    let next = match mode {
        Mode::Scheduled => decide(
            &ctx.config.delivery.retry,
            delivery.automatic_attempts() + 1,
            &outcome,
            now_ms(),
            fastrand::f64() * 2.0 - 1.0,
        ),
        Mode::Manual if outcome.error.is_none() => Next::Succeeded,
        Mode::Manual => Next::Keep,
        Mode::Requeued if outcome.error.is_none() => Next::Succeeded,
        Mode::Requeued => Next::Failed,
    };
    let kind = outcome.error.as_ref().map(|e| e.kind);
    ctx.metrics.attempt(outcome.status_code, kind, outcome.duration);
    tracing::info!(
        delivery_id = %id,
        endpoint = %delivery.endpoint_id,
        attempt = number,
        manual = mode != Mode::Scheduled,
        status = outcome.status_code,
        error = kind.map(ErrorKind::as_str),
        duration_ms = outcome.duration.as_millis() as u64,
        next_attempt_at = match next {
            Next::RetryAt(at) => crate::model::rfc3339(at),
            Next::Succeeded => "none (succeeded)".into(),
            Next::Failed => "none (failed)".into(),
            Next::Keep => "unchanged".into(),
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
        manual: mode != Mode::Scheduled,
    };
    match ctx.store.record_attempt(id, record, next, prepared).await {
        Ok(()) => match next {
            Next::Succeeded if delivery.state != DeliveryState::Succeeded => {
                ctx.metrics.outcome(DeliveryState::Succeeded);
                let since = Duration::from_millis(now_ms().saturating_sub(delivery.created_at_ms));
                ctx.metrics.delivery_latency.observe(since);
            }
            Next::Failed if delivery.state != DeliveryState::Failed => ctx.metrics.outcome(DeliveryState::Failed),
            _ => {}
        },
        // The due entry is unchanged, so the delivery is attempted again: at worst a duplicate.
        Err(e) => tracing::error!(delivery_id = %id, error = %e, "cannot record an attempt"),
    }
}

/// Ends a delivery without an attempt because of its plugin chain.
async fn settle(ctx: &Ctx, delivery: &DeliveryRecord, state: DeliveryState, note: PluginNote) {
    let id = delivery.id;
    tracing::info!(delivery_id = %id, plugin = %note.plugin, state = state.as_str(), reason = %note.message, "delivery settled by a plugin");
    match ctx.store.settle(id, state, note).await {
        // Outcomes count transitions: a resend that fails the same way again is not a new one.
        Ok(()) if delivery.state != state => ctx.metrics.outcome(state),
        Ok(()) => {}
        // Still due: the chain runs again on the next round.
        Err(e) => tracing::error!(delivery_id = %id, error = %e, "cannot record a plugin outcome"),
    }
}

/// The body a delivery sends: the event's fields plus its `idempotency_key`, in canonical JSON.
/// These bytes are exactly the bytes signed.
pub fn envelope(payload: &str, idempotency_key: Uuid) -> Result<String, json::ParseError> {
    let json::Value::Object(mut fields) = json::parse(payload.as_bytes())? else {
        return Err(json::ParseError { message: "stored payload is not an object".into() });
    };
    fields.insert("idempotency_key".into(), json::Value::String(idempotency_key.to_string()));
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
        let asked = Some(Duration::from_secs(40));
        assert_eq!(decide(&p, 1, &outcome(Some(ErrorKind::Status), asked), 0, 0.0), Next::RetryAt(40_000));
    }

    #[test]
    fn envelope_matches_the_vector() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");
        let input = std::fs::read(format!("{dir}attendee-a.input.json")).unwrap();
        let expected = std::fs::read_to_string(format!("{dir}attendee-a.canonical")).unwrap();
        let mut v = json::parse(&input).unwrap();
        let json::Value::Object(o) = &mut v else { panic!() };
        let key: Uuid = o.remove("idempotency_key").unwrap().as_str().unwrap().parse().unwrap();
        assert_eq!(envelope(&v.to_canonical(), key).unwrap(), expected);
    }
}
