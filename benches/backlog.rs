//! A backlog of pending deliveries on disk: memory while it builds, the first delivery after a
//! restart, and how fast it drains.
//!
//! `cargo bench --bench backlog` (about five minutes; `BACKLOG=200000` for a shorter run) runs
//! the real binary, `target/release/hookgate`, as a user would:
//!
//! 1. A receiver that does not answer (it holds every request open), so attempts neither
//!    succeed nor come back with a retry schedule: the deliveries stay due on disk. (A receiver
//!    answering 503 would instead push each delivery onto its backoff schedule, and the drain
//!    would then measure the backoff, not the engine.)
//! 2. `BACKLOG` events are ingested by 64 clients; the gateway's resident memory is sampled
//!    every 250 ms throughout.
//! 3. The gateway is stopped with SIGTERM, the receiver starts answering 200 at once, and the
//!    gateway is started again on the same data dir: the time from spawn to the first delivery
//!    (a clean restart), and the drain rate over the first half of the backlog.
//! 4. Halfway, the gateway is killed with SIGKILL and started again: the time from spawn to the
//!    first delivery after a crash (the database repairs itself first). Memory is sampled
//!    throughout the drain; the gateway's CPU seconds per delivery cover both halves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const CLIENTS: usize = 64;

/// The receiver's state: whether it answers, and what it has seen.
#[derive(Default)]
struct Receiver {
    open: AtomicBool,
    gate: tokio::sync::Notify,
    delivered: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
}

fn main() {
    let backlog: u64 = std::env::var("BACKLOG").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(backlog));
}

