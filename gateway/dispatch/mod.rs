//! Dispatch: the only module that knows the order of the delivery stages.
//!
//! Owns: the scheduler loop (scan due deliveries on disk → claim → run the attempt pipeline of
//! `dispatch::attempt`), the concurrency limits, global and per endpoint, the cooldown of
//! deliveries whose record could not be written, and manual resends, which go through the same
//! pipeline.
//! Must not touch: HTTP details (that is `deliver`), the on-disk layout (that is `store`) or the
//! signing recipes (that is `sign`). The stages, in order:
//!
//! ```text
//! store.scan_due (records read in the scan's snapshot) → envelope → plugin chain (first pass
//!     only) → sign → deliver.send → decide (retry math) → store.finish (group commit)
//! ```
//!
//! **Slots and claims.** A *slot* bounds concurrent attempts (`max_in_flight` overall,
//! `max_in_flight_per_endpoint` each): a permit of the endpoint's semaphore and one of the global
//! semaphore, held from just before the plugin chain until the response is in. It is released
//! *before* the record is committed, so an endpoint's throughput is not capped by commit
//! latency. A *claim* marks a delivery as this process's business until its record is durable,
//! so the scan skips it; the scheduler snapshots the claims before each scan, which makes a
//! claim released after a commit invisible to a snapshot older than that commit. The scan
//! claims up to `LOOKAHEAD` times the limits: the extra passes wait for a slot in memory, and a
//! finished attempt hands its slot straight to the next one, so slots do not idle between
//! scheduler rounds.
//!
//! The claims and slots themselves live in `dispatch::claims`; the typed attempt pipeline in
//! `dispatch::attempt`.
//!
//! **Invariant:** nothing about pending work lives only in memory. The due index is re-read
//! every round; the in-memory state is which deliveries are claimed right now (and the cooldowns
//! below). A crash therefore loses no work: the due entries of claimed deliveries are still on
//! disk and are attempted again after a restart (the only duplicates a crash can cause).
//!
//! **Failed writes never loop.** When the write that ends a pass fails (a full disk), the
//! delivery stays claimed in a cooldown that doubles from [`COOLDOWN_INITIAL`] to
//! [`COOLDOWN_MAX`], and the scheduler starts no new attempt for the same time: an error log
//! line and `hookgate_attempt_record_failures_total` record it. The first successful write ends
//! the pause.

mod attempt;
mod charts;
mod claims;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use attempt::{Decided, Mode, Prepared};
pub use attempt::{decide, envelope};
pub use claims::cooldown_after;
use claims::{Claim, Claims, tenant_of, try_claim};

use crate::clock::SharedClock;
use crate::health::{Allowance, HealthBook};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::model::{DeliveryState, MAX_ATTEMPTS};
use crate::operations::Operations;
use crate::registry::Registry;
use crate::store::{DueItem, Store, StoreError};
use crate::telemetry::Telemetry;
use crate::tenants::Tenants;

/// The longest the scheduler sleeps without looking at the due index. Wake-ups come from
/// ingest and from finished attempts; this bound is only a safety net.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// The same bound on PostgreSQL, where other nodes' writes also make work due: `LISTEN` wakes
/// the scheduler for them, and this poll covers a notification lost while reconnecting.
const MAX_IDLE_SHARED: Duration = Duration::from_secs(5);

/// The shortest time between two scheduler rounds on PostgreSQL, where a round is a claim
/// transaction: wake-ups within it are served by one round. Slots are handed from a finished
/// attempt to a claimed one without a round, so this adds latency only to new work.
const MIN_ROUND_SHARED: Duration = Duration::from_millis(2);

/// How far the scan reads ahead of the slots: it claims up to this many times the concurrency
/// limits, and the extra passes wait for a slot in memory (their due entries stay on disk). A
/// finished attempt hands its slot straight to the next one, so a slot never idles waiting for
/// the scheduler's next round.
const LOOKAHEAD: usize = 2;

/// The first cooldown after a failed record write; it doubles with each failure in a row.
pub const COOLDOWN_INITIAL: Duration = Duration::from_millis(200);
/// The longest cooldown: a store that stays broken is probed at least this often.
pub const COOLDOWN_MAX: Duration = Duration::from_secs(30);
/// Deliveries held in cooldown at most; past it the scheduler starts no new attempts until
/// writes succeed again, so a broken store cannot grow this map without bound.
const MAX_COOLING: usize = 10_000;

