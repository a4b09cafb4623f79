//! Test-only guest: never returns. The host's epoch deadline must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "plugin" });

struct Spin;

impl Guest for Spin {
    fn handle(_: hookgate::plugin::types::Delivery) -> Result<hookgate::plugin::types::Decision, String> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Spin);
