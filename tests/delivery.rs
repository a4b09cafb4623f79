//! Delivery: signatures receivers verify, retries, timeouts, redirects, the SSRF guard, fan-out.

use std::time::Duration;

use hookgate::json;
use hookgate::sign::{self, Secret};
use serde_json::json;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(10);

/// `[delivery] signature_headers = ["svix"]`: attempts carry only `svix-id`, `svix-timestamp`
/// and `svix-signature` (Svix's names for the Standard Webhooks headers, which receivers verify
/// with Svix's libraries); the official `standardwebhooks` verifier accepts them as its own.
#[tokio::test]
async fn the_svix_header_set_replaces_the_others() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "signature_headers", r#"["svix"]"#)
        + &endpoint("acme", &rx.url("/hook"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    assert_eq!(gw.ingest(&state_change("b")).await.0, 202);
    let req = rx.next(WAIT).await;
    for absent in ["x-webhook-signature", "webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(req.header(absent), "", "{absent} is not sent");
    }
    assert_eq!(req.header("svix-id"), req.json()["idempotency_key"].as_str().unwrap());
    let wh = standardwebhooks::Webhook::new(&format!("whsec_{SECRET}")).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["id", "timestamp", "signature"] {
        headers.insert(
            format!("webhook-{name}").parse::<http::HeaderName>().unwrap(),
            req.header(&format!("svix-{name}")).parse().unwrap(),
        );
    }
    wh.verify(&req.body, &headers).expect("the svix-* headers verify");
    gw.stop().await.unwrap();
}

/// The receiver's view: the body is canonical JSON of the envelope, and both signature recipes
/// verify over it, Standard Webhooks through the official `standardwebhooks` crate.
#[tokio::test]
async fn end_to_end_delivery_verifies_with_both_recipes() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("acme", &rx.url("/hook"), r#"["bot.state_change"]"#);
    let gw = TestGateway::start(&cfg).await;

    // Exact integers beyond 64 bits and Python float formatting must survive the trip.
    let body = r#"{"trigger":"bot.state_change","bot_id":"bot_1","bot_metadata":{"customer":"Zoë"},
        "data":{"event_type":"post_processing_completed","big":123456789012345678901234567890,"tiny":0.00001}}"#;
    let (status, resp) = gw.ingest_raw(body.as_bytes().to_vec(), &[]).await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["deliveries"], 1);

    let req = rx.next(WAIT).await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    assert_eq!(req.header("content-type"), "application/json");
    assert!(req.header("user-agent").starts_with("Hookgate/"), "{}", req.header("user-agent"));

    // The body is exactly the canonical envelope.
    let parsed = json::parse(&req.body).unwrap();
    assert_eq!(parsed.to_canonical().as_bytes(), &req.body[..], "body must be canonical");
    let text = std::str::from_utf8(&req.body).unwrap();
    assert!(text.contains("\"big\":123456789012345678901234567890"), "{text}");
    assert!(text.contains("\"tiny\":1e-05"), "{text}");
    let envelope = req.json();
    let key = envelope["idempotency_key"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&key).unwrap().get_version_num(), 4);
    assert_eq!(envelope["trigger"], "bot.state_change");
    assert_eq!(envelope["bot_id"], "bot_1");
    assert_eq!(envelope["bot_metadata"]["customer"], "Zoë");
    assert_eq!(envelope["data"]["event_type"], "post_processing_completed");

    // X-Webhook-Signature over the raw body (it is canonical, so re-canonicalising agrees).
    let secret = Secret::parse(SECRET).unwrap();
    assert!(sign::verify_attendee(&secret, &req.body, req.header("x-webhook-signature")));
    assert_eq!(req.header("x-webhook-signature"), sign::attendee_signature(&secret, &req.body).unwrap());

    // Standard Webhooks, verified by the official library with whsec_<same base64>.
    assert_eq!(req.header("webhook-id"), key);
    let wh = standardwebhooks::Webhook::new(&format!("whsec_{SECRET}")).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, req.header(name).parse().unwrap());
    }
    wh.verify(&req.body, &headers).expect("standardwebhooks verifies our signature");
    let mut tampered = req.body.to_vec();
    tampered[2] ^= 1;
    assert!(wh.verify(&tampered, &headers).is_err(), "a changed body must not verify");

    // The delivery log shows the success.
    let ids = gw.delivery_ids(resp["event_id"].as_str().unwrap()).await;
    let d = gw.settled(&ids[0], WAIT).await;
    assert_eq!(d["state"], "succeeded");
    assert_eq!(d["endpoint_id"], "acme");
    assert_eq!(d["idempotency_key"], key.as_str());
    assert_eq!(d["attempts"][0]["number"], 1);
    assert_eq!(d["attempts"][0]["status_code"], 200);
    assert_eq!(d["attempts"][0]["error"], serde_json::Value::Null);
    assert_eq!(d["next_attempt_at"], serde_json::Value::Null);
    gw.stop().await.unwrap();
}

