//! Test-only guest: allocates without bound. The host's memory cap must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "plugin" });

struct Hog;

impl Guest for Hog {
    fn handle(_: hookgate::plugin::types::Delivery) -> Result<hookgate::plugin::types::Decision, String> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            blocks.push(std::hint::black_box(vec![7u8; 1 << 20]));
        }
    }
}

export!(Hog);
