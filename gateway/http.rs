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
use axum::routing::MethodRouter;

use crate::api::svix::endpoints as svix_endpoints;
use crate::api::{self, ApiError, AppState};
use crate::openapi::{self, Auth, Op, op};

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

/// The routes, each with its description for the OpenAPI document: `method "path" handler =>
/// description;`. The router and `/openapi.json` are both built from this one list, so a route
/// cannot be served without being documented.
macro_rules! routes {
    ($($method:ident $path:literal $handler:expr => $doc:expr;)*) => {
        vec![$((
            Op { method: stringify!($method), path: $path, ..$doc },
            axum::routing::$method($handler),
        )),*]
    };
}

const DELIVERY_FILTERS: &[(&str, &str)] = &[
    ("limit", "At most 200 a page."),
    ("cursor", "The previous page's `next_cursor`."),
    ("state", "`pending`, `succeeded`, `failed` or `filtered`."),
    ("trigger", "The event's trigger."),
    ("endpoint_id", "The endpoint's id."),
    ("tenant", "The tenant's id."),
    ("since", "RFC 3339, a date or epoch ms (inclusive)."),
    ("until", "RFC 3339, a date or epoch ms (inclusive)."),
];
const WINDOW: &[(&str, &str)] = &[
    ("window", "`1h`, `6h`, `24h` (default), `7d` or `30d`."),
    ("resolution", "`minute` (up to 24 h) or `hour`."),
    ("endpoint", "One endpoint's series."),
    ("tenant", "One tenant's series."),
];
const SVIX_PAGE: &[(&str, &str)] = &[("limit", "At most 250."), ("iterator", "The previous page's `iterator`.")];