/// An endpoint's own secret replaces `[signing]` for both recipes; during a rotation
/// (`previous_secrets`) every other endpoint's `webhook-signature` carries one entry per key, and
/// a receiver still holding the old key verifies with the official library.
#[tokio::test]
async fn endpoint_secrets_and_rotation() {
    use hookgate::sign::{Secret, verify_attendee, verify_standard};
    const OLD: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    const OWN: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("shared", &rx.url("/shared"), r#"["*"]"#)
        + &endpoint("own", &rx.url("/own"), r#"["*"]"#)
        + &format!("secret = \"whsec_{OWN}\"\n");
    let cfg = set(&cfg, "signing", "previous_secrets", &format!("[\"{OLD}\"]"));
    let gw = TestGateway::start(&cfg).await;
    gw.ingest(&state_change("b")).await;
    let mut got = [rx.next(WAIT).await, rx.next(WAIT).await];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let [own, shared] = got;
    let current = Secret::parse(SECRET).unwrap();
    let old = Secret::parse(OLD).unwrap();
    let own_secret = Secret::parse(OWN).unwrap();

    assert_eq!(shared.header("webhook-signature").split(' ').count(), 2);
    shared.assert_signed();
    let wh_old = standardwebhooks::Webhook::new(&format!("whsec_{OLD}")).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, shared.header(name).parse().unwrap());
    }
    wh_old.verify(&shared.body, &headers).expect("a receiver with the previous secret still verifies");
    assert!(
        !verify_attendee(&old, &shared.body, shared.header("x-webhook-signature")),
        "X-Webhook-Signature uses the current secret only"
    );

    let (id, ts, sig) = (own.header("webhook-id"), own.header("webhook-timestamp"), own.header("webhook-signature"));
    assert_eq!(sig.split(' ').count(), 1, "an endpoint's own secret has no rotation entries");
    assert!(verify_standard(&own_secret, id, ts, &own.body, sig));
    assert!(verify_attendee(&own_secret, &own.body, own.header("x-webhook-signature")));
    assert!(!verify_standard(&current, id, ts, &own.body, sig));
    assert!(!verify_attendee(&current, &own.body, own.header("x-webhook-signature")));
    gw.stop().await.unwrap();
}

/// A receiver that always fails gets exactly 1 + max_retries attempts, all with the same
/// idempotency key, each freshly timestamped, with growing gaps (100 ms, 300 ms, 900 ms: the
/// margins are wide so a loaded machine cannot reorder them).
#[tokio::test]
async fn failing_receiver_gets_one_plus_max_retries_attempts_with_growing_gaps() {
    let mut rx = Receiver::start(Behavior::Status(500)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("down", &rx.url("/"), r#"["*"]"#);
    let cfg = set(&cfg, "delivery", "backoff_multiplier", "3.0");
    let gw = TestGateway::start(&cfg).await;
    let (status, resp) = gw.ingest(&state_change("bot_r")).await;
    assert_eq!(status, 202);

    let mut reqs = Vec::new();
    for _ in 0..4 {
        reqs.push(rx.next(WAIT).await);
    }
    rx.assert_silent(Duration::from_millis(2000)).await;
    let keys: Vec<&str> = reqs.iter().map(|r| r.header("webhook-id")).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    let gaps: Vec<Duration> = reqs.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, floor) in gaps.iter().zip([100u64, 300, 900]) {
        assert!(*gap >= Duration::from_millis(floor), "gaps {gaps:?}");
    }
    assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "gaps must grow: {gaps:?}");

    let ids = gw.delivery_ids(resp["event_id"].as_str().unwrap()).await;
    let d = gw.settled(&ids[0], WAIT).await;
    assert_eq!(d["state"], "failed");
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["number"], i + 1);
        assert_eq!(a["status_code"], 500);
        assert_eq!(a["error"]["kind"], "status");
    }
    gw.stop().await.unwrap();
}

