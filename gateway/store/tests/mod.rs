//! The store's contract: its invariants, exercised through its public operations, on both
//! backends. Each `contract!` test runs once on a temp redb file and once on a fresh database of
//! the PostgreSQL server that `HOOKGATE_TEST_POSTGRES_URL` names (`.ci/run` starts one). Without
//! that variable the PostgreSQL half says how to run it and passes locally; under `CI` it fails.

use super::*;
use crate::model::{DeliveryState, PluginNote};
use std::sync::atomic::Ordering;

fn delivery(event: Uuid, ep: &str, at: u64) -> DeliveryRecord {
    DeliveryRecord::pending_for_test(event, ep, at)
}

fn event(deliveries: &[DeliveryRecord]) -> EventRecord {
    EventRecord {
        id: deliveries.first().map_or_else(Uuid::now_v7, |d| d.event_id),
        received_at_ms: 1,
        trigger: "t".into(),
        payload: "{}".into(),
        envelope_slot: None,
        delivery_ids: deliveries.iter().map(|d| d.id).collect(),
        skipped: vec![],
        tenant: None,
        trace: None,
        message: None,
    }
}

fn attempt(n: u32) -> AttemptRecord {
    AttemptRecord {
        number: n,
        started_at_ms: 0,
        duration_ms: 1,
        status_code: Some(500),
        error: None,
        response_body: String::new(),
        manual: false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Redb,
    Postgres,
}

/// A store under test, and what reopening it needs.
struct TestStore {
    kind: Kind,
    store: Option<Store>,
    writer: Option<WriterThread>,
    dir: tempfile::TempDir,
    url: Option<String>,
}

/// The PostgreSQL server for tests, or `None` (locally, after saying how to get one).
pub(crate) fn test_server() -> Option<String> {
    match std::env::var(pg::testing::ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{} is not set: under CI the PostgreSQL tests must run (see .ci/run)", pg::testing::ENV)
        }
        _ => {
            // Written to the terminal directly: the harness captures `eprintln!`, and a skip
            // must not look like a pass.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED the PostgreSQL half of {}: set {}=postgres://user@127.0.0.1:port/postgres (a throwaway server; .ci/run starts one)\n",
                std::thread::current().name().unwrap_or("a store test"),
                pg::testing::ENV
            );
            None
        }
    }
}

impl TestStore {
    async fn open(kind: Kind) -> Option<TestStore> {
        let dir = tempfile::tempdir().unwrap();
        let url = match kind {
            Kind::Redb => None,
            Kind::Postgres => Some(pg::testing::fresh_database(&test_server()?).await.unwrap()),
        };
        let (store, writer) = Self::connect(kind, dir.path(), url.as_deref()).await;
        Some(TestStore { kind, store: Some(store), writer: Some(writer), dir, url })
    }

    async fn connect(kind: Kind, dir: &Path, url: Option<&str>) -> (Store, WriterThread) {
        match kind {
            Kind::Redb => Store::open(dir).unwrap(),
            Kind::Postgres => {
                let storage = crate::config::StorageConfig::Postgres(pg::testing::config(url.unwrap()));
                let o = OpenOptions {
                    storage: &storage,
                    data_dir: dir,
                    cache_bytes: 1 << 20,
                    faults: Arc::default(),
                    migrate: true,
                };
                Store::open_configured(o).await.unwrap()
            }
        }
    }

    /// Closes the store (its writer commits what it holds) and opens it again.
    async fn reopen(&mut self) {
        self.close_writer().await;
        let (store, writer) = Self::connect(self.kind, self.dir.path(), self.url.as_deref()).await;
        self.store = Some(store);
        self.writer = Some(writer);
    }

    async fn close_writer(&mut self) {
        // Every handle must be gone for the writer to end: the body's clones are dropped by now.
        self.store = None;
        self.writer.take().unwrap().finish().await;
    }

    async fn close(mut self) {
        self.close_writer().await;
    }

    /// Ends every lease this store's scans took (no-op on redb), so that the next scan sees
    /// the same due deliveries again, as a later round of the scheduler would after the passes
    /// ended.
    async fn forget_leases(&self) {
        self.store().release_leases(None).await.unwrap();
    }

    /// A handle to the open store.
    fn store(&self) -> Store {
        self.store.clone().expect("the store is open")
    }
}

/// Declares a contract test: its body runs on redb and on PostgreSQL, as `name::redb` and
/// `name::postgres`.
macro_rules! contract {
    ($(#[$meta:meta])* async fn $name:ident($t:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            use super::*;
            async fn body($t: &mut TestStore) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                let mut t = TestStore::open(Kind::Redb).await.unwrap();
                body(&mut t).await;
                t.close().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(mut t) = TestStore::open(Kind::Postgres).await else { return };
                body(&mut t).await;
                t.close().await;
            }
        }
    };
}

mod charts;

