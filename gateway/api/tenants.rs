//! Tenants through the API: `/v1/tenants...` (create, read, update, delete, rotate the secret),
//! their scoped tokens and portal links, test sends, and each tenant's own delivery log.
//!
//! Owns: the JSON shape of a tenant (a secret is shown once, at creation or rotation; after
//! that only its fingerprint), who may call what (admin token, or the tenant's own token for
//! the tenant's log, endpoints and test sends), and the order of each change: validate, store,
//! then update the live registry.
//! Must not touch: how secrets sign (`tenants`, `sign`) or the rules of endpoints
//! (`api::endpoints`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, json_response};
use super::log::{detail_value, list_page, parse_id, resend_one};
use super::state::AppState;
use crate::config::valid_endpoint_id;
use crate::events::{build_write, set_tenant};
use crate::json::{self, Value};
use crate::model::DEFAULT_TENANT;
use crate::model::{DeliveryState, TenantRecord, rfc3339};
use crate::store::DeliveryQuery;
use crate::tenants::{PORTAL_CODE_MAX, PORTAL_CODE_TTL, PORTAL_SESSION, Tenant, TenantOrigin, TokenError};

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_tenant", message)
}

fn read_only(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "tenant_read_only",
        format!("tenant {id:?} is defined in the config file (or is the default tenant); change it there"),
    )
}

fn body_object(body: &[u8]) -> Result<json::Object, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json::Object::new());
    }
    match json::parse(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(invalid(format!("the body must be a JSON object, not {}", other.kind()))),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.message)),
    }
}

fn view(st: &AppState, t: &Tenant) -> serde_json::Value {
    let endpoints = st.endpoints.of_tenant(&t.id).len();
    serde_json::json!({
        "id": t.id,
        "name": t.name,
        "metadata": t.metadata.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
        "secret_fingerprint": t.fingerprint(),
        // Not a secret: what receivers verify `v1a` signatures with, for an Ed25519 key.
        "public_key": t.public_key(),
        "source": match t.origin { TenantOrigin::Config => "config", TenantOrigin::Api { .. } => "api" },
        "created_at": match t.origin { TenantOrigin::Config => None, TenantOrigin::Api { created_at_ms } => Some(rfc3339(created_at_ms)) },
        "endpoints": endpoints,
        "max_endpoints": (t.limits.max_endpoints != usize::MAX).then_some(t.limits.max_endpoints),
        "max_events_per_second": t.limits.max_events_per_second,
    })
}

/// Applies `name`, `metadata`, `max_endpoints`, `max_events_per_second` (null clears) to a
/// record; any other key is refused.
fn apply_fields(o: &json::Object, r: &mut TenantRecord, allowed_extra: &[&str]) -> Result<(), ApiError> {
    const FIELDS: &[&str] = &["name", "metadata", "max_endpoints", "max_events_per_second"];
    if let Some((k, _)) = o.iter().find(|(k, _)| !FIELDS.contains(k) && !allowed_extra.contains(k)) {
        let all: Vec<&str> = FIELDS.iter().chain(allowed_extra).copied().collect();
        return Err(invalid(format!("unknown field `{k}`; expected {}", all.join(", "))));
    }
    match o.get("name") {
        None => {}
        Some(Value::Null) => r.name = None,
        Some(Value::String(n)) if n.chars().count() <= 200 => r.name = Some(n.clone()),
        Some(_) => return Err(invalid("`name` must be a string of at most 200 characters")),
    }
    match o.get("metadata") {
        None => {}
        Some(Value::Null) => r.metadata = None,
        Some(m @ Value::Object(_)) if m.to_canonical().len() <= 16 * 1024 => r.metadata = Some(m.to_canonical()),
        Some(_) => return Err(invalid("`metadata` must be a JSON object of at most 16 KiB")),
    }
    let number = |name: &str, max: u64| -> Result<Option<Option<u64>>, ApiError> {
        match o.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Number(json::Number::Int(n))) => match n.parse::<u64>() {
                Ok(v) if v <= max => Ok(Some(Some(v))),
                _ => Err(invalid(format!("`{name}` must be a whole number from 0 to {max}"))),
            },
            Some(_) => Err(invalid(format!("`{name}` must be a whole number from 0 to {max}"))),
        }
    };
    if let Some(v) = number("max_endpoints", 100_000)? {
        if v == Some(0) {
            return Err(invalid("`max_endpoints` must be at least 1"));
        }
        r.max_endpoints = v.map(|n| n as usize);
    }
    if let Some(v) = number("max_events_per_second", 1_000_000)? {
        // 0 means unlimited, as in the file.
        r.max_events_per_second = v.filter(|n| *n > 0).map(|n| n as u32);
    }
    Ok(())
}

