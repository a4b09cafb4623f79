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
    /// The event's scalar resource fields (`bot_id`, `calendar_id`, ...) as (name, canonical
    /// JSON value): indexed for filtering and shown in listings.
    #[serde(default)]
    pub resource: Vec<(String, String)>,
    /// Put back in the queue by a bulk resend: its next attempt is a manual one, and a failure
    /// ends it again instead of starting a new retry schedule.
    #[serde(default)]
    pub requeued: bool,
}

impl DeliveryRecord {
    /// Attempts made by the retry schedule (manual resends do not use up retries).
    pub fn automatic_attempts(&self) -> u32 {
        self.attempts.iter().filter(|a| !a.manual).count() as u32
    }
}

/// The most attempts one delivery may have, manual ones included (Attendee's cap).
pub const MAX_ATTEMPTS: usize = 50;

/// An endpoint created through the API, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointRecord {
    pub id: String,
    pub url: String,
    /// Trigger names, or `["*"]` for all.
    pub triggers: Vec<String>,
    /// (field, canonical JSON value) pairs of a resource-scoped endpoint.
    pub matches: Vec<(String, String)>,
    /// The endpoint's own signing secret as given (base64 or `whsec_`), if any.
    pub secret: Option<String>,
    pub created_at_ms: u64,
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
    /// Made by a resend request rather than the retry schedule.
    #[serde(default)]
    pub manual: bool,
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
        !matches!(self, ErrorKind::Blocked | ErrorKind::EndpointGone | ErrorKind::Plugin)
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// Parses RFC 3339 (`2026-11-23T05:49:00Z`, `...00.123+01:00`) or epoch milliseconds into epoch
/// milliseconds.
pub fn parse_time(text: &str) -> Option<u64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let b = t.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits].chars().chain("000".chars()).take(3).collect();
        millis = ms.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 60 + rest[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days-from-civil (Howard Hinnant).
    let (yy, mm) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_time_reads_rfc3339_and_epoch_ms() {
        use super::{parse_time, rfc3339};
        for ms in [0, 1_700_000_000_123, 951_782_400_000, 4_102_444_800_000] {
            assert_eq!(parse_time(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(parse_time("2023-11-14T23:13:20.123+01:00"), Some(1_700_000_000_123));
        assert_eq!(parse_time("1700000000123"), Some(1_700_000_000_123));
        for bad in ["", "yesterday", "2023-13-01T00:00:00Z", "2023-11-14T22:13:20", "2023-11-14T22:13:20.Z"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
