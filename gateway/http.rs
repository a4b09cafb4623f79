//! The HTTP surface: routes, authentication and the JSON error shape shared by every handler.
//!
//! Owns: the router (which path goes to which handler), bearer-token checks and [`ApiError`],
//! so every refusal looks the same: a status and `{"error": {"code", "message"}}`.
//! Must not touch: the on-disk layout or outbound HTTP. Handlers live in `ingest` (writes) and
//! `api` (reads); this module only wires them.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::config::{Config, Token};
use crate::dispatch::Dispatcher;
use crate::health::HealthBook;
use crate::live::{Live, Reloader};
use crate::metrics::Metrics;
use crate::operations::Operations;
use crate::registry::Registry;
use crate::store::Store;
use crate::tenants::{Tenant, Tenants, TokenError};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The running generation of the config file, plugins and tokens (see `live`).
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    pub store: Store,
    /// Tells the dispatcher that new deliveries are due.
    pub wake: Arc<Notify>,
    pub endpoints: Arc<Registry>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    /// "Now" for ingest's timestamps: the same clock dispatch schedules by.
    pub clock: SharedClock,
    /// Open inbound connections, kept by `serve`.
    pub connections: Arc<crate::serve::ConnectionStats>,
    /// Endpoint health: ingest skips disabled endpoints; the API shows and changes it.
    pub health: Arc<HealthBook>,
    pub operations: Arc<Operations>,
    pub tenants: Arc<Tenants>,
}

/// What [`AppState::new`] is built from.
pub struct Shared {
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    pub store: Store,
    pub wake: Arc<Notify>,
    pub endpoints: Arc<Registry>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub health: Arc<HealthBook>,
    pub operations: Arc<Operations>,
    pub tenants: Arc<Tenants>,
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        let Shared { live, reloader, store, wake, endpoints, dispatcher, metrics, clock, health, operations, tenants } =
            shared;
        AppState {
            tenants,
            health,
            operations,
            live,
            reloader,
            store,
            wake,
            endpoints,
            dispatcher,
            metrics,
            clock,
            connections: Arc::default(),
        }
    }

    /// The running configuration (one request uses one snapshot).
    pub fn config(&self) -> Arc<Config> {
        self.live.config()
    }
}

/// Accepted bearer tokens, kept as SHA-256 digests so that comparing a presented token takes
/// the same time whatever it shares with a real one.
pub struct TokenSet(Vec<[u8; 32]>);

impl TokenSet {
    pub fn new(tokens: &[Token]) -> TokenSet {
        TokenSet(tokens.iter().map(|t| Sha256::digest(t.0.as_bytes()).into()).collect())
    }

    /// Checks the `Authorization: Bearer` header against every token, without early exit.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = bearer(headers)?;
        if self.matches(presented) {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer token is not valid for this route"))
        }
    }

    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut ok = false;
        for t in &self.0 {
            let diff = t.iter().zip(digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            ok |= diff == 0;
        }
        ok
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing `Authorization: Bearer <token>` header")
        })
}

impl AppState {
    /// Who may use a tenant's routes: an admin token, or a token of that tenant. Another
    /// tenant's token gets the same 404 as a tenant that does not exist, so ids do not leak.
    pub fn tenant_access(&self, headers: &HeaderMap, tenant: &str) -> Result<Arc<Tenant>, ApiError> {
        let presented = bearer(headers)?;
        let missing = || ApiError::not_found(format!("no tenant with id {tenant:?}"));
        if !self.live.get().admin_tokens.matches(presented) {
            match self.tenants.check_token(presented, self.clock.now_ms()) {
                Ok(t) if t.tenant == tenant => {}
                Ok(_) => return Err(missing()),
                Err(TokenError::Expired) => {
                    return Err(ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", "this token has expired"));
                }
                Err(TokenError::Unknown) => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the bearer token is not valid for this route (revoked, or never issued)",
                    ));
                }
            }
        }
        self.tenants.get(tenant).ok_or_else(missing)
    }
}