/// Whether any delivery matches `q` (its `limit` and cursor are set here).
async fn has_deliveries(st: &AppState, q: DeliveryQuery) -> Result<bool, ApiError> {
    let q = DeliveryQuery { limit: 1, after: None, ..q };
    let mut page = st.store.list_deliveries(q.clone()).await.map_err(|e| ApiError::store(&e))?;
    // A short page with a cursor means the search ran out of budget: keep looking.
    while page.deliveries.is_empty() && page.next.is_some() {
        let q = DeliveryQuery { after: page.next, ..q.clone() };
        page = st.store.list_deliveries(q).await.map_err(|e| ApiError::store(&e))?;
    }
    Ok(!page.deliveries.is_empty())
}

/// `POST /v1/tenants` `{id, name?, metadata?, secret?, key_type?, max_endpoints?,
/// max_events_per_second?}`: answers with the tenant and, this once, its secret. Without a
/// `secret`, one is generated: HMAC (`whsec_`) unless `key_type` is `"ed25519"` (`whsk_`).
pub async fn create_tenant(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let o = body_object(&body)?;
    let id = match o.get("id") {
        Some(Value::String(id)) if valid_endpoint_id(id) && id != DEFAULT_TENANT => id.clone(),
        Some(Value::String(id)) => {
            return Err(invalid(format!(
                "`id` {id:?} must be 1-64 characters of letters, digits, '_', '.', '-', and not \"default\""
            )));
        }
        Some(_) => return Err(invalid("`id` must be a string")),
        None => return Err(invalid("missing `id`")),
    };
    let _turn = st.tenants.creating.lock().await;
    if st.tenants.get(&id).is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "tenant_exists", format!("tenant {id:?} already exists")));
    }
    // A deleted tenant's log is keyed by its id: a new tenant under that id would see it.
    if has_deliveries(&st, DeliveryQuery { tenant: Some(id.clone()), ..DeliveryQuery::default() }).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_id_has_history",
            format!(
                "a deleted tenant {id:?} left deliveries in the log (visible to admins); choose another id for a new tenant"
            ),
        ));
    }
    let now = st.clock.now_ms();
    let ed25519 = key_type(&o)?;
    let secret = match o.get("secret") {
        None | Some(Value::Null) => crate::tenants::new_secret(now, ed25519.unwrap_or(false)),
        Some(Value::String(s)) => {
            let parsed = crate::sign::Secret::parse(s).map_err(|e| invalid(format!("`secret`: the secret {e}")))?;
            crate::model::StoredSecret { secret: parsed.to_whsec(), created_at_ms: now, retired_at_ms: None }
        }
        Some(_) => return Err(invalid("`secret` must be a string")),
    };
    let shown = secret.secret.clone();
    let mut record = TenantRecord {
        id: id.clone(),
        name: None,
        metadata: None,
        secrets: vec![secret],
        max_endpoints: None,
        max_events_per_second: None,
        created_at_ms: now,
    };
    apply_fields(&o, &mut record, &["id", "secret", "key_type"])?;
    st.store.put_tenant(record.clone()).await.map_err(|e| ApiError::store(&e))?;
    let t = st.tenants.put(record).map_err(invalid)?;
    tracing::info!(tenant = %id, fingerprint = %t.fingerprint(), "tenant created through the API");
    let mut v = view(&st, &t);
    v["secret"] = serde_json::Value::String(shown);
    Ok(json_response(StatusCode::CREATED, v.to_string()))
}

/// `GET /v1/tenants` (admin).
pub async fn list_tenants(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let data: Vec<_> = st.tenants.list().iter().map(|t| view(&st, t)).collect();
    Ok(json_response(StatusCode::OK, serde_json::json!({ "data": data }).to_string()))
}

/// `GET /v1/tenants/{id}` (admin, or the tenant's token): no secret, its fingerprint.
pub async fn get_tenant(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = st.tenant_access(&headers, &id)?;
    Ok(json_response(StatusCode::OK, view(&st, &t).to_string()))
}

/// The tenant a management route is about: it exists and was created through the API.
fn api_tenant(st: &AppState, headers: &HeaderMap, id: &str) -> Result<TenantRecord, ApiError> {
    st.admin(headers)?;
    let Some(t) = st.tenants.get(id) else {
        return Err(ApiError::not_found(format!("no tenant with id {id:?}")));
    };
    match t.origin {
        TenantOrigin::Config => Err(read_only(id)),
        TenantOrigin::Api { .. } => st.tenants.record(id).ok_or_else(|| read_only(id)),
    }
}

