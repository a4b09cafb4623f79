//! Endpoints at runtime: `GET/POST /v1/endpoints`, `GET/PATCH/DELETE /v1/endpoints/{id}`.
//!
//! Owns: the JSON shape of an endpoint and its health, and the order of an update: validate
//! everything first (so a refused body changes nothing), then store, then swap the registry.
//! Must not touch: the rules of what an endpoint may be (`endpoint::validate`, reached through
//! `endpoints::validate_body`) or the health state machine (`health`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::error::{ApiError, json_response};
use super::state::AppState;
use crate::config::{Endpoint, Origin, Triggers};
use crate::endpoint::internal_id;
use crate::health::HealthView;
use crate::json;
use crate::model::DEFAULT_TENANT;
use crate::model::{now_ms, rfc3339};
use crate::operations::Operations;
use crate::store::Effects;

#[derive(Serialize)]
struct EndpointView<'a> {
    /// The id within its tenant.
    id: &'a str,
    tenant: &'a str,
    url: &'a str,
    triggers: Vec<&'a str>,
    #[serde(rename = "match")]
    matches: Option<serde_json::Map<String, serde_json::Value>>,
    has_secret: bool,
    /// The `whpk_` public key receivers verify `v1a` signatures with, when the endpoint's own
    /// secret is an Ed25519 key (it is not a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    plugins: &'a [String],
    /// `config` (read-only here except `enabled`; edit the file) or `api`.
    source: &'static str,
    created_at: Option<String>,
    rate_limit: Option<String>,
    ordering: Option<&'static str>,
    ordering_key: Option<&'a str>,
    enabled: bool,
    disabled_at: Option<String>,
    /// `closed`, `open` or `half_open`.
    circuit: &'static str,
    circuit_open_until: Option<String>,
    consecutive_failures: u32,
    last_success_at: Option<String>,
    last_failure_at: Option<String>,
    last_error: Option<serde_json::Value>,
    /// Set while a `Retry-After` from the receiver pauses the endpoint.
    paused_until: Option<String>,
    attempts_last_hour: u32,
    /// Successful attempts over all attempts in the last hour; null without attempts.
    success_rate_last_hour: Option<f64>,
    /// The last circuit and enabled/disabled changes, newest first.
    health_history: Vec<serde_json::Value>,
    description: &'a str,
    metadata: &'a std::collections::BTreeMap<String, String>,
    channels: &'a [String],
    /// The names of the custom headers; their values (often a receiver's credentials) are
    /// never shown.
    header_names: Vec<&'a str>,
}

fn endpoint_view<'a>(e: &'a Endpoint, hv: &HealthView) -> EndpointView<'a> {
    let h = &hv.health;
    EndpointView {
        id: e.local_id(),
        tenant: &e.tenant,
        url: e.url.as_str(),
        triggers: match &e.triggers {
            Triggers::All => vec!["*"],
            Triggers::Only(list) => list.iter().map(String::as_str).collect(),
        },
        matches: (!e.matches.is_empty()).then(|| {
            e.matches
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::from_str(&v.to_canonical()).unwrap_or(serde_json::Value::Null)))
                .collect()
        }),
        has_secret: e.secret.is_some(),
        public_key: e.secret.as_ref().and_then(crate::sign::Secret::public_key),
        plugins: &e.plugins,
        source: match e.origin {
            Origin::Config => "config",
            Origin::Api { .. } => "api",
        },
        created_at: match e.origin {
            Origin::Config => None,
            Origin::Api { created_at_ms } => Some(rfc3339(created_at_ms)),
        },
        rate_limit: e.rate_limit.map(|r| r.to_string()),
        ordering: e.fifo.as_ref().map(|_| "fifo"),
        ordering_key: e.fifo.as_ref().and_then(|f| f.key.as_deref()),
        enabled: h.disabled_at_ms.is_none(),
        disabled_at: h.disabled_at_ms.map(rfc3339),
        circuit: h.circuit.as_str(),
        circuit_open_until: (h.circuit != crate::model::Circuit::Closed).then(|| rfc3339(h.open_until_ms)),
        consecutive_failures: h.consecutive_failures,
        last_success_at: h.last_success_at_ms.map(rfc3339),
        last_failure_at: h.last_failure_at_ms.map(rfc3339),
        last_error: h.last_error.as_ref().map(|e| serde_json::json!({ "kind": e.kind.as_str(), "message": e.message })),
        paused_until: hv.paused_until_ms.map(rfc3339),
        attempts_last_hour: hv.attempts_last_hour,
        success_rate_last_hour: (hv.attempts_last_hour > 0)
            .then(|| f64::from(hv.successes_last_hour) / f64::from(hv.attempts_last_hour)),
        health_history: h
            .history
            .iter()
            .rev()
            .map(|c| serde_json::json!({ "at": rfc3339(c.at_ms), "change": c.change, "detail": c.detail }))
            .collect(),
        description: &e.description,
        metadata: &e.metadata,
        channels: &e.channels,
        header_names: e.headers.iter().map(|(k, _)| k.as_str()).collect(),
    }
}

