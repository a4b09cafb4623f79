//! The `[[endpoints]]` table: each entry validated by the same rules as an endpoint created
//! through the API (`endpoint::validate`), with errors naming its key and line.
//!
//! Owns: what only the file says about an endpoint: its tenant (declared in `[[tenants]]`),
//! its plugin chain (names from `[[plugins]]`), ids unique per tenant, and the warning for a
//! literal private address.
//! Must not touch: the rules of an endpoint itself (those are `endpoint`'s).

use std::collections::HashSet;
use std::net::IpAddr;

use toml::Spanned;

use super::raw::{Ctx, RawEndpoint};
use super::{ConfigError, DeliveryConfig, Endpoint, EndpointSpec, Origin, TenantConfig};
use crate::json;
use crate::model::DEFAULT_TENANT;

/// The plugin names the file declares: every chain (an endpoint's, a trigger's) must use only
/// those.
pub(super) struct Chains {
    pub known: HashSet<String>,
}

impl Chains {
    pub(super) fn check(
        &self,
        ctx: &Ctx<'_>,
        list: Spanned<Vec<String>>,
        key: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let line = ctx.line(&list);
        let list = list.into_inner();
        if let Some(unknown) = list.iter().find(|n| !self.known.contains(n.as_str())) {
            return Err(ctx.error(
                key,
                line,
                format!("unknown plugin {unknown:?}: no [[plugins]] entry has this name"),
            ));
        }
        Ok(list)
    }
}

