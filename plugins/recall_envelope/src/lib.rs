//! `recall_envelope` — a transform: turns an Attendee `bot.state_change` envelope into the shape
//! Recall.ai's receivers expect, so one producer can serve receivers written for either:
//!
//! ```json
//! {"event": "bot.<code>",
//!  "data": {"data": {"code": "...", "sub_code": null, "updated_at": "..."},
//!           "bot": {"id": "...", "metadata": {}}}}
//! ```
//!
//! Attendee states map to Recall's status codes where one exists (`joined_recording` →
//! `in_call_recording`, `ended` → `done`, ...); any other state passes through under its own
//! name, because neither side's list is closed. Events of other triggers pass unchanged.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use serde_json::{Value, json};

struct RecallEnvelope;

/// Attendee `new_state` → Recall status code.
fn recall_code(state: &str) -> &str {
    match state {
        "joining" => "joining_call",
        "waiting_room" => "in_waiting_room",
        "joined_not_recording" | "joined_recording_paused" | "paused" => "in_call_not_recording",
        "joined_recording_permission_denied" => "recording_permission_denied",
        "joined_recording" => "in_call_recording",
        "post_processing" => "call_ended",
        "ended" => "done",
        "fatal_error" => "fatal",
        other => other,
    }
}

impl Guest for RecallEnvelope {
    fn handle(d: Delivery) -> Result<Decision, String> {
        if d.trigger != "bot.state_change" {
            return Ok(Decision::Keep);
        }
        let env: Value = serde_json::from_str(&d.envelope).map_err(|e| format!("envelope is not JSON: {e}"))?;
        let data = &env["data"];
        let state = data["new_state"].as_str().ok_or("data.new_state is missing or not a string")?;
        let code = recall_code(state);
        let metadata = match &env["bot_metadata"] {
            Value::Null => json!({}),
            m => m.clone(),
        };
        let out = json!({
            "event": format!("bot.{code}"),
            "data": {
                "data": {
                    "code": code,
                    "sub_code": data["event_sub_type"],
                    "updated_at": data["created_at"],
                },
                "bot": { "id": env["bot_id"], "metadata": metadata },
            },
        });
        Ok(Decision::Replace(out.to_string()))
    }
}

export!(RecallEnvelope);
