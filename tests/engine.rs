//! The delivery engine's failure paths and time, and the inbound server's limits.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(10);

/// A store whose commits fail (a full disk: reads work, commits do not) must not make the
/// dispatcher re-POST the same delivery as fast as the receiver answers. The delivery cools
/// down (growing), the failure is counted, ingest answers 503 meanwhile, and once commits work
/// again the delivery is recorded as succeeded.
#[tokio::test]
async fn failed_record_writes_cool_down_instead_of_looping() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    // The first answer is slow, so the commit switch can be flipped while it is in flight.
    rx.then([Behavior::Delay(Duration::from_millis(400))]);
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("ep", &rx.url("/"), r#"["*"]"#);
    let hooks = hookgate::Hooks::default();
    let faults = hooks.faults.clone();
    let gw = TestGateway::start_with(&cfg, hooks).await;
    let (status, resp) = gw.ingest(&state_change("b")).await;
    assert_eq!(status, 202, "{resp}");
    rx.next(WAIT).await;
    faults.fail_commits.store(true, Ordering::SeqCst);

    // Ingest cannot commit either: 503, nothing acknowledged.
    let (status, body) = gw.ingest(&state_change("c")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("store_unavailable")), "{body}");

    // Over 2.5 s a hot loop would POST hundreds of times (the receiver now answers at once);
    // growing cooldowns (0.2 s, 0.4 s, 0.8 s, ...) allow a handful.
    let started = Instant::now();
    let mut repeats = 0;
    while let Some(left) = Duration::from_millis(2500).checked_sub(started.elapsed()) {
        match tokio::time::timeout(left, rx.next_opt()).await {
            Ok(Some(_)) => repeats += 1,
            _ => break,
        }
    }
    assert!((1..=6).contains(&repeats), "{repeats} attempts in 2.5 s while commits fail");
    assert!(metric(&gw, "hookgate_attempt_record_failures_total").await >= 2.0);
    assert_eq!(metric(&gw, "hookgate_deliveries_cooling_down").await, 1.0);
    assert!(metric(&gw, "hookgate_store_failed_commits_total").await >= 2.0);

    faults.fail_commits.store(false, Ordering::SeqCst);
    let ids = gw.delivery_ids(resp["event_id"].as_str().unwrap()).await;
    let d = gw.settled(&ids[0], Duration::from_secs(40)).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "only the committed attempt is recorded: {d}");
    assert_eq!(metric(&gw, "hookgate_deliveries_cooling_down").await, 0.0);
    gw.stop().await.unwrap();
}

/// Retry timing follows the injected clock: with `backoff_initial = "1h"`, the retry is made
/// when the clock reaches the hour, not a millisecond earlier, and no test waits an hour.
#[tokio::test]
async fn retries_follow_the_injected_clock() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::Status(503)]);
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("ep", &rx.url("/"), r#"["*"]"#);
    let cfg = set(&set(&cfg, "delivery", "backoff_initial", "\"1h\""), "delivery", "backoff_max", "\"2h\"");
    let clock = hookgate::clock::ManualClock::starting_now();
    let hooks = hookgate::Hooks { clock: clock.clone(), ..Default::default() };
    let wake = hooks.wake.clone();
    let gw = TestGateway::start_with(&cfg, hooks).await;
    let t0 = hookgate::clock::Clock::now_ms(&*clock);
    let (_, resp) = gw.ingest(&state_change("b")).await;
    let first = rx.next(WAIT).await;
    let ids = gw.delivery_ids(resp["event_id"].as_str().unwrap()).await;
    // The receiver has answered; the record of that attempt commits just after.
    let d = eventually(WAIT, || async {
        let d = gw.delivery(&ids[0]).await;
        (d["attempts"].as_array().unwrap().len() == 1).then_some(d)
    })
    .await;
    assert_eq!(d["next_attempt_at"], hookgate::model::rfc3339(t0 + 3_600_000), "{d}");

    clock.advance(Duration::from_millis(3_600_000 - 1));
    wake.notify_one();
    rx.assert_silent(Duration::from_millis(400)).await;
    clock.advance(Duration::from_millis(1));
    wake.notify_one();
    let second = rx.next(WAIT).await;
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    // The signature timestamp comes from the same clock.
    assert_eq!(second.header("webhook-timestamp").parse::<u64>().unwrap(), (t0 + 3_600_000) / 1000);
    let d = gw.settled(&ids[0], WAIT).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    assert_eq!(d["attempts"][1]["started_at"], hookgate::model::rfc3339(t0 + 3_600_000));
    gw.stop().await.unwrap();
}

