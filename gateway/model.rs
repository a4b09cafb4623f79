//! The records that flow between stages: events, deliveries and their attempts.
//!
//! Owns: the shapes stored in redb (serialised with serde) and the small clock helpers every
//! stage stamps them with.
//! Must not touch: storage, HTTP or signing. Stages exchange these values; only `store` decides
//! how they are laid out on disk and only `api` how they look in JSON responses.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The tenant everything belongs to unless it says otherwise: `[signing]` and the config file's
/// endpoints without `tenant`, and every route without `/tenants/{id}`.
pub const DEFAULT_TENANT: &str = "default";

/// An accepted event, stored once however many endpoints receive it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    /// UUIDv7, so ids sort by arrival time.
    pub id: Uuid,
    pub received_at_ms: u64,
    pub trigger: String,
    /// The canonical JSON of the ingested object: resource fields, `trigger` and `data`.
    pub payload: String,
    /// Where in `payload` a delivery's `idempotency_key` member goes (see
    /// `json::canonical_with_slot`), so each delivery's envelope is built by splicing text.
    /// `None` in records written before it existed: the payload is parsed instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_slot: Option<usize>,
    pub delivery_ids: Vec<Uuid>,
    /// Endpoints the event was routed to but did not reach, and why (`endpoint_disabled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// The tenant it was ingested for; `None`: the default tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The W3C `traceparent` of its ingest span, when tracing is on: every attempt's span joins
    /// that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Set for a message of the Svix-compatible API: its deliveries send `payload` exactly as
    /// stored (no envelope, no `idempotency_key`) and are signed with the message's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageMeta>,
}

/// An event type of the Svix-compatible API: a name with a description and, optionally, JSON
/// Schemas per version. Stored by name; archiving keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventTypeRecord {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub deprecated: bool,
    /// JSON text of `{"<version>": <JSON Schema>}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_flags: Vec<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// What a Svix-compatible message adds to its event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MessageMeta {
    /// The producer's own id for the message (`eventId`), unique per application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

impl EventRecord {
    /// The id a Svix-compatible message is known by (`msg_` and the event id's hex), which its
    /// deliveries carry as `svix-id`/`webhook-id`.
    pub fn message_id(&self) -> String {
        format!("msg_{}", self.id.simple())
    }
}

/// An endpoint fan-out chose for an event but that got no delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub endpoint_id: String,
    pub reason: String,
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
    /// The FIFO queue this delivery waits in (its endpoint's `ordering = "fifo"`): the
    /// canonical value of the ordering key, or `""`. Only the oldest pending delivery of a
    /// queue is in the due index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fifo: Option<String>,
    /// The tenant of its event; `None`: the default tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl DeliveryRecord {
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }
}

impl DeliveryRecord {
    /// Attempts made by the retry schedule (manual resends do not use up retries).
    pub fn automatic_attempts(&self) -> u32 {
        self.attempts.iter().filter(|a| !a.manual).count() as u32
    }
}

impl DeliveryRecord {
    /// A new pending delivery of trigger `t`, due at `at_ms`: the fixture unit tests start from.
    #[cfg(test)]
    pub(crate) fn pending_for_test(event_id: Uuid, endpoint_id: &str, at_ms: u64) -> DeliveryRecord {
        DeliveryRecord {
            id: Uuid::now_v7(),
            event_id,
            endpoint_id: endpoint_id.into(),
            idempotency_key: Uuid::new_v4(),
            trigger: "t".into(),
            state: DeliveryState::Pending,
            created_at_ms: at_ms,
            next_attempt_at_ms: Some(at_ms),
            attempts: vec![],
            prepared: false,
            body: None,
            note: None,
            resource: vec![],
            requeued: false,
            fifo: None,
            tenant: None,
        }
    }
}

/// The most attempts one delivery may have, manual ones included (Attendee's cap).
pub const MAX_ATTEMPTS: usize = 50;

/// An endpoint created through the API, as stored. `Debug` leaves the secrets and header values out.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointRecord {
    /// The internal id (`tenant/id` outside the default tenant).
    pub id: String,
    /// `None`: the default tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub url: String,
    /// Trigger names, or `["*"]` for all.
    pub triggers: Vec<String>,
    /// (field, canonical JSON value) pairs of a resource-scoped endpoint.
    pub matches: Vec<(String, String)>,
    /// The endpoint's own signing secret as given (base64 or `whsec_`), if any.
    pub secret: Option<String>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// The secret a rotation replaced, which still signs beside `secret` until
    /// `previous_until_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until_ms: Option<u64>,
    /// What the endpoint is for, shown in the API (Svix's `description`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The API user's own key-value pairs (Svix's `metadata`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// When set, the endpoint receives only messages sent to at least one of these channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Extra headers sent with every delivery (never the signature or content headers).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl EndpointRecord {
    /// Every stored secret of the record (its own, the one a rotation replaced, and the custom
    /// headers' values, which often are a receiver's credentials), for sealing.
    pub fn secrets_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.secret.iter_mut().chain(self.previous_secret.iter_mut()).chain(self.headers.values_mut())
    }
}

