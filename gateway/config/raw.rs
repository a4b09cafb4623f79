//! The raw layer of the configuration: the TOML as written, every value `Spanned`, the
//! defaults laid under it, and the helpers that turn a raw value into a typed one with an error
//! naming the key and the line.
//!
//! Owns: the shape of the file (`deny_unknown_fields` everywhere, so a typo is an error) and
//! `Ctx`, which phrases errors.
//! Must not touch: the meaning of values; `config` decides what is valid.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Token, parse_duration};
use crate::sign::Secret;

/// Declares a config section whose every key is optional and spanned, and `over`, which lays
/// the user's values over the defaults. Defaults get an empty span so errors about them name no
/// line of the user's file.
macro_rules! section {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $( #[serde(default)] pub(super) $field: Option<Spanned<$ty>>, )*
        }
        impl $name {
            pub(super) fn over(self, base: Self) -> Self {
                Self { $( $field: self.$field.or(base.$field.map(from_default)), )* }
            }
        }
    };
}

fn from_default<T>(s: Spanned<T>) -> Spanned<T> {
    Spanned::new(usize::MAX..usize::MAX, s.into_inner())
}

section!(RawServer {
    listen: String,
    data_dir: String,
    max_body_bytes: i64,
    shutdown_grace: String,
    cache_size: String,
    max_connections: i64,
    header_read_timeout: String,
    request_body_timeout: String,
    keep_alive_timeout: String,
    public_url: String,
    log_format: String,
});
section!(RawAuth { ingest_tokens: Vec<String>, admin_tokens: Vec<String> });
section!(RawSigning { secret: String, previous_secrets: Vec<String>, rotation_overlap: String, main_key: String });
section!(RawDelivery {
    timeout: String,
    max_retries: i64,
    backoff_initial: String,
    backoff_multiplier: f64,
    backoff_max: String,
    jitter: f64,
    max_in_flight: i64,
    max_in_flight_per_endpoint: i64,
    max_in_flight_per_tenant: i64,
    allow_http: bool,
    allow_private_networks: bool,
    breaker_failures: i64,
    breaker_cooldown: String,
    disable_after: String,
    propagate_trace: bool,
    signature_headers: Vec<String>,
});
section!(RawRetention { deliveries: String, idempotency: String });
section!(RawStorage { backend: String, postgres_url: String, postgres_pool: i64, lease: String });
section!(RawOperations { endpoint: String });
section!(RawEventTypes { validate: bool });
section!(RawTelemetry { endpoint: String, service_name: String, sample_ratio: f64 });
section!(RawTenantLimits { max_endpoints: i64, max_events_per_second: i64 });

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) tenants: Option<Vec<RawTenant>>,
    pub(super) tenants_defaults: Option<RawTenantLimits>,
    pub(super) server: Option<RawServer>,
    pub(super) auth: Option<RawAuth>,
    pub(super) signing: Option<RawSigning>,
    pub(super) delivery: Option<RawDelivery>,
    pub(super) retention: Option<RawRetention>,
    pub(super) storage: Option<RawStorage>,
    pub(super) operations: Option<RawOperations>,
    pub(super) event_types: Option<RawEventTypes>,
    pub(super) telemetry: Option<RawTelemetry>,
    pub(super) endpoints: Option<Vec<RawEndpoint>>,
    pub(super) plugins: Option<Vec<RawPlugin>>,
    pub(super) triggers: Option<std::collections::BTreeMap<String, Spanned<RawTrigger>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    pub(super) name: Spanned<String>,
    pub(super) path: Spanned<String>,
    #[serde(default)]
    pub(super) config: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub(super) on_error: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) memory_limit: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) concurrency: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrigger {
    pub(super) plugins: Spanned<Vec<String>>,
}

impl RawConfig {
    pub(super) fn over(self, base: RawConfig) -> RawConfig {
        fn both<T: Default>(a: Option<T>, b: Option<T>, f: fn(T, T) -> T) -> Option<T> {
            Some(f(a.unwrap_or_default(), b.unwrap_or_default()))
        }
        RawConfig {
            server: both(self.server, base.server, RawServer::over),
            auth: both(self.auth, base.auth, RawAuth::over),
            signing: both(self.signing, base.signing, RawSigning::over),
            delivery: both(self.delivery, base.delivery, RawDelivery::over),
            retention: both(self.retention, base.retention, RawRetention::over),
            storage: both(self.storage, base.storage, RawStorage::over),
            operations: both(self.operations, base.operations, RawOperations::over),
            event_types: both(self.event_types, base.event_types, RawEventTypes::over),
            telemetry: both(self.telemetry, base.telemetry, RawTelemetry::over),
            tenants_defaults: both(self.tenants_defaults, base.tenants_defaults, RawTenantLimits::over),
            tenants: self.tenants,
            endpoints: self.endpoints,
            plugins: self.plugins,
            triggers: self.triggers,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) id: Spanned<String>,
    pub(super) url: Spanned<String>,
    pub(super) triggers: Spanned<Vec<String>>,
    #[serde(default, rename = "match")]
    pub(super) matches: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub(super) secret: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) plugins: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(super) rate_limit: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ordering: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ordering_key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tenant: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub(super) id: Spanned<String>,
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    pub(super) secret: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) previous_secrets: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(super) metadata: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub(super) max_endpoints: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) max_events_per_second: Option<Spanned<i64>>,
}