/// The inbound server's limits: a client dribbling its headers is cut off at
/// `header_read_timeout`, a flood of idle connections past `max_connections` waits in the
/// backlog and is shed by the same timeout, a body that does not arrive gets 408, and a
/// well-behaved client's ingest still succeeds meanwhile.
#[tokio::test]
async fn slow_clients_and_connection_floods_do_not_block_ingest() {
    let dir = temp_dir();
    let cfg = base_config(dir.path());
    let cfg = set(&cfg, "server", "max_connections", "8");
    let cfg = set(&cfg, "server", "header_read_timeout", "\"500ms\"");
    let cfg = set(&cfg, "server", "request_body_timeout", "\"500ms\"");
    let gw = TestGateway::start(&cfg).await;

    // Slow headers: one byte every 100 ms never completes a request head.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let closed_after = loop {
        if slow.write_all(b"P").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => {} // an error response may come first; the close follows
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(5), "a dribbling client was never cut off");
    };
    assert!(closed_after >= Duration::from_millis(400), "cut off too early: {closed_after:?}");

    // A slow body: headers promise 100 bytes, 10 arrive.
    let mut partial = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {INGEST_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"trigger\""
    );
    partial.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), partial.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");

    // A flood: five times max_connections idle connections.
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    let started = Instant::now();
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/events", gw.base))
        .header("authorization", format!("Bearer {INGEST_TOKEN}"))
        .header("content-type", "application/json")
        .body(state_change("b").to_string())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("ingest during a connection flood");
    assert_eq!(resp.status(), 202);
    // Accepted in backlog order, eight at a time, each idle one shed after 500 ms.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // Every flood connection the server accepted was closed by it.
    let mut closed = 0;
    for mut c in flood.drain(..8) {
        let mut buf = [0u8; 16];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 8);
    drop(flood);
    gw.stop().await.unwrap();
}

/// `request_body_timeout` bounds the whole body, not each piece: a client that sends one byte
/// every 200 ms (each well inside the 1 s timeout) is answered 408 and cut off at about 1 s.
/// An answer given before the body was read (a tenant over its quota, a wrong token) says
/// `Connection: close`, so the client never sends its next request into a closed connection.
#[tokio::test]
async fn the_whole_body_has_one_deadline_and_early_answers_close_the_connection() {
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "server", "request_body_timeout", "\"1s\"");
    let gw = TestGateway::start(&cfg).await;

    let mut dribble = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {INGEST_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    dribble.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    loop {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), dribble.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                if dribble.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(7), "a dribbling body is still connected after 7 s");
    }
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_millis(2500), "cut off after {took:?}");

    // Early answers: the body is not read, so the connection must not be reused.
    let (s, _) = gw
        .send_json(
            reqwest::Method::POST,
            "/v1/tenants",
            &serde_json::json!({"id": "small", "max_events_per_second": 1}),
        )
        .await;
    assert_eq!(s, 201);
    for (path, token) in [("/v1/tenants/small/events", INGEST_TOKEN), ("/v1/events", "wrong-token")] {
        let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let body = state_change("b").to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        // Twice on one connection: the first may be accepted, the second is refused early.
        let mut answers = String::new();
        for _ in 0..2 {
            if conn.write_all(request.as_bytes()).await.is_err() {
                break;
            }
            let mut buf = vec![0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => answers.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => break,
            }
        }
        let refused =
            answers.split("HTTP/1.1 ").filter(|a| a.starts_with("429") || a.starts_with("401")).collect::<Vec<_>>();
        assert!(!refused.is_empty(), "{path}: {answers}");
        for a in refused {
            assert!(
                a.to_ascii_lowercase().contains("connection: close"),
                "{path}: an early answer keeps the connection: {a}"
            );
        }
    }
    gw.stop().await.unwrap();
}