/// An endpoint's health, as stored: its circuit, whether it is enabled, and its recent
/// results. Kept by `health`, persisted with the attempt that changed it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointHealth {
    pub endpoint_id: String,
    /// Set while the endpoint is disabled.
    #[serde(default)]
    pub disabled_at_ms: Option<u64>,
    #[serde(default)]
    pub circuit: Circuit,
    /// While `circuit` is `open`: no attempt before this.
    #[serde(default)]
    pub open_until_ms: u64,
    /// Opens since the circuit was last closed: the open period doubles with each.
    #[serde(default)]
    pub opens: u32,
    /// Failed attempts in a row of the kinds that open the circuit.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The first failed attempt since the last success (auto-disable counts from here).
    #[serde(default)]
    pub failing_since_ms: Option<u64>,
    #[serde(default)]
    pub last_success_at_ms: Option<u64>,
    #[serde(default)]
    pub last_failure_at_ms: Option<u64>,
    /// The last failed attempt's error kind and message.
    #[serde(default)]
    pub last_error: Option<AttemptError>,
    /// Increases with every change, so a late write of an older snapshot cannot win.
    #[serde(default)]
    pub version: u64,
    /// The last [`HEALTH_HISTORY`] circuit and enabled/disabled changes, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HealthChange>,
}

/// How many health changes an endpoint remembers.
pub const HEALTH_HISTORY: usize = 20;

/// One change of an endpoint's circuit or enabled state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthChange {
    pub at_ms: u64,
    /// `circuit_opened`, `circuit_closed`, `disabled` or `enabled`.
    pub change: String,
    /// Why, in words: the failure that opened the circuit, "by hand", ...
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// A tenant created through the API, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TenantRecord {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// JSON text of an object.
    #[serde(default)]
    pub metadata: Option<String>,
    /// Newest first; the first without `retired_at_ms` signs, retired ones sign during the
    /// rotation overlap.
    pub secrets: Vec<StoredSecret>,
    #[serde(default)]
    pub max_endpoints: Option<usize>,
    #[serde(default)]
    pub max_events_per_second: Option<u32>,
    pub created_at_ms: u64,
}

/// `Debug` leaves the secret out.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredSecret {
    /// `whsec_...`
    pub secret: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub retired_at_ms: Option<u64>,
}

/// What `Debug` shows of a secret: whether there is one, never its text (records are logged
/// with `{:?}` in errors and traces).
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("secret", &REDACTED)
            .field("created_at_ms", &self.created_at_ms)
            .field("retired_at_ms", &self.retired_at_ms)
            .finish()
    }
}

impl std::fmt::Debug for EndpointRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("triggers", &self.triggers)
            .field("matches", &self.matches)
            .field("secret", &self.secret.as_ref().map(|_| REDACTED))
            .field("created_at_ms", &self.created_at_ms)
            .field("rate_limit", &self.rate_limit)
            .field("ordering", &self.ordering)
            .field("ordering_key", &self.ordering_key)
            .field("previous_secret", &self.previous_secret.as_ref().map(|_| REDACTED))
            .field("previous_until_ms", &self.previous_until_ms)
            .field("description", &self.description)
            .field("metadata", &self.metadata)
            .field("channels", &self.channels)
            // Custom headers often carry a receiver's credentials: names only.
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A bearer token scoped to one tenant, as stored: only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    /// `tok_...`, for listing and revoking.
    pub id: String,
    pub tenant: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// Made by a portal link (short-lived) rather than by an admin.
    #[serde(default)]
    pub portal: bool,
}

