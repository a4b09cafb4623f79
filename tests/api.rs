//! The delivery log and management API: listing with filters and pagination, resend (single,
//! capped, bulk), endpoints at runtime and their effect on fan-out, bad input, metrics, and the
//! `listen` receiver.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

async fn post(gw: &TestGateway, path: &str, body: &Value) -> (u16, Value) {
    response(
        gw.http
            .post(format!("{}{path}", gw.base))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

async fn delete(gw: &TestGateway, path: &str) -> u16 {
    response(gw.http.delete(format!("{}{path}", gw.base)).header("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .await
        .0
}

/// Follows `next_cursor` through every page of a listing; returns the ids in order.
async fn all_pages(gw: &TestGateway, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/deliveries?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, page) = gw.get(&path).await;
        assert_eq!(s, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit);
        ids.extend(data.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// A store with a few hundred deliveries across bots, triggers, endpoints and states: every
/// filter, alone and combined, returns exactly the matching deliveries, newest first, across
/// pages, without duplicates.
#[tokio::test]
async fn listing_filters_and_paginates() {
    let rx = Receiver::start(Behavior::Status(200)).await;
    let down = Receiver::start(Behavior::Status(500)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("ok", &rx.url("/"), r#"["*"]"#)
        + &endpoint("down", &down.url("/"), r#"["bot.state_change"]"#);
    let cfg = set(&cfg, "delivery", "max_retries", "0");
    let gw = TestGateway::start(&cfg).await;

    // 120 events: bots b0..b3, alternating triggers; state changes also go to "down".
    let mut expected: Vec<(String, String, String)> = Vec::new(); // (bot, trigger, endpoint), in creation order
    let start_ms = hookgate::model::now_ms();
    for i in 0..120 {
        let bot = format!("b{}", i % 4);
        let trigger = if i % 3 == 0 { "bot.state_change" } else { "transcript.update" };
        let (s, r) = gw.ingest(&json!({"trigger": trigger, "bot_id": bot, "data": {"i": i}})).await;
        assert_eq!(s, 202);
        let n = r["deliveries"].as_u64().unwrap();
        expected.push((bot.clone(), trigger.into(), "ok".into()));
        if n == 2 {
            expected.push((bot.clone(), trigger.into(), "down".into()));
        }
    }
    let total = expected.len();
    assert_eq!(total, 160);
    // Wait until every delivery has settled.
    eventually(WAIT, || async {
        let (_, page) = gw.get("/v1/deliveries?state=pending&limit=1").await;
        page["data"].as_array().unwrap().is_empty().then_some(())
    })
    .await;

    let everything = all_pages(&gw, "", 7).await;
    assert_eq!(everything.len(), total);
    assert_eq!(everything.iter().collect::<HashSet<_>>().len(), total, "no duplicates across pages");
    let mut sorted = everything.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(everything, sorted, "newest first (ids are time-ordered)");

    let count = |f: &dyn Fn(&(String, String, String)) -> bool| expected.iter().filter(|e| f(e)).count();
    let since_q = format!("since={start_ms}");
    let until_q = format!("until={}", start_ms.saturating_sub(1));
    let cases: Vec<(&str, usize)> = vec![
        ("bot_id=b1", count(&|e| e.0 == "b1")),
        ("trigger=bot.state_change", count(&|e| e.1 == "bot.state_change")),
        ("endpoint_id=down", count(&|e| e.2 == "down")),
        ("state=failed", count(&|e| e.2 == "down")),
        ("state=succeeded", count(&|e| e.2 == "ok")),
        (
            "bot_id=b2&endpoint_id=ok&trigger=transcript.update",
            count(&|e| e.0 == "b2" && e.2 == "ok" && e.1 == "transcript.update"),
        ),
        ("bot_id=b3&state=failed", count(&|e| e.0 == "b3" && e.2 == "down")),
        ("bot_id=nobody", 0),
        (&since_q, total),
        (&until_q, 0),
    ];
    for (query, want) in cases {
        let ids = all_pages(&gw, query, 9).await;
        assert_eq!(ids.len(), want, "{query}");
        // Every returned delivery really matches.
        for id in ids.iter().take(5) {
            let d = gw.delivery(id).await;
            for part in query.split('&') {
                let (k, v) = part.split_once('=').unwrap();
                match k {
                    "bot_id" => assert_eq!(d["resource"]["bot_id"], v, "{query}"),
                    "trigger" | "endpoint_id" | "state" => assert_eq!(d[k], v, "{query}"),
                    _ => {}
                }
            }
        }
    }
    drop((rx, down));
    gw.stop().await.unwrap();
}

/// Bad input to every new route is a clear 4xx with the JSON error shape, and changes nothing.
#[tokio::test]
async fn new_routes_refuse_bad_input() {
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("cfg", "https://example.com/h", r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    let cases = [
        ("/v1/deliveries?state=lost", "`state`"),
        ("/v1/deliveries?limit=0", "`limit`"),
        ("/v1/deliveries?limit=5000", "`limit`"),
        ("/v1/deliveries?cursor=xyz", "`cursor`"),
        ("/v1/deliveries?since=yesterday", "`since`"),
        // Found in review: a multi-byte character where the offset goes panicked the handler,
        // and an impossible date was read as the next month's.
        ("/v1/deliveries?since=2023-11-14T22:13:20%2Ba%E2%82%ACb", "`since`"),
        ("/v1/deliveries?since=2023-11-14T22:13:20+a%E2%82%ACb", "`since`"),
        ("/v1/deliveries?since=2023-02-31", "`since`"),
        ("/v1/deliveries?until=2023-02-31T00:00:00Z", "`until`"),
    ];
    for (path, needle) in cases {
        let (s, b) = gw.get(path).await;
        assert_eq!(s, 400, "{path}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(needle), "{path}: {b}");
    }
    let unknown = uuid::Uuid::now_v7();
    let (s, _) = post(&gw, &format!("/v1/deliveries/{unknown}/resend"), &json!({})).await;
    assert_eq!(s, 404);
    for (body, needle) in [
        (json!({}), "endpoint_id"),
        (json!({"endpoint_id": "cfg"}), "since"),
        (json!({"endpoint_id": "cfg", "since": "soon"}), "since"),
        (json!({"endpoint_id": "cfg", "since": "2026-01-01T00:00:00Z", "x": 1}), "unknown field"),
        (json!([1]), "object"),
    ] {
        let (s, b) = post(&gw, "/v1/deliveries/resend", &body).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(needle), "{body}: {b}");
    }
    let secret32 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    for (body, needle) in [
        (json!({"triggers": ["*"]}), "missing `url`"),
        (json!({"url": "ftp://x.example/", "triggers": ["*"]}), "scheme"),
        (json!({"url": "https://x.example/"}), "missing `triggers`"),
        (json!({"url": "https://x.example/", "triggers": []}), "at least one"),
        (json!({"url": "https://x.example/", "triggers": ["Bad Trigger"]}), "not a trigger"),
        (json!({"url": "https://x.example/", "triggers": ["*"], "match": {"trigger": "x"}}), "reserved"),
        (json!({"url": "https://x.example/", "triggers": ["*"], "match": {"bot_id": {"a": 1}}}), "match.bot_id"),
        // The config file's rules, exactly: no floats, no empty match.
        (json!({"url": "https://x.example/", "triggers": ["*"], "match": {"score": 1.5}}), "not a float"),
        (json!({"url": "https://x.example/", "triggers": ["*"], "match": {}}), "at least one field"),
        (json!({"url": "https://x.example/", "triggers": ["*"], "secret": "c2hvcnQ="}), "at least 32"),
        (json!({"url": "https://x.example/", "triggers": ["*"], "colour": "red"}), "unknown field"),
        (json!({"url": "https://u:p@x.example/", "triggers": ["*"], "secret": secret32}), "credentials"),
    ] {
        let (s, b) = post(&gw, "/v1/endpoints", &body).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["error"]["code"], "invalid_endpoint", "{b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(needle), "{body}: {b}");
    }
    let (s, b) = response(
        gw.http
            .post(format!("{}/v1/endpoints", gw.base))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body("{not json"),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_json")));
    // Nothing was created.
    let (_, list) = gw.get("/v1/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(delete(&gw, "/v1/endpoints/cfg").await, 409, "config endpoints are read-only");
    assert_eq!(delete(&gw, "/v1/endpoints/nope").await, 404);
    // The dashboard page holds no data and forbids framing and foreign connections.
    let page = gw.http.get(format!("{}/", gw.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("<title>Hookgate"));
    // Admin routes refuse a missing token; PUT is not a method here.
    let (s, _) = response(gw.http.get(format!("{}/v1/deliveries", gw.base))).await;
    assert_eq!(s, 401);
    let (s, b) = response(
        gw.http.put(format!("{}/v1/endpoints", gw.base)).header("authorization", format!("Bearer {ADMIN_TOKEN}")),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    gw.stop().await.unwrap();
}

/// A failed delivery resent by hand: one new attempt now, same idempotency key, freshly signed,
/// marked manual; the delivery succeeds. Past 50 attempts a resend is refused.
#[tokio::test]
async fn resend_makes_one_manual_attempt_and_is_capped() {
    let mut rx = Receiver::start(Behavior::Status(500)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("r", &rx.url("/"), r#"["*"]"#);
    let cfg = set(&cfg, "delivery", "max_retries", "0");
    let gw = TestGateway::start(&cfg).await;
    let (_, r) = gw.ingest(&state_change("b")).await;
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    let first = rx.next(WAIT).await;
    assert_eq!(gw.settled(&id, WAIT).await["state"], "failed");

    rx.set_default(Behavior::Status(200));
    let (s, d) = post(&gw, &format!("/v1/deliveries/{id}/resend"), &json!({})).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["state"], "succeeded");
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1]["manual"], true);
    assert_eq!(attempts[1]["status_code"], 200);
    let again = rx.next(WAIT).await;
    assert_eq!(again.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(again.body, first.body);
    again.assert_signed();
    assert_eq!(d["body"], again.json(), "the log shows exactly the body sent");

    // The cap: a delivery with 50 attempts takes no more.
    rx.set_default(Behavior::Status(500));
    let cfg2 = base_config(&dir.path().join("capped")) + &endpoint("r", &rx.url("/"), r#"["*"]"#);
    let cfg2 = set(
        &set(&set(&cfg2, "delivery", "max_retries", "49"), "delivery", "backoff_initial", "\"1ms\""),
        "delivery",
        "backoff_multiplier",
        "1.0",
    );
    let gw2 = TestGateway::start(&cfg2).await;
    let (_, r) = gw2.ingest(&state_change("b")).await;
    let id2 = gw2.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    let d = gw2.settled(&id2, Duration::from_secs(30)).await;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 50);
    let (s, b) = post(&gw2, &format!("/v1/deliveries/{id2}/resend"), &json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "attempt_limit_reached");
    gw2.stop().await.unwrap();
    gw.stop().await.unwrap();
}

/// Bulk resend ("recover"): every failed delivery of an endpoint since a time gets one new
/// attempt; others are untouched.
#[tokio::test]
async fn bulk_resend_requeues_failed_deliveries_of_one_endpoint() {
    let mut rx = Receiver::start(Behavior::Status(500)).await;
    let other = Receiver::start(Behavior::Status(500)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("a", &rx.url("/a"), r#"["*"]"#)
        + &endpoint("b", &other.url("/b"), r#"["*"]"#);
    let cfg = set(&cfg, "delivery", "max_retries", "0");
    let gw = TestGateway::start(&cfg).await;
    let since = hookgate::model::rfc3339(hookgate::model::now_ms());
    for i in 0..5 {
        gw.ingest(&json!({"trigger": "t.x", "data": {"i": i}})).await;
    }
    for _ in 0..5 {
        rx.next(WAIT).await;
    }
    eventually(WAIT, || async {
        let (_, p) = gw.get("/v1/deliveries?state=failed").await;
        (p["data"].as_array().unwrap().len() == 10).then_some(())
    })
    .await;
    rx.set_default(Behavior::Status(200));
    let (s, b) = post(&gw, "/v1/deliveries/resend", &json!({"endpoint_id": "a", "since": since})).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["queued"], 5);
    for _ in 0..5 {
        assert_eq!(rx.next(WAIT).await.path, "/a");
    }
    eventually(WAIT, || async {
        let (_, p) = gw.get("/v1/deliveries?endpoint_id=a&state=succeeded").await;
        (p["data"].as_array().unwrap().len() == 5).then_some(())
    })
    .await;
    let (_, p) = gw.get("/v1/deliveries?endpoint_id=b&state=failed").await;
    assert_eq!(p["data"].as_array().unwrap().len(), 5, "the other endpoint is untouched");
    let (_, p) = gw.get("/v1/deliveries?endpoint_id=a").await;
    for d in p["data"].as_array().unwrap() {
        assert_eq!(d["last_attempt"]["manual"], true);
    }
    // Nothing failed is left for "a": a second recover queues nothing.
    let (_, b) = post(&gw, "/v1/deliveries/resend", &json!({"endpoint_id": "a", "since": since})).await;
    assert_eq!(b["queued"], 0);
    drop(other);
    gw.stop().await.unwrap();
}

/// Endpoints created at runtime: listed beside config endpoints, used for fan-out with the same
/// rules (a bot-level endpoint takes that bot away from project-level ones), kept across a
/// restart, and deleted without losing their delivery history.
#[tokio::test]
async fn runtime_endpoints_change_fan_out_and_survive_restarts() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("project", &rx.url("/project"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;

    let (s, created) = post(
        &gw,
        "/v1/endpoints",
        &json!({"url": rx.url("/bot-7"), "triggers": ["bot.state_change"], "match": {"bot_id": "bot_7"}, "secret": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["source"], "api");
    assert_eq!(created["has_secret"], true);
    assert!(created.get("secret").is_none(), "secrets are never returned");
    let (_, one) = gw.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(one["match"], json!({"bot_id": "bot_7"}));
    let (_, list) = gw.get("/v1/endpoints").await;
    let sources: Vec<&str> = list["data"].as_array().unwrap().iter().map(|e| e["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["config", "api"]);

    let (_, r) = gw.ingest(&state_change("bot_7")).await;
    assert_eq!(r["deliveries"], 1);
    assert_eq!(rx.next(WAIT).await.path, "/bot-7");
    let (_, r) = gw.ingest(&state_change("bot_8")).await;
    assert_eq!(r["deliveries"], 1);
    assert_eq!(rx.next(WAIT).await.path, "/project");
    gw.stop().await.unwrap();

    // It survives a restart.
    let gw = TestGateway::start(&cfg).await;
    let (_, r) = gw.ingest(&state_change("bot_7")).await;
    assert_eq!(r["deliveries"], 1);
    assert_eq!(rx.next(WAIT).await.path, "/bot-7");
    let (_, history) = gw.get(&format!("/v1/deliveries?endpoint_id={id}")).await;
    assert_eq!(history["data"].as_array().unwrap().len(), 2);

    assert_eq!(delete(&gw, &format!("/v1/endpoints/{id}")).await, 204);
    let (s, _) = gw.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(s, 404);
    let (_, r) = gw.ingest(&state_change("bot_7")).await;
    assert_eq!(r["deliveries"], 1);
    assert_eq!(rx.next(WAIT).await.path, "/project", "deleted: back to the project-level endpoint");
    let (_, history) = gw.get(&format!("/v1/deliveries?endpoint_id={id}")).await;
    assert_eq!(history["data"].as_array().unwrap().len(), 2, "history is kept");
    gw.stop().await.unwrap();
}

/// `/metrics` reflects what happened: events, outcomes, attempts by class and kind, pending,
/// histograms.
#[tokio::test]
async fn metrics_reflect_a_run() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let down = Receiver::start(Behavior::Status(503)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("ok", &rx.url("/"), r#"["ok.event"]"#)
        + &endpoint("down", &down.url("/"), r#"["down.event"]"#);
    let cfg = set(&cfg, "delivery", "max_retries", "1");
    let gw = TestGateway::start(&cfg).await;
    for _ in 0..3 {
        gw.ingest(&json!({"trigger": "ok.event", "data": {}})).await;
    }
    let (_, r) = gw.ingest(&json!({"trigger": "down.event", "data": {}})).await;
    for _ in 0..3 {
        rx.next(WAIT).await;
    }
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    gw.settled(&id, WAIT).await;
    let text = gw.http.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
    for line in [
        "hookgate_events_ingested_total 4",
        "hookgate_deliveries_created_total 4",
        "hookgate_deliveries_total{outcome=\"succeeded\"} 3",
        "hookgate_deliveries_total{outcome=\"failed\"} 1",
        "hookgate_attempts_total{status_class=\"2xx\",error=\"none\"} 3",
        "hookgate_attempts_total{status_class=\"5xx\",error=\"status\"} 2",
        "hookgate_pending_deliveries 0",
        "hookgate_ingest_commit_seconds_count 4",
        "hookgate_attempt_duration_seconds_count 5",
        "hookgate_delivery_latency_seconds_count 3",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("# TYPE hookgate_ingest_commit_seconds histogram"));
    // The exposition is valid for Prometheus itself, naming conventions included.
    if let Some(promtool) = crate::util::promtool() {
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n{text}");
    }
    drop(down);
    gw.stop().await.unwrap();
}

/// `hookgate listen` verifies both signatures of a real delivery, and refuses a forged one.
#[tokio::test]
async fn listen_verifies_deliveries_and_refuses_forgeries() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["listen", "--port", &port.to_string(), "--secret", &format!("whsec_{SECRET}")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(first.contains(&format!("127.0.0.1:{port}")), "{first}");

    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("l", &format!("http://127.0.0.1:{port}/hook"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    let (_, r) = gw.ingest(&state_change("b")).await;
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    assert_eq!(gw.settled(&id, WAIT).await["state"], "succeeded");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap());
        seen.retain(|l| !l.trim().is_empty());
    }
    assert!(seen[0].starts_with("POST /hook"), "{seen:?}");
    assert_eq!(seen[1].trim(), "X-Webhook-Signature: valid");
    assert_eq!(seen[2].trim(), "webhook-signature:   valid");

    let forged = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hook"))
        .header("x-webhook-signature", "AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    gw.stop().await.unwrap();
}

/// `PATCH /v1/endpoints/{id}` uses creation's rules (a refused body changes nothing), and a
/// pending delivery's next attempt goes to the new URL, signed with the new secret.
#[tokio::test]
async fn patched_endpoints_apply_to_pending_deliveries() {
    let mut old = Receiver::start(Behavior::Status(503)).await;
    let mut new = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "backoff_initial", "\"300ms\"");
    let gw = TestGateway::start(&cfg).await;
    let (s, ep) = post(&gw, "/v1/endpoints", &json!({"url": old.url("/old"), "triggers": ["*"]})).await;
    assert_eq!(s, 201, "{ep}");
    let path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
    let (_, r) = gw.ingest(&state_change("b")).await;
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    let first = old.next(WAIT).await;

    for (body, field) in [
        (json!({"rate_limit": "5/h"}), "rate_limit"),
        (json!({"ordering_key": "bot_id"}), "ordering_key"),
        (json!({"url": new.url("/new"), "triggers": []}), "triggers"),
        (json!({"url": 5}), "url"),
        (json!({"secret": "short"}), "secret"),
        (json!({"colour": "red"}), "colour"),
        (json!({"enabled": 1}), "enabled"),
    ] {
        let (s, b) = gw.patch(&path, &body).await;
        assert_eq!(s, 400, "{body} => {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(field), "{body} => {b}");
    }
    let (_, now) = gw.get(&path).await;
    assert_eq!(now["url"], old.url("/old"), "nothing of a refused body is applied: {now}");
    assert_eq!(gw.patch("/v1/endpoints/nope", &json!({"enabled": false})).await.0, 404);

    const NEW_SECRET: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let patch = json!({"url": new.url("/new"), "secret": NEW_SECRET, "rate_limit": "100/s", "ordering": "fifo"});
    let (s, b) = gw.patch(&path, &patch).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!((b["url"].as_str(), b["has_secret"].as_bool()), (Some(new.url("/new").as_str()), Some(true)), "{b}");
    assert_eq!((b["rate_limit"].as_str(), b["ordering"].as_str()), (Some("100/s"), Some("fifo")), "{b}");
    assert!(b.get("secret").is_none(), "secrets never appear in GET or PATCH answers: {b}");
    old.assert_silent(Duration::from_millis(100)).await;
    let second = new.next(WAIT).await;
    assert_eq!(second.header("webhook-id"), first.header("webhook-id"), "the same delivery, retried");
    let wh = standardwebhooks::Webhook::new(&format!("whsec_{NEW_SECRET}")).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, second.header(name).parse().unwrap());
    }
    wh.verify(&second.body, &headers).expect("signed with the new secret");
    assert_eq!(gw.settled(&id, WAIT).await["state"], "succeeded");

    // Clearing with null, and the change survives a restart.
    let (s, b) = gw.patch(&path, &json!({"ordering": null, "rate_limit": null})).await;
    assert_eq!((s, b["ordering"].is_null(), b["rate_limit"].is_null()), (200, true, true), "{b}");
    gw.stop().await.unwrap();
    let gw = TestGateway::start(&cfg).await;
    let (_, after) = gw.get(&path).await;
    assert_eq!((after["url"].as_str(), after["has_secret"].as_bool()), (Some(new.url("/new").as_str()), Some(true)));
    assert!(after["ordering"].is_null(), "{after}");
    gw.stop().await.unwrap();
}

/// `since` and `until` (milliseconds, inclusive) through the HTTP API, on both backends:
/// windows that must leave deliveries out do, alone and with another filter.
#[tokio::test]
async fn time_windows_leave_out_what_is_outside_them() {
    for (backend, on) in backends().await {
        let rx = Receiver::start(Behavior::Status(200)).await;
        let dir = temp_dir();
        let gw = TestGateway::start(&on(base_config(dir.path()) + &endpoint("ok", &rx.url("/"), r#"["*"]"#))).await;
        // Three batches, each in milliseconds of its own: ids (and so times) of batch k are
        // after bounds[k - 1] and at or before bounds[k].
        let mut batches: Vec<Vec<String>> = Vec::new();
        let mut bounds = Vec::new();
        for b in 0..3 {
            let mut ids = Vec::new();
            for i in 0..4 {
                let trigger = if i % 2 == 0 { "even.event" } else { "odd.event" };
                let (s, r) = gw.ingest(&json!({"trigger": trigger, "data": {"b": b, "i": i}})).await;
                assert_eq!(s, 202, "{backend}: {r}");
                ids.extend(gw.delivery_ids(r["event_id"].as_str().unwrap()).await);
            }
            batches.push(ids);
            let bound = hookgate::model::now_ms();
            bounds.push(bound);
            while hookgate::model::now_ms() <= bound {
                tokio::task::yield_now().await;
            }
        }
        let set_of = |ids: Vec<String>| ids.into_iter().collect::<HashSet<String>>();
        let batch = |ks: &[usize]| set_of(ks.iter().flat_map(|&k| batches[k].clone()).collect());
        let (b0, b1) = (bounds[0], bounds[1]);
        let cases = [
            (format!("since={}", b0 + 1), batch(&[1, 2])),
            (format!("until={b0}"), batch(&[0])),
            (format!("since={}&until={b1}", b0 + 1), batch(&[1])),
            (format!("until={b1}"), batch(&[0, 1])),
            (format!("since={}", bounds[2] + 1), HashSet::new()),
            (
                format!("since={}&until={b1}&trigger=odd.event", b0 + 1),
                batches[1].iter().skip(1).step_by(2).cloned().collect(),
            ),
        ];
        for (query, want) in cases {
            let got = all_pages(&gw, &query, 3).await;
            assert_eq!(got.len(), want.len(), "{backend}: {query}");
            assert_eq!(set_of(got), want, "{backend}: {query}");
        }
        gw.stop().await.unwrap();
    }
}

/// Every refusal has the API's error shape, including those made before a handler runs (a
/// path that is not UTF-8, a body over the admin routes' limit, a method a path does not
/// take); times past what the log can hold are a 400, not a wrapped-around range; and what
/// ingest accepts at its deepest nesting reads back through the API.
#[tokio::test]
async fn every_refusal_has_the_error_shape_and_limits_agree() {
    let rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&(base_config(dir.path()) + &endpoint("ok", &rx.url("/"), r#"["*"]"#))).await;
    let admin = |method: reqwest::Method, path: &str| {
        gw.http.request(method, format!("{}{path}", gw.base)).header("authorization", format!("Bearer {ADMIN_TOKEN}"))
    };
    let cases = [
        (admin(reqwest::Method::PUT, "/v1/events"), 405, "method_not_allowed"),
        (admin(reqwest::Method::GET, "/v1/deliveries/%FF%FE"), 400, "invalid_request"),
        (
            admin(reqwest::Method::POST, "/v1/tenants")
                .header("content-type", "application/json")
                .body(format!("{{\"id\": \"x\", \"name\": \"{}\"}}", "n".repeat(3 << 20))),
            413,
            "payload_too_large",
        ),
        (admin(reqwest::Method::GET, "/v1/deliveries?since=281474976710656"), 400, "invalid_request"),
        (admin(reqwest::Method::GET, "/v1/deliveries?until=99999999999999999999"), 400, "invalid_request"),
    ];
    for (req, status, code) in cases {
        let resp = req.send().await.unwrap();
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({got}): {text}"));
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    // The latest time the log holds is a valid bound.
    let (s, page) = gw.get("/v1/deliveries?until=281474976710655").await;
    assert_eq!(s, 200, "{page}");

    // 64 levels are accepted and read back (through serde_json, in the API's answers); 65 are
    // refused.
    let nested = |levels: usize| {
        // The event is one level and `data` another: the rest are arrays.
        let inner = format!("{}{}", "[".repeat(levels - 2), "]".repeat(levels - 2));
        format!("{{\"trigger\": \"deep.one\", \"data\": {{\"x\": {inner}}}}}")
    };
    let (s, r) = gw.ingest_raw(nested(64).into_bytes(), &[]).await;
    assert_eq!(s, 202, "{r}");
    let (_, e) = gw.get(&format!("/v1/events/{}", r["event_id"].as_str().unwrap())).await;
    assert!(e["event"]["payload"]["data"]["x"].is_array(), "the event reads back, as JSON: {e}");
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    let d = gw.delivery(&id).await;
    assert!(d["body"]["data"]["x"].is_array(), "the stored body reads back: {d}");
    let (s, r) = gw.ingest_raw(nested(65).into_bytes(), &[]).await;
    assert_eq!((s, r["error"]["code"].as_str()), (400, Some("invalid_json")), "{r}");
    gw.stop().await.unwrap();
}

/// `PATCH {"ordering": null}` turns FIFO off for an endpoint ordered by a key, without the
/// caller having to clear `ordering_key` too; naming a key while turning ordering off is still
/// refused.
#[tokio::test]
async fn turning_ordering_off_drops_its_key() {
    let rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let (s, ep) = gw
        .send_json(
            reqwest::Method::POST,
            "/v1/endpoints",
            &json!({"url": rx.url("/o"), "triggers": ["*"], "ordering": "fifo", "ordering_key": "bot_id"}),
        )
        .await;
    assert_eq!(s, 201, "{ep}");
    let path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
    let (s, b) = gw.patch(&path, &json!({"ordering": null, "ordering_key": "bot_id"})).await;
    assert_eq!(s, 400, "a key without ordering is refused: {b}");
    let (s, b) = gw.patch(&path, &json!({"ordering": null})).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["ordering"].is_null() && b["ordering_key"].is_null(), "{b}");
    let (_, after) = gw.get(&path).await;
    assert!(after["ordering"].is_null() && after["ordering_key"].is_null(), "{after}");
    gw.stop().await.unwrap();
}

/// Checks a received delivery's standard-webhooks signature against one secret.
fn verifies(rx: &crate::util::receiver::Received, secret: &str) -> bool {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, rx.header(name).parse().unwrap());
    }
    wh.verify(&rx.body, &headers).is_ok()
}

/// `POST /v1/endpoints/{id}/secret/rotate`: the new secret is shown once and signs from then
/// on; the old one signs beside it for the overlap, which survives a restart; an overlap of
/// "0s" retires it at once; bad bodies and config endpoints are refused.
#[tokio::test]
async fn rotating_an_endpoint_secret_overlaps_the_old_one() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("fixed", &rx.url("/fixed"), r#"["other.trigger"]"#);
    let gw = TestGateway::start(&cfg).await;
    const OLD: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let (s, ep) = post(&gw, "/v1/endpoints", &json!({"url": rx.url("/r"), "triggers": ["*"], "secret": OLD})).await;
    assert_eq!(s, 201, "{ep}");
    let rotate = format!("/v1/endpoints/{}/secret/rotate", ep["id"].as_str().unwrap());

    for (body, named) in [
        (json!({"overlap": "8d"}), "overlap"),
        (json!({"overlap": 5}), "overlap"),
        (json!({"secret": "short"}), "secret"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let (s, b) = post(&gw, &rotate, &body).await;
        assert_eq!(s, 400, "{body} => {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(named), "{body} => {b}");
    }
    assert_eq!(post(&gw, "/v1/endpoints/fixed/secret/rotate", &json!({})).await.0, 409, "config endpoints");
    assert_eq!(post(&gw, "/v1/endpoints/nope/secret/rotate", &json!({})).await.0, 404);

    let (s, b) = post(&gw, &rotate, &json!({"overlap": "1h"})).await;
    assert_eq!(s, 200, "{b}");
    let new = b["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != OLD, "{b}");
    assert!(b["previous_secret_signs_until"].as_str().is_some(), "{b}");
    let (_, shown) = gw.get(&format!("/v1/endpoints/{}", ep["id"].as_str().unwrap())).await;
    assert!(!shown.to_string().contains(&new[6..]), "the secret is shown only once: {shown}");
    gw.ingest(&state_change("b")).await;
    let got = rx.next(WAIT).await;
    assert!(verifies(&got, &new) && verifies(&got, OLD), "both sign during the overlap");
    gw.stop().await.unwrap();

    // The overlap is stored: after a restart both still sign; then it is ended at once.
    let gw = TestGateway::start(&cfg).await;
    gw.ingest(&state_change("b")).await;
    let got = rx.next(WAIT).await;
    assert!(verifies(&got, &new) && verifies(&got, OLD), "the overlap survives a restart");
    let (s, b) = post(&gw, &rotate, &json!({"overlap": "0s"})).await;
    assert_eq!(s, 200, "{b}");
    let newest = b["secret"].as_str().unwrap().to_owned();
    gw.ingest(&state_change("b")).await;
    let got = rx.next(WAIT).await;
    assert!(verifies(&got, &newest), "the newest secret signs");
    assert!(!verifies(&got, &new) && !verifies(&got, OLD), "no overlap: the replaced secrets do not");
    gw.stop().await.unwrap();
}

/// An endpoint's custom headers go out with every delivery, are never shown back (names
/// only), cannot override the gateway's own; an endpoint with channels takes no plain event.
#[tokio::test]
async fn custom_headers_are_sent_and_never_shown() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    for (headers, named) in [
        (json!({"webhook-signature": "x"}), "webhook-signature"),
        (json!({"Content-Type": "text/plain"}), "Content-Type"),
        (json!({"bad name": "x"}), "bad name"),
        (json!({"X-Ok": "line\nbreak"}), "X-Ok"),
        (json!({"X-Ok": 5}), "X-Ok"),
        (json!({"X-Ok": "sealed:v1:x"}), "sealed:"),
    ] {
        let (s, b) =
            post(&gw, "/v1/endpoints", &json!({"url": rx.url("/h"), "triggers": ["*"], "headers": headers})).await;
        assert_eq!(s, 400, "{headers} => {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(named), "{headers} => {b}");
    }
    let body = json!({"url": rx.url("/h"), "triggers": ["*"], "description": "CRM", "metadata": {"team": "crm"},
        "headers": {"Authorization": "Bearer s3cret-value", "X-Source": "hookgate-test"}});
    let (s, ep) = post(&gw, "/v1/endpoints", &body).await;
    assert_eq!(s, 201, "{ep}");
    assert_eq!((ep["description"].as_str(), &ep["metadata"]), (Some("CRM"), &json!({"team": "crm"})), "{ep}");
    assert_eq!(ep["header_names"], json!(["Authorization", "X-Source"]), "{ep}");
    let (_, list) = gw.get("/v1/endpoints").await;
    assert!(!list.to_string().contains("s3cret") && !ep.to_string().contains("s3cret"), "values never shown");
    gw.ingest(&state_change("b")).await;
    let got = rx.next(WAIT).await;
    assert_eq!((got.header("authorization"), got.header("x-source")), ("Bearer s3cret-value", "hookgate-test"));
    got.assert_signed();

    // Channels: a plain event (no channels) does not reach an endpoint that has some.
    let id = ep["id"].as_str().unwrap();
    let (s, b) = gw.patch(&format!("/v1/endpoints/{id}"), &json!({"channels": ["eu"]})).await;
    assert_eq!((s, &b["channels"]), (200, &json!(["eu"])), "{b}");
    let (_, r) = gw.ingest(&state_change("b")).await;
    assert_eq!(r["deliveries"], 0, "{r}");
    gw.stop().await.unwrap();
}

/// Concurrent creates cannot both pass the checks: of eight creates of one tenant id, of
/// endpoints with one chosen id, or of one event type, one succeeds and seven get 409 (none silently replaces
/// another); a tenant's `max_endpoints` holds under eight concurrent creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_keep_ids_unique_and_quotas() {
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let tenants = burst(&gw, "/v1/tenants", json!({"id": "small", "max_endpoints": 3})).await;
    let created: Vec<&Value> = tenants.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    assert_eq!(created.len(), 1, "one tenant of that id: {tenants:?}");
    let (_, revealed) = post(&gw, "/v1/tenants/small/secret/reveal", &json!({})).await;
    assert_eq!(revealed["secret"], created[0]["secret"], "the secret the creator was shown is the one that signs");
    let same = burst(&gw, "/v1/endpoints", json!({"id": "same", "url": "https://a.example/", "triggers": ["*"]})).await;
    let mut codes: Vec<u16> = same.iter().map(|(s, _)| *s).collect();
    codes.sort();
    assert_eq!(codes, [201, 409, 409, 409, 409, 409, 409, 409], "{same:?}");
    let types = burst(&gw, "/api/v1/event-type", json!({"name": "a.b", "description": "x"})).await;
    let mut codes: Vec<u16> = types.iter().map(|(s, _)| *s).collect();
    codes.sort();
    assert_eq!(codes, [201, 409, 409, 409, 409, 409, 409, 409], "one event type of that name: {types:?}");
    let quota =
        burst(&gw, "/v1/tenants/small/endpoints", json!({"url": "https://b.example/", "triggers": ["*"]})).await;
    assert_eq!(quota.iter().filter(|(s, _)| *s == 201).count(), 3, "{quota:?}");
    let (_, list) = gw.get("/v1/tenants/small/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
    gw.stop().await.unwrap();
}

/// Eight admin POSTs of `body` to `path`, all in flight at once; their answers.
async fn burst(gw: &TestGateway, path: &str, body: Value) -> Vec<(u16, Value)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let req = gw
            .http
            .post(format!("{}{path}", gw.base))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        set.spawn(response(req));
    }
    set.join_all().await
}
