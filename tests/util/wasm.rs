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

static JS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// `plugins/target/js/<name>.wasm`, built from `plugins/js/<name>/plugin.js` with
/// componentize-js (installed by `npm ci` from the lockfile). `None`, after saying how to
/// install Node.js, when it is missing locally; under `CI` a missing toolchain fails the test.
pub fn js_plugin(name: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let built = JS.get_or_init(|| {
        let js = root.join("js");
        toolchain("node", "Node.js and npm (Debian: `apt-get install nodejs npm`)")?;
        if !js.join("node_modules/@bytecodealliance/componentize-js").exists()
            || !js.join("node_modules/@bytecodealliance/preview2-shim").exists()
        {
            run(std::process::Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&js))?;
        }
        run(std::process::Command::new("node").arg("build.mjs").current_dir(&js))?;
        Ok(root.join("target/js"))
    });
    pick(built, name)
}

/// `plugins/target/python/<name>.wasm`, built from `plugins/python/<name>/app.py` with
/// componentize-py (installed into `plugins/python/.venv` from `requirements.txt`). `None`,
/// after saying how to install Python, when it is missing locally; under `CI` it fails.
pub fn python_plugin(name: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let built = PYTHON.get_or_init(|| {
        let py = root.join("python");
        toolchain("python3", "Python 3 with venv (Debian: `apt-get install python3 python3-venv`)")?;
        let venv = py.join(".venv");
        if !venv.join("bin/componentize-py").exists() {
            run(std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
            run(std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "-r", "requirements.txt"])
                .current_dir(&py))?;
        }
        let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        run(std::process::Command::new("bash").arg("build.sh").env("PATH", path).current_dir(&py))?;
        Ok(root.join("target/python"))
    });
    pick(built, name)
}

fn pick(built: &Result<PathBuf, String>, name: &str) -> Option<PathBuf> {
    match built {
        Ok(dir) => {
            let path = dir.join(format!("{name}.wasm"));
            assert!(path.exists(), "{} was not built", path.display());
            Some(path)
        }
        Err(e) if e.starts_with("missing:") && std::env::var_os("CI").is_none() => {
            // Past the harness's capture (this file is also part of a bench, so it cannot
            // lean on `util::skipped`).
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "\nSKIPPED (not under CI): {e}\n");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn toolchain(program: &str, install: &str) -> Result<(), String> {
    match std::process::Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!("missing: `{program}` is needed to build this plugin; install {install}")),
    }
}

pub fn run(cmd: &mut std::process::Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
