//! Test-only guest: misbehaves in the way its `mode` config value names, to prove the host's
//! limits hold whatever a guest calls.
//!
//! - `sleep`: sleeps `ms` milliseconds inside the host (WASI clocks + poll), then keeps.
//! - `exit`: calls `exit(0)` instead of returning.
//! - `resources`: creates host-side pollables in a loop and never frees them.
//! - `log-flood`: writes `lines` log lines of `bytes` bytes each, then keeps.
//! - `big-reason`: drops with a 1 MiB reason.
//! - `big-error`: returns a 1 MiB error.
//! - `observe`: replaces the body with what it can see of the host: the wall clock, random
//!   bytes, environment variables and arguments, and whether a file can be opened.

wit_bindgen::generate!({ path: "../../../wit", world: "plugin" });

use hookgate::plugin::host::{log, Level};

struct Hostile;

fn config<'a>(d: &'a Delivery, key: &str) -> Option<&'a str> {
    d.config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Guest for Hostile {
    fn handle(d: Delivery) -> Result<Decision, String> {
        let number = |key: &str, default: u64| config(&d, key).and_then(|v| v.parse().ok()).unwrap_or(default);
        match config(&d, "mode").unwrap_or("") {
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(number("ms", 12_000)));
                Ok(Decision::Keep)
            }
            "exit" => std::process::exit(0),
            "resources" => {
                let mut kept = Vec::new();
                loop {
                    kept.push(wasip2::clocks::monotonic_clock::subscribe_duration(1_000_000_000));
                }
            }
            "log-flood" => {
                let line = "x".repeat(number("bytes", 100) as usize);
                for _ in 0..number("lines", 100_000) {
                    log(Level::Info, &line);
                }
                Ok(Decision::Keep)
            }
            "big-reason" => Ok(Decision::Drop("r".repeat(1 << 20))),
            "big-error" => Err("e".repeat(1 << 20)),
            "observe" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let random = wasip2::random::random::get_random_u64();
                let env = std::env::vars().count();
                let args = std::env::args().count();
                let file = std::fs::read("/etc/hostname").is_ok() || std::fs::read("plugin.wasm").is_ok();
                Ok(Decision::Replace(format!(
                    r#"{{"unix_seconds":{now},"random":{random},"env":{env},"args":{args},"file":{file}}}"#
                )))
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

export!(Hostile);
