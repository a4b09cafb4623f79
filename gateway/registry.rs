//! The endpoint registry: the config file's endpoints plus those created through the API.
//!
//! Owns: the current list (a snapshot swapped atomically on change), the validation of
//! endpoints created at runtime (the same rules as the config file) and their conversion to and
//! from stored records.
//! Must not touch: storage or HTTP. The API persists records through `store` and then updates
//! the registry; ingest reads snapshots for fan-out; dispatch looks endpoints up by id.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::config::{DeliveryConfig, Endpoint, Origin, Triggers};
use crate::endpoint::{EndpointSpec, Fifo, RateLimit};
use crate::json::{self, Value};
use crate::model::EndpointRecord;
use crate::sign::Secret;

/// The live set of endpoints. Readers take a cheap `Arc` snapshot and never block writers for
/// longer than a pointer swap.
pub struct Registry {
    current: RwLock<Arc<Index>>,
    /// The stored records of API endpoints, as given (secrets included), for PATCH.
    records: RwLock<Vec<EndpointRecord>>,
    /// Held by an API create from its checks (the id is free, the tenant's quota) until the
    /// endpoint is stored and in the registry, so that two concurrent creates cannot both pass
    /// them (one would silently replace the other). Creates are rare; they take turns.
    pub creating: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Config endpoints first, then the stored API endpoints. A stored record that no longer
    /// validates (say, its URL scheme was allowed by an older config) is skipped with a warning.
    pub fn new(config_endpoints: &[Endpoint], records: Vec<EndpointRecord>) -> Registry {
        let mut all = config_endpoints.to_vec();
        let mut kept = Vec::new();
        for r in records {
            match from_record(&r) {
                Ok(e) if !all.iter().any(|c| c.id == e.id) => {
                    all.push(e);
                    kept.push(r);
                }
                Ok(e) => tracing::warn!(endpoint = %e.id, "stored endpoint shadows a config endpoint; ignored"),
                Err(msg) => tracing::warn!(endpoint = %r.id, error = %msg, "stored endpoint is invalid; ignored"),
            }
        }
        Registry {
            current: RwLock::new(Arc::new(Index::new(all))),
            records: RwLock::new(kept),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    fn index(&self) -> Arc<Index> {
        self.current.read().expect("registry lock").clone()
    }

    /// Every endpoint of every tenant.
    pub fn snapshot(&self) -> Arc<Vec<Endpoint>> {
        self.index().all.clone()
    }

    /// One tenant's endpoints (what its events fan out over).
    pub fn of_tenant(&self, tenant: &str) -> Arc<Vec<Endpoint>> {
        self.index().by_tenant.get(tenant).cloned().unwrap_or_default()
    }

    /// An endpoint by its internal id; dispatch asks once per attempt, so this is a map lookup.
    pub fn get(&self, id: &str) -> Option<Endpoint> {
        let index = self.index();
        index.by_id.get(id).map(|&i| index.all[i].clone())
    }

    /// Replaces the config file's endpoints with a reloaded file's, in one swap: an event fans
    /// out over the old set or the new one. API endpoints stay; one that a new file endpoint
    /// shadows is hidden (as at start) until the file drops that id again.
    pub fn replace_config_endpoints(&self, config_endpoints: &[Endpoint]) {
        let records = self.records.read().expect("registry lock");
        let mut next = config_endpoints.to_vec();
        for r in records.iter() {
            match from_record(r) {
                Ok(e) if !next.iter().any(|c| c.id == e.id) => next.push(e),
                Ok(e) => tracing::warn!(endpoint = %e.id, "stored endpoint shadowed by a config endpoint; hidden"),
                Err(msg) => tracing::warn!(endpoint = %r.id, error = %msg, "stored endpoint is invalid; ignored"),
            }
        }
        *self.current.write().expect("registry lock") = Arc::new(Index::new(next));
    }

    /// Replaces every API endpoint with `records` as stored (another node changed them), in
    /// one swap, laid over the config file's endpoints as at start.
    pub fn replace_api_endpoints(&self, config_endpoints: &[Endpoint], records: Vec<EndpointRecord>) {
        let fresh = Registry::new(config_endpoints, records);
        let (index, records) = (fresh.index(), fresh.records.into_inner().expect("registry lock"));
        *self.records.write().expect("registry lock") = records;
        *self.current.write().expect("registry lock") = index;
    }

    pub fn insert(&self, e: Endpoint) {
        let mut cur = self.current.write().expect("registry lock");
        let mut next = cur.all.as_ref().clone();
        next.retain(|x| x.id != e.id);
        next.push(e);
        *cur = Arc::new(Index::new(next));
    }

    /// The stored record of an API endpoint (the base a PATCH is laid over).
    pub fn record(&self, id: &str) -> Option<EndpointRecord> {
        self.records.read().expect("registry lock").iter().find(|r| r.id == id).cloned()
    }

    /// Replaces (or adds) an API endpoint and its record.
    pub fn put(&self, e: Endpoint, record: EndpointRecord) {
        {
            let mut records = self.records.write().expect("registry lock");
            records.retain(|r| r.id != record.id);
            records.push(record);
        }
        self.insert(e);
    }

    pub fn remove(&self, id: &str) {
        self.records.write().expect("registry lock").retain(|r| r.id != id);
        let mut cur = self.current.write().expect("registry lock");
        let mut next = cur.all.as_ref().clone();
        next.retain(|x| x.id != id);
        *cur = Arc::new(Index::new(next));
    }
}

/// The endpoints with their lookups, rebuilt whole on every change (changes are rare; reads are
/// per event and per attempt).
#[derive(Default)]
struct Index {
    all: Arc<Vec<Endpoint>>,
    by_id: HashMap<String, usize>,
    by_tenant: HashMap<String, Arc<Vec<Endpoint>>>,
}

impl Index {
    fn new(all: Vec<Endpoint>) -> Index {
        let by_id = all.iter().enumerate().map(|(i, e)| (e.id.clone(), i)).collect();
        let mut by_tenant: HashMap<String, Vec<Endpoint>> = HashMap::new();
        for e in &all {
            by_tenant.entry(e.tenant.clone()).or_default().push(e.clone());
        }
        let by_tenant = by_tenant.into_iter().map(|(t, v)| (t, Arc::new(v))).collect();
        Index { all: Arc::new(all), by_id, by_tenant }
    }
}

/// The fields an API body may set (`enabled` only in a PATCH).
const KNOWN: &[&str] = &[
    "url",
    "triggers",
    "match",
    "secret",
    "rate_limit",
    "ordering",
    "ordering_key",
    "description",
    "metadata",
    "channels",
    "headers",
];

/// The same, as the refusal of an unknown field lists them.
const FIELDS: &str =
    "url, triggers, match, secret, rate_limit, ordering, ordering_key, description, metadata, channels, headers";

/// Validates a `POST /v1/endpoints` body (`base` is `None`) or a `PATCH` body laid over the
/// endpoint's stored record, with exactly the config file's rules (`endpoint::validate`).
/// `null` clears an optional field in a PATCH. Returns the endpoint and the record to store;
/// nothing is applied here, so a refused body changes nothing.
pub fn validate_body(
    body: &Value,
    base: Option<&EndpointRecord>,
    delivery: &DeliveryConfig,
    tenant: &str,
    id: String,
    now_ms: u64,
) -> Result<(Endpoint, EndpointRecord), String> {
    let Value::Object(o) = body else {
        return Err(format!("the body must be a JSON object, not {}", body.kind()));
    };
    let patch = base.is_some();
    let known = |k: &str| KNOWN.contains(&k) || (patch && k == "enabled");
    if let Some((k, _)) = o.iter().find(|(k, _)| !known(k)) {
        let also = if patch { ", enabled" } else { "" };
        return Err(format!("unknown field `{k}`; expected {FIELDS}{also}"));
    }
    // Only the JSON syntax is checked here; the rules are `endpoint::validate`'s.
    let string = |name: &str, current: Option<&String>, required: bool| -> Result<Option<String>, String> {
        match o.get(name) {
            Some(Value::String(u)) => Ok(Some(u.clone())),
            Some(Value::Null) if !required => Ok(None),
            Some(other) => Err(format!("`{name}` must be a string, not {}", other.kind())),
            None if current.is_some() || !required => Ok(current.cloned()),
            None => Err(format!("missing `{name}`")),
        }
    };
    let url = string("url", base.map(|b| &b.url), true)?.unwrap_or_default();
    let triggers = body_triggers(o, base)?;
    let matches = body_matches(o, base)?;
    let secret = string("secret", base.and_then(|b| b.secret.as_ref()), false)?;
    let rate_limit = string("rate_limit", base.and_then(|b| b.rate_limit.as_ref()), false)?;
    let ordering = string("ordering", base.and_then(|b| b.ordering.as_ref()), false)?;
    // Turning ordering off (`"ordering": null`) drops the stored key with it, unless the body
    // names one (which `validate` then refuses): a key orders nothing on its own.
    let stored_key =
        base.and_then(|b| b.ordering_key.as_ref()).filter(|_| !matches!(o.get("ordering"), Some(Value::Null)));
    let ordering_key = string("ordering_key", stored_key, false)?;
    let spec = EndpointSpec {
        id,
        url,
        triggers,
        matches,
        secret: secret.clone(),
        rate_limit: rate_limit.clone(),
        ordering: ordering.clone(),
        ordering_key: ordering_key.clone(),
    };
    let valid = crate::endpoint::validate(spec, delivery.allow_http).map_err(|e| e.to_string())?;
    let extras = body_extras(o, base)?;
    let created_at_ms = base.map_or(now_ms, |b| b.created_at_ms);
    let internal = crate::endpoint::internal_id(tenant, &valid.id);
    let record = EndpointRecord {
        id: internal.clone(),
        tenant: (tenant != crate::model::DEFAULT_TENANT).then(|| tenant.to_owned()),
        url: valid.url.to_string(),
        triggers: match &valid.triggers {
            Triggers::All => vec!["*".into()],
            Triggers::Only(list) => list.clone(),
        },
        matches: valid.matches.iter().map(|(f, v)| (f.clone(), v.to_canonical())).collect(),
        secret,
        created_at_ms,
        rate_limit: valid.rate_limit.map(|r| r.to_string()),
        ordering: valid.fifo.as_ref().map(|_| "fifo".to_owned()),
        ordering_key: valid.fifo.as_ref().and_then(|f| f.key.clone()),
        // A change leaves a rotation's overlap as it was.
        previous_secret: base.and_then(|b| b.previous_secret.clone()),
        previous_until_ms: base.and_then(|b| b.previous_until_ms),
        description: extras.description.clone(),
        metadata: extras.metadata.clone(),
        channels: extras.channels.clone(),
        headers: extras.headers.clone(),
    };
    let previous_secret = previous_of(&record)?;
    let endpoint = Endpoint {
        id: internal,
        tenant: tenant.to_owned(),
        url: valid.url,
        triggers: valid.triggers,
        matches: valid.matches,
        secret: valid.secret,
        previous_secret,
        plugins: Vec::new(),
        origin: Origin::Api { created_at_ms },
        rate_limit: valid.rate_limit,
        fifo: valid.fifo,
        channels: extras.channels,
        headers: extras.headers.into_iter().collect(),
        description: extras.description,
        metadata: extras.metadata,
    };
    Ok((endpoint, record))
}

/// What an endpoint carries beside its delivery rules: a description, metadata, channels and
/// custom headers.
struct Extras {
    description: String,
    metadata: std::collections::BTreeMap<String, String>,
    channels: Vec<String>,
    headers: std::collections::BTreeMap<String, String>,
}

/// A body's extras (`null` clears one), the stored ones where a PATCH leaves them out.
fn body_extras(o: &json::Object, base: Option<&EndpointRecord>) -> Result<Extras, String> {
    let strings_map = |name: &str, current: Option<&std::collections::BTreeMap<String, String>>| match o.get(name) {
        Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.to_owned(), s.clone())),
                _ => Err(format!("`{name}`: the value of {k:?} must be a string")),
            })
            .collect(),
        Some(other) => Err(format!("`{name}` must be an object of strings, not {}", other.kind())),
        None => Ok(current.cloned().unwrap_or_default()),
    };
    let description = match o.get("description") {
        Some(Value::Null) => String::new(),
        Some(Value::String(d)) if d.len() <= 1024 => d.clone(),
        Some(Value::String(_)) => return Err("`description`: at most 1,024 bytes".into()),
        Some(other) => return Err(format!("`description` must be a string, not {}", other.kind())),
        None => base.map(|b| b.description.clone()).unwrap_or_default(),
    };
    let metadata = strings_map("metadata", base.map(|b| &b.metadata))?;
    if metadata.len() > 50 || metadata.iter().any(|(k, v)| k.len() + v.len() > 1024) {
        return Err("`metadata`: at most 50 pairs of at most 1,024 bytes each".into());
    }
    let headers = strings_map("headers", base.map(|b| &b.headers))?;
    crate::endpoint::check_headers(&headers)?;
    let channels = match o.get("channels") {
        Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| c.as_str().map(str::to_owned).ok_or("`channels` must be a list of strings".to_owned()))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("`channels` must be a list of strings, not {}", other.kind())),
        None => base.map(|b| b.channels.clone()).unwrap_or_default(),
    };
    crate::endpoint::check_channels(&channels)?;
    Ok(Extras { description, metadata, channels, headers })
}

