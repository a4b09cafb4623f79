//! Endpoint health through the real HTTP API: the circuit breaker, auto-disable, operational
//! webhooks (verified with the official `standardwebhooks` crate), rate limits measured at the
//! receiver and `Retry-After` pauses.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(10);

/// The next operational event the receiver gets: signed like any delivery, with `trigger`.
async fn next_operational(ops: &mut Receiver, trigger: &str) -> Value {
    let r = ops.next(WAIT).await;
    r.assert_signed();
    let body = r.json();
    assert_eq!(body["trigger"], trigger, "{body}");
    assert!(body["idempotency_key"].is_string(), "{body}");
    body
}

fn ops_endpoint(ops: &Receiver) -> String {
    endpoint("ops", &ops.url("/ops"), r#"["ops.only"]"#) + "\n[operations]\nendpoint = \"ops\"\n"
}

/// After `breaker_failures` failures in a row the circuit opens: nothing is sent to the
/// endpoint while it is open, its due deliveries wait on disk without using up their retries,
/// other endpoints carry on, and a successful probe closes it. Both changes are announced.
#[tokio::test]
async fn the_circuit_opens_holds_deliveries_and_a_probe_closes_it() {
    let mut down = Receiver::start(Behavior::Status(503)).await;
    let mut ok = Receiver::start(Behavior::Status(200)).await;
    let mut ops = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("down", &down.url("/"), r#"["bot.state_change"]"#)
        + &endpoint("ok", &ok.url("/"), r#"["other.event"]"#)
        + &ops_endpoint(&ops);
    let cfg = set(&cfg, "delivery", "breaker_failures", "3");
    let cfg = set(&cfg, "delivery", "breaker_cooldown", "\"2s\"");
    // Without the breaker, each delivery would use up its 3 attempts within 150 ms and fail.
    let cfg = set(&cfg, "delivery", "max_retries", "2");
    let cfg = set(&cfg, "delivery", "backoff_initial", "\"50ms\"");
    let cfg = set(&cfg, "delivery", "max_in_flight_per_endpoint", "1");
    let gw = TestGateway::start(&cfg).await;
    let mut ids = Vec::new();
    for bot in ["b1", "b2", "b3"] {
        let (s, r) = gw.ingest(&state_change(bot)).await;
        assert_eq!(s, 202, "{r}");
        ids.extend(gw.delivery_ids(r["event_id"].as_str().unwrap()).await);
    }
    for _ in 0..3 {
        down.next(WAIT).await;
    }
    let opened = next_operational(&mut ops, "endpoint.circuit_opened").await;
    assert_eq!(opened["endpoint_id"], "down");
    assert_eq!(opened["data"]["circuit"], "open");
    assert_eq!(opened["data"]["consecutive_failures"], 3);
    assert_eq!(opened["data"]["last_error"]["kind"], "status");
    let (_, ep) = gw.get("/v1/endpoints/down").await;
    assert_eq!((ep["circuit"].as_str(), ep["consecutive_failures"].as_u64()), (Some("open"), Some(3)), "{ep}");
    assert!(ep["circuit_open_until"].is_string(), "{ep}");
    assert_eq!(metric(&gw, "hookgate_endpoints_circuit_open").await, 1.0);

    // Open: the other endpoint is unaffected, and nothing goes to this one.
    let (s, _) = gw.ingest(&json!({"trigger": "other.event", "data": {}})).await;
    assert_eq!(s, 202);
    ok.next(WAIT).await;
    down.assert_silent(Duration::from_millis(300)).await;
    for id in &ids {
        assert_eq!(gw.delivery(id).await["state"], "pending", "waiting on disk, not failed");
    }

    // The receiver recovers: one probe after the cooldown closes the circuit, the rest follow.
    down.set_default(Behavior::Status(200));
    let closed = next_operational(&mut ops, "endpoint.circuit_closed").await;
    assert_eq!(closed["data"]["circuit"], "closed");
    for id in &ids {
        let d = gw.settled(id, WAIT).await;
        assert_eq!(d["state"], "succeeded", "{d}");
        assert!(d["attempts"].as_array().unwrap().len() <= 3, "{d}");
    }
    let (_, ep) = gw.get("/v1/endpoints/down").await;
    assert_eq!((ep["circuit"].as_str(), ep["consecutive_failures"].as_u64()), (Some("closed"), Some(0)), "{ep}");
    assert_eq!(metric(&gw, "hookgate_endpoints_circuit_open").await, 0.0);
    assert!(ep["last_success_at"].is_string() && ep["attempts_last_hour"].as_u64() >= Some(4), "{ep}");
    gw.stop().await.unwrap();
}

/// An endpoint whose attempts all fail for `disable_after` is disabled: announced, its pending
/// deliveries fail with `endpoint_disabled`, new events skip it (the event says so), the state
/// survives a restart, and re-enabling it (PATCH) lets events through and failed deliveries be
/// recovered with the bulk resend.
#[tokio::test]
async fn failing_endpoints_are_disabled_and_can_be_enabled_again() {
    let mut flaky = Receiver::start(Behavior::Status(400)).await;
    let mut ops = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("flaky", &flaky.url("/"), r#"["*"]"#) + &ops_endpoint(&ops);
    let cfg = set(&cfg, "delivery", "disable_after", "\"400ms\"");
    let cfg = set(&cfg, "delivery", "max_retries", "50");
    let cfg = set(&cfg, "delivery", "backoff_initial", "\"50ms\"");
    let cfg = set(&cfg, "delivery", "backoff_multiplier", "1.0");
    let gw = TestGateway::start(&cfg).await;
    let mut ids = Vec::new();
    for bot in ["b1", "b2"] {
        let (_, r) = gw.ingest(&state_change(bot)).await;
        ids.extend(gw.delivery_ids(r["event_id"].as_str().unwrap()).await);
    }
    let disabled = next_operational(&mut ops, "endpoint.disabled").await;
    assert_eq!(disabled["endpoint_id"], "flaky");
    assert_eq!(disabled["data"]["enabled"], false);
    assert_eq!(disabled["data"]["last_error"]["kind"], "status");
    for id in &ids {
        let d = gw.settled(id, WAIT).await;
        assert_eq!(
            (d["state"].as_str(), d["error"]["kind"].as_str()),
            (Some("failed"), Some("endpoint_disabled")),
            "{d}"
        );
    }
    while tokio::time::timeout(Duration::from_millis(100), flaky.next_opt()).await.is_ok() {}

    // New events skip it, and say why.
    let (_, r) = gw.ingest(&state_change("b3")).await;
    assert_eq!(r["deliveries"], 0, "{r}");
    let (_, ev) = gw.get(&format!("/v1/events/{}", r["event_id"].as_str().unwrap())).await;
    assert_eq!(ev["event"]["skipped"], json!([{"endpoint_id": "flaky", "reason": "endpoint_disabled"}]), "{ev}");
    flaky.assert_silent(Duration::from_millis(200)).await;

    // The state is stored.
    gw.stop().await.unwrap();
    let gw = TestGateway::start(&cfg).await;
    let (_, ep) = gw.get("/v1/endpoints/flaky").await;
    assert_eq!(ep["enabled"], false, "{ep}");
    assert!(ep["disabled_at"].is_string() && ep["last_failure_at"].is_string(), "{ep}");
    assert_eq!(ep["last_error"]["kind"], "status", "{ep}");
    assert_eq!(metric(&gw, "hookgate_endpoints_disabled").await, 1.0);

    // Enabled again by hand (a config endpoint accepts `enabled`, nothing else).
    let (s, b) = gw.patch("/v1/endpoints/flaky", &json!({"url": "http://127.0.0.1:9/"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("endpoint_read_only")), "{b}");
    let (s, b) = gw.patch("/v1/endpoints/flaky", &json!({"enabled": "yes"})).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("`enabled`"), "{b}");
    flaky.set_default(Behavior::Status(200));
    let (s, ep) = gw.patch("/v1/endpoints/flaky", &json!({"enabled": true})).await;
    assert_eq!((s, ep["enabled"].as_bool(), ep["circuit"].as_str()), (200, Some(true), Some("closed")), "{ep}");
    let enabled = next_operational(&mut ops, "endpoint.enabled").await;
    assert_eq!(enabled["data"]["enabled"], true);
    let (_, r) = gw.ingest(&state_change("b4")).await;
    assert_eq!(r["deliveries"], 1, "{r}");
    assert_eq!(flaky.next(WAIT).await.json()["bot_id"], "b4");

    let (s, b) = gw
        .send_json(
            reqwest::Method::POST,
            "/v1/deliveries/resend",
            &json!({"endpoint_id": "flaky", "since": "2000-01-01"}),
        )
        .await;
    assert_eq!((s, b["queued"].as_u64()), (202, Some(2)), "{b}");
    for id in &ids {
        assert_eq!(gw.settled(id, WAIT).await["state"], "succeeded");
    }
    gw.stop().await.unwrap();
}

/// A delivery that fails after its last retry is announced with what an operator needs; the
/// announcement is itself an ordinary delivery in the log.
#[tokio::test]
async fn exhausted_deliveries_are_announced() {
    let mut bad = Receiver::start(Behavior::Status(500)).await;
    let mut ops = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("bad", &bad.url("/"), r#"["*"]"#) + &ops_endpoint(&ops);
    let cfg = set(&cfg, "delivery", "max_retries", "1");
    let gw = TestGateway::start(&cfg).await;
    let (_, r) = gw.ingest(&state_change("bot_9")).await;
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    bad.next(WAIT).await;
    bad.next(WAIT).await;
    let ex = next_operational(&mut ops, "delivery.exhausted").await;
    let data = &ex["data"];
    assert_eq!(data["delivery_id"], id.as_str());
    assert_eq!(data["event_id"], r["event_id"]);
    assert_eq!((data["endpoint_id"].as_str(), data["trigger"].as_str()), (Some("bad"), Some("bot.state_change")));
    assert_eq!(data["resource"]["bot_id"], "bot_9");
    assert_eq!((data["attempts"].as_u64(), data["last_error"]["kind"].as_str()), (Some(2), Some("status")), "{ex}");
    assert_eq!(gw.delivery(&id).await["state"], "failed");
    let (_, page) = gw.get("/v1/deliveries?endpoint_id=ops").await;
    let logged = page["data"].as_array().unwrap();
    assert_eq!(logged.len(), 1, "{page}");
    assert_eq!(logged[0]["trigger"], "delivery.exhausted");
    gw.stop().await.unwrap();
}

/// `rate_limit = "10/s"`: 30 deliveries reach the receiver no faster than one second's burst
/// plus 10 per second, and none fails for it.
#[tokio::test]
async fn rate_limits_hold_at_the_receiver() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("slow", &rx.url("/"), r#"["*"]"#) + "rate_limit = \"10/s\"\n";
    let gw = TestGateway::start(&cfg).await;
    for i in 0..30 {
        let (s, _) = gw.ingest(&state_change(&format!("b{i}"))).await;
        assert_eq!(s, 202);
    }
    let mut times = Vec::new();
    for _ in 0..30 {
        times.push(rx.next(WAIT).await.at);
    }
    // Any window of one second holds at most the burst (10) plus a second's refill (10).
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|t| t.duration_since(*start) < Duration::from_secs(1)).count();
        assert!(in_window <= 21, "{in_window} attempts within one second");
    }
    let spread = times[29].duration_since(times[0]);
    assert!(spread >= Duration::from_millis(1800), "30 attempts at 10/s after a burst of 10 took {spread:?}");
    eventually(WAIT, || async {
        let (_, page) = gw.get("/v1/deliveries?state=succeeded&limit=50").await;
        (page["data"].as_array().unwrap().len() == 30).then_some(())
    })
    .await;
    gw.stop().await.unwrap();
}

/// A 429 with `Retry-After` pauses the whole endpoint, not just the delivery that got it.
#[tokio::test]
async fn retry_after_pauses_the_whole_endpoint() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::StatusWith(429, vec![("retry-after".into(), "1".into())])]);
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("r", &rx.url("/"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    gw.ingest(&state_change("first")).await;
    let limited = rx.next(WAIT).await;
    gw.ingest(&state_change("second")).await;
    let next = rx.next(WAIT).await;
    let waited = next.at.duration_since(limited.at);
    assert!(waited >= Duration::from_millis(900), "the next attempt came {waited:?} after the 429");
    let (_, ep) = gw.get("/v1/endpoints/r").await;
    assert_eq!(ep["circuit"], "closed", "one 429 does not open the circuit");
    gw.stop().await.unwrap();
}

/// The operations endpoint cannot feed itself: when it fails too, the announcement of another
/// endpoint's exhausted delivery is attempted and exhausted like any delivery, and its own
/// exhaustion announces nothing. Without the guard, each failed announcement would announce
/// another, for ever.
#[tokio::test]
async fn a_failing_operations_endpoint_does_not_announce_itself() {
    let mut bad = Receiver::start(Behavior::Status(500)).await;
    let mut ops = Receiver::start(Behavior::Status(500)).await;
    let dir = temp_dir();
    let cfg =
        base_config(dir.path()) + &endpoint("bad", &bad.url("/"), r#"["bot.state_change"]"#) + &ops_endpoint(&ops);
    let cfg = set(&cfg, "delivery", "max_retries", "1");
    let cfg = set(&cfg, "delivery", "backoff_initial", "\"20ms\"");
    let gw = TestGateway::start(&cfg).await;
    let (_, r) = gw.ingest(&state_change("bot_1")).await;
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    bad.next(WAIT).await;
    bad.next(WAIT).await;
    // The announcement's two attempts (it fails like any delivery)...
    let first = ops.next(WAIT).await;
    let second = ops.next(WAIT).await;
    assert_eq!(first.json()["trigger"], "delivery.exhausted");
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"), "a retry of the same announcement");
    assert_eq!(first.json()["data"]["delivery_id"], id.as_str());
    // ...after which it is exhausted too, and nothing more is announced.
    let announcement = eventually(WAIT, || async {
        let (_, page) = gw.get("/v1/deliveries?endpoint_id=ops").await;
        let data = page["data"].as_array().unwrap().clone();
        (data.len() == 1 && data[0]["state"] == "failed").then_some(data)
    })
    .await;
    assert_eq!(announcement[0]["trigger"], "delivery.exhausted");
    ops.assert_silent(Duration::from_millis(600)).await;
    let (_, page) = gw.get("/v1/deliveries?endpoint_id=ops").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "the failed announcement was announced: {page}");
    let (_, events) = gw.get("/v1/deliveries?trigger=delivery.exhausted").await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
    gw.stop().await.unwrap();
}

/// A tenant's token cannot turn its access into a flood of writes: enabling and disabling an
/// endpoint by hand is allowed once per 10 s (429 with `Retry-After` in between), so at most
/// one operational event per interval is announced; a test send counts against the tenant's
/// events quota. A deleted endpoint's health is forgotten (it no longer counts as disabled).
#[tokio::test]
async fn tenant_tokens_cannot_amplify_writes() {
    let mut ops = Receiver::start(Behavior::Status(200)).await;
    let rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let clock = hookgate::clock::ManualClock::starting_now();
    let hooks = hookgate::Hooks { clock: clock.clone(), ..Default::default() };
    let gw = TestGateway::start_with(&(base_config(dir.path()) + &ops_endpoint(&ops)), hooks).await;
    let (s, b) =
        gw.send_json(reqwest::Method::POST, "/v1/tenants", &json!({"id": "t", "max_events_per_second": 1})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = gw.send_json(reqwest::Method::POST, "/v1/tenants/t/tokens", &json!({})).await;
    assert_eq!(s, 201, "{b}");
    let token = b["token"].as_str().unwrap().to_owned();
    let as_tenant = |method: reqwest::Method, path: &str, body: Value| {
        let req = gw
            .http
            .request(method, format!("{}{path}", gw.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let resp = req.send().await.unwrap();
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, retry, serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)))
        }
    };
    let (s, _, b) =
        as_tenant(reqwest::Method::POST, "/v1/tenants/t/endpoints", json!({"url": rx.url("/"), "triggers": ["*"]}))
            .await;
    assert_eq!(s, 201, "{b}");
    let path = format!("/v1/tenants/t/endpoints/{}", b["id"].as_str().unwrap());
    let test_path = format!("{path}/test");

    let flip = |enabled: bool| as_tenant(reqwest::Method::PATCH, &path, json!({"enabled": enabled}));
    assert_eq!(flip(false).await.0, 200);
    let (s, retry, b) = flip(true).await;
    assert_eq!((s, b["error"]["code"].as_str(), retry.as_deref()), (429, Some("too_many_changes"), Some("10")), "{b}");
    // Asking for what already holds is no change, and no refusal.
    assert_eq!(flip(false).await.0, 200);
    clock.advance(Duration::from_secs(10));
    assert_eq!(flip(true).await.0, 200);
    next_operational(&mut ops, "endpoint.disabled").await;
    next_operational(&mut ops, "endpoint.enabled").await;
    ops.assert_silent(Duration::from_millis(300)).await;

    // A test send is an event of the tenant's: 1 per second with the clock still.
    let (s, _, b) = as_tenant(reqwest::Method::POST, &test_path, json!({})).await;
    assert_eq!(s, 202, "{b}");
    let (s, retry, b) = as_tenant(reqwest::Method::POST, &test_path, json!({})).await;
    assert_eq!((s, b["error"]["code"].as_str(), retry.is_some()), (429, Some("rate_limited"), true), "{b}");

    // A deleted endpoint's health is forgotten: a disabled one no longer counts as disabled.
    clock.advance(Duration::from_secs(10));
    assert_eq!(flip(false).await.0, 200);
    assert_eq!(metric(&gw, "hookgate_endpoints_disabled").await, 1.0);
    let (s, _, _) = as_tenant(reqwest::Method::DELETE, &path, json!({})).await;
    assert_eq!(s, 204);
    assert_eq!(metric(&gw, "hookgate_endpoints_disabled").await, 0.0, "the deleted endpoint's health is kept");
    gw.stop().await.unwrap();
}
