//! The JSON Schemas of request and answer bodies, one per name the route table uses.
//!
//! Owns: what each body looks like, stated once, in JSON Schema 2020-12 (OpenAPI 3.1's
//! dialect). `required` lists what every answer carries; objects stay open to additions, so a
//! new field is not a breaking change. The suite validates real answers against these.
//! Must not touch: anything but the description.

use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

/// A path or query parameter: a string.
pub fn string() -> RefOr<Schema> {
    schema(json!({"type": "string"}))
}

fn schema(v: Value) -> RefOr<Schema> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("schema {v}: {e}"))
}

/// A list of `item`: the native page shape (`next_cursor` continues it, when set).
fn page(item: &str) -> Value {
    json!({"type": "object", "required": ["data"], "properties": {
        "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last."}
    }})
}

/// Svix's list shape of `item`.
fn svix_list(item: &str) -> Value {
    json!({"type": "object", "required": ["data", "done", "iterator", "prevIterator"], "properties": {
        "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "iterator": {"type": ["string", "null"]},
        "prevIterator": {"type": ["string", "null"]},
        "done": {"type": "boolean"}
    }})
}

/// Every named schema.
pub fn all() -> Vec<(&'static str, RefOr<Schema>)> {
    let mut v = native();
    v.extend(svix());
    v.into_iter().map(|(n, s)| (n, schema(s))).collect()
}

/// Any JSON value. (utoipa's model needs a `type`; this one names them all.)
fn any() -> Value {
    json!({"type": ["object", "array", "string", "number", "integer", "boolean", "null"]})
}

fn native() -> Vec<(&'static str, Value)> {
    [events_and_log(), endpoints(), tenants(), charts_and_operations()].concat()
}

