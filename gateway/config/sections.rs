//! The scalar sections of the config file (`[server]`, `[auth]`, `[signing]`, `[delivery]`,
//! `[retention]`, `[tenants_defaults]`, `[operations]`), each validated by its own function
//! with errors naming the key and line.
//!
//! Owns: the bounds and rules of each key of those sections.
//! Must not touch: tables of entries (`[[endpoints]]` is `config::endpoints`', `[[tenants]]`
//! and `[[plugins]]` are `config::parts`').

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::{
    Ctx, RawAuth, RawDelivery, RawOperations, RawRetention, RawServer, RawSigning, RawTelemetry, RawTenantLimits,
};
use super::{
    AuthConfig, Config, ConfigError, DeliveryConfig, Endpoint, RetentionConfig, ServerConfig, SigningConfig,
    TelemetryConfig, TenantLimits, parse_size,
};
use crate::retry::RetryPolicy;

impl Config {
    pub(super) fn server_from_raw(s: RawServer, ctx: &Ctx<'_>, base: &Path) -> Result<ServerConfig, ConfigError> {
        let listen_text = ctx.string(s.listen, "server.listen")?;
        let listen = listen_text.1.parse::<SocketAddr>().map_err(|_| {
            ctx.error(
                "server.listen",
                listen_text.0,
                format!("{:?} is not an address like \"127.0.0.1:8080\"", listen_text.1),
            )
        })?;
        let data_dir = ctx.string(s.data_dir, "server.data_dir")?.1;
        let data_dir = base.join(data_dir);
        let max_body_bytes = ctx.number(s.max_body_bytes, "server.max_body_bytes", 1024, 64 << 20)?;
        let shutdown_grace = ctx.duration(s.shutdown_grace, "server.shutdown_grace", true)?;
        let max_connections = ctx.number(s.max_connections, "server.max_connections", 1, 1_000_000)?;
        let header_read_timeout = ctx.bounded_duration(
            s.header_read_timeout,
            "server.header_read_timeout",
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        let request_body_timeout = ctx.bounded_duration(
            s.request_body_timeout,
            "server.request_body_timeout",
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        let keep_alive_timeout = ctx.bounded_duration(
            s.keep_alive_timeout,
            "server.keep_alive_timeout",
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        let (url_line, url_text) = ctx.string(s.public_url, "server.public_url")?;
        let public_url = if url_text.is_empty() {
            None
        } else {
            let u = url::Url::parse(&url_text)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| {
                    ctx.error(
                        "server.public_url",
                        url_line,
                        format!("{url_text:?} must be an http(s) URL like \"https://hooks.example.com\""),
                    )
                })?;
            Some(u)
        };
        let (cache_line, cache_text) = ctx.string(s.cache_size, "server.cache_size")?;
        let cache_size = parse_size(&cache_text).filter(|n| (1 << 20..=64 << 30).contains(n)).ok_or_else(|| {
            ctx.error(
                "server.cache_size",
                cache_line,
                format!("{cache_text:?} must be a size from 1MiB to 64GiB, e.g. \"64MiB\""),
            )
        })?;
        let (format_line, format_text) = ctx.string(s.log_format, "server.log_format")?;
        let log_format = format_text.parse().map_err(|m| ctx.error("server.log_format", format_line, m))?;
        Ok(ServerConfig {
            log_format,
            public_url,
            listen,
            data_dir,
            max_body_bytes,
            shutdown_grace,
            cache_size,
            max_connections,
            header_read_timeout,
            request_body_timeout,
            keep_alive_timeout,
        })
    }

    pub(super) fn auth_from_raw(
        a: RawAuth,
        ctx: &Ctx<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<AuthConfig, ConfigError> {
        let ingest_tokens = ctx.tokens(a.ingest_tokens, "auth.ingest_tokens")?;
        if ingest_tokens.is_empty() {
            return Err(ctx.error("auth.ingest_tokens", None, "at least one ingest token is required".into()));
        }
        let admin_tokens = ctx.tokens(a.admin_tokens, "auth.admin_tokens")?;
        if admin_tokens.is_empty() {
            warnings.push("auth.admin_tokens is empty: the read API will refuse every request".into());
        }
        Ok(AuthConfig { ingest_tokens, admin_tokens })
    }

    pub(super) fn signing_from_raw(
        g: RawSigning,
        ctx: &Ctx<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<SigningConfig, ConfigError> {
        let (line, secret) = ctx.string(g.secret, "signing.secret")?;
        if secret.is_empty() {
            return Err(ctx.error(
                "signing.secret",
                line,
                "is required: base64 of at least 32 random bytes (e.g. `openssl rand -base64 32`)".into(),
            ));
        }
        let secret = ctx.secret(line, &secret, "signing.secret")?;
        let mut previous_secrets = Vec::new();
        for (line, text) in ctx.strings(g.previous_secrets, "signing.previous_secrets")? {
            previous_secrets.push(ctx.secret(line, &text, "signing.previous_secrets")?);
        }
        let rotation_overlap = ctx.bounded_duration(
            g.rotation_overlap,
            "signing.rotation_overlap",
            Duration::from_secs(1),
            Duration::from_secs(30 * 86_400),
        )?;
        let (line, main_key) = ctx.string(g.main_key, "signing.main_key")?;
        let main_key = if main_key.trim().is_empty() {
            warnings.push(
                "[signing] main_key is not set: endpoint and tenant secrets created through the API are stored in clear"
                    .into(),
            );
            None
        } else {
            Some(crate::seal::MainKey::parse(&main_key).map_err(|m| ctx.error("signing.main_key", line, m))?)
        };
        Ok(SigningConfig { secret, previous_secrets, rotation_overlap, main_key })
    }

    pub(super) fn delivery_from_raw(d: RawDelivery, ctx: &Ctx<'_>) -> Result<DeliveryConfig, ConfigError> {
        let timeout = ctx.duration(d.timeout, "delivery.timeout", false)?;
        let max_retries = ctx.number(d.max_retries, "delivery.max_retries", 0, 50)? as u32;
        let initial = ctx.duration(d.backoff_initial, "delivery.backoff_initial", false)?;
        let max = ctx.duration(d.backoff_max, "delivery.backoff_max", false)?;
        let multiplier = ctx.float(d.backoff_multiplier, "delivery.backoff_multiplier", 1.0, 100.0)?;
        let jitter = ctx.float(d.jitter, "delivery.jitter", 0.0, 0.99)?;
        let max_in_flight = ctx.number(d.max_in_flight, "delivery.max_in_flight", 1, 100_000)?;
        let max_in_flight_per_endpoint =
            ctx.number(d.max_in_flight_per_endpoint, "delivery.max_in_flight_per_endpoint", 1, 100_000)?;
        let max_in_flight_per_tenant =
            ctx.number(d.max_in_flight_per_tenant, "delivery.max_in_flight_per_tenant", 1, 100_000)?.min(max_in_flight);
        let allow_http = ctx.boolean(d.allow_http, "delivery.allow_http")?;
        let allow_private_networks = ctx.boolean(d.allow_private_networks, "delivery.allow_private_networks")?;
        let propagate_trace = ctx.boolean(d.propagate_trace, "delivery.propagate_trace")?;
        let sets_line = d.signature_headers.as_ref().and_then(|s| ctx.line(s));
        let sets = ctx.strings(d.signature_headers, "delivery.signature_headers")?;
        let signature_headers = crate::sign::HeaderSets::parse(sets.iter().map(|(_, s)| s.as_str()))
            .map_err(|m| ctx.error("delivery.signature_headers", sets_line, m))?;
        let breaker_failures = ctx.number(d.breaker_failures, "delivery.breaker_failures", 1, 10_000)? as u32;
        let breaker_cooldown = ctx.bounded_duration(
            d.breaker_cooldown,
            "delivery.breaker_cooldown",
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        )?;
        let disable_line = d.disable_after.as_ref().and_then(|s| ctx.line(s));
        let disable_after = ctx.duration(d.disable_after, "delivery.disable_after", true)?;
        if disable_after > Duration::from_secs(365 * 86_400) {
            return Err(ctx.error(
                "delivery.disable_after",
                disable_line,
                format!("must be at most 365d (\"0s\" turns it off), not {disable_after:?}"),
            ));
        }
        let disable_after = (!disable_after.is_zero()).then_some(disable_after);
        Ok(DeliveryConfig {
            timeout,
            retry: RetryPolicy { max_retries, initial, multiplier, max, jitter },
            max_in_flight,
            max_in_flight_per_endpoint,
            max_in_flight_per_tenant,
            allow_http,
            allow_private_networks,
            propagate_trace,
            signature_headers,
            breaker_failures,
            breaker_cooldown,
            disable_after,
        })
    }

    pub(super) fn retention_from_raw(r: RawRetention, ctx: &Ctx<'_>) -> Result<RetentionConfig, ConfigError> {
        Ok(RetentionConfig {
            deliveries: ctx.bounded_duration(
                r.deliveries,
                "retention.deliveries",
                Duration::from_secs(1),
                Duration::from_secs(3650 * 86_400),
            )?,
            idempotency: ctx.bounded_duration(
                r.idempotency,
                "retention.idempotency",
                Duration::from_secs(1),
                Duration::from_secs(365 * 86_400),
            )?,
        })
    }

    pub(super) fn tenant_defaults_from_raw(td: RawTenantLimits, ctx: &Ctx<'_>) -> Result<TenantLimits, ConfigError> {
        Ok(TenantLimits {
            max_endpoints: ctx.number(td.max_endpoints, "tenants_defaults.max_endpoints", 1, 100_000)?,
            max_events_per_second: match ctx.number(
                td.max_events_per_second,
                "tenants_defaults.max_events_per_second",
                0,
                1_000_000,
            )? {
                0 => None,
                n => Some(n as u32),
            },
        })
    }

    /// `[telemetry]`: each key optional; an empty string is the same as leaving it out.
    pub(super) fn telemetry_from_raw(t: RawTelemetry, ctx: &Ctx<'_>) -> Result<TelemetryConfig, ConfigError> {
        let text = |v: Option<toml::Spanned<String>>, key: &str| -> Result<Option<String>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            let (_, s) = ctx.string(Some(v), key)?;
            Ok((!s.trim().is_empty()).then(|| s.trim().to_owned()))
        };
        let endpoint_line = t.endpoint.as_ref().and_then(|s| ctx.line(s));
        let endpoint = text(t.endpoint, "telemetry.endpoint")?;
        if let Some(e) = &endpoint
            && !url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(ctx.error(
                "telemetry.endpoint",
                endpoint_line,
                format!("{e:?} must be the collector's http(s) URL, like \"http://127.0.0.1:4318\""),
            ));
        }
        let service_name = text(t.service_name, "telemetry.service_name")?;
        let sample_ratio = match t.sample_ratio {
            None => None,
            Some(r) => Some(ctx.float(Some(r), "telemetry.sample_ratio", 0.0, 1.0)?),
        };
        Ok(TelemetryConfig { endpoint, service_name, sample_ratio })
    }

    /// `[operations] endpoint`: the id of one of the file's endpoints, or nothing.
    pub(super) fn operations_from_raw(
        ops: RawOperations,
        ctx: &Ctx<'_>,
        endpoints: &[Endpoint],
    ) -> Result<Option<String>, ConfigError> {
        Ok(match ops.endpoint {
            None => None,
            Some(v) => {
                let (line, id) = ctx.string(Some(v), "operations.endpoint")?;
                if id.is_empty() {
                    None
                } else if endpoints.iter().any(|e| e.id == id) {
                    Some(id)
                } else {
                    return Err(ctx.error(
                        "operations.endpoint",
                        line,
                        format!("{id:?} is not the id of an [[endpoints]] entry in this file"),
                    ));
                }
            }
        })
    }
}
