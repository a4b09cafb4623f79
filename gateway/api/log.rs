//! The delivery log: events and deliveries as API users see them (`/v1/events/{id}`,
//! `/v1/deliveries`, one delivery, resends, bulk resends).
//!
//! Owns: the JSON shape of events, deliveries and attempts as API users see them (RFC 3339
//! times, stable field names).
//! Must not touch: the on-disk layout or outbound HTTP. It reads through `store`, and its writes
//! (resends) go through `dispatch` and `store`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::error::{ApiError, json_response};
use super::state::AppState;
use crate::dispatch::ResendError;
use crate::json;
use crate::model::{AttemptRecord, DeliveryRecord, DeliveryState, ErrorKind, EventRecord, rfc3339};
use crate::model::{now_ms, parse_time};
use crate::store::DeliveryQuery;

#[derive(Serialize)]
pub struct EventView<'a> {
    pub id: Uuid,
    pub trigger: &'a str,
    pub received_at: String,
    /// The event as ingested (canonical JSON), embedded verbatim so big integers stay exact.
    pub payload: &'a RawValue,
    pub delivery_ids: &'a [Uuid],
    /// Endpoints the event was routed to but that got no delivery, and why.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub skipped: &'a [crate::model::Skipped],
    /// The OpenTelemetry trace of the event (tracing on): look it up in the trace viewer.
    pub trace_id: Option<String>,
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
    /// Made by a resend request rather than the retry schedule.
    pub manual: bool,
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
            (Some(n), DeliveryState::Filtered) => Some(NoteView { plugin: &n.plugin, reason: &n.message }),
            _ => None,
        },
        error: match (&d.note, d.state) {
            (Some(n), DeliveryState::Failed) => Some(PluginErrorView {
                kind: n.kind.unwrap_or(ErrorKind::Plugin).as_str(),
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
        error: a.error.as_ref().map(|e| ErrorView { kind: e.kind.as_str(), message: &e.message }),
        response_body: &a.response_body,
        manual: a.manual,
    }
}

fn event_view(e: &EventRecord) -> Result<EventView<'_>, ApiError> {
    let payload: &RawValue = serde_json::from_str(&e.payload).map_err(|_| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_record", "the stored event is unreadable")
    })?;
    Ok(EventView {
        id: e.id,
        trigger: &e.trigger,
        received_at: rfc3339(e.received_at_ms),
        payload,
        delivery_ids: &e.delivery_ids,
        skipped: &e.skipped,
        trace_id: e.trace.as_deref().and_then(crate::telemetry::trace_id),
    })
}

pub(crate) fn parse_id(kind: &str, text: &str) -> Result<Uuid, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(format!("no {kind} with id {text:?}")))
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("views serialise")
}

/// `GET /v1/events/{id}`: `{"event": {...}, "deliveries": [...]}`.
pub async fn get_event(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let id = parse_id("event", &id)?;
    let event = st
        .store
        .event(id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| ApiError::not_found(format!("no event with id {id}")))?;
    let deliveries = st.store.deliveries(event.delivery_ids.clone()).await.map_err(|e| ApiError::store(&e))?;
    #[derive(Serialize)]
    struct Body<'a> {
        event: EventView<'a>,
        deliveries: Vec<DeliveryView<'a>>,
    }
    let body = Body { event: event_view(&event)?, deliveries: deliveries.iter().map(delivery_view).collect() };
    Ok(json_response(StatusCode::OK, to_json(&body)))
}

/// `GET /v1/deliveries/{id}`: the delivery with its attempts.
pub async fn get_delivery(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let id = parse_id("delivery", &id)?;
    detail_response(&st, id).await
}

/// A delivery with everything the log shows about it: the exact body sent (the stored
/// transform, or the canonical envelope), the endpoint's URL and the event's resource fields.
async fn detail_response(st: &AppState, id: Uuid) -> Result<Response, ApiError> {
    let (_, detail) = detail_value(st, id, None).await?;
    Ok(json_response(StatusCode::OK, detail.to_string()))
}

