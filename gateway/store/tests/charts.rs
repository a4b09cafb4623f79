//! The charts' part of the store contract: buckets add up across writes (and nodes), reads
//! are ranges, old buckets go, a deleted endpoint's buckets go with it, and a backlog counts a
//! set of endpoints' due deliveries.

use super::*;
use crate::tally::{Counts, Resolution, Row, Sample, Tally};

fn sample(ms: u64, succeeded: bool) -> Sample {
    Sample { attempt_ms: Some(ms), succeeded, retried: !succeeded, ..Sample::default() }
}

contract! {
async fn tally_buckets_add_up_and_are_read_by_range(t) {
    let store = t.store();
    let hour = 3_600_000u64;
    let now = 500 * 24 * hour + 17 * 60_000 + 5;
    let tally = Tally::default();
    tally.add("acme/hook", now, sample(30, true));
    tally.add("acme/hook", now, sample(700, false));
    tally.add("other", now - 60_000, sample(5, true));
    store.add_tally(tally.take(), now).await.unwrap();
    // A second write (as another node's) adds to the same buckets.
    tally.add("acme/hook", now, sample(40, true));
    store.add_tally(tally.take(), now).await.unwrap();

    let minute = Resolution::Minute.bucket_of(now);
    let series = store.tally_series(Resolution::Minute, "e:acme/hook".into(), minute - hour, minute + 60_000).await.unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    let (at, c) = series[0];
    assert_eq!(at, minute);
    assert_eq!((c.succeeded, c.retried, c.attempts, c.latency_ms_sum), (2, 1, 3, 770));
    assert_eq!(c.latency.iter().sum::<u64>(), 3);
    let all = store.tally_series(Resolution::Minute, "*".into(), 0, u64::MAX / 2).await.unwrap();
    assert_eq!(all.iter().map(|(b, _)| *b).collect::<Vec<_>>(), [minute - 60_000, minute]);
    assert_eq!(all.iter().map(|(_, c)| c.attempts).sum::<u64>(), 4);
    // The range is half-open: a bucket starting at `to` is not in it.
    assert!(store.tally_series(Resolution::Minute, "*".into(), 0, minute - 60_000).await.unwrap().is_empty());
    let hours = store.tally_series(Resolution::Hour, "t:acme".into(), 0, u64::MAX / 2).await.unwrap();
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].1, c, "the tenant's hour holds its one endpoint's minute");
    let totals = store
        .tally_totals(Resolution::Hour, vec!["e:other".into(), "e:acme/hook".into(), "e:none".into()], 0, u64::MAX / 2)
        .await
        .unwrap();
    let names: Vec<&str> = totals.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["e:other", "e:acme/hook", "e:none"], "in the order asked");
    assert_eq!((totals[0].1.succeeded, totals[1].1.attempts, totals[2].1), (1, 3, Counts::default()));

    // A day later, writing to the scope drops its minute buckets past the keep (not its hours).
    let later = now + 25 * hour;
    let row = Row { resolution: Resolution::Minute, scope: "e:acme/hook".into(), bucket_ms: Resolution::Minute.bucket_of(later), counts: Counts { succeeded: 1, ..Counts::default() } };
    store.add_tally(vec![row], later).await.unwrap();
    let series = store.tally_series(Resolution::Minute, "e:acme/hook".into(), 0, u64::MAX / 2).await.unwrap();
    assert_eq!(series.len(), 1, "only the new minute is left: {series:?}");
    assert_eq!(store.tally_series(Resolution::Hour, "e:acme/hook".into(), 0, u64::MAX / 2).await.unwrap().len(), 1);
    // Deleting the endpoint deletes its buckets; its tenant's stay (they are history).
    store.delete_endpoint("acme/hook".into()).await.unwrap();
    assert!(store.tally_series(Resolution::Hour, "e:acme/hook".into(), 0, u64::MAX / 2).await.unwrap().is_empty());
    assert_eq!(store.tally_series(Resolution::Hour, "t:acme".into(), 0, u64::MAX / 2).await.unwrap().len(), 1);
}
}

contract! {
async fn backlogs_count_the_due_deliveries_of_a_set_of_endpoints(t) {
    let store = t.store();
    let ev = Uuid::now_v7();
    let mut ds: Vec<_> = (0..5).map(|i| delivery(ev, "acme/a", 100 + i)).collect();
    ds.extend((0..3).map(|i| delivery(ev, "acme/b", 100 + i)));
    ds.push(delivery(ev, "other", 1));
    for (i, d) in ds.iter_mut().enumerate() {
        d.created_at_ms = 1_000 + i as u64;
    }
    store.ingest(IngestWrite { event: event(&ds), deliveries: ds.clone(), idempotency: None }).await.unwrap();
    store.record_attempt(ds[0].id, attempt(1), Next::Succeeded, None).await.unwrap();
    let b = store.backlog_of(vec!["acme/a".into(), "acme/b".into()]).await.unwrap();
    assert_eq!((b.pending, b.capped, b.oldest_pending_ms), (7, false, Some(1_001)));
    let b = store.backlog_of(vec!["nothing".into()]).await.unwrap();
    assert_eq!((b.pending, b.oldest_pending_ms), (0, None));
}
}