/// A handle to the delivery machinery, shared by the scheduler and the API's resend routes.
#[derive(Clone)]
pub struct Dispatcher {
    ctx: Arc<Ctx>,
}

pub(crate) struct Ctx {
    /// The running generation: config, plugins and the HTTP client, read per attempt.
    live: Arc<Live>,
    store: Store,
    endpoints: Arc<Registry>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    health: Arc<HealthBook>,
    tenants: Arc<Tenants>,
    /// Spans of plugin calls and attempts (a no-op when tracing is off).
    telemetry: Telemetry,
    claims: Mutex<Claims>,
    /// `max_in_flight` permits: attempts running at once over all endpoints.
    global_slots: Arc<Semaphore>,
    /// Signalled by ingest after a commit, by every released slot and by every released claim.
    wake: Arc<Notify>,
    /// What recorded passes counted for the charts since the last flush (`charts`).
    tally: crate::tally::Tally,
}

/// Why a manual resend was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no delivery with this id")]
    NotFound,
    #[error("an attempt of this delivery is in progress; try again when it has finished")]
    InProgress,
    #[error(
        "this delivery waits behind older ones in its endpoint's FIFO queue; it is sent when they are final (resend the oldest pending one instead)"
    )]
    WaitingInOrder,
    #[error("a plugin filtered this delivery; there is no body to send")]
    Filtered,
    #[error("this delivery has reached the cap of {MAX_ATTEMPTS} attempts")]
    AttemptCap,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the dispatcher shares with the rest of the gateway.
pub struct Parts {
    pub live: Arc<Live>,
    pub store: Store,
    pub endpoints: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    pub clock: SharedClock,
    pub health: Arc<HealthBook>,
    pub tenants: Arc<Tenants>,
    pub telemetry: Telemetry,
}

impl Dispatcher {
    pub fn new(parts: Parts) -> anyhow::Result<Dispatcher> {
        let Parts { live, store, endpoints, metrics, wake, clock, health, tenants, telemetry } = parts;
        let global_slots = Arc::new(Semaphore::new(live.config().delivery.max_in_flight));
        Ok(Dispatcher {
            ctx: Arc::new(Ctx {
                live,
                store,
                endpoints,
                metrics,
                clock,
                health,
                tenants,
                telemetry,
                claims: Mutex::new(Claims::default()),
                global_slots,
                wake,
                tally: crate::tally::Tally::default(),
            }),
        })
    }

    /// How many deliveries are held back after a failed record write.
    pub fn cooling_down(&self) -> usize {
        self.ctx.claims.lock().expect("claims lock").cooling.len()
    }