contract! {
async fn due_scan_is_per_endpoint_and_respects_limits(t) {
    let store = t.store();
    let ev = Uuid::now_v7();
    // Endpoint "a" has a large backlog due first; "b" has one delivery due later.
    let mut ds: Vec<_> = (0..50).map(|i| delivery(ev, "a", 100 + i)).collect();
    ds.push(delivery(ev, "b", 500));
    ds.push(delivery(ev, "c", 5_000));
    let b_id = ds[50].id;
    store.ingest(IngestWrite { event: event(&ds), deliveries: ds.clone(), idempotency: None }).await.unwrap();
    let scan = store.scan_due(1_000, HashSet::new(), per_endpoint(3), ScanLimits::global(100)).await.unwrap();
    let got: Vec<&str> = scan.items.iter().map(|i| i.endpoint_id.as_str()).collect();
    assert_eq!(got, ["a", "a", "a", "b"], "a's backlog must not hide b");
    assert_eq!(scan.items[3].delivery_id, b_id);
    assert_eq!(scan.next_due_ms, Some(5_000));
    t.forget_leases().await;
    // In-flight deliveries are skipped; the global limit caps the total.
    let in_flight: HashSet<Uuid> = ds[..3].iter().map(|d| d.id).collect();
    let scan = store.scan_due(1_000, in_flight, per_endpoint(3), ScanLimits::global(2)).await.unwrap();
    let ids: Vec<Uuid> = scan.items.iter().map(|i| i.delivery_id).collect();
    assert_eq!(ids, [ds[3].id, ds[4].id]);
    // Recording a retry moves the due entry; success removes it.
    store.record_attempt(b_id, attempt(1), Next::RetryAt(9_000), None).await.unwrap();
    let d = store.delivery(b_id).await.unwrap().unwrap();
    assert_eq!((d.state, d.next_attempt_at_ms, d.attempts.len()), (DeliveryState::Pending, Some(9_000), 1));
    store.record_attempt(b_id, attempt(2), Next::Succeeded, None).await.unwrap();
    let d = store.delivery(b_id).await.unwrap().unwrap();
    assert_eq!((d.state, d.next_attempt_at_ms), (DeliveryState::Succeeded, None));
    assert_eq!(store.pending_count().await.unwrap(), 51);
}
}

contract! {
async fn idempotency_keys_replay_and_conflict_within_one_batch_and_after_reopen(t) {
    let store = t.store();
    let claim = |hash: &str| Some(IdempotencyClaim { key: "k1".into(), request_hash: hash.into() });
    let ev = Uuid::now_v7();
    let ds = vec![delivery(ev, "a", 1)];
    // Concurrent repeats land in one batch: exactly one is created.
    let writes = (0..20).map(|_| {
        let s = store.clone();
        let ds = ds.clone();
        let e = event(&ds);
        async move { s.ingest(IngestWrite { event: e, deliveries: ds, idempotency: claim("h") }).await.unwrap() }
    });
    let outcomes = futures_join_all(writes).await;
    let created = outcomes.iter().filter(|o| matches!(o, IngestOutcome::Created { .. })).count();
    assert_eq!(created, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, IngestOutcome::Created { event_id, .. } | IngestOutcome::Replayed { event_id, .. } if *event_id == ev)));
    drop(store);
    t.reopen().await;
    let store = t.store();
    let other = vec![delivery(Uuid::now_v7(), "a", 1)];
    let again = store
        .ingest(IngestWrite { event: event(&other), deliveries: other.clone(), idempotency: claim("h") })
        .await
        .unwrap();
    assert_eq!(again, IngestOutcome::Replayed { event_id: ev, deliveries: 1 });
    let conflict = store
        .ingest(IngestWrite { event: event(&other), deliveries: other, idempotency: claim("other") })
        .await
        .unwrap();
    assert_eq!(conflict, IngestOutcome::KeyReused);
}
}

