//! Event types' JSON Schemas, checked at ingest when `[event_types] validate` is on.
//!
//! Owns: compiling a schema (`jsonschema`, no remote references), which version of an event
//! type's schemas applies (the newest), and a small cache of compiled validators.
//! Must not touch: HTTP (handlers turn an [`Invalid`] into a 422) or writes to the store.
//!
//! The cache keeps each event type's validator for [`FRESH`]: a change made through this
//! node's API is seen at once (`forget`), one made through another node within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError};

/// How long a compiled validator (or the absence of one) is trusted.
pub const FRESH: Duration = Duration::from_secs(5);

/// A payload that does not match its event type's schema: where, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// A JSON Pointer into the payload (`""`: the payload itself).
    pub path: String,
    pub message: String,
}

/// Compiles one schema, or says why it cannot be.
pub fn compile(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// The newest version's schema of a `{"<version>": schema}` object (versions compare as
/// numbers when they are numbers).
fn newest(schemas: &serde_json::Value) -> Option<&serde_json::Value> {
    let versions = schemas.as_object()?;
    versions.iter().max_by_key(|(v, _)| (v.parse::<u64>().unwrap_or(0), v.as_str())).map(|(_, s)| s)
}

type Entry = (Instant, Option<Arc<jsonschema::Validator>>);

/// The validators of the event types, compiled on first use.
pub struct Schemas {
    store: Store,
    cache: Mutex<HashMap<String, Entry>>,
    /// Held by an event type's create from its check that the name is free until it is
    /// stored, so that of two concurrent creates one gets 409.
    pub creating: tokio::sync::Mutex<()>,
}

impl Schemas {
    pub fn new(store: Store) -> Schemas {
        Schemas { store, cache: Mutex::new(HashMap::new()), creating: tokio::sync::Mutex::new(()) }
    }

    /// Drops what is cached of `name` (its event type changed).
    pub fn forget(&self, name: &str) {
        self.cache.lock().expect("schemas lock").remove(name);
    }

    /// Checks `payload` against the schema of event type `name`; an event type without one
    /// (or no such event type) accepts everything.
    pub async fn check(&self, name: &str, payload: &serde_json::Value) -> Result<Result<(), Invalid>, StoreError> {
        let Some(validator) = self.validator(name).await? else { return Ok(Ok(())) };
        Ok(match validator.validate(payload) {
            Ok(()) => Ok(()),
            Err(e) => Err(Invalid { path: e.instance_path().to_string(), message: e.to_string() }),
        })
    }

    async fn validator(&self, name: &str) -> Result<Option<Arc<jsonschema::Validator>>, StoreError> {
        if let Some((at, v)) = self.cache.lock().expect("schemas lock").get(name)
            && at.elapsed() < FRESH
        {
            return Ok(v.clone());
        }
        let types = self.store.event_types().await?;
        let schema = types
            .iter()
            .find(|t| t.name == name && !t.archived)
            .and_then(|t| t.schemas.as_deref())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
        // Schemas are checked when they are stored; one that no longer compiles checks nothing
        // rather than refusing every event.
        let validator = schema.as_ref().and_then(newest).and_then(|s| compile(s).ok()).map(Arc::new);
        self.cache.lock().expect("schemas lock").insert(name.to_owned(), (Instant::now(), validator.clone()));
        Ok(validator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_version_applies() {
        let s = json!({"1": {"type": "string"}, "10": {"type": "object"}, "2": {"type": "number"}});
        assert_eq!(newest(&s), Some(&json!({"type": "object"})));
        assert_eq!(newest(&json!({})), None);
    }

    #[test]
    fn invalid_schemas_do_not_compile() {
        assert!(compile(&json!({"type": "object", "required": ["a"]})).is_ok());
        assert!(compile(&json!({"type": 5})).is_err());
    }
}
