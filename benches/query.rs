//! Delivery-log queries on a large store: seeds a million deliveries (250k events x 4
//! endpoints, 10k bots, 5 triggers, mixed states) through the real store, then times filtered
//! pages of `list_deliveries`, the code behind `GET /v1/deliveries`.
//!
//! `cargo bench --bench query` prints the median and worst of 20 runs per query, the cost of
//! the scheduler's scan over the pending backlog (one delivery in ten is pending and due), and
//! the process's resident memory. Set `HOOKGATE_BENCH_DELIVERIES` to seed a different number
//! (compare 100000 with the default to see that memory does not follow the backlog).

use std::time::Instant;

use hookgate::model::{DeliveryRecord, DeliveryState, EventRecord};
use hookgate::store::{DeliveryQuery, IngestWrite, Store};
use uuid::Uuid;

const ENDPOINTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const TRIGGERS: [&str; 5] = [
    "bot.state_change",
    "transcript.update",
    "chat_messages.update",
    "participant_events.join_leave",
    "bot_logs.update",
];

fn main() {
    let total: usize =
        std::env::var("HOOKGATE_BENCH_DELIVERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = Store::open(dir.path()).unwrap();
    let events = total / ENDPOINTS.len();
    let seeded = Instant::now();
    rt.block_on(async {
        let mut pending = Vec::new();
        for i in 0..events {
            let s = store.clone();
            pending.push(tokio::spawn(async move { s.ingest(write(i)).await.unwrap() }));
            if pending.len() == 2048 {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
            }
        }
        for p in pending {
            p.await.unwrap();
        }
    });
    let size = std::fs::metadata(dir.path().join("hookgate.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "seeded {total} deliveries ({events} events) in {:.1} s; database {:.0} MiB",
        seeded.elapsed().as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
    let mid_ms =
        rt.block_on(store.list_deliveries(DeliveryQuery { limit: 1, ..Default::default() })).unwrap().deliveries[0]
            .created_at_ms;
    let q = |f: &dyn Fn(&mut DeliveryQuery)| {
        let mut q = DeliveryQuery { limit: 50, ..Default::default() };
        f(&mut q);
        q
    };
    let field = |bot: usize| vec![("bot_id".to_owned(), format!("\"bot_{bot}\""))];
    let cases: Vec<(&str, DeliveryQuery)> = vec![
        ("newest 50, no filter", q(&|_| {})),
        ("bot_id (100 matches)", q(&|q| q.fields = field(4242))),
        (
            "bot_id + state=failed",
            q(&|q| {
                q.fields = field(4242);
                q.state = Some(DeliveryState::Failed);
            }),
        ),
        (
            "endpoint + trigger + state",
            q(&|q| {
                q.endpoint_id = Some("globex".into());
                q.trigger = Some("transcript.update".into());
                q.state = Some(DeliveryState::Failed);
            }),
        ),
        (
            "state=failed, last minute",
            q(&|q| {
                q.state = Some(DeliveryState::Failed);
                q.since_ms = Some(mid_ms.saturating_sub(60_000));
            }),
        ),
        ("bot_id, no match", q(&|q| q.fields = field(99_999_999))),
        (
            "rare: bot + endpoint + trigger",
            q(&|q| {
                q.fields = field(7);
                q.endpoint_id = Some("umbrella".into());
                q.trigger = Some("bot_logs.update".into());
            }),
        ),
    ];
    println!("{:<32} {:>8} {:>10} {:>10}", "query (page of 50)", "results", "median ms", "max ms");
    for (label, query) in cases {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let page = rt.block_on(store.list_deliveries(query.clone())).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            n = page.deliveries.len();
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{label:<32} {n:>8} {:>10.2} {:>10.2}", times[times.len() / 2], times[times.len() - 1]);
    }
    charts(&rt, &store, total);
    let backlog = rt.block_on(store.pending_count()).unwrap();
    let mut scans = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let scan = rt
            .block_on(store.scan_due(
                hookgate::model::now_ms(),
                Default::default(),
                hookgate::store::per_endpoint(32),
                hookgate::store::ScanLimits::global(512),
            ))
            .unwrap();
        scans.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(scan.items.len(), 32 * ENDPOINTS.len());
    }
    scans.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("scheduler scan over {backlog} pending: {:.2} ms median (takes 32 per endpoint)", scans[10]);
    println!(
        "resident memory: {} MiB (redb cache bounded at {} MiB)",
        rss_mib(),
        hookgate::store::DEFAULT_CACHE_BYTES >> 20
    );
    drop(store);
    writer.join();
}

/// The charts' reads on the same store: the tally of the million deliveries, as if they had
/// been attempted evenly over the last 30 days (one attempt each, one in ten failed and
/// retried), is added through the store like the dispatcher's flushes add it; then the reads
/// behind `GET /v1/stats` and the overview are timed. None of them touches the deliveries.
fn charts(rt: &tokio::runtime::Runtime, store: &Store, total: usize) {
    use hookgate::tally::{Resolution, Sample, Tally};
    let now = hookgate::model::now_ms();
    let span = 30 * 24 * 3_600_000u64;
    let tally = Tally::default();
    let added = Instant::now();
    let mut rows = 0;
    for i in 0..total {
        let at = now - span + (i as u64 * span) / total as u64;
        let failed = i % 10 == 0;
        let sample =
            Sample { attempt_ms: Some(20 + (i % 300) as u64), retried: failed, succeeded: !failed, failed: false };
        tally.add(ENDPOINTS[i % ENDPOINTS.len()], at, sample);
        // A day's worth at a time, as flushes would (each prunes what is past its keep).
        if i % (total / 30).max(1) == 0 {
            let batch = tally.take();
            rows += batch.len();
            rt.block_on(store.add_tally(batch, at)).unwrap();
        }
    }
    let batch = tally.take();
    rows += batch.len();
    rt.block_on(store.add_tally(batch, now)).unwrap();
    println!(
        "tally of {total} deliveries over 30 days: {rows} bucket rows added in {:.1} s",
        added.elapsed().as_secs_f64()
    );
    let day = 24 * 3_600_000u64;
    let time = |label: &str, f: &dyn Fn() -> usize| {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..20 {
            let t = Instant::now();
            n = f();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{label:<44} {n:>8} {:>10.2} {:>10.2}", times[times.len() / 2], times[times.len() - 1]);
    };
    println!("{:<44} {:>8} {:>10} {:>10}", "chart read", "buckets", "median ms", "max ms");
    time("all, minute buckets, 24 h", &|| {
        rt.block_on(store.tally_series(Resolution::Minute, "*".into(), now - day, now + 60_000)).unwrap().len()
    });
    time("one endpoint, hour buckets, 30 days", &|| {
        rt.block_on(store.tally_series(Resolution::Hour, "e:acme".into(), now - 30 * day, now + day)).unwrap().len()
    });
    time("ranking: 4 endpoints' totals, hours, 24 h", &|| {
        let scopes = ENDPOINTS.iter().map(|e| format!("e:{e}")).collect();
        rt.block_on(store.tally_totals(Resolution::Hour, scopes, now - day, now + 3_600_000)).unwrap().len()
    });
    time("backlog of 4 endpoints (capped at 10000)", &|| {
        rt.block_on(store.backlog_of(ENDPOINTS.iter().map(|e| (*e).to_owned()).collect())).unwrap().pending as usize
    });
}

/// VmRSS of this process, in MiB (Linux).
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_owned()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1024)
}

/// Event `i`: bot `i % 10_000`, trigger `i % 5`, one delivery per endpoint; one delivery in
/// ten failed, one in ten pending and due now, the rest succeeded.
fn write(i: usize) -> IngestWrite {
    let event_id = Uuid::now_v7();
    let trigger = TRIGGERS[i % TRIGGERS.len()];
    let bot = format!("bot_{}", i % 10_000);
    let now = hookgate::model::now_ms();
    let deliveries: Vec<DeliveryRecord> = ENDPOINTS
        .iter()
        .enumerate()
        .map(|(k, ep)| DeliveryRecord {
            id: Uuid::now_v7(),
            event_id,
            endpoint_id: (*ep).into(),
            idempotency_key: Uuid::new_v4(),
            trigger: trigger.into(),
            state: match (i + k) % 10 {
                0 => DeliveryState::Failed,
                1 => DeliveryState::Pending,
                _ => DeliveryState::Succeeded,
            },
            created_at_ms: now,
            next_attempt_at_ms: ((i + k) % 10 == 1).then_some(now),
            attempts: vec![],
            prepared: true,
            body: None,
            note: None,
            resource: vec![("bot_id".into(), format!("\"{bot}\""))],
            requeued: false,
            fifo: None,
            tenant: None,
        })
        .collect();
    IngestWrite {
        event: EventRecord {
            id: event_id,
            received_at_ms: now,
            trigger: trigger.into(),
            payload: format!(r#"{{"bot_id":"{bot}","data":{{"i":{i}}},"trigger":"{trigger}"}}"#),
            envelope_slot: None,
            delivery_ids: deliveries.iter().map(|d| d.id).collect(),
            skipped: vec![],
            tenant: None,
            trace: None,
            message: None,
        },
        deliveries,
        idempotency: None,
    }
}
