//! What an event is made of: a validated event, and the event record with its pending
//! deliveries that the store writes for it.
//!
//! Owns: [`ValidEvent`], [`build_write`] (one delivery per receiver, the resource fields that are
//! indexed, FIFO queues) and the tenant marking. Producers' events (`ingest`), tenants' test
//! sends and the gateway's own operational events are all built here.
//! Must not touch: HTTP, the store's I/O, signing or plugins.

use uuid::Uuid;

use crate::config::Endpoint;
use crate::json::{Object, Value};
use crate::model::{DEFAULT_TENANT, DeliveryRecord, DeliveryState, EventRecord, Skipped};
use crate::store::{IdempotencyClaim, IngestWrite};

/// A request body that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub trigger: String,
    /// The whole object: resource fields, `trigger` and `data`.
    pub fields: Object,
}

/// The event and its pending deliveries, one per receiver, as the store writes them. `canonical`
/// is the payload's canonical text and the envelope slot (`json::canonical_with_slot`). Used by
/// ingest, test sends and the gateway's own operational events.
pub fn build_write(
    trigger: &str,
    fields: &Object,
    canonical: (String, usize),
    receivers: &[&Endpoint],
    skipped: Vec<Skipped>,
    now: u64,
    idempotency: Option<IdempotencyClaim>,
) -> IngestWrite {
    let event_id = Uuid::now_v7();
    let resource = indexed_fields(fields);
    let deliveries: Vec<DeliveryRecord> = receivers
        .iter()
        .map(|ep| DeliveryRecord {
            id: Uuid::now_v7(),
            event_id,
            endpoint_id: ep.id.clone(),
            idempotency_key: Uuid::new_v4(),
            trigger: trigger.to_owned(),
            state: DeliveryState::Pending,
            created_at_ms: now,
            next_attempt_at_ms: Some(now),
            attempts: Vec::new(),
            prepared: false,
            body: None,
            note: None,
            resource: resource.clone(),
            requeued: false,
            fifo: ep.fifo.as_ref().map(|f| f.queue_of(&resource)),
            tenant: None,
        })
        .collect();
    let (payload, envelope_slot) = canonical;
    IngestWrite {
        event: EventRecord {
            id: event_id,
            received_at_ms: now,
            trigger: trigger.to_owned(),
            payload,
            envelope_slot: Some(envelope_slot),
            delivery_ids: deliveries.iter().map(|d| d.id).collect(),
            skipped,
            tenant: None,
            trace: None,
            message: None,
        },
        deliveries,
        idempotency,
    }
}

/// Marks an event and its deliveries as the tenant's (the default tenant is left implicit).
pub fn set_tenant(write: &mut IngestWrite, tenant: &str) {
    let t = (tenant != DEFAULT_TENANT).then(|| tenant.to_owned());
    write.event.tenant = t.clone();
    for d in &mut write.deliveries {
        d.tenant = t.clone();
    }
}

/// The longest resource field value that is indexed for filtering. Longer values are still
/// delivered, just not searchable.
const MAX_INDEXED_VALUE: usize = 256;

/// The event's scalar resource fields as (name, canonical JSON value), for the delivery index.
fn indexed_fields(fields: &Object) -> Vec<(String, String)> {
    fields
        .iter()
        .filter(|(k, _)| !matches!(*k, "trigger" | "data") && k.len() <= 128)
        .filter(|(_, v)| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
        .map(|(k, v)| (k.to_owned(), v.to_canonical()))
        .filter(|(_, v)| v.len() <= MAX_INDEXED_VALUE)
        .collect()
}
