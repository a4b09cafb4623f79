//! The records that flow between stages: events, deliveries and their attempts.
//!
//! Owns: the shapes stored in redb (serialised with serde) and the small clock helpers every
//! stage stamps them with.
//! Must not touch: storage, HTTP or signing. Stages exchange these values; only `store` decides
//! how they are laid out on disk and only `api` how they look in JSON responses.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An accepted event, stored once however many endpoints receive it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    /// UUIDv7, so ids sort by arrival time.
    pub id: Uuid,
    pub received_at_ms: u64,
    pub trigger: String,
    /// The canonical JSON of the ingested object: resource fields, `trigger` and `data`.
    pub payload: String,
    pub delivery_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt at `next_attempt_at`.
    Pending,
    Succeeded,
    /// Out of attempts, or failed permanently (a blocked address, a gone endpoint, a plugin
    /// error).
    Failed,
    /// A plugin dropped it; nothing was sent. The note says which plugin and why.
    Filtered,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
            DeliveryState::Filtered => "filtered",
        }
    }
}

/// One (event, endpoint) pair and its history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryRecord {
    /// UUIDv7, so ids sort by creation time.
    pub id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: String,
    /// UUIDv4 sent as the envelope's `idempotency_key` and as `webhook-id`; stable across retries.
    pub idempotency_key: Uuid,
    pub trigger: String,
    pub state: DeliveryState,
    pub created_at_ms: u64,
    /// Set exactly when `state` is `Pending`; the store's due index is keyed by it.
    pub next_attempt_at_ms: Option<u64>,
    pub attempts: Vec<AttemptRecord>,
    /// Whether the plugin chain has run (it runs once, before the first attempt).
    #[serde(default)]
    pub prepared: bool,
    /// The body a transform produced (canonical JSON). `None`: the envelope is sent as is.
    /// Stored so every retry sends and signs the same bytes.
    #[serde(default)]
    pub body: Option<String>,
    /// Why the delivery ended without an attempt: filtered, or failed in a plugin.
    #[serde(default)]
    pub note: Option<PluginNote>,
}

/// A plugin's verdict that ended a delivery before any attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PluginNote {
    pub plugin: String,
    /// The drop reason (state `filtered`) or the error message (state `failed`).
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    pub started_at_ms: u64,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<AttemptError>,
    /// The first bytes of the response body (lossy UTF-8), at most `deliver::RESPONSE_BODY_LIMIT`.
    pub response_body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Why an attempt failed. The names are part of the API.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The attempt did not finish within `delivery.timeout`.
    Timeout,
    /// DNS failed or no connection could be made (including TLS handshakes).
    Connect,
    /// The receiver answered with a status outside 2xx (redirects included).
    Status,
    /// The target is not allowed: a private address or a refused scheme. Never retried.
    Blocked,
    /// The request failed after connecting (reset, malformed response).
    Request,
    /// The endpoint no longer exists in the configuration. Never retried.
    EndpointGone,
    /// A plugin trapped, ran out of time or memory, returned an error or an invalid body.
    Plugin,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Status => "status",
            ErrorKind::Blocked => "blocked",
            ErrorKind::Request => "request",
            ErrorKind::EndpointGone => "endpoint_gone",
            ErrorKind::Plugin => "plugin",
        }
    }

    /// Whether another attempt could succeed where this one failed.
    pub fn is_retryable(self) -> bool {
        !matches!(
            self,
            ErrorKind::Blocked | ErrorKind::EndpointGone | ErrorKind::Plugin
        )
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T05:49:00.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant), valid for every date after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
