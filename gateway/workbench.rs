//! The plugin workbench: `hookgate plugin run` and `hookgate plugin new`.
//!
//! Owns: running one event through the chain a delivery would get, with no store and no
//! delivery, and printing what each plugin did; writing a plugin skeleton for each language.
//! Must not touch: the store, dispatch or HTTP. It uses the same config loader, envelope
//! builder and plugin host as the gateway, so what it prints is what the gateway would do.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::json::{self, Value};
use crate::plugin::{CallInput, ChainOutcome, Decision, PluginHost};

/// How `plugin run` ended; the process exits with [`Verdict::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    Filtered,
    Failed,
}

impl Verdict {
    /// 0 deliver, 1 filtered, 2 failed (a bad command line or config exits 3).
    pub fn code(self) -> u8 {
        match self {
            Verdict::Deliver => 0,
            Verdict::Filtered => 1,
            Verdict::Failed => 2,
        }
    }
}

/// The arguments of `plugin run`.
pub struct RunArgs<'a> {
    pub config: &'a Config,
    pub trigger: &'a str,
    pub endpoint: Option<&'a str>,
    /// The event as the producer would POST it (`trigger` may be left out).
    pub event: &'a [u8],
}

/// Runs the chain and returns the report to print and the verdict; `Err` is a usage or load
/// error, named.
pub async fn run(args: RunArgs<'_>) -> Result<(String, Verdict), String> {
    let RunArgs { config, trigger, endpoint, event } = args;
    let value = json::parse(event).map_err(|e| format!("--event is not valid JSON: {}", e.message))?;
    let Value::Object(mut fields) = value else {
        return Err(format!("--event must be a JSON object, not {}", value.kind()));
    };
    match fields.get("trigger") {
        None => {
            fields.insert("trigger".into(), Value::String(trigger.to_owned()));
        }
        Some(Value::String(t)) if t == trigger => {}
        Some(other) => {
            return Err(format!("the event's `trigger` is {}, but --trigger is {trigger:?}", other.to_canonical()));
        }
    }
    if !matches!(fields.get("data"), Some(Value::Object(_))) {
        return Err("the event needs a `data` object, as the ingest API requires".into());
    }
    let chain = match endpoint {
        Some(id) => {
            let Some(ep) = config.endpoints.iter().find(|e| e.id == id) else {
                let known: Vec<&str> = config.endpoints.iter().map(|e| e.id.as_str()).collect();
                return Err(format!("no endpoint {id:?} in the config (it has: {})", known.join(", ")));
            };
            if !ep.triggers.contains(trigger) {
                return Err(format!("endpoint {id:?} does not subscribe to {trigger:?}; no delivery would be made"));
            }
            config.chain(trigger, ep)
        }
        None => config.trigger_plugins.get(trigger).cloned().unwrap_or_default(),
    };
    fields.insert("idempotency_key".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    let envelope = Value::Object(fields).to_canonical();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "chain for {trigger:?}{}: {}",
        endpoint.map(|e| format!(" to endpoint {e:?}")).unwrap_or_default(),
        if chain.is_empty() { "(no plugins)".to_owned() } else { chain.join(" → ") }
    );
    if chain.is_empty() {
        let _ = writeln!(out, "\nresult: deliver\n{envelope}");
        return Ok((out, Verdict::Deliver));
    }
    let wanted: Vec<_> = config.plugins.iter().filter(|p| chain.contains(&p.name)).cloned().collect();
    let cache = cache_dir(config);
    let host = tokio::task::spawn_blocking(move || PluginHost::load(&wanted, &cache))
        .await
        .map_err(|e| format!("loading plugins failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let input = CallInput {
        trigger: trigger.to_owned(),
        event_id: uuid::Uuid::now_v7().to_string(),
        endpoint_id: endpoint.unwrap_or("").to_owned(),
        envelope: envelope.clone(),
        max_body_bytes: config.server.max_body_bytes,
    };
    let (outcome, reports) = host.run_chain_traced(&chain, input).await;
    for r in &reports {
        let decision = match &r.result {
            Ok(Decision::Keep) => "keep".to_owned(),
            Ok(Decision::Drop(reason)) => format!("drop: {reason}"),
            Ok(Decision::Replace(body)) => format!("replace ({} bytes)", body.len()),
            Err(e) if r.skipped => format!("failed, skipped (on_error = \"skip\"): {e}"),
            Err(e) => format!("failed: {e}"),
        };
        let _ = writeln!(
            out,
            "\n[{}] {decision}\n  time {:.3} ms, memory {:.1} MiB",
            r.plugin,
            r.elapsed.as_secs_f64() * 1e3,
            r.peak_memory as f64 / (1 << 20) as f64
        );
        for (level, line) in &r.log {
            let _ = writeln!(out, "  log {level}: {line}");
        }
        if r.log_dropped > 0 {
            let _ = writeln!(out, "  ({} log lines over the per-call budget were dropped)", r.log_dropped);
        }
    }
    let verdict = match outcome {
        ChainOutcome::Deliver { body } => {
            let _ = writeln!(out, "\nresult: deliver (this body is signed and sent)\n{}", body.unwrap_or(envelope));
            Verdict::Deliver
        }
        ChainOutcome::Filtered { plugin, reason } => {
            let _ = writeln!(out, "\nresult: filtered by {plugin:?}: {reason}");
            Verdict::Filtered
        }
        ChainOutcome::Failed { plugin, message } => {
            let _ = writeln!(out, "\nresult: failed in {plugin:?}: {message}");
            Verdict::Failed
        }
    };
    Ok((out, verdict))
}

/// The gateway's own compile cache when its data dir exists (so a later `serve` starts warm),
/// otherwise one in the system's temp dir.
fn cache_dir(config: &Config) -> PathBuf {
    if config.server.data_dir.is_dir() {
        config.server.data_dir.clone()
    } else {
        std::env::temp_dir().join("hookgate-workbench")
    }
}

/// A language `plugin new` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "rust" => Some(Lang::Rust),
            "js" | "javascript" => Some(Lang::Js),
            "python" | "py" => Some(Lang::Python),
            _ => None,
        }
    }
}

