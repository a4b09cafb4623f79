//! Retention under a steady load: the database file stops growing once the retention window
//! is full, and ingest latency does not notice the pruning.
//!
//! `cargo bench --bench retention` runs the gateway in-process with `retention.deliveries =
//! "20s"` and sends a steady `RATE` events/s (each delivered to a local receiver answering 200)
//! for `SECONDS`. Every 10 s it prints the file size, the rows pruned so far, and the ingest
//! latency (p50/p99) and gateway CPU per event of that interval. Pruning starts once the first
//! events are 20 s old; compare the rows before and after. Override with `RATE=` and `SECONDS=`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process (the gateway runs in it), in clock ticks of 1/100 s.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let rate = env("RATE", 1000);
    let seconds = env("SECONDS", 90);
    tokio::runtime::Runtime::new().unwrap().block_on(run(rate, seconds));
}

async fn run(rate: u64, seconds: u64) {
    let gw = common::start("[retention]\ndeliveries = \"20s\"").await;
    let base = gw.base.clone();
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = gw.dir.path().join("hookgate.redb");
    let body =
        format!("{{\"trigger\":\"bench.event\",\"bot_id\":\"bot_1\",\"data\":{{\"pad\":\"{}\"}}}}", "x".repeat(400));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let sent = Arc::new(AtomicU64::new(0));

    println!("Hookgate retention benchmark: {rate} events/s for {seconds} s, retention.deliveries = 20s");
    println!(
        "{:>5} {:>9} {:>10} {:>9} {:>10} {:>10} {:>12}",
        "t s", "events", "file MB", "pruned", "p50 ms", "p99 ms", "CPU µs/event"
    );
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_report = start + Duration::from_secs(10);
    let (mut cpu_mark, mut sent_mark) = (cpu_seconds(), 0u64);
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let task = {
            let (http, url, body, latencies, sent) =
                (http.clone(), format!("{base}/v1/events"), body.clone(), latencies.clone(), sent.clone());
            async move {
                let t = Instant::now();
                let r = http
                    .post(url)
                    .header("authorization", "Bearer t")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 202) {
                    latencies.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        tokio::spawn(task);
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            let mut l = std::mem::take(&mut *latencies.lock().unwrap());
            l.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let pct =
                |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(0.0);
            let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
            let pruned = metrics
                .lines()
                .find(|l| l.starts_with("hookgate_pruned_deliveries_total "))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or("0")
                .to_owned();
            let size = std::fs::metadata(&db).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;
            let (cpu, n) = (cpu_seconds(), sent.load(Ordering::Relaxed));
            let per_event = (cpu - cpu_mark) * 1e6 / (n - sent_mark).max(1) as f64;
            (cpu_mark, sent_mark) = (cpu, n);
            println!(
                "{:>5} {:>9} {:>10.1} {:>9} {:>10.2} {:>10.2} {:>12.0}",
                start.elapsed().as_secs(),
                n,
                size,
                pruned,
                pct(0.5),
                pct(0.99),
                per_event
            );
        }
    }
    gw.stop().await;
}
