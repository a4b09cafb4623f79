//! Svix messages, which are events delivered exactly as sent.
//!
//! Owns: `/api/v1/app/{app_id}/msg[/{msg_id}]`: create (`eventType`, `payload`, `eventId`
//! unique per application: 409 on a repeat; `channels`; an inline `application` created when
//! the one in the path does not exist; the SDKs' `idempotency-key` replays the first answer),
//! get, and list (newest first; `event_types`, `channel`, `before`, `after`). A message's deliveries send the payload's bytes as the producer wrote them, signed
//! with the message's id (`svix-id`/`webhook-id`; `[delivery] signature_headers` chooses the
//! header sets).
//! Must not touch: the store: messages are committed by `ingest`, like every event.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Result, SvixError, answer};
use crate::api::state::AppState;
use crate::events::ValidEvent;
use crate::model::{EventRecord, MessageMeta, rfc3339};
use crate::store::IngestOutcome;
use crate::telemetry;

/// `MessageIn`, with the payload kept as the bytes sent. Fields the SDKs may add that change
/// nothing about delivery here (`tags`, retention periods) are accepted and ignored; a
/// `deliverAt` is refused, since sending at once what was meant for later would be wrong.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageIn<'a> {
    event_type: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    application: Option<Value>,
    #[serde(default)]
    deliver_at: Option<Value>,
}

/// A stored message as Svix's `MessageOut`.
pub fn message_out(e: &EventRecord) -> Value {
    let meta = e.message.clone().unwrap_or_default();
    json!({
        "id": e.message_id(),
        "eventType": e.trigger,
        "eventId": meta.event_id,
        "payload": serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null),
        "channels": (!meta.channels.is_empty()).then_some(&meta.channels),
        "timestamp": rfc3339(e.received_at_ms),
        "tags": Value::Null,
    })
}

/// `POST /api/v1/app/{app_id}/msg` (the organisation's token: the admin token).
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    st.admin(&headers)?;
    let m: MessageIn = serde_json::from_slice(&body).map_err(|e| SvixError::invalid(e.to_string()))?;
    if let Some(channels) = &m.channels {
        crate::endpoint::check_channels(channels).map_err(SvixError::invalid)?;
    }
    if m.deliver_at.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(SvixError::invalid("`deliverAt` is not supported by Hookgate yet: messages are delivered at once"));
    }
    if !crate::endpoint::valid_trigger(&m.event_type) {
        return Err(SvixError::invalid(format!(
            "`eventType` {:?}: 1-128 characters of lowercase letters, digits, '_', '.', '-'",
            m.event_type
        )));
    }
    let fields = match crate::json::parse(m.payload.get().as_bytes()) {
        Ok(crate::json::Value::Object(o)) => o,
        Ok(_) => return Err(SvixError::invalid("`payload` must be a JSON object")),
        Err(e) => return Err(SvixError::invalid(format!("`payload`: {}", e.message))),
    };
    if st.tenants.get(&app).is_none() {
        match &m.application {
            // Svix creates the application named inline when the one in the path is missing.
            Some(a) => {
                let mut a = a.clone();
                a["uid"] = Value::String(app.clone());
                let body = axum::body::Bytes::from(a.to_string());
                super::apps::create(State(st.clone()), headers.clone(), axum::extract::Query(Default::default()), body)
                    .await?;
            }
            None => return Err(SvixError::not_found(format!("no application with id {app:?}"))),
        }
    }
    let tenant = st.tenants.get(&app).ok_or_else(|| SvixError::not_found(format!("no application {app:?}")))?;
    let instance: Value = serde_json::from_str(m.payload.get()).unwrap_or_default();
    if let Err(invalid) = crate::api::events::schema_check(&st, &m.event_type, &instance).await? {
        // Svix's validation shape, with the location inside the payload.
        let mut loc = vec![json!("body"), json!("payload")];
        loc.extend(invalid.path.split('/').filter(|s| !s.is_empty()).map(|s| json!(s)));
        let body = json!({ "code": "validation", "detail": [{ "loc": loc, "msg": invalid.message, "type": "schema_mismatch" }] });
        return Ok(answer(StatusCode::UNPROCESSABLE_ENTITY, body));
    }
    crate::api::events::admit(&st, &tenant)?;
    // `eventId` is unique per application (a repeat is 409); otherwise the SDK's automatic
    // `idempotency-key` makes its retries replay the first answer.
    let key = match (&m.event_id, headers.get("idempotency-key").and_then(|v| v.to_str().ok())) {
        (Some(id), _) => Some(format!("svix-event-id:{id}")),
        (None, Some(k)) if !k.is_empty() && k.len() <= 255 => Some(format!("svix-idempotency:{k}")),
        _ => None,
    };
    let meta = MessageMeta { event_id: m.event_id.clone(), channels: m.channels.clone().unwrap_or_default() };
    let event = ValidEvent { trigger: m.event_type.clone(), fields };
    let span = st.telemetry.start_span(
        "hookgate.ingest",
        SpanKind::Server,
        &opentelemetry::Context::new(),
        vec![
            KeyValue::new("hookgate.tenant", tenant.id.clone()),
            KeyValue::new("hookgate.trigger", m.event_type.clone()),
        ],
        vec![],
    );
    let outcome = st.ingest.accept_message(&tenant.id, &event, m.payload.get().to_owned(), meta, key, &span).await;
    telemetry::end(&span);
    let outcome = outcome.map_err(|e| crate::api::error::ApiError::store(&e))?;
    let (event_id, status) = match outcome {
        IngestOutcome::Created { event_id, .. } => (event_id, StatusCode::ACCEPTED),
        IngestOutcome::Replayed { .. } | IngestOutcome::KeyReused if m.event_id.is_some() => {
            return Err(SvixError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "a message with eventId {:?} already exists in this application",
                    m.event_id.unwrap_or_default()
                ),
            ));
        }
        IngestOutcome::Replayed { event_id, .. } => (event_id, StatusCode::ACCEPTED),
        IngestOutcome::KeyReused => {
            return Err(SvixError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_conflict",
                "this idempotency-key was used with a different request",
            ));
        }
    };
    let stored = st.store.event(event_id).await.map_err(|e| crate::api::error::ApiError::store(&e))?;
    let stored = stored.ok_or_else(|| SvixError::not_found("the message was stored but cannot be read back"))?;
    Ok(answer(status, message_out(&stored)))
}