const WIT: &str = include_str!("../wit/hookgate.wit");

const SAMPLE_EVENT: &str = r#"{
  "trigger": "bot.state_change",
  "bot_id": "bot_123",
  "bot_metadata": {"customer": "acme"},
  "data": {
    "new_state": "ended",
    "old_state": "post_processing",
    "created_at": "2025-07-15T14:30:45.123456+00:00",
    "event_type": "post_processing_completed",
    "event_sub_type": null,
    "event_metadata": null
  }
}
"#;

/// Writes a ready-to-build plugin called `name` into `dir/name`: the WIT, the source, a build
/// script, a sample event and a config that `plugin run` accepts once built. Returns the folder.
pub fn new_plugin(lang: Lang, name: &str, dir: &Path) -> Result<PathBuf, String> {
    if !crate::config::valid_plugin_name(name) {
        return Err(format!("{name:?} is not a valid plugin name (a-z, 0-9, '-', '_')"));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let snake = name.replace('-', "_");
    let (files, built): (Vec<(&str, String)>, String) = match lang {
        Lang::Rust => (
            vec![
                ("Cargo.toml", RUST_CARGO.replace("{name}", &snake)),
                ("src/lib.rs", RUST_LIB.to_owned()),
                ("build.sh", RUST_BUILD.replace("{name}", &snake)),
            ],
            format!("target/wasm32-wasip2/release/{snake}.wasm"),
        ),
        Lang::Js => (
            vec![
                ("plugin.js", JS_PLUGIN.to_owned()),
                ("package.json", JS_PACKAGE.replace("{name}", name)),
                ("build.mjs", JS_BUILD.replace("{name}", name)),
                ("build.sh", "#!/usr/bin/env bash\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n[ -d node_modules ] || npm install --no-audit --no-fund\nnode build.mjs\n".to_owned()),
            ],
            format!("{name}.wasm"),
        ),
        Lang::Python => (
            vec![
                ("app.py", PY_APP.to_owned()),
                ("requirements.txt", "componentize-py==0.25.1\n".to_owned()),
                ("build.sh", PY_BUILD.replace("{name}", name)),
            ],
            format!("{name}.wasm"),
        ),
    };
    let config = format!(
        "# Try it: hookgate plugin run --config hookgate.toml --trigger bot.state_change --event event.json\n\
         [server]\ndata_dir = \"data\"\n\n[auth]\ningest_tokens = [\"dev-ingest-token-0123456789\"]\n\
         admin_tokens = [\"dev-admin-token-0123456789\"]\n\n[signing]\nsecret = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/wDxEK+yq48=\"\n\n\
         [[plugins]]\nname = \"{name}\"\npath = \"{built}\"\n{limits}\n[triggers.\"bot.state_change\"]\nplugins = [\"{name}\"]\n",
        limits = if lang == Lang::Rust {
            ""
        } else {
            "# The runtime's first call after a start takes a few milliseconds more than the rest.\ntimeout = \"250ms\"\n"
        }
    );
    let write = |rel: &str, text: &str| -> Result<(), String> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    for (rel, text) in &files {
        write(rel, text)?;
    }
    write("wit/hookgate.wit", WIT)?;
    write("event.json", SAMPLE_EVENT)?;
    write("hookgate.toml", &config)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(root.join("build.sh"), std::fs::Permissions::from_mode(0o755));
    }
    Ok(root)
}