/// Ingest and the delivery log.
fn events_and_log() -> Vec<(&'static str, Value)> {
    let any = any();
    let time = json!({"type": "string", "description": "RFC 3339, UTC."});
    let maybe_time = json!({"type": ["string", "null"], "description": "RFC 3339, UTC."});
    let maybe_string = json!({"type": ["string", "null"]});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    vec![
        (
            "Error",
            json!({"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}),
        ),
        (
            "EventIn",
            json!({"type": "object", "required": ["trigger"], "description":
            "An event: its trigger, its data and any resource fields (`bot_id`, ...), which endpoints' `match` select on.",
            "properties": {"trigger": {"type": "string"}, "data": any}}),
        ),
        (
            "EventAccepted",
            json!({"type": "object", "required": ["event_id", "deliveries"], "properties": {
            "event_id": {"type": "string"}, "deliveries": {"type": "integer", "minimum": 0}}}),
        ),
        (
            "Attempt",
            json!({"type": "object", "required": ["number", "started_at", "duration_ms", "status_code", "error", "manual"],
            "properties": {"number": {"type": "integer"}, "started_at": time, "duration_ms": {"type": "integer"},
            "status_code": {"type": ["integer", "null"]},
            "error": {"type": ["object", "null"], "properties": {"kind": {"type": "string"}, "message": {"type": "string"}}},
            "response_body": {"type": "string", "description": "The first 4 KiB of the receiver's answer."},
            "manual": {"type": "boolean"}}}),
        ),
        (
            "Delivery",
            json!({"type": "object",
            "required": ["id", "event_id", "endpoint_id", "idempotency_key", "trigger", "state", "created_at", "attempts"],
            "properties": {"id": {"type": "string"}, "event_id": {"type": "string"}, "endpoint_id": {"type": "string"},
            "idempotency_key": {"type": "string"}, "trigger": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "succeeded", "failed", "filtered"]},
            "created_at": time, "next_attempt_at": maybe_time,
            "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}}}}),
        ),
        (
            "DeliverySummary",
            json!({"type": "object",
            "required": ["id", "event_id", "endpoint_id", "trigger", "state", "created_at", "attempt_count", "tenant"],
            "properties": {"id": {"type": "string"}, "event_id": {"type": "string"}, "endpoint_id": {"type": "string"},
            "trigger": {"type": "string"}, "state": {"type": "string", "enum": ["pending", "succeeded", "failed", "filtered"]},
            "created_at": time, "next_attempt_at": maybe_time, "attempt_count": {"type": "integer"},
            "last_attempt": {"type": ["object", "null"]}, "resource": {"type": "object"}, "tenant": {"type": "string"}}}),
        ),
        ("DeliveryPage", page("DeliverySummary")),
        (
            "Event",
            json!({"type": "object", "required": ["event", "deliveries"], "properties": {
            "event": {"type": "object", "required": ["id", "trigger", "received_at", "payload", "delivery_ids"],
                "properties": {"id": {"type": "string"}, "trigger": {"type": "string"}, "received_at": time,
                "payload": any, "delivery_ids": strings, "trace_id": maybe_string}},
            "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}}}}),
        ),
        (
            "BulkResendIn",
            json!({"type": "object", "required": ["endpoint_id", "since"], "properties": {
            "endpoint_id": {"type": "string"}, "since": {"type": ["string", "integer"]}}}),
        ),
        (
            "Queued",
            json!({"type": "object", "required": ["queued"], "properties": {
            "queued": {"type": "integer"}, "more": {"type": "boolean"}}}),
        ),
    ]
}

/// Endpoints and their secrets.
fn endpoints() -> Vec<(&'static str, Value)> {
    let time = json!({"type": "string", "description": "RFC 3339, UTC."});
    let maybe_time = json!({"type": ["string", "null"], "description": "RFC 3339, UTC."});
    let maybe_string = json!({"type": ["string", "null"]});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    vec![
        (
            "EndpointIn",
            json!({"type": "object", "required": ["url", "triggers"], "properties": {
            "url": {"type": "string"}, "triggers": strings, "match": {"type": ["object", "null"]},
            "secret": {"type": ["string", "null"], "description": "base64, `whsec_…` or `whsk_…`; else the tenant's secret signs."},
            "rate_limit": {"type": ["string", "null"], "description": "e.g. `100/s`"},
            "ordering": {"type": ["string", "null"], "enum": ["fifo", null]}, "ordering_key": maybe_string,
            "id": {"type": "string", "description": "Your own id (1-64 of letters, digits, '_', '.', '-'); else `ep_…`."},
            "description": maybe_string, "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "channels": {"type": ["array", "null"], "items": {"type": "string"}, "description": "Only messages sent to one of these."},
            "headers": {"type": ["object", "null"], "additionalProperties": {"type": "string"}, "description": "Sent with every delivery; values never shown."}}}),
        ),
        (
            "EndpointPatch",
            json!({"type": "object", "description": "Any field of EndpointIn (null clears an optional one), and `enabled`.",
            "properties": {"enabled": {"type": "boolean"}}}),
        ),
        (
            "Endpoint",
            json!({"type": "object",
            "required": ["id", "tenant", "url", "triggers", "has_secret", "source", "enabled", "circuit"],
            "properties": {"id": {"type": "string"}, "tenant": {"type": "string"}, "url": {"type": "string"},
            "triggers": strings, "has_secret": {"type": "boolean"}, "public_key": {"type": "string"},
            "source": {"type": "string", "enum": ["config", "api"]}, "created_at": maybe_time, "rate_limit": maybe_string,
            "enabled": {"type": "boolean"}, "circuit": {"type": "string", "enum": ["closed", "open", "half_open"]},
            "consecutive_failures": {"type": "integer"}, "attempts_last_hour": {"type": "integer"},
            "success_rate_last_hour": {"type": ["number", "null"]}, "description": {"type": "string"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}}, "channels": strings,
            "header_names": strings}}),
        ),
        (
            "EndpointList",
            json!({"type": "object", "required": ["data"], "properties": {
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Endpoint"}}}}),
        ),
        (
            "EndpointSecretRotateIn",
            json!({"type": "object", "properties": {
            "secret": {"type": "string"}, "overlap": {"type": "string", "description": "How long the old secret keeps signing: `24h` by default, at most `7d`."}}}),
        ),
        (
            "EndpointSecret",
            json!({"type": "object", "required": ["secret", "previous_secret_signs_until"], "properties": {
            "secret": {"type": "string"}, "public_key": maybe_string, "previous_secret_signs_until": time}}),
        ),
    ]
}

/// Tenants, their tokens and portal.
fn tenants() -> Vec<(&'static str, Value)> {
    let time = json!({"type": "string", "description": "RFC 3339, UTC."});
    let maybe_time = json!({"type": ["string", "null"], "description": "RFC 3339, UTC."});
    let maybe_string = json!({"type": ["string", "null"]});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    vec![
        (
            "TenantIn",
            json!({"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "metadata": {"type": "object"}, "secret": {"type": "string"},
            "key_type": {"type": "string", "enum": ["hmac", "ed25519"]}, "max_endpoints": {"type": "integer"},
            "max_events_per_second": {"type": "number"}}}),
        ),
        (
            "TenantPatch",
            json!({"type": "object", "properties": {
            "name": maybe_string, "metadata": {"type": ["object", "null"]}, "max_endpoints": {"type": ["integer", "null"]},
            "max_events_per_second": {"type": ["number", "null"]}}}),
        ),
        (
            "Tenant",
            json!({"type": "object", "required": ["id", "name", "secret_fingerprint", "source", "endpoints"], "properties": {
            "id": {"type": "string"}, "name": maybe_string, "metadata": {"type": ["object", "null"]},
            "secret_fingerprint": {"type": "string"}, "public_key": maybe_string, "source": {"type": "string", "enum": ["config", "api"]},
            "created_at": maybe_time, "endpoints": {"type": "integer"}, "max_endpoints": {"type": ["integer", "null"]},
            "max_events_per_second": {"type": ["number", "null"]},
            "secret": {"type": "string", "description": "Only in the answer that created or rotated it."}}}),
        ),
        (
            "TenantList",
            json!({"type": "object", "required": ["data"], "properties": {
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Tenant"}}}}),
        ),
        (
            "SecretRotateIn",
            json!({"type": "object", "properties": {
            "secret": {"type": "string"}, "key_type": {"type": "string", "enum": ["hmac", "ed25519"]}}}),
        ),
        (
            "TenantSecret",
            json!({"type": "object", "required": ["secret"], "properties": {
            "tenant": {"type": "string"}, "secret": {"type": "string"}, "public_key": maybe_string,
            "fingerprint": {"type": "string"}, "also_signing": strings}}),
        ),
        (
            "TokenIn",
            json!({"type": "object", "properties": {"expires_in": {"type": "string", "description": "e.g. `30d`"}}}),
        ),
        (
            "Token",
            json!({"type": "object", "required": ["id", "tenant", "created_at"], "properties": {
            "id": {"type": "string"}, "tenant": {"type": "string"}, "created_at": time, "expires_at": maybe_time,
            "token": {"type": "string", "description": "Only in the answer that created it."}}}),
        ),
        (
            "TokenList",
            json!({"type": "object", "required": ["data"], "properties": {
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}}}),
        ),
        (
            "PortalLink",
            json!({"type": "object", "required": ["url", "expires_at"], "properties": {
            "url": {"type": "string"}, "expires_at": time}}),
        ),
        (
            "PortalSessionIn",
            json!({"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}}),
        ),
        (
            "PortalSession",
            json!({"type": "object", "required": ["token", "tenant", "expires_at"], "properties": {
            "token": {"type": "string"}, "tenant": {"type": "string"}, "name": maybe_string, "expires_at": time}}),
        ),
        (
            "TestSent",
            json!({"type": "object", "required": ["event_id", "delivery_id"], "properties": {
            "event_id": {"type": "string"}, "delivery_id": {"type": "string"}}}),
        ),
    ]
}

/// Charts and the operator's routes.
fn charts_and_operations() -> Vec<(&'static str, Value)> {
    let time = json!({"type": "string", "description": "RFC 3339, UTC."});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    vec![
        (
            "Stats",
            json!({"type": "object",
            "required": ["window", "resolution", "bucket_seconds", "since", "until", "buckets", "totals"],
            "properties": {"window": {"type": "string"}, "resolution": {"type": "string", "enum": ["minute", "hour"]},
            "bucket_seconds": {"type": "integer"}, "since": time, "until": time,
            "buckets": {"type": "array", "items": {"type": "object", "required": ["start", "succeeded", "failed", "retried", "attempts"]}},
            "totals": {"type": "object"}, "query_ms": {"type": "number"}}}),
        ),
        (
            "Overview",
            json!({"allOf": [{"$ref": "#/components/schemas/Stats"}, {"type": "object",
            "required": ["most_failing", "slowest", "backlog"], "properties": {
            "most_failing": {"type": "array"}, "slowest": {"type": "array"},
            "backlog": {"type": "object", "required": ["pending"]}}}]}),
        ),
        (
            "Reloaded",
            json!({"type": "object", "required": ["generation"], "properties": {
            "generation": {"type": "integer"}, "restart_required": strings}}),
        ),
        (
            "Health",
            json!({"type": "object", "required": ["status"], "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]}}}),
        ),
        ("Text", json!({"type": "string"})),
    ]
}

fn svix() -> Vec<(&'static str, Value)> {
    [svix_apps_and_endpoints(), svix_messages()].concat()
}

/// Svix's errors, applications and endpoints.
fn svix_apps_and_endpoints() -> Vec<(&'static str, Value)> {
    let time = json!({"type": "string", "format": "date-time"});
    let strings = json!({"type": ["array", "null"], "items": {"type": "string"}});
    let metadata = json!({"type": "object", "additionalProperties": {"type": "string"}});
    vec![
        (
            "SvixError",
            json!({"type": "object", "required": ["code", "detail"], "description":
            "Svix's error; a 422's `detail` is a list of {loc, msg, type}.", "properties": {
            "code": {"type": "string"}, "detail": {"type": ["string", "array"], "items": {
                "type": "object", "required": ["loc", "msg", "type"]}}}}),
        ),
        (
            "ApplicationIn",
            json!({"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "uid": {"type": ["string", "null"]}, "metadata": metadata,
            "rateLimit": {"type": ["integer", "null"]}}}),
        ),
        (
            "ApplicationPatch",
            json!({"type": "object", "properties": {
            "name": {"type": "string"}, "uid": {"type": ["string", "null"]}, "metadata": metadata}}),
        ),
        (
            "ApplicationOut",
            json!({"type": "object", "required": ["id", "name", "metadata", "createdAt", "updatedAt"], "properties": {
            "id": {"type": "string"}, "uid": {"type": ["string", "null"]}, "name": {"type": "string"},
            "metadata": metadata, "createdAt": time, "updatedAt": time}}),
        ),
        ("ListResponseApplicationOut", svix_list("ApplicationOut")),
        (
            "EndpointInSvix",
            json!({"type": "object", "required": ["url"], "properties": {
            "url": {"type": "string"}, "eventTypes": strings, "filterTypes": strings, "secret": {"type": ["string", "null"]},
            "throttleRate": {"type": ["integer", "null"]}, "disabled": {"type": "boolean"},
            "uid": {"type": ["string", "null"]}, "description": {"type": "string"}, "metadata": metadata,
            "channels": strings, "headers": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}}}),
        ),
        (
            "EndpointPatchSvix",
            json!({"type": "object", "properties": {
            "url": {"type": "string"}, "eventTypes": strings, "filterTypes": strings,
            "throttleRate": {"type": ["integer", "null"]}, "disabled": {"type": "boolean"},
            "uid": {"type": ["string", "null"]}, "description": {"type": "string"}, "metadata": metadata,
            "channels": strings, "headers": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}}}),
        ),
        (
            "EndpointOut",
            json!({"type": "object",
            "required": ["id", "url", "description", "metadata", "version", "createdAt", "updatedAt"], "properties": {
            "id": {"type": "string"}, "url": {"type": "string"}, "description": {"type": "string"}, "metadata": metadata,
            "uid": {"type": ["string", "null"]}, "version": {"type": "integer"}, "disabled": {"type": "boolean"},
            "eventTypes": strings, "filterTypes": strings, "channels": strings, "throttleRate": {"type": ["integer", "null"]},
            "createdAt": time, "updatedAt": time}}),
        ),
        ("ListResponseEndpointOut", svix_list("EndpointOut")),
        (
            "EndpointHeadersIn",
            json!({"type": "object", "required": ["headers"], "properties": {
            "headers": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
            "deleteHeaders": {"type": ["array", "null"], "items": {"type": "string"}}}}),
        ),
        (
            "EndpointHeadersOut",
            json!({"type": "object", "required": ["headers", "sensitive"], "properties": {
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "sensitive": {"type": "array", "items": {"type": "string"}}}}),
        ),
        (
            "EndpointSecretOut",
            json!({"type": "object", "required": ["key"], "properties": {"key": {"type": "string"},
            "publicKey": {"type": ["string", "null"], "description": "For an Ed25519 key (`whsk_`): the `whpk_` key that verifies `v1a`."}}}),
        ),
        (
            "EndpointSecretRotateInSvix",
            json!({"type": "object", "properties": {
            "key": {"type": ["string", "null"]}, "gracePeriodSeconds": {"type": ["integer", "null"]}}}),
        ),
    ]
}

/// Svix's messages, attempts, event types and portal.
fn svix_messages() -> Vec<(&'static str, Value)> {
    let any = any();
    let time = json!({"type": "string", "format": "date-time"});
    let strings = json!({"type": ["array", "null"], "items": {"type": "string"}});
    vec![
        (
            "MessageIn",
            json!({"type": "object", "required": ["eventType", "payload"], "properties": {
            "eventType": {"type": "string"}, "payload": any, "eventId": {"type": ["string", "null"]}, "channels": strings,
            "application": {"$ref": "#/components/schemas/ApplicationIn"}}}),
        ),
        (
            "MessageOut",
            json!({"type": "object", "required": ["id", "eventType", "payload", "timestamp"], "properties": {
            "id": {"type": "string"}, "eventType": {"type": "string"}, "eventId": {"type": ["string", "null"]},
            "payload": any, "channels": strings, "timestamp": time}}),
        ),
        ("ListResponseMessageOut", svix_list("MessageOut")),
        (
            "MessageAttemptOut",
            json!({"type": "object",
            "required": ["id", "msgId", "endpointId", "url", "response", "responseStatusCode", "status", "triggerType", "timestamp"],
            "properties": {"id": {"type": "string"}, "msgId": {"type": "string"}, "endpointId": {"type": "string"},
            "url": {"type": "string"}, "response": {"type": "string"}, "responseStatusCode": {"type": "integer"},
            "responseDurationMs": {"type": "integer"}, "status": {"type": "integer", "enum": [0, 1, 2, 3]},
            "triggerType": {"type": "integer", "enum": [0, 1]}, "timestamp": time}}),
        ),
        ("ListResponseMessageAttemptOut", svix_list("MessageAttemptOut")),
        (
            "EventTypeIn",
            json!({"type": "object", "required": ["name", "description"], "properties": {
            "name": {"type": "string"}, "description": {"type": "string"}, "archived": {"type": "boolean"},
            "deprecated": {"type": "boolean"}, "schemas": {"type": ["object", "null"]}, "groupName": {"type": ["string", "null"]},
            "featureFlags": strings}}),
        ),
        (
            "EventTypePatch",
            json!({"type": "object", "properties": {
            "description": {"type": "string"}, "archived": {"type": "boolean"}, "deprecated": {"type": "boolean"},
            "schemas": {"type": ["object", "null"]}}}),
        ),
        (
            "EventTypeOut",
            json!({"type": "object",
            "required": ["name", "description", "archived", "deprecated", "createdAt", "updatedAt"], "properties": {
            "name": {"type": "string"}, "description": {"type": "string"}, "archived": {"type": "boolean"},
            "deprecated": {"type": "boolean"}, "schemas": {"type": ["object", "null"]}, "createdAt": time, "updatedAt": time}}),
        ),
        ("ListResponseEventTypeOut", svix_list("EventTypeOut")),
        ("AppPortalAccessIn", json!({"type": "object", "properties": {"expiry": {"type": ["integer", "null"]}}})),
        (
            "AppPortalAccessOut",
            json!({"type": "object", "required": ["url", "token"], "properties": {
            "url": {"type": "string"}, "token": {"type": "string"}}}),
        ),
        ("EmptyResponse", json!({"type": "object"})),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utoipa's model keeps every schema exactly as written: nothing dropped or rewritten on
    /// the way into the document.
    #[test]
    fn schemas_survive_the_model_unchanged() {
        for (name, v) in native().into_iter().chain(svix()) {
            let back = serde_json::to_value(schema(v.clone())).unwrap();
            assert_eq!(back, v, "{name}");
        }
    }
}
