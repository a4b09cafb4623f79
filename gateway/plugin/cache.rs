//! The compiled-component cache: each plugin is compiled by Cranelift once, and the artifact is
//! kept in `data_dir/plugin-cache/` so that restarts load it instead of compiling again.
//!
//! Owns: cache keys, reading and writing artifacts, and the one `unsafe` block of the gateway.
//! Must not touch: instantiation or calls.
//!
//! The key is the SHA-256 of the component's bytes plus a hash of the engine's compatibility
//! hash (wasmtime version and every setting that affects code generation), so a changed plugin,
//! a wasmtime upgrade or a changed engine setting all miss the cache instead of loading code
//! that does not fit.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a plugin's compiled code came from this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// Compiled now and written to the cache.
    Compiled,
    /// Loaded from the cache.
    Cached,
}

/// Loads the component at `path`, from `cache_dir` when a matching artifact is there.
pub fn load(engine: &Engine, path: &Path, cache_dir: &Path) -> Result<(Component, Source), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let artifact = cache_dir.join(key(engine, &bytes));
    if artifact.exists() {
        match deserialize(engine, &artifact) {
            Ok(c) => return Ok((c, Source::Cached)),
            Err(e) => {
                tracing::warn!(artifact = %artifact.display(), error = %e, "ignoring an unusable cached plugin artifact")
            }
        }
    }
    let component = Component::from_binary(engine, &bytes)
        .map_err(|e| format!("{} is not a WebAssembly component this gateway can run: {e}", path.display()))?;
    match component.serialize() {
        Ok(serialized) => {
            if let Err(e) = write_atomically(&artifact, &serialized) {
                tracing::warn!(error = %e, "cannot write the plugin cache; plugins will be compiled at every start");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot serialise a compiled plugin"),
    }
    Ok((component, Source::Compiled))
}

fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}.cwasm", h.finish())
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be an artifact produced by
    // `Component::serialize` with a compatible engine, because it maps it as executable code.
    // The file lives in our own data_dir, was written by `load` above (atomically, via rename,
    // so never half-written), and is named by the source's hash and the engine's compatibility
    // hash; wasmtime additionally checks its header for version and configuration
    // compatibility. Anyone able to replace it could equally replace the binary or the database.
    unsafe { Component::deserialize_file(engine, artifact) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp: PathBuf = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
