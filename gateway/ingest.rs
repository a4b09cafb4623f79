//! Ingest: `POST /v1/events` turns a producer's request into a durable event and its pending
//! deliveries, and answers 202 only once they are committed.
//!
//! Owns: request validation (auth, media type, size, JSON rules, the event's shape), fan-out at
//! ingest time and the `Idempotency-Key` contract.
//! Must not touch: outbound HTTP, signing or plugins. After the commit it only wakes the
//! dispatcher.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{Endpoint, RESERVED_FIELDS, valid_trigger};
use crate::http::{ApiError, AppState, json_response};
use crate::json::{self, Object, Value};
use crate::model::DEFAULT_TENANT;
use crate::model::{DeliveryRecord, DeliveryState, ErrorKind, EventRecord, Skipped};
use crate::store::{IdempotencyClaim, IngestOutcome, IngestWrite};

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A request body that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub trigger: String,
    /// The whole object: resource fields, `trigger` and `data`.
    pub fields: Object,
}

/// Checks the body against the event rules: a JSON object (per `json::parse`'s strict rules)
/// with a well-formed `trigger`, an object `data` and no reserved key.
pub fn validate(body: &[u8]) -> Result<ValidEvent, ApiError> {
    let value = json::parse(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.message))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_event",
            format!("the body must be a JSON object, not {}", value.kind()),
        ));
    };
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", m);
    let trigger = match fields.get("trigger") {
        None => return Err(invalid("missing `trigger`".into())),
        Some(Value::String(t)) if valid_trigger(t) => t.clone(),
        Some(Value::String(t)) => {
            return Err(invalid(format!("`trigger` {t:?} must be 1-128 characters of a-z, 0-9, '_', '.', '-'")));
        }
        Some(other) => {
            return Err(invalid(format!("`trigger` must be a string, not {}", other.kind())));
        }
    };
    match fields.get("data") {
        None => return Err(invalid("missing `data` (an object)".into())),
        Some(Value::Object(_)) => {}
        Some(other) => {
            return Err(invalid(format!("`data` must be an object, not {}", other.kind())));
        }
    }
    for reserved in RESERVED_FIELDS.iter().filter(|k| !matches!(**k, "trigger" | "data")) {
        if fields.get(reserved).is_some() {
            return Err(invalid(format!("`{reserved}` is reserved: the gateway sets it for each delivery")));
        }
    }
    Ok(ValidEvent { trigger, fields })
}

/// Takes one event from the tenant's `max_events_per_second`, or answers 429 with
/// `Retry-After`. Every event a tenant causes counts: ingests and test sends alike.
pub fn over_quota(st: &AppState, t: &crate::tenants::Tenant) -> Option<Response> {
    let wait = st.tenants.admit_event(t, st.clock.now_ms()).err()?;
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "tenant {:?} may ingest {} events per second; retry after {secs} s",
            t.id,
            t.limits.max_events_per_second.unwrap_or(0)
        ),
    )
    .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    Some(resp)
}