/// A body's `triggers`, or the stored ones in a PATCH that leaves them out.
fn body_triggers(o: &json::Object, base: Option<&EndpointRecord>) -> Result<Vec<String>, String> {
    Ok(match o.get("triggers") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or("`triggers` must be a list of strings"))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("`triggers` must be a list of strings, not {}", other.kind())),
        None => match base {
            Some(b) => b.triggers.clone(),
            None => return Err("missing `triggers`".into()),
        },
    })
}

/// A body's `match` (`null` clears it), or the stored one in a PATCH that leaves it out.
fn body_matches(o: &json::Object, base: Option<&EndpointRecord>) -> Result<Option<Vec<(String, Value)>>, String> {
    Ok(match o.get("match") {
        Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.iter().map(|(f, v)| (f.to_owned(), v.clone())).collect()),
        Some(other) => return Err(format!("`match` must be an object, not {}", other.kind())),
        None => match base {
            Some(b) if !b.matches.is_empty() => Some(
                b.matches
                    .iter()
                    .map(|(f, v)| json::parse(v.as_bytes()).map(|v| (f.clone(), v)).map_err(|e| e.message))
                    .collect::<Result<_, _>>()?,
            ),
            _ => None,
        },
    })
}

/// A record's rotated-out secret and until when it signs.
fn previous_of(r: &EndpointRecord) -> Result<Option<(Secret, u64)>, String> {
    match (&r.previous_secret, r.previous_until_ms) {
        (Some(s), Some(until)) => Ok(Some((Secret::parse(s).map_err(|e| e.to_string())?, until))),
        _ => Ok(None),
    }
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
    let rate_limit = r.rate_limit.as_deref().map(RateLimit::parse).transpose()?;
    let fifo = r.ordering.as_ref().map(|_| Fifo { key: r.ordering_key.clone() });
    Ok(Endpoint {
        id: r.id.clone(),
        tenant: r.tenant.clone().unwrap_or_else(|| crate::model::DEFAULT_TENANT.to_owned()),
        url,
        triggers,
        matches,
        secret,
        previous_secret: previous_of(r)?,
        plugins: Vec::new(),
        origin: Origin::Api { created_at_ms: r.created_at_ms },
        rate_limit,
        fifo,
        channels: r.channels.clone(),
        headers: r.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        description: r.description.clone(),
        metadata: r.metadata.clone(),
    })
}