/// The detail of a delivery, and its tenant. With `tenant`, a delivery of another tenant is not
/// found, and endpoint ids are the tenant's own.
pub(crate) async fn detail_value(
    st: &AppState,
    id: Uuid,
    tenant: Option<&str>,
) -> Result<(String, serde_json::Value), ApiError> {
    let not_found = || ApiError::not_found(format!("no delivery with id {id}"));
    let (d, event) = st.store.delivery_with_event(id).await.map_err(|e| ApiError::store(&e))?.ok_or_else(not_found)?;
    if tenant.is_some_and(|t| t != d.tenant()) {
        return Err(not_found());
    }
    let body = match (&d.body, d.state) {
        (Some(b), _) => Some(b.clone()),
        (None, DeliveryState::Filtered) => None,
        (None, _) => crate::dispatch::envelope(&event, d.idempotency_key).ok(),
    };
    let body: Option<Box<RawValue>> = body.and_then(|b| RawValue::from_string(b).ok());
    #[derive(Serialize)]
    struct Detail<'a> {
        #[serde(flatten)]
        delivery: DeliveryView<'a>,
        url: Option<String>,
        resource: serde_json::Map<String, serde_json::Value>,
        /// The exact bytes sent (or to be sent), as JSON; null for a filtered delivery.
        body: Option<Box<RawValue>>,
        /// The event's OpenTelemetry trace, when tracing was on at ingest.
        trace_id: Option<String>,
    }
    let detail = Detail {
        delivery: delivery_view(&d),
        url: st.endpoints.get(&d.endpoint_id).map(|e| e.url.to_string()),
        resource: resource_map(&d),
        body,
        trace_id: event.trace.as_deref().and_then(crate::telemetry::trace_id),
    };
    let mut v = serde_json::to_value(&detail).unwrap_or_default();
    localize(&mut v, &d, tenant.is_some());
    Ok((d.tenant().to_owned(), v))
}

/// Adds the delivery's tenant to its JSON; in a tenant's routes, endpoint ids are the tenant's
/// own (`hooks`, not `acme/hooks`).
fn localize(v: &mut serde_json::Value, d: &DeliveryRecord, scoped: bool) {
    if let Some(o) = v.as_object_mut() {
        o.insert("tenant".into(), serde_json::Value::String(d.tenant().to_owned()));
        if scoped {
            let local = crate::endpoint::split_id(&d.endpoint_id).1.to_owned();
            o.insert("endpoint_id".into(), serde_json::Value::String(local));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery log: listing, resend.

/// The largest page `GET /v1/deliveries` returns.
pub const MAX_PAGE: usize = 200;
const DEFAULT_PAGE: usize = 50;

/// At most this many deliveries are queued by one bulk resend; the answer says if more remain.
const MAX_BULK_RESEND: usize = 10_000;

/// Query parameters with a meaning of their own; any other parameter filters on a resource
/// field of the event (`bot_id=bot_123`).
const LIST_PARAMS: &[&str] = &["state", "endpoint_id", "trigger", "tenant", "since", "until", "limit", "cursor"];

#[derive(Serialize)]
pub struct DeliverySummary<'a> {
    pub id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: &'a str,
    pub trigger: &'a str,
    pub state: &'static str,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub attempt_count: usize,
    pub last_attempt: Option<LastAttempt<'a>>,
    /// The event's scalar resource fields (`bot_id`, ...).
    pub resource: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
pub struct LastAttempt<'a> {
    pub started_at: String,
    pub status_code: Option<u16>,
    pub error_kind: Option<&'static str>,
    pub manual: bool,
    #[serde(skip)]
    _p: std::marker::PhantomData<&'a ()>,
}

fn resource_map(d: &DeliveryRecord) -> serde_json::Map<String, serde_json::Value> {
    // Values are canonical JSON scalars; strings and booleans round-trip through serde_json
    // exactly, and numbers that do not are shown as their text.
    d.resource
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()))))
        .collect()
}

fn summary(d: &DeliveryRecord) -> DeliverySummary<'_> {
    DeliverySummary {
        id: d.id,
        event_id: d.event_id,
        endpoint_id: &d.endpoint_id,
        trigger: &d.trigger,
        state: d.state.as_str(),
        created_at: rfc3339(d.created_at_ms),
        next_attempt_at: d.next_attempt_at_ms.map(rfc3339),
        attempt_count: d.attempts.len(),
        last_attempt: d.attempts.last().map(|a| LastAttempt {
            started_at: rfc3339(a.started_at_ms),
            status_code: a.status_code,
            error_kind: a.error.as_ref().map(|e| e.kind.as_str()),
            manual: a.manual,
            _p: std::marker::PhantomData,
        }),
        resource: resource_map(d),
    }
}

fn parse_query(params: &[(String, String)]) -> Result<DeliveryQuery, ApiError> {
    let mut q = DeliveryQuery { limit: DEFAULT_PAGE, ..DeliveryQuery::default() };
    let time = |name: &str, v: &str| parse_time(v).map_err(|e| ApiError::bad_request(format!("`{name}`: {e}")));
    for (k, v) in params {
        match k.as_str() {
            "state" => {
                q.state = Some(match v.as_str() {
                    "pending" => DeliveryState::Pending,
                    "succeeded" => DeliveryState::Succeeded,
                    "failed" => DeliveryState::Failed,
                    "filtered" => DeliveryState::Filtered,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "`state` must be pending, succeeded, failed or filtered, not {v:?}"
                        )));
                    }
                })
            }
            "endpoint_id" => q.endpoint_id = Some(v.clone()),
            "tenant" => q.tenant = Some(v.clone()),
            "trigger" => q.trigger = Some(v.clone()),
            "since" => q.since_ms = Some(time("since", v)?),
            "until" => q.until_ms = Some(time("until", v)?),
            "limit" => {
                q.limit = v.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                    ApiError::bad_request(format!("`limit` must be a number from 1 to {MAX_PAGE}, not {v:?}"))
                })?
            }
            "cursor" => {
                q.after = Some(v.parse().map_err(|_| {
                    ApiError::bad_request(format!("`cursor` {v:?} is not a cursor from a previous page"))
                })?)
            }
            field if field.is_empty() || field.len() > 128 => {
                return Err(ApiError::bad_request("resource field filters need a name of 1-128 characters"));
            }
            field => q.fields.push((field.to_owned(), json::Value::String(v.clone()).to_canonical())),
        }
    }
    debug_assert!(LIST_PARAMS.iter().all(|p| !p.is_empty()));
    Ok(q)
}

