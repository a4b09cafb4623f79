//! Ingest throughput and latency through the real HTTP path and durable commits.
//!
//! `cargo bench --bench ingest` prints a table: for each client concurrency, requests per
//! second, median and p99 latency, and the group-commit factor (writes per fsync'd commit:
//! ingests and attempt records), each the median of several runs. Every 202 counted here was fsync'd to disk. Each event fans
//! out to one endpoint, a local receiver answering 200, so ingest is measured while deliveries
//! are made and recorded through the same writer.

mod common;

use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("Hookgate ingest benchmark ({} runs each; medians)", RUNS);
    println!(
        "{:>11} {:>9} {:>10} {:>10} {:>10} {:>14}",
        "concurrency", "requests", "req/s", "p50 ms", "p99 ms", "writes/commit"
    );
    for (concurrency, requests) in [(1, 300), (16, 3000), (64, 6000), (256, 10000)] {
        let mut runs: Vec<(f64, f64, f64, f64)> =
            (0..RUNS).map(|_| rt.block_on(run_once(concurrency, requests))).collect();
        let median = |f: fn(&(f64, f64, f64, f64)) -> f64, runs: &mut Vec<(f64, f64, f64, f64)>| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        println!(
            "{:>11} {:>9} {:>10.0} {:>10.2} {:>10.2} {:>14.1}",
            concurrency,
            requests,
            median(|r| r.0, &mut runs),
            median(|r| r.1, &mut runs),
            median(|r| r.2, &mut runs),
            median(|r| r.3, &mut runs),
        );
    }
}

/// Returns (requests/s, p50 ms, p99 ms, events per commit).
async fn run_once(concurrency: usize, requests: usize) -> (f64, f64, f64, f64) {
    let gw = common::start("").await;
    let base = gw.base.clone();
    let http = reqwest::Client::new();
    let body = r#"{"trigger":"transcript.update","bot_id":"bot_1","bot_metadata":{"team":"a"},"data":{"speaker_name":"Ana","timestamp_ms":1700000000123,"duration_ms":2500,"transcription":{"transcript":"hello world, this is a typical utterance of moderate length"}}}"#;
    let per_worker = requests / concurrency;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let http = http.clone();
        let url = format!("{base}/v1/events");
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("authorization", "Bearer t")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let health: serde_json::Value = serde_json::from_str(
        // The store's counts are for the admin (see `/healthz`).
        &http.get(format!("{base}/healthz")).bearer_auth("a").send().await.unwrap().text().await.unwrap(),
    )
    .unwrap();
    let commits = health["store"]["commits"].as_f64().unwrap().max(1.0);
    let ops = health["store"]["operations"].as_f64().unwrap();
    gw.stop().await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (lat.len() as f64 / elapsed, ms(lat[lat.len() / 2]), ms(lat[lat.len() * 99 / 100]), ops / commits)
}
