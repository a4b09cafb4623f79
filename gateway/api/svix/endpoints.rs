//! Svix endpoints of an application, which are the tenant's endpoints.
//!
//! Owns: `/api/v1/app/{app_id}/endpoint[/{endpoint_id}[/secret]]`: create (`url`,
//! `eventTypes` or the older `filterTypes`, `secret`, `throttleRate`, `disabled`), get, list,
//! delete, and the endpoint's signing secret. Each endpoint gets a secret of its own, as on Svix.
//! Must not touch: the registry's rules: creation and changes go through the native handlers.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Result, SvixError, answer, list, native, object, time_of};
use crate::api::endpoints as native_endpoints;
use crate::api::state::AppState;

/// A native endpoint view as Svix's `EndpointOut`.
pub fn endpoint_out(e: &Value) -> Value {
    let triggers: Vec<&str> =
        e["triggers"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let throttle = e["rate_limit"].as_str().and_then(|r| r.strip_suffix("/s")).and_then(|n| n.parse::<u64>().ok());
    let created = time_of(&e["created_at"]);
    json!({
        "id": e["id"],
        "url": e["url"],
        "description": "",
        "metadata": {},
        "uid": Value::Null,
        "version": 1,
        "disabled": e["enabled"] == false,
        "eventTypes": (triggers != ["*"]).then_some(&triggers),
        "filterTypes": (triggers != ["*"]).then_some(&triggers),
        "channels": Value::Null,
        "throttleRate": throttle,
        "createdAt": created,
        "updatedAt": created,
    })
}

/// `POST /api/v1/app/{app_id}/endpoint`.
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let o = object(&body)?;
    not_stored(&o)?;
    let url = o.get("url").and_then(Value::as_str).ok_or_else(|| SvixError::invalid("`url` is required"))?;
    let types = o.get("eventTypes").filter(|v| !v.is_null()).or_else(|| o.get("filterTypes").filter(|v| !v.is_null()));
    let triggers = match types {
        None => json!(["*"]),
        Some(Value::Array(a)) if a.is_empty() => json!(["*"]),
        Some(t @ Value::Array(_)) => t.clone(),
        Some(_) => return Err(SvixError::invalid("`eventTypes` must be a list of event type names")),
    };
    let secret = match o.get("secret") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => crate::sign::Secret::generate().to_whsec(),
        Some(_) => return Err(SvixError::invalid("`secret` must be a string")),
    };
    let mut native_body = json!({ "url": url, "triggers": triggers, "secret": secret });
    match o.get("throttleRate") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
            native_body["rate_limit"] = json!(format!("{n}/s"))
        }
        Some(_) => return Err(SvixError::invalid("`throttleRate` must be a positive whole number")),
    }
    let body = axum::body::Bytes::from(native_body.to_string());
    let (_, mut e) = native(
        native_endpoints::tenant_create_endpoint(State(st.clone()), headers.clone(), Path(app.clone()), body).await,
    )
    .await?;
    if o.get("disabled") == Some(&Value::Bool(true)) {
        let id = e["id"].as_str().unwrap_or_default().to_owned();
        let off = axum::body::Bytes::from(json!({ "enabled": false }).to_string());
        (_, e) =
            native(native_endpoints::tenant_patch_endpoint(State(st), headers, Path((app, id)), off).await).await?;
    }
    Ok(answer(StatusCode::CREATED, endpoint_out(&e)))
}

/// Refuses the `EndpointIn` fields Hookgate does not keep yet when they carry a value, rather
/// than accepting them and losing them: a description, metadata, an endpoint `uid`, channels
/// and custom headers. Their empty forms (what the SDKs send by default) pass.
fn not_stored(o: &serde_json::Map<String, Value>) -> Result<()> {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    for field in ["description", "metadata", "uid", "channels", "headers"] {
        if o.get(field).is_some_and(|v| !empty(v)) {
            return Err(SvixError::invalid(format!(
                "`{field}` on an endpoint is not supported by Hookgate yet; leave it out (see the README's \"Coming from Svix\")"
            )));
        }
    }
    Ok(())
}