    /// Runs the scheduler until `shutdown` fires, then gives in-flight attempts
    /// `server.shutdown_grace` to finish. Attempts still running after that are dropped; their
    /// due entries are untouched on disk, so the next start resumes them.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let ctx = &self.ctx;
        let mut tasks = JoinSet::new();
        let mut read_failures = 0u32;
        let max_idle = if ctx.store.postgres().is_some() { MAX_IDLE_SHARED } else { MAX_IDLE };
        let min_round = if ctx.store.postgres().is_some() { MIN_ROUND_SHARED } else { Duration::ZERO };
        let mut last_round = tokio::time::Instant::now();
        let renewals =
            ctx.store.postgres().map(|pg| tokio::spawn(renew_leases(ctx.clone(), pg.lease(), shutdown.clone())));
        let stop_tally = CancellationToken::new();
        let tally = tokio::spawn(charts::flush_loop(ctx.clone(), stop_tally.clone()));
        loop {
            while tasks.try_join_next().is_some() {}
            let sleep_for = match schedule_round(ctx, &mut tasks).await {
                Ok(next) => {
                    read_failures = 0;
                    next.map_or(max_idle, |at| {
                        Duration::from_millis(at.saturating_sub(ctx.clock.now_ms())).min(max_idle)
                    })
                }
                Err(e) => {
                    read_failures = read_failures.saturating_add(1);
                    let wait = cooldown_after(read_failures);
                    tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot read the due index");
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ctx.wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
            // On a shared database every round is a claim transaction: gather the wake-ups of
            // a few milliseconds (finished attempts, new events) into one round.
            if let Some(rest) = min_round.checked_sub(last_round.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            last_round = tokio::time::Instant::now();
        }
        let grace = ctx.live.config().server.shutdown_grace;
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
        // The last counts, after the last attempts.
        stop_tally.cancel();
        let _ = tally.await;
        if let Some(r) = renewals {
            let _ = r.await;
            // Whatever this node still holds is free for the other nodes now, not at the end
            // of its leases.
            if let Err(e) = ctx.store.release_leases(None).await {
                tracing::warn!(error = %e, "cannot release this node's leases; they run out by themselves");
            }
        }
        Ok(())
    }

    /// Hands what this node counted for the charts to the store now (a chart read then
    /// includes the last second).
    pub async fn flush_tally(&self) {
        charts::flush(&self.ctx).await;
    }

    /// Makes one manual attempt of a delivery now (same idempotency key, freshly signed) and
    /// records it. Refused for filtered deliveries, past the attempt cap, and while another
    /// pass over the same delivery is under way.
    pub async fn resend(&self, id: Uuid) -> Result<(), ResendError> {
        let ctx = &self.ctx;
        let (delivery, event) = ctx.store.delivery_with_event(id).await?.ok_or(ResendError::NotFound)?;
        if delivery.state == DeliveryState::Filtered {
            return Err(ResendError::Filtered);
        }
        if delivery.attempts.len() >= MAX_ATTEMPTS {
            return Err(ResendError::AttemptCap);
        }
        // A manual attempt must not overtake older deliveries of the same FIFO queue.
        if delivery.state == DeliveryState::Pending && delivery.fifo.is_some() && !ctx.store.is_due(&delivery).await? {
            return Err(ResendError::WaitingInOrder);
        }
        let endpoint_id = delivery.endpoint_id.clone();
        let mut claim = try_claim(ctx, id, &endpoint_id).ok_or(ResendError::InProgress)?;
        // On a shared database another node may be attempting it right now.
        if !ctx.store.try_lease(id, crate::model::now_ms()).await? {
            return Err(ResendError::InProgress);
        }
        claim.acquire_slot().await;
        let prepared = attempt::prepare_loaded(ctx, delivery, event, Mode::Manual).await;
        let (claim, decided) = run_to_decision(ctx, claim, prepared).await;
        match attempt::record(ctx, decided).await {
            Ok(recorded) => {
                observe(ctx, &endpoint_id, &recorded);
                claim.recorded();
                Ok(())
            }
            // The caller hears the failure (503); the delivery's schedule is as it was.
            Err(e) => Err(ResendError::Store(e)),
        }
    }
}

/// Claims every due delivery that fits in the free slots and starts its pass. Returns the next
/// time something may become due: a due entry in the future, or a cooldown's end.
async fn schedule_round(ctx: &Arc<Ctx>, tasks: &mut JoinSet<()>) -> Result<Option<u64>, StoreError> {
    let now = ctx.clock.now_ms();
    let (claimed, active, tenant_active, global_free, next_cooldown) = {
        let mut c = ctx.claims.lock().expect("claims lock");
        let next_cooldown = c.expire_cooldowns(now);
        if now < c.paused_until_ms || c.cooling.len() >= MAX_COOLING {
            // A write failed lately: hold new attempts until the pause ends.
            return Ok(Some(c.paused_until_ms.max(now + 1)));
        }
        let free = (LOOKAHEAD * ctx.live.config().delivery.max_in_flight).saturating_sub(c.active_total);
        (c.ids.clone(), c.active.clone(), c.tenant_active.clone(), free, next_cooldown)
    };
    if global_free == 0 {
        // Every slot is busy and the look-ahead is full; a released slot wakes us.
        return Ok(next_cooldown);
    }
    let per_endpoint = LOOKAHEAD * ctx.live.config().delivery.max_in_flight_per_endpoint;
    let per_tenant = LOOKAHEAD * ctx.live.config().delivery.max_in_flight_per_tenant;
    let book = ctx.health.clone();
    // Each endpoint may take up to its share of the look-ahead, and each tenant up to its own:
    // an open circuit or a `Retry-After` pause takes nothing, a half-open circuit one probe,
    // once nothing else of the endpoint's is in flight.
    let mut caps: HashMap<String, usize> = HashMap::new();
    let mut tenant_taken: HashMap<String, usize> = HashMap::new();
    let admit = move |ep: &str| {
        let cap = caps.entry(ep.to_owned()).or_insert_with(|| {
            let active = active.get(ep).copied().unwrap_or(0);
            match book.allowance(ep, now) {
                Allowance::Any | Allowance::Disabled => per_endpoint.saturating_sub(active),
                Allowance::Probe => usize::from(active == 0),
                Allowance::WaitUntil(_) => 0,
            }
        });
        let tenant = tenant_of(ep);
        let taken = tenant_taken.entry(tenant.to_owned()).or_default();
        if *cap == 0 || tenant_active.get(tenant).copied().unwrap_or(0) + *taken >= per_tenant {
            return false;
        }
        *cap -= 1;
        *taken += 1;
        true
    };
    let limits = crate::store::ScanLimits {
        global_free,
        per_endpoint,
        cluster_per_endpoint: ctx.live.config().delivery.max_in_flight_per_endpoint,
    };
    let scan = ctx.store.scan_due(now, claimed, admit, limits).await?;
    for item in scan.items {
        if let Some(claim) = try_claim(ctx, item.delivery_id, &item.endpoint_id) {
            tasks.spawn(scheduled_pass(ctx.clone(), item, claim));
        }
    }
    Ok([scan.next_due_ms, next_cooldown, ctx.health.next_change(now)].into_iter().flatten().min())
}

/// One scheduled pass: prepare → send → decide → record, then release or cool down.
async fn scheduled_pass(ctx: Arc<Ctx>, item: DueItem, mut claim: Claim) {
    claim.acquire_slot().await;
    let DueItem { delivery_id, endpoint_id, due_ms, loaded } = item;
    // A pass that waited through a pause of this process may have lost its lease to another
    // node, which sends the delivery itself: sending it here too would be a duplicate (and its
    // result would only be recorded as late). A store that cannot tell does not stop the pass.
    if let Ok(false) = ctx.store.still_leased(delivery_id).await {
        tracing::warn!(%delivery_id, "the lease was lost while this pass waited; another node has the delivery");
        return;
    }
    // The circuit may have opened (or a pause begun) while this pass waited for its slot: then
    // it lets go, and the delivery waits on disk without using up a retry.
    let Some(probe) = ctx.health.begin_attempt(&endpoint_id, ctx.clock.now_ms()) else {
        return;
    };
    let prepared = attempt::prepare(&ctx, delivery_id, &endpoint_id, due_ms, loaded, true).await;
    if probe && matches!(prepared, Prepared::Done(_)) {
        ctx.health.abandon_attempt(&endpoint_id);
    }
    let (claim, decided) = run_to_decision(&ctx, claim, prepared).await;
    match attempt::record(&ctx, decided).await {
        Ok(recorded) => {
            observe(&ctx, &endpoint_id, &recorded);
            claim.recorded();
        }
        Err(e) => claim.cool_down(&e),
    }
}

/// Sends what was prepared (releasing the slot as soon as the response is in) and decides what
/// follows; a pass that ended in preparation is already decided.
async fn run_to_decision(ctx: &Arc<Ctx>, mut claim: Claim, prepared: Prepared) -> (Claim, Decided) {
    let decided = match prepared {
        Prepared::Done(decided) => *decided,
        Prepared::Send(ready) => {
            if let Some(endpoint) = &ready.endpoint {
                wait_for_rate(ctx, &endpoint.id, endpoint.rate_limit).await;
            }
            let sent = attempt::send(ctx, ready).await;
            claim.release_slot();
            let kind = sent.outcome.error.as_ref().map(|e| e.kind);
            ctx.metrics.attempt(sent.outcome.status_code, kind, sent.outcome.duration);
            let now = ctx.clock.now_ms();
            let health = ctx.health.observe(&sent.delivery.endpoint_id, &sent.outcome, now);
            let exhausted = (sent.mode == Mode::Scheduled).then(|| (sent.delivery.clone(), sent.outcome.error.clone()));
            let mut decided =
                attempt::decide_sent(&ctx.live.config().delivery.retry, sent, now, fastrand::f64() * 2.0 - 1.0);
            decided.effects =
                effects(ctx, health, exhausted.filter(|_| decided.newly_final == Some(DeliveryState::Failed)), now);
            decided
        }
    };
    claim.release_slot();
    (claim, decided)
}

/// Keeps the leases of this node's claimed deliveries (running, queued for a slot, cooling
/// down) from running out, every third of the lease, and sends the node's heartbeat. A renewal
/// that fails is logged and tried again at the next tick; the lease is long enough for two.
async fn renew_leases(ctx: Arc<Ctx>, lease: Duration, stop: CancellationToken) {
    let every = lease / 3;
    loop {
        let ids: Vec<Uuid> = ctx.claims.lock().expect("claims lock").ids.iter().copied().collect();
        match ctx.store.renew_leases(ids).await {
            Ok(lost) if !lost.is_empty() => tracing::warn!(
                lost = lost.len(),
                first = %lost[0],
                "leases lost: another node took these deliveries over (this node was paused or its clock is off); \
                 their results here will be recorded as late attempts only"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot renew this node's leases"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// This node's share of an endpoint's rate limit: the limit holds for the whole cluster, so
/// each of `nodes` live nodes gets an equal part (at least one per period).
pub fn rate_share(limit: crate::endpoint::RateLimit, nodes: usize) -> crate::endpoint::RateLimit {
    let nodes = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    crate::endpoint::RateLimit { count: limit.count.div_ceil(nodes).max(1), per: limit.per }
}

/// Waits until the endpoint's rate limit allows another attempt. The bucket runs on the system
/// clock: a rate is a promise about real time.
async fn wait_for_rate(ctx: &Ctx, endpoint: &str, limit: Option<crate::endpoint::RateLimit>) {
    let nodes = ctx.store.postgres().map_or(1, |pg| pg.live_nodes());
    let limit = limit.map(|l| rate_share(l, nodes));
    while let Err(wait) = ctx.health.rate_wait(endpoint, limit, crate::model::now_ms()) {
        tokio::time::sleep(wait).await;
    }
}

/// What an attempt writes besides its own record: the endpoint's health, and the operational
/// events for what changed (circuit, disabled) and for an exhausted delivery.
fn effects(
    ctx: &Ctx,
    health: Option<(crate::model::EndpointHealth, Vec<crate::health::Transition>)>,
    exhausted: Option<(crate::model::DeliveryRecord, Option<crate::model::AttemptError>)>,
    now: u64,
) -> crate::store::Effects {
    let mut out = crate::store::Effects::default();
    let config = ctx.live.config();
    let ops =
        Operations { endpoint: config.operations_endpoint.as_deref(), registry: &ctx.endpoints, health: &ctx.health };
    if let Some((h, transitions)) = health {
        for t in transitions {
            tracing::warn!(endpoint = %h.endpoint_id, change = t.trigger(), consecutive_failures = h.consecutive_failures,
                "endpoint health changed");
            out.events.extend(ops.endpoint_event(t.trigger(), &h, now));
        }
        out.health = Some(h);
    }
    if let Some((d, error)) = exhausted {
        out.events.extend(ops.exhausted_event(&d, error.as_ref(), now));
    }
    if !out.events.is_empty() {
        ctx.wake.notify_one();
    }
    out
}

/// Outcome metrics and the charts' counts, once the write that reaches the outcome is durable.
fn observe(ctx: &Ctx, endpoint_id: &str, recorded: &attempt::Recorded) {
    ctx.tally.add(endpoint_id, ctx.clock.now_ms(), recorded.sample);
    if let Some(state) = recorded.newly_final {
        ctx.metrics.outcome(state);
        if state == DeliveryState::Succeeded {
            let since = ctx.clock.now_ms().saturating_sub(recorded.created_at_ms);
            ctx.metrics.delivery_latency.observe(Duration::from_millis(since));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::claims::Cooldown;
    use super::*;

    #[test]
    fn cooldowns_grow_and_are_bounded() {
        assert_eq!(cooldown_after(1), COOLDOWN_INITIAL);
        assert_eq!(cooldown_after(2), COOLDOWN_INITIAL * 2);
        assert_eq!(cooldown_after(3), COOLDOWN_INITIAL * 4);
        let mut last = Duration::ZERO;
        for n in 1..200 {
            let d = cooldown_after(n);
            assert!(d >= last && d <= COOLDOWN_MAX, "{n}: {d:?}");
            last = d;
        }
        assert_eq!(cooldown_after(u32::MAX), COOLDOWN_MAX);
    }

    /// A due delivery whose event is missing or unreadable, and a due entry with no delivery at
    /// all, each end in a durable write (failed with kind `internal`; the entry removed), so the
    /// scheduler does not find them again and again. Nothing is sent.
    #[tokio::test]
    async fn unreadable_records_end_in_a_durable_write() {
        use crate::model::{DeliveryRecord, ErrorKind, EventRecord};
        use crate::store::IngestWrite;
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let text = "[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n\
                    [delivery]\nallow_http = true\nallow_private_networks = true\n\
                    [[endpoints]]\nid = \"ep\"\nurl = \"http://127.0.0.1:9/\"\ntriggers = [\"*\"]\n";
        let config =
            Arc::new(crate::config::Config::parse(text, "t.toml", std::path::Path::new("/"), &|_| None).unwrap());
        let delivery = |event_id: Uuid| DeliveryRecord::pending_for_test(event_id, "ep", 1);
        let event = |id: Uuid, payload: &str, d: &DeliveryRecord| EventRecord {
            id,
            received_at_ms: 1,
            trigger: "t".into(),
            payload: payload.into(),
            envelope_slot: None,
            delivery_ids: vec![d.id],
            skipped: vec![],
            tenant: None,
            trace: None,
            message: None,
        };
        // Its event record is written under another id, so the delivery's event is missing.
        let no_event = delivery(Uuid::now_v7());
        let e = event(Uuid::now_v7(), "{}", &no_event);
        store.ingest(IngestWrite { event: e, deliveries: vec![no_event.clone()], idempotency: None }).await.unwrap();
        let garbage_id = Uuid::now_v7();
        let garbage = delivery(garbage_id);
        let e = event(garbage_id, "not json", &garbage);
        store.ingest(IngestWrite { event: e, deliveries: vec![garbage.clone()], idempotency: None }).await.unwrap();
        store.redb().insert_orphan_due("ep", 1, Uuid::now_v7());
        assert_eq!(store.pending_count().await.unwrap(), 3);

        let registry = Arc::new(Registry::new(&config.endpoints, vec![]));
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(HealthBook::new(crate::health::Policy::from_config(&config.delivery), vec![]));
        let config2 = config.clone();
        let live = Arc::new(crate::live::Live::new(crate::live::Generation::new(1, config, None).unwrap()));
        let d = Dispatcher::new(Parts {
            live,
            store: store.clone(),
            endpoints: registry,
            metrics: metrics.clone(),
            wake: Arc::default(),
            clock: crate::clock::system(),
            health,
            tenants: Arc::new(Tenants::new(&config2, vec![], vec![])),
            telemetry: Telemetry::off(),
        })
        .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (d, stop) = (d.clone(), stop.clone());
            async move { d.run(stop).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.pending_count().await.unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "due entries were not resolved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in [no_event.id, garbage.id] {
            let rec = store.delivery(id).await.unwrap().unwrap();
            assert_eq!(rec.state, DeliveryState::Failed);
            assert!(rec.attempts.is_empty(), "nothing was sent");
            assert_eq!(rec.note.unwrap().kind, Some(ErrorKind::Internal));
        }
        assert_eq!(metrics.record_failures.get(), 0);
        // With nothing left to attempt, no slot semaphore is kept (a deleted endpoint's would
        // otherwise stay for ever).
        {
            let c = d.ctx.claims.lock().unwrap();
            assert!(c.endpoint_slots.is_empty() && c.tenant_slots.is_empty(), "slots of idle endpoints are freed");
        }
        stop.cancel();
        task.await.unwrap().unwrap();
        drop((d, store));
        writer.join();
    }

    #[test]
    fn expired_cooldowns_release_their_claims() {
        let mut c = Claims::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        c.ids.extend([a, b]);
        c.cooling.insert(a, Cooldown { until_ms: 100 });
        c.cooling.insert(b, Cooldown { until_ms: 300 });
        assert_eq!(c.expire_cooldowns(50), Some(100));
        assert_eq!(c.ids.len(), 2);
        assert_eq!(c.expire_cooldowns(100), Some(300));
        assert!(!c.ids.contains(&a) && c.ids.contains(&b));
        assert_eq!(c.expire_cooldowns(1_000), None);
        assert!(c.ids.is_empty() && c.cooling.is_empty());
    }
}
