//! Rounds of faults under load, valid and hostile: nothing acknowledged may be lost.
//!
//! `cargo bench --bench faults` runs the real binary (and, for the disk-full kind, the gateway
//! in-process with the store's fault switch) against a receiver on 127.0.0.1, while producers
//! send valid events and hostile requests (bad JSON, a body over the limit, a body that
//! dribbles in, hostile field names). Per fault kind it prints the events acknowledged (202),
//! those delivered, those lost (acknowledged, never delivered: must be 0), the duplicates
//! (receipts beyond the first, expected after a crash: receivers deduplicate by `webhook-id`),
//! and the longest time from the end of a fault (the node back up and answering, SIGCONT, the
//! database back, the disk writable again) to the first delivery after it.
//!
//! Kinds: `kill -9` of a redb node and restart; the store refusing commits for 300 ms (disk
//! full); with PostgreSQL (`HOOKGATE_TEST_POSTGRES_URL`, as `.ci/run` starts one), two nodes
//! with `kill -9` of one, `SIGSTOP` of one past its lease then `SIGCONT`, and (with
//! `HOOKGATE_TEST_PG_BIN`) a restart of a private database cluster. `ROUNDS=n` scales every
//! kind's rounds (default: 52 faults in all).

#[path = "../tests/util/mod.rs"]
mod util;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use util::{Behavior, GatewayProcess, INGEST_TOKEN, Receiver, base_config, endpoint, free_port, set};

/// What one fault kind saw.
#[derive(Default)]
struct Tally {
    rounds: usize,
    acked: HashSet<String>,
    /// The moments each fault ended.
    cleared: Vec<Instant>,
}