const RUST_CARGO: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = "0.61"
serde_json = "1"

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
"#;

const RUST_LIB: &str = r#"//! A Hookgate plugin: keeps `bot.state_change` deliveries whose `data.new_state` is in the
//! `states` config value (comma-separated; default "ended"), and passes other triggers.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use hookgate::plugin::host::{log, Level};

struct Plugin;

impl Guest for Plugin {
    fn handle(d: Delivery) -> Result<Decision, String> {
        if d.trigger != "bot.state_change" {
            return Ok(Decision::Keep);
        }
        let envelope: serde_json::Value = serde_json::from_str(&d.envelope).map_err(|e| e.to_string())?;
        let states = d.config.iter().find(|(k, _)| k == "states").map(|(_, v)| v.as_str()).unwrap_or("ended");
        let state = envelope["data"]["new_state"].as_str().unwrap_or("");
        log(Level::Debug, &format!("new_state is {state:?}"));
        if states.split(',').any(|s| s.trim() == state) {
            Ok(Decision::Keep)
        } else {
            Ok(Decision::Drop(format!("new_state {state:?} is not in {states:?}")))
        }
    }
}

export!(Plugin);
"#;

const RUST_BUILD: &str = r#"#!/usr/bin/env bash
# Builds the component: needs the wasm32-wasip2 target (`rustup target add wasm32-wasip2`).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
echo "built target/wasm32-wasip2/release/{name}.wasm"
"#;

const JS_PLUGIN: &str = r#"// A Hookgate plugin: keeps `bot.state_change` deliveries whose `data.new_state` is in the
// `states` config value (comma-separated; default "ended"), and passes other triggers.
import { log } from 'hookgate:plugin/host@0.1.0';

export function handle(delivery) {
  if (delivery.trigger !== 'bot.state_change') {
    return { tag: 'keep' };
  }
  const envelope = JSON.parse(delivery.envelope);
  const config = new Map(delivery.config);
  const states = (config.get('states') ?? 'ended').split(',').map((s) => s.trim());
  const state = envelope.data?.new_state ?? '';
  log('debug', `new_state is ${JSON.stringify(state)}`);
  if (states.includes(state)) {
    return { tag: 'keep' };
  }
  // To reshape the body instead: return { tag: 'replace', val: JSON.stringify({...}) };
  return { tag: 'drop', val: `new_state ${JSON.stringify(state)} is not in ${states.join(',')}` };
}
"#;

const JS_PACKAGE: &str = r#"{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": { "build": "node build.mjs" },
  "//": "componentize-js imports preview2-shim at build time but declares it only as an optional peer.",
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

const JS_BUILD: &str = r#"// Builds plugin.js into {name}.wasm. Only `host.log`, clocks and randomness are imported:
// Hookgate gives plugins nothing else.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'plugin.js',
  witPath: 'wit',
  worldName: 'plugin',
  disableFeatures: ['stdio', 'http', 'fetch-event'],
});
await writeFile('{name}.wasm', component);
console.log(`built {name}.wasm (${component.length} bytes)`);
"#;

const PY_APP: &str = r#""""A Hookgate plugin: keeps `bot.state_change` deliveries whose `data.new_state` is in the
`states` config value (comma-separated; default "ended"), and passes other triggers."""

import json

import wit_world
from wit_world.imports import host, types


class WitWorld(wit_world.WitWorld):
    def handle(self, delivery: types.Delivery) -> types.Decision:
        if delivery.trigger != "bot.state_change":
            return types.Decision_Keep()
        envelope = json.loads(delivery.envelope)
        states = [s.strip() for s in dict(delivery.config).get("states", "ended").split(",")]
        state = (envelope.get("data") or {}).get("new_state", "")
        host.log(host.Level.DEBUG, f"new_state is {state!r}")
        if state in states:
            return types.Decision_Keep()
        # To reshape the body instead: return types.Decision_Replace(json.dumps({...}))
        # To fail the delivery: raise componentize_py_types.Err("why")
        return types.Decision_Drop(f"new_state {state!r} is not in {','.join(states)}")
"#;

const PY_BUILD: &str = r#"#!/usr/bin/env bash
# Builds app.py into {name}.wasm with componentize-py, installed into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/componentize-py ] || { python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt; }
.venv/bin/componentize-py -q -d wit -w plugin componentize app -o {name}.wasm
echo "built {name}.wasm"
"#;