/// Why a delivery ended before any attempt: a plugin's verdict, or (with `kind`) a record the
/// gateway could not read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PluginNote {
    /// The plugin that dropped or failed it; empty when no plugin was involved.
    pub plugin: String,
    /// The drop reason (state `filtered`) or the error message (state `failed`).
    pub message: String,
    /// The error kind of a failure; `None` means `plugin` (records from before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
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
    /// The endpoint's tenant no longer exists, so there is no key of its own to sign with (and
    /// another tenant's is never used). Never retried; resendable once the tenant is back.
    TenantGone,
    /// A plugin trapped, ran out of time or memory, returned an error or an invalid body.
    Plugin,
    /// The gateway could not read the delivery's stored event. Never retried.
    Internal,
    /// The endpoint was disabled (by hand, or after failing for `delivery.disable_after`)
    /// while the delivery was pending.
    EndpointDisabled,
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
            ErrorKind::TenantGone => "tenant_gone",
            ErrorKind::Plugin => "plugin",
            ErrorKind::Internal => "internal",
            ErrorKind::EndpointDisabled => "endpoint_disabled",
        }
    }

    /// Whether another attempt could succeed where this one failed.
    pub fn is_retryable(self) -> bool {
        !matches!(
            self,
            ErrorKind::Blocked
                | ErrorKind::EndpointGone
                | ErrorKind::TenantGone
                | ErrorKind::Plugin
                | ErrorKind::Internal
                | ErrorKind::EndpointDisabled
        )
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T05:49:00.123Z`.
pub fn rfc3339(ms: u64) -> String {
    match i64::try_from(ms).ok().and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) {
        Some(ts) => format!("{ts:.3}"),
        // Beyond jiff's range (year 9999): no real timestamp is out there.
        None => format!("@{ms}ms"),
    }
}

/// The latest time the log can hold: ids carry 48 bits of epoch milliseconds.
pub const MAX_TIME_MS: u64 = (1 << 48) - 1;

/// Parses a time given by a user into epoch milliseconds: RFC 3339 with an offset
/// (`2026-11-23T05:49:00Z`, `...00.123+01:00`), a calendar date (`2026-11-23`, midnight UTC) or
/// epoch milliseconds. Impossible dates (`2023-02-31`) are refused, not rolled over. The error
/// says what was expected, for a 400 that names the parameter.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    const EXPECTED: &str = "an RFC 3339 time (2026-11-23T10:00:00Z), a date (2026-11-23) or epoch milliseconds";
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = t.parse().map_err(|_| format!("{t:?} is too large for epoch milliseconds"))?;
        // Ids carry their time in 48 bits of milliseconds (UUIDv7): a later time cannot be
        // asked about, and must not wrap around to an early one.
        if ms > MAX_TIME_MS {
            return Err(format!("{t:?} is after the latest time the log can hold ({MAX_TIME_MS}, in the year 10889)"));
        }
        return Ok(ms);
    }
    // A calendar date is midnight UTC; jiff checks that the date exists either way.
    let full = if t.len() == 10 { format!("{t}T00:00:00Z") } else { t.to_owned() };
    let ts: jiff::Timestamp = full.parse().map_err(|e| format!("{t:?} is not {EXPECTED}: {e}"))?;
    let ms = ts.as_millisecond();
    u64::try_from(ms).map_err(|_| format!("{t:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::{parse_time, rfc3339};

    #[test]
    fn parse_time_reads_rfc3339_dates_and_epoch_ms() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000, 4_102_444_800_000] {
            assert_eq!(parse_time(&rfc3339(ms)), Ok(ms));
        }
        assert_eq!(parse_time("2023-11-14T23:13:20.123+01:00"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("281474976710655"), Ok(super::MAX_TIME_MS));
        assert_eq!(parse_time("2000-02-29"), Ok(951_782_400_000));
        for bad in ["", "yesterday", "2023-13-01T00:00:00Z", "2023-11-14T22:13:20", "2023-11-14T22:13:20.Z"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    /// Found in review: a multi-byte character where the offset goes panicked the handler, and
    /// impossible dates rolled over into the next month.
    #[test]
    fn parse_time_refuses_garbage_and_impossible_dates_without_panicking() {
        for bad in [
            "2023-11-14T22:13:20+a\u{20ac}b",
            "2023-02-31",
            "2023-02-31T00:00:00Z",
            "2023-11-14T22:13:20+\u{20ac}",
            "1969-12-31T23:59:59Z",
            "99999999999999999999999",
            "281474976710656",
            "18446744073709551615",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let stored =
            super::StoredSecret { secret: "whsec_c2VjcmV0LXRleHQ=".into(), created_at_ms: 1, retired_at_ms: None };
        let tenant = super::TenantRecord {
            id: "acme".into(),
            name: None,
            metadata: None,
            secrets: vec![stored],
            max_endpoints: None,
            max_events_per_second: None,
            created_at_ms: 1,
        };
        let endpoint = super::EndpointRecord {
            id: "e".into(),
            tenant: None,
            url: "https://h.example/".into(),
            triggers: vec!["*".into()],
            matches: vec![],
            secret: Some("whsec_c2VjcmV0LXRleHQ=".into()),
            created_at_ms: 1,
            rate_limit: None,
            ordering: None,
            ordering_key: None,
            previous_secret: None,
            previous_until_ms: None,
            headers: [("authorization".to_owned(), "Bearer c2VjcmV0".to_owned())].into(),
            ..Default::default()
        };
        for shown in [format!("{tenant:?}"), format!("{endpoint:?}"), format!("{endpoint:#?}")] {
            assert!(!shown.contains("c2VjcmV0"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
