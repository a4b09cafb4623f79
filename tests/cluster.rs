//! Several nodes on one PostgreSQL database, with the real binary: deliveries shared between
//! the nodes (each arrives once, signed), idempotency keys unique across nodes, a node killed
//! with kill -9 whose work the other node finishes, and a database restart under a running node
//! (ingest answers 503 meanwhile, nothing acknowledged is lost, the node reconnects by itself).
//!
//! These need a PostgreSQL server: `HOOKGATE_TEST_POSTGRES_URL` (started by `.ci/run`), and for
//! the restart test the server's binaries (`HOOKGATE_TEST_PG_BIN`, run as
//! `HOOKGATE_TEST_PG_USER` when the tests run as root). Locally, without them, each test says
//! how to run it and passes; under `CI` it fails.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::pg::PrivateCluster;
use crate::util::*;

fn node_config(data_dir: &Path, port: u16, receiver_url: &str, db: &str) -> String {
    let cfg = base_config(data_dir) + &endpoint("r", receiver_url, r#"["*"]"#);
    let cfg = set(&cfg, "server", "listen", &format!("\"127.0.0.1:{port}\""));
    let cfg = set(&cfg, "delivery", "max_retries", "50");
    let cfg = set(&cfg, "delivery", "backoff_max", "\"200ms\"");
    let cfg = set(&cfg, "storage", "backend", "\"postgres\"");
    let cfg = set(&cfg, "storage", "postgres_url", &format!("\"{db}\""));
    set(&cfg, "storage", "lease", "\"2s\"")
}

async fn start_node(dir: &tempfile::TempDir, name: &str, receiver: &Receiver, db: &str) -> GatewayProcess {
    let port = free_port();
    let cfg = node_config(&dir.path().join(name), port, &receiver.url("/hook"), db);
    GatewayProcess::spawn(&dir.path().join(format!("{name}.toml")), &cfg, port).await
}

async fn post(base: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .header("authorization", format!("Bearer {INGEST_TOKEN}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    response(req).await
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    response(
        reqwest::Client::new().get(format!("{base}{path}")).header("authorization", format!("Bearer {ADMIN_TOKEN}")),
    )
    .await
}

/// Waits until every event's delivery has succeeded (asking `base`), at most `within`.
async fn all_succeed(base: &str, events: &[String], within: Duration) {
    let mut deliveries = Vec::new();
    for id in events {
        let (s, e) = get(base, &format!("/v1/events/{id}")).await;
        assert_eq!(s, 200, "event {id} was acknowledged but is missing: {e}");
        deliveries.push(e["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    let mut pending: HashSet<String> = deliveries.into_iter().collect();
    let deadline = Instant::now() + within;
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "{} deliveries never succeeded", pending.len());
        let mut done = Vec::new();
        for d in &pending {
            let (_, body) = get(base, &format!("/v1/deliveries/{d}")).await;
            if body["state"] == "succeeded" {
                done.push(d.clone());
            }
        }
        for d in done {
            pending.remove(&d);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the receiver gets until it has been quiet for `quiet`: webhook-id → times seen.
async fn drain(rx: &mut Receiver, quiet: Duration) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    while let Ok(Some(r)) = tokio::time::timeout(quiet, rx.next_opt()).await {
        r.assert_signed();
        *seen.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    seen
}

/// Two nodes, events ingested round-robin: every delivery arrives exactly once and verifies,
/// both nodes answer for every event, and an idempotency key is one key across the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_every_event_once() {
    let Some(db) = fresh_database().await else { return };
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let a = start_node(&dir, "a", &rx, &db).await;
    let b = start_node(&dir, "b", &rx, &db).await;
    let bases = [a.base.clone(), b.base.clone()];

    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let base = bases[worker % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let (s, v) =
                    post(&base, &json!({"trigger": "cluster.test", "data": {"w": worker, "i": i}}), None).await;
                assert_eq!(s, 202, "{v}");
                ids.push(v["event_id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut events = Vec::new();
    for t in tasks {
        events.extend(t.await.unwrap());
    }
    assert_eq!(events.len(), 320);
    // Each node answers for the other's events.
    all_succeed(&bases[1], &events[..160], Duration::from_secs(60)).await;
    all_succeed(&bases[0], &events[160..], Duration::from_secs(60)).await;
    let seen = drain(&mut rx, Duration::from_millis(1500)).await;
    assert_eq!(seen.len(), 320, "every delivery arrived");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "no node crashed, so nothing may arrive twice: {twice:?}");
    // The charts add up what both nodes delivered: each adds its own counts to the same rows,
    // within a second of recording them.
    eventually(Duration::from_secs(10), || async {
        let (_, s) = get(&bases[1], "/v1/stats/overview?window=1h").await;
        (s["totals"]["succeeded"] == 320 && s["totals"]["attempts"] == 320).then_some(())
    })
    .await;

    // An Idempotency-Key taken on one node is taken on the other.
    let body = json!({"trigger": "cluster.key", "data": {"n": 1}});
    let (s1, first) = post(&bases[0], &body, Some("order-77")).await;
    assert_eq!(s1, 202, "{first}");
    let (_, again) = post(&bases[1], &body, Some("order-77")).await;
    assert_eq!(again["event_id"], first["event_id"], "a repeat on the other node is answered, not stored");
    let (s3, other) = post(&bases[1], &json!({"trigger": "cluster.key", "data": {"n": 2}}), Some("order-77")).await;
    assert_eq!((s3, other["error"]["code"].as_str()), (422, Some("idempotency_key_reused")), "{other}");

    // An endpoint created through one node's API is used by the other at once (NOTIFY), and
    // its removal too.
    let created = response(
        reqwest::Client::new()
            .post(format!("{}/v1/endpoints", bases[0]))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(json!({"url": rx.url("/late"), "triggers": ["cluster.late"]}).to_string()),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
    let id = created.1["id"].as_str().unwrap().to_owned();
    let announced = Instant::now();
    eventually(Duration::from_secs(10), || async {
        (get(&bases[1], &format!("/v1/endpoints/{id}")).await.0 == 200).then_some(())
    })
    .await;
    // Node b hears of it by NOTIFY, not by some later poll.
    let took = announced.elapsed();
    assert!(took < Duration::from_secs(1), "node b learnt of the new endpoint after {took:?}");
    let (s, v) = post(&bases[1], &json!({"trigger": "cluster.late", "data": {}}), None).await;
    // The config endpoint takes every trigger; the new one is the second receiver.
    assert_eq!((s, v["deliveries"].as_u64()), (202, Some(2)), "node b fans out to the new endpoint: {v}");
    // (Deliveries of the idempotency checks above may still be ahead of it.)
    let mut late = 0;
    for _ in 0..4 {
        late += usize::from(rx.next(Duration::from_secs(10)).await.path == "/late");
        if late > 0 {
            break;
        }
    }
    assert_eq!(late, 1, "the endpoint created on node a got node b's delivery");
    let removed = response(
        reqwest::Client::new()
            .delete(format!("{}/v1/endpoints/{id}", bases[0]))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
    )
    .await;
    assert!(removed.0 == 200 || removed.0 == 204, "{removed:?}");
    eventually(Duration::from_secs(10), || async {
        (get(&bases[1], &format!("/v1/endpoints/{id}")).await.0 == 404).then_some(())
    })
    .await;
}

/// Kill -9 of a node under load: every event it acknowledged, and every delivery it held a
/// lease on, is delivered by the other node once the lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_node_finishes_a_killed_nodes_work() {
    let Some(db) = fresh_database().await else { return };
    // Deliveries fail at first, so the killed node holds retries and leases when it dies.
    let mut rx = Receiver::start(Behavior::Status(503)).await;
    let dir = temp_dir();
    let mut a = start_node(&dir, "a", &rx, &db).await;
    let b = start_node(&dir, "b", &rx, &db).await;

    let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut senders = Vec::new();
    for worker in 0..6 {
        let (tx, base) = (tx.clone(), a.base.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..1000 {
                let body = json!({"trigger": "crash.test", "data": {"w": worker, "i": i}});
                match post(&base, &body, None).await {
                    (202, v) => drop(tx.send(v["event_id"].as_str().unwrap().to_owned())),
                    _ => return,
                }
            }
        }));
    }
    drop(tx);
    let mut events = Vec::new();
    while events.len() < 150 {
        events.push(accepted.recv().await.expect("ingest works before the crash"));
    }
    rx.next(Duration::from_secs(10)).await;
    a.kill9();
    for s in senders {
        let _ = s.await;
    }
    while let Ok(id) = accepted.try_recv() {
        events.push(id);
    }
    rx.set_default(Behavior::Status(200));
    // Node b answers for a's events from the shared database, and delivers every one of them.
    all_succeed(&b.base, &events, Duration::from_secs(90)).await;
}

/// How many of the database's deliveries are leased, and by how many distinct nodes.
async fn leases(db: &str) -> (i64, i64) {
    let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(lease_owner), count(DISTINCT lease_owner) FROM deliveries WHERE lease_until_ms IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    (row.get(0), row.get(1))
}

/// An attempt three times longer than the lease (the receiver holds it 6 s, the lease is 2 s)
/// reaches the receiver exactly once: the node attempting it renews its lease, so the other
/// live node never takes the delivery over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_longer_than_the_lease_is_sent_once() {
    let Some(db) = fresh_database().await else { return };
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut rx = Receiver::start(Behavior::Held(release.clone())).await;
    let dir = temp_dir();
    let start = |name: &'static str| {
        let (dir, rx, db) = (&dir, &rx, &db);
        async move {
            let port = free_port();
            let cfg = node_config(&dir.path().join(name), port, &rx.url("/hook"), db);
            let cfg = set(&cfg, "delivery", "timeout", "\"30s\"");
            GatewayProcess::spawn(&dir.path().join(format!("{name}.toml")), &cfg, port).await
        }
    };
    let a = start("a").await;
    let _b = start("b").await;
    let (s, v) = post(&a.base, &json!({"trigger": "lease.long", "data": {}}), None).await;
    assert_eq!(s, 202, "{v}");
    let event = v["event_id"].as_str().unwrap().to_owned();
    let held = rx.next(Duration::from_secs(10)).await;
    // Three leases long, no second request: whoever holds the attempt keeps its lease.
    rx.assert_silent(Duration::from_secs(6)).await;
    rx.set_default(Behavior::Status(200));
    release.notify_one();
    all_succeed(&a.base, std::slice::from_ref(&event), Duration::from_secs(20)).await;
    let (_, e) = get(&a.base, &format!("/v1/events/{event}")).await;
    assert_eq!(e["deliveries"][0]["attempts"].as_array().unwrap().len(), 1, "{e}");
    rx.assert_silent(Duration::from_millis(500)).await;
    drop(held);
}

/// SIGTERM hands a node's leases back: what it had claimed (one attempt in flight past the
/// grace, one waiting for a slot) is delivered by the other node at once, long before the 30 s
/// lease would have run out, and before that node's next 5 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leases_back_to_the_other_node() {
    let Some(db) = fresh_database().await else { return };
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut rx = Receiver::start(Behavior::Held(release.clone())).await;
    let dir = temp_dir();
    let hook = rx.url("/hook");
    let config = |name: &str, port: u16| {
        let cfg = node_config(&dir.path().join(name), port, &hook, &db);
        let cfg = set(&cfg, "storage", "lease", "\"30s\"");
        let cfg = set(&cfg, "delivery", "timeout", "\"30s\"");
        let cfg = set(&cfg, "delivery", "max_in_flight_per_endpoint", "1");
        set(&cfg, "server", "shutdown_grace", "\"1s\"")
    };
    let port = free_port();
    let mut a = GatewayProcess::spawn(&dir.path().join("a.toml"), &config("a", port), port).await;
    let mut events = Vec::new();
    for i in 0..2 {
        let (s, v) = post(&a.base, &json!({"trigger": "lease.handback", "data": {"i": i}}), None).await;
        assert_eq!(s, 202, "{v}");
        events.push(v["event_id"].as_str().unwrap().to_owned());
    }
    rx.next(Duration::from_secs(10)).await; // node a's first attempt is held
    // Node a leases both: one in flight, the other waiting for the endpoint's only slot.
    eventually(Duration::from_secs(10), || async { (leases(&db).await == (2, 1)).then_some(()) }).await;
    let port_b = free_port();
    let b = GatewayProcess::spawn(&dir.path().join("b.toml"), &config("b", port_b), port_b).await;
    rx.set_default(Behavior::Status(200));
    a.signal("-TERM");
    assert!(a.wait_exit(Duration::from_secs(20)).await.success());
    let exited = Instant::now();
    let mut got = HashSet::new();
    while got.len() < 2 {
        let r = rx.next(Duration::from_secs(10)).await;
        got.insert(r.json()["data"]["i"].as_u64().unwrap());
    }
    let took = exited.elapsed();
    assert!(took < Duration::from_secs(2), "node b took {took:?} to deliver what node a handed back");
    all_succeed(&b.base, &events, Duration::from_secs(20)).await;
    release.notify_one();
}

/// Fencing with two real nodes: node a is stopped (SIGSTOP) in the middle of an attempt, past
/// its lease, with a second delivery queued behind it for the endpoint's only slot; node b
/// takes both over and delivers them; node a is continued and its attempt ends in a 503. That
/// late result is kept as an attempt, but the delivery stays succeeded (b's result), and node a
/// does not send the queued one again (its lease was lost while it waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_late_result_never_undoes_the_others() {
    let Some(db) = fresh_database().await else { return };
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::HeldThen(release.clone(), 503)]);
    let dir = temp_dir();
    let hook = rx.url("/hook");
    let start = |name: &'static str| {
        let (dir, db, hook) = (&dir, &db, hook.clone());
        async move {
            let port = free_port();
            let cfg = node_config(&dir.path().join(name), port, &hook, db);
            let cfg = set(&cfg, "delivery", "timeout", "\"60s\"");
            let cfg = set(&cfg, "delivery", "max_in_flight_per_endpoint", "1");
            GatewayProcess::spawn(&dir.path().join(format!("{name}.toml")), &cfg, port).await
        }
    };
    let a = start("a").await;
    let mut events = Vec::new();
    for i in 0..2 {
        let (s, v) = post(&a.base, &json!({"trigger": "fence.test", "data": {"i": i}}), None).await;
        assert_eq!(s, 202, "{v}");
        events.push(v["event_id"].as_str().unwrap().to_owned());
    }
    rx.next(Duration::from_secs(10)).await; // node a's first attempt is held
    // Node a leases both: one in flight, the other waiting for the only slot.
    eventually(Duration::from_secs(10), || async { (leases(&db).await == (2, 1)).then_some(()) }).await;
    let b = start("b").await;
    a.signal("-STOP");
    // Node b takes both over once a's 2 s leases have run out, and delivers them.
    let delivery = |base: String, k: usize| {
        let event = events[k].clone();
        async move {
            let (_, e) = get(&base, &format!("/v1/events/{event}")).await;
            e["deliveries"][0].clone()
        }
    };
    for _ in 0..2 {
        assert_eq!(rx.next(Duration::from_secs(20)).await.path, "/hook");
    }
    for k in 0..2 {
        eventually(Duration::from_secs(20), || async {
            (delivery(b.base.clone(), k).await["state"] == "succeeded").then_some(())
        })
        .await;
    }
    // Node a goes on: its held attempt ends in a 503, too late to count.
    release.notify_one();
    a.signal("-CONT");
    let d = eventually(Duration::from_secs(20), || async {
        let d = delivery(b.base.clone(), 0).await;
        (d["attempts"].as_array().unwrap().len() == 2).then_some(d)
    })
    .await;
    assert_eq!(d["state"], "succeeded", "the late 503 undid node b's success: {d}");
    // Nothing more: not the first again, and not the second, whose pass on node a waited.
    rx.assert_silent(Duration::from_millis(2000)).await;
    let d = delivery(a.base.clone(), 0).await;
    assert_eq!((d["state"].as_str(), d["attempts"].as_array().unwrap().len()), (Some("succeeded"), 2), "{d}");
    let d = delivery(a.base.clone(), 1).await;
    assert_eq!((d["state"].as_str(), d["attempts"].as_array().unwrap().len()), (Some("succeeded"), 1), "{d}");
}

