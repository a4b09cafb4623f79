//! The plugin components tests use, built once per test run from `plugins/` for
//! wasm32-wasip2, so `cargo test` alone is all a fresh machine needs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The path of `plugins/target/wasm32-wasip2/release/<name>.wasm`, building the plugins
/// workspace first (once per process; cargo makes repeat builds cheap).
pub fn plugin(name: &str) -> PathBuf {
    let dir = BUILT.get_or_init(build).as_ref().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = root.join("plugins/Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(&cargo)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        // The outer build's settings are for the host target, not for the guests.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(root.join("plugins"))
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the plugins failed; run `cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml` to see why:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(root.join("plugins/target/wasm32-wasip2/release"))
}
