//! Hot reload: `POST /v1/admin/reload`, `SIGHUP` and `serve --watch` apply a changed file
//! atomically with nothing dropped; a bad file changes nothing; a removed endpoint's deliveries
//! end `endpoint_gone`; keys that need a restart are named.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

async fn reload(base: &str) -> (u16, Value) {
    response(
        reqwest::Client::new()
            .post(format!("{base}/v1/admin/reload"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
    )
    .await
}

async fn generation(base: &str) -> u64 {
    let (_, h) = response(reqwest::Client::new().get(format!("{base}/healthz"))).await;
    h["config"]["generation"].as_u64().unwrap()
}

/// In process: a refused reload names key and line and keeps the old config (old token still
/// works, generation unchanged, the failure visible in /healthz and /metrics); a good one
/// applies new tokens and endpoints, names `server.listen` as needing a restart, and the
/// removed endpoint's pending delivery ends `endpoint_gone`.
#[tokio::test]
async fn a_bad_reload_changes_nothing_and_a_good_one_applies_all_but_restart_keys() {
    let mut rx = Receiver::start(Behavior::Status(503)).await;
    let dir = temp_dir();
    let path = dir.path().join("hookgate.toml");
    let cfg = base_config(dir.path()) + &endpoint("old", &rx.url("/old"), r#"["*"]"#);
    let cfg = set(&cfg, "delivery", "backoff_initial", "\"300ms\"");
    // Enough retries that the pending delivery is still pending when its endpoint goes.
    let cfg = set(&cfg, "delivery", "max_retries", "10");
    let gw = TestGateway::start_from_file(&path, &cfg).await;
    let (_, r) = gw.ingest(&state_change("b")).await;
    let pending = gw.delivery_ids(r["event_id"].as_str().unwrap()).await[0].clone();
    rx.next(WAIT).await; // its first attempt failed; it waits for a retry

    // Bad files that also change the admin token, the endpoint's URL and its chain (a
    // transform): one with a bad value (refused by the parser), one whose plugin does not load
    // (refused after the file parsed). Each answer names the problem, and none of the rest is
    // applied.
    let recall = wasm::plugin("recall_envelope");
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm but not a component").unwrap();
    let bad_file = |plugin: &std::path::Path, max_retries: &str| {
        let c = base_config(dir.path()).replace(ADMIN_TOKEN, "bad-file-admin-token-0123")
            + &format!("\n[[plugins]]\nname = \"recall\"\npath = \"{}\"\n", plugin.display())
            + &endpoint("old", &rx.url("/moved"), r#"["*"]"#)
            + "plugins = [\"recall\"]\n";
        let c = set(&c, "delivery", "backoff_initial", "\"300ms\"");
        set(&c, "delivery", "max_retries", max_retries)
    };
    for (bad, code) in [(bad_file(&recall, "\"many\""), "invalid_config"), (bad_file(&broken, "10"), "invalid_plugin")]
    {
        std::fs::write(&path, bad).unwrap();
        let (s, body) = reload(&gw.base).await;
        assert_eq!((s, body["error"]["code"].as_str()), (400, Some(code)), "{body}");
        if code == "invalid_config" {
            assert_eq!(body["error"]["key"], "delivery.max_retries", "{body}");
            assert!(body["error"]["line"].as_u64().is_some(), "{body}");
        }
        // The old admin token still works and the bad file's does not.
        let (s, _) = gw.get("/v1/deliveries").await;
        assert_eq!(s, 200, "{code}: the old admin token still works");
        let (s, _) = response(
            gw.http
                .get(format!("{}/v1/deliveries", gw.base))
                .header("authorization", "Bearer bad-file-admin-token-0123"),
        )
        .await;
        assert_eq!(s, 401, "{code}: the bad file's admin token was not applied");
        // The next retry goes to the old URL, without the bad file's transform.
        let retry = rx.next(WAIT).await;
        assert_eq!(retry.path, "/old", "{code}: the bad file's URL was not applied");
        let body = retry.json();
        assert_eq!(body["trigger"], "bot.state_change", "{code}: the bad file's chain was not applied: {body}");
    }
    // Without the admin token, /healthz says only that the reload failed: its message quotes
    // the file.
    let (s, open) = response(gw.http.get(format!("{}/healthz", gw.base))).await;
    assert_eq!((s, open["config"]["last_reload"].as_str()), (200, Some("failed")), "{open}");
    assert!(open.get("pending_deliveries").is_none() && open.get("store").is_none(), "status only: {open}");
    let (_, h) = gw.get("/healthz").await;
    assert_eq!(h["config"]["generation"], 1, "{h}");
    assert!(h["config"]["last_reload"].as_str().unwrap().starts_with("failed: "), "{h}");
    assert_eq!(metric(&gw, "hookgate_config_last_reload_success").await, 0.0);

    // A good file: a new admin token, a new signing secret, the endpoint replaced, a new
    // listen address.
    rx.set_default(Behavior::Status(200));
    const NEW_SECRET: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let new_cfg = base_config(dir.path()).replace(ADMIN_TOKEN, "rotated-admin-token-0123").replace(SECRET, NEW_SECRET)
        + &endpoint("new", &rx.url("/new"), r#"["*"]"#);
    let new_cfg = set(&new_cfg, "server", "listen", "\"127.0.0.1:1\"");
    std::fs::write(&path, &new_cfg).unwrap();
    let (s, body) = reload(&gw.base).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["generation"], 2);
    assert_eq!(body["restart_required"], json!(["server.listen"]));
    let (_, h) = gw.get("/healthz").await;
    assert_eq!((h["config"]["generation"].as_u64(), h["config"]["last_reload"].as_str()), (Some(2), Some("ok")), "{h}");
    assert_eq!(metric(&gw, "hookgate_config_generation").await, 2.0);
    // The old admin token is gone, the new one works.
    let (s, _) = gw.get("/v1/deliveries").await;
    assert_eq!(s, 401);
    let (s, _) = response(
        gw.http.get(format!("{}/v1/deliveries", gw.base)).header("authorization", "Bearer rotated-admin-token-0123"),
    )
    .await;
    assert_eq!(s, 200);

    // The pending delivery's endpoint is gone: it ends failed with endpoint_gone at its retry,
    // and new events go to the new endpoint only.
    let d = eventually(WAIT, || async {
        let (_, d) = response(
            gw.http
                .get(format!("{}/v1/deliveries/{pending}", gw.base))
                .header("authorization", "Bearer rotated-admin-token-0123"),
        )
        .await;
        (d["state"] != "pending").then_some(d)
    })
    .await;
    let last = d["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((d["state"].as_str(), last["error"]["kind"].as_str()), (Some("failed"), Some("endpoint_gone")), "{d}");
    let (s, _) = gw.ingest(&state_change("c")).await;
    assert_eq!(s, 202);
    let got = rx.next(WAIT).await;
    assert_eq!(got.path, "/new");
    // Signed with the new secret (verified by the official library), no longer the old one.
    let wh = standardwebhooks::Webhook::new(&format!("whsec_{NEW_SECRET}")).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, got.header(name).parse().unwrap());
    }
    wh.verify(&got.body, &headers).expect("signed with the reloaded secret");
    let old = hookgate::sign::Secret::parse(SECRET).unwrap();
    assert!(!hookgate::sign::verify_attendee(&old, &got.body, got.header("x-webhook-signature")));
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();
}

/// The real binary under load: a client ingests continuously while the file changes five
/// times, applied by the API, by SIGHUP and by `--watch`. Each version adds an endpoint (the
/// third also a transform plugin on it). Every 202'd event fans out over exactly one version's
/// endpoints, versions never go backwards in send order, and every delivery arrives signed.
#[tokio::test]
async fn reload_under_load_delivers_every_event_per_the_config_that_accepted_it() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let port = free_port();
    let path = path_in(&dir, "hookgate.toml");
    let recall =
        format!("\n[[plugins]]\nname = \"recall\"\npath = \"{}\"\n", wasm::plugin("recall_envelope").display());
    let version = |k: usize| {
        let mut c = base_config(&dir.path().join("data"));
        c = set(&c, "server", "listen", &format!("\"127.0.0.1:{port}\""));
        if k >= 3 {
            c += &recall;
        }
        for i in 0..=k {
            c += &endpoint(&format!("v{i}"), &rx.url(&format!("/v{i}")), r#"["*"]"#);
            if i == 3 {
                c += "plugins = [\"recall\"]\n";
            }
        }
        c
    };
    let mut gw = GatewayProcess::spawn_with(&path, &version(0), port, &["--watch"]).await;
    let base = gw.base.clone();

    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    // Checked between requests: a request in flight always completes, so every event the
    // gateway accepted is in `accepted`.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (accepted, stop, base) = (accepted.clone(), stop.clone(), base.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (s, r) = response(
                    http.post(format!("{base}/v1/events"))
                        .header("authorization", format!("Bearer {INGEST_TOKEN}"))
                        .header("content-type", "application/json")
                        .body(state_change(&format!("b{i}")).to_string()),
                )
                .await;
                assert_eq!(s, 202, "{r}");
                accepted.lock().unwrap().push(r["event_id"].as_str().unwrap().to_owned());
                i += 1;
            }
        })
    };
    let sent = || accepted.lock().unwrap().len();
    for k in 1..=5 {
        let before = generation(&base).await;
        // A few events under the previous version first.
        let n = sent();
        eventually(WAIT, || async { (sent() >= n + 5).then_some(()) }).await;
        std::fs::write(&path, version(k)).unwrap();
        match k {
            1 | 2 => {
                let (s, body) = reload(&base).await;
                assert_eq!(s, 200, "{body}");
            }
            3 => gw.signal("-HUP"),
            _ => {} // --watch sees the file change
        }
        eventually(WAIT, || async { (generation(&base).await > before).then_some(()) }).await;
    }
    let n = sent();
    eventually(WAIT, || async { (sent() >= n + 5).then_some(()) }).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    client.await.unwrap();

    let events = accepted.lock().unwrap().clone();
    let http = reqwest::Client::new();
    let mut last_version = 0;
    let mut seen_versions = BTreeSet::new();
    let mut total = 0;
    for id in &events {
        let (_, e) = response(
            http.get(format!("{base}/v1/events/{id}")).header("authorization", format!("Bearer {ADMIN_TOKEN}")),
        )
        .await;
        let endpoints: BTreeSet<String> =
            e["deliveries"].as_array().unwrap().iter().map(|d| d["endpoint_id"].as_str().unwrap().to_owned()).collect();
        let k = endpoints.len() - 1;
        let want: BTreeSet<String> = (0..=k).map(|i| format!("v{i}")).collect();
        assert_eq!(endpoints, want, "event {id} fanned out over a mix of versions");
        assert!(k >= last_version, "event {id} used version {k} after an event used {last_version}");
        last_version = k;
        seen_versions.insert(k);
        total += endpoints.len();
    }
    assert_eq!(seen_versions, (0..=5).collect(), "every version accepted events");
    let mut transformed = 0;
    for _ in 0..total {
        let r = rx.next(WAIT).await;
        r.assert_signed();
        if r.path == "/v3" {
            assert_eq!(r.json()["event"], "bot.done", "v3's chain transforms: {}", r.json());
            transformed += 1;
        } else {
            assert_eq!(r.json()["trigger"], "bot.state_change");
        }
    }
    assert!(transformed > 0);
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.signal("-TERM");
    assert!(gw.wait_exit(WAIT).await.success());
}

