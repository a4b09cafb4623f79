//! Test-only guest: returns a "replacement" body that is not a JSON object.

wit_bindgen::generate!({ path: "../../../wit", world: "plugin" });

struct Bad;

impl Guest for Bad {
    fn handle(_: hookgate::plugin::types::Delivery) -> Result<hookgate::plugin::types::Decision, String> {
        Ok(hookgate::plugin::types::Decision::Replace("[\"valid JSON\", \"but not an object\"]".into()))
    }
}

export!(Bad);