/// The native endpoint fields of an `EndpointIn`/`EndpointUpdate` (`full`: missing optional
/// fields take their defaults) or an `EndpointPatch`.
fn native_fields(o: &serde_json::Map<String, Value>, full: bool) -> Result<Value> {
    not_stored(o)?;
    let mut out = serde_json::Map::new();
    match o.get("url") {
        Some(Value::String(u)) => {
            out.insert("url".into(), json!(u));
        }
        None if !full => {}
        _ => return Err(SvixError::invalid("`url` is required and must be a string")),
    }
    let types = o.get("eventTypes").or_else(|| o.get("filterTypes"));
    match types {
        None if !full => {}
        None | Some(Value::Null) => {
            out.insert("triggers".into(), json!(["*"]));
        }
        Some(Value::Array(a)) if a.is_empty() => {
            out.insert("triggers".into(), json!(["*"]));
        }
        Some(t @ Value::Array(_)) => {
            out.insert("triggers".into(), t.clone());
        }
        Some(_) => return Err(SvixError::invalid("`eventTypes` must be a list of event type names")),
    }
    match o.get("throttleRate") {
        None if !full => {}
        None | Some(Value::Null) => {
            out.insert("rate_limit".into(), Value::Null);
        }
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
            out.insert("rate_limit".into(), json!(format!("{n}/s")));
        }
        Some(_) => return Err(SvixError::invalid("`throttleRate` must be a positive whole number")),
    }
    match o.get("disabled") {
        None if !full => {}
        None | Some(Value::Null) => {
            out.insert("enabled".into(), json!(true));
        }
        Some(Value::Bool(d)) => {
            out.insert("enabled".into(), json!(!d));
        }
        Some(_) => return Err(SvixError::invalid("`disabled` must be true or false")),
    }
    Ok(Value::Object(out))
}

/// `PUT /api/v1/app/{app_id}/endpoint/{endpoint_id}` (`EndpointUpdate`): every field, with
/// defaults for those left out. An endpoint is created with `POST` (ids are the gateway's).
pub async fn update(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    change(st, headers, ids, &object(&body)?, true).await
}

/// `PATCH /api/v1/app/{app_id}/endpoint/{endpoint_id}` (`EndpointPatch`).
pub async fn patch(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    change(st, headers, ids, &object(&body)?, false).await
}

async fn change(
    st: AppState,
    headers: HeaderMap,
    ids: (String, String),
    o: &serde_json::Map<String, Value>,
    full: bool,
) -> Result<Response> {
    let body = axum::body::Bytes::from(native_fields(o, full)?.to_string());
    let (_, e) = native(native_endpoints::tenant_patch_endpoint(State(st), headers, Path(ids), body).await).await?;
    Ok(answer(StatusCode::OK, endpoint_out(&e)))
}

/// `GET /api/v1/app/{app_id}/endpoint`.
pub async fn list_endpoints(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response> {
    let (_, all) = native(native_endpoints::tenant_list_endpoints(State(st), headers, Path(app)).await).await?;
    list(all["data"].as_array().map(|a| a.iter().map(endpoint_out).collect()).unwrap_or_default(), &q)
}

/// `GET /api/v1/app/{app_id}/endpoint/{endpoint_id}`.
pub async fn get(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
) -> Result<Response> {
    let (_, e) = native(native_endpoints::tenant_get_endpoint(State(st), headers, Path(ids)).await).await?;
    Ok(answer(StatusCode::OK, endpoint_out(&e)))
}

/// `DELETE /api/v1/app/{app_id}/endpoint/{endpoint_id}`: 204.
pub async fn delete(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
) -> Result<Response> {
    native(native_endpoints::tenant_delete_endpoint(State(st), headers, Path(ids)).await).await?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}

/// `GET /api/v1/app/{app_id}/endpoint/{endpoint_id}/secret`: `{key}`, the secret that signs the
/// endpoint's deliveries (its own, else its application's).
pub async fn secret(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Result<Response> {
    let tenant = st.tenant_access(&headers, &app)?;
    let e = st
        .endpoints
        .get(&crate::endpoint::internal_id(&tenant.id, &id))
        .filter(|_| !id.contains('/'))
        .ok_or_else(|| SvixError::not_found(format!("no endpoint with id {id:?}")))?;
    let key = match &e.secret {
        Some(s) => s.to_whsec(),
        None => tenant.keys.first().map(|k| k.secret.to_whsec()).unwrap_or_default(),
    };
    Ok(answer(StatusCode::OK, json!({ "key": key })))
}

/// `POST /api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate` `{key?,
/// gracePeriodSeconds?}`: `{key}`, the new secret; the old one signs beside it for the grace
/// period (24 h by default).
pub async fn rotate_secret(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let o = object(&body)?;
    let mut native_body = json!({});
    match o.get("key") {
        None | Some(Value::Null) => {}
        Some(Value::String(k)) => native_body["secret"] = json!(k),
        Some(_) => return Err(SvixError::invalid("`key` must be a string")),
    }
    match o.get("gracePeriodSeconds") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some() => native_body["overlap"] = json!(format!("{n}s")),
        Some(_) => return Err(SvixError::invalid("`gracePeriodSeconds` must be a whole number")),
    }
    let body = axum::body::Bytes::from(native_body.to_string());
    let (_, r) =
        native(native_endpoints::tenant_rotate_endpoint_secret(State(st), headers, Path(ids), body).await).await?;
    Ok(answer(StatusCode::OK, json!({ "key": r["secret"] })))
}
