//! Plugins: the example plugins through the full pipeline, hostile guests contained within
//! their limits, the compiled-artifact cache, and bad plugin configs.

use std::time::{Duration, Instant};

use hookgate::config::{OnError, PluginConfig};
use hookgate::plugin::{CallInput, Decision, PluginError, PluginHost, Source};
use serde_json::json;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

/// A `[[plugins]]` table for a component built from `plugins/`.
fn plugin_table(name: &str, crate_name: &str, extra: &str) -> String {
    format!("\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n", wasm::plugin(crate_name).display())
}

fn plugin_config(name: &str, crate_name: &str) -> PluginConfig {
    PluginConfig {
        name: name.into(),
        path: wasm::plugin(crate_name),
        config: vec![],
        on_error: OnError::Fail,
        timeout: Duration::from_millis(50),
        memory_limit: 8 << 20,
        concurrency: 4,
    }
}

fn hostile(name: &str, timeout_ms: u64, config: &[(&str, &str)]) -> PluginConfig {
    let mut c = plugin_config(name, "guest_hostile");
    c.timeout = Duration::from_millis(timeout_ms);
    c.config = config.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    c
}

fn input(envelope: &str) -> CallInput {
    CallInput {
        trigger: "bot.state_change".into(),
        event_id: "e".into(),
        endpoint_id: "ep".into(),
        envelope: envelope.into(),
        max_body_bytes: 262_144,
    }
}

/// `only_event_types` on the trigger's chain: the recording-ready event is delivered, another
/// state change is filtered (never reaches the receiver) and says which plugin dropped it.
#[tokio::test]
async fn only_event_types_filters_and_the_log_says_why() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &plugin_table(
            "only-recordings",
            "only_event_types",
            "config = { event_types = \"post_processing_completed\" }",
        )
        + "\n[triggers.\"bot.state_change\"]\nplugins = [\"only-recordings\"]\n"
        + &endpoint("acme", &rx.url("/"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;

    let mut joined = state_change("b1");
    joined["data"]["event_type"] = json!("bot_joined_meeting");
    let (_, dropped) = gw.ingest(&joined).await;
    let (_, kept) = gw.ingest(&state_change("b1")).await;
    let (_, other) = gw.ingest(&json!({"trigger": "transcript.update", "bot_id": "b1", "data": {}})).await;

    let a = rx.next(WAIT).await;
    let b = rx.next(WAIT).await;
    let mut got = [a.json()["trigger"].as_str().unwrap().to_owned(), b.json()["trigger"].as_str().unwrap().to_owned()];
    got.sort();
    assert_eq!(got, ["bot.state_change", "transcript.update"]);
    for r in [&a, &b] {
        if r.json()["trigger"] == "bot.state_change" {
            assert_eq!(r.json()["data"]["event_type"], "post_processing_completed");
        }
    }
    rx.assert_silent(Duration::from_millis(300)).await;

    let id = &gw.delivery_ids(dropped["event_id"].as_str().unwrap()).await[0];
    let d = gw.settled(id, WAIT).await;
    assert_eq!(d["state"], "filtered", "{d}");
    assert_eq!(d["filtered"]["plugin"], "only-recordings");
    assert!(d["filtered"]["reason"].as_str().unwrap().contains("bot_joined_meeting"), "{d}");
    assert_eq!(d["attempts"], json!([]));
    for e in [kept, other] {
        let id = &gw.delivery_ids(e["event_id"].as_str().unwrap()).await[0];
        assert_eq!(gw.settled(id, WAIT).await["state"], "succeeded");
    }
    gw.stop().await.unwrap();
}

/// `recall_envelope` on an endpoint's chain: the receiver gets Recall.ai's shape, both
/// signatures verify over it, and a retry sends exactly the same bytes.
#[tokio::test]
async fn recall_envelope_transforms_and_retries_send_the_same_signed_bytes() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::Status(500)]);
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &plugin_table("recall", "recall_envelope", "")
        + &endpoint("recall-style", &rx.url("/recall"), r#"["bot.state_change"]"#)
        + "plugins = [\"recall\"]\n";
    let gw = TestGateway::start(&cfg).await;
    let mut event = state_change("bot_9");
    event["data"]["event_sub_type"] = json!("meeting_ended");
    gw.ingest(&event).await;

    let first = rx.next(WAIT).await;
    let second = rx.next(WAIT).await;
    assert_eq!(first.body, second.body, "a retry must send the stored transform, byte for byte");
    assert_ne!(first.header("webhook-timestamp"), "", "each attempt is signed");
    let body = second.json();
    assert_eq!(
        body,
        json!({
            "event": "bot.done",
            "data": {
                "data": {"code": "done", "sub_code": "meeting_ended", "updated_at": "2025-07-15T14:30:45.123456+00:00"},
                "bot": {"id": "bot_9", "metadata": {"customer": "Zoë"}}
            }
        })
    );
    // The transformed body is canonical JSON, and both recipes verify over it.
    assert_eq!(hookgate::json::parse(&second.body).unwrap().to_canonical().as_bytes(), &second.body[..]);
    first.assert_signed();
    second.assert_signed();
    gw.stop().await.unwrap();
}