fn render(st: &AppState, e: &Endpoint) -> serde_json::Value {
    let hv = st.health.view(&e.id, st.clock.now_ms());
    serde_json::to_value(endpoint_view(e, &hv)).unwrap_or_default()
}

/// The default tenant's routes (`/v1/endpoints...`) take an admin token; a tenant's
/// (`/v1/tenants/{id}/endpoints...`) an admin token or one of that tenant.
fn scope(st: &AppState, headers: &HeaderMap, tenant: Option<&str>) -> Result<String, ApiError> {
    match tenant {
        None => {
            st.admin(headers)?;
            Ok(DEFAULT_TENANT.to_owned())
        }
        Some(t) => st.tenant_access(headers, t).map(|t| t.id.clone()),
    }
}

fn find(st: &AppState, tenant: &str, id: &str) -> Result<Endpoint, ApiError> {
    st.endpoints
        .get(&internal_id(tenant, id))
        .filter(|_| !id.contains('/'))
        .ok_or_else(|| ApiError::not_found(format!("no endpoint with id {id:?}")))
}

/// `GET /v1/endpoints`, `GET /v1/tenants/{id}/endpoints`: the tenant's endpoints.
async fn list(st: &AppState, headers: &HeaderMap, tenant: Option<&str>) -> Result<Response, ApiError> {
    let tenant = scope(st, headers, tenant)?;
    let data: Vec<_> = st.endpoints.of_tenant(&tenant).iter().map(|e| render(st, e)).collect();
    Ok(json_response(StatusCode::OK, serde_json::json!({ "data": data }).to_string()))
}

/// `GET /v1/endpoints/{id}`: the endpoint and its health.
async fn get(st: &AppState, headers: &HeaderMap, tenant: Option<&str>, id: &str) -> Result<Response, ApiError> {
    let tenant = scope(st, headers, tenant)?;
    let e = find(st, &tenant, id)?;
    Ok(json_response(StatusCode::OK, render(st, &e).to_string()))
}

pub async fn list_endpoints(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    list(&st, &headers, None).await
}

pub async fn get_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    get(&st, &headers, None, &id).await
}

pub async fn tenant_list_endpoints(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(t): Path<String>,
) -> Result<Response, ApiError> {
    list(&st, &headers, Some(&t)).await
}

pub async fn tenant_get_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((t, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get(&st, &headers, Some(&t), &id).await
}

pub async fn tenant_create_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(t): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    create(&st, &headers, Some(&t), &body).await
}