/// `PATCH /v1/tenants/{id}` `{name?, metadata?, max_endpoints?, max_events_per_second?}`.
pub async fn patch_tenant(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let mut record = api_tenant(&st, &headers, &id)?;
    let o = body_object(&body)?;
    apply_fields(&o, &mut record, &[])?;
    st.store.put_tenant(record.clone()).await.map_err(|e| ApiError::store(&e))?;
    let t = st.tenants.put(record).map_err(invalid)?;
    Ok(json_response(StatusCode::OK, view(&st, &t).to_string()))
}

/// `DELETE /v1/tenants/{id}[?force=true]`: refused while the tenant has pending deliveries,
/// unless forced. Its endpoints and tokens go; its delivery history stays.
pub async fn delete_tenant(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    api_tenant(&st, &headers, &id)?;
    let force = match params.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(invalid(format!("`force` must be true or false, not {other:?}"))),
    };
    if !force {
        let q =
            DeliveryQuery { tenant: Some(id.clone()), state: Some(DeliveryState::Pending), ..DeliveryQuery::default() };
        if has_deliveries(&st, q).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "tenant_has_pending_deliveries",
                format!("tenant {id:?} has pending deliveries; wait for them, or delete with ?force=true"),
            ));
        }
    }
    st.store.delete_tenant(id.clone()).await.map_err(|e| ApiError::store(&e))?;
    for e in st.endpoints.snapshot().iter().filter(|e| e.tenant == id) {
        st.endpoints.remove(&e.id);
        st.health.forget(&e.id);
    }
    st.tenants.remove(&id);
    tracing::info!(tenant = %id, force, "tenant deleted through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/tenants/{id}/secret/rotate` (admin, or the tenant's token: the portal rotates its
/// own secret) `{key_type?}`: a new secret signs from now on, the old one next to it for
/// `signing.rotation_overlap`; the new one is of the current kind unless `key_type` switches it
/// (during the overlap, `webhook-signature` then carries a `v1,` and a `v1a,` entry). Tenants
/// of the config file are rotated there (409).
pub async fn rotate_secret(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let t = st.tenant_access(&headers, &id)?;
    let mut record = match t.origin {
        TenantOrigin::Config => return Err(read_only(&id)),
        TenantOrigin::Api { .. } => st.tenants.record(&id).ok_or_else(|| read_only(&id))?,
    };
    let o = body_object(&body)?;
    if let Some((k, _)) = o.iter().find(|(k, _)| *k != "key_type") {
        return Err(invalid(format!("unknown field `{k}`; expected key_type")));
    }
    let ed25519 = key_type(&o)?;
    let now = st.clock.now_ms();
    let secret = crate::tenants::rotate(&mut record, now, st.tenants.overlap(), ed25519);
    st.store.put_tenant(record.clone()).await.map_err(|e| ApiError::store(&e))?;
    let t = st.tenants.put(record).map_err(invalid)?;
    tracing::info!(tenant = %id, fingerprint = %t.fingerprint(), "tenant secret rotated");
    let mut v = view(&st, &t);
    v["secret"] = serde_json::Value::String(secret);
    v["previous_secret_signs_until"] =
        serde_json::Value::String(rfc3339(now + st.tenants.overlap().as_millis() as u64));
    Ok(no_store(json_response(StatusCode::OK, v.to_string())))
}

/// `POST /v1/tenants/{id}/secret/reveal` (admin, or the tenant's token): the secret that signs
/// the tenant's deliveries now, so that the customer can verify them (the portal shows it on
/// request). A POST, never a GET, so that the secret is not kept by caches, prefetches or
/// access logs.
pub async fn reveal_secret(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = st.tenant_access(&headers, &id)?;
    let (secret, signs) = t.signing_keys(st.clock.now_ms(), st.tenants.overlap());
    tracing::info!(tenant = %id, fingerprint = %t.fingerprint(), "tenant secret revealed");
    let body = serde_json::json!({
        "tenant": t.id,
        "secret": secret.to_whsec(),
        "public_key": secret.public_key(),
        "fingerprint": secret.fingerprint(),
        "also_signing": signs.iter().map(|s| s.fingerprint()).collect::<Vec<_>>(),
    });
    Ok(no_store(json_response(StatusCode::OK, body.to_string())))
}

/// `key_type` of a body: `"hmac"` (`whsec_`, both signature recipes) or `"ed25519"` (`whsk_`,
/// Standard Webhooks `v1a` only); `None` when absent.
fn key_type(o: &json::Object) -> Result<Option<bool>, ApiError> {
    match o.get("key_type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(k)) if k == "hmac" => Ok(Some(false)),
        Some(Value::String(k)) if k == "ed25519" => Ok(Some(true)),
        Some(_) => Err(invalid("`key_type` must be \"hmac\" or \"ed25519\"")),
    }
}

/// Marks an answer that carries a secret as not to be stored by any cache.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// `expires_in` of a body (`"10m"`), within `[1s, max]`.
fn expires_in(
    o: &json::Object,
    default: Option<std::time::Duration>,
    max: std::time::Duration,
) -> Result<Option<std::time::Duration>, ApiError> {
    match o.get("expires_in") {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(t)) => match crate::config::parse_duration(t) {
            Some(d) if d >= std::time::Duration::from_secs(1) && d <= max => Ok(Some(d)),
            _ => Err(invalid(format!(
                "`expires_in` {t:?} must be a duration from 1s to {}d, e.g. \"10m\"",
                max.as_secs() / 86_400
            ))),
        },
        Some(_) => Err(invalid("`expires_in` must be a duration like \"10m\"")),
    }
}