/// `GET /api/v1/app/{app_id}/msg/{msg_id}`.
pub async fn get(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((app, msg)): Path<(String, String)>,
) -> Result<Response> {
    let tenant = st.tenant_access(&headers, &app)?;
    let missing = || SvixError::not_found(format!("no message with id {msg:?}"));
    let id = msg.strip_prefix("msg_").and_then(|hex| uuid::Uuid::parse_str(hex).ok()).ok_or_else(missing)?;
    let event = st.store.event(id).await.map_err(|e| crate::api::error::ApiError::store(&e))?.ok_or_else(missing)?;
    let own = event.tenant.as_deref().unwrap_or(crate::model::DEFAULT_TENANT) == tenant.id;
    if !own || event.message.is_none() {
        return Err(missing());
    }
    Ok(answer(StatusCode::OK, message_out(&event)))
}

/// Events visited at most to answer one page of a message list.
const LIST_BUDGET: usize = 5_000;

/// `GET /api/v1/app/{app_id}/msg`: the application's messages (every event of its tenant),
/// newest first; `event_types` filters, `iterator` continues.
pub async fn list_messages(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response> {
    let tenant = st.tenant_access(&headers, &app)?;
    let limit = super::limit(&q)?;
    let before = match q.get("iterator").filter(|i| !i.is_empty()) {
        None => None,
        Some(i) => Some(
            i.strip_prefix("msg_")
                .and_then(|hex| uuid::Uuid::parse_str(hex).ok())
                .ok_or_else(|| SvixError::invalid("`iterator` is not one this API gave"))?,
        ),
    };
    let types: Option<Vec<&str>> = q.get("event_types").map(|t| t.split(',').map(str::trim).collect());
    let channel = q.get("channel").filter(|c| !c.is_empty());
    let time = |name: &str| {
        q.get(name)
            .filter(|t| !t.is_empty())
            .map(|t| crate::model::parse_time(t).map_err(|e| SvixError::invalid(format!("`{name}`: {e}"))))
            .transpose()
    };
    let (created_before, created_after) = (time("before")?, time("after")?);
    // Ids are UUIDv7, so "created before T" is an id bound: the smallest id of T's millisecond.
    let bound = |t: u64| uuid::Builder::from_unix_timestamp_millis(t, &[0; 10]).into_uuid();
    let before = match created_before.map(bound) {
        Some(bound) => Some(before.map_or(bound, |b| b.min(bound))),
        None => before,
    };
    let key = (tenant.id != crate::model::DEFAULT_TENANT).then(|| tenant.id.clone());
    let (events, next) = st
        .store
        .list_events(key, before, limit, LIST_BUDGET)
        .await
        .map_err(|e| crate::api::error::ApiError::store(&e))?;
    // Newest first: once a page reaches past `after`, nothing older is wanted.
    let past_after = created_after.is_some_and(|a| events.last().is_some_and(|e| e.received_at_ms < a));
    let data = events
        .iter()
        .filter(|e| types.as_ref().is_none_or(|t| t.contains(&e.trigger.as_str())))
        .filter(|e| channel.is_none_or(|c| e.message.as_ref().is_some_and(|m| m.channels.contains(c))))
        .filter(|e| created_after.is_none_or(|a| e.received_at_ms >= a))
        .map(message_out)
        .collect();
    let next = next.filter(|_| !past_after);
    Ok(super::list_page(data, next.map(|id| format!("msg_{}", id.simple()))))
}