/// A refusal: the status and a machine-readable code with a message for humans. Messages name
/// the problem in the request and never carry internals.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (a 429 or 503 that knows when to come back).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn store(e: &crate::store::StoreError) -> ApiError {
        if let crate::store::StoreError::Rejected(why) = e {
            // Its own data, not the store's health: retrying will not help.
            tracing::warn!(error = %e, "the store refused a request's data; answered 422");
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unstorable",
                format!("the store cannot hold this request's data: {why}"),
            );
        }
        tracing::error!(error = %e, "store failure answered with 503");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the event store cannot commit right now; retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = json_response(self.status, body.to_string());
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// A response with a JSON body already serialised.
pub fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed on this path")
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Every error answer in the API's shape, `{"error": {"code", "message"}}`: the refusals axum
/// makes itself before a handler runs (a path that is not UTF-8, a body over the limit, a
/// missing content type) come as plain text, and are rewritten here with their text as the
/// message.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // axum's own refusals are a sentence or two; more is not a message.
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let message = match text {
        Ok(t) if !t.is_empty() => t,
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    use crate::api;
    let mna = method_not_allowed;
    Router::new()
        .route("/v1/events", post(crate::ingest::create_event).fallback(mna))
        .route("/v1/events/{id}", get(api::get_event).fallback(mna))
        .route("/v1/deliveries", get(api::list_deliveries).fallback(mna))
        .route("/v1/deliveries/resend", post(api::bulk_resend).fallback(mna))
        .route("/v1/deliveries/{id}", get(api::get_delivery).fallback(mna))
        .route("/v1/deliveries/{id}/resend", post(api::resend).fallback(mna))
        .route("/v1/endpoints", get(api::list_endpoints).post(api::create_endpoint).fallback(mna))
        .route(
            "/v1/endpoints/{id}",
            get(api::get_endpoint).patch(api::patch_endpoint).delete(api::delete_endpoint).fallback(mna),
        )
        .route("/v1/tenants", get(api::tenants::list_tenants).post(api::tenants::create_tenant).fallback(mna))
        .route(
            "/v1/tenants/{id}",
            get(api::tenants::get_tenant)
                .patch(api::tenants::patch_tenant)
                .delete(api::tenants::delete_tenant)
                .fallback(mna),
        )
        .route("/v1/tenants/{id}/secret/rotate", post(api::tenants::rotate_secret).fallback(mna))
        .route("/v1/tenants/{id}/events", post(crate::ingest::create_tenant_event).fallback(mna))
        .route(
            "/v1/tenants/{id}/endpoints",
            get(api::tenant_list_endpoints).post(api::tenant_create_endpoint).fallback(mna),
        )
        .route(
            "/v1/tenants/{id}/endpoints/{endpoint}",
            get(api::tenant_get_endpoint)
                .patch(api::tenant_patch_endpoint)
                .delete(api::tenant_delete_endpoint)
                .fallback(mna),
        )
        .route("/v1/tenants/{id}/endpoints/{endpoint}/test", post(api::tenants::test_send).fallback(mna))
        .route("/v1/tenants/{id}/deliveries", get(api::tenants::tenant_deliveries).fallback(mna))
        .route("/v1/tenants/{id}/deliveries/{delivery}", get(api::tenants::tenant_delivery).fallback(mna))
        .route("/v1/tenants/{id}/deliveries/{delivery}/resend", post(api::tenants::tenant_resend).fallback(mna))
        .route("/v1/tenants/{id}/tokens", get(api::tenants::list_tokens).post(api::tenants::create_token).fallback(mna))
        .route("/v1/tenants/{id}/tokens/{token}", axum::routing::delete(api::tenants::revoke_token).fallback(mna))
        .route("/v1/tenants/{id}/portal", post(api::tenants::create_portal_link).fallback(mna))
        .route("/v1/portal/session", post(api::tenants::portal_session).fallback(mna))
        .route("/v1/admin/reload", post(api::reload).fallback(mna))
        .route("/v1/admin/orphaned-endpoints", get(api::endpoints::list_orphaned).fallback(mna))
        .route(
            "/v1/admin/orphaned-endpoints/{tenant}/{endpoint}",
            axum::routing::delete(api::endpoints::delete_orphaned).fallback(mna),
        )
        .route("/metrics", get(api::metrics).fallback(mna))
        .route("/healthz", get(api::health).fallback(mna))
        .route("/", get(api::dashboard).fallback(mna))
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::map_response(json_errors))
}