/// What validation needs to phrase an error: the user's text (for line numbers), the file name
/// and the environment for `${NAME}`.
pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) file: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    pub(super) fn line<T>(&self, s: &Spanned<T>) -> Option<usize> {
        let start = s.span().start;
        (start <= self.text.len()).then(|| self.text[..start].matches('\n').count() + 1)
    }

    pub(super) fn error(&self, key: &str, line: Option<usize>, message: String) -> ConfigError {
        ConfigError { file: self.file.to_owned(), line, key: key.to_owned(), message }
    }

    pub(super) fn missing(&self, key: &str) -> ConfigError {
        self.error(key, None, "is missing (and has no default)".into())
    }

    /// Replaces each `${NAME}` with the environment variable's value.
    pub(super) fn expand(&self, s: &str, key: &str, line: Option<usize>) -> Result<String, ConfigError> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start + 2..].find('}') else {
                return Err(self.error(key, line, "has an unterminated ${...} reference".into()));
            };
            let name = &rest[start + 2..start + 2 + len];
            let value = (self.env)(name).ok_or_else(|| {
                self.error(key, line, format!("refers to environment variable {name}, which is not set"))
            })?;
            out.push_str(&value);
            rest = &rest[start + 3 + len..];
        }
        out.push_str(rest);
        Ok(out)
    }

    pub(super) fn string(&self, v: Option<Spanned<String>>, key: &str) -> Result<(Option<usize>, String), ConfigError> {
        let v = v.ok_or_else(|| self.missing(key))?;
        let line = self.line(&v);
        let s = self.expand(v.get_ref(), key, line)?;
        Ok((line, s))
    }

    pub(super) fn strings(
        &self,
        v: Option<Spanned<Vec<String>>>,
        key: &str,
    ) -> Result<Vec<(Option<usize>, String)>, ConfigError> {
        let v = v.ok_or_else(|| self.missing(key))?;
        let line = self.line(&v);
        v.into_inner().iter().map(|s| Ok((line, self.expand(s, key, line)?))).collect()
    }

    pub(super) fn tokens(&self, v: Option<Spanned<Vec<String>>>, key: &str) -> Result<Vec<Token>, ConfigError> {
        let mut out = Vec::new();
        for (line, t) in self.strings(v, key)? {
            if t.trim().is_empty() || t.chars().any(char::is_whitespace) {
                return Err(self.error(key, line, "tokens must be non-empty and contain no spaces".into()));
            }
            out.push(Token(t));
        }
        Ok(out)
    }

    pub(super) fn secret(&self, line: Option<usize>, text: &str, key: &str) -> Result<Secret, ConfigError> {
        Secret::parse(text).map_err(|e| self.error(key, line, format!("the secret {e}")))
    }

    /// A duration within `[min, max]`: a value outside is almost certainly a typo.
    pub(super) fn bounded_duration(
        &self,
        v: Option<Spanned<String>>,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let line = v.as_ref().and_then(|s| self.line(s));
        let d = self.duration(v, key, false)?;
        if d < min || d > max {
            return Err(self.error(key, line, format!("must be from {min:?} to {max:?}, not {d:?}")));
        }
        Ok(d)
    }

    pub(super) fn duration(
        &self,
        v: Option<Spanned<String>>,
        key: &str,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        let (line, text) = self.string(v, key)?;
        match parse_duration(&text) {
            Some(d) if zero_ok || !d.is_zero() => Ok(d),
            Some(_) => Err(self.error(key, line, "must be greater than zero".into())),
            None => Err(self.error(
                key,
                line,
                format!("{text:?} is not a duration; use e.g. \"500ms\", \"10s\", \"5m\", \"1h\""),
            )),
        }
    }

    pub(super) fn number(&self, v: Option<Spanned<i64>>, key: &str, min: i64, max: i64) -> Result<usize, ConfigError> {
        let v = v.ok_or_else(|| self.missing(key))?;
        let line = self.line(&v);
        let n = *v.get_ref();
        if !(min..=max).contains(&n) {
            return Err(self.error(key, line, format!("{n} is out of range ({min} to {max})")));
        }
        Ok(n as usize)
    }

    pub(super) fn float(&self, v: Option<Spanned<f64>>, key: &str, min: f64, max: f64) -> Result<f64, ConfigError> {
        let v = v.ok_or_else(|| self.missing(key))?;
        let line = self.line(&v);
        let n = *v.get_ref();
        if !(min..=max).contains(&n) {
            return Err(self.error(key, line, format!("{n} is out of range ({min} to {max})")));
        }
        Ok(n)
    }

    pub(super) fn boolean(&self, v: Option<Spanned<bool>>, key: &str) -> Result<bool, ConfigError> {
        Ok(*v.ok_or_else(|| self.missing(key))?.get_ref())
    }
}

/// Turns a TOML syntax or type error into a [`ConfigError`] with the line and, where the line
/// reads `key = value`, the dotted key under its `[table]`.
pub(super) fn toml_error(e: &toml::de::Error, text: &str, file: &str) -> ConfigError {
    let (line, key) = match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line_no = text[..start].matches('\n').count() + 1;
            let line_text = text.lines().nth(line_no - 1).unwrap_or("");
            let table = text[..start]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['))
                .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim().to_owned())
                .filter(|k| !k.is_empty() && !k.starts_with('#'))
                .map(|k| match &table {
                    Some(t) => format!("{t}.{k}"),
                    None => k,
                })
                .unwrap_or_default();
            (Some(line_no), key)
        }
        None => (None, String::new()),
    };
    ConfigError { file: file.to_owned(), line, key, message: without_values(e.message().trim()) }
}

/// A deserializer's message without the values it quotes (`invalid type: string "…",
/// expected a sequence`): the value may be a token or a secret put in the wrong shape, and the
/// message reaches logs. The line and key already say where to look.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        out.push_str("a string");
        let quoted = &rest[i + "string \"".len()..];
        // The closing quote: the first one not escaped by a backslash.
        let mut end = quoted.len();
        let mut escaped = false;
        for (j, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = j + 1;
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = &quoted[end.min(quoted.len())..];
    }
    out.push_str(rest);
    out
}
