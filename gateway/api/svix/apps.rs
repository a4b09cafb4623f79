//! Svix applications, which are Hookgate's tenants: one object, visible in both APIs.
//!
//! Owns: `/api/v1/app[/{app_id}]`: create (an `uid` becomes the tenant's id; without one the
//! id is `app_…`; `?get_if_exists=true` answers an existing application instead of 409), get,
//! list, delete.
//! Must not touch: tenants' storage: it calls the native tenant handlers.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Result, SvixError, answer, list, metadata_of, native, object, time_of};
use crate::api::state::AppState;
use crate::api::tenants;

/// A native tenant view as Svix's `ApplicationOut`.
pub fn application_out(t: &Value) -> Value {
    let id = t["id"].as_str().unwrap_or_default();
    let created = time_of(&t["created_at"]);
    json!({
        "id": id,
        // Applications created without a uid have a generated `app_` id; others' id is the uid.
        "uid": (!id.starts_with("app_")).then_some(id),
        "name": t["name"].as_str().unwrap_or(id),
        "metadata": metadata_of(&t["metadata"]),
        "throttleRate": t["max_events_per_second"],
        "createdAt": created,
        "updatedAt": created,
    })
}

/// The native tenant of an application id or uid (they are the same here), or Svix's 404.
pub async fn tenant(st: &AppState, headers: &HeaderMap, app: &str) -> Result<Value> {
    let (_, t) = native(tenants::get_tenant(State(st.clone()), headers.clone(), Path(app.to_owned())).await).await?;
    Ok(t)
}

/// `POST /api/v1/app` `{name, uid?, metadata?, throttleRate?}`.
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Response> {
    st.admin(&headers)?;
    let o = object(&body)?;
    let name = o.get("name").and_then(Value::as_str).ok_or_else(|| SvixError::invalid("`name` is required"))?;
    let id = match o.get("uid") {
        Some(Value::String(uid)) => uid.clone(),
        None | Some(Value::Null) => format!("app_{}", uuid::Uuid::new_v4().simple()),
        Some(_) => return Err(SvixError::invalid("`uid` must be a string")),
    };
    if q.get("get_if_exists").is_some_and(|v| v == "true") && st.tenants.get(&id).is_some() {
        let t = tenant(&st, &headers, &id).await?;
        return Ok(answer(StatusCode::OK, application_out(&t)));
    }
    let mut native_body = json!({ "id": id, "name": name });
    if let Some(m) = o.get("metadata").filter(|m| !m.is_null()) {
        native_body["metadata"] = m.clone();
    }
    if let Some(r) = o.get("throttleRate").filter(|r| !r.is_null()) {
        native_body["max_events_per_second"] = r.clone();
    }
    let body = axum::body::Bytes::from(native_body.to_string());
    let (_, t) = native(tenants::create_tenant(State(st), headers, body).await).await?;
    Ok(answer(StatusCode::CREATED, application_out(&t)))
}

/// `GET /api/v1/app` (the organisation's token: the admin token).
pub async fn list_apps(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let (_, all) = native(tenants::list_tenants(State(st), headers).await).await?;
    let data = all["data"].as_array().map(|a| a.iter().map(application_out).collect()).unwrap_or_default();
    list(data, &q)
}

/// `GET /api/v1/app/{app_id}`.
pub async fn get(State(st): State<AppState>, headers: HeaderMap, Path(app): Path<String>) -> Result<Response> {
    Ok(answer(StatusCode::OK, application_out(&tenant(&st, &headers, &app).await?)))
}

/// `DELETE /api/v1/app/{app_id}`: 204.
pub async fn delete(State(st): State<AppState>, headers: HeaderMap, Path(app): Path<String>) -> Result<Response> {
    // Svix deletes an application with whatever it still has to send.
    let force = HashMap::from([("force".to_owned(), "true".to_owned())]);
    native(tenants::delete_tenant(State(st), headers, Path(app), Query(force)).await).await?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}

/// The native tenant fields of an `ApplicationIn` (`full`: a PUT, where a missing optional
/// field clears it) or an `ApplicationPatch`.
fn native_fields(o: &serde_json::Map<String, Value>, full: bool) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (svix, native) in [("name", "name"), ("metadata", "metadata"), ("throttleRate", "max_events_per_second")] {
        match o.get(svix) {
            Some(v) => {
                out.insert(native.into(), v.clone());
            }
            None if full && svix != "name" => {
                out.insert(native.into(), Value::Null);
            }
            None => {}
        }
    }
    if full && !o.contains_key("name") {
        return Err(SvixError::invalid("`name` is required"));
    }
    Ok(Value::Object(out))
}

/// `PUT /api/v1/app/{app_id}` (`ApplicationIn`): updates the application, or creates it
/// with this id.
pub async fn upsert(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let o = object(&body)?;
    if st.tenants.get(&app).is_none() {
        let mut o = o;
        o.insert("uid".into(), Value::String(app));
        let body = axum::body::Bytes::from(Value::Object(o).to_string());
        return create(State(st), headers, Query(HashMap::new()), body).await;
    }
    update(st, headers, app, &o, true).await
}

/// `PATCH /api/v1/app/{app_id}` (`ApplicationPatch`).
pub async fn patch(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    update(st, headers, app, &object(&body)?, false).await
}

async fn update(
    st: AppState,
    headers: HeaderMap,
    app: String,
    o: &serde_json::Map<String, Value>,
    full: bool,
) -> Result<Response> {
    if let Some(uid) = o.get("uid").and_then(Value::as_str).filter(|uid| *uid != app) {
        return Err(SvixError::invalid(format!("an application's uid is its id here and cannot become {uid:?}")));
    }
    let body = axum::body::Bytes::from(native_fields(o, full)?.to_string());
    let (_, t) = native(tenants::patch_tenant(State(st), headers, Path(app), body).await).await?;
    Ok(answer(StatusCode::OK, application_out(&t)))
}