/// Success after failures stops the retries; Retry-After on a 429 delays the next attempt.
#[tokio::test]
async fn retry_after_is_honoured_and_success_ends_the_retries() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::StatusWith(429, vec![("retry-after".into(), "1".into())])]);
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("slow", &rx.url("/"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    let (_, resp) = gw.ingest(&state_change("b")).await;
    let first = rx.next(WAIT).await;
    let second = rx.next(WAIT).await;
    assert!(second.at - first.at >= Duration::from_millis(1000), "Retry-After: 1 means at least a second");
    let ids = gw.delivery_ids(resp["event_id"].as_str().unwrap()).await;
    let d = gw.settled(&ids[0], WAIT).await;
    assert_eq!(d["state"], "succeeded");
    assert_eq!(d["attempts"][0]["status_code"], 429);
    assert_eq!(d["attempts"][0]["response_body"], "scripted");
    assert_eq!(d["attempts"][1]["status_code"], 200);
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();
}

/// A receiver that never answers fails the attempt with `timeout` once `delivery.timeout` has
/// passed, not later.
#[tokio::test]
async fn hanging_receiver_fails_with_timeout() {
    let mut rx = Receiver::start(Behavior::Hang).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("hang", &rx.url("/"), r#"["*"]"#);
    let cfg = set(&set(&cfg, "delivery", "timeout", "\"300ms\""), "delivery", "max_retries", "0");
    let gw = TestGateway::start(&cfg).await;
    let (_, resp) = gw.ingest(&state_change("b")).await;
    rx.next(WAIT).await;
    let ids = gw.delivery_ids(resp["event_id"].as_str().unwrap()).await;
    let d = gw.settled(&ids[0], WAIT).await;
    assert_eq!(d["state"], "failed");
    let a = &d["attempts"][0];
    assert_eq!(a["error"]["kind"], "timeout", "{a}");
    assert_eq!(a["status_code"], serde_json::Value::Null);
    let ms = a["duration_ms"].as_u64().unwrap();
    assert!((290..2000).contains(&ms), "duration {ms} ms");
    gw.stop().await.unwrap();
}

/// A 302 is a failed attempt; the location is never requested.
#[tokio::test]
async fn redirects_are_not_followed() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::Redirect("/elsewhere".into())]);
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("moved", &rx.url("/hook"), r#"["*"]"#);
    let cfg = set(&cfg, "delivery", "max_retries", "0");
    let gw = TestGateway::start(&cfg).await;
    let (_, resp) = gw.ingest(&state_change("b")).await;
    let first = rx.next(WAIT).await;
    assert_eq!(first.path, "/hook");
    let ids = gw.delivery_ids(resp["event_id"].as_str().unwrap()).await;
    let d = gw.settled(&ids[0], WAIT).await;
    assert_eq!(d["state"], "failed");
    assert_eq!(d["attempts"][0]["status_code"], 302);
    assert_eq!(d["attempts"][0]["error"]["kind"], "status");
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();
}