async fn run(backlog: u64) {
    let origin = Instant::now();
    let rx = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rx_url = format!("http://{}/hook", listener.local_addr().unwrap());
    {
        let rx = rx.clone();
        let app = axum::Router::new().fallback(move || {
            let rx = rx.clone();
            async move {
                while !rx.open.load(Ordering::SeqCst) {
                    let wait = rx.gate.notified();
                    if rx.open.load(Ordering::SeqCst) {
                        break;
                    }
                    wait.await;
                }
                let now = origin.elapsed().as_micros() as u64;
                if rx.delivered.fetch_add(1, Ordering::SeqCst) == 0 {
                    rx.first_us.store(now, Ordering::SeqCst);
                }
                rx.last_us.fetch_max(now, Ordering::SeqCst);
                "ok"
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("backlog.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n[auth]\ningest_tokens = [\"t\"]\nadmin_tokens = [\"a\"]\n\
             [signing]\nsecret = \"{SECRET}\"\n[delivery]\ntimeout = \"600s\"\nallow_http = true\nallow_private_networks = true\n\
             [[endpoints]]\nid = \"r\"\nurl = \"{rx_url}\"\ntriggers = [\"*\"]\n"
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();

    println!("Hookgate backlog benchmark: {backlog} pending deliveries (one endpoint), release binary");
    let mut gw = spawn(&config, &http, &base).await;
    let (peak, sampler) = sample_rss(gw.id());
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, next, url) = (http.clone(), next.clone(), format!("{base}/v1/events"));
        clients.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < backlog {
                let r = http
                    .post(&url)
                    .header("authorization", "Bearer t")
                    .header("content-type", "application/json")
                    .body(r#"{"trigger":"bot.state_change","bot_id":"bot_1","data":{"new_state":"ended","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let seed_s = started.elapsed().as_secs_f64();
    let pending = pending(&http, &base).await;
    let seed_peak = peak.load(Ordering::SeqCst);
    sampler.abort();
    println!(
        "  built: {pending} pending in {seed_s:.1} s ({:.0} events/s acked); peak RSS {} MB",
        backlog as f64 / seed_s,
        seed_peak >> 20
    );

    // A clean restart: SIGTERM (the held-open attempts are cut off after shutdown_grace and
    // stay due), then start again with the receiver answering.
    let _ = std::process::Command::new("kill").arg(gw.id().to_string()).status();
    gw.wait().unwrap();
    rx.open.store(true, Ordering::SeqCst);
    rx.gate.notify_waiters();
    let before = rx.delivered.load(Ordering::SeqCst);
    let spawned_us = origin.elapsed().as_micros() as u64;
    let (mut gw, clean_first) = restart(&config, &rx, before).await;
    let (peak, sampler) = sample_rss(gw.id());
    // Halfway through the drain, a crash: SIGKILL and start again.
    while rx.delivered.load(Ordering::SeqCst) < before + pending / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let half_s = (origin.elapsed().as_micros() as u64 - spawned_us) as f64 / 1e6;
    let mut cpu = cpu_seconds(gw.id());
    gw.kill().unwrap();
    gw.wait().unwrap();
    let (mut gw, crash_first) = restart(&config, &rx, rx.delivered.load(Ordering::SeqCst)).await;
    let second_half_started = Instant::now();
    let at_restart = rx.delivered.load(Ordering::SeqCst);
    while rx.delivered.load(Ordering::SeqCst) < before + pending {
        assert!(second_half_started.elapsed() < Duration::from_secs(3600), "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cpu += cpu_seconds(gw.id());
    let drain_peak = peak.load(Ordering::SeqCst);
    sampler.abort();
    // The drain rate of the first half, from the clean restart's spawn: steady state, no crash.
    let rate = (pending / 2) as f64 / half_s;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  clean restart: first delivery {:.0} ms after spawn; first half drained at {rate:.0} deliveries/s",
        ms(clean_first)
    );
    println!(
        "  crash restart (SIGKILL at half): first delivery {:.0} ms after spawn; {} deliveries after it",
        ms(crash_first),
        rx.delivered.load(Ordering::SeqCst) - at_restart
    );
    println!("  peak RSS draining {} MB; gateway CPU {:.1} µs/delivery", drain_peak >> 20, cpu / pending as f64 * 1e6);
    println!(
        "| backlog | ingest events/s | peak RSS building | first delivery, clean restart | first delivery, crash restart | drain deliveries/s | peak RSS draining | CPU µs/delivery |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {pending} | {:.0} | {} MB | {:.0} ms | {:.0} ms | {rate:.0} | {} MB | {:.1} |",
        backlog as f64 / seed_s,
        seed_peak >> 20,
        ms(clean_first),
        ms(crash_first),
        drain_peak >> 20,
        cpu / pending as f64 * 1e6
    );
    let _ = std::process::Command::new("kill").arg(gw.id().to_string()).status();
    let _ = gw.wait();
}

/// `hookgate serve --config <config>`, the release binary this benchmark was built with.
fn start(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

/// Starts the gateway again on the same data dir and waits for its first delivery (a delivery
/// beyond `before`); returns the process and the time from spawn to that delivery.
async fn restart(config: &std::path::Path, rx: &Receiver, before: u64) -> (std::process::Child, Duration) {
    let spawned = Instant::now();
    let gw = start(config);
    while rx.delivered.load(Ordering::SeqCst) <= before {
        assert!(spawned.elapsed() < Duration::from_secs(120), "no delivery within 120 s of a restart");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (gw, spawned.elapsed())
}

// The child is returned to the caller, which kills and waits for it.
#[allow(clippy::zombie_processes)]
async fn spawn(config: &std::path::Path, http: &reqwest::Client, base: &str) -> std::process::Child {
    let child = start(config);
    for _ in 0..600 {
        if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not start");
}

async fn pending(http: &reqwest::Client, base: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(
        // The counts are for the admin (see `/healthz`).
        &http.get(format!("{base}/healthz")).bearer_auth("a").send().await.unwrap().text().await.unwrap(),
    )
    .unwrap();
    v["pending_deliveries"].as_u64().unwrap()
}

/// Samples `pid`'s resident memory every 250 ms, keeping the peak in bytes.
fn sample_rss(pid: u32) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let p = peak.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                && let Some(kb) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            {
                p.fetch_max(kb << 10, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    (peak, task)
}

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat, counted after the command name: utime and stime in ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}
