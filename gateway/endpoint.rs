//! What an endpoint is, and the one set of rules it must pass, wherever it comes from.
//!
//! Owns: [`Endpoint`] and its parts, and [`validate`], which both the config file (`config`)
//! and the API (`endpoints`) call after turning their own syntax (TOML, JSON) into an
//! [`EndpointSpec`]. Keeping one validator is what keeps the two doors from drifting apart.
//! Must not touch: parsing of TOML or JSON bodies, storage, HTTP.

use crate::json;
use crate::sign::Secret;

/// Keys the gateway writes into every envelope or reads from every event; a producer may not
/// supply them as resource fields, and an endpoint may not match on them.
pub const RESERVED_FIELDS: &[&str] = &["idempotency_key", "trigger", "data"];

/// The name the gateway knows a tenant's endpoint by: its id for the `default` tenant (as
/// before tenants existed), `tenant/id` for any other. Ids cannot contain `/`, so this is
/// unique; deliveries, the due index, health and FIFO queues are keyed by it.
pub fn internal_id(tenant: &str, id: &str) -> String {
    if tenant == crate::model::DEFAULT_TENANT { id.to_owned() } else { format!("{tenant}/{id}") }
}

/// The tenant and the tenant's own id of an internal endpoint id.
pub fn split_id(internal: &str) -> (&str, &str) {
    internal.split_once('/').unwrap_or((crate::model::DEFAULT_TENANT, internal))
}

/// A subscriber of events.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The internal id ([`internal_id`]).
    pub id: String,
    /// The tenant it belongs to; its events are the only ones it receives.
    pub tenant: String,
    pub url: url::Url,
    pub triggers: Triggers,
    /// Resource fields that must equal the event's for it to be delivered here. A non-empty
    /// match makes this a resource-scoped (e.g. bot-level) endpoint.
    pub matches: Vec<(String, json::Value)>,
    /// Overrides `[signing]` for this endpoint; previous secrets then do not apply.
    pub secret: Option<Secret>,
    /// The secret a rotation of `secret` replaced, and until when it signs beside it.
    pub previous_secret: Option<(Secret, u64)>,
    /// Plugins run for this endpoint's deliveries, after the trigger's chain.
    pub plugins: Vec<String>,
    /// Where the endpoint was defined. Config endpoints are read-only through the API.
    pub origin: Origin,
    /// Attempts to this endpoint never exceed this rate.
    pub rate_limit: Option<RateLimit>,
    /// Set for `ordering = "fifo"`: deliveries with the same key are attempted one at a time,
    /// in ingest order.
    pub fifo: Option<Fifo>,
    /// When not empty, only messages sent to one of these channels reach the endpoint.
    pub channels: Vec<String>,
    /// What the endpoint is for, and the API user's own key-value pairs (shown, never used).
    pub description: String,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Extra headers sent with every delivery ([`check_headers`] keeps out the ones the
    /// gateway sets).
    pub headers: Vec<(String, String)>,
}

/// Headers a custom header may not set: the gateway's own (content, signatures) and those
/// HTTP itself manages.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "user-agent",
    "x-webhook-signature",
    "te",
    "upgrade",
    "expect",
    "traceparent",
];

/// Checks an endpoint's custom headers: at most 20, names HTTP tokens that are not the
/// gateway's own (nor `webhook-*` or `svix-*`), values visible ASCII of at most 4 KiB.
pub fn check_headers(headers: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > 20 {
        return Err("`headers`: at most 20 custom headers".into());
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let token =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!("`headers`: {name:?} is not a header name"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") || lower.starts_with("svix-") {
            return Err(format!("`headers`: {name:?} is set by the gateway and cannot be overridden"));
        }
        if value.len() > 4096 || !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(format!("`headers`: the value of {name:?} must be printable ASCII of at most 4 KiB"));
        }
        // Values are sealed at rest like secrets; one that looks sealed already would not be.
        if crate::seal::is_sealed(value) {
            return Err(format!("`headers`: the value of {name:?} cannot start with \"sealed:\""));
        }
    }
    Ok(())
}

