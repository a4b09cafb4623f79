//! The read API: `GET /v1/events/{id}`, `GET /v1/deliveries/{id}` and `GET /healthz`.
//!
//! Owns: the JSON shape of events, deliveries and attempts as API users see them (RFC 3339
//! times, stable field names).
//! Must not touch: writes of any kind. It reads through `store` and renders.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::http::{ApiError, AppState, json_response};
use crate::model::{AttemptRecord, DeliveryRecord, DeliveryState, EventRecord, rfc3339};

#[derive(Serialize)]
pub struct EventView<'a> {
    pub id: Uuid,
    pub trigger: &'a str,
    pub received_at: String,
    /// The event as ingested (canonical JSON), embedded verbatim so big integers stay exact.
    pub payload: &'a RawValue,
    pub delivery_ids: &'a [Uuid],
}

#[derive(Serialize)]
pub struct DeliveryView<'a> {
    pub id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: &'a str,
    pub idempotency_key: Uuid,
    pub trigger: &'a str,
    pub state: &'static str,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub attempts: Vec<AttemptView<'a>>,
    /// Set when a plugin dropped the delivery: which one and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered: Option<NoteView<'a>>,
    /// Set when a plugin failed the delivery before any attempt (error kind `plugin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PluginErrorView<'a>>,
}

#[derive(Serialize)]
pub struct NoteView<'a> {
    pub plugin: &'a str,
    pub reason: &'a str,
}

#[derive(Serialize)]
pub struct PluginErrorView<'a> {
    pub kind: &'static str,
    pub plugin: &'a str,
    pub message: &'a str,
}

#[derive(Serialize)]
pub struct AttemptView<'a> {
    pub number: u32,
    pub started_at: String,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<ErrorView<'a>>,
    pub response_body: &'a str,
}

#[derive(Serialize)]
pub struct ErrorView<'a> {
    pub kind: &'static str,
    pub message: &'a str,
}

pub fn delivery_view(d: &DeliveryRecord) -> DeliveryView<'_> {
    DeliveryView {
        id: d.id,
        event_id: d.event_id,
        endpoint_id: &d.endpoint_id,
        idempotency_key: d.idempotency_key,
        trigger: &d.trigger,
        state: d.state.as_str(),
        created_at: rfc3339(d.created_at_ms),
        next_attempt_at: d.next_attempt_at_ms.map(rfc3339),
        attempts: d.attempts.iter().map(attempt_view).collect(),
        filtered: match (&d.note, d.state) {
            (Some(n), DeliveryState::Filtered) => Some(NoteView {
                plugin: &n.plugin,
                reason: &n.message,
            }),
            _ => None,
        },
        error: match (&d.note, d.state) {
            (Some(n), DeliveryState::Failed) => Some(PluginErrorView {
                kind: "plugin",
                plugin: &n.plugin,
                message: &n.message,
            }),
            _ => None,
        },
    }
}

fn attempt_view(a: &AttemptRecord) -> AttemptView<'_> {
    AttemptView {
        number: a.number,
        started_at: rfc3339(a.started_at_ms),
        duration_ms: a.duration_ms,
        status_code: a.status_code,
        error: a.error.as_ref().map(|e| ErrorView {
            kind: e.kind.as_str(),
            message: &e.message,
        }),
        response_body: &a.response_body,
    }
}

fn event_view(e: &EventRecord) -> Result<EventView<'_>, ApiError> {
    let payload: &RawValue = serde_json::from_str(&e.payload).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt_record",
            "the stored event is unreadable",
        )
    })?;
    Ok(EventView {
        id: e.id,
        trigger: &e.trigger,
        received_at: rfc3339(e.received_at_ms),
        payload,
        delivery_ids: &e.delivery_ids,
    })
}

fn parse_id(kind: &str, text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no {kind} with id {text:?}")))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("views serialise")
}

/// `GET /v1/events/{id}`: `{"event": {...}, "deliveries": [...]}`.
pub async fn get_event(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        st.admin_tokens.check(&headers)?;
        let id = parse_id("event", &id)?;
        let event = st
            .store
            .event(id)
            .await
            .map_err(|e| ApiError::store(&e))?
            .ok_or_else(|| ApiError::not_found(format!("no event with id {id}")))?;
        let deliveries = st
            .store
            .deliveries(event.delivery_ids.clone())
            .await
            .map_err(|e| ApiError::store(&e))?;
        #[derive(Serialize)]
        struct Body<'a> {
            event: EventView<'a>,
            deliveries: Vec<DeliveryView<'a>>,
        }
        let body = Body {
            event: event_view(&event)?,
            deliveries: deliveries.iter().map(delivery_view).collect(),
        };
        Ok::<_, ApiError>(json_response(StatusCode::OK, to_json(&body)))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/deliveries/{id}`: the delivery with its attempts.
pub async fn get_delivery(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        st.admin_tokens.check(&headers)?;
        let id = parse_id("delivery", &id)?;
        let d = st
            .store
            .delivery(id)
            .await
            .map_err(|e| ApiError::store(&e))?
            .ok_or_else(|| ApiError::not_found(format!("no delivery with id {id}")))?;
        Ok::<_, ApiError>(json_response(StatusCode::OK, to_json(&delivery_view(&d))))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /healthz`: 200 while the store answers reads, 503 otherwise.
pub async fn health(State(st): State<AppState>) -> Response {
    match st.store.pending_count().await {
        Ok(pending) => {
            let stats = st.store.stats();
            let body = serde_json::json!({
                "status": "ok",
                "pending_deliveries": pending,
                // The group-commit factor is operations / commits.
                "store": {
                    "commits": stats.commits.load(std::sync::atomic::Ordering::Relaxed),
                    "operations": stats.operations.load(std::sync::atomic::Ordering::Relaxed),
                },
            });
            json_response(StatusCode::OK, body.to_string())
        }
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "unavailable", "error": e.to_string() }).to_string(),
        ),
    }
}
