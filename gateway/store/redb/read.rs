//! The read path: point reads, the delivery log's index intersection and the due scan.
//!
//! Owns: read transactions. Every function here takes a `&Database`, opens one read
//! transaction (one consistent snapshot) and returns owned records.
//! Must not touch: writes. Callers run these off the async runtime (`Store::read`).

use std::collections::HashSet;
use std::ops::Bound;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use uuid::Uuid;

use super::schema::{DELIVERIES, DELIVERY_INDEX, DUE, EVENTS};
use super::storage;
use crate::model::DeliveryState;
use crate::model::{DeliveryRecord, EventRecord};
use crate::store::rules::state_key;
use crate::store::{DeliveryPage, DeliveryQuery, DueItem, DueScan, Loaded, StoreError};

pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<u128, &[u8]>,
    id: Uuid,
) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let t = txn.open_table(table).map_err(storage)?;
    let Some(v) = t.get(id.as_u128()).map_err(storage)? else {
        return Ok(None);
    };
    serde_json::from_slice(v.value()).map(Some).map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))
}

/// Every record of a table keyed by text (endpoints, endpoint health), in key order.
pub(crate) fn all_json<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let t = txn.open_table(table).map_err(storage)?;
    let mut out = Vec::new();
    for entry in t.iter().map_err(storage)? {
        let (_, v) = entry.map_err(storage)?;
        out.push(serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    Ok(out)
}

/// The most index seeks one listing request may make. Filters whose index sets are large and
/// interleave without intersecting cost a seek per step; past this budget the page returns what
/// it found with a cursor to continue from, so no request runs long (about 5 ms here).
pub(crate) const SEEK_BUDGET: usize = 4096;

pub(crate) fn list_deliveries(db: &Database, q: &DeliveryQuery) -> Result<DeliveryPage, StoreError> {
    let mut page = DeliveryPage::default();
    let Some((lo, hi)) = q.id_bounds() else {
        return Ok(page);
    };
    let limit = q.limit.max(1);
    let txn = db.begin_read().map_err(storage)?;
    let deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
    let keys = q.keys();
    let mut ids: Vec<u128> = Vec::with_capacity(limit + 1);
    if keys.is_empty() {
        for entry in deliveries.range(lo..=hi).map_err(storage)?.rev().take(limit + 1) {
            ids.push(entry.map_err(storage)?.0.value());
        }
    } else {
        let index = txn.open_table(DELIVERY_INDEX).map_err(storage)?;
        // Leapfrog intersection: the candidate is the newest id every index may still hold;
        // each index either confirms it or lowers it to its own next id. Every step is one
        // B-tree seek, so the work follows the number of matches, not the table size.
        let mut candidate = hi;
        let mut seeks = 0;
        'search: while ids.len() <= limit {
            let mut confirmed = 0;
            while confirmed < keys.len() {
                confirmed = 0;
                if seeks >= SEEK_BUDGET {
                    // Nothing matches above `candidate`: the next page resumes there.
                    page.next = candidate.checked_add(1).map(Uuid::from_u128);
                    break 'search;
                }
                for key in &keys {
                    seeks += 1;
                    let found =
                        index.range((key.as_str(), lo)..=(key.as_str(), candidate)).map_err(storage)?.next_back();
                    let Some(entry) = found else { break 'search };
                    let id = entry.map_err(storage)?.0.value().1;
                    if id == candidate {
                        confirmed += 1;
                    } else {
                        candidate = id;
                    }
                }
            }
            ids.push(candidate);
            if candidate == lo {
                break;
            }
            candidate -= 1;
        }
    }
    if ids.len() > limit {
        ids.truncate(limit);
        page.next = ids.last().map(|id| Uuid::from_u128(*id));
    }

    for id in ids {
        if let Some(v) = deliveries.get(id).map_err(storage)? {
            page.deliveries.push(serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
    }
    Ok(page)
}

pub(crate) fn scan_due(
    db: &Database,
    now_ms: u64,
    in_flight: &HashSet<Uuid>,
    admit: &mut dyn FnMut(&str) -> bool,
    global_free: usize,
) -> Result<DueScan, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let due = txn.open_table(DUE).map_err(storage)?;
    let deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
    let events = txn.open_table(EVENTS).map_err(storage)?;
    let mut scan = DueScan::default();
    let mut endpoint: Option<String> = None;
    // Visit each endpoint present in the index: jump past the previous endpoint's last key.
    loop {
        let next = match &endpoint {
            None => due.first().map_err(storage)?.map(|(k, _)| k.value().0.to_owned()),
            Some(ep) => {
                let after = (ep.as_str(), u64::MAX, u128::MAX);
                let mut range = due.range((Bound::Excluded(after), Bound::Unbounded)).map_err(storage)?;
                match range.next() {
                    Some(entry) => Some(entry.map_err(storage)?.0.value().0.to_owned()),
                    None => None,
                }
            }
        };
        let Some(ep) = next else { break };
        let lo = (ep.as_str(), 0u64, 0u128);
        let hi = (ep.as_str(), u64::MAX, u128::MAX);
        for entry in due.range(lo..=hi).map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let (_, due_ms, id) = key.value();
            if due_ms > now_ms {
                scan.next_due_ms = Some(scan.next_due_ms.map_or(due_ms, |n| n.min(due_ms)));
                break;
            }
            let id = Uuid::from_u128(id);
            // In-flight entries sit at the head of their endpoint's range; there are at most
            // `max_in_flight_per_endpoint` of them, so skipping them is cheap.
            if in_flight.contains(&id) {
                continue;
            }
            if scan.items.len() >= global_free || !admit(&ep) {
                break;
            }
            // The records are read in the scan's own snapshot: one pass over the disk feeds
            // every attempt it finds, with no further read (and no thread hop) per delivery.
            let loaded = load(&deliveries, &events, id)?;
            scan.items.push(DueItem { delivery_id: id, endpoint_id: ep.clone(), due_ms, loaded });
        }
        endpoint = Some(ep);
    }
    Ok(scan)
}

/// A due delivery's record and its event, or what is wrong with them.
fn load(
    deliveries: &impl ReadableTable<u128, &'static [u8]>,
    events: &impl ReadableTable<u128, &'static [u8]>,
    id: Uuid,
) -> Result<Loaded, StoreError> {
    let Some(raw) = deliveries.get(id.as_u128()).map_err(storage)? else {
        return Ok(Loaded::NoDelivery);
    };
    let delivery: DeliveryRecord = match serde_json::from_slice(raw.value()) {
        Ok(d) => d,
        Err(e) => return Ok(Loaded::Unreadable(format!("delivery record {id}: {e}"))),
    };
    let Some(raw) = events.get(delivery.event_id.as_u128()).map_err(storage)? else {
        return Ok(Loaded::NoEvent(Box::new(delivery)));
    };
    match serde_json::from_slice::<EventRecord>(raw.value()) {
        Ok(event) => Ok(Loaded::Ready(Box::new(delivery), Box::new(event))),
        Err(e) => {
            let message = format!("event record {}: {e}", delivery.event_id);
            Ok(Loaded::UnreadableEvent(Box::new(delivery), message))
        }
    }
}

pub(crate) fn is_due(db: &Database, endpoint: &str, at: u64, id: Uuid) -> Result<bool, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let due = txn.open_table(DUE).map_err(storage)?;
    Ok(due.get((endpoint, at, id.as_u128())).map_err(storage)?.is_some())
}