/// `--watch` looks at the plugins' components too: replacing a plugin's `.wasm` (the config
/// file untouched) reloads, and the next delivery runs the new component.
#[tokio::test]
async fn watch_reloads_a_changed_plugin_component() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let component = dir.path().join("p.wasm");
    std::fs::copy(wasm::plugin("redact"), &component).unwrap();
    let cfg = base_config(dir.path())
        + &format!(
            "\n[[plugins]]\nname = \"p\"\npath = \"{}\"\nconfig = {{ pointers = \"/bot_metadata\" }}\n",
            component.display()
        )
        + &endpoint("r", &rx.url("/"), r#"["*"]"#)
        + "plugins = [\"p\"]\n";
    let hooks = hookgate::Hooks { watch: Some(Duration::from_millis(100)), ..Default::default() };
    let gw = TestGateway::start_from_file_with(&dir.path().join("hookgate.toml"), &cfg, hooks).await;
    gw.ingest(&state_change("b1")).await;
    let redacted = rx.next(WAIT).await.json();
    assert_eq!((redacted["trigger"].as_str(), redacted.get("bot_metadata")), (Some("bot.state_change"), None));

    let before = generation(&gw.base).await;
    // Replaced as a deploy would: written beside it, then renamed over it.
    let staged = dir.path().join("p.wasm.new");
    std::fs::copy(wasm::plugin("recall_envelope"), &staged).unwrap();
    std::fs::rename(&staged, &component).unwrap();
    eventually(WAIT, || async { (generation(&gw.base).await > before).then_some(()) }).await;
    let (_, h) = gw.get("/healthz").await;
    assert_eq!(h["config"]["last_reload"], "ok", "{h}");
    gw.ingest(&state_change("b2")).await;
    let transformed = rx.next(WAIT).await.json();
    assert_eq!(transformed["event"], "bot.done", "the new component ran: {transformed}");
    gw.stop().await.unwrap();
}
