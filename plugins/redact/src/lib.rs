//! `redact` — a transform: removes the fields at the configured JSON pointers (RFC 6901) from
//! the envelope before it leaves, e.g. transcripts' word timings or an email in the metadata.
//! Pointers that match nothing are ignored.
//!
//! Config: `pointers` — a comma-separated list (`"/data/transcription/words,/bot_metadata/email"`)
//! or a TOML array of strings.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use serde_json::Value;

struct Redact;

impl Guest for Redact {
    fn handle(d: Delivery) -> Result<Decision, String> {
        let raw = &d
            .config
            .iter()
            .find(|(k, _)| k == "pointers")
            .ok_or("missing config key `pointers` (comma-separated JSON pointers)")?
            .1;
        let pointers: Vec<String> = if raw.trim_start().starts_with('[') {
            serde_json::from_str(raw).map_err(|e| format!("`pointers` is not a list of strings: {e}"))?
        } else {
            raw.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
        };
        let mut env: Value = serde_json::from_str(&d.envelope).map_err(|e| format!("envelope is not JSON: {e}"))?;
        let mut removed = 0;
        for p in &pointers {
            if !p.starts_with('/') {
                return Err(format!("{p:?} is not a JSON pointer (it must start with '/')"));
            }
            removed += usize::from(remove(&mut env, p));
        }
        if removed == 0 {
            return Ok(Decision::Keep);
        }
        Ok(Decision::Replace(env.to_string()))
    }
}

/// Removes the value at `pointer`; returns whether something was removed.
fn remove(root: &mut Value, pointer: &str) -> bool {
    let (parent, last) = match pointer.rfind('/') {
        Some(i) => (&pointer[..i], &pointer[i + 1..]),
        None => return false,
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match root.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last).is_some(),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

export!(Redact);