/// Every `[[endpoints]]` entry, validated; ids are unique within a tenant.
pub(super) fn endpoints_from_raw(
    raw: Vec<RawEndpoint>,
    ctx: &Ctx<'_>,
    tenants: &[TenantConfig],
    delivery: &DeliveryConfig,
    chains: &Chains,
    warnings: &mut Vec<String>,
) -> Result<Vec<Endpoint>, ConfigError> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in raw.into_iter().enumerate() {
        let id_line = ctx.line(&e.id);
        let (mut endpoint, chain) = endpoint_from_raw(i, e, ctx, tenants, delivery.allow_http)?;
        // Ids are unique within a tenant; inside the gateway a tenant's endpoint is known as
        // `tenant/id` (see `endpoint::internal_id`).
        if !seen.insert(endpoint.id.clone()) {
            let local = crate::endpoint::split_id(&endpoint.id).1;
            return Err(ctx.error(
                &format!("endpoints[{i}].id"),
                id_line,
                format!("duplicate endpoint id {local:?} in tenant {:?}", endpoint.tenant),
            ));
        }
        if !delivery.allow_private_networks
            && let Some(reason) = literal_private_host(&endpoint.url)
        {
            let local = crate::endpoint::split_id(&endpoint.id).1;
            warnings.push(format!(
                "endpoint {local:?}: {} is {reason}; deliveries to it will be refused unless delivery.allow_private_networks = true",
                endpoint.url
            ));
        }
        if let Some(list) = chain {
            endpoint.plugins = chains.check(ctx, list, &format!("endpoints[{i}].plugins"))?;
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// A plugin chain as the file writes it.
type Chain = Spanned<Vec<String>>;

/// One entry, `endpoints[i]`, and its plugin chain as written (checked by the caller, after
/// the id).
fn endpoint_from_raw(
    i: usize,
    e: RawEndpoint,
    ctx: &Ctx<'_>,
    tenants: &[TenantConfig],
    allow_http: bool,
) -> Result<(Endpoint, Option<Chain>), ConfigError> {
    let key = |field: &str| format!("endpoints[{i}].{field}");
    let (id_line, url_line, triggers_line) = (ctx.line(&e.id), ctx.line(&e.url), ctx.line(&e.triggers));
    let match_line = e.matches.as_ref().and_then(|m| ctx.line(m));
    let secret_line = e.secret.as_ref().and_then(|s| ctx.line(s));
    let lines_of = |v: &Option<Spanned<String>>| v.as_ref().and_then(|s| ctx.line(s));
    let (rate_line, ordering_line, key_line) =
        (lines_of(&e.rate_limit), lines_of(&e.ordering), lines_of(&e.ordering_key));
    let tenant = tenant_of(e.tenant, ctx, tenants, &key("tenant"))?;
    let secret = match e.secret {
        Some(s) => Some(ctx.string(Some(s), &key("secret"))?.1),
        None => None,
    };
    let matches = match e.matches {
        None => None,
        Some(m) => Some(match_values(m.into_inner(), ctx, match_line, &key)?),
    };
    let opt = |v: Option<Spanned<String>>| v.map(Spanned::into_inner);
    let spec = EndpointSpec {
        id: e.id.into_inner(),
        url: ctx.string(Some(e.url), &key("url"))?.1,
        triggers: e.triggers.into_inner(),
        matches,
        secret,
        rate_limit: opt(e.rate_limit),
        ordering: opt(e.ordering),
        ordering_key: opt(e.ordering_key),
    };
    let valid = crate::endpoint::validate(spec, allow_http).map_err(|err| {
        let line = match err.field.split('.').next().unwrap_or("") {
            "id" => id_line,
            "url" => url_line,
            "triggers" => triggers_line,
            "match" => match_line,
            "secret" => secret_line,
            "rate_limit" => rate_line,
            "ordering" => ordering_line,
            "ordering_key" => key_line.or(ordering_line),
            _ => None,
        };
        ctx.error(&key(&err.field), line, err.message)
    })?;
    let endpoint = Endpoint {
        id: crate::endpoint::internal_id(&tenant, &valid.id),
        tenant,
        url: valid.url,
        triggers: valid.triggers,
        matches: valid.matches,
        secret: valid.secret,
        previous_secret: None,
        plugins: Vec::new(),
        origin: Origin::Config,
        rate_limit: valid.rate_limit,
        fifo: valid.fifo,
        // Channels and custom headers are set through the API.
        channels: Vec::new(),
        headers: Vec::new(),
        description: String::new(),
        metadata: Default::default(),
    };
    Ok((endpoint, e.plugins))
}

/// An endpoint's `tenant`: the default one, or one declared in `[[tenants]]`.
fn tenant_of(
    raw: Option<Spanned<String>>,
    ctx: &Ctx<'_>,
    tenants: &[TenantConfig],
    key: &str,
) -> Result<String, ConfigError> {
    let Some(t) = raw else { return Ok(DEFAULT_TENANT.to_owned()) };
    let line = ctx.line(&t);
    let t = t.into_inner();
    if t != DEFAULT_TENANT && !tenants.iter().any(|x| x.id == t) {
        return Err(ctx.error(key, line, format!("{t:?} is not a tenant: declare it in [[tenants]]")));
    }
    Ok(t)
}

/// The `match` table as JSON values. Only the syntax is translated here; `endpoint::validate`
/// decides what is allowed.
fn match_values(
    table: toml::Table,
    ctx: &Ctx<'_>,
    line: Option<usize>,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<(String, json::Value)>, ConfigError> {
    let mut out = Vec::new();
    for (field, value) in table {
        let field_key = key(&format!("match.{field}"));
        let value = match value {
            toml::Value::String(s) => json::Value::String(ctx.expand(&s, &field_key, line)?),
            toml::Value::Integer(n) => json::Value::Number(json::Number::Int(n.to_string())),
            toml::Value::Float(f) => json::Value::Number(json::Number::Float(f)),
            toml::Value::Boolean(b) => json::Value::Bool(b),
            toml::Value::Array(_) => json::Value::Array(Vec::new()),
            toml::Value::Table(_) => json::Value::Object(json::Object::new()),
            toml::Value::Datetime(_) => {
                return Err(ctx.error(&field_key, line, "must be a string, integer or boolean, not a datetime".into()));
            }
        };
        out.push((field, value));
    }
    Ok(out)
}

/// Why a URL's literal host is not a public address, if it is one we would refuse.
fn literal_private_host(url: &url::Url) -> Option<&'static str> {
    match url.host()? {
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => Some("localhost"),
        url::Host::Domain(_) => None,
        url::Host::Ipv4(ip) => crate::deliver::guard::forbidden_reason(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => crate::deliver::guard::forbidden_reason(IpAddr::V6(ip)),
    }
}
