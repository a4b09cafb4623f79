//! FIFO queues inside a write transaction: who may have a due entry, and who is next.
//!
//! Owns: the `fifo` table's upkeep. Only a queue's head (the delivery holding its due entry)
//! is attempted; when it leaves, the oldest remaining delivery gets the due entry.
//! Must not touch: commits (the writer loop owns them) or delivery state changes other than
//! the due entries of queued deliveries.

use redb::ReadableTable;
use uuid::Uuid;

use super::Tables;
use crate::model::{DeliveryRecord, DeliveryState};
use crate::store::StoreError;
use crate::store::redb::storage;
use crate::store::rules::to_json;

impl Tables<'_> {
    /// Whether a delivery joining its queue (already inserted there) may have a due entry at
    /// once: always without a queue; with one, only if no other delivery is in it. Otherwise it
    /// waits until the one ahead is final (`promote`).
    pub(super) fn alone_in_queue(&self, d: &DeliveryRecord) -> Result<bool, StoreError> {
        let Some(queue) = &d.fifo else { return Ok(true) };
        let ep = d.endpoint_id.as_str();
        for entry in
            self.fifo.range((ep, queue.as_str(), 0)..=(ep, queue.as_str(), u128::MAX)).map_err(storage)?.take(2)
        {
            if entry.map_err(storage)?.0.value().2 != d.id.as_u128() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Gives the first delivery of a FIFO queue its due entry (if it has none yet).
    pub(super) fn promote(&mut self, endpoint: &str, queue: &str) -> Result<(), StoreError> {
        let first = match self.fifo.range((endpoint, queue, 0)..=(endpoint, queue, u128::MAX)).map_err(storage)?.next()
        {
            Some(entry) => Some(entry.map_err(storage)?.0.value().2),
            None => None,
        };
        let Some(id) = first else { return Ok(()) };
        match self.read_delivery(Uuid::from_u128(id))? {
            Ok(Some(next)) if next.state == DeliveryState::Pending => {
                if let Some(at) = next.next_attempt_at_ms {
                    self.due.insert((endpoint, at, id), ()).map_err(storage)?;
                }
            }
            // A queue entry without a pending delivery behind it would block the queue forever.
            _ => {
                self.fifo.remove((endpoint, queue, id)).map_err(storage)?;
                return self.promote(endpoint, queue);
            }
        }
        Ok(())
    }

    /// A dropped due entry may have been a FIFO queue's head with no readable delivery behind
    /// it: remove its queue entry too and let the next delivery go, or the queue would wait
    /// forever. Rare (a damaged file), so a walk over the endpoint's queues is fine.
    pub(super) fn drop_fifo_orphan(&mut self, endpoint: &str, id: Uuid) -> Result<(), StoreError> {
        let mut queue = None;
        for entry in self.fifo.range((endpoint, "", 0)..).map_err(storage)? {
            let (k, _) = entry.map_err(storage)?;
            let (ep, q, entry_id) = k.value();
            if ep != endpoint {
                break;
            }
            if entry_id == id.as_u128() {
                queue = Some(q.to_owned());
                break;
            }
        }
        if let Some(q) = queue {
            self.fifo.remove((endpoint, q.as_str(), id.as_u128())).map_err(storage)?;
            self.promote(endpoint, &q)?;
        }
        Ok(())
    }

    pub(super) fn release_fifo(&mut self, endpoint: &str) -> Result<usize, StoreError> {
        let mut entries = Vec::new();
        for entry in self.fifo.range((endpoint, "", 0)..).map_err(storage)? {
            let (k, _) = entry.map_err(storage)?;
            let (ep, queue, id) = k.value();
            if ep != endpoint {
                break;
            }
            entries.push((queue.to_owned(), id));
        }
        for (queue, id) in &entries {
            self.fifo.remove((endpoint, queue.as_str(), *id)).map_err(storage)?;
            if let Ok(Some(mut d)) = self.read_delivery(Uuid::from_u128(*id))? {
                d.fifo = None;
                if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
                    self.due.insert((endpoint, at, *id), ()).map_err(storage)?;
                }
                self.deliveries.insert(*id, to_json(&d).as_slice()).map_err(storage)?;
            }
        }
        Ok(entries.len())
    }
}