/// The first id under the `pending` state key (ids are UUIDv7, so the oldest), then its record.
pub(crate) fn oldest_pending_ms(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let index = txn.open_table(DELIVERY_INDEX).map_err(storage)?;
    let key = state_key(DeliveryState::Pending);
    let first = match index.range((key.as_str(), 0u128)..=(key.as_str(), u128::MAX)).map_err(storage)?.next() {
        Some(entry) => entry.map_err(storage)?.0.value().1,
        None => return Ok(None),
    };
    let deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
    let Some(raw) = deliveries.get(first).map_err(storage)? else {
        return Ok(Some((first >> 80) as u64));
    };
    let created =
        serde_json::from_slice::<DeliveryRecord>(raw.value()).map_or((first >> 80) as u64, |d| d.created_at_ms);
    Ok(Some(created))
}

pub(crate) fn delivery_with_event(
    db: &Database,
    id: Uuid,
) -> Result<Option<(DeliveryRecord, EventRecord)>, StoreError> {
    let Some(d) = get_json::<DeliveryRecord>(db, DELIVERIES, id)? else {
        return Ok(None);
    };
    let e = get_json::<EventRecord>(db, EVENTS, d.event_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} has no event")))?;
    Ok(Some((d, e)))
}

pub(crate) fn deliveries(db: &Database, ids: &[Uuid]) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(d) = get_json(db, DELIVERIES, *id)? {
            out.push(d);
        }
    }
    Ok(out)
}

pub(crate) fn due_count(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let due = txn.open_table(DUE).map_err(storage)?;
    due.len().map_err(storage)
}
