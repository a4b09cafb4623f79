//! `only_event_types` — a filter: keeps the `bot.state_change` events whose `data.event_type`
//! is one of the configured types, and drops the other state changes. Events of other
//! triggers pass unchanged.
//!
//! Config: `event_types` — a comma-separated list (`"post_processing_completed,fatal_error"`)
//! or a TOML array of strings.
//!
//! The classic use is Attendee's "tell me when the recording is ready":
//! `event_types = "post_processing_completed"`.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use hookgate::plugin::host::{Level, log};

struct OnlyEventTypes;

impl Guest for OnlyEventTypes {
    fn handle(d: Delivery) -> Result<Decision, String> {
        if d.trigger != "bot.state_change" {
            return Ok(Decision::Keep);
        }
        let wanted = config_list(&d.config, "event_types")
            .ok_or("missing config key `event_types` (a comma-separated list of event types)")?;
        let envelope: serde_json::Value =
            serde_json::from_str(&d.envelope).map_err(|e| format!("envelope is not JSON: {e}"))?;
        let event_type = envelope["data"]["event_type"].as_str().unwrap_or("");
        if wanted.iter().any(|w| w == event_type) {
            Ok(Decision::Keep)
        } else {
            log(Level::Debug, &format!("dropping event_type {event_type:?}"));
            Ok(Decision::Drop(format!("event_type {event_type:?} is not one of {}", wanted.join(", "))))
        }
    }
}

/// Reads a list from the config: a TOML array (arriving as its TOML text) or a comma-separated
/// string.
fn config_list(config: &[(String, String)], key: &str) -> Option<Vec<String>> {
    let raw = &config.iter().find(|(k, _)| k == key)?.1;
    let list = if raw.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw).ok()?
    } else {
        raw.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
    };
    Some(list)
}

export!(OnlyEventTypes);
