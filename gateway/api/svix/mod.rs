//! The Svix-compatible API (`/api/v1/…`): what Svix's SDKs call, answered by the same engine
//! as the native API. Applications are tenants, endpoints are endpoints, messages are events
//! delivered exactly as sent and signed with the message's id.
//!
//! Owns: Svix's conventions (camelCase bodies, `{code, detail}` errors, `{data, iterator,
//! prevIterator, done}` lists, `msg_` ids) and the translation of each call into the native
//! handlers' terms. `apps`, `endpoints` and `messages` hold the routes of each resource.
//! Must not touch: the stores or the engine directly: every write goes through a native
//! handler or `ingest`, so quotas, validation and the delivery log apply unchanged.
//!
//! Covered: applications, endpoints (with secret get and rotate), messages, attempts, resend,
//! event types and app portal access; what is not is listed in the README's "Coming from Svix".

pub mod apps;
pub mod attempts;
pub mod endpoints;
pub mod event_types;
pub mod messages;
pub mod portal;
pub mod replay;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;

/// An error in Svix's shape: `{"code", "detail"}`.
#[derive(Debug)]
pub struct SvixError {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
}

impl SvixError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> SvixError {
        SvixError { status, code: code.to_owned(), detail: detail.into() }
    }

    pub fn not_found(detail: impl Into<String>) -> SvixError {
        SvixError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn invalid(detail: impl Into<String>) -> SvixError {
        SvixError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
    }
}

impl From<ApiError> for SvixError {
    fn from(e: ApiError) -> SvixError {
        let code = match e.status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::UNAUTHORIZED => "authentication_failed",
            _ => e.code,
        };
        SvixError { status: e.status, code: code.to_owned(), detail: e.message }
    }
}

impl IntoResponse for SvixError {
    fn into_response(self) -> Response {
        let body = if self.status == StatusCode::UNPROCESSABLE_ENTITY {
            // Svix's validation errors: a list of `{loc, msg, type}`.
            json!({ "code": self.code, "detail": [{ "loc": ["body"], "msg": self.detail, "type": "value_error" }] })
        } else {
            json!({ "code": self.code, "detail": self.detail })
        };
        super::error::json_response(self.status, body.to_string())
    }
}

pub type Result<T> = std::result::Result<T, SvixError>;

/// A native handler's answer as its status and JSON body.
pub async fn native(r: std::result::Result<Response, ApiError>) -> Result<(StatusCode, Value)> {
    let response = r?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .map_err(|e| SvixError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// The request body as a JSON object (an empty body is an empty object).
pub fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(SvixError::invalid("the body must be a JSON object")),
        Err(e) => Err(SvixError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string())),
    }
}

/// A list answer of one page, as Svix's SDKs read it: `iterator` continues after the page
/// when `done` is false.
pub fn list_page(data: Vec<Value>, iterator: Option<String>) -> Response {
    let done = iterator.is_none();
    let body = json!({ "data": data, "iterator": iterator, "prevIterator": Value::Null, "done": done });
    super::error::json_response(StatusCode::OK, body.to_string())
}

/// A list answer of items that are all in hand: sorted by `id`, the page after `iterator` (an
/// id) of `limit` items (50 by default, at most 250).
pub fn list(mut data: Vec<Value>, q: &std::collections::HashMap<String, String>) -> Result<Response> {
    let limit = limit(q)?;
    data.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    if let Some(after) = q.get("iterator").filter(|i| !i.is_empty()) {
        data.retain(|v| v["id"].as_str().is_some_and(|id| id > after.as_str()));
    }
    let more = data.len() > limit;
    data.truncate(limit);
    let iterator = more.then(|| data.last().and_then(|v| v["id"].as_str()).map(str::to_owned)).flatten();
    Ok(list_page(data, iterator))
}

/// `?limit=`: 50 by default, at most 250 (Svix's bounds).
pub fn limit(q: &std::collections::HashMap<String, String>) -> Result<usize> {
    match q.get("limit").map(|l| l.parse::<usize>()) {
        None => Ok(50),
        Some(Ok(n)) if (1..=250).contains(&n) => Ok(n),
        Some(_) => Err(SvixError::invalid("`limit` must be a whole number from 1 to 250")),
    }
}

/// A JSON answer with `status`.
pub fn answer(status: StatusCode, v: Value) -> Response {
    super::error::json_response(status, v.to_string())
}

/// An RFC 3339 time from the native API, or the epoch for an object without one (the SDKs
/// require `createdAt` and `updatedAt`).
pub fn time_of(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        _ => Value::String("1970-01-01T00:00:00Z".into()),
    }
}

/// A string-to-string map from a native `metadata` object (Svix's metadata holds strings).
pub fn metadata_of(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.as_str().map_or_else(|| v.to_string(), str::to_owned))))
                .collect(),
        ),
        _ => json!({}),
    }
}