fn token_view(t: &crate::model::TokenRecord) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "tenant": t.tenant,
        "created_at": rfc3339(t.created_at_ms),
        "expires_at": t.expires_at_ms.map(rfc3339),
        "portal": t.portal,
        "fingerprint": &t.hash[..8],
    })
}

/// `POST /v1/tenants/{id}/tokens` `{expires_in?}` (admin): a token for the tenant's routes,
/// shown this once.
pub async fn create_token(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let o = expiry_body(&st, &headers, &id, &body)?;
    let now = st.clock.now_ms();
    let ttl = expires_in(&o, None, std::time::Duration::from_secs(3650 * 86_400))?;
    let (token, record) = st.tenants.issue_token(&id, now, ttl.map(|d| now + d.as_millis() as u64), false);
    st.store.put_token(record.clone()).await.map_err(|e| ApiError::store(&e))?;
    st.tenants.add_token(record.clone());
    let mut v = token_view(&record);
    v["token"] = serde_json::Value::String(token);
    Ok(json_response(StatusCode::CREATED, v.to_string()))
}

/// `GET /v1/tenants/{id}/tokens` (admin): ids, expiries and fingerprints; never the tokens.
pub async fn list_tokens(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    if st.tenants.get(&id).is_none() {
        return Err(ApiError::not_found(format!("no tenant with id {id:?}")));
    }
    let data: Vec<_> = st.tenants.tokens_of(&id).iter().map(token_view).collect();
    Ok(json_response(StatusCode::OK, serde_json::json!({ "data": data }).to_string()))
}

