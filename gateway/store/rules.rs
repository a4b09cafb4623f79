//! The rules both backends obey, as pure functions: what an attempt or a settle does to a
//! delivery, the text of index keys, when a FIFO delivery may be due and when its queue moves
//! on, and how records are encoded.
//!
//! Owns: those rules, once: the redb writer (`store::redb::write`) and the PostgreSQL writer
//! (`store::pg::write`) both call them, so the backends cannot drift apart.
//! Must not touch: I/O of any kind. Whatever needs a read (is a queue empty?) is answered by
//! the caller.

use crate::model::{DeliveryRecord, DeliveryState};
use crate::store::Next;

pub(crate) fn state_key(s: DeliveryState) -> String {
    format!("s:{}", s.as_str())
}

pub(crate) fn field_key(field: &str, canonical_value: &str) -> String {
    format!("f:{field}={canonical_value}")
}

pub(crate) fn endpoint_key(endpoint_id: &str) -> String {
    format!("e:{endpoint_id}")
}

pub(crate) fn tenant_key(tenant: &str) -> String {
    format!("n:{tenant}")
}

pub(crate) fn trigger_key(trigger: &str) -> String {
    format!("t:{trigger}")
}

/// What an attempt's record does to its delivery (both backends).
pub(crate) fn apply_attempt(
    d: &mut DeliveryRecord,
    attempt: crate::model::AttemptRecord,
    next: Next,
    prepared: Option<super::ChainResult>,
) {
    if let Some(p) = prepared {
        d.prepared = true;
        d.body = p.body;
    }
    d.attempts.push(attempt);
    d.requeued = false;
    // An attempt was made, so no earlier verdict stands any more.
    d.note = None;
    match next {
        Next::RetryAt(at) => (d.state, d.next_attempt_at_ms) = (DeliveryState::Pending, Some(at)),
        Next::Succeeded => (d.state, d.next_attempt_at_ms) = (DeliveryState::Succeeded, None),
        Next::Failed => (d.state, d.next_attempt_at_ms) = (DeliveryState::Failed, None),
        Next::Keep => {}
    }
}

/// What settling a delivery without an attempt does to it (both backends).
pub(crate) fn apply_settle(d: &mut DeliveryRecord, state: DeliveryState, note: crate::model::PluginNote) {
    d.state = state;
    d.next_attempt_at_ms = None;
    // A filtered delivery is final; a failed chain runs again on a resend (the plugin may have
    // been fixed).
    d.prepared = state == DeliveryState::Filtered;
    d.note = Some(note);
}

/// Every `delivery_index` key of a delivery (see the `store` header).
pub(crate) fn index_keys(d: &DeliveryRecord) -> Vec<String> {
    let mut keys =
        vec![state_key(d.state), endpoint_key(&d.endpoint_id), trigger_key(&d.trigger), tenant_key(d.tenant())];
    keys.extend(d.resource.iter().map(|(f, v)| field_key(f, v)));
    keys
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our records contain only strings, numbers and UUIDs: serialising them cannot fail.
    serde_json::to_vec(v).expect("records serialise")
}

/// Whether a change to a delivery moves its due entry: its state or its due time changed.
pub(crate) fn due_moves(before: (DeliveryState, Option<u64>), d: &DeliveryRecord) -> bool {
    before.1 != d.next_attempt_at_ms || before.0 != d.state
}

/// Whether a delivery that is pending after a change may have its due entry at once, or
/// `None` when that depends on its FIFO queue (it joins one: it is due only if nothing waits
/// ahead, which the caller reads). A rescheduled delivery keeps its turn: a queue's head stays
/// the head.
pub(crate) fn due_at_once(was_pending: bool, had_due: bool, d: &DeliveryRecord) -> Option<bool> {
    if d.fifo.is_none() {
        Some(true)
    } else if was_pending {
        Some(had_due)
    } else {
        None
    }
}

/// The FIFO queue whose next delivery may go now: the one this delivery headed, when it held
/// the due entry and is final. (One that left from further back, by a manual resend, changes
/// nothing for the head.)
pub(crate) fn promotes(d: &DeliveryRecord, was_pending: bool, had_due: bool) -> Option<&str> {
    match d.fifo.as_deref() {
        Some(queue) if was_pending && d.state != DeliveryState::Pending && had_due => Some(queue),
        _ => None,
    }
}