pub async fn tenant_patch_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((t, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    patch(&st, &headers, Some(&t), &id, &body).await
}

pub async fn tenant_delete_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((t, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    delete(&st, &headers, Some(&t), &id).await
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_endpoint", message)
}

/// `POST /v1/endpoints` `{url, triggers, match?, secret?, rate_limit?, ordering?,
/// ordering_key?}`: validated like the config file, stored durably, live for the next event.
pub async fn create_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    create(&st, &headers, None, &body).await
}

async fn create(st: &AppState, headers: &HeaderMap, tenant: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
    let tenant = scope(st, headers, tenant)?;
    let mut v = json::parse(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.message))?;
    // An `id` of the caller's choosing (Svix's endpoint `uid`), else a generated one.
    let chosen = match &mut v {
        json::Value::Object(o) => o.remove("id"),
        _ => None,
    };
    let _turn = st.endpoints.creating.lock().await;
    let id = match chosen {
        None | Some(json::Value::Null) => format!("ep_{}", Uuid::now_v7().simple()),
        Some(json::Value::String(id)) => {
            if st.endpoints.get(&internal_id(&tenant, &id)).is_some() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("an endpoint with id {id:?} already exists"),
                ));
            }
            id
        }
        Some(_) => return Err(invalid("`id` must be a string".into())),
    };
    let (endpoint, record) =
        crate::registry::validate_body(&v, None, &st.config().delivery, &tenant, id, now_ms()).map_err(invalid)?;
    if let Some(t) = st.tenants.get(&tenant) {
        let count = st.endpoints.of_tenant(&tenant).len();
        if count >= t.limits.max_endpoints {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "quota_exceeded",
                format!("tenant {tenant:?} has {count} endpoints, its max_endpoints"),
            ));
        }
    }
    st.store.put_endpoint(record.clone()).await.map_err(|e| ApiError::store(&e))?;
    st.endpoints.put(endpoint.clone(), record);
    tracing::info!(endpoint = %endpoint.id, "endpoint created through the API");
    Ok(json_response(StatusCode::CREATED, render(st, &endpoint).to_string()))
}

/// `PATCH /v1/endpoints/{id}`: any of the creation fields (`null` clears an optional one) and
/// `enabled`. Config endpoints accept only `enabled`. Pending deliveries use the new URL and
/// secret from their next attempt.
pub async fn patch_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    patch(&st, &headers, None, &id, &body).await
}

async fn patch(
    st: &AppState,
    headers: &HeaderMap,
    tenant: Option<&str>,
    local: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let st = st.clone();
    async {
        let tenant = scope(&st, headers, tenant)?;
        let current = find(&st, &tenant, local)?;
        let id = current.id.clone();
        let v = json::parse(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.message))?;
        let o = v.as_object().ok_or_else(|| invalid(format!("the body must be a JSON object, not {}", v.kind())))?;
        let enabled = match o.get("enabled") {
            None => None,
            Some(json::Value::Bool(b)) => Some(*b),
            Some(other) => return Err(invalid(format!("`enabled` must be true or false, not {}", other.kind()))),
        };
        // Everything is validated before anything is written: a refused body changes nothing.
        let update = match current.origin {
            Origin::Config => {
                if let Some((k, _)) = o.iter().find(|(k, _)| *k != "enabled") {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "endpoint_read_only",
                        format!(
                            "endpoint {id:?} is defined in the config file; only `enabled` can be changed here, not `{k}`"
                        ),
                    ));
                }
                None
            }
            Origin::Api { .. } if o.iter().any(|(k, _)| k != "enabled") => {
                let record = st.endpoints.record(&id).ok_or_else(|| ApiError::not_found(format!("no endpoint with id {id:?}")))?;
                let (mut endpoint, new_record) = crate::registry::validate_body(
                    &v,
                    Some(&record),
                    &st.config().delivery,
                    &tenant,
                    local.to_owned(),
                    now_ms(),
                )
                .map_err(invalid)?;
                endpoint.plugins = current.plugins.clone();
                Some((endpoint, new_record))
            }
            Origin::Api { .. } => None,
        };
        if let Some((endpoint, record)) = update {
            let unordered = current.fifo.is_some() && endpoint.fifo.is_none();
            st.store.put_endpoint(record.clone()).await.map_err(|e| ApiError::store(&e))?;
            st.endpoints.put(endpoint, record);
            if unordered {
                // Deliveries that waited their turn in a FIFO queue are due now.
                let released = st.store.release_fifo(id.clone()).await.map_err(|e| ApiError::store(&e))?;
                tracing::info!(endpoint = %id, released, "ordering turned off; queued deliveries released");
            }
            tracing::info!(endpoint = %id, "endpoint updated through the API");
        }
        if let Some(enabled) = enabled {
            // Operators change it as often as they need; a tenant's token (or portal session)
            // is held to one change per interval.
            let by_admin = st.admin(headers).is_ok();
            set_enabled(&st, &id, enabled, !by_admin).await?;
        }
        st.wake.notify_one();
        let now = st.endpoints.get(&id).unwrap_or(current);
        Ok::<_, ApiError>(json_response(StatusCode::OK, render(&st, &now).to_string()))
    }
    .await
}

