//! The HTTP surface: which path and method go to which handler, and the one error shape for
//! every refusal, axum's own included.
//!
//! Owns: the router, the fallbacks (404 and 405) and the layer that rewrites axum's plain-text
//! refusals (a body over the limit, a path that is not UTF-8) into `{"error": {"code",
//! "message"}}`. Handlers live in `api` (reads and writes alike); this module only wires them.
//! Must not touch: the stores, outbound HTTP, or what a handler does.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{delete, get, post};

use crate::api::{self, ApiError, AppState};

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

/// The Svix-compatible API, each path with and without a trailing slash (the SDKs differ).
fn svix_routes() -> Router<AppState> {
    use api::svix::{apps, attempts, endpoints, event_types, messages, portal};
    let routes: Vec<(&str, axum::routing::MethodRouter<AppState>)> = vec![
        ("/api/v1/app", get(apps::list_apps).post(apps::create)),
        ("/api/v1/app/{app}", get(apps::get).put(apps::upsert).patch(apps::patch).delete(apps::delete)),
        ("/api/v1/app/{app}/endpoint", get(endpoints::list_endpoints).post(endpoints::create)),
        (
            "/api/v1/app/{app}/endpoint/{endpoint}",
            get(endpoints::get).put(endpoints::update).patch(endpoints::patch).delete(endpoints::delete),
        ),
        ("/api/v1/app/{app}/endpoint/{endpoint}/secret", get(endpoints::secret)),
        ("/api/v1/app/{app}/endpoint/{endpoint}/secret/rotate", post(endpoints::rotate_secret)),
        ("/api/v1/app/{app}/msg", get(messages::list_messages).post(messages::create)),
        ("/api/v1/app/{app}/msg/{msg}", get(messages::get)),
        ("/api/v1/app/{app}/msg/{msg}/endpoint/{endpoint}/resend", post(attempts::resend)),
        ("/api/v1/app/{app}/attempt/msg/{msg}", get(attempts::by_message)),
        ("/api/v1/app/{app}/attempt/endpoint/{endpoint}", get(attempts::by_endpoint)),
        ("/api/v1/auth/app-portal-access/{app}", post(portal::access)),
        ("/api/v1/event-type", get(event_types::list_types).post(event_types::create)),
        (
            "/api/v1/event-type/{name}",
            get(event_types::get).put(event_types::update).patch(event_types::patch).delete(event_types::archive),
        ),
    ];
    routes
        .into_iter()
        .fold(Router::new(), |r, (path, method)| r.route(path, method.clone()).route(&format!("{path}/"), method))
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    use api::{admin, charts, endpoints, events, log, tenants};
    Router::new()
        .route("/v1/events", post(events::create_event))
        .route("/v1/events/{id}", get(log::get_event))
        .route("/v1/deliveries", get(log::list_deliveries))
        .route("/v1/deliveries/resend", post(log::bulk_resend))
        .route("/v1/deliveries/{id}", get(log::get_delivery))
        .route("/v1/deliveries/{id}/resend", post(log::resend))
        .route("/v1/endpoints", get(endpoints::list_endpoints).post(endpoints::create_endpoint))
        .route(
            "/v1/endpoints/{id}",
            get(endpoints::get_endpoint).patch(endpoints::patch_endpoint).delete(endpoints::delete_endpoint),
        )
        .route("/v1/stats", get(charts::get_stats))
        .route("/v1/stats/overview", get(charts::get_overview))
        .route("/v1/tenants/{id}/stats", get(charts::get_tenant_stats))
        .route("/v1/tenants/{id}/stats/overview", get(charts::get_tenant_overview))
        .route("/v1/endpoints/{id}/secret/rotate", post(endpoints::rotate_endpoint_secret))
        .route("/v1/tenants/{id}/endpoints/{endpoint}/secret/rotate", post(endpoints::tenant_rotate_endpoint_secret))
        .route("/v1/tenants", get(tenants::list_tenants).post(tenants::create_tenant))
        .route("/v1/tenants/{id}", get(tenants::get_tenant).patch(tenants::patch_tenant).delete(tenants::delete_tenant))
        .route("/v1/tenants/{id}/secret/rotate", post(tenants::rotate_secret))
        .route("/v1/tenants/{id}/secret/reveal", post(tenants::reveal_secret))
        .route("/v1/tenants/{id}/events", post(events::create_tenant_event))
        .route(
            "/v1/tenants/{id}/endpoints",
            get(endpoints::tenant_list_endpoints).post(endpoints::tenant_create_endpoint),
        )
        .route(
            "/v1/tenants/{id}/endpoints/{endpoint}",
            get(endpoints::tenant_get_endpoint)
                .patch(endpoints::tenant_patch_endpoint)
                .delete(endpoints::tenant_delete_endpoint),
        )
        .route("/v1/tenants/{id}/endpoints/{endpoint}/test", post(tenants::test_send))
        .route("/v1/tenants/{id}/deliveries", get(tenants::tenant_deliveries))
        .route("/v1/tenants/{id}/deliveries/{delivery}", get(tenants::tenant_delivery))
        .route("/v1/tenants/{id}/deliveries/{delivery}/resend", post(tenants::tenant_resend))
        .route("/v1/tenants/{id}/tokens", get(tenants::list_tokens).post(tenants::create_token))
        .route("/v1/tenants/{id}/tokens/{token}", delete(tenants::revoke_token))
        .route("/v1/tenants/{id}/portal", post(tenants::create_portal_link))
        .route("/v1/portal/session", post(tenants::portal_session))
        .route("/v1/admin/reload", post(admin::reload))
        .route("/v1/admin/orphaned-endpoints", get(endpoints::list_orphaned))
        .route("/v1/admin/orphaned-endpoints/{tenant}/{endpoint}", delete(endpoints::delete_orphaned))
        .merge(svix_routes())
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::health))
        .route("/", get(admin::dashboard))
        .route("/dashboard/charts.js", get(admin::charts_js))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::map_response(json_errors))
}