/// The database goes away under a running node and comes back: ingest answers 503 with a JSON
/// error meanwhile, everything acknowledged before and after is delivered, and the node
/// reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_costs_a_503_not_an_event() {
    if pg_server().is_none() {
        return;
    }
    let Some(cluster) = PrivateCluster::create() else { return };
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let node = start_node(&dir, "a", &rx, &cluster.url()).await;
    let mut events = Vec::new();
    for i in 0..20 {
        let (s, v) = post(&node.base, &json!({"trigger": "restart.test", "data": {"i": i}}), None).await;
        assert_eq!(s, 202, "{v}");
        events.push(v["event_id"].as_str().unwrap().to_owned());
    }
    cluster.stop();
    let (s, v) = post(&node.base, &json!({"trigger": "restart.test", "data": {"down": true}}), None).await;
    assert_eq!(s, 503, "ingest while the database is down: {v}");
    assert_eq!(v["error"]["code"], "store_unavailable", "a JSON error body naming the problem: {v}");
    let (s, h) = response(reqwest::Client::new().get(format!("{}/healthz", node.base))).await;
    assert_eq!((s, h["error"]["code"].as_str()), (503, Some("store_unavailable")), "{h}");
    cluster.start();
    // The node reconnects by itself: ingest works again within a bounded time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        i += 1;
        let (s, v) = post(&node.base, &json!({"trigger": "restart.test", "data": {"after": i}}), None).await;
        if s == 202 {
            events.push(v["event_id"].as_str().unwrap().to_owned());
            break;
        }
        assert_eq!(s, 503, "{v}");
        assert!(Instant::now() < deadline, "ingest did not recover after the database came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    all_succeed(&node.base, &events, Duration::from_secs(60)).await;
    let seen = drain(&mut rx, Duration::from_millis(500)).await;
    assert!(seen.len() >= events.len(), "{} deliveries for {} events", seen.len(), events.len());
}

