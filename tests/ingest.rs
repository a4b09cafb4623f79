//! Ingest: the error table, and the Idempotency-Key contract.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, needle: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
}

/// Every refusal has a status and a JSON error naming the problem, and nothing is stored: the
/// receiver hears nothing and no delivery is pending afterwards.
#[tokio::test]
async fn bad_requests_are_refused_with_clear_errors_and_store_nothing() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("all", &rx.url("/"), r#"["*"]"#);
    let cfg = set(&cfg, "server", "max_body_bytes", "2048");
    let gw = TestGateway::start(&cfg).await;
    let url = format!("{}/v1/events", gw.base);
    let good = state_change("b").to_string();

    // Authentication: missing, wrong, and a token of the other kind.
    for auth in [None, Some("Bearer nope"), Some(&*format!("Bearer {ADMIN_TOKEN}")), Some(INGEST_TOKEN)] {
        let mut req = gw.http.post(&url).header("content-type", "application/json").body(good.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let (s, b) = response(req).await;
        assert_error(s, &b, 401, "unauthorized", "token");
    }
    // Admin routes refuse the ingest token as well.
    let req =
        gw.http.get(format!("{}/v1/deliveries/x", gw.base)).header("authorization", format!("Bearer {INGEST_TOKEN}"));
    let (s, b) = response(req).await;
    assert_error(s, &b, 401, "unauthorized", "token");

    // Media type.
    let req = gw
        .http
        .post(&url)
        .header("authorization", format!("Bearer {INGEST_TOKEN}"))
        .header("content-type", "text/plain")
        .body(good.clone());
    let (s, b) = response(req).await;
    assert_error(s, &b, 415, "unsupported_media_type", "application/json");

    // Size: declared and streamed without a length.
    let big = format!(r#"{{"trigger":"t","data":{{"pad":"{}"}}}}"#, "x".repeat(4096));
    let (s, b) = gw.ingest_raw(big.clone().into_bytes(), &[]).await;
    assert_error(s, &b, 413, "payload_too_large", "max_body_bytes");
    let (s, b) = chunked_post(gw.addr, big.as_bytes()).await;
    assert_error(s, &b, 413, "payload_too_large", "max_body_bytes");

    // The 400 table.
    let deep = format!(r#"{{"trigger":"t","data":{{"x":{}1{}}}}}"#, "[".repeat(130), "]".repeat(130));
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"{\"trigger\":".to_vec(), "invalid_json", "malformed JSON"),
        (b"{\"trigger\":\"t\",\"data\":{\"s\":\"\xff\"}}".to_vec(), "invalid_json", "UTF-8"),
        (b"[1,2]".to_vec(), "invalid_event", "JSON object"),
        (br#"{"data":{}}"#.to_vec(), "invalid_event", "missing `trigger`"),
        (br#"{"trigger":"Bad Trigger","data":{}}"#.to_vec(), "invalid_event", "`trigger`"),
        (br#"{"trigger":"","data":{}}"#.to_vec(), "invalid_event", "`trigger`"),
        (format!(r#"{{"trigger":"{}","data":{{}}}}"#, "a".repeat(129)).into_bytes(), "invalid_event", "`trigger`"),
        (br#"{"trigger":7,"data":{}}"#.to_vec(), "invalid_event", "must be a string"),
        (br#"{"trigger":"t"}"#.to_vec(), "invalid_event", "missing `data`"),
        (br#"{"trigger":"t","data":"x"}"#.to_vec(), "invalid_event", "`data` must be an object"),
        (br#"{"trigger":"t","data":{},"idempotency_key":"k"}"#.to_vec(), "invalid_event", "reserved"),
        (br#"{"trigger":"t","data":{"a":1,"a":2}}"#.to_vec(), "invalid_json", "duplicate key"),
        (br#"{"trigger":"t","data":{"n":1e400}}"#.to_vec(), "invalid_json", "out of range"),
        (deep.into_bytes(), "invalid_json", "deeper than 64"),
    ];
    for (body, code, needle) in cases {
        let (s, b) = gw.ingest_raw(body.clone(), &[]).await;
        assert_error(s, &b, 400, code, needle);
    }

    // Wrong method on a known path, and an unknown path: JSON errors too.
    let req = gw.http.get(&url).header("authorization", format!("Bearer {INGEST_TOKEN}"));
    let (s, b) = response(req).await;
    assert_error(s, &b, 405, "method_not_allowed", "method");
    let (s, b) = gw.get("/v1/nothing-here").await;
    assert_error(s, &b, 404, "not_found", "route");
    let (s, b) = gw.get("/v1/events/not-a-uuid").await;
    assert_error(s, &b, 404, "not_found", "not-a-uuid");
    let (s, b) = gw.get(&format!("/v1/deliveries/{}", uuid::Uuid::new_v4())).await;
    assert_error(s, &b, 404, "not_found", "no delivery");

    let (s, health) = gw.get("/healthz").await;
    assert_eq!(s, 200);
    assert_eq!(health["pending_deliveries"], 0, "nothing may be stored by refused requests");
    rx.assert_silent(Duration::from_millis(300)).await;

    // And the good body, for contrast, is accepted.
    let (s, b) = gw.ingest_raw(good.into_bytes(), &[]).await;
    assert_eq!(s, 202, "{b}");
    rx.next(Duration::from_secs(10)).await;
    gw.stop().await.unwrap();
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length) over a raw connection,
/// so the size limit must be enforced while reading.
async fn chunked_post(addr: std::net::SocketAddr, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {INGEST_TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(512) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything; a failed write is fine.
    let _ = conn.write_all(&req).await;
    let mut resp = Vec::new();
    let _ = conn.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // The body may itself be chunk-encoded; take the JSON object inside it.
    let json = body.find('{').and_then(|i| body.rfind('}').map(|j| &body[i..=j])).unwrap_or("null");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// A repeated Idempotency-Key returns the first response and stores nothing new: sequentially,
/// under concurrent repeats and across a restart; a different body with the same key is a 422.
#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("all", &rx.url("/"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    let body = state_change("b").to_string().into_bytes();

    let (s1, r1) = gw.ingest_raw(body.clone(), &[("idempotency-key", "order-1")]).await;
    assert_eq!(s1, 202);
    let (s2, r2) = gw.ingest_raw(body.clone(), &[("idempotency-key", "order-1")]).await;
    assert_eq!((s2, &r2), (202, &r1));

    // Concurrent repeats of a fresh key: one event.
    let mut handles = Vec::new();
    for _ in 0..16 {
        let http = gw.http.clone();
        let url = format!("{}/v1/events", gw.base);
        let body = json!({"trigger": "t.x", "data": {"n": 1}}).to_string();
        handles.push(tokio::spawn(async move {
            response(
                http.post(url)
                    .header("authorization", format!("Bearer {INGEST_TOKEN}"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", "burst")
                    .body(body),
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        let (s, b) = h.await.unwrap();
        assert_eq!(s, 202, "{b}");
        ids.insert(b["event_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "concurrent repeats must share one event: {ids:?}");

    // Same key, different body.
    let other = state_change("other").to_string().into_bytes();
    let (s, b) = gw.ingest_raw(other, &[("idempotency-key", "order-1")]).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["code"], "idempotency_key_reused");

    // Exactly two events were delivered (order-1 and burst), once each.
    rx.next(Duration::from_secs(10)).await;
    rx.next(Duration::from_secs(10)).await;
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();

    // After a restart on the same data dir the key still replays.
    let gw = TestGateway::start(&cfg).await;
    let (s3, r3) = gw.ingest_raw(body, &[("idempotency-key", "order-1")]).await;
    assert_eq!((s3, &r3), (202, &r1));
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();
}

/// An event no endpoint subscribes to is still accepted and stored.
#[tokio::test]
async fn zero_receivers_is_still_accepted() {
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let (s, r) = gw.ingest(&state_change("b")).await;
    assert_eq!(s, 202);
    assert_eq!(r["deliveries"], 0);
    let (s, e) = gw.get(&format!("/v1/events/{}", r["event_id"].as_str().unwrap())).await;
    assert_eq!(s, 200);
    assert_eq!(e["event"]["trigger"], "bot.state_change");
    assert_eq!(e["event"]["payload"]["bot_id"], "b");
    assert_eq!(e["deliveries"], json!([]));
    gw.stop().await.unwrap();
}

/// An `Idempotency-Key` lives exactly `retention.idempotency` (24 h by default), on both
/// backends: a repeat a millisecond before then is answered from the first request; at the
/// 24 hours it is a new event, and that new event's key lives its own 24 hours. The manual
/// clock stands in for the day.
#[tokio::test]
async fn idempotency_keys_live_exactly_their_retention() {
    for (backend, on) in backends().await {
        let dir = temp_dir();
        let rx = Receiver::start(Behavior::Status(200)).await;
        let cfg = on(base_config(dir.path()) + &endpoint("all", &rx.url("/"), r#"["*"]"#));
        let clock = hookgate::clock::ManualClock::starting_now();
        let gw = TestGateway::start_with(&cfg, hookgate::Hooks { clock: clock.clone(), ..Default::default() }).await;
        let body = state_change("b").to_string().into_bytes();
        let send = || gw.ingest_raw(body.clone(), &[("idempotency-key", "order-9")]);
        const DAY: u64 = 86_400_000;

        let (s, first) = send().await;
        assert_eq!(s, 202, "{backend}: {first}");
        clock.advance(Duration::from_millis(DAY - 1));
        let (s, repeat) = send().await;
        assert_eq!((s, &repeat), (202, &first), "{backend}: a repeat within the day is the first event");
        clock.advance(Duration::from_millis(1));
        let (s, fresh) = send().await;
        assert_eq!(s, 202, "{backend}: {fresh}");
        assert_ne!(fresh["event_id"], first["event_id"], "{backend}: after the day the key is free again");
        // The new event holds the key from its own time on.
        clock.advance(Duration::from_millis(DAY - 1));
        let (_, again) = send().await;
        assert_eq!(again["event_id"], fresh["event_id"], "{backend}");
        drop(rx);
        gw.stop().await.unwrap();
    }
}

/// No request's data can fail the requests committed with it (PostgreSQL). A check constraint
/// stands in for any value the database refuses: the poisoned event is answered 422 on its own,
/// while the ten valid events that shared its group commit are stored and answered 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_value_fails_only_its_own_request() {
    let Some(db) = fresh_database().await else { return };
    let dir = temp_dir();
    let cfg = base_config(dir.path());
    let cfg = set(&set(&cfg, "storage", "backend", "\"postgres\""), "storage", "postgres_url", &format!("\"{db}\""));
    let gw = TestGateway::start(&cfg).await;
    // Serving means migrated.
    eventually(Duration::from_secs(30), || async { (gw.get("/healthz").await.0 == 200).then_some(()) }).await;
    let (mut client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    client
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (position('poison' in convert_from(record, 'UTF8')) = 0)",
        )
        .await
        .unwrap();
    let send = |body: Value| {
        let (http, base) = (gw.http.clone(), gw.base.clone());
        tokio::spawn(async move {
            response(
                http.post(format!("{base}/v1/events"))
                    .header("authorization", format!("Bearer {INGEST_TOKEN}"))
                    .header("content-type", "application/json")
                    .body(body.to_string()),
            )
            .await
        })
    };
    // Hold the events table: the writer blocks on a first ingest, and the next ones queue up
    // behind it, to be committed together.
    let lock = client.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE events IN EXCLUSIVE MODE").await.unwrap();
    let plug = send(json!({"trigger": "t.plug", "data": {}}));
    let (watcher, wconn) = tokio_postgres::connect(&db, tokio_postgres::NoTls).await.unwrap();
    let wdriver = tokio::spawn(wconn);
    eventually(Duration::from_secs(10), || async {
        let waiting: i64 = watcher
            .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'events'::regclass", &[])
            .await
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    })
    .await;
    let valid: Vec<_> = (0..10).map(|i| send(json!({"trigger": "t.valid", "data": {"i": i}}))).collect();
    let poisoned = send(json!({"trigger": "t.valid", "data": {"note": "poison"}}));
    // The requests reach the writer's queue while it is blocked (there is no event to wait
    // for: they are queued in memory).
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();

    assert_eq!(plug.await.unwrap().0, 202);
    let (s, b) = poisoned.await.unwrap();
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("unstorable")), "{b}");
    for v in valid {
        let (s, b) = v.await.unwrap();
        assert_eq!(s, 202, "a batch-mate of the refused event: {b}");
        let (s, e) = gw.get(&format!("/v1/events/{}", b["event_id"].as_str().unwrap())).await;
        assert_eq!(s, 200, "{e}");
    }
    drop((watcher, client));
    let _ = (wdriver.await, driver.await);
    gw.stop().await.unwrap();
}