/// Deliveries seen by the receiver: sequence tag → arrival times.
type Seen = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// Producers sending to `bases` until `stop`: valid events tagged `kind-n` (acknowledged ones
/// go to `acked`) and, every fifth request, a hostile one.
fn producers(
    kind: &'static str,
    bases: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|w| {
            let (bases, acked, stop) = (bases.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                // A node that is down (or restarting) must not stall the others' traffic.
                let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Each producer keeps to one node.
                    let base = {
                        let b = bases.lock().unwrap();
                        b[w % b.len()].clone()
                    };
                    if n.is_multiple_of(5) {
                        hostile(&http, &base, n).await;
                        continue;
                    }
                    let tag = format!("{kind}-{w}-{n}");
                    let body = json!({"trigger": "fault.test", "bot_id": format!("b{}", n % 7), "data": {"tag": tag}});
                    let sent = http
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(INGEST_TOKEN)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 202 => drop(acked.lock().unwrap().insert(tag)),
                        // Refused or cut off by the fault: not acknowledged, so not owed.
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect()
}

/// One hostile request, in turn: bad JSON, a body over `max_body_bytes`, a body that dribbles
/// in and stops, hostile field names (a valid event: it is tagged and counted like the others
/// only through its own 202, which this ignores).
async fn hostile(http: &reqwest::Client, base: &str, n: u64) {
    let post = |body: Vec<u8>| {
        http.post(format!("{base}/v1/events"))
            .bearer_auth(INGEST_TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    match (n / 5) % 4 {
        0 => drop(post(b"{\"trigger\": \"x\", \"data\": {".to_vec()).send().await),
        1 => drop(post(vec![b' '; 2 << 20]).send().await),
        2 => {
            let addr = base.trim_start_matches("http://").to_owned();
            if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
                let head = format!(
                    "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {INGEST_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{{\"trigger\""
                );
                let _ = s.write_all(head.as_bytes()).await;
                // Left to the body timeout.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    drop(s);
                });
            }
        }
        _ => {
            let mut body = serde_json::Map::new();
            body.insert("trigger".into(), json!("fault.hostile"));
            body.insert("x\u{1f}n:other\u{1f}y".into(), json!(1));
            body.insert("a\u{0}b".into(), json!(2));
            body.insert("x".repeat(10_000), json!(3));
            body.insert("data".into(), json!({}));
            drop(post(serde_json::Value::Object(body).to_string().into_bytes()).send().await);
        }
    }
}

/// A receiver that records every delivery's tag and answers 200.
async fn receiver(seen: Seen) -> (String, tokio::task::JoinHandle<()>) {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let url = rx.url("/hook");
    let task = tokio::spawn(async move {
        while let Some(r) = rx.next_opt().await {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if let Some(tag) = body["data"]["tag"].as_str() {
                seen.lock().unwrap().entry(tag.to_owned()).or_default().push(r.at);
            }
        }
    });
    (url, task)
}

fn node_config(dir: &std::path::Path, name: &str, port: u16, hook: &str, db: Option<&str>) -> String {
    let mut c = base_config(&dir.join(name)) + &endpoint("r", hook, r#"["*"]"#);
    c = set(&c, "server", "listen", &format!("\"127.0.0.1:{port}\""));
    c = set(&c, "server", "request_body_timeout", "\"1s\"");
    c = set(&c, "delivery", "max_retries", "50");
    c = set(&c, "delivery", "backoff_max", "\"500ms\"");
    if let Some(db) = db {
        c = set(&c, "storage", "backend", "\"postgres\"");
        c = set(&c, "storage", "postgres_url", &format!("\"{db}\""));
        c = set(&c, "storage", "lease", "\"2s\"");
    }
    c
}

struct Node {
    name: &'static str,
    port: u16,
    config: String,
    process: Option<GatewayProcess>,
}

impl Node {
    async fn start(dir: &std::path::Path, name: &'static str, hook: &str, db: Option<&str>) -> Node {
        let port = free_port();
        let config = node_config(dir, name, port, hook, db);
        let process = GatewayProcess::spawn(&dir.join(format!("{name}.toml")), &config, port).await;
        Node { name, port, config, process: Some(process) }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self, dir: &std::path::Path) {
        self.process =
            Some(GatewayProcess::spawn(&dir.join(format!("{}.toml", self.name)), &self.config, self.port).await);
    }
}

/// Runs `rounds` faults of one kind under load. `fault` makes one fault and returns when it is
/// cleared.
async fn run_kind<F, Fut>(kind: &'static str, rounds: usize, bases: Vec<String>, seen: &Seen, mut fault: F) -> Tally
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Instant>,
{
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = producers(kind, Arc::new(Mutex::new(bases)), acked.clone(), stop.clone());
    let mut tally = Tally { rounds, ..Tally::default() };
    for round in 0..rounds {
        // Load before each fault, so that work is in flight when it strikes.
        let before = acked.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while acked.lock().unwrap().len() < before + 40 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tally.cleared.push(fault(round).await);
    }
    // Load after the last fault too, then stop and let everything owed arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    tally.acked = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let all_in = {
            let s = seen.lock().unwrap();
            tally.acked.iter().all(|t| s.contains_key(t))
        };
        if all_in {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tally
}

fn report(kind: &str, t: &Tally, seen: &Seen) {
    let s = seen.lock().unwrap();
    let mine: Vec<&Vec<Instant>> = s.iter().filter(|(tag, _)| tag.starts_with(kind)).map(|(_, v)| v).collect();
    let delivered = t.acked.iter().filter(|tag| s.contains_key(*tag)).count();
    let lost = t.acked.len() - delivered;
    let duplicates: usize = mine.iter().map(|v| v.len().saturating_sub(1)).sum();
    let all: Vec<Instant> = mine.iter().flat_map(|v| v.iter().copied()).collect();
    let recovery = t
        .cleared
        .iter()
        .filter_map(|c| all.iter().filter(|a| *a >= c).min().map(|a| a.duration_since(*c)))
        .max()
        .unwrap_or_default();
    println!(
        "| {kind:<22} | {:>6} | {:>6} | {:>9} | {:>4} | {:>10} | {:>9.0} ms |",
        t.rounds,
        t.acked.len(),
        delivered,
        lost,
        duplicates,
        recovery.as_secs_f64() * 1000.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: f64 = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0);
    let rounds = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    let seen: Seen = Arc::default();
    let (hook, _rx) = receiver(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut results: Vec<(&'static str, Tally)> = Vec::new();

    // kill -9 of a redb node, then a restart on the same data dir.
    let node = Node::start(dir.path(), "redb", &hook, None).await;
    let base = node.base();
    let node = Arc::new(tokio::sync::Mutex::new(node));
    let t = run_kind("redb-kill-9", rounds(15), vec![base], &seen, |_| {
        let (node, dir) = (node.clone(), dir.path().to_owned());
        async move {
            let mut node = node.lock().await;
            node.process.as_mut().unwrap().kill9();
            node.restart(&dir).await;
            // Back up (it answers /healthz): from here on it owes deliveries.
            Instant::now()
        }
    })
    .await;
    results.push(("redb-kill-9", t));
    drop(node);

    // The store refusing every commit for 300 ms (a full disk), in-process.
    let faults = Arc::new(hookgate::store::Faults::default());
    let port = free_port();
    let cfg = node_config(dir.path(), "disk", port, &hook, None);
    let config = hookgate::Config::parse(&cfg, "faults.toml", std::path::Path::new("/"), &|_| None).unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let hooks = hookgate::Hooks { faults: faults.clone(), ..Default::default() };
    let (stop_gw, stopped) = tokio::sync::oneshot::channel::<()>();
    let gw = tokio::spawn(hookgate::run_with(Arc::new(config), listener, async move { drop(stopped.await) }, hooks));
    let t = run_kind("redb-disk-full", rounds(12), vec![format!("http://127.0.0.1:{port}")], &seen, |_| {
        let faults = faults.clone();
        async move {
            faults.fail_commits.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            faults.fail_commits.store(false, Ordering::Relaxed);
            Instant::now()
        }
    })
    .await;
    results.push(("redb-disk-full", t));
    let _ = stop_gw.send(());
    let _ = gw.await;

    match util::fresh_database().await {
        None => println!("(PostgreSQL kinds skipped: set HOOKGATE_TEST_POSTGRES_URL, as .ci/run does)"),
        Some(db) => {
            let a = Node::start(dir.path(), "pg-a", &hook, Some(&db)).await;
            let b = Node::start(dir.path(), "pg-b", &hook, Some(&db)).await;
            let bases = vec![a.base(), b.base()];
            let a = Arc::new(tokio::sync::Mutex::new(a));
            let t = run_kind("pg-kill-9", rounds(10), bases.clone(), &seen, |_| {
                let (a, dir) = (a.clone(), dir.path().to_owned());
                async move {
                    let mut a = a.lock().await;
                    a.process.as_mut().unwrap().kill9();
                    // Node b goes on meanwhile; the fault ends when a answers again.
                    a.restart(&dir).await;
                    Instant::now()
                }
            })
            .await;
            results.push(("pg-kill-9", t));
            let t = run_kind("pg-sigstop-past-lease", rounds(10), bases, &seen, |_| {
                let a = a.clone();
                async move {
                    let a = a.lock().await;
                    a.process.as_ref().unwrap().signal("-STOP");
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    a.process.as_ref().unwrap().signal("-CONT");
                    Instant::now()
                }
            })
            .await;
            results.push(("pg-sigstop-past-lease", t));
            drop((a, b));
        }
    }
    match std::env::var_os("HOOKGATE_TEST_PG_BIN").and_then(|_| util::pg::PrivateCluster::create()) {
        None => println!("(database restarts skipped: set HOOKGATE_TEST_PG_BIN, as .ci/run does)"),
        Some(cluster) => {
            let db = cluster.url();
            let a = Node::start(dir.path(), "pgr-a", &hook, Some(&db)).await;
            let b = Node::start(dir.path(), "pgr-b", &hook, Some(&db)).await;
            let t = run_kind("pg-database-restart", rounds(5), vec![a.base(), b.base()], &seen, |_| {
                let cluster = &cluster;
                async move {
                    cluster.stop();
                    cluster.start();
                    Instant::now()
                }
            })
            .await;
            results.push(("pg-database-restart", t));
            drop((a, b));
        }
    }

    println!(
        "\n| fault                  | rounds |  acked | delivered | lost | duplicates | longest fault end → next delivery |"
    );
    println!("|------------------------|-------:|-------:|----------:|-----:|-----------:|-------------:|");
    for (kind, t) in &results {
        report(kind, t, &seen);
    }
    let faults: usize = results.iter().map(|(_, t)| t.rounds).sum();
    let lost: usize = {
        let s = seen.lock().unwrap();
        results.iter().map(|(_, t)| t.acked.iter().filter(|tag| !s.contains_key(*tag)).count()).sum()
    };
    println!("\n{faults} faults, {lost} acknowledged events lost");
    if lost > 0 {
        std::process::exit(1);
    }
}
