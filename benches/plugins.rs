//! Plugin call cost through the real host path: a fresh store and instance from the pooling
//! allocator, the call, output validation and canonicalisation.
//!
//! `cargo bench --bench plugins` prints, for a filter (`only_event_types`) and two transforms
//! (`recall_envelope`, and `redact` over a ~1 KB envelope) in Rust, a JavaScript filter
//! (`speaker_filter`) and a Python transform (`slack_state`), the median microseconds per call
//! over several runs, called directly and through the chain path dispatch uses, the CPU time
//! per call (all threads), and the first call after load. `cargo bench --bench plugins --
//! only_event_types` runs only the cases whose label contains the word (for profiling one).

#[path = "../tests/util/wasm.rs"]
mod wasm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate::config::{OnError, PluginConfig};
use hookgate::plugin::{CallInput, PluginHost};

const RUNS: usize = 5;
const CALLS: usize = 2000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_at = |name: &str, path: std::path::PathBuf, config: Vec<(String, String)>| PluginConfig {
        name: name.into(),
        path,
        config,
        on_error: OnError::Fail,
        timeout: Duration::from_millis(50),
        memory_limit: 32 << 20,
        concurrency: 4,
    };
    let cfg = |name: &str, krate: &str, config: Vec<(String, String)>| cfg_at(name, wasm::plugin(krate), config);
    // The JavaScript and Python runtimes need a larger cap and deadline than the default.
    let big = |mut c: PluginConfig| {
        c.memory_limit = 128 << 20;
        c.timeout = Duration::from_secs(1);
        c
    };
    // cargo passes `--bench` to a bench without a harness; the first other word picks the cases
    // (and loads only their plugins, so that a profile is not all compilation).
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let labels = [
        ("filter: only_event_types", "filter"),
        ("transform: recall_envelope", "recall"),
        ("transform: redact (1 KB)", "redact"),
        ("js filter: speaker_filter", "js"),
        ("python: slack_state", "python"),
    ];
    let wanted = |name: &str| {
        labels.iter().any(|(label, n)| *n == name && only.as_ref().is_none_or(|o| label.contains(o.as_str())))
    };
    let mut configs = Vec::new();
    if wanted("filter") {
        configs.push(cfg(
            "filter",
            "only_event_types",
            vec![("event_types".into(), "post_processing_completed".into())],
        ));
    }
    if wanted("recall") {
        configs.push(cfg("recall", "recall_envelope", vec![]));
    }
    if wanted("redact") {
        configs.push(cfg("redact", "redact", vec![("pointers".into(), "/data/transcription/words".into())]));
    }
    if wanted("js") {
        let path = wasm::js_plugin("speaker_filter").expect("Node.js is needed");
        configs.push(big(cfg_at("js", path, vec![("speakers".into(), "[\"Ana\"]".into())])));
    }
    if wanted("python") {
        configs.push(big(cfg_at("python", wasm::python_plugin("slack_state").expect("Python is needed"), vec![])));
    }
    let host = Arc::new(PluginHost::load(&configs, dir.path()).unwrap());
    let state_change = r#"{"bot_id":"bot_3hfP6n8Qx2LmZk9a","bot_metadata":{"customer":"Zoë Müller","ticket":"42"},"data":{"created_at":"2025-07-15T14:30:45.123456+00:00","event_metadata":null,"event_sub_type":null,"event_type":"post_processing_completed","new_state":"ended","old_state":"post_processing"},"idempotency_key":"3f0c8a52-9a4e-4c1e-8a57-6c2d1b7e9f10","trigger":"bot.state_change"}"#;
    let words: Vec<String> = (0..20).map(|i| format!(r#"{{"word":"w{i}","start":{i}.5,"end":{i}.9}}"#)).collect();
    let transcript = format!(
        r#"{{"bot_id":"bot_x","bot_metadata":{{"team":"a"}},"data":{{"speaker_name":"Ana","timestamp_ms":1700000000123,"transcription":{{"transcript":"hello world","words":[{}]}}}},"idempotency_key":"9b1d2c3e-0000-4000-8000-000000000001","trigger":"transcript.update"}}"#,
        words.join(",")
    );
    let input = |trigger: &str, envelope: &str| CallInput {
        trigger: trigger.into(),
        event_id: "e".into(),
        endpoint_id: "ep".into(),
        envelope: envelope.into(),
        max_body_bytes: 262_144,
    };
    let cases = [
        ("filter: only_event_types", "filter", input("bot.state_change", state_change)),
        ("transform: recall_envelope", "recall", input("bot.state_change", state_change)),
        ("transform: redact (1 KB)", "redact", input("transcript.update", &transcript)),
        ("js filter: speaker_filter", "js", input("transcript.update", &transcript)),
        ("python: slack_state", "python", input("bot.state_change", state_change)),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("Hookgate plugin benchmark: {CALLS} calls x {RUNS} runs, median µs per call");
    println!(
        "{:<28} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "plugin", "bytes in", "first call", "direct", "chain", "CPU/call"
    );
    // cargo passes `--bench` to a bench without a harness; the first other word filters.
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    for (label, name, input) in
        cases.iter().filter(|(label, _, _)| only.as_ref().is_none_or(|o| label.contains(o.as_str())))
    {
        let t = Instant::now();
        rt.block_on(host.call_by_name(name, input)).unwrap();
        let first = t.elapsed().as_secs_f64() * 1e6;
        let mut cpu = Vec::new();
        let mut direct = Vec::new();
        let mut chained = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let c = cpu_ns();
            rt.block_on(async {
                for _ in 0..CALLS {
                    host.call_by_name(name, input).await.unwrap();
                }
            });
            direct.push(t.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
            cpu.push((cpu_ns() - c) as f64 / 1e3 / CALLS as f64);
            let chain = [(*name).to_string()];
            let t = Instant::now();
            rt.block_on(async {
                for _ in 0..CALLS {
                    host.run_chain(&chain, input.clone()).await;
                }
            });
            chained.push(t.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
        }
        direct.sort_by(|a, b| a.partial_cmp(b).unwrap());
        chained.sort_by(|a, b| a.partial_cmp(b).unwrap());
        cpu.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{label:<28} {:>8} {:>10.0} {:>10.1} {:>10.1} {:>12.1}",
            input.envelope.len(),
            first,
            direct[RUNS / 2],
            chained[RUNS / 2],
            cpu[RUNS / 2]
        );
    }
}

/// CPU time of every thread of this process so far, in nanoseconds (Linux schedstat).
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
