//! Lifecycle with the real binary: kill -9 loses nothing that got a 202 and resumes pending
//! deliveries; SIGTERM finishes in-flight work and exits 0.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn process_config(data_dir: &std::path::Path, port: u16, receiver_url: &str) -> String {
    let cfg = base_config(data_dir) + &endpoint("r", receiver_url, r#"["*"]"#);
    let cfg = set(&cfg, "server", "listen", &format!("\"127.0.0.1:{port}\""));
    // Keep retrying quickly for as long as the test needs.
    let cfg = set(&cfg, "delivery", "max_retries", "50");
    set(&cfg, "delivery", "backoff_max", "\"200ms\"")
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    response(
        reqwest::Client::new().get(format!("{base}{path}")).header("authorization", format!("Bearer {ADMIN_TOKEN}")),
    )
    .await
}

/// Kill -9 while ingest requests are in flight and deliveries are failing: after a restart
/// every event that got a 202 is there, and every pending delivery is delivered.
#[tokio::test]
async fn kill_9_loses_nothing_accepted_and_restart_delivers_what_was_pending() {
    let mut rx = Receiver::start(Behavior::Status(503)).await;
    let dir = temp_dir();
    let port = free_port();
    let cfg = process_config(&dir.path().join("data"), port, &rx.url("/hook"));
    let config_path = path_in(&dir, "hookgate.toml");
    let mut gw = GatewayProcess::spawn(&config_path, &cfg, port).await;

    // A stream of concurrent ingests; the process dies in the middle of it.
    let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut senders = Vec::new();
    for worker in 0..8 {
        let tx = tx.clone();
        let url = format!("{}/v1/events", gw.base);
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..1000 {
                let body = serde_json::json!({"trigger": "crash.test", "data": {"worker": worker, "i": i}});
                let sent = http
                    .post(&url)
                    .header("authorization", format!("Bearer {INGEST_TOKEN}"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
                        let _ = tx.send(v["event_id"].as_str().unwrap().to_owned());
                    }
                    _ => return,
                }
            }
        }));
    }
    drop(tx);
    // Let some events through and some attempts fail, then pull the plug.
    let mut ids = Vec::new();
    while ids.len() < 100 {
        ids.push(accepted.recv().await.expect("ingest works before the crash"));
    }
    rx.next(Duration::from_secs(10)).await;
    gw.kill9();
    for s in senders {
        let _ = s.await;
    }
    while let Ok(id) = accepted.try_recv() {
        ids.push(id);
    }

    // The receiver recovers; a new process on the same data dir takes over.
    rx.set_default(Behavior::Status(200));
    let gw = GatewayProcess::spawn(&config_path, &cfg, port).await;
    let mut delivery_ids = Vec::new();
    for id in &ids {
        let (s, e) = get(&gw.base, &format!("/v1/events/{id}")).await;
        assert_eq!(s, 200, "event {id} got a 202 before the crash but is missing: {e}");
        delivery_ids.push(e["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    let mut pending: HashSet<String> = delivery_ids.into_iter().collect();
    let mut keys = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(std::time::Instant::now() < deadline, "{} deliveries never succeeded", pending.len());
        let mut finished = Vec::new();
        for d in &pending {
            let (_, body) = get(&gw.base, &format!("/v1/deliveries/{d}")).await;
            if body["state"] == "succeeded" {
                keys.insert(body["idempotency_key"].as_str().unwrap().to_owned());
                finished.push(d.clone());
            }
        }
        for d in finished {
            pending.remove(&d);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each of those deliveries really reached the receiver, under its own idempotency key.
    let mut received = HashSet::new();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(300), rx.next_opt()).await {
        received.insert(r.header("webhook-id").to_owned());
    }
    assert!(
        keys.is_subset(&received),
        "{} succeeded deliveries were never received",
        keys.difference(&received).count()
    );
    assert_eq!(keys.len(), ids.len());
}

/// SIGTERM while an attempt is in flight: the attempt completes and is recorded, the process
/// exits 0, and a restart finds nothing left to do. The receiver holds the request until the
/// test lets it go, so the attempt is certainly in flight when the signal arrives, whatever the
/// machine's speed, and the process is seen waiting for it.
#[tokio::test]
async fn sigterm_finishes_in_flight_attempts_and_exits_zero() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut rx = Receiver::start(Behavior::Held(release.clone())).await;
    let dir = temp_dir();
    let port = free_port();
    let cfg = process_config(&dir.path().join("data"), port, &rx.url("/hook"));
    let cfg = set(&cfg, "delivery", "timeout", "\"20s\"");
    let cfg = set(&cfg, "server", "shutdown_grace", "\"20s\"");
    let config_path = path_in(&dir, "hookgate.toml");
    let mut gw = GatewayProcess::spawn(&config_path, &cfg, port).await;
    let (s, r) = response(
        reqwest::Client::new()
            .post(format!("{}/v1/events", gw.base))
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(state_change("b").to_string()),
    )
    .await;
    assert_eq!(s, 202);
    let event_id = r["event_id"].as_str().unwrap().to_owned();
    rx.next(Duration::from_secs(10)).await; // the receiver holds the attempt now
    gw.signal("-TERM");
    // Shutdown has begun once the listener is closed; the process must still be there,
    // waiting for the held attempt.
    let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    eventually(Duration::from_secs(10), || async {
        http.get(format!("{}/healthz", gw.base)).send().await.is_err().then_some(())
    })
    .await;
    assert!(gw.child.try_wait().unwrap().is_none(), "the process exited with an attempt in flight");
    release.notify_one();
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");

    rx.set_default(Behavior::Status(200));
    let gw = GatewayProcess::spawn(&config_path, &cfg, port).await;
    let (_, e) = get(&gw.base, &format!("/v1/events/{event_id}")).await;
    let d = &e["deliveries"][0];
    assert_eq!(d["state"], "succeeded", "{d}");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{d}");
    rx.assert_silent(Duration::from_millis(500)).await;
}

/// SIGTERM while a plugin sleeps inside a long call (10 s deadline, 1 s grace): the process
/// exits within the grace, not the plugin's deadline, and the interrupted delivery is still
/// pending after a restart (its chain runs again), not failed.
#[tokio::test]
async fn sigterm_interrupts_a_running_plugin_within_the_grace() {
    let rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let port = free_port();
    let plugin = format!(
        "\n[[plugins]]\nname = \"slow\"\npath = \"{}\"\ntimeout = \"10s\"\nconfig = {{ mode = \"sleep\", ms = \"60000\" }}\n",
        wasm::plugin("guest_hostile").display()
    );
    let cfg = process_config(&dir.path().join("data"), port, &rx.url("/hook"))
        + &plugin
        + "\n[triggers.\"bot.state_change\"]\nplugins = [\"slow\"]\n";
    let cfg = set(&cfg, "server", "shutdown_grace", "\"1s\"");
    let config_path = path_in(&dir, "hookgate.toml");
    let mut gw = GatewayProcess::spawn(&config_path, &cfg, port).await;
    let (s, r) = response(
        reqwest::Client::new()
            .post(format!("{}/v1/events", gw.base))
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(state_change("b").to_string()),
    )
    .await;
    assert_eq!(s, 202);
    let event_id = r["event_id"].as_str().unwrap().to_owned();
    // The plugin call has started once the metrics count it.
    let base = gw.base.clone();
    eventually(Duration::from_secs(10), || async {
        let text = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
        text.lines().any(|l| l == "hookgate_plugin_calls_total{plugin=\"slow\"} 1").then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    gw.signal("-TERM");
    let status = gw.wait_exit(Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(4), "shutdown waited {took:?} for the plugin (grace 1 s)");

    let gw = GatewayProcess::spawn(&config_path, &cfg, port).await;
    let (_, e) = get(&gw.base, &format!("/v1/events/{event_id}")).await;
    assert_eq!(e["deliveries"][0]["state"], "pending", "{e}");
}