/// Security rule: with the default `allow_private_networks = false`, a loopback target is
/// refused whether it is a literal address or a name that resolves to one, without a
/// connection, and permanently (no retries).
#[tokio::test]
async fn ssrf_guard_refuses_private_targets_by_default() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let port = rx.addr.port();
    let cfg = base_config(dir.path())
        + &endpoint("literal", &format!("http://127.0.0.1:{port}/"), r#"["*"]"#)
        + &endpoint("named", &format!("http://localhost:{port}/"), r#"["*"]"#)
        + &endpoint("metadata", "http://169.254.169.254/latest/meta-data/", r#"["*"]"#);
    let cfg = set(&cfg, "delivery", "allow_private_networks", "false");
    let gw = TestGateway::start(&cfg).await;
    let (_, resp) = gw.ingest(&state_change("b")).await;
    assert_eq!(resp["deliveries"], 3);
    for id in gw.delivery_ids(resp["event_id"].as_str().unwrap()).await {
        let d = gw.settled(&id, WAIT).await;
        assert_eq!(d["state"], "failed", "{d}");
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "blocked targets are not retried: {d}");
        assert_eq!(attempts[0]["error"]["kind"], "blocked", "{d}");
        let msg = attempts[0]["error"]["message"].as_str().unwrap();
        assert!(msg.contains("allow_private_networks"), "{msg}");
    }
    rx.assert_silent(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();
}

/// Attendee's rule end to end: a bot-level endpoint takes that bot's events away from the
/// project-level endpoint; other bots still reach the project-level one. Two endpoints get
/// distinct idempotency keys for the same event.
#[tokio::test]
async fn fan_out_respects_bot_level_endpoints() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("project", &rx.url("/project"), r#"["*"]"#)
        + &endpoint("project2", &rx.url("/project2"), r#"["bot.state_change"]"#)
        + &endpoint("bot-a", &rx.url("/bot-a"), r#"["transcript.update"]"#)
        + "match = { bot_id = \"bot_a\" }\n";
    let gw = TestGateway::start(&cfg).await;

    let (_, r) = gw.ingest(&state_change("bot_a")).await;
    assert_eq!(r["deliveries"], 0, "bot_a has a bot-level endpoint, not for this trigger");
    let (_, r) = gw.ingest(&json!({"trigger": "transcript.update", "bot_id": "bot_a", "data": {}})).await;
    assert_eq!(r["deliveries"], 1);
    assert_eq!(rx.next(WAIT).await.path, "/bot-a");

    let (_, r) = gw.ingest(&state_change("bot_b")).await;
    assert_eq!(r["deliveries"], 2);
    let mut got = [rx.next(WAIT).await, rx.next(WAIT).await];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!([got[0].path.as_str(), got[1].path.as_str()], ["/project", "/project2"]);
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    rx.assert_silent(Duration::from_millis(200)).await;
    gw.stop().await.unwrap();
}

/// One endpoint's slow receiver does not hold up another endpoint, and never has more than
/// `max_in_flight_per_endpoint` attempts at once: the global limit (512 here) would allow all
/// twenty, so two arriving and no third proves the per-endpoint cap.
#[tokio::test]
async fn a_slow_endpoint_gets_at_most_its_cap_and_does_not_starve_others() {
    let mut slow = Receiver::start(Behavior::Hang).await;
    let mut fast = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("slow", &slow.url("/"), r#"["slow.event"]"#)
        + &endpoint("fast", &fast.url("/"), r#"["fast.event"]"#);
    let cfg = set(&set(&cfg, "delivery", "max_in_flight_per_endpoint", "2"), "delivery", "timeout", "\"5s\"");
    let gw = TestGateway::start(&cfg).await;
    for _ in 0..20 {
        let (s, _) = gw.ingest(&json!({"trigger": "slow.event", "data": {}})).await;
        assert_eq!(s, 202);
    }
    slow.next(WAIT).await;
    slow.next(WAIT).await;
    let (_, _) = gw.ingest(&json!({"trigger": "fast.event", "data": {}})).await;
    // The fast endpoint is served well before any slow attempt could time out.
    fast.next(Duration::from_secs(2)).await;
    // Both slow slots are taken by hanging attempts until the 5 s timeout: no third request.
    slow.assert_silent(Duration::from_millis(1500)).await;
    gw.stop().await.unwrap();
}

/// A receiver that sends a 2xx status line but not the rest of its answer within
/// `delivery.timeout` has not answered in time: the attempt fails with kind `timeout`, as
/// Attendee's "fails to respond within 10 seconds".
#[tokio::test]
async fn a_2xx_whose_body_does_not_finish_in_time_is_a_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                let _ = seen_tx.send(());
                // Headers promise 100 bytes; 3 arrive; the rest never does.
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc").await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("dribble", &format!("http://127.0.0.1:{port}/"), r#"["*"]"#);
    let cfg = set(&set(&cfg, "delivery", "timeout", "\"400ms\""), "delivery", "max_retries", "0");
    let gw = TestGateway::start(&cfg).await;
    let (_, resp) = gw.ingest(&state_change("b")).await;
    tokio::time::timeout(WAIT, seen.recv()).await.unwrap();
    let ids = gw.delivery_ids(resp["event_id"].as_str().unwrap()).await;
    let d = gw.settled(&ids[0], WAIT).await;
    assert_eq!(d["state"], "failed", "{d}");
    assert_eq!(d["attempts"][0]["error"]["kind"], "timeout", "{d}");
    gw.stop().await.unwrap();
}
