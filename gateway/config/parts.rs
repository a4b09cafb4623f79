//! The `[[tenants]]` and `[[plugins]]` tables: each entry validated with errors naming its key
//! and line.
//!
//! Owns: the rules of a tenant declared in the file (id, required secret, quotas over
//! `[tenants_defaults]`) and of a plugin entry (name, path, `on_error`, limits).
//! Must not touch: files (plugin paths are only resolved here; `plugin` reads them).

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::raw::{Ctx, RawPlugin, RawTenant};
use super::{
    Config, ConfigError, DEFAULT_PLUGIN_CONCURRENCY, DEFAULT_PLUGIN_MEMORY, DEFAULT_PLUGIN_TIMEOUT, MAX_PLUGIN_MEMORY,
    OnError, PluginConfig, TenantConfig, TenantLimits, parse_size, valid_endpoint_id, valid_plugin_name,
};
use crate::model::DEFAULT_TENANT;

impl Config {
    pub(super) fn tenants_from_raw(
        raw: Vec<RawTenant>,
        ctx: &Ctx<'_>,
        defaults: TenantLimits,
    ) -> Result<Vec<TenantConfig>, ConfigError> {
        let mut out: Vec<TenantConfig> = Vec::new();
        for (i, t) in raw.into_iter().enumerate() {
            let key = |field: &str| format!("tenants[{i}].{field}");
            let line = ctx.line(&t.id);
            let id = t.id.into_inner();
            if !valid_endpoint_id(&id) || id == DEFAULT_TENANT {
                return Err(ctx.error(
                    &key("id"),
                    line,
                    format!("{id:?} must be 1-64 characters of letters, digits, '_', '.', '-', and not \"default\""),
                ));
            }
            if out.iter().any(|o| o.id == id) {
                return Err(ctx.error(&key("id"), line, format!("duplicate tenant id {id:?}")));
            }
            let Some(secret) = t.secret else {
                return Err(ctx.error(
                    &key("secret"),
                    line,
                    "is required for a tenant declared in the file (e.g. `openssl rand -base64 32`)".into(),
                ));
            };
            let (secret_line, secret_text) = ctx.string(Some(secret), &key("secret"))?;
            let secret = ctx.secret(secret_line, &secret_text, &key("secret"))?;
            let mut previous_secrets = Vec::new();
            if let Some(p) = t.previous_secrets {
                for (line, text) in ctx.strings(Some(p), &key("previous_secrets"))? {
                    previous_secrets.push(ctx.secret(line, &text, &key("previous_secrets"))?);
                }
            }
            let name = t.name.map(Spanned::into_inner);
            let metadata = t.metadata.map(|m| {
                let v: serde_json::Value = serde_json::to_value(m.into_inner()).unwrap_or_default();
                v.to_string()
            });
            let max_endpoints = match t.max_endpoints {
                None => defaults.max_endpoints,
                Some(v) => ctx.number(Some(v), &key("max_endpoints"), 1, 100_000)?,
            };
            let max_events_per_second = match t.max_events_per_second {
                None => defaults.max_events_per_second,
                Some(v) => match ctx.number(Some(v), &key("max_events_per_second"), 0, 1_000_000)? {
                    0 => None,
                    n => Some(n as u32),
                },
            };
            out.push(TenantConfig {
                id,
                name,
                metadata,
                secret,
                secret_text,
                previous_secrets,
                limits: TenantLimits { max_endpoints, max_events_per_second },
            });
        }
        Ok(out)
    }

    pub(super) fn plugins_from_raw(
        raw: Vec<RawPlugin>,
        ctx: &Ctx<'_>,
        base: &Path,
    ) -> Result<Vec<PluginConfig>, ConfigError> {
        let mut out: Vec<PluginConfig> = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let key = |field: &str| format!("plugins[{i}].{field}");
            let line = ctx.line(&p.name);
            let name = p.name.into_inner();
            if !valid_plugin_name(&name) {
                return Err(ctx.error(
                    &key("name"),
                    line,
                    format!("{name:?} must be 1-64 characters of a-z, 0-9, '_', '-'"),
                ));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(ctx.error(&key("name"), line, format!("duplicate plugin name {name:?}")));
            }
            let (_, path) = ctx.string(Some(p.path), &key("path"))?;
            let config = match p.config {
                None => Vec::new(),
                Some(t) => t
                    .into_inner()
                    .into_iter()
                    .map(|(k, v)| {
                        let text = match v {
                            toml::Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, text)
                    })
                    .collect(),
            };
            let on_error = match p.on_error {
                None => OnError::Fail,
                Some(v) => {
                    let line = ctx.line(&v);
                    match v.get_ref().as_str() {
                        "fail" => OnError::Fail,
                        "skip" => OnError::Skip,
                        other => {
                            return Err(ctx.error(
                                &key("on_error"),
                                line,
                                format!("{other:?} must be \"fail\" or \"skip\""),
                            ));
                        }
                    }
                }
            };
            let timeout = match p.timeout {
                None => DEFAULT_PLUGIN_TIMEOUT,
                Some(t) => {
                    let d = ctx.duration(Some(t), &key("timeout"), false)?;
                    if d > Duration::from_secs(10) {
                        return Err(ctx.error(
                            &key("timeout"),
                            line,
                            "must be at most 10s: plugins run before every first attempt".into(),
                        ));
                    }
                    d
                }
            };
            let memory_limit = match p.memory_limit {
                None => DEFAULT_PLUGIN_MEMORY,
                Some(m) => {
                    let (line, text) = ctx.string(Some(m), &key("memory_limit"))?;
                    match parse_size(&text) {
                        Some(n) if (1 << 20..=MAX_PLUGIN_MEMORY).contains(&n) => n,
                        _ => {
                            return Err(ctx.error(
                                &key("memory_limit"),
                                line,
                                format!("{text:?} must be a size between 1MiB and 4GiB, e.g. \"32MiB\""),
                            ));
                        }
                    }
                }
            };
            let concurrency = match p.concurrency {
                None => DEFAULT_PLUGIN_CONCURRENCY,
                Some(c) => ctx.number(Some(c), &key("concurrency"), 1, 64)?,
            };
            out.push(PluginConfig {
                name,
                path: base.join(path),
                config,
                on_error,
                timeout,
                memory_limit,
                concurrency,
            });
        }
        Ok(out)
    }
}