/// `POST /v1/events`: an event of the default tenant.
pub async fn create_event(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match create(&st, &headers, body, DEFAULT_TENANT).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/tenants/{id}/events`: an event of that tenant, with the same rules; it reaches
/// only that tenant's endpoints. Unknown tenants are a 404 and nothing is stored.
pub async fn create_tenant_event(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match create(&st, &headers, body, &tenant).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn create(st: &AppState, headers: &HeaderMap, body: Body, tenant: &str) -> Result<Response, ApiError> {
    st.live.get().ingest_tokens.check(headers)?;
    let Some(t) = st.tenants.get(tenant) else {
        return Err(ApiError::not_found(format!("no tenant with id {tenant:?}")));
    };
    if let Some(refused) = over_quota(st, &t) {
        return Ok(refused);
    }
    check_content_type(headers)?;
    let limit = st.config().server.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than server.max_body_bytes ({limit} bytes)"),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let mut chain: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
            let (mut over, mut slow) = (false, false);
            while let Some(s) = chain {
                over |= s.is::<http_body_util::LengthLimitError>();
                slow |= s.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                chain = s.source();
            }
            return Err(if over {
                too_large()
            } else if slow {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within server.request_body_timeout ({:?})",
                        st.config().server.request_body_timeout
                    ),
                )
            } else {
                ApiError::bad_request("the request body could not be read")
            });
        }
    };
    let idempotency_key = idempotency_key(headers)?;
    let event = validate(&bytes)?;
    // The slot lets dispatch add each delivery's idempotency key by splicing text.
    let (payload, envelope_slot) = json::canonical_with_slot(&event.fields, "idempotency_key");

    let now = st.clock.now_ms();
    // Fan-out (and Attendee's override rule) within the tenant's own endpoints.
    let endpoints = st.endpoints.of_tenant(tenant);
    let receivers = crate::fanout::select(&endpoints, &event.trigger, &event.fields);
    // A disabled endpoint gets no delivery; the event's record says why.
    let (receivers, disabled): (Vec<&Endpoint>, Vec<&Endpoint>) =
        receivers.into_iter().partition(|e| st.health.is_enabled(&e.id));
    let skipped = disabled
        .iter()
        .map(|e| Skipped { endpoint_id: e.id.clone(), reason: ErrorKind::EndpointDisabled.as_str().into() })
        .collect();
    // Keys are per tenant: the same key from two tenants is two keys.
    let claim = idempotency_key.map(|key| IdempotencyClaim {
        key: if tenant == DEFAULT_TENANT { key } else { format!("{tenant}\u{0}{key}") },
        request_hash: hex(&Sha256::digest(payload.as_bytes())),
    });
    let mut write =
        build_write(&event.trigger, &event.fields, (payload, envelope_slot), &receivers, skipped, now, claim);
    set_tenant(&mut write, tenant);
    let commit_started = std::time::Instant::now();
    let outcome = st.store.ingest(write).await.map_err(|e| ApiError::store(&e))?;
    st.metrics.ingest_commit.observe(commit_started.elapsed());
    let (event_id, n, replayed) = match outcome {
        IngestOutcome::Created { event_id, deliveries } => {
            st.wake.notify_one();
            st.metrics.events_ingested.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            st.metrics.deliveries_created.fetch_add(deliveries as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%event_id, trigger = %event.trigger, deliveries, "event accepted");
            (event_id, deliveries, false)
        }
        IngestOutcome::Replayed { event_id, deliveries } => (event_id, deliveries, true),
        IngestOutcome::KeyReused => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was used with a different body within retention.idempotency ({:?})",
                    st.config().retention.idempotency
                ),
            ));
        }
    };
    let body = serde_json::json!({ "event_id": event_id, "deliveries": n }).to_string();
    let mut resp = json_response(StatusCode::ACCEPTED, body);
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", header::HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// The event and its pending deliveries, one per receiver, as the store writes them. `canonical`
/// is the payload's canonical text and the envelope slot (`json::canonical_with_slot`). Used by
/// ingest and for the gateway's own operational events.
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

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be application/json, not {:?}", ct),
        ))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.trim().is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => Ok(Some(k.trim().to_owned())),
        _ => Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("[]", "not an array"),
            (r#"{"data":{}}"#, "missing `trigger`"),
            (r#"{"trigger":5,"data":{}}"#, "must be a string"),
            (r#"{"trigger":"Bot Change","data":{}}"#, "must be 1-128"),
            (r#"{"trigger":"bot.state_change"}"#, "missing `data`"),
            (r#"{"trigger":"bot.state_change","data":[]}"#, "`data` must be an object"),
            (r#"{"trigger":"bot.state_change","data":{},"idempotency_key":"x"}"#, "reserved"),
        ];
        for (body, needle) in cases {
            let e = validate(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        let ok = validate(br#"{"trigger":"bot.state_change","data":{},"bot_id":"b"}"#).unwrap();
        assert_eq!(ok.trigger, "bot.state_change");
        assert_eq!(ok.fields.len(), 3);
    }
}
