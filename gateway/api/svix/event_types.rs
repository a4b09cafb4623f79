//! Svix event types: names with a description and JSON Schemas per version, shared by every
//! application (the organisation's catalogue).
//!
//! Owns: `/api/v1/event-type[/{event_type_name}]`: create (409 when the name exists), list
//! (`include_archived`), get, update (PUT, creating when missing), patch, and delete, which
//! archives (`?expunge=true` is not supported: an archived type stays, as history).
//! Must not touch: where they are stored (`store::put_event_type`) or how payloads are checked
//! against their schemas (`schemas`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Result, SvixError, answer, list, object};
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::model::{EventTypeRecord, rfc3339};

/// A record as Svix's `EventTypeOut`.
fn event_type_out(r: &EventTypeRecord) -> Value {
    json!({
        "name": r.name,
        "id": r.name,
        "description": r.description,
        "archived": r.archived,
        "deprecated": r.deprecated,
        "schemas": r.schemas.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()),
        "groupName": r.group_name,
        "featureFlags": (!r.feature_flags.is_empty()).then_some(&r.feature_flags),
        "createdAt": rfc3339(r.created_at_ms),
        "updatedAt": rfc3339(r.updated_at_ms),
    })
}

async fn find(st: &AppState, name: &str) -> Result<Option<EventTypeRecord>> {
    let all = st.store.event_types().await.map_err(|e| ApiError::store(&e))?;
    Ok(all.into_iter().find(|r| r.name == name))
}

/// Applies the fields of an `EventTypeIn` (`full`) or `EventTypePatch` to a record. Schemas
/// must compile: a schema that cannot check anything is refused here, not at ingest.
fn apply(r: &mut EventTypeRecord, o: &serde_json::Map<String, Value>, full: bool) -> Result<()> {
    let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    match (o.get("description"), full) {
        (Some(Value::String(d)), _) => r.description = d.clone(),
        (None, false) => {}
        _ => return Err(SvixError::invalid("`description` is required and must be a string")),
    }
    for (k, slot) in [("archived", &mut r.archived), ("deprecated", &mut r.deprecated)] {
        match o.get(k) {
            Some(Value::Bool(b)) => *slot = *b,
            None | Some(Value::Null) if full => *slot = false,
            None | Some(Value::Null) => {}
            Some(_) => return Err(SvixError::invalid(format!("`{k}` must be true or false"))),
        }
    }
    match o.get("schemas") {
        Some(Value::Object(versions)) => {
            for (version, schema) in versions {
                crate::schemas::compile(schema)
                    .map_err(|e| SvixError::invalid(format!("`schemas.{version}` is not a valid JSON Schema: {e}")))?;
            }
            r.schemas = Some(Value::Object(versions.clone()).to_string());
        }
        None if !full => {}
        None | Some(Value::Null) => r.schemas = None,
        Some(_) => return Err(SvixError::invalid("`schemas` must be an object of versions")),
    }
    if o.contains_key("groupName") || full {
        r.group_name = text("groupName");
    }
    if let Some(Value::Array(flags)) = o.get("featureFlags") {
        r.feature_flags = flags.iter().filter_map(Value::as_str).map(str::to_owned).collect();
    }
    Ok(())
}

async fn save(st: &AppState, r: EventTypeRecord, status: StatusCode) -> Result<Response> {
    st.store.put_event_type(r.clone()).await.map_err(|e| ApiError::store(&e))?;
    st.schemas.forget(&r.name);
    Ok(answer(status, event_type_out(&r)))
}

/// `POST /api/v1/event-type` (`EventTypeIn`).
pub async fn create(State(st): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response> {
    st.admin(&headers)?;
    let o = object(&body)?;
    let name = o.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !crate::endpoint::valid_trigger(&name) {
        return Err(SvixError::invalid(format!(
            "`name` {name:?}: 1-128 characters of lowercase letters, digits, '_', '.', '-'"
        )));
    }
    let schemas = st.schemas.clone();
    let _turn = schemas.creating.lock().await;
    if find(&st, &name).await?.is_some() {
        return Err(SvixError::new(StatusCode::CONFLICT, "conflict", format!("event type {name:?} already exists")));
    }
    let now = st.clock.now_ms();
    let mut r = EventTypeRecord {
        name,
        description: String::new(),
        archived: false,
        deprecated: false,
        schemas: None,
        group_name: None,
        feature_flags: Vec::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    apply(&mut r, &o, true)?;
    save(&st, r, StatusCode::CREATED).await
}

/// Who may read the catalogue: the admin, or any application's token (the portal shows it).
fn reader(st: &AppState, headers: &HeaderMap) -> Result<()> {
    if st.admin(headers).is_ok() {
        return Ok(());
    }
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    st.tenants.check_token(token, st.clock.now_ms()).map(drop).map_err(|_| {
        SvixError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
            "the bearer token is not valid for this route",
        )
    })
}

/// `GET /api/v1/event-type` (`include_archived`, `limit`, `iterator`).
pub async fn list_types(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    reader(&st, &headers)?;
    let archived = q.get("include_archived").is_some_and(|v| v == "true");
    let all = st.store.event_types().await.map_err(|e| ApiError::store(&e))?;
    let data = all.iter().filter(|r| archived || !r.archived).map(event_type_out).collect();
    list(data, &q)
}

/// `GET /api/v1/event-type/{event_type_name}`.
pub async fn get(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Result<Response> {
    reader(&st, &headers)?;
    let r = find(&st, &name).await?.ok_or_else(|| SvixError::not_found(format!("no event type {name:?}")))?;
    Ok(answer(StatusCode::OK, event_type_out(&r)))
}

/// `PUT /api/v1/event-type/{event_type_name}` (`EventTypeUpdate`): creates it when missing.
pub async fn update(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    st.admin(&headers)?;
    let mut o = object(&body)?;
    match find(&st, &name).await? {
        Some(mut r) => {
            apply(&mut r, &o, true)?;
            r.updated_at_ms = st.clock.now_ms();
            save(&st, r, StatusCode::OK).await
        }
        None => {
            o.insert("name".into(), Value::String(name));
            create(State(st), headers, axum::body::Bytes::from(Value::Object(o).to_string())).await
        }
    }
}

/// `PATCH /api/v1/event-type/{event_type_name}` (`EventTypePatch`).
pub async fn patch(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    st.admin(&headers)?;
    let mut r = find(&st, &name).await?.ok_or_else(|| SvixError::not_found(format!("no event type {name:?}")))?;
    apply(&mut r, &object(&body)?, false)?;
    r.updated_at_ms = st.clock.now_ms();
    save(&st, r, StatusCode::OK).await
}

/// `DELETE /api/v1/event-type/{event_type_name}`: archives it (204).
pub async fn archive(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Result<Response> {
    st.admin(&headers)?;
    let mut r = find(&st, &name).await?.ok_or_else(|| SvixError::not_found(format!("no event type {name:?}")))?;
    r.archived = true;
    r.updated_at_ms = st.clock.now_ms();
    save(&st, r, StatusCode::OK).await?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}
