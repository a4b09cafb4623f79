//! Operational webhooks: Hookgate's own events (`endpoint.disabled`, `endpoint.enabled`,
//! `endpoint.circuit_opened`, `endpoint.circuit_closed`, `delivery.exhausted`), sent to the
//! endpoint named by `[operations] endpoint`.
//!
//! Owns: the triggers and the shape of their payloads. Each one becomes an ordinary event with
//! one delivery to the operations endpoint (stored, signed, retried, visible in the log),
//! written in the same transaction as the change it announces.
//! Must not touch: storage or HTTP; it builds `IngestWrite`s for the caller to write.
//!
//! **No loops:** a delivery to the operations endpoint that is exhausted announces nothing, so
//! a broken operations endpoint cannot feed itself events.

use crate::events::{build_write, set_tenant};
use crate::health::HealthBook;
use crate::json;
use crate::model::{AttemptError, DeliveryRecord, EndpointHealth, ErrorKind, Skipped, rfc3339};
use crate::registry::Registry;
use crate::store::IngestWrite;

/// Where operational events go, if anywhere.
pub struct Operations {
    /// Swapped by a config reload.
    endpoint: std::sync::RwLock<Option<String>>,
}

impl Operations {
    pub fn new(endpoint: Option<String>) -> Operations {
        Operations { endpoint: std::sync::RwLock::new(endpoint) }
    }

    /// The `[operations] endpoint` of a reloaded config.
    pub fn set_endpoint(&self, endpoint: Option<String>) {
        *self.endpoint.write().expect("operations lock") = endpoint;
    }

    pub fn is_operations_endpoint(&self, id: &str) -> bool {
        self.endpoint.read().expect("operations lock").as_deref() == Some(id)
    }

    /// An operational event with `data`, ready to store; `None` when no operations endpoint is
    /// configured (or it is gone).
    fn event(
        &self,
        registry: &Registry,
        health: &HealthBook,
        trigger: &str,
        subject_endpoint: &str,
        data: serde_json::Value,
        now_ms: u64,
    ) -> Option<IngestWrite> {
        let target = registry.get(self.endpoint.read().expect("operations lock").as_deref()?)?;
        let doc = serde_json::json!({ "trigger": trigger, "endpoint_id": subject_endpoint, "data": data });
        let json::Value::Object(fields) = json::Value::from(&doc) else { unreachable!("built as an object") };
        let canonical = json::canonical_with_slot(&fields, "idempotency_key");
        let (receivers, skipped) = if health.is_enabled(&target.id) {
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
    pub fn endpoint_event(
        &self,
        registry: &Registry,
        health: &HealthBook,
        trigger: &str,
        h: &EndpointHealth,
        now_ms: u64,
    ) -> Option<IngestWrite> {
        let url = registry.get(&h.endpoint_id).map(|e| e.url.to_string());
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
        self.event(registry, health, trigger, &h.endpoint_id, data, now_ms)
    }

    /// Announces a delivery that failed after its last retry. Deliveries to the operations
    /// endpoint itself announce nothing.
    pub fn exhausted_event(
        &self,
        registry: &Registry,
        health: &HealthBook,
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
        self.event(registry, health, "delivery.exhausted", &d.endpoint_id, data, now_ms)
    }
}

fn error_json(e: &AttemptError) -> serde_json::Value {
    serde_json::json!({ "kind": e.kind.as_str(), "message": e.message })
}