/// Enables or disables an endpoint by hand: the change and its operational event are stored in
/// one transaction. Disabling fails the endpoint's pending deliveries as the scheduler meets
/// them (error kind `endpoint_disabled`).
async fn set_enabled(st: &AppState, id: &str, enabled: bool, limited: bool) -> Result<(), ApiError> {
    let now = st.clock.now_ms();
    if limited
        && st.health.is_enabled(id) != enabled
        && let Err(wait) = st.health.take_manual_change(id, now)
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_changes",
            format!(
                "endpoint {id:?} was enabled or disabled less than {}s ago; retry after {secs} s",
                crate::health::MANUAL_CHANGE_INTERVAL.as_secs()
            ),
        )
        .retry_after(secs));
    }
    let Some((health, transition)) = st.health.set_enabled(id, enabled, now) else {
        return Ok(());
    };
    let mut effects = Effects::default();
    let config = st.config();
    let ops =
        Operations { endpoint: config.operations_endpoint.as_deref(), registry: &st.endpoints, health: &st.health };
    effects.events.extend(ops.endpoint_event(transition.trigger(), &health, now));
    effects.health = Some(health);
    if let Err(e) = st.store.put_health(effects).await {
        // Not stored: undo in memory, so memory and disk agree.
        st.health.set_enabled(id, !enabled, now);
        return Err(ApiError::store(&e));
    }
    tracing::warn!(endpoint = %id, change = transition.trigger(), "endpoint health changed by hand");
    Ok(())
}

/// `DELETE /v1/endpoints/{id}`: API endpoints only; their delivery history stays.
pub async fn delete_endpoint(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    delete(&st, &headers, None, &id).await
}

