//! Operational webhooks: Hookgate's own events (`endpoint.disabled`, `endpoint.enabled`,
//! `endpoint.circuit_opened`, `endpoint.circuit_closed`, `delivery.exhausted`), sent to the
//! endpoint named by `[operations] endpoint`.
//!
//! Owns: the triggers and the shape of their payloads. Each one becomes an ordinary event with
//! one delivery to the operations endpoint (stored, signed, retried, visible in the log),
//! written in the same transaction as the change it announces.
//! Must not touch: storage or HTTP; it builds `IngestWrite`s for the caller to write. It keeps
//! no state: where the events go is the running config's, read by the caller per use.
//!
//! **No loops:** a delivery to the operations endpoint that is exhausted announces nothing, so
//! a broken operations endpoint cannot feed itself events.

use crate::events::{build_write, set_tenant};
use crate::health::HealthBook;
use crate::json;
use crate::model::{AttemptError, DeliveryRecord, EndpointHealth, ErrorKind, Skipped, rfc3339};
use crate::registry::Registry;
use crate::store::IngestWrite;

/// Operational events as of one config snapshot: where they go (`[operations] endpoint` of the
/// running generation, read by the caller), and the registry and health that decide whether
/// that endpoint gets a delivery now. Built for one use, so a reload needs to tell it nothing.
pub struct Operations<'a> {
    /// The `[operations] endpoint`, if any.
    pub endpoint: Option<&'a str>,
    pub registry: &'a Registry,
    pub health: &'a HealthBook,
}

impl Operations<'_> {
    pub fn is_operations_endpoint(&self, id: &str) -> bool {
        self.endpoint == Some(id)
    }

    /// An operational event with `data`, ready to store; `None` when no operations endpoint is
    /// configured (or it is gone).
    fn event(
        &self,
        trigger: &str,
        subject_endpoint: &str,
        data: serde_json::Value,
        now_ms: u64,
    ) -> Option<IngestWrite> {
        let target = self.registry.get(self.endpoint?)?;
        let doc = serde_json::json!({ "trigger": trigger, "endpoint_id": subject_endpoint, "data": data });
        let json::Value::Object(fields) = json::Value::from(&doc) else { unreachable!("built as an object") };
        let canonical = json::canonical_with_slot(&fields, "idempotency_key");
        let (receivers, skipped) = if self.health.is_enabled(&target.id) {
            (vec![&target], vec![])
        } else {
            let reason = ErrorKind::EndpointDisabled.as_str().into();
            (vec![], vec![Skipped { endpoint_id: target.id.clone(), reason }])
        };
        let mut write = build_write(trigger, &fields, canonical, &receivers, skipped, now_ms, None);
        set_tenant(&mut write, &target.tenant);
        Some(write)
    }

    /// Announces an endpoint's health change (`trigger` is one of `endpoint.*`).
    pub fn endpoint_event(&self, trigger: &str, h: &EndpointHealth, now_ms: u64) -> Option<IngestWrite> {
        let url = self.registry.get(&h.endpoint_id).map(|e| e.url.to_string());
        let data = serde_json::json!({
            "endpoint_id": h.endpoint_id,
            "url": url,
            "enabled": h.disabled_at_ms.is_none(),
            "disabled_at": h.disabled_at_ms.map(rfc3339),
            "circuit": h.circuit.as_str(),
            "consecutive_failures": h.consecutive_failures,
            "failing_since": h.failing_since_ms.map(rfc3339),
            "last_success_at": h.last_success_at_ms.map(rfc3339),
            "last_failure_at": h.last_failure_at_ms.map(rfc3339),
            "last_error": h.last_error.as_ref().map(error_json),
        });
        self.event(trigger, &h.endpoint_id, data, now_ms)
    }

    /// Announces a delivery that failed after its last retry. Deliveries to the operations
    /// endpoint itself announce nothing.
    pub fn exhausted_event(
        &self,
        d: &DeliveryRecord,
        last_error: Option<&AttemptError>,
        now_ms: u64,
    ) -> Option<IngestWrite> {
        if self.is_operations_endpoint(&d.endpoint_id) {
            return None;
        }
        let resource: serde_json::Map<String, serde_json::Value> = d
            .resource
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()))))
            .collect();
        let data = serde_json::json!({
            "delivery_id": d.id,
            "event_id": d.event_id,
            "endpoint_id": d.endpoint_id,
            "trigger": d.trigger,
            "resource": resource,
            "attempts": d.attempts.len() + 1,
            "last_error": last_error.map(error_json),
        });
        self.event("delivery.exhausted", &d.endpoint_id, data, now_ms)
    }
}

fn error_json(e: &AttemptError) -> serde_json::Value {
    serde_json::json!({ "kind": e.kind.as_str(), "message": e.message })
}