/// `DELETE /v1/tenants/{id}/tokens/{token_id}` (admin): revokes it at once.
pub async fn revoke_token(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    if !st.tenants.tokens_of(&id).iter().any(|t| t.id == token_id) {
        return Err(ApiError::not_found(format!("no token {token_id:?} for tenant {id:?}")));
    }
    st.store.delete_token(token_id.clone()).await.map_err(|e| ApiError::store(&e))?;
    st.tenants.revoke(&id, &token_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/tenants/{id}/portal` `{expires_in?}` (admin): a link to the dashboard scoped to
/// the tenant, with a code that works once, within `expires_in` (10 minutes by default).
pub async fn create_portal_link(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let o = expiry_body(&st, &headers, &id, &body)?;
    let ttl = expires_in(&o, Some(PORTAL_CODE_TTL), PORTAL_CODE_MAX)?.unwrap_or(PORTAL_CODE_TTL);
    let now = st.clock.now_ms();
    let expires_at = now + ttl.as_millis() as u64;
    let code = st.tenants.portal_code(&id, expires_at, now);
    let base = match &st.config().server.public_url {
        Some(u) => u.as_str().trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
            format!("http://{host}")
        }
    };
    // The code travels in the fragment, which browsers never send to servers or in
    // Referer headers.
    let body = serde_json::json!({ "url": format!("{base}/#portal={code}"), "expires_at": rfc3339(expires_at) });
    Ok(json_response(StatusCode::CREATED, body.to_string()))
}

/// The body of an admin route that issues a credential for tenant `id`: `{expires_in?}` only.
fn expiry_body(st: &AppState, headers: &HeaderMap, id: &str, body: &[u8]) -> Result<json::Object, ApiError> {
    st.admin(headers)?;
    st.tenants.get(id).ok_or_else(|| ApiError::not_found(format!("no tenant with id {id:?}")))?;
    let o = body_object(body)?;
    if let Some((k, _)) = o.iter().find(|(k, _)| *k != "expires_in") {
        return Err(invalid(format!("unknown field `{k}`; expected expires_in")));
    }
    Ok(o)
}

/// `POST /v1/portal/session` `{code}` (no token: the code is the credential): exchanges a portal
/// code, once, for a tenant token that lasts an hour.
pub async fn portal_session(State(st): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let o = body_object(&body)?;
    let Some(Value::String(code)) = o.get("code") else {
        return Err(invalid("`code` (the portal link's code) is required"));
    };
    let now = st.clock.now_ms();
    let tenant = st.tenants.redeem(code, now).map_err(|e| match e {
        TokenError::Expired => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "portal_code_expired",
            "this portal link has expired; ask for a new one",
        ),
        TokenError::Unknown => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "portal_code_invalid",
            "this portal link is not valid: it was already used, or never issued",
        ),
    })?;
    let expires_at = now + PORTAL_SESSION.as_millis() as u64;
    let (token, record) = st.tenants.issue_token(&tenant, now, Some(expires_at), true);
    st.store.put_token(record.clone()).await.map_err(|e| ApiError::store(&e))?;
    st.tenants.add_token(record);
    let name = st.tenants.get(&tenant).and_then(|t| t.name.clone());
    let body = serde_json::json!({ "token": token, "tenant": tenant, "name": name, "expires_at": rfc3339(expires_at) });
    Ok(json_response(StatusCode::CREATED, body.to_string()))
}

/// `POST /v1/tenants/{id}/endpoints/{endpoint}/test`: a signed example event (trigger
/// `hookgate.test`) to this endpoint only, through the normal pipeline.
pub async fn test_send(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, endpoint)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = st.tenant_access(&headers, &id)?;
    let internal = crate::endpoint::internal_id(&tenant.id, &endpoint);
    let target = st
        .endpoints
        .get(&internal)
        .filter(|_| !endpoint.contains('/'))
        .ok_or_else(|| ApiError::not_found(format!("no endpoint with id {endpoint:?}")))?;
    // A test send is an event like any other: a tenant's token cannot use it to write
    // past the tenant's quota.
    super::events::admit(&st, &tenant)?;
    let now = st.clock.now_ms();
    let doc = serde_json::json!({
        "trigger": "hookgate.test",
        "data": {
            "message": "A test event from Hookgate: if its signature verifies, your endpoint is ready.",
            "tenant": tenant.id,
            "endpoint_id": endpoint,
            "sent_at": rfc3339(now),
        },
    });
    let Value::Object(fields) = Value::from(&doc) else { unreachable!("built as an object") };
    let canonical = json::canonical_with_slot(&fields, "idempotency_key");
    let mut write = build_write("hookgate.test", &fields, canonical, &[&target], vec![], now, None);
    set_tenant(&mut write, &tenant.id);
    let (event_id, delivery_id) = (write.event.id, write.deliveries[0].id);
    st.store.ingest(write).await.map_err(|e| ApiError::store(&e))?;
    st.wake.notify_one();
    let body = serde_json::json!({ "event_id": event_id, "delivery_id": delivery_id });
    Ok(json_response(StatusCode::ACCEPTED, body.to_string()))
}

/// `GET /v1/tenants/{id}/deliveries`: the tenant's delivery log, with the same filters.
pub async fn tenant_deliveries(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let t = st.tenant_access(&headers, &id)?;
    if params.iter().any(|(k, _)| k == "tenant") {
        return Err(ApiError::bad_request("`tenant` is given by the path here"));
    }
    list_page(&st, &params, Some(&t.id)).await
}

/// `GET /v1/tenants/{id}/deliveries/{delivery}`.
pub async fn tenant_delivery(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = st.tenant_access(&headers, &id)?;
    let d = parse_id("delivery", &delivery)?;
    let (_, v) = detail_value(&st, d, Some(&t.id)).await?;
    Ok(json_response(StatusCode::OK, v.to_string()))
}

/// `POST /v1/tenants/{id}/deliveries/{delivery}/resend`.
pub async fn tenant_resend(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = st.tenant_access(&headers, &id)?;
    let d = parse_id("delivery", &delivery)?;
    // Checked before the attempt: another tenant's delivery is not found, not resent.
    detail_value(&st, d, Some(&t.id)).await?;
    resend_one(&st, d).await?;
    let (_, v) = detail_value(&st, d, Some(&t.id)).await?;
    Ok(json_response(StatusCode::OK, v.to_string()))
}