contract! {
/// Interleaving filters without matches exhaust the seek budget: pages come back short with
/// a cursor, and following the cursors still finds the one match, exactly once.
async fn listing_resumes_after_the_seek_budget(t) {
    let store = t.store();
    let ev = Uuid::now_v7();
    // 3 x SEEK_BUDGET deliveries alternating endpoints a/b; only the oldest "a" failed.
    let mut ds: Vec<DeliveryRecord> = (0..3 * redb::read::SEEK_BUDGET)
        .map(|i| {
            let mut d = delivery(ev, if i % 2 == 0 { "a" } else { "b" }, 1);
            d.state = if i % 2 == 1 || i == 0 { DeliveryState::Failed } else { DeliveryState::Succeeded };
            d.next_attempt_at_ms = None;
            d
        })
        .collect();
    ds.sort_by_key(|d| d.id);
    let target = ds[0].id;
    store.ingest(IngestWrite { event: event(&ds), deliveries: ds, idempotency: None }).await.unwrap();
    let mut q = DeliveryQuery {
        endpoint_id: Some("a".into()),
        state: Some(DeliveryState::Failed),
        limit: 10,
        ..DeliveryQuery::default()
    };
    let (mut found, mut pages) = (Vec::new(), 0);
    loop {
        let page = store.list_deliveries(q.clone()).await.unwrap();
        pages += 1;
        found.extend(page.deliveries.iter().map(|d| d.id));
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    assert_eq!(found, [target]);
    // redb answers from its indexes with a seek budget per request; PostgreSQL plans the query.
    if t.kind == Kind::Redb {
        assert!(pages > 1, "the budget must have cut at least one page short");
    }
}
}

contract! {
/// Group commit: many concurrent writers share commits instead of paying one fsync each.
async fn concurrent_ingests_share_commits(t) {
    let store = t.store();
    let writes = (0..200).map(|_| {
        let s = store.clone();
        let ds = vec![delivery(Uuid::now_v7(), "a", 1)];
        let e = event(&ds);
        async move { s.ingest(IngestWrite { event: e, deliveries: ds, idempotency: None }).await.unwrap() }
    });
    let outcomes = futures_join_all(writes).await;
    assert!(outcomes.iter().all(|o| matches!(o, IngestOutcome::Created { .. })));
    let commits = store.stats().commits.load(Ordering::Relaxed);
    let ops = store.stats().operations.load(Ordering::Relaxed);
    assert_eq!(ops, 200);
    assert!(commits < 100, "200 concurrent ingests took {commits} commits");
    assert_eq!(store.pending_count().await.unwrap(), 200);
}
}

contract! {
/// The test fault switch behaves like a full disk: commits fail and store nothing, reads
/// still work, and the store recovers when the switch is off.
async fn failed_commits_store_nothing_and_reads_still_work(t) {
    let store = t.store();
    let ds = vec![delivery(Uuid::now_v7(), "a", 1)];
    let id = ds[0].id;
    store.ingest(IngestWrite { event: event(&ds), deliveries: ds.clone(), idempotency: None }).await.unwrap();
    store.faults().fail_commits.store(true, Ordering::Relaxed);
    let err = store.record_attempt(id, attempt(1), Next::Succeeded, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Storage(_)), "{err}");
    let more = vec![delivery(Uuid::now_v7(), "a", 1)];
    assert!(store.ingest(IngestWrite { event: event(&more), deliveries: more, idempotency: None }).await.is_err());
    let d = store.delivery(id).await.unwrap().unwrap();
    assert_eq!((d.state, d.attempts.len()), (DeliveryState::Pending, 0), "nothing of a failed batch is stored");
    assert_eq!(store.pending_count().await.unwrap(), 1);
    assert_eq!(store.stats().failed_commits.load(Ordering::Relaxed), 2);
    store.faults().fail_commits.store(false, Ordering::Relaxed);
    store.record_attempt(id, attempt(1), Next::Succeeded, None).await.unwrap();
    assert_eq!(store.delivery(id).await.unwrap().unwrap().state, DeliveryState::Succeeded);
}
}

contract! {
/// Every way an attempt can end is a durable write that takes the delivery out of the due
/// index (or moves it), so the scheduler cannot find it again at once.
async fn settle_and_drop_due_leave_the_due_index(t) {
    let store = t.store();
    let ev = Uuid::now_v7();
    let ds = vec![delivery(ev, "a", 10), delivery(ev, "a", 20)];
    store.ingest(IngestWrite { event: event(&ds), deliveries: ds.clone(), idempotency: None }).await.unwrap();
    let note = PluginNote {
        plugin: String::new(),
        message: "unreadable".into(),
        kind: Some(crate::model::ErrorKind::Internal),
    };
    store
        .finish(Finish::Settle { delivery_id: ds[0].id, state: DeliveryState::Failed, note: note.clone() })
        .await
        .unwrap();
    let d = store.delivery(ds[0].id).await.unwrap().unwrap();
    assert_eq!((d.state, d.next_attempt_at_ms, d.note), (DeliveryState::Failed, None, Some(note)));
    store.finish(Finish::DropDue { endpoint_id: "a".into(), due_ms: 20, delivery_id: ds[1].id }).await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 0);
    let scan = store.scan_due(1_000, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
    assert!(scan.items.is_empty());
    // Settling a delivery that does not exist is that operation's error, not the batch's.
    let missing =
        Finish::Settle { delivery_id: Uuid::now_v7(), state: DeliveryState::Failed, note: PluginNote::default() };
    assert!(matches!(store.finish(missing).await, Err(StoreError::Corrupt(_))));
}
}

