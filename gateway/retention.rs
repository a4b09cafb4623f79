//! Retention: removes final deliveries older than `retention.deliveries` (an event goes with
//! its last delivery) and idempotency keys older than `retention.idempotency`.
//!
//! Owns: the pruning schedule and the size of each pass. A pass is one operation of the
//! store's writer ([`PRUNE_BATCH`] events at most), so it shares a commit with ingest instead of
//! holding the writer for long, and the next pass waits `PASS_GAP`. Pending deliveries are
//! never removed; redb reuses the pages freed, so under a steady load the file stops growing
//! once the retention window is full.
//! Must not touch: HTTP or the scheduler. It only asks the store to prune and counts.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::RetentionConfig;
use crate::metrics::Metrics;
use crate::store::{PruneRequest, Store};

/// Events visited by one pass. A pass removes each event's final deliveries with their index
/// entries (about five B-tree deletes per delivery), which adds well under a millisecond to the
/// commit it shares; 256 made ingest's p99 visibly worse in `cargo bench --bench retention`,
/// 64 did not.
pub const PRUNE_BATCH: usize = 64;

/// The pause between two passes of one sweep, so ingest batches run in between. With
/// [`PRUNE_BATCH`] this prunes up to about 20,000 events a second, more than ingest can add.
const PASS_GAP: Duration = Duration::from_millis(2);

/// How often a sweep starts: a hundredth of the retention window, between 1 s and 60 s.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 100).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

pub async fn run(
    store: Store,
    retention: RetentionConfig,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let interval = sweep_interval(retention.deliveries);
    loop {
        let mut after = None;
        loop {
            let now = clock.now_ms();
            let req = PruneRequest {
                cutoff_ms: now.saturating_sub(retention.deliveries.as_millis() as u64),
                idempotency_cutoff_ms: now.saturating_sub(retention.idempotency.as_millis() as u64),
                after,
                max_events: PRUNE_BATCH,
            };
            match store.prune(req).await {
                Ok(report) => {
                    metrics.pruned_deliveries.inc_by(report.deliveries);
                    metrics.pruned_events.inc_by(report.events);
                    if report.deliveries > 0 {
                        tracing::debug!(deliveries = report.deliveries, events = report.events, "pruned");
                    }
                    match report.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                Err(e) => {
                    // Retried at the next sweep: a bounded, visible back-off.
                    tracing::error!(error = %e, retry_in_s = interval.as_secs(), "retention pass failed");
                    break;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PASS_GAP) => {}
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