async fn delete(st: &AppState, headers: &HeaderMap, tenant: Option<&str>, local: &str) -> Result<Response, ApiError> {
    let tenant = scope(st, headers, tenant)?;
    let e = find(st, &tenant, local)?;
    let id = e.id.clone();
    if e.origin == Origin::Config {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "endpoint_read_only",
            format!("endpoint {id:?} is defined in the config file; change it there"),
        ));
    }
    st.store.delete_endpoint(id.clone()).await.map_err(|e| ApiError::store(&e))?;
    st.endpoints.remove(&id);
    st.health.forget(&id);
    tracing::info!(endpoint = %id, "endpoint deleted through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether an endpoint's tenant is gone (removed from the file and reloaded, or deleted on a
/// node whose file differs): its deliveries fail `tenant_gone` until the tenant is back.
fn orphaned(st: &AppState, e: &Endpoint) -> bool {
    e.tenant != DEFAULT_TENANT && st.tenants.get(&e.tenant).is_none()
}

/// `GET /v1/admin/orphaned-endpoints` (admin): the endpoints whose tenant is gone.
pub async fn list_orphaned(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let data: Vec<_> = st.endpoints.snapshot().iter().filter(|e| orphaned(&st, e)).map(|e| render(&st, e)).collect();
    Ok(json_response(StatusCode::OK, serde_json::json!({ "data": data }).to_string()))
}

/// `DELETE /v1/admin/orphaned-endpoints/{tenant}/{endpoint}` (admin): removes an endpoint whose
/// tenant is gone; its history stays.
pub async fn delete_orphaned(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((tenant, local)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let e = st
        .endpoints
        .get(&internal_id(&tenant, &local))
        .filter(|e| !local.contains('/') && orphaned(&st, e))
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {local:?} of a deleted tenant {tenant:?}")))?;
    st.store.delete_endpoint(e.id.clone()).await.map_err(|e| ApiError::store(&e))?;
    st.endpoints.remove(&e.id);
    st.health.forget(&e.id);
    tracing::info!(endpoint = %e.id, "endpoint of a deleted tenant removed through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The longest overlap a rotated-out endpoint secret may sign beside the new one.
const MAX_OVERLAP: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// `POST /v1/endpoints/{id}/secret/rotate` `{secret?, overlap?}` (admin).
pub async fn rotate_endpoint_secret(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    rotate(&st, &headers, None, &id, &body).await
}

/// `POST /v1/tenants/{id}/endpoints/{endpoint}/secret/rotate` (admin or the tenant's token).
pub async fn tenant_rotate_endpoint_secret(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((t, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    rotate(&st, &headers, Some(&t), &id, &body).await
}

/// Gives an endpoint of the API a new signing secret (`secret`, or a generated one of the same
/// kind), shown this once. The secret it replaces (its own, or its tenant's when it had none)
/// signs beside it for `overlap` (24 h by default, at most 7 days), so receivers switch over
/// without failing a delivery.
async fn rotate(
    st: &AppState,
    headers: &HeaderMap,
    tenant: Option<&str>,
    local: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let tenant = scope(st, headers, tenant)?;
    let current = find(st, &tenant, local)?;
    let Some(mut record) = st.endpoints.record(&current.id).filter(|_| matches!(current.origin, Origin::Api { .. }))
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "endpoint_read_only",
            format!("endpoint {local:?} is defined in the config file; rotate its secret there"),
        ));
    };
    let v = if body.iter().all(u8::is_ascii_whitespace) {
        json::Value::Object(json::Object::new())
    } else {
        json::parse(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.message))?
    };
    let o = v.as_object().ok_or_else(|| invalid("the body must be a JSON object".into()))?;
    if let Some((k, _)) = o.iter().find(|(k, _)| !matches!(*k, "secret" | "overlap")) {
        return Err(invalid(format!("unknown field `{k}`; expected secret, overlap")));
    }
    let now = st.clock.now_ms();
    let old = match &current.secret {
        Some(s) => s.clone(),
        None => st
            .tenants
            .signing_keys(&tenant, now)
            .map(|(s, _)| s)
            .ok_or_else(|| invalid("the endpoint's tenant is gone".into()))?,
    };
    let new = match o.get("secret") {
        None | Some(json::Value::Null) if old.public_key().is_some() => crate::sign::Secret::generate_ed25519(),
        None | Some(json::Value::Null) => crate::sign::Secret::generate(),
        Some(json::Value::String(s)) => {
            crate::sign::Secret::parse(s).map_err(|e| invalid(format!("`secret`: the secret {e}")))?
        }
        Some(_) => return Err(invalid("`secret` must be a string".into())),
    };
    let overlap = match o.get("overlap") {
        None | Some(json::Value::Null) => std::time::Duration::from_secs(86_400),
        Some(json::Value::String(t)) => {
            crate::config::parse_duration(t).filter(|d| *d <= MAX_OVERLAP).ok_or_else(|| {
                invalid(format!("`overlap` {t:?} must be a duration of at most 7d, e.g. \"24h\" (\"0s\": none)"))
            })?
        }
        Some(_) => return Err(invalid("`overlap` must be a duration like \"24h\"".into())),
    };
    let until = now + overlap.as_millis() as u64;
    record.secret = Some(new.to_whsec());
    record.previous_secret = Some(old.to_whsec());
    record.previous_until_ms = Some(until);
    let endpoint = Endpoint { secret: Some(new.clone()), previous_secret: Some((old, until)), ..current };
    st.store.put_endpoint(record.clone()).await.map_err(|e| ApiError::store(&e))?;
    st.endpoints.put(endpoint, record);
    tracing::info!(endpoint = %internal_id(&tenant, local), fingerprint = %new.fingerprint(), "endpoint secret rotated");
    let body = serde_json::json!({
        "secret": new.to_whsec(),
        "public_key": new.public_key(),
        "previous_secret_signs_until": rfc3339(until),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}