fn hookgate(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `check` reaches the database and reports its schema; `migrate` applies the migrations once;
/// `serve --no-migrate` refuses a database without the schema; an unreachable server and a
/// misspelt backend are clear errors. The shipped cluster example is the config used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_check_report_the_schema() {
    let Some(db) = fresh_database().await else { return };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cluster-example.toml");
    let env = [("DATABASE_URL", db.as_str())];
    let (ok, out, err) = hookgate(&["check", "--config", example], &env);
    assert!(ok, "{out}{err}");
    assert!(out.contains("storage:  postgres") && out.contains("schema version 0 (needs `hookgate migrate`"), "{out}");
    assert!(!out.contains(&db), "the URL is never printed: {out}");

    let dir = temp_dir();
    let port = free_port();
    let cfg = node_config(&dir.path().join("n"), port, "http://127.0.0.1:9/", &db);
    let path = dir.path().join("n.toml");
    std::fs::write(&path, &cfg).unwrap();
    let (ok, _, err) = hookgate(&["serve", "--no-migrate", "--config", path.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("run `hookgate migrate"), "{err}");

    let (ok, out, err) = hookgate(&["migrate", "--config", example], &env);
    assert!(ok && out.contains("applied migration(s) 1, 2, 3, 4; schema version 4"), "{out}{err}");
    let (ok, out, _) = hookgate(&["migrate", "--config", example], &env);
    assert!(ok && out.contains("up to date"), "{out}");
    let (ok, out, err) = hookgate(&["check", "--config", example], &env);
    assert!(ok && out.contains("schema version 4 (up to date)"), "{out}{err}");

    // A database migrated by a newer hookgate is refused, not misread.
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    client.execute("UPDATE hookgate_schema SET version = 99", &[]).await.unwrap();
    let (ok, _, err) = hookgate(&["check", "--config", example], &env);
    assert!(!ok && err.contains("schema version 99") && err.contains("understands up to 4"), "{err}");
    let (ok, _, err) = hookgate(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("schema version 99"), "{err}");
    client.execute("UPDATE hookgate_schema SET version = 4", &[]).await.unwrap();
    drop(client);
    let _ = driver.await;

    // A database an older release migrated (schema 1) is brought up to date, its rows kept.
    let old = fresh_database().await.unwrap();
    let (client, conn) = tokio_postgres::connect(&old, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE TABLE hookgate_schema (version integer NOT NULL); INSERT INTO hookgate_schema VALUES (1); {}",
            include_str!("../gateway/store/pg/001_init.sql")
        ))
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO deliveries (id, event_id, endpoint_id, state, keys, record) VALUES (gen_random_uuid(), gen_random_uuid(), 'e', 'pending', '{}', '')",
            &[],
        )
        .await
        .unwrap();
    let (ok, out, err) = hookgate(&["migrate", "--config", example], &[("DATABASE_URL", old.as_str())]);
    assert!(ok && out.contains("applied migration(s) 2, 3, 4; schema version 4"), "{out}{err}");
    let row = client.query_one("SELECT count(*), min(lease_token) FROM deliveries", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 0), "the row is kept, with a token of 0");
    drop(client);
    let _ = driver.await;

    // Nothing listens on the port of a server that is not there.
    let gone = format!("postgres://hookgate:sekrit@127.0.0.1:{}/postgres", free_port());
    let (ok, _, err) = hookgate(&["check", "--config", example], &[("DATABASE_URL", gone.as_str())]);
    assert!(!ok && err.contains("storage.postgres_url") && err.contains("cannot connect"), "{err}");
    assert!(!err.contains("sekrit"), "the password is never printed: {err}");

    // A database that does not exist: the server's own words, never the password.
    let (server, _) = db.rsplit_once('/').unwrap();
    let missing = format!("{}/no_such_db", server.replacen("hookgate@", "hookgate:sekrit@", 1));
    let (ok, _, err) = hookgate(&["check", "--config", example], &[("DATABASE_URL", missing.as_str())]);
    assert!(!ok && err.contains("database \"no_such_db\" does not exist"), "{err}");
    assert!(!err.contains("sekrit"), "the password is never printed: {err}");
    let port = free_port();
    let cfg_missing = node_config(&dir.path().join("m"), port, "http://127.0.0.1:9/", &missing);
    let path_missing = dir.path().join("m.toml");
    std::fs::write(&path_missing, cfg_missing).unwrap();
    let (ok, _, err) = hookgate(&["serve", "--config", path_missing.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("database \"no_such_db\" does not exist"), "serve names the cause: {err}");
    assert!(!err.contains("sekrit"), "the password is never printed: {err}");

    let typo = cfg.replace("backend = \"postgres\"", "backend = \"postgress\"");
    std::fs::write(&path, typo).unwrap();
    let (ok, _, err) = hookgate(&["check", "--config", path.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("storage.backend") && err.contains("\"postgress\" is not a storage backend"), "{err}");
    assert!(err.contains("n.toml:"), "names the line: {err}");
}
