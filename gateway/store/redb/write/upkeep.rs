//! Upkeep inside a write transaction: retention passes and removing a tenant.
//!
//! Owns: what a `Prune` pass removes (final deliveries past the cutoff with every index entry,
//! events left without deliveries, expired idempotency keys) and what goes with a tenant.
//! Must not touch: commits, or pending deliveries (never removed).

use std::ops::Bound;

use redb::ReadableTable;

use super::Tables;
use crate::model::{DeliveryState, EventRecord, TokenRecord};
use crate::store::redb::storage;
use crate::store::rules::index_keys;
use crate::store::{PruneReport, PruneRequest, StoreError};

impl Tables<'_> {
    pub(super) fn delete_tenant(&mut self, id: &str) -> Result<(), StoreError> {
        self.tenants.remove(id).map_err(storage)?;
        let prefix = format!("{id}/");
        let mut endpoints = Vec::new();
        for entry in self.endpoints.range(prefix.as_str()..).map_err(storage)? {
            let (k, _) = entry.map_err(storage)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            endpoints.push(k.value().to_owned());
        }
        for e in &endpoints {
            self.endpoints.remove(e.as_str()).map_err(storage)?;
            self.health.remove(e.as_str()).map_err(storage)?;
        }
        let mut tokens = Vec::new();
        for entry in self.tokens.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            if serde_json::from_slice::<TokenRecord>(v.value()).is_ok_and(|t| t.tenant == id) {
                tokens.push(k.value().to_owned());
            }
        }
        for t in &tokens {
            self.tokens.remove(t.as_str()).map_err(storage)?;
        }
        Ok(())
    }

    /// Removes final deliveries created before the cutoff, and events whose deliveries are all
    /// gone, visiting at most `req.max_events` events from `req.after`. Pending deliveries (and
    /// their events) stay.
    pub(super) fn prune(&mut self, req: &PruneRequest) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        self.prune_idempotency(req.idempotency_cutoff_ms)?;
        let mut events: Vec<(u128, EventRecord)> = Vec::new();
        let start = req.after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut visited = 0;
        report.next = None;
        for entry in self.events.range((start, Bound::<u128>::Unbounded)).map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            let id = k.value();
            visited += 1;
            match serde_json::from_slice::<EventRecord>(v.value()) {
                // Events are in arrival order: the rest are younger.
                Ok(event) if event.received_at_ms >= req.cutoff_ms => {
                    report.next = None;
                    break;
                }
                Ok(event) => events.push((id, event)),
                // An unreadable event is left for an operator; the pass moves past it.
                Err(_) => {}
            }
            report.next = Some(id);
            if visited >= req.max_events {
                break;
            }
        }
        if visited < req.max_events && report.next.is_some() {
            // The table ended before the budget did: nothing is left to visit.
            report.next = None;
        }
        self.prune_events(events, report)
    }

    pub(super) fn prune_events(
        &mut self,
        events: Vec<(u128, EventRecord)>,
        mut report: PruneReport,
    ) -> Result<PruneReport, StoreError> {
        for (event_id, event) in events {
            let mut kept = false;
            for id in &event.delivery_ids {
                let d = match self.read_delivery(*id)? {
                    Ok(Some(d)) => d,
                    Ok(None) => continue,
                    // Unreadable: keep it (and its event) for an operator to look at.
                    Err(_) => {
                        kept = true;
                        continue;
                    }
                };
                if d.state == DeliveryState::Pending {
                    kept = true;
                    continue;
                }
                let key = id.as_u128();
                self.deliveries.remove(key).map_err(storage)?;
                for k in &index_keys(&d) {
                    self.index.remove((k.as_str(), key)).map_err(storage)?;
                }
                report.deliveries += 1;
            }
            if !kept {
                self.events.remove(event_id).map_err(storage)?;
                report.events += 1;
            }
        }
        Ok(report)
    }

    pub(super) fn prune_idempotency(&mut self, cutoff: u64) -> Result<(), StoreError> {
        let mut expired = Vec::new();
        for entry in
            self.idem_expiry.range((Bound::Unbounded, Bound::Excluded((cutoff, "")))).map_err(storage)?.take(10_000)
        {
            let (k, _) = entry.map_err(storage)?;
            let (created, key) = k.value();
            expired.push((created, key.to_owned()));
        }
        for (created, key) in expired {
            self.idem_expiry.remove((created, key.as_str())).map_err(storage)?;
            self.idem.remove(key.as_str()).map_err(storage)?;
        }
        Ok(())
    }
}
