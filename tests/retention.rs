//! Retention and ordering: final deliveries older than `retention.deliveries` go (pending ones
//! never), and `ordering = "fifo"` holds per key across retries and a kill -9.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(10);

/// With a manual clock two minutes past a one-minute retention, the pruner removes the final
/// deliveries (and an event whose deliveries are all gone) but keeps pending ones and their
/// events; `/metrics` counts what went and `/healthz` shows the oldest pending delivery's age.
#[tokio::test]
async fn retention_removes_only_final_deliveries() {
    let mut ok = Receiver::start(Behavior::Status(200)).await;
    let mut flaky = Receiver::start(Behavior::Status(503)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("ok", &ok.url("/"), r#"["*"]"#)
        + &endpoint("flaky", &flaky.url("/"), r#"["bot.state_change"]"#)
        + "\n[retention]\ndeliveries = \"1m\"\n";
    // The failed attempt's retry is an hour away on the manual clock: it stays pending.
    let cfg = set(&cfg, "delivery", "backoff_initial", "\"1h\"");
    let clock = hookgate::clock::ManualClock::starting_now();
    let hooks = hookgate::Hooks { clock: clock.clone(), ..Default::default() };
    let gw = TestGateway::start_with(&cfg, hooks).await;
    let mut both = Vec::new();
    for bot in ["b1", "b2", "b3"] {
        let (_, r) = gw.ingest(&state_change(bot)).await;
        both.push(r["event_id"].as_str().unwrap().to_owned());
    }
    let (_, r) = gw.ingest(&json!({"trigger": "other.event", "data": {}})).await;
    let only_ok = r["event_id"].as_str().unwrap().to_owned();
    let mut ok_ids = Vec::new();
    let mut pending_ids = Vec::new();
    for e in both.iter().chain([&only_ok]) {
        let (_, ev) = gw.get(&format!("/v1/events/{e}")).await;
        for d in ev["deliveries"].as_array().unwrap() {
            let id = d["id"].as_str().unwrap().to_owned();
            if d["endpoint_id"] == "ok" { ok_ids.push(id) } else { pending_ids.push(id) }
        }
    }
    for _ in 0..4 {
        ok.next(WAIT).await;
    }
    for _ in 0..3 {
        flaky.next(WAIT).await;
    }
    for id in &ok_ids {
        assert_eq!(gw.settled(id, WAIT).await["state"], "succeeded");
    }
    for id in &pending_ids {
        eventually(WAIT, || async { (gw.delivery(id).await["attempts"].as_array().unwrap().len() == 1).then_some(()) })
            .await;
    }

    clock.advance(Duration::from_secs(120));
    eventually(WAIT, || async { (metric(&gw, "hookgate_pruned_deliveries_total").await == 4.0).then_some(()) }).await;
    for id in &ok_ids {
        let (s, _) = gw.get(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(s, 404, "final and old: removed");
    }
    for id in &pending_ids {
        assert_eq!(gw.delivery(id).await["state"], "pending", "pending deliveries are never removed");
    }
    for e in &both {
        let (s, ev) = gw.get(&format!("/v1/events/{e}")).await;
        assert_eq!(s, 200, "an event with a pending delivery stays");
        assert_eq!(ev["deliveries"].as_array().unwrap().len(), 1, "{ev}");
    }
    assert_eq!(gw.get(&format!("/v1/events/{only_ok}")).await.0, 404, "its last delivery went, so did it");
    assert_eq!(metric(&gw, "hookgate_pruned_events_total").await, 1.0);
    let (_, page) = gw.get("/v1/deliveries?endpoint_id=ok").await;
    assert!(page["data"].as_array().unwrap().is_empty(), "no index entry outlives its delivery: {page}");
    assert!(metric(&gw, "hookgate_db_file_bytes").await > 0.0);
    let (_, health) = gw.get("/healthz").await;
    assert!(health["oldest_pending_age_seconds"].as_f64().unwrap() >= 120.0, "{health}");
    gw.stop().await.unwrap();
}

/// A manual resend may push a FIFO queue's head, but not overtake it with a delivery behind it.
#[tokio::test]
async fn resends_do_not_overtake_a_fifo_queue() {
    let mut rx = Receiver::start(Behavior::Status(503)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("ordered", &rx.url("/"), r#"["*"]"#) + "ordering = \"fifo\"\n";
    let cfg = set(&cfg, "delivery", "backoff_initial", "\"1h\"");
    let gw = TestGateway::start(&cfg).await;
    let mut ids = Vec::new();
    for bot in ["first", "second"] {
        let (_, r) = gw.ingest(&state_change(bot)).await;
        ids.extend(gw.delivery_ids(r["event_id"].as_str().unwrap()).await);
    }
    assert_eq!(rx.next(WAIT).await.json()["bot_id"], "first");
    eventually(WAIT, || async {
        (gw.delivery(&ids[0]).await["attempts"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;
    let resend = |id: String| {
        let gw = &gw;
        async move { gw.send_json(reqwest::Method::POST, &format!("/v1/deliveries/{id}/resend"), &json!({})).await }
    };
    let (s, b) = resend(ids[1].clone()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("waiting_in_order")), "{b}");
    rx.set_default(Behavior::Status(200));
    let (s, b) = resend(ids[0].clone()).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("succeeded")), "{b}");
    assert_eq!(rx.next(WAIT).await.json()["bot_id"], "first");
    assert_eq!(rx.next(WAIT).await.json()["bot_id"], "second", "the head is final: the next one goes");
    gw.stop().await.unwrap();
}

/// `ordering = "fifo"` with `ordering_key = "bot_id"`: each bot's events arrive in ingest order
/// (the next starts only when the previous is final), a failing head holds only its own bot's
/// queue, and order holds across a kill -9 of the real binary.
#[tokio::test]
async fn fifo_order_holds_per_key_across_retries_and_kill_9() {
    let mut rx = Receiver::start(Behavior::Delay(Duration::from_millis(30))).await;
    // The very first request fails: its bot's queue waits for the retry, the other bot's goes on.
    rx.then([Behavior::Status(503)]);
    let dir = temp_dir();
    let port = free_port();
    let cfg = base_config(&dir.path().join("data"))
        + &endpoint("ordered", &rx.url("/"), r#"["*"]"#)
        + "ordering = \"fifo\"\nordering_key = \"bot_id\"\n";
    let cfg = set(&cfg, "server", "listen", &format!("\"127.0.0.1:{port}\""));
    let cfg = set(&cfg, "delivery", "backoff_initial", "\"300ms\"");
    let cfg = set(&cfg, "delivery", "max_retries", "10");
    let config_path = path_in(&dir, "hookgate.toml");
    let mut gw = GatewayProcess::spawn(&config_path, &cfg, port).await;
    let http = reqwest::Client::new();
    let ingest = |bot: &'static str, seq: usize| {
        let (http, url) = (http.clone(), format!("{}/v1/events", gw.base));
        async move {
            let body = json!({"trigger": "bot.state_change", "bot_id": bot, "data": {"seq": seq}});
            let r = http
                .post(url)
                .header("authorization", format!("Bearer {INGEST_TOKEN}"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    // Producers send each bot's events one after another (each waits for its 202).
    for seq in 0..10 {
        ingest("A", seq).await;
        ingest("B", seq).await;
    }
    let mut seen: Vec<(String, u64)> = Vec::new();
    let record = |r: &crate::util::receiver::Received, seen: &mut Vec<(String, u64)>| {
        let b = r.json();
        seen.push((b["bot_id"].as_str().unwrap().to_owned(), b["data"]["seq"].as_u64().unwrap()));
    };
    for _ in 0..8 {
        let r = rx.next(WAIT).await;
        record(&r, &mut seen);
    }
    let (failed_bot, _) = seen[0].clone();
    let other = if failed_bot == "A" { "B" } else { "A" };
    // While the failed head waits 300 ms for its retry, the other bot's queue keeps moving.
    let before_retry: Vec<&(String, u64)> = seen[1..].iter().take_while(|(b, _)| b != &failed_bot).collect();
    assert!(before_retry.len() >= 3 && before_retry.iter().all(|(b, _)| b == other), "{seen:?}");

    gw.kill9();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), rx.next_opt()).await {
        record(&r, &mut seen);
    }
    let mut gw = GatewayProcess::spawn(&config_path, &cfg, port).await;
    let done = |seen: &Vec<(String, u64)>| {
        let mut got: HashMap<&str, std::collections::BTreeSet<u64>> = HashMap::new();
        for (b, s) in seen {
            got.entry(b.as_str()).or_default().insert(*s);
        }
        got.values().map(|s| s.len()).sum::<usize>() == 20
    };
    while !done(&seen) {
        let r = rx.next(WAIT).await;
        record(&r, &mut seen);
    }
    // Per bot, arrivals never go back: a repeat is the same event again (a retry, or an attempt
    // cut off by the crash), never an older one after a newer one.
    for bot in ["A", "B"] {
        let order: Vec<u64> = seen.iter().filter(|(b, _)| b == bot).map(|(_, s)| *s).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "bot {bot} arrived out of order: {order:?}");
    }
    // Every delivery settles: the last records commit without new requests.
    eventually(WAIT, || async {
        let (_, p) = response(
            http.get(format!("{}/v1/deliveries?state=pending", gw.base))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
        )
        .await;
        p["data"].as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .await;
    gw.kill9();
}

/// While an ordered endpoint's circuit is open the whole queue waits: the failing head keeps
/// its retries, nothing behind it overtakes it, and the half-open probe is the head itself;
/// once it succeeds the queue moves on in order.
#[tokio::test]
async fn a_fifo_queue_waits_while_the_circuit_is_open() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::Status(503), Behavior::Status(503)]);
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("ordered", &rx.url("/"), r#"["*"]"#) + "ordering = \"fifo\"\n";
    let cfg = set(&cfg, "delivery", "breaker_failures", "2");
    let cfg = set(&cfg, "delivery", "breaker_cooldown", "\"2s\"");
    let cfg = set(&cfg, "delivery", "backoff_initial", "\"50ms\"");
    let cfg = set(&cfg, "delivery", "max_retries", "5");
    let gw = TestGateway::start(&cfg).await;
    let mut ids = Vec::new();
    for bot in ["first", "second", "third"] {
        let (s, r) = gw.ingest(&state_change(bot)).await;
        assert_eq!(s, 202, "{r}");
        ids.extend(gw.delivery_ids(r["event_id"].as_str().unwrap()).await);
    }
    let mut arrivals = Vec::new();
    for _ in 0..5 {
        let r = rx.next(WAIT).await;
        arrivals.push((r.json()["bot_id"].as_str().unwrap().to_owned(), r.at));
    }
    let bots: Vec<&str> = arrivals.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bots, ["first", "first", "first", "second", "third"], "the head is retried, then the queue moves");
    let held = arrivals[2].1.duration_since(arrivals[1].1);
    assert!(held >= Duration::from_millis(1800), "the probe came {held:?} after the circuit opened, not after 2 s");
    for id in &ids {
        assert_eq!(gw.settled(id, WAIT).await["state"], "succeeded");
    }
    assert_eq!(gw.delivery(&ids[0]).await["attempts"].as_array().unwrap().len(), 3);
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();
}

/// With `ordering_key = "bot_id"`, events without the field share one queue: the second waits
/// behind the first (whose retry is an hour away) while a keyed event goes ahead. PATCHing
/// ordering off releases the waiting one at once; the head keeps its own schedule.
#[tokio::test]
async fn keyless_events_share_a_queue_and_turning_ordering_off_releases_it() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::Status(503)]);
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "backoff_initial", "\"1h\"");
    let gw = TestGateway::start(&cfg).await;
    let (s, created) = gw
        .send_json(
            reqwest::Method::POST,
            "/v1/endpoints",
            &json!({"url": rx.url("/"), "triggers": ["*"], "ordering": "fifo", "ordering_key": "bot_id"}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let endpoint_id = created["id"].as_str().unwrap().to_owned();
    let send = |body: Value| {
        let gw = &gw;
        async move {
            let (s, r) = gw.ingest(&body).await;
            assert_eq!(s, 202, "{r}");
            gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0)
        }
    };
    let head = send(json!({"trigger": "t.keyless", "data": {"n": 1}})).await;
    assert_eq!(rx.next(WAIT).await.json()["data"]["n"], 1);
    eventually(WAIT, || async { (gw.delivery(&head).await["attempts"].as_array().unwrap().len() == 1).then_some(()) })
        .await;
    let behind = send(json!({"trigger": "t.keyless", "data": {"n": 2}})).await;
    send(json!({"trigger": "t.keyed", "bot_id": "A", "data": {"n": 3}})).await;
    assert_eq!(rx.next(WAIT).await.json()["data"]["n"], 3, "another key's queue goes ahead");
    rx.assert_silent(Duration::from_millis(500)).await;
    assert_eq!(gw.delivery(&behind).await["attempts"].as_array().unwrap().len(), 0, "it waits behind the head");

    let (s, b) =
        gw.patch(&format!("/v1/endpoints/{endpoint_id}"), &json!({"ordering": null, "ordering_key": null})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(rx.next(WAIT).await.json()["data"]["n"], 2, "released at once");
    assert_eq!(gw.settled(&behind, WAIT).await["state"], "succeeded");
    let h = gw.delivery(&head).await;
    assert_eq!((h["state"].as_str(), h["attempts"].as_array().unwrap().len()), (Some("pending"), 1), "{h}");
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();
}