/// Checks an endpoint's channels: at most 10, each 1 to 128 of `a-z A-Z 0-9 - _ . :` (Svix's
/// rule).
pub fn check_channels(channels: &[String]) -> Result<(), String> {
    if channels.len() > 10 {
        return Err("`channels`: at most 10".into());
    }
    for c in channels {
        if c.is_empty() || c.len() > 128 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
            return Err(format!("`channels`: {c:?} must be 1 to 128 of a-z, A-Z, 0-9, '-', '_', '.', ':'"));
        }
    }
    Ok(())
}

/// `rate_limit = "50/s"` or `"600/m"`: a token bucket holding at most one second's worth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// How many per `per`.
    pub count: u32,
    pub per: RatePer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePer {
    Second,
    Minute,
}

impl RateLimit {
    /// The largest `N` in `N/s` or `N/m`.
    pub const MAX: u32 = 1_000_000;

    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let expected = || format!("{text:?} must be N/s or N/m with N from 1 to {}, e.g. \"50/s\"", RateLimit::MAX);
        let (n, unit) = text.trim().split_once('/').ok_or_else(expected)?;
        let count: u32 = n.trim().parse().ok().filter(|n| (1..=RateLimit::MAX).contains(n)).ok_or_else(expected)?;
        let per = match unit.trim() {
            "s" => RatePer::Second,
            "m" => RatePer::Minute,
            _ => return Err(expected()),
        };
        Ok(RateLimit { count, per })
    }

    /// Attempts per second.
    pub fn per_second(&self) -> f64 {
        match self.per {
            RatePer::Second => f64::from(self.count),
            RatePer::Minute => f64::from(self.count) / 60.0,
        }
    }

    /// The bucket's size: one second's worth, at least one attempt.
    pub fn burst(&self) -> f64 {
        self.per_second().max(1.0)
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per {
            RatePer::Second => "s",
            RatePer::Minute => "m",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Per-key FIFO ordering of an endpoint's deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fifo {
    /// The resource field whose value names the queue; `None`: one queue for the endpoint.
    pub key: Option<String>,
}

impl Fifo {
    /// The queue a delivery of an event with these resource fields joins. Events without the
    /// key field share the queue named by the empty string.
    pub fn queue_of(&self, resource: &[(String, String)]) -> String {
        match &self.key {
            None => String::new(),
            Some(k) => resource.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Config,
    Api { created_at_ms: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Triggers {
    All,
    Only(Vec<String>),
}

impl Triggers {
    pub fn contains(&self, trigger: &str) -> bool {
        match self {
            Triggers::All => true,
            Triggers::Only(list) => list.iter().any(|t| t == trigger),
        }
    }
}

impl Endpoint {
    /// The id within its tenant, as the tenant's routes show it.
    pub fn local_id(&self) -> &str {
        split_id(&self.id).1
    }
}

impl std::fmt::Display for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Triggers::All => f.write_str("*"),
            Triggers::Only(list) => f.write_str(&list.join(", ")),
        }
    }
}

/// An endpoint as a user wrote it, in the file or in an API body, before validation. Values
/// that are not even of the right JSON/TOML type are refused by the caller's own syntax layer;
/// everything else is decided by [`validate`].
#[derive(Debug, Clone, Default)]
pub struct EndpointSpec {
    pub id: String,
    pub url: String,
    pub triggers: Vec<String>,
    /// `None`: no `match` given. `Some(empty)` is refused: it would silently mean "unscoped".
    pub matches: Option<Vec<(String, json::Value)>>,
    pub secret: Option<String>,
    pub rate_limit: Option<String>,
    /// Only `"fifo"` is an ordering.
    pub ordering: Option<String>,
    pub ordering_key: Option<String>,
}

/// A rule an [`EndpointSpec`] broke: the field (`url`, `match.bot_id`, ...) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

/// The validated parts of an endpoint (plugins and origin are the caller's business).
#[derive(Debug, Clone)]
pub struct ValidSpec {
    pub id: String,
    pub url: url::Url,
    pub triggers: Triggers,
    pub matches: Vec<(String, json::Value)>,
    pub secret: Option<Secret>,
    pub rate_limit: Option<RateLimit>,
    pub fifo: Option<Fifo>,
}

/// Whether a trigger name is well formed: 1–128 characters of `[a-z0-9_.-]`.
pub fn valid_trigger(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Whether an endpoint id is well formed: 1–64 characters of `[A-Za-z0-9_.-]`.
pub fn valid_endpoint_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The rules every endpoint follows, from the file or the API alike.
pub fn validate(spec: EndpointSpec, allow_http: bool) -> Result<ValidSpec, SpecError> {
    let fail = |field: &str, message: String| SpecError { field: field.to_owned(), message };
    if !valid_endpoint_id(&spec.id) {
        return Err(fail("id", format!("{:?} must be 1-64 characters of letters, digits, '_', '.', '-'", spec.id)));
    }
    let url = validate_url(&spec.url, allow_http).map_err(|m| fail("url", m))?;
    if spec.triggers.is_empty() {
        return Err(fail("triggers", "must list at least one trigger (or \"*\" for all)".into()));
    }
    let triggers = if spec.triggers.iter().any(|t| t == "*") {
        Triggers::All
    } else if let Some(bad) = spec.triggers.iter().find(|t| !valid_trigger(t)) {
        return Err(fail(
            "triggers",
            format!("{bad:?} is not a trigger: use 1-128 characters of a-z, 0-9, '_', '.', '-'"),
        ));
    } else {
        Triggers::Only(spec.triggers)
    };
    let matches = match spec.matches {
        None => Vec::new(),
        Some(m) if m.is_empty() => {
            return Err(fail("match", "must name at least one field, or be left out".into()));
        }
        Some(m) => {
            for (field, value) in &m {
                let key = format!("match.{field}");
                if field.is_empty() || field.len() > 128 {
                    return Err(fail("match", "field names must be 1-128 characters".into()));
                }
                if RESERVED_FIELDS.contains(&field.as_str()) {
                    return Err(fail(&key, "cannot match on a reserved field".into()));
                }
                // Floats are refused: an event's 1.0 and a match's 1 are the same number to a
                // producer but not to an equality test on canonical text.
                let scalar = matches!(
                    value,
                    json::Value::String(_) | json::Value::Bool(_) | json::Value::Number(json::Number::Int(_))
                );
                if !scalar {
                    let kind = match value {
                        json::Value::Number(_) => "a float",
                        other => other.kind(),
                    };
                    return Err(fail(&key, format!("must be a string, integer or boolean, not {kind}")));
                }
            }
            m
        }
    };
    let secret = match spec.secret {
        None => None,
        Some(text) => Some(Secret::parse(&text).map_err(|e| fail("secret", format!("the secret {e}")))?),
    };
    let rate_limit = spec.rate_limit.as_deref().map(RateLimit::parse).transpose().map_err(|m| fail("rate_limit", m))?;
    let fifo = match (spec.ordering.as_deref(), spec.ordering_key) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(fail("ordering_key", "needs `ordering = \"fifo\"`: a key orders nothing on its own".into()));
        }
        (Some("fifo"), key) => {
            if let Some(k) = &key
                && (k.is_empty() || k.len() > 128 || RESERVED_FIELDS.contains(&k.as_str()))
            {
                return Err(fail(
                    "ordering_key",
                    format!("{k:?} must be a resource field name of 1-128 characters, not a reserved field"),
                ));
            }
            Some(Fifo { key })
        }
        (Some(other), _) => {
            return Err(fail("ordering", format!("{other:?} is not an ordering; the only one is \"fifo\"")));
        }
    };
    Ok(ValidSpec { id: spec.id, url, triggers, matches, secret, rate_limit, fifo })
}

/// Checks an endpoint URL: absolute, http(s) with a host, no credentials, https unless allowed.
pub fn validate_url(text: &str, allow_http: bool) -> Result<url::Url, String> {
    // Messages show the URL without its userinfo: after `${ENV}` expansion it may hold a
    // password, and these messages reach logs and API answers.
    let shown = without_userinfo(text);
    let url = url::Url::parse(text).map_err(|e| format!("{shown:?} is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(format!("{shown:?} uses http://; only https:// is allowed unless delivery.allow_http = true"));
        }
        other => return Err(format!("{shown:?} has scheme {other:?}; use https://")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{shown:?} carries credentials; put secrets in the endpoint's secret, not its URL"));
    }
    Ok(url)
}

/// A URL (or what was meant as one) with anything between `//` and the host's `@` replaced by
/// `***`, so that no message shows a password.
pub fn without_userinfo(text: &str) -> String {
    let (prefix, rest) = match text.find("//") {
        Some(i) => text.split_at(i + 2),
        None => ("", text),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{prefix}***{}", &rest[at..]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EndpointSpec {
        EndpointSpec {
            id: "acme".into(),
            url: "https://hooks.example/x".into(),
            triggers: vec!["bot.state_change".into()],
            matches: None,
            secret: None,
            ..EndpointSpec::default()
        }
    }

    #[test]
    fn messages_never_show_userinfo() {
        for text in ["https://user:pa55word@hooks.example/x", "ftp://user:pa55word@hooks.example", "user:pa55word@host"]
        {
            let e = validate_url(text, false).unwrap_err();
            assert!(!e.contains("pa55word"), "{e}");
        }
        assert_eq!(without_userinfo("https://u:p@h.example/a@b"), "https://***@h.example/a@b");
        assert_eq!(without_userinfo("https://h.example/a@b"), "https://h.example/a@b");
    }

    #[test]
    fn one_set_of_rules() {
        assert!(validate(spec(), false).is_ok());
        let bad: Vec<(EndpointSpec, &str, &str)> = vec![
            (EndpointSpec { id: "a b".into(), ..spec() }, "id", "1-64"),
            (EndpointSpec { url: "http://x.example".into(), ..spec() }, "url", "https"),
            (EndpointSpec { triggers: vec![], ..spec() }, "triggers", "at least one"),
            (EndpointSpec { triggers: vec!["Bad".into()], ..spec() }, "triggers", "not a trigger"),
            (EndpointSpec { matches: Some(vec![]), ..spec() }, "match", "at least one field"),
            (
                EndpointSpec {
                    matches: Some(vec![("n".into(), json::Value::Number(json::Number::Float(1.5)))]),
                    ..spec()
                },
                "match.n",
                "not a float",
            ),
            (
                EndpointSpec { matches: Some(vec![("trigger".into(), json::Value::Bool(true))]), ..spec() },
                "match.trigger",
                "reserved",
            ),
            (
                EndpointSpec { matches: Some(vec![("o".into(), json::Value::Array(vec![]))]), ..spec() },
                "match.o",
                "an array",
            ),
            (EndpointSpec { secret: Some("short".into()), ..spec() }, "secret", "secret"),
            (EndpointSpec { rate_limit: Some("50/h".into()), ..spec() }, "rate_limit", "N/s or N/m"),
            (EndpointSpec { rate_limit: Some("0/s".into()), ..spec() }, "rate_limit", "N/s or N/m"),
            (EndpointSpec { rate_limit: Some("-5/s".into()), ..spec() }, "rate_limit", "N/s or N/m"),
            (EndpointSpec { ordering_key: Some("bot_id".into()), ..spec() }, "ordering_key", "fifo"),
            (EndpointSpec { ordering: Some("lifo".into()), ..spec() }, "ordering", "not an ordering"),
            (
                EndpointSpec { ordering: Some("fifo".into()), ordering_key: Some("data".into()), ..spec() },
                "ordering_key",
                "reserved",
            ),
        ];
        for (s, field, needle) in bad {
            let e = validate(s, false).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
        let ok = EndpointSpec {
            matches: Some(vec![
                ("bot_id".into(), json::Value::String("b".into())),
                ("n".into(), json::Value::Number(json::Number::Int("3".into()))),
            ]),
            ..spec()
        };
        assert_eq!(validate(ok, false).unwrap().matches.len(), 2);
        let ok = EndpointSpec {
            rate_limit: Some("120/m".into()),
            ordering: Some("fifo".into()),
            ordering_key: Some("bot_id".into()),
            ..spec()
        };
        let v = validate(ok, false).unwrap();
        assert_eq!(v.rate_limit.unwrap().per_second(), 2.0);
        assert_eq!(v.rate_limit.unwrap().to_string(), "120/m");
        assert_eq!(v.fifo.unwrap().queue_of(&[("bot_id".into(), "\"b1\"".into())]), "\"b1\"");
        assert_eq!(RateLimit::parse("30/m").unwrap().burst(), 1.0);
    }
}