/// `redact` removes the configured pointers before the body leaves.
#[tokio::test]
async fn redact_removes_configured_fields() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &plugin_table(
            "redact",
            "redact",
            "config = { pointers = [\"/bot_metadata/email\", \"/data/transcription/words\"] }",
        )
        + &endpoint("safe", &rx.url("/"), r#"["*"]"#)
        + "plugins = [\"redact\"]\n";
    let gw = TestGateway::start(&cfg).await;
    gw.ingest(&json!({
        "trigger": "transcript.update",
        "bot_id": "b",
        "bot_metadata": {"email": "ana@example.com", "team": "sales"},
        "data": {"speaker_name": "Ana", "transcription": {"transcript": "hi", "words": [{"w": "hi"}]}}
    }))
    .await;
    let req = rx.next(WAIT).await;
    let body = req.json();
    assert_eq!(body["bot_metadata"], json!({"team": "sales"}));
    assert_eq!(body["data"]["transcription"], json!({"transcript": "hi"}));
    assert!(body["idempotency_key"].is_string());
    req.assert_signed();
    gw.stop().await.unwrap();
}

/// Each hostile guest is stopped by its own limit and fails only its own delivery, with error
/// kind `plugin` and a message saying which limit; a healthy endpoint is served meanwhile. With
/// `on_error = "skip"`, a failing plugin is bypassed instead.
#[tokio::test]
async fn hostile_guests_are_contained_and_others_proceed() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &plugin_table("spin", "guest_loop", "timeout = \"30ms\"")
        + &plugin_table("hog", "guest_hog", "memory_limit = \"4MiB\"\ntimeout = \"2s\"")
        + &plugin_table("trap", "guest_trap", "")
        + &plugin_table("trap-skipped", "guest_trap", "on_error = \"skip\"")
        + &plugin_table("bad", "guest_bad_output", "")
        + &endpoint("spin", &rx.url("/spin"), r#"["*"]"#)
        + "plugins = [\"spin\"]\n"
        + &endpoint("hog", &rx.url("/hog"), r#"["*"]"#)
        + "plugins = [\"hog\"]\n"
        + &endpoint("trap", &rx.url("/trap"), r#"["*"]"#)
        + "plugins = [\"trap\"]\n"
        + &endpoint("skip", &rx.url("/skip"), r#"["*"]"#)
        + "plugins = [\"trap-skipped\"]\n"
        + &endpoint("bad", &rx.url("/bad"), r#"["*"]"#)
        + "plugins = [\"bad\"]\n"
        + &endpoint("healthy", &rx.url("/healthy"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    let (_, r) = gw.ingest(&state_change("b")).await;
    assert_eq!(r["deliveries"], 6);

    // Only the healthy endpoint and the skipped plugin's endpoint receive anything.
    let mut paths = vec![rx.next(WAIT).await.path, rx.next(WAIT).await.path];
    paths.sort();
    assert_eq!(paths, ["/healthy", "/skip"]);
    rx.assert_silent(Duration::from_millis(300)).await;

    let (_, e) = gw.get(&format!("/v1/events/{}", r["event_id"].as_str().unwrap())).await;
    for d in e["deliveries"].as_array().unwrap() {
        let d = gw.settled(d["id"].as_str().unwrap(), WAIT).await;
        let endpoint = d["endpoint_id"].as_str().unwrap();
        let want = match endpoint {
            "healthy" | "skip" => {
                assert_eq!(d["state"], "succeeded", "{d}");
                continue;
            }
            "spin" => "deadline",
            "hog" => "memory limit",
            "trap" => "asked to fail",
            "bad" => "JSON object",
            other => panic!("unexpected endpoint {other}"),
        };
        assert_eq!(d["state"], "failed", "{d}");
        assert_eq!(d["error"]["kind"], "plugin", "{d}");
        assert_eq!(d["attempts"], json!([]), "no HTTP attempt after a plugin failure: {d}");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{endpoint}: {msg}");
        if endpoint == "bad" {
            // A resend runs the chain again rather than bypassing the plugin: still no HTTP
            // attempt, still the plugin's error.
            let id = d["id"].as_str().unwrap();
            let (s, again) = response(
                gw.http
                    .post(format!("{}/v1/deliveries/{id}/resend", gw.base))
                    .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
            )
            .await;
            assert_eq!(s, 200, "{again}");
            assert_eq!(
                (again["state"].as_str(), again["attempts"].as_array().map(Vec::len)),
                (Some("failed"), Some(0)),
                "{again}"
            );
            assert_eq!(again["error"]["plugin"], "bad");
        }
    }
    rx.assert_silent(Duration::from_millis(200)).await;
    // The metrics count calls and failures per plugin (the "bad" resend above made a second call).
    let text = gw.http.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
    for line in [
        "hookgate_plugin_calls_total{plugin=\"spin\"} 1",
        "hookgate_plugin_failures_total{plugin=\"spin\"} 1",
        "hookgate_plugin_calls_total{plugin=\"bad\"} 2",
        "hookgate_plugin_failures_total{plugin=\"bad\"} 2",
        "hookgate_plugin_failures_total{plugin=\"trap-skipped\"} 1",
        "hookgate_deliveries_total{outcome=\"failed\"} 4",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    gw.stop().await.unwrap();
}

/// Through the host API: a trap does not poison later calls; the deadline stops a loop close to
/// its configured time; loops yield, so the runtime keeps serving while they spin.
#[tokio::test]
async fn host_calls_recover_after_traps_and_deadlines_are_tight() {
    let dir = temp_dir();
    let mut spin = plugin_config("spin", "guest_loop");
    spin.timeout = Duration::from_millis(40);
    let host = std::sync::Arc::new(PluginHost::load(&[plugin_config("trap", "guest_trap"), spin], dir.path()).unwrap());

    let err = host.call_by_name("trap", &input(r#"{"data":{}}"#)).await.unwrap_err();
    assert!(matches!(&err, PluginError::Trap(m) if m.contains("asked to fail")), "{err}");
    let ok = host.call_by_name("trap", &input(r#"{"data":{"survive":true}}"#)).await.unwrap();
    assert_eq!(ok, Decision::Keep);

    let started = Instant::now();
    let err = host.call_by_name("spin", &input("{}")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, PluginError::Deadline(Duration::from_millis(40)));
    assert!(took >= Duration::from_millis(40) && took < Duration::from_millis(1000), "{took:?}");

    // Spinning guests yield at every epoch tick: a timer task on the same runtime keeps firing.
    let ticks = tokio::spawn(async {
        let mut n = 0u32;
        let end = Instant::now() + Duration::from_millis(100);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
            n += 1;
        }
        n
    });
    let spins: Vec<_> = (0..4)
        .map(|_| {
            let h = host.clone();
            tokio::spawn(async move { h.run_chain(&["spin".into()], input("{}")).await })
        })
        .collect();
    for s in spins {
        assert!(matches!(s.await.unwrap(), hookgate::plugin::ChainOutcome::Failed { .. }));
    }
    // Had the loops held the runtime's threads, the ticker would have seen at most one tick.
    assert!(ticks.await.unwrap() >= 5, "the async runtime stalled while plugins looped");
}

/// The holes hostile guests found, closed: a sleep inside the host ends at the deadline; a
/// guest's `exit` and a full resource table keep their cause; reasons, errors and the log are
/// capped and the dropped log lines counted; and a guest sees a clock and random bytes but no
/// environment, arguments or files.
#[tokio::test]
async fn hostile_guests_meet_every_limit_whatever_they_call() {
    let dir = temp_dir();
    let host = PluginHost::load(
        &[
            hostile("sleep", 200, &[("mode", "sleep"), ("ms", "12000")]),
            hostile("exit", 500, &[("mode", "exit")]),
            hostile("resources", 5000, &[("mode", "resources")]),
            hostile("flood", 5000, &[("mode", "log-flood"), ("lines", "100000"), ("bytes", "100")]),
            hostile("reason", 500, &[("mode", "big-reason")]),
            hostile("error", 500, &[("mode", "big-error")]),
            hostile("observe", 500, &[("mode", "observe")]),
        ],
        dir.path(),
    )
    .unwrap();

    let started = Instant::now();
    let err = host.call_by_name("sleep", &input("{}")).await.unwrap_err();
    assert_eq!(err, PluginError::Deadline(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(2), "a sleeping guest held its call for {:?}", started.elapsed());

    let err = host.call_by_name("exit", &input("{}")).await.unwrap_err();
    assert!(matches!(&err, PluginError::Trap(m) if m.contains("exit(0)")), "{err}");

    let err = host.call_by_name("resources", &input("{}")).await.unwrap_err();
    assert!(matches!(&err, PluginError::Trap(m) if m.contains("resource table")), "{err}");

    assert_eq!(host.call_by_name("flood", &input("{}")).await.unwrap(), Decision::Keep);
    let flood = host.stats().into_iter().find(|s| s.plugin == "flood").unwrap();
    assert_eq!(flood.log_dropped, 100_000 - hookgate::plugin::LOG_LINES_PER_CALL as u64);

    let limit = hookgate::plugin::REASON_LIMIT + "…".len();
    match host.call_by_name("reason", &input("{}")).await.unwrap() {
        Decision::Drop(r) => assert!(r.len() <= limit && r.starts_with("rrr"), "{} bytes", r.len()),
        other => panic!("{other:?}"),
    }
    match host.call_by_name("error", &input("{}")).await.unwrap_err() {
        PluginError::Rejected(m) => assert!(m.len() <= limit && m.starts_with("eee"), "{} bytes", m.len()),
        other => panic!("{other:?}"),
    }

    let Decision::Replace(seen) = host.call_by_name("observe", &input("{}")).await.unwrap() else {
        panic!("observe must replace");
    };
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(seen["unix_seconds"].as_u64().unwrap()) < 60, "{seen}");
    assert_eq!(
        (seen["env"].as_u64(), seen["args"].as_u64(), seen["file"].as_bool()),
        (Some(0), Some(0), Some(false)),
        "{seen}"
    );
    let Decision::Replace(again) = host.call_by_name("observe", &input("{}")).await.unwrap() else { panic!() };
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_ne!(seen["random"], again["random"], "random bytes differ from call to call");
}

/// One plugin looping to its deadline on a burst queues only its own calls: another trigger's
/// plugin is not held behind it, and its delivery arrives well within one of the loop's
/// deadlines of load (with one shared queue it waited for seconds).
#[tokio::test]
async fn a_looping_plugin_does_not_hold_up_other_plugins() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let mut cfg = base_config(dir.path())
        + &plugin_table("spin", "guest_loop", "timeout = \"250ms\"")
        + &plugin_table("recall", "recall_envelope", "")
        + "\n[triggers.\"transcript.update\"]\nplugins = [\"spin\"]\n"
        + "\n[triggers.\"bot.state_change\"]\nplugins = [\"recall\"]\n";
    for i in 0..4 {
        cfg += &endpoint(&format!("t{i}"), &rx.url(&format!("/t{i}")), r#"["transcript.update"]"#);
    }
    cfg += &endpoint("benign", &rx.url("/benign"), r#"["bot.state_change"]"#);
    let gw = TestGateway::start(&cfg).await;
    for i in 0..64 {
        let (s, _) = gw.ingest(&json!({"trigger": "transcript.update", "bot_id": format!("b{i}"), "data": {}})).await;
        assert_eq!(s, 202);
    }
    // 256 loop calls of 250 ms are queued now: 64 seconds of plugin time over its 4 slots.
    let sent = Instant::now();
    let (s, _) = gw.ingest(&state_change("benign")).await;
    assert_eq!(s, 202);
    let got = rx.next(WAIT).await;
    let waited = sent.elapsed();
    assert_eq!(got.path, "/benign");
    let spun = metric(&gw, "hookgate_plugin_timeouts_total{plugin=\"spin\"}").await;
    assert!(spun < 128.0, "the loop's backlog was gone ({spun} calls timed out) before the benign delivery came");
    assert!(waited < Duration::from_millis(1000), "the benign plugin's delivery waited {waited:?}");
    gw.stop().await.unwrap();
}

/// The compiled artifact is cached in data_dir keyed by the component's hash: the second load
/// uses it; a changed component is compiled again.
#[tokio::test]
async fn compiled_artifacts_are_cached_across_restarts() {
    let dir = temp_dir();
    let configs = [plugin_config("a", "only_event_types"), plugin_config("b", "redact")];
    let first = PluginHost::load(&configs, dir.path()).unwrap();
    assert_eq!(first.sources(), [("a".into(), Source::Compiled), ("b".into(), Source::Compiled)]);
    drop(first);
    let started = Instant::now();
    let second = PluginHost::load(&configs, dir.path()).unwrap();
    assert_eq!(second.sources(), [("a".into(), Source::Cached), ("b".into(), Source::Cached)]);
    let cached_load = started.elapsed();
    let cached = std::fs::read_dir(dir.path().join("plugin-cache")).unwrap().count();
    assert_eq!(cached, 2);
    // A different component at the same path is a cache miss, not stale code.
    let copy = dir.path().join("copy.wasm");
    std::fs::copy(wasm::plugin("recall_envelope"), &copy).unwrap();
    let mut changed = plugin_config("a", "only_event_types");
    changed.path = copy;
    let third = PluginHost::load(&[changed], dir.path()).unwrap();
    assert_eq!(third.sources(), [("a".into(), Source::Compiled)]);
    eprintln!("loading two cached plugins took {cached_load:?}");
}

/// Missing files, non-components and components of another world fail at load, naming the
/// plugin; `hookgate check` reports the same.
#[tokio::test]
async fn bad_plugins_fail_at_load_naming_the_plugin() {
    let dir = temp_dir();
    let mut missing = plugin_config("ghost", "redact");
    missing.path = dir.path().join("nope.wasm");
    let e = PluginHost::load(&[missing], dir.path()).err().unwrap();
    assert_eq!(e.plugin, "ghost");
    assert!(e.message.contains("cannot read"), "{e}");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let mut bad = plugin_config("garbage", "redact");
    bad.path = garbage.clone();
    let e = PluginHost::load(&[bad], dir.path()).err().unwrap();
    assert_eq!(e.plugin, "garbage");
    assert!(e.message.contains("not a WebAssembly component"), "{e}");

    // A valid but empty component: it does not export `handle`.
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\x00\x01\x00").unwrap();
    let mut other_world = plugin_config("empty", "redact");
    other_world.path = empty;
    let e = PluginHost::load(&[other_world], dir.path()).err().unwrap();
    assert_eq!(e.plugin, "empty");
    assert!(e.message.contains("hookgate:plugin@0.1.0"), "{e}");

    // The CLI says the same.
    let cfg_path = dir.path().join("c.toml");
    let cfg = base_config(&dir.path().join("data"))
        + &format!("\n[[plugins]]\nname = \"garbage\"\npath = \"{}\"\n", garbage.display());
    std::fs::write(&cfg_path, cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("plugin \"garbage\""), "{stderr}");
}

/// The shipped plugin example config is valid and its plugins load.
#[tokio::test]
async fn plugins_example_config_loads() {
    wasm::plugin("only_event_types"); // builds the plugins
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = hookgate::Config::load(&root.join("config/plugins-example.toml"), &|_| None).unwrap();
    assert_eq!(c.plugins.len(), 3);
    let dir = temp_dir();
    let host = PluginHost::load(&c.plugins, dir.path()).unwrap();
    assert_eq!(host.sources().len(), 3);
}
