//! The endpoint registry: the config file's endpoints plus those created through the API.
//!
//! Owns: the current list (a snapshot swapped atomically on change), the validation of
//! endpoints created at runtime (the same rules as the config file) and their conversion to and
//! from stored records.
//! Must not touch: storage or HTTP. The API persists records through `store` and then updates
//! the registry; ingest reads snapshots for fan-out; dispatch looks endpoints up by id.

use std::sync::{Arc, RwLock};

use crate::config::{DeliveryConfig, Endpoint, Origin, RESERVED_FIELDS, Triggers, valid_trigger, validate_url};
use crate::json::{self, Value};
use crate::model::EndpointRecord;
use crate::sign::Secret;

/// The live set of endpoints. Readers take a cheap `Arc` snapshot and never block writers for
/// longer than a pointer swap.
pub struct Registry {
    current: RwLock<Arc<Vec<Endpoint>>>,
}

impl Registry {
    /// Config endpoints first, then the stored API endpoints. A stored record that no longer
    /// validates (say, its URL scheme was allowed by an older config) is skipped with a warning.
    pub fn new(config_endpoints: &[Endpoint], records: Vec<EndpointRecord>) -> Registry {
        let mut all = config_endpoints.to_vec();
        for r in records {
            match from_record(&r) {
                Ok(e) if !all.iter().any(|c| c.id == e.id) => all.push(e),
                Ok(e) => tracing::warn!(endpoint = %e.id, "stored endpoint shadows a config endpoint; ignored"),
                Err(msg) => tracing::warn!(endpoint = %r.id, error = %msg, "stored endpoint is invalid; ignored"),
            }
        }
        Registry { current: RwLock::new(Arc::new(all)) }
    }

    pub fn snapshot(&self) -> Arc<Vec<Endpoint>> {
        self.current.read().expect("registry lock").clone()
    }

    pub fn get(&self, id: &str) -> Option<Endpoint> {
        self.snapshot().iter().find(|e| e.id == id).cloned()
    }

    pub fn insert(&self, e: Endpoint) {
        let mut cur = self.current.write().expect("registry lock");
        let mut next = cur.as_ref().clone();
        next.retain(|x| x.id != e.id);
        next.push(e);
        *cur = Arc::new(next);
    }

    pub fn remove(&self, id: &str) {
        let mut cur = self.current.write().expect("registry lock");
        let mut next = cur.as_ref().clone();
        next.retain(|x| x.id != id);
        *cur = Arc::new(next);
    }
}

/// Validates a `POST /v1/endpoints` body: `{url, triggers, match?, secret?}`, with the config
/// file's rules. Returns the endpoint and the record to store.
pub fn validate_new(
    body: &Value,
    delivery: &DeliveryConfig,
    id: String,
    now_ms: u64,
) -> Result<(Endpoint, EndpointRecord), String> {
    let Value::Object(o) = body else {
        return Err(format!("the body must be a JSON object, not {}", body.kind()));
    };
    if let Some((k, _)) = o.iter().find(|(k, _)| !matches!(*k, "url" | "triggers" | "match" | "secret")) {
        return Err(format!("unknown field `{k}`; expected url, triggers, match, secret"));
    }
    let url = match o.get("url") {
        Some(Value::String(u)) => u.clone(),
        Some(other) => return Err(format!("`url` must be a string, not {}", other.kind())),
        None => return Err("missing `url`".into()),
    };
    validate_url(&url, delivery.allow_http).map_err(|m| format!("`url`: {m}"))?;
    let triggers: Vec<String> = match o.get("triggers") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or("`triggers` must be a list of strings"))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("`triggers` must be a list of strings, not {}", other.kind())),
        None => return Err("missing `triggers`".into()),
    };
    if triggers.is_empty() {
        return Err("`triggers` must list at least one trigger (or \"*\" for all)".into());
    }
    if let Some(bad) = triggers.iter().find(|t| *t != "*" && !valid_trigger(t)) {
        return Err(format!("`triggers`: {bad:?} is not a trigger: use 1-128 characters of a-z, 0-9, '_', '.', '-'"));
    }
    let mut matches = Vec::new();
    match o.get("match") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (field, value) in m.iter() {
                if RESERVED_FIELDS.contains(&field) {
                    return Err(format!("`match.{field}`: cannot match on a reserved field"));
                }
                if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    return Err(format!("`match.{field}` must be a string, number or boolean, not {}", value.kind()));
                }
                matches.push((field.to_owned(), value.to_canonical()));
            }
            if matches.is_empty() {
                return Err("`match` must name at least one field, or be left out".into());
            }
        }
        Some(other) => return Err(format!("`match` must be an object, not {}", other.kind())),
    }
    let secret = match o.get("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Secret::parse(s).map_err(|e| format!("`secret`: the secret {e}"))?;
            Some(s.clone())
        }
        Some(other) => return Err(format!("`secret` must be a string, not {}", other.kind())),
    };
    let record = EndpointRecord { id, url, triggers, matches, secret, created_at_ms: now_ms };
    let endpoint = from_record(&record)?;
    Ok((endpoint, record))
}

fn from_record(r: &EndpointRecord) -> Result<Endpoint, String> {
    let url = url::Url::parse(&r.url).map_err(|e| e.to_string())?;
    let triggers = if r.triggers.iter().any(|t| t == "*") { Triggers::All } else { Triggers::Only(r.triggers.clone()) };
    let matches = r
        .matches
        .iter()
        .map(|(f, v)| json::parse(v.as_bytes()).map(|v| (f.clone(), v)).map_err(|e| e.message))
        .collect::<Result<_, _>>()?;
    let secret = r.secret.as_deref().map(Secret::parse).transpose().map_err(|e| e.to_string())?;
    Ok(Endpoint {
        id: r.id.clone(),
        url,
        triggers,
        matches,
        secret,
        plugins: Vec::new(),
        origin: Origin::Api { created_at_ms: r.created_at_ms },
    })
}
