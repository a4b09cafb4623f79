//! Svix message attempts, which are the attempts of the delivery log, and resends.
//!
//! Owns: `/api/v1/app/{app_id}/attempt/msg/{msg_id}`, `/attempt/endpoint/{endpoint_id}`
//! (newest first; `status` and `endpoint_id` filters) and
//! `/msg/{msg_id}/endpoint/{endpoint_id}/resend` (one manual attempt now, through the
//! dispatcher, as the native resend).
//! Must not touch: the dispatcher's rules: a resend goes through `log::resend_one`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Result, SvixError, answer, list_page};
use crate::api::state::AppState;
use crate::endpoint::{internal_id, split_id};
use crate::model::{AttemptRecord, DeliveryRecord, rfc3339};
use crate::store::DeliveryQuery;

/// The most attempts one answer lists.
const MAX_LIMIT: usize = 250;

/// One attempt as Svix's `MessageAttemptOut`.
fn attempt_out(st: &AppState, d: &DeliveryRecord, a: &AttemptRecord) -> Value {
    let ok = a.error.is_none();
    let url = st.endpoints.get(&d.endpoint_id).map(|e| e.url.to_string()).unwrap_or_default();
    json!({
        "id": format!("atmpt_{}_{}", d.id.simple(), a.number),
        "msgId": format!("msg_{}", d.event_id.simple()),
        "endpointId": split_id(&d.endpoint_id).1,
        "url": url,
        "response": a.response_body,
        "responseStatusCode": a.status_code.unwrap_or(0),
        "responseDurationMs": a.duration_ms,
        "status": if ok { 0 } else { 2 },
        "statusText": if ok { "success" } else { "fail" },
        "triggerType": if a.manual { 1 } else { 0 },
        "timestamp": rfc3339(a.started_at_ms),
    })
}

/// The attempts of these deliveries, newest first, filtered by `status` (0 success, 2 fail)
/// and capped at `limit`.
fn attempts(st: &AppState, deliveries: &[DeliveryRecord], q: &HashMap<String, String>) -> Result<Vec<Value>> {
    let limit = super::limit(q)?;
    let status = q
        .get("status")
        .map(|s| s.parse::<u8>())
        .transpose()
        .map_err(|_| SvixError::invalid("`status` must be 0 or 2"))?;
    let mut out: Vec<(u64, Value)> = deliveries
        .iter()
        .flat_map(|d| d.attempts.iter().map(move |a| (d, a)))
        .filter(|(_, a)| status.is_none_or(|s| (s == 0) == a.error.is_none()))
        .map(|(d, a)| (a.started_at_ms, attempt_out(st, d, a)))
        .collect();
    out.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    Ok(out.into_iter().take(limit).map(|(_, v)| v).collect())
}

/// The message `msg` of `tenant`, with its deliveries.
async fn message_deliveries(st: &AppState, tenant: &str, msg: &str) -> Result<Vec<DeliveryRecord>> {
    let missing = || SvixError::not_found(format!("no message with id {msg:?}"));
    let id = msg.strip_prefix("msg_").and_then(|hex| uuid::Uuid::parse_str(hex).ok()).ok_or_else(missing)?;
    let event = st.store.event(id).await.map_err(|e| crate::api::error::ApiError::store(&e))?.ok_or_else(missing)?;
    if event.tenant.as_deref().unwrap_or(crate::model::DEFAULT_TENANT) != tenant {
        return Err(missing());
    }
    st.store.deliveries(event.delivery_ids.clone()).await.map_err(|e| crate::api::error::ApiError::store(&e).into())
}

/// `GET /api/v1/app/{app_id}/attempt/msg/{msg_id}`.
pub async fn by_message(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((app, msg)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let tenant = st.tenant_access(&headers, &app)?;
    let mut deliveries = message_deliveries(&st, &tenant.id, &msg).await?;
    if let Some(e) = q.get("endpoint_id") {
        let internal = internal_id(&tenant.id, e);
        deliveries.retain(|d| d.endpoint_id == internal);
    }
    Ok(list_page(attempts(&st, &deliveries, &q)?, None))
}

/// `GET /api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}`: the attempts of the endpoint's
/// newest deliveries.
pub async fn by_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let tenant = st.tenant_access(&headers, &app)?;
    let internal = internal_id(&tenant.id, &endpoint);
    if endpoint.contains('/') || st.endpoints.get(&internal).is_none() {
        return Err(SvixError::not_found(format!("no endpoint with id {endpoint:?}")));
    }
    let query = DeliveryQuery { endpoint_id: Some(internal), limit: MAX_LIMIT, ..DeliveryQuery::default() };
    let page = st.store.list_deliveries(query).await.map_err(|e| crate::api::error::ApiError::store(&e))?;
    Ok(list_page(attempts(&st, &page.deliveries, &q)?, None))
}

/// `POST /api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend`: 202 `{}`.
pub async fn resend(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((app, msg, endpoint)): Path<(String, String, String)>,
) -> Result<Response> {
    let tenant = st.tenant_access(&headers, &app)?;
    let internal = internal_id(&tenant.id, &endpoint);
    let deliveries = message_deliveries(&st, &tenant.id, &msg).await?;
    let d = deliveries
        .iter()
        .find(|d| d.endpoint_id == internal)
        .ok_or_else(|| SvixError::not_found(format!("message {msg:?} was not sent to endpoint {endpoint:?}")))?;
    crate::api::log::resend_one(&st, d.id).await?;
    Ok(answer(StatusCode::ACCEPTED, json!({})))
}
