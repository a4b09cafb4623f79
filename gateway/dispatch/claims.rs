//! Claims and slots: what the scheduler holds in memory about deliveries being attempted.
//!
//! Owns: [`Claims`] (which deliveries are claimed, how many passes each endpoint and tenant has
//! running or queued, the slot semaphores, the cooldowns after failed writes) and [`Claim`], a
//! claimed delivery's handle, which gives its slot back when the response is in and its claim
//! when the record is durable (or on drop).
//! Must not touch: the stage order (that is `dispatch`) or the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::{COOLDOWN_INITIAL, COOLDOWN_MAX, Ctx};
use crate::store::StoreError;

/// What the scheduler holds in memory. Guarded by a std mutex: it is held for a few map
/// operations only and never across an `.await`.
#[derive(Default)]
pub(super) struct Claims {
    /// Deliveries being attempted, being recorded or cooling down; the scan skips them.
    pub(super) ids: HashSet<Uuid>,
    /// Claimed passes per endpoint, and in all, that have not yet given their slot back
    /// (running, or queued for a slot): the scan tops these up to [`LOOKAHEAD`] times the limits.
    pub(super) active: HashMap<String, usize>,
    pub(super) active_total: usize,
    /// The slots themselves: one semaphore per endpoint (`max_in_flight_per_endpoint` permits),
    /// created when first needed.
    pub(super) endpoint_slots: HashMap<String, Arc<Semaphore>>,
    /// The same per tenant (`max_in_flight_per_tenant`), so one tenant's hanging endpoints
    /// leave slots, and scan capacity, to the others.
    pub(super) tenant_active: HashMap<String, usize>,
    pub(super) tenant_slots: HashMap<String, Arc<Semaphore>>,
    /// Deliveries whose record failed, by id.
    pub(super) cooling: HashMap<Uuid, Cooldown>,
    /// Record failures in a row, gateway-wide; 0 once a write succeeds.
    pub(super) failures_in_a_row: u32,
    /// No new attempts start before this (clock ms), after a failed write.
    pub(super) paused_until_ms: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Cooldown {
    pub(super) until_ms: u64,
}

/// The cooldown after `failures` record failures in a row (1 for the first): doubling, bounded.
pub fn cooldown_after(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    COOLDOWN_INITIAL.saturating_mul(factor).min(COOLDOWN_MAX)
}

impl Claims {
    /// Releases the claims of cooldowns that have ended; returns the next end still ahead.
    pub(super) fn expire_cooldowns(&mut self, now_ms: u64) -> Option<u64> {
        let mut next = None;
        let ids = &mut self.ids;
        self.cooling.retain(|id, c| {
            if c.until_ms <= now_ms {
                ids.remove(id);
                false
            } else {
                next = Some(next.map_or(c.until_ms, |n: u64| n.min(c.until_ms)));
                true
            }
        });
        next
    }
}

/// A claimed delivery and its place in the endpoint's queue for a slot. Dropping it (an attempt
/// aborted at shutdown) releases both, so the delivery is simply due again at the next start.
pub(super) struct Claim {
    pub(super) ctx: Arc<Ctx>,
    pub(super) id: Uuid,
    pub(super) endpoint: String,
    /// Counted in `Claims::active` until the response is in.
    pub(super) slot: bool,
    /// The endpoint's, the tenant's and the global permit, held while the attempt runs.
    pub(super) permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    pub(super) claimed: bool,
}

impl Claim {
    /// Waits for a slot: a permit of the endpoint's semaphore, then of its tenant's, then of
    /// the global one (always in this order, so waiters cannot deadlock).
    pub(super) async fn acquire_slot(&mut self) {
        let (endpoint, tenant) = {
            let mut c = self.ctx.claims.lock().expect("claims lock");
            let config = self.ctx.live.config();
            let d = &config.delivery;
            let e = c
                .endpoint_slots
                .entry(self.endpoint.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(d.max_in_flight_per_endpoint)))
                .clone();
            let t = c
                .tenant_slots
                .entry(tenant_of(&self.endpoint).to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(d.max_in_flight_per_tenant)))
                .clone();
            (e, t)
        };
        let e = endpoint.acquire_owned().await.expect("slots are never closed");
        let t = tenant.acquire_owned().await.expect("slots are never closed");
        let g = self.ctx.global_slots.clone().acquire_owned().await.expect("slots are never closed");
        self.permits = Some((e, t, g));
    }

    /// The response is in: another attempt to this endpoint may start.
    pub(super) fn release_slot(&mut self) {
        // The next queued pass to this endpoint takes the permit at once, without a scan.
        self.permits = None;
        if std::mem::take(&mut self.slot) {
            let mut c = self.ctx.claims.lock().expect("claims lock");
            if let Some(n) = c.active.get_mut(&self.endpoint) {
                *n -= 1;
                if *n == 0 {
                    c.active.remove(&self.endpoint);
                    // Nothing of the endpoint's is running or waiting: its semaphore goes, so
                    // endpoints that are gone (or idle) cost no memory; the next pass makes a
                    // new one.
                    c.endpoint_slots.remove_if_unused(&self.endpoint);
                }
            }
            let tenant = tenant_of(&self.endpoint);
            if let Some(n) = c.tenant_active.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    c.tenant_active.remove(tenant);
                    c.tenant_slots.remove_if_unused(tenant);
                }
            }
            c.active_total -= 1;
            drop(c);
            self.ctx.wake.notify_one();
        }
    }

    /// The pass's write is durable: the delivery is no longer this process's business.
    pub(super) fn recorded(mut self) {
        self.release_slot();
        let mut c = self.ctx.claims.lock().expect("claims lock");
        c.ids.remove(&self.id);
        c.cooling.remove(&self.id);
        c.failures_in_a_row = 0;
        c.paused_until_ms = 0;
        drop(c);
        self.claimed = false;
        self.ctx.wake.notify_one();
    }

    /// The pass's write failed: keep the delivery claimed for a growing cooldown and pause new
    /// attempts for as long, so a broken store is probed, not hammered.
    pub(super) fn cool_down(mut self, error: &StoreError) {
        self.release_slot();
        let now = self.ctx.clock.now_ms();
        let mut c = self.ctx.claims.lock().expect("claims lock");
        // Attempts that fail to record during the same pause are one failure, not many: a
        // store that refuses writes for a moment fails every attempt then in flight, and
        // counting each would push the pause to its maximum (and delivery back by as much)
        // after a blip. The pause doubles with each failure after the previous one ended.
        if now >= c.paused_until_ms || c.failures_in_a_row == 0 {
            c.failures_in_a_row = c.failures_in_a_row.saturating_add(1);
        }
        let wait = cooldown_after(c.failures_in_a_row);
        let until_ms = now + wait.as_millis() as u64;
        c.cooling.insert(self.id, Cooldown { until_ms });
        c.paused_until_ms = c.paused_until_ms.max(until_ms);
        let cooling = c.cooling.len();
        drop(c);
        // The claim stays: `expire_cooldowns` releases it.
        self.claimed = false;
        self.ctx.metrics.record_failures.inc();
        tracing::error!(delivery_id = %self.id, error = %error, cooldown_ms = wait.as_millis() as u64, cooling,
            "cannot record the end of an attempt; the delivery cools down and is tried again");
        self.ctx.wake.notify_one();
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.release_slot();
        if self.claimed {
            self.ctx.claims.lock().expect("claims lock").ids.remove(&self.id);
            self.ctx.wake.notify_one();
            // The pass ended without a write: on a shared database, hand the delivery back
            // now rather than when its lease runs out.
            if self.ctx.store.postgres().is_some()
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                let (store, id) = (self.ctx.store.clone(), self.id);
                rt.spawn(async move { store.release_leases(Some(vec![id])).await });
            }
        }
    }
}

