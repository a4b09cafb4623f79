//! Test-only guest: panics (a trap), after writing to stderr, unless the envelope's
//! `data.survive` is true, in which case it keeps the delivery. Used to check that a trap is
//! contained and that the next call works.

wit_bindgen::generate!({ path: "../../../wit", world: "plugin" });

struct Trap;

impl Guest for Trap {
    fn handle(d: hookgate::plugin::types::Delivery) -> Result<hookgate::plugin::types::Decision, String> {
        if d.envelope.contains("\"survive\":true") {
            return Ok(hookgate::plugin::types::Decision::Keep);
        }
        panic!("guest_trap was asked to fail for event {}", d.event_id);
    }
}

export!(Trap);