/// The native API, the Svix-compatible one, and the operational routes.
fn table() -> Vec<(Op, MethodRouter<AppState>)> {
    use Auth::{Admin, Ingest, Open, PortalCode, Tenant};
    use api::svix::{apps, attempts, event_types, messages, portal};
    use api::{admin, charts, endpoints, events, log, tenants};
    let mut native = routes! {
        post "/v1/events" events::create_event => op("Events", "Ingest an event", Ingest, "EventAccepted").body("EventIn").ok(202, Some("EventAccepted"));
        get "/v1/events/{id}" log::get_event => op("Delivery log", "An event and its deliveries", Admin, "Event");
        get "/v1/deliveries" log::list_deliveries => op("Delivery log", "Deliveries, newest first, filtered", Admin, "DeliveryPage").query(DELIVERY_FILTERS);
        post "/v1/deliveries/resend" log::bulk_resend => op("Delivery log", "Resend an endpoint's failed deliveries since a time", Admin, "Queued").body("BulkResendIn");
        get "/v1/deliveries/{id}" log::get_delivery => op("Delivery log", "A delivery with every attempt", Admin, "Delivery");
        post "/v1/deliveries/{id}/resend" log::resend => op("Delivery log", "One manual attempt now", Admin, "Delivery");
        get "/v1/endpoints" endpoints::list_endpoints => op("Endpoints", "Endpoints with their health", Admin, "EndpointList");
        post "/v1/endpoints" endpoints::create_endpoint => op("Endpoints", "Create an endpoint", Admin, "Endpoint").body("EndpointIn").ok(201, Some("Endpoint"));
        get "/v1/endpoints/{id}" endpoints::get_endpoint => op("Endpoints", "An endpoint with its health", Admin, "Endpoint");
        patch "/v1/endpoints/{id}" endpoints::patch_endpoint => op("Endpoints", "Change an endpoint", Admin, "Endpoint").body("EndpointPatch");
        delete "/v1/endpoints/{id}" endpoints::delete_endpoint => op("Endpoints", "Delete an endpoint (its history stays)", Admin, "Text").ok(204, None);
        post "/v1/endpoints/{id}/secret/rotate" endpoints::rotate_endpoint_secret => op("Endpoints", "Rotate an endpoint's secret with an overlap", Admin, "EndpointSecret").body("EndpointSecretRotateIn");
        get "/v1/stats" charts::get_stats => op("Charts", "A chart series", Admin, "Stats").query(WINDOW);
        get "/v1/stats/overview" charts::get_overview => op("Charts", "The overview: series, rankings, backlog", Admin, "Overview").query(WINDOW);
        get "/v1/tenants" tenants::list_tenants => op("Tenants", "Tenants", Admin, "TenantList");
        post "/v1/tenants" tenants::create_tenant => op("Tenants", "Create a tenant (its secret is shown once)", Admin, "Tenant").body("TenantIn").ok(201, Some("Tenant"));
        get "/v1/tenants/{id}" tenants::get_tenant => op("Tenants", "A tenant", Tenant, "Tenant");
        patch "/v1/tenants/{id}" tenants::patch_tenant => op("Tenants", "Change a tenant", Admin, "Tenant").body("TenantPatch");
        delete "/v1/tenants/{id}" tenants::delete_tenant => op("Tenants", "Delete a tenant", Admin, "Text").ok(204, None);
        post "/v1/tenants/{id}/secret/rotate" tenants::rotate_secret => op("Tenants", "Rotate a tenant's secret", Tenant, "Tenant").body("SecretRotateIn");
        post "/v1/tenants/{id}/secret/reveal" tenants::reveal_secret => op("Tenants", "The secret that signs now", Tenant, "TenantSecret");
        post "/v1/tenants/{id}/events" events::create_tenant_event => op("Events", "Ingest an event for a tenant", Ingest, "EventAccepted").body("EventIn").ok(202, Some("EventAccepted"));
        get "/v1/tenants/{id}/endpoints" endpoints::tenant_list_endpoints => op("Tenants", "A tenant's endpoints", Tenant, "EndpointList");
        post "/v1/tenants/{id}/endpoints" endpoints::tenant_create_endpoint => op("Tenants", "Create a tenant's endpoint", Tenant, "Endpoint").body("EndpointIn").ok(201, Some("Endpoint"));
        get "/v1/tenants/{id}/endpoints/{endpoint}" endpoints::tenant_get_endpoint => op("Tenants", "A tenant's endpoint", Tenant, "Endpoint");
        patch "/v1/tenants/{id}/endpoints/{endpoint}" endpoints::tenant_patch_endpoint => op("Tenants", "Change a tenant's endpoint", Tenant, "Endpoint").body("EndpointPatch");
        delete "/v1/tenants/{id}/endpoints/{endpoint}" endpoints::tenant_delete_endpoint => op("Tenants", "Delete a tenant's endpoint", Tenant, "Text").ok(204, None);
        post "/v1/tenants/{id}/endpoints/{endpoint}/secret/rotate" endpoints::tenant_rotate_endpoint_secret => op("Tenants", "Rotate a tenant endpoint's secret", Tenant, "EndpointSecret").body("EndpointSecretRotateIn");
        post "/v1/tenants/{id}/endpoints/{endpoint}/test" tenants::test_send => op("Tenants", "Send a test event to one endpoint", Tenant, "TestSent").ok(202, Some("TestSent"));
        get "/v1/tenants/{id}/deliveries" tenants::tenant_deliveries => op("Tenants", "A tenant's deliveries", Tenant, "DeliveryPage").query(DELIVERY_FILTERS);
        get "/v1/tenants/{id}/deliveries/{delivery}" tenants::tenant_delivery => op("Tenants", "A tenant's delivery", Tenant, "Delivery");
        post "/v1/tenants/{id}/deliveries/{delivery}/resend" tenants::tenant_resend => op("Tenants", "Resend a tenant's delivery", Tenant, "Delivery");
        get "/v1/tenants/{id}/stats" charts::get_tenant_stats => op("Charts", "A tenant's chart series", Tenant, "Stats").query(WINDOW);
        get "/v1/tenants/{id}/stats/overview" charts::get_tenant_overview => op("Charts", "A tenant's overview", Tenant, "Overview").query(WINDOW);
        get "/v1/tenants/{id}/tokens" tenants::list_tokens => op("Tenants", "A tenant's tokens", Admin, "TokenList");
        post "/v1/tenants/{id}/tokens" tenants::create_token => op("Tenants", "Create a tenant token (shown once)", Admin, "Token").body("TokenIn").ok(201, Some("Token"));
        delete "/v1/tenants/{id}/tokens/{token}" tenants::revoke_token => op("Tenants", "Revoke a tenant token", Admin, "Text").ok(204, None);
        post "/v1/tenants/{id}/portal" tenants::create_portal_link => op("Tenants", "A one-time portal link", Admin, "PortalLink").body("TokenIn").ok(201, Some("PortalLink"));
        post "/v1/portal/session" tenants::portal_session => op("Tenants", "Exchange a portal code for a session token", PortalCode, "PortalSession").body("PortalSessionIn");
        post "/v1/admin/reload" admin::reload => op("Operations", "Reload the config file", Admin, "Reloaded");
        get "/v1/admin/orphaned-endpoints" endpoints::list_orphaned => op("Operations", "Endpoints whose tenant is gone", Admin, "EndpointList");
        delete "/v1/admin/orphaned-endpoints/{tenant}/{endpoint}" endpoints::delete_orphaned => op("Operations", "Remove an orphaned endpoint", Admin, "Text").ok(204, None);
        get "/metrics" admin::metrics => op("Operations", "Prometheus metrics", Open, "Text").media("text/plain");
        get "/healthz" admin::health => op("Operations", "Health (more with the admin token)", Open, "Health");
        get "/" admin::dashboard => op("Operations", "The dashboard", Open, "Text").media("text/html");
        get "/dashboard/charts.js" admin::charts_js => op("Operations", "The dashboard's charts", Open, "Text").media("text/javascript");
        get "/openapi.json" admin::openapi_json => op("Operations", "This document", Open, "Text");
        get "/docs" admin::reference => op("Operations", "The API reference page (offline)", Open, "Text").media("text/html");
        get "/docs/reference.js" admin::reference_js => op("Operations", "The reference page's script", Open, "Text").media("text/javascript");
    };
    let svix = routes! {
        get "/api/v1/app" apps::list_apps => op("Svix: applications", "List applications", Admin, "ListResponseApplicationOut").query(SVIX_PAGE);
        post "/api/v1/app" apps::create => op("Svix: applications", "Create an application", Admin, "ApplicationOut").body("ApplicationIn").ok(201, Some("ApplicationOut")).query(&[("get_if_exists", "Answer an existing application instead of 409.")]);
        get "/api/v1/app/{app}" apps::get => op("Svix: applications", "Get an application", Tenant, "ApplicationOut");
        put "/api/v1/app/{app}" apps::upsert => op("Svix: applications", "Update (or create) an application", Admin, "ApplicationOut").body("ApplicationIn");
        patch "/api/v1/app/{app}" apps::patch => op("Svix: applications", "Patch an application", Admin, "ApplicationOut").body("ApplicationPatch");
        delete "/api/v1/app/{app}" apps::delete => op("Svix: applications", "Delete an application", Admin, "Text").ok(204, None);
        get "/api/v1/app/{app}/endpoint" svix_endpoints::list_endpoints => op("Svix: endpoints", "List endpoints", Tenant, "ListResponseEndpointOut").query(SVIX_PAGE);
        post "/api/v1/app/{app}/endpoint" svix_endpoints::create => op("Svix: endpoints", "Create an endpoint", Tenant, "EndpointOut").body("EndpointInSvix").ok(201, Some("EndpointOut"));
        get "/api/v1/app/{app}/endpoint/{endpoint}" svix_endpoints::get => op("Svix: endpoints", "Get an endpoint", Tenant, "EndpointOut");
        put "/api/v1/app/{app}/endpoint/{endpoint}" svix_endpoints::update => op("Svix: endpoints", "Update an endpoint", Tenant, "EndpointOut").body("EndpointInSvix");
        patch "/api/v1/app/{app}/endpoint/{endpoint}" svix_endpoints::patch => op("Svix: endpoints", "Patch an endpoint", Tenant, "EndpointOut").body("EndpointPatchSvix");
        delete "/api/v1/app/{app}/endpoint/{endpoint}" svix_endpoints::delete => op("Svix: endpoints", "Delete an endpoint", Tenant, "Text").ok(204, None);
        get "/api/v1/app/{app}/endpoint/{endpoint}/secret" svix_endpoints::secret => op("Svix: endpoints", "Get an endpoint's secret", Tenant, "EndpointSecretOut");
        get "/api/v1/app/{app}/endpoint/{endpoint}/headers" svix_endpoints::get_headers => op("Svix: endpoints", "An endpoint's custom headers (sensitive values left out)", Tenant, "EndpointHeadersOut");
        put "/api/v1/app/{app}/endpoint/{endpoint}/headers" svix_endpoints::set_headers => op("Svix: endpoints", "Replace an endpoint's custom headers", Tenant, "Text").body("EndpointHeadersIn").ok(204, None);
        patch "/api/v1/app/{app}/endpoint/{endpoint}/headers" svix_endpoints::patch_headers => op("Svix: endpoints", "Add, change or remove custom headers", Tenant, "Text").body("EndpointHeadersIn").ok(204, None);
        post "/api/v1/app/{app}/endpoint/{endpoint}/secret/rotate" svix_endpoints::rotate_secret => op("Svix: endpoints", "Rotate an endpoint's secret", Tenant, "Text").body("EndpointSecretRotateInSvix").ok(204, None);
        get "/api/v1/app/{app}/msg" messages::list_messages => op("Svix: messages", "List messages, newest first", Tenant, "ListResponseMessageOut").query(&[("limit", "At most 250."), ("iterator", "The previous page's `iterator`."), ("event_types", "Only these types (comma-separated)."), ("channel", "Only messages sent to this channel."), ("before", "Created before this time."), ("after", "Created at or after this time.")]);
        post "/api/v1/app/{app}/msg" messages::create => op("Svix: messages", "Create a message", Admin, "MessageOut").body("MessageIn").ok(202, Some("MessageOut"));
        get "/api/v1/app/{app}/msg/{msg}" messages::get => op("Svix: messages", "Get a message", Tenant, "MessageOut");
        post "/api/v1/app/{app}/msg/{msg}/endpoint/{endpoint}/resend" attempts::resend => op("Svix: attempts", "Resend a message to an endpoint", Tenant, "EmptyResponse").ok(202, Some("EmptyResponse"));
        get "/api/v1/app/{app}/attempt/msg/{msg}" attempts::by_message => op("Svix: attempts", "A message's attempts", Tenant, "ListResponseMessageAttemptOut").query(&[("status", "0 success, 2 fail."), ("limit", "At most 250.")]);
        get "/api/v1/app/{app}/attempt/endpoint/{endpoint}" attempts::by_endpoint => op("Svix: attempts", "An endpoint's attempts", Tenant, "ListResponseMessageAttemptOut").query(&[("status", "0 success, 2 fail."), ("limit", "At most 250.")]);
        post "/api/v1/auth/app-portal-access/{app}" portal::access => op("Svix: authentication", "App portal access: a link and an application token", Admin, "AppPortalAccessOut").body("AppPortalAccessIn");
        get "/api/v1/event-type" event_types::list_types => op("Svix: event types", "List event types", Admin, "ListResponseEventTypeOut").query(&[("include_archived", "Archived ones too.")]);
        post "/api/v1/event-type" event_types::create => op("Svix: event types", "Create an event type", Admin, "EventTypeOut").body("EventTypeIn").ok(201, Some("EventTypeOut"));
        get "/api/v1/event-type/{name}" event_types::get => op("Svix: event types", "Get an event type", Admin, "EventTypeOut");
        put "/api/v1/event-type/{name}" event_types::update => op("Svix: event types", "Update (or create) an event type", Admin, "EventTypeOut").body("EventTypeIn");
        patch "/api/v1/event-type/{name}" event_types::patch => op("Svix: event types", "Patch an event type", Admin, "EventTypeOut").body("EventTypePatch");
        delete "/api/v1/event-type/{name}" event_types::archive => op("Svix: event types", "Archive an event type", Admin, "Text").ok(204, None);
    };
    native.extend(svix);
    native
}

/// The route table's descriptions, in order (for the document and the tests).
pub fn operations() -> Vec<Op> {
    table().into_iter().map(|(op, _)| op).collect()
}

/// The whole HTTP surface. Svix's paths answer with and without a trailing slash (the SDKs
/// differ); the document lists each once.
pub fn router(state: AppState) -> Router {
    let routes = table();
    let document = openapi::document(&routes.iter().map(|(op, _)| op.clone()).collect::<Vec<_>>());
    let state = AppState {
        openapi: std::sync::Arc::from(document.to_json().expect("the OpenAPI document serialises")),
        ..state
    };
    let replies = std::sync::Arc::new(api::svix::replay::Replies::default());
    let mut router = Router::new();
    for (op, mut handler) in routes {
        // Svix's POSTs replay a repeated idempotency key (messages do it durably themselves).
        if op.is_svix() && op.method == "post" && !op.path.ends_with("/msg") {
            handler = handler.layer(axum::middleware::from_fn_with_state(replies.clone(), api::svix::replay::replay));
        }
        if op.is_svix() {
            router = router.route(&format!("{}/", op.path), handler.clone());
        }
        router = router.route(op.path, handler);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::map_response(json_errors))
}
