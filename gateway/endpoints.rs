//! The endpoint registry: the config file's endpoints plus those created through the API.
//!
//! Owns: the current list (a snapshot swapped atomically on change), the validation of
//! endpoints created at runtime (the same rules as the config file) and their conversion to and
//! from stored records.
//! Must not touch: storage or HTTP. The API persists records through `store` and then updates
//! the registry; ingest reads snapshots for fan-out; dispatch looks endpoints up by id.

use std::sync::{Arc, RwLock};

use crate::config::{DeliveryConfig, Endpoint, Origin, Triggers};
use crate::endpoint::EndpointSpec;
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

/// Validates a `POST /v1/endpoints` body: `{url, triggers, match?, secret?}`, with exactly the
/// config file's rules (`endpoint::validate`). Returns the endpoint and the record to store.
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
    // Only the JSON syntax is checked here; the rules are `endpoint::validate`'s.
    let url = match o.get("url") {
        Some(Value::String(u)) => u.clone(),
        Some(other) => return Err(format!("`url` must be a string, not {}", other.kind())),
        None => return Err("missing `url`".into()),
    };
    let triggers: Vec<String> = match o.get("triggers") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or("`triggers` must be a list of strings"))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("`triggers` must be a list of strings, not {}", other.kind())),
        None => return Err("missing `triggers`".into()),
    };
    let matches = match o.get("match") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.iter().map(|(f, v)| (f.to_owned(), v.clone())).collect()),
        Some(other) => return Err(format!("`match` must be an object, not {}", other.kind())),
    };
    let secret = match o.get("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("`secret` must be a string, not {}", other.kind())),
    };
    let spec = EndpointSpec { id, url, triggers, matches, secret };
    let secret_text = spec.secret.clone();
    let valid = crate::endpoint::validate(spec, delivery.allow_http).map_err(|e| e.to_string())?;
    let record = EndpointRecord {
        id: valid.id.clone(),
        url: valid.url.to_string(),
        triggers: match &valid.triggers {
            Triggers::All => vec!["*".into()],
            Triggers::Only(list) => list.clone(),
        },
        matches: valid.matches.iter().map(|(f, v)| (f.clone(), v.to_canonical())).collect(),
        secret: secret_text,
        created_at_ms: now_ms,
    };
    let endpoint = Endpoint {
        id: valid.id,
        url: valid.url,
        triggers: valid.triggers,
        matches: valid.matches,
        secret: valid.secret,
        plugins: Vec::new(),
        origin: Origin::Api { created_at_ms: now_ms },
    };
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
