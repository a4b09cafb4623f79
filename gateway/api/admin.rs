//! The operator's routes: `/healthz`, `POST /v1/admin/reload`, `/metrics`, the dashboard
//! page, and the API's description (`/openapi.json` and the reference page at `/docs`).
//!
//! Owns: what each of them shows, and that unauthenticated callers see only a status.
//! Must not touch: the stores' layout; it reads counts through `store`, `health` and `live`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, json_response};
use super::state::AppState;

/// `GET /healthz`: 200 while the store answers reads, 503 otherwise. Without the admin token
/// it says only that (and the config generation and whether the last reload applied): a load
/// balancer's probe needs no more, and the details (counts, a reload's error, which may quote
/// the config file) are for operators.
pub async fn health(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if st.admin(&headers).is_err() {
        // The cheapest read proves the store answers.
        return match st.store.ping().await {
            Ok(_) => json_response(
                StatusCode::OK,
                serde_json::json!({ "status": "ok", "config": config_status(&st, false) }).to_string(),
            ),
            Err(_) => unavailable(None),
        };
    }
    let counts = async {
        Ok::<_, crate::store::StoreError>((st.store.pending_count().await?, st.store.oldest_pending_ms().await?))
    };
    match counts.await {
        Ok((pending, oldest)) => {
            let stats = st.store.stats();
            let now = st.clock.now_ms();
            let body = serde_json::json!({
                "status": "ok",
                "pending_deliveries": pending,
                // How long the oldest pending delivery has waited: a backlog that only grows
                // shows here first.
                "oldest_pending_age_seconds": oldest.map(|ms| now.saturating_sub(ms) as f64 / 1000.0),
                // The group-commit factor is operations / commits.
                "store": {
                    "commits": stats.commits.load(std::sync::atomic::Ordering::Relaxed),
                    "operations": stats.operations.load(std::sync::atomic::Ordering::Relaxed),
                },
                "config": config_status(&st, true),
            });
            json_response(StatusCode::OK, body.to_string())
        }
        Err(e) => unavailable(Some(e.to_string())),
    }
}

/// `/healthz`'s 503, in the API's error shape; the store's own words only for the admin.
fn unavailable(detail: Option<String>) -> Response {
    let mut error = serde_json::json!({ "code": "store_unavailable", "message": "the store does not answer reads" });
    if let Some(d) = detail {
        error["detail"] = d.into();
    }
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({ "status": "unavailable", "error": error }).to_string(),
    )
}

/// The running config generation and the last reload, for `/healthz` and the reload answer.
/// A failed reload's message (which may quote the file) only with `details`.
fn config_status(st: &AppState, details: bool) -> serde_json::Value {
    let status = st.live.status();
    serde_json::json!({
        "generation": st.live.get().number,
        "last_reload_at": status.at_ms.map(crate::model::rfc3339),
        "last_reload": match (&status.at_ms, &status.error) {
            (None, _) => serde_json::Value::Null,
            (Some(_), None) => "ok".into(),
            (Some(_), Some(e)) if details => format!("failed: {e}").into(),
            (Some(_), Some(_)) => "failed".into(),
        },
    })
}

/// `POST /v1/admin/reload` (admin token): reads the config file again and applies it, as
/// `SIGHUP` does. 200 with what was applied (and which changed keys need a restart); 400 with
/// the key and line when the new file is invalid, the old config still running.
pub async fn reload(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    Ok(match st.reloader.reload().await {
        Ok(report) => json_response(
            StatusCode::OK,
            serde_json::json!({
                "generation": report.generation,
                "restart_required": report.restart_required,
                "endpoints": report.endpoints,
                "plugins": report.plugins,
            })
            .to_string(),
        ),
        Err(crate::live::ReloadError::Config(e)) => json_response(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": {
                "code": "invalid_config",
                "message": e.to_string(),
                "file": e.file,
                "line": e.line,
                "key": e.key,
            }})
            .to_string(),
        ),
        Err(e @ crate::live::ReloadError::Plugin(_)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_plugin", e.to_string()));
        }
        Err(e @ crate::live::ReloadError::NoFile) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "no_config_file", e.to_string()));
        }
        Err(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e.to_string())),
    })
}

// ---------------------------------------------------------------------------------------------
// Metrics and the dashboard.

/// `GET /metrics`: Prometheus text format. Counts only: no ids, payloads or secrets.
pub async fn metrics(State(st): State<AppState>) -> Response {
    let pending = st.store.pending_count().await.unwrap_or(0);
    let stats = st.store.stats();
    let gauges = crate::metrics::Gauges {
        pending,
        store_commits: stats.commits.load(std::sync::atomic::Ordering::Relaxed),
        store_operations: stats.operations.load(std::sync::atomic::Ordering::Relaxed),
        store_failed_commits: stats.failed_commits.load(std::sync::atomic::Ordering::Relaxed),
        cooling_down: st.dispatcher.cooling_down() as u64,
        db_file_bytes: st.store.file_size(),
        circuits_open: st.health.counts().0,
        endpoints_disabled: st.health.counts().1,
        plugins: st.live.get().plugins.as_ref().map(|p| p.stats()).unwrap_or_default(),
        config_generation: st.live.get().number,
        last_reload: st.live.status(),
        spans_dropped: st.telemetry.dropped(),
    };
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], st.metrics.render(&gauges))
        .into_response()
}

/// The dashboard page, embedded in the binary.
const DASHBOARD: &str = include_str!("dashboard.html");

/// `GET /`: the dashboard. The page holds no data; it asks for the admin token and reads
/// everything through the API with it.
pub async fn dashboard() -> Response {
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
            // Inline script and style only, API calls to this origin only, never framed (the
            // page has a Resend button), no forms or base-URL tricks.
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                 img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DASHBOARD,
    )
        .into_response()
}

/// `GET /dashboard/charts.js`: the dashboard's charts (plain SVG, no library), served by the
/// gateway itself so that the page needs no network beyond it.
pub async fn charts_js() -> Response {
    script(include_str!("charts.js"))
}

/// A script of ours, embedded in the binary.
fn script(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of every route (built from the route table).
pub async fn openapi_json(State(st): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json"), (axum::http::header::CACHE_CONTROL, "no-cache")],
        st.openapi.to_string(),
    )
        .into_response()
}

/// `GET /docs`: the API reference, a static page that draws `/openapi.json`. Everything it
/// needs is in the binary, so it works offline.
pub async fn reference() -> Response {
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ],
        include_str!("reference.html"),
    )
        .into_response()
}

/// `GET /docs/reference.js`: the reference page's script.
pub async fn reference_js() -> Response {
    script(include_str!("reference.js"))
}
