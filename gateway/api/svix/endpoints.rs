//! Svix endpoints of an application, which are the tenant's endpoints.
//!
//! Owns: `/api/v1/app/{app_id}/endpoint[/{endpoint_id}[/secret[/rotate]]]`: create (`url`,
//! `uid`, `eventTypes` or the older `filterTypes`, `secret`, `throttleRate`, `disabled`,
//! `description`, `metadata`, `channels`, custom `headers`), get, list, update, patch, delete,
//! and the endpoint's signing secret. Each endpoint gets a secret of its own, as on Svix. A
//! `uid` becomes the endpoint's id, so it works wherever an id does.
//! Must not touch: the registry's rules: creation and changes go through the native handlers.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
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
        "description": e["description"].as_str().unwrap_or_default(),
        "metadata": if e["metadata"].is_object() { e["metadata"].clone() } else { json!({}) },
        // Endpoints created without a uid have a generated `ep_` id; others' id is the uid.
        "uid": e["id"].as_str().filter(|id| !id.starts_with("ep_")),
        "version": 1,
        "disabled": e["enabled"] == false,
        "eventTypes": (triggers != ["*"]).then_some(&triggers),
        "filterTypes": (triggers != ["*"]).then_some(&triggers),
        "channels": e["channels"].as_array().filter(|c| !c.is_empty()),
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
    if let Some(Value::Object(m)) = Some(&mut native_body) {
        extras(&o, false, m);
        // A `uid` is the endpoint's id here, so it is accepted wherever an id is.
        match o.get("uid") {
            None | Some(Value::Null) => {}
            Some(Value::String(uid)) => {
                m.insert("id".into(), json!(uid));
            }
            Some(_) => return Err(SvixError::invalid("`uid` must be a string")),
        }
    }
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

/// Svix's `description`, `metadata`, `channels` and custom `headers` as native fields (`full`:
/// missing ones take their defaults, as in a PUT).
fn extras(o: &serde_json::Map<String, Value>, full: bool, out: &mut serde_json::Map<String, Value>) {
    for field in ["description", "metadata", "channels", "headers"] {
        match o.get(field) {
            Some(v) => {
                out.insert(field.into(), v.clone());
            }
            None if full => {
                out.insert(field.into(), Value::Null);
            }
            None => {}
        }
    }
}

/// The native endpoint fields of an `EndpointIn`/`EndpointUpdate` (`full`: missing optional
/// fields take their defaults) or an `EndpointPatch`.
fn native_fields(o: &serde_json::Map<String, Value>, full: bool) -> Result<Value> {
    let mut out = serde_json::Map::new();
    extras(o, full, &mut out);
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
/// defaults for those left out. A missing endpoint is created with the path's id as its uid
/// (the SDKs' `upsert`).
pub async fn update(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let o = object(&body)?;
    let found = native_endpoints::tenant_get_endpoint(State(st.clone()), headers.clone(), Path(ids.clone())).await;
    match found {
        Err(e) if e.status == StatusCode::NOT_FOUND && e.code == "not_found" && !ids.1.starts_with("ep_") => {
            let mut o = o;
            o.insert("uid".into(), json!(ids.1));
            create(State(st), headers, Path(ids.0), axum::body::Bytes::from(Value::Object(o).to_string())).await
        }
        _ => change(st, headers, ids, &o, true).await,
    }
}

/// Header names whose values are credentials: kept and sent, never shown (Svix's
/// `sensitive`).
fn sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["authorization", "cookie", "key", "token", "secret", "auth", "signature", "password"].iter().any(|s| n.contains(s))
}

/// `GET /api/v1/app/{app_id}/endpoint/{endpoint_id}/headers`: the custom headers, with the
/// values of sensitive ones left out and their names in `sensitive`.
pub async fn get_headers(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
) -> Result<Response> {
    let (_, e) = native(native_endpoints::tenant_get_endpoint(State(st.clone()), headers, Path(ids)).await).await?;
    let internal = e["tenant"].as_str().zip(e["id"].as_str()).map(|(t, id)| crate::endpoint::internal_id(t, id));
    let all = internal.and_then(|id| st.endpoints.get(&id)).map(|ep| ep.headers).unwrap_or_default();
    let (hidden, shown): (Vec<_>, Vec<_>) = all.into_iter().partition(|(k, _)| sensitive(k));
    let shown: serde_json::Map<String, Value> = shown.into_iter().map(|(k, v)| (k, json!(v))).collect();
    let hidden: Vec<String> = hidden.into_iter().map(|(k, _)| k).collect();
    Ok(answer(StatusCode::OK, json!({ "headers": shown, "sensitive": hidden })))
}

/// `PUT …/headers` `{headers}`: replaces the custom headers. 204.
pub async fn set_headers(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let o = object(&body)?;
    let new = o.get("headers").cloned().unwrap_or(Value::Null);
    headers_to(st, headers, ids, new).await
}

/// `PATCH …/headers` `{headers, deleteHeaders?}`: adds or replaces the named headers; a
/// `null` value or a name in `deleteHeaders` removes one. 204.
pub async fn patch_headers(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(ids): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let o = object(&body)?;
    let Some(Value::Object(changes)) = o.get("headers") else {
        return Err(SvixError::invalid("`headers` must be an object"));
    };
    let (_, e) =
        native(native_endpoints::tenant_get_endpoint(State(st.clone()), headers.clone(), Path(ids.clone())).await)
            .await?;
    let internal = e["tenant"].as_str().zip(e["id"].as_str()).map(|(t, id)| crate::endpoint::internal_id(t, id));
    let mut all: serde_json::Map<String, Value> = internal
        .and_then(|id| st.endpoints.get(&id))
        .map(|ep| ep.headers.into_iter().map(|(k, v)| (k, json!(v))).collect())
        .unwrap_or_default();
    for (k, v) in changes {
        all.retain(|name, _| !name.eq_ignore_ascii_case(k));
        if !v.is_null() {
            all.insert(k.clone(), v.clone());
        }
    }
    for gone in o.get("deleteHeaders").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        all.retain(|name, _| !name.eq_ignore_ascii_case(gone));
    }
    headers_to(st, headers, ids, Value::Object(all)).await
}

async fn headers_to(st: AppState, headers: HeaderMap, ids: (String, String), new: Value) -> Result<Response> {
    let body = axum::body::Bytes::from(json!({ "headers": new }).to_string());
    native(native_endpoints::tenant_patch_endpoint(State(st), headers, Path(ids), body).await).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
    // The uid is the id: it cannot change.
    if o.get("uid").is_some_and(|u| !u.is_null() && u.as_str() != Some(ids.1.as_str())) {
        return Err(SvixError::invalid("`uid`: an endpoint's uid is its id here and cannot be changed"));
    }
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
    let secret = match &e.secret {
        Some(s) => Some(s.clone()),
        None => tenant.keys.first().map(|k| k.secret.clone()),
    };
    let key = secret.as_ref().map(|s| s.to_whsec()).unwrap_or_default();
    // An Ed25519 key (`whsk_`) also gives the `whpk_` public key receivers verify `v1a` with.
    let public_key = secret.as_ref().and_then(crate::sign::Secret::public_key);
    Ok(answer(StatusCode::OK, json!({ "key": key, "publicKey": public_key })))
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
