//! The error shape every handler answers with: a status and `{"error": {"code", "message"}}`.
//!
//! Owns: [`ApiError`] (it implements `IntoResponse`, so handlers return `Result<_, ApiError>`)
//! and [`json_response`]. It sits at the bottom of the handlers layer so that the handlers and
//! the HTTP surface above them (which rewrites axum's own refusals into this shape) share it.
//! Must not touch: anything but the response: no store, no state.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

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
