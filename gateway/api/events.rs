//! `POST /v1/events` and `POST /v1/tenants/{id}/events`: the request rules of ingest.
//!
//! Owns: what a producer's request must be (auth, the tenant's quota, media type, size, the
//! JSON rules and the event's shape, the `Idempotency-Key` header) and the 202 answer, given
//! only once the event is committed (the commit itself is `ingest`'s).
//! Must not touch: fan-out, the store or the dispatcher directly.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use super::error::{ApiError, json_response};
use super::state::AppState;
use crate::config::{RESERVED_FIELDS, valid_trigger};
use crate::events::ValidEvent;
use crate::json::{self, Value};
use crate::model::DEFAULT_TENANT;
use crate::store::IngestOutcome;
use crate::telemetry;
use crate::tenants::Tenant;

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The whole request body, within `server.max_body_bytes` (413) and the body deadline (408).
async fn read_body(st: &AppState, headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, ApiError> {
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
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut chain: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
            let (mut over, mut slow) = (false, false);
            while let Some(s) = chain {
                over |= s.is::<http_body_util::LengthLimitError>();
                slow |= s.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                chain = s.source();
            }
            Err(if over {
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
            })
        }
    }
}

/// With `[event_types] validate` on, checks `payload` against the schema of its event type:
/// `Err` is where and why it does not match. Off, or without a schema, everything passes.
pub async fn schema_check(
    st: &AppState,
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<Result<(), crate::schemas::Invalid>, ApiError> {
    if !st.config().validate_event_schemas {
        return Ok(Ok(()));
    }
    st.schemas.check(event_type, payload).await.map_err(|e| ApiError::store(&e))
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
pub fn admit(st: &AppState, t: &Tenant) -> Result<(), ApiError> {
    let Err(wait) = st.tenants.admit_event(t, st.clock.now_ms()) else { return Ok(()) };
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "tenant {:?} may ingest {} events per second; retry after {secs} s",
            t.id,
            t.limits.max_events_per_second.unwrap_or(0)
        ),
    )
    .retry_after(secs))
}

/// `POST /v1/events`: an event of the default tenant.
pub async fn create_event(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    create(&st, &headers, body, DEFAULT_TENANT).await
}

/// `POST /v1/tenants/{id}/events`: an event of that tenant, with the same rules; it reaches
/// only that tenant's endpoints. Unknown tenants are a 404 and nothing is stored.
pub async fn create_tenant_event(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create(&st, &headers, body, &tenant).await
}

async fn create(st: &AppState, headers: &HeaderMap, body: Body, tenant: &str) -> Result<Response, ApiError> {
    st.ingester(headers)?;
    let Some(t) = st.tenants.get(tenant) else {
        return Err(ApiError::not_found(format!("no tenant with id {tenant:?}")));
    };
    admit(st, &t)?;
    check_content_type(headers)?;
    let bytes = read_body(st, headers, body).await?;
    let idempotency_key = idempotency_key(headers)?;
    let event = validate(&bytes)?;
    let instance: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Err(invalid) = schema_check(st, &event.trigger, &instance).await? {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_mismatch",
            format!(
                "the event does not match the schema of event type {:?} at {:?}: {}",
                event.trigger, invalid.path, invalid.message
            ),
        ));
    }
    // One trace per event: a producer's `traceparent` becomes the ingest span's parent.
    let parent = telemetry::remote(headers.get("traceparent").and_then(|v| v.to_str().ok()));
    let span = st.telemetry.start_span(
        "hookgate.ingest",
        SpanKind::Server,
        &parent,
        vec![
            KeyValue::new("hookgate.tenant", tenant.to_owned()),
            KeyValue::new("hookgate.trigger", event.trigger.clone()),
            KeyValue::new("hookgate.event.size", bytes.len() as i64),
        ],
        vec![],
    );
    let outcome = st.ingest.accept(tenant, &event, idempotency_key, &span).await;
    match &outcome {
        Ok(IngestOutcome::Created { event_id, deliveries } | IngestOutcome::Replayed { event_id, deliveries }) => {
            telemetry::record(
                &span,
                vec![
                    KeyValue::new("hookgate.event.id", event_id.to_string()),
                    KeyValue::new("hookgate.deliveries", *deliveries as i64),
                ],
            );
        }
        Ok(IngestOutcome::KeyReused) => telemetry::fail(&span, "idempotency key reused".into()),
        Err(e) => telemetry::fail(&span, e.to_string()),
    }
    telemetry::end(&span);
    let outcome = outcome.map_err(|e| ApiError::store(&e))?;
    let (event_id, n, replayed) = match outcome {
        IngestOutcome::Created { event_id, deliveries } => (event_id, deliveries, false),
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