contract! {
/// The scan reads each due delivery's records in its own snapshot.
async fn due_scan_loads_records_and_reports_missing_ones(t) {
    let store = t.store();
    let ds = vec![delivery(Uuid::now_v7(), "a", 10)];
    store.ingest(IngestWrite { event: event(&ds), deliveries: ds.clone(), idempotency: None }).await.unwrap();
    let orphan = vec![delivery(Uuid::now_v7(), "b", 10)];
    // A delivery whose event was never written.
    store
        .ingest(IngestWrite {
            event: EventRecord { id: Uuid::now_v7(), ..event(&orphan) },
            deliveries: orphan.clone(),
            idempotency: None,
        })
        .await
        .unwrap();
    let scan = store.scan_due(1_000, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
    assert_eq!(scan.items.len(), 2);
    assert!(matches!(&scan.items[0].loaded, Loaded::Ready(d, e) if d.id == ds[0].id && e.id == ds[0].event_id));
    assert!(matches!(&scan.items[1].loaded, Loaded::NoEvent(d) if d.id == orphan[0].id));
    assert_eq!(scan.items[1].due_ms, 10);
}
}

contract! {
/// FIFO queues: only the oldest pending delivery of a queue is due; when it is final the
/// next one becomes due; other queues are independent.
async fn fifo_queues_expose_only_their_head(t) {
    let store = t.store();
    let queued = |q: &str| {
        let mut d = delivery(Uuid::now_v7(), "a", 1);
        d.fifo = Some(q.into());
        d
    };
    let ds = vec![queued("x"), queued("x"), queued("x"), queued("y")];
    for d in &ds {
        let one = vec![d.clone()];
        store.ingest(IngestWrite { event: event(&one), deliveries: one, idempotency: None }).await.unwrap();
    }
    let due = |store: Store| async move {
        let scan = store.scan_due(1_000, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
        store.release_leases(None).await.unwrap();
        let mut ids = scan.items.iter().map(|i| i.delivery_id).collect::<Vec<_>>();
        ids.sort();
        ids
    };
    assert_eq!(due(store.clone()).await, [ds[0].id, ds[3].id]);
    // A retry keeps the head in place; nothing behind it moves.
    store.record_attempt(ds[0].id, attempt(1), Next::RetryAt(5), None).await.unwrap();
    assert_eq!(due(store.clone()).await, [ds[0].id, ds[3].id]);
    store.record_attempt(ds[0].id, attempt(2), Next::Failed, None).await.unwrap();
    assert_eq!(due(store.clone()).await, [ds[1].id, ds[3].id], "a final head lets the next one go");
    store.record_attempt(ds[1].id, attempt(1), Next::Succeeded, None).await.unwrap();
    assert_eq!(due(store.clone()).await, [ds[2].id, ds[3].id]);
    // A bulk resend puts the failed one back: it waits behind the current head.
    assert_eq!(store.requeue(vec![ds[0].id], 1).await.unwrap(), 1);
    assert_eq!(due(store.clone()).await, [ds[2].id, ds[3].id]);
    store.record_attempt(ds[2].id, attempt(1), Next::Succeeded, None).await.unwrap();
    assert_eq!(due(store.clone()).await, [ds[0].id, ds[3].id]);
    // Turning ordering off releases every queued delivery at once.
    let more = vec![queued("y"), queued("y")];
    for d in &more {
        let one = vec![d.clone()];
        store.ingest(IngestWrite { event: event(&one), deliveries: one, idempotency: None }).await.unwrap();
    }
    assert_eq!(due(store.clone()).await.len(), 2);
    assert_eq!(store.release_fifo("a".into()).await.unwrap(), 4);
    assert_eq!(due(store.clone()).await.len(), 4);
}
}

/// A FIFO head whose delivery record is gone (a damaged file) does not block its queue: dropping
/// its due entry lets the next delivery go.
#[tokio::test]
async fn a_dropped_orphan_head_lets_its_queue_move() {
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = Store::open(dir.path()).unwrap();
    let orphan = Uuid::now_v7();
    store.redb().insert_orphan_head("a", "x", orphan);
    let mut d = delivery(Uuid::now_v7(), "a", 1);
    d.fifo = Some("x".into());
    let one = vec![d.clone()];
    store.ingest(IngestWrite { event: event(&one), deliveries: one, idempotency: None }).await.unwrap();
    let scan = store.scan_due(1_000, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
    assert_eq!(scan.items.len(), 1);
    assert!(matches!(scan.items[0].loaded, Loaded::NoDelivery));
    store.finish(Finish::DropDue { endpoint_id: "a".into(), due_ms: 1, delivery_id: orphan }).await.unwrap();
    let scan = store.scan_due(1_000, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
    let ids: Vec<Uuid> = scan.items.iter().map(|i| i.delivery_id).collect();
    assert_eq!(ids, [d.id]);
    drop(store);
    writer.join();
}

contract! {
/// Retention keeps the file from growing: each cycle writes a window of final deliveries and
/// prunes the one before; once the window is full the file stops growing, because redb
/// reuses the pages pruning frees.
async fn pruning_makes_the_file_plateau(t) {
    let store = t.store();
    let payload = format!("{{\"data\":{{\"text\":\"{}\"}},\"trigger\":\"t\"}}", "x".repeat(400));
    let mut sizes = Vec::new();
    let mut pruned = 0;
    for cycle in 1..=8u64 {
        let writes = (0..2_000).map(|i| {
            let s = store.clone();
            let mut d = delivery(Uuid::now_v7(), "a", cycle * 1_000);
            d.state = DeliveryState::Succeeded;
            d.next_attempt_at_ms = None;
            d.resource = vec![("bot_id".into(), format!("\"bot_{i}\""))];
            let mut e = event(std::slice::from_ref(&d));
            e.received_at_ms = cycle * 1_000;
            e.payload = payload.clone();
            async move { s.ingest(IngestWrite { event: e, deliveries: vec![d], idempotency: None }).await.unwrap() }
        });
        futures_join_all(writes).await;
        let mut after = None;
        loop {
            let req = PruneRequest { cutoff_ms: cycle * 1_000, idempotency_cutoff_ms: 0, after, max_events: 256 };
            let report = store.prune(req).await.unwrap();
            pruned += report.deliveries;
            match report.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        sizes.push(store.file_size());
    }
    assert_eq!(pruned, 7 * 2_000, "every window but the last is gone");
    let page = store.list_deliveries(DeliveryQuery { limit: 10, ..DeliveryQuery::default() }).await.unwrap();
    assert!(page.deliveries.iter().all(|d| d.created_at_ms == 8_000));
    // The file's plateau is redb's; PostgreSQL's space is VACUUM's business.
    if t.kind == Kind::Redb {
        let plateau = sizes[2];
        assert!(sizes[7] <= plateau + plateau / 5, "the file kept growing: {sizes:?}");
    }
    eprintln!("file sizes per cycle: {sizes:?}");
}
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[derive(Debug, Clone)]
enum FifoOp {
    /// A new delivery joins queue 0 or 1.
    Ingest(u8),
    /// The due delivery of a queue is attempted: retried, succeeded or failed.
    Attempt(u8, u8),
    /// A bulk resend of the n-th failed delivery (if any).
    Requeue(usize),
    /// A manual resend succeeds for the n-th pending delivery (if any), head or not.
    ManualSuccess(usize),
}

fn fifo_op() -> impl proptest::strategy::Strategy<Value = FifoOp> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0u8..2).prop_map(FifoOp::Ingest),
        3 => ((0u8..2), (0u8..3)).prop_map(|(q, o)| FifoOp::Attempt(q, o)),
        1 => (0usize..8).prop_map(FifoOp::Requeue),
        1 => (0usize..8).prop_map(FifoOp::ManualSuccess),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Whatever happens to a FIFO endpoint's deliveries, each queue with pending deliveries has
    /// exactly one of them in the due index, and when it becomes final the oldest remaining one
    /// is next (a model of the queues is checked after every operation).
    #[test]
    fn fifo_queues_keep_one_due_head(ops in proptest::collection::vec(fifo_op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (store, writer) = Store::open(dir.path()).unwrap();
            // The model: per queue, the pending ids and the one that holds the due entry.
            let mut pending: [std::collections::BTreeSet<Uuid>; 2] = Default::default();
            let mut due: [Option<Uuid>; 2] = [None, None];
            let mut failed: Vec<(u8, Uuid)> = Vec::new();
            let mut n = 0;
            for op in ops {
                match op {
                    FifoOp::Ingest(q) => {
                        let mut d = delivery(Uuid::now_v7(), "a", 1);
                        d.fifo = Some(q.to_string());
                        let one = vec![d.clone()];
                        store.ingest(IngestWrite { event: event(&one), deliveries: one, idempotency: None }).await.unwrap();
                        pending[q as usize].insert(d.id);
                        due[q as usize].get_or_insert(d.id);
                    }
                    FifoOp::Attempt(q, outcome) => {
                        let Some(head) = due[q as usize] else { continue };
                        n += 1;
                        let next = [Next::RetryAt(2), Next::Succeeded, Next::Failed][outcome as usize];
                        store.record_attempt(head, attempt(n), next, None).await.unwrap();
                        if next != Next::RetryAt(2) {
                            let set = &mut pending[q as usize];
                            set.remove(&head);
                            due[q as usize] = set.first().copied();
                            if next == Next::Failed {
                                failed.push((q, head));
                            }
                        }
                    }
                    FifoOp::Requeue(i) => {
                        if failed.is_empty() {
                            continue;
                        }
                        let (q, id) = failed.remove(i % failed.len());
                        assert_eq!(store.requeue(vec![id], 1).await.unwrap(), 1);
                        pending[q as usize].insert(id);
                        due[q as usize].get_or_insert(id);
                    }
                    FifoOp::ManualSuccess(i) => {
                        let all: Vec<(usize, Uuid)> =
                            (0..2).flat_map(|q| pending[q].iter().map(move |id| (q, *id))).collect();
                        if all.is_empty() {
                            continue;
                        }
                        let (q, id) = all[i % all.len()];
                        n += 1;
                        let manual = AttemptRecord { manual: true, ..attempt(n) };
                        store.record_attempt(id, manual, Next::Succeeded, None).await.unwrap();
                        pending[q].remove(&id);
                        if due[q] == Some(id) {
                            due[q] = pending[q].first().copied();
                        }
                    }
                }
                let scan = store.scan_due(u64::MAX, HashSet::new(), per_endpoint(100), ScanLimits::global(100)).await.unwrap();
                let mut got: Vec<Uuid> = scan.items.iter().map(|i| i.delivery_id).collect();
                got.sort();
                let mut want: Vec<Uuid> = due.iter().flatten().copied().collect();
                want.sort();
                assert_eq!(got, want, "due entries after {n} attempts");
            }
            drop(store);
            writer.join();
        });
    }
}

/// Leases (PostgreSQL): a delivery one node's scan took is not offered to another node until
/// the lease runs out or is handed back, and a finished attempt ends it; other nodes' live
/// leases count against the endpoint's cluster-wide bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_a_delivery_with_one_node_until_they_end() {
    let Some(mut first) = TestStore::open(Kind::Postgres).await else { return };
    let a = first.store();
    // A second node on the same database.
    let (b, b_writer) = TestStore::connect(Kind::Postgres, first.dir.path(), first.url.as_deref()).await;
    let ev = Uuid::now_v7();
    let ds = vec![delivery(ev, "x", 10), delivery(ev, "x", 11), delivery(ev, "y", 12)];
    a.ingest(IngestWrite { event: event(&ds), deliveries: ds.clone(), idempotency: None }).await.unwrap();
    let lease = a.postgres().unwrap().lease().as_millis() as u64;
    let ids = |scan: &DueScan| scan.items.iter().map(|i| i.delivery_id).collect::<Vec<_>>();

    let took = a.scan_due(1_000, HashSet::new(), per_endpoint(1), ScanLimits::global(10)).await.unwrap();
    assert_eq!(ids(&took), [ds[0].id, ds[2].id]);
    // The other node sees only what is not leased; with one in flight at "x" cluster-wide and
    // a bound of 1, it takes nothing of "x".
    let limits = ScanLimits { global_free: 10, per_endpoint: 10, cluster_per_endpoint: 1 };
    let other = b.scan_due(1_000, HashSet::new(), per_endpoint(10), limits).await.unwrap();
    assert!(other.items.is_empty(), "{:?}", ids(&other));
    // Nothing is due later; run-out leases are found by the scheduler's poll.
    assert_eq!(other.next_due_ms, None);
    // Without the cluster bound it takes the one nobody holds.
    let other = b.scan_due(1_000, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
    assert_eq!(ids(&other), [ds[1].id]);
    // Leases that ran out (their node died) are taken over.
    let later = b.scan_due(1_000 + lease, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
    assert_eq!(ids(&later), [ds[0].id, ds[1].id, ds[2].id]);
    // Recording the attempt ends the lease; a retry is due for anyone again.
    b.record_attempt(ds[0].id, attempt(1), Next::RetryAt(5), None).await.unwrap();
    let again = a.scan_due(1_000 + lease, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
    assert_eq!(ids(&again), [ds[0].id]);
    // A manual resend on the other node is refused while the lease is held.
    assert!(!b.try_lease(ds[0].id, 1_000 + lease).await.unwrap());
    assert!(a.try_lease(ds[0].id, 1_000 + lease).await.unwrap(), "its own lease");
    // Handing back is immediate.
    a.release_leases(Some(vec![ds[0].id])).await.unwrap();
    let back = b.scan_due(1_000 + lease, HashSet::new(), per_endpoint(10), ScanLimits::global(10)).await.unwrap();
    assert_eq!(ids(&back), [ds[0].id]);
    drop((a, b));
    b_writer.finish().await;
    first.close_writer().await;
}

/// Fencing (PostgreSQL): a node whose lease ran out and was taken over can no longer change
/// the delivery. Its late attempt is kept in the record, but the state, due time and lease
/// stay as the node that holds the lease left them, and its renewal reports the lease lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_cannot_change_the_delivery() {
    let Some(mut first) = TestStore::open(Kind::Postgres).await else { return };
    let a = first.store();
    let (b, b_writer) = TestStore::connect(Kind::Postgres, first.dir.path(), first.url.as_deref()).await;
    let ev = Uuid::now_v7();
    let ds = vec![delivery(ev, "x", 10), delivery(ev, "x", 11)];
    a.ingest(IngestWrite { event: event(&ds), deliveries: ds.clone(), idempotency: None }).await.unwrap();
    let lease = a.postgres().unwrap().lease().as_millis() as u64;
    let all = ScanLimits::global(10);
    let took = a.scan_due(1_000, HashSet::new(), per_endpoint(10), all).await.unwrap();
    assert_eq!(took.items.len(), 2);
    // Node a stalls past its lease; node b takes both over and finishes the first.
    let later = b.scan_due(1_000 + lease, HashSet::new(), per_endpoint(10), all).await.unwrap();
    assert_eq!(later.items.len(), 2);
    b.record_attempt(ds[0].id, attempt(1), Next::Succeeded, None).await.unwrap();
    // Node a wakes up: its renewal finds both leases lost, and its late results change nothing
    // but the attempt list.
    let mut lost = a.renew_leases(vec![ds[0].id, ds[1].id]).await.unwrap();
    lost.sort();
    let mut want = vec![ds[0].id, ds[1].id];
    want.sort();
    assert_eq!(lost, want);
    a.record_attempt(ds[0].id, attempt(1), Next::RetryAt(99_000), None).await.unwrap();
    let d = a.delivery(ds[0].id).await.unwrap().unwrap();
    assert_eq!(
        (d.state, d.next_attempt_at_ms, d.attempts.len()),
        (DeliveryState::Succeeded, None, 2),
        "b's result stands"
    );
    a.record_attempt(ds[1].id, attempt(1), Next::Failed, None).await.unwrap();
    let d = a.delivery(ds[1].id).await.unwrap().unwrap();
    assert_eq!((d.state, d.next_attempt_at_ms, d.attempts.len()), (DeliveryState::Pending, Some(11), 1), "still b's");
    // Node b still holds the second: nobody else is offered it, and its own result applies.
    let none = a.scan_due(1_000 + lease, HashSet::new(), per_endpoint(10), all).await.unwrap();
    assert!(none.items.is_empty(), "a late result must not end another node's lease");
    b.record_attempt(ds[1].id, attempt(2), Next::Succeeded, None).await.unwrap();
    let d = b.delivery(ds[1].id).await.unwrap().unwrap();
    assert_eq!((d.state, d.attempts.len()), (DeliveryState::Succeeded, 2));
    drop((a, b));
    b_writer.finish().await;
    first.close_writer().await;
}

/// A listing (PostgreSQL) runs under a statement timeout: one that would wait on a lock (or
/// run a pathological plan) is cancelled, and the connection is not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_cannot_run_past_its_timeout() {
    let Some(t) = TestStore::open(Kind::Postgres).await else { return };
    let store = t.store();
    store.postgres().unwrap().set_listing_timeout(std::time::Duration::from_millis(300));
    let (mut client, conn) = tokio_postgres::connect(t.url.as_deref().unwrap(), tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    let lock = client.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let started = std::time::Instant::now();
    let listed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.list_deliveries(DeliveryQuery { limit: 10, ..DeliveryQuery::default() }),
    )
    .await
    .expect("the listing waited on the lock past its timeout");
    let err = listed.expect_err("a listing that cannot read fails");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    lock.rollback().await.unwrap();
    drop(client);
    let _ = driver.await;
    assert!(store.list_deliveries(DeliveryQuery { limit: 10, ..DeliveryQuery::default() }).await.is_ok());
    drop(store);
    t.close().await;
}

contract! {
/// Every listing filter (state, endpoint, trigger, tenant, resource fields, time range) and the
/// cursor answer the same on both backends: newest first, each match exactly once.
async fn listing_filters_and_cursors(t) {
    let store = t.store();
    let mut all = Vec::new();
    for i in 0..12u64 {
        let mut d = delivery(Uuid::now_v7(), if i % 2 == 0 { "a" } else { "b" }, 1);
        d.trigger = if i % 3 == 0 { "bot.state_change".into() } else { "transcript.update".into() };
        d.tenant = (i % 4 == 0).then(|| "acme".to_owned());
        d.resource = vec![("bot_id".into(), format!("\"bot_{}\"", i % 2))];
        d.created_at_ms = (d.id.as_u128() >> 80) as u64;
        if i % 5 == 0 {
            d.state = DeliveryState::Failed;
            d.next_attempt_at_ms = None;
        }
        store.ingest(IngestWrite { event: event(std::slice::from_ref(&d)), deliveries: vec![d.clone()], idempotency: None })
            .await
            .unwrap();
        all.push(d);
    }
    let newest_first = |f: &dyn Fn(&DeliveryRecord) -> bool| {
        let mut ids: Vec<Uuid> = all.iter().filter(|d| f(d)).map(|d| d.id).collect();
        ids.sort();
        ids.reverse();
        ids
    };
    let pages = |q: DeliveryQuery| {
        let store = store.clone();
        async move {
            let (mut q, mut out) = (q, Vec::new());
            loop {
                let page = store.list_deliveries(q.clone()).await.unwrap();
                out.extend(page.deliveries.iter().map(|d| d.id));
                match page.next {
                    Some(n) => q.after = Some(n),
                    None => return out,
                }
            }
        }
    };
    let q = |f: fn(&mut DeliveryQuery)| {
        let mut q = DeliveryQuery { limit: 2, ..DeliveryQuery::default() };
        f(&mut q);
        q
    };
    assert_eq!(pages(q(|_| {})).await, newest_first(&|_| true));
    assert_eq!(pages(q(|q| q.state = Some(DeliveryState::Failed))).await, newest_first(&|d| d.state == DeliveryState::Failed));
    assert_eq!(pages(q(|q| q.endpoint_id = Some("b".into()))).await, newest_first(&|d| d.endpoint_id == "b"));
    assert_eq!(
        pages(q(|q| q.trigger = Some("bot.state_change".into()))).await,
        newest_first(&|d| d.trigger == "bot.state_change")
    );
    assert_eq!(pages(q(|q| q.tenant = Some("acme".into()))).await, newest_first(&|d| d.tenant.as_deref() == Some("acme")));
    assert_eq!(
        pages(q(|q| {
            q.fields = vec![("bot_id".into(), "\"bot_1\"".into())];
            q.trigger = Some("transcript.update".into());
        }))
        .await,
        newest_first(&|d| d.resource[0].1 == "\"bot_1\"" && d.trigger == "transcript.update")
    );
    // A time range is an id range: from the 4th delivery's millisecond to the 9th's.
    let (since, until) = (all[3].created_at_ms, all[8].created_at_ms);
    let mut range = DeliveryQuery { limit: 3, since_ms: Some(since), until_ms: Some(until), ..DeliveryQuery::default() };
    range.endpoint_id = Some("a".into());
    assert_eq!(
        pages(range).await,
        newest_first(&|d| d.endpoint_id == "a" && (since..=until).contains(&d.created_at_ms))
    );
}
}

contract! {
/// Endpoints, their health, tenants and tokens: stored, replaced, listed in id order, and
/// removed with what goes with them.
async fn endpoints_health_tenants_and_tokens(t) {
    let store = t.store();
    let endpoint = |id: &str, url: &str| EndpointRecord {
        id: id.into(),
        tenant: id.split_once('/').map(|(t, _)| t.to_owned()),
        url: url.into(),
        triggers: vec!["*".into()],
        matches: vec![],
        secret: None,
        created_at_ms: 1,
        rate_limit: None,
        ordering: None,
        ordering_key: None,
        previous_secret: None,
        previous_until_ms: None,
        ..Default::default()
    };
    // What the Svix-compatible API adds to an endpoint is kept as written.
    let mut rich = endpoint("acme/rich", "https://acme.example/rich");
    rich.description = "Invoices".into();
    rich.metadata = [("team".to_owned(), "billing".to_owned())].into();
    rich.channels = vec!["project_1".into()];
    rich.headers = [("x-api-key".to_owned(), "k-1".to_owned())].into();
    store.put_endpoint(rich.clone()).await.unwrap();
    assert!(store.endpoints().await.unwrap().contains(&rich), "description, metadata, channels, headers");
    store.delete_endpoint("acme/rich".into()).await.unwrap();
    store.put_endpoint(endpoint("x", "https://one.example/")).await.unwrap();
    store.put_endpoint(endpoint("x", "https://two.example/")).await.unwrap();
    store.put_endpoint(endpoint("acme/e1", "https://acme.example/")).await.unwrap();
    let urls: Vec<String> = store.endpoints().await.unwrap().into_iter().map(|e| e.url).collect();
    assert_eq!(urls, ["https://acme.example/", "https://two.example/"], "replaced, in id order");

    // Under a main key both secrets of a rotated endpoint are sealed at rest and opened on read.
    let (own, old) = ("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "whsec_AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=");
    store.set_main_key(Some(crate::seal::MainKey::parse("AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=").unwrap()));
    let headers = [("authorization".to_owned(), "Bearer hdr-credential".to_owned())].into();
    let rotated = EndpointRecord { secret: Some(own.into()), previous_secret: Some(old.into()), previous_until_ms: Some(9), headers, ..endpoint("r", "https://r.example/") };
    store.put_endpoint(rotated).await.unwrap();
    let mut stored = store.stored_endpoints().await.unwrap().into_iter().find(|e| e.id == "r").unwrap();
    let sealed = stored.secrets_mut().all(|s| crate::seal::is_sealed(s));
    assert!(sealed && stored.secrets_mut().count() == 3, "the secrets and the header value: {stored:?}");
    let opened = store.endpoints().await.unwrap().into_iter().find(|e| e.id == "r").unwrap();
    assert_eq!((opened.secret.as_deref(), opened.previous_secret.as_deref()), (Some(own), Some(old)));
    assert_eq!(opened.headers["authorization"], "Bearer hdr-credential");
    store.set_main_key(None);
    store.delete_endpoint("r".into()).await.unwrap();

    let health = |id: &str, version: u64| EndpointHealth { endpoint_id: id.into(), version, opens: version as u32, ..EndpointHealth::default() };
    store.put_health(Effects { health: Some(health("x", 2)), events: vec![] }).await.unwrap();
    // An older snapshot does not overwrite a newer one.
    store.put_health(Effects { health: Some(health("x", 1)), events: vec![] }).await.unwrap();
    store.put_health(Effects { health: Some(health("acme/e1", 1)), events: vec![] }).await.unwrap();
    let h: Vec<(String, u64)> = store.health_records().await.unwrap().into_iter().map(|h| (h.endpoint_id, h.version)).collect();
    assert_eq!(h, [("acme/e1".to_owned(), 1), ("x".to_owned(), 2)]);

    let tenant = TenantRecord {
        id: "acme".into(),
        name: Some("Acme".into()),
        metadata: None,
        secrets: vec![],
        max_endpoints: None,
        max_events_per_second: None,
        created_at_ms: 1,
    };
    store.put_tenant(tenant.clone()).await.unwrap();
    let token = |id: &str, tenant: &str| TokenRecord {
        id: id.into(),
        tenant: tenant.into(),
        hash: "00".repeat(32),
        created_at_ms: 1,
        expires_at_ms: None,
        portal: false,
    };
    store.put_token(token("tok_1", "acme")).await.unwrap();
    store.put_token(token("tok_2", "other")).await.unwrap();
    assert_eq!(store.tenants().await.unwrap(), [tenant]);
    store.delete_token("tok_2".into()).await.unwrap();
    assert_eq!(store.tokens().await.unwrap().len(), 1);
    // Removing a tenant takes its endpoints, their health and its tokens; others stay.
    store.delete_tenant("acme".into()).await.unwrap();
    assert!(store.tenants().await.unwrap().is_empty());
    assert!(store.tokens().await.unwrap().is_empty());
    let ids: Vec<String> = store.endpoints().await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["x"]);
    store.delete_endpoint("x".into()).await.unwrap();
    assert!(store.endpoints().await.unwrap().is_empty());
    assert!(store.health_records().await.unwrap().is_empty(), "health goes with its endpoint");
}
}