/// The tenant an (internal) endpoint id belongs to.
pub(super) fn tenant_of(endpoint: &str) -> &str {
    crate::endpoint::split_id(endpoint).0
}

/// Claims a delivery and a slot for it, unless it is already claimed.
pub(super) fn try_claim(ctx: &Arc<Ctx>, id: Uuid, endpoint: &str) -> Option<Claim> {
    let mut c = ctx.claims.lock().expect("claims lock");
    if !c.ids.insert(id) {
        return None;
    }
    *c.active.entry(endpoint.to_owned()).or_default() += 1;
    *c.tenant_active.entry(tenant_of(endpoint).to_owned()).or_default() += 1;
    c.active_total += 1;
    Some(Claim { ctx: ctx.clone(), id, endpoint: endpoint.to_owned(), slot: true, permits: None, claimed: true })
}

/// The slot semaphores by endpoint or tenant.
pub(super) trait Slots {
    /// Removes `key`'s semaphore if nobody holds or waits for it (the map's is the only handle).
    fn remove_if_unused(&mut self, key: &str);
}

impl Slots for HashMap<String, Arc<Semaphore>> {
    fn remove_if_unused(&mut self, key: &str) {
        if self.get(key).is_some_and(|s| Arc::strong_count(s) == 1) {
            self.remove(key);
        }
    }
}