/// `GET /v1/deliveries`: newest first, filtered, paginated by cursor.
pub async fn list_deliveries(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    list_page(&st, &params, None).await
}

/// A page of the delivery log; with `tenant`, only that tenant's deliveries (from the index),
/// with the tenant's own endpoint ids.
pub(crate) async fn list_page(
    st: &AppState,
    params: &[(String, String)],
    tenant: Option<&str>,
) -> Result<Response, ApiError> {
    let mut q = parse_query(params)?;
    if let Some(t) = tenant {
        q.tenant = Some(t.to_owned());
        if let Some(e) = &q.endpoint_id {
            q.endpoint_id = Some(crate::endpoint::internal_id(t, e));
        }
    }
    let page = st.store.list_deliveries(q).await.map_err(|e| ApiError::store(&e))?;
    let data: Vec<serde_json::Value> = page
        .deliveries
        .iter()
        .map(|d| {
            let mut v = serde_json::to_value(summary(d)).unwrap_or_default();
            localize(&mut v, d, tenant.is_some());
            v
        })
        .collect();
    let body = serde_json::json!({ "data": data, "next_cursor": page.next });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// `POST /v1/deliveries/{id}/resend`: one manual attempt now; answers with the delivery.
pub async fn resend(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let id = parse_id("delivery", &id)?;
    resend_one(&st, id).await?;
    detail_response(&st, id).await
}

/// One manual attempt, with the API's answer to each refusal.
pub(crate) async fn resend_one(st: &AppState, id: Uuid) -> Result<(), ApiError> {
    st.dispatcher.resend(id).await.map_err(|e| match e {
        ResendError::NotFound => ApiError::not_found(format!("no delivery with id {id}")),
        ResendError::Store(e) => ApiError::store(&e),
        ResendError::AttemptCap => ApiError::new(StatusCode::CONFLICT, "attempt_limit_reached", e.to_string()),
        ResendError::InProgress => ApiError::new(StatusCode::CONFLICT, "attempt_in_progress", e.to_string()),
        ResendError::WaitingInOrder => ApiError::new(StatusCode::CONFLICT, "waiting_in_order", e.to_string()),
        ResendError::Filtered => ApiError::new(StatusCode::CONFLICT, "delivery_filtered", e.to_string()),
    })
}

/// `POST /v1/deliveries/resend` `{"endpoint_id", "since"}`: queues one new attempt for every
/// failed delivery of the endpoint created since then (Svix's "recover").
pub async fn bulk_resend(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let v = json::parse(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.message))?;
    let o = v.as_object().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    if let Some((k, _)) = o.iter().find(|(k, _)| !matches!(*k, "endpoint_id" | "since")) {
        return Err(ApiError::bad_request(format!("unknown field `{k}`; expected endpoint_id, since")));
    }
    let endpoint_id = o
        .get("endpoint_id")
        .and_then(json::Value::as_str)
        .ok_or_else(|| ApiError::bad_request("`endpoint_id` (a string) is required"))?
        .to_owned();
    let since = o
        .get("since")
        .and_then(json::Value::as_str)
        .ok_or_else(|| ApiError::bad_request("`since` (an RFC 3339 time) is required"))?;
    let since_ms = parse_time(since).map_err(|e| ApiError::bad_request(format!("`since`: {e}")))?;
    let mut ids = Vec::new();
    let mut q = DeliveryQuery {
        state: Some(DeliveryState::Failed),
        endpoint_id: Some(endpoint_id),
        since_ms: Some(since_ms),
        limit: MAX_PAGE,
        ..DeliveryQuery::default()
    };
    let more = loop {
        let page = st.store.list_deliveries(q.clone()).await.map_err(|e| ApiError::store(&e))?;
        ids.extend(page.deliveries.iter().map(|d| d.id));
        match page.next {
            Some(next) if ids.len() < MAX_BULK_RESEND => q.after = Some(next),
            Some(_) => break true,
            None => break false,
        }
    };
    let queued = st.store.requeue(ids, now_ms()).await.map_err(|e| ApiError::store(&e))?;
    st.wake.notify_one();
    let body = serde_json::json!({ "queued": queued, "more": more });
    Ok(json_response(StatusCode::ACCEPTED, body.to_string()))
}
