//! The writer's side of the charts on PostgreSQL: one `INSERT … ON CONFLICT` that adds a
//! batch of bucket counts, and the removal of buckets past their keep.
//!
//! Owns: writes to `tally`, inside the batch's transaction.
//! Must not touch: other tables.

use super::Batch;
use crate::store::StoreError;
use crate::store::pg::{ms, pg_error};
use crate::tally::{Resolution, Row};

impl Batch<'_, '_> {
    /// Adds every row to its bucket (rows come sorted, so two nodes lock buckets in the same
    /// order), then drops the touched scopes' buckets older than their resolution keeps.
    pub(super) async fn add_tally(&mut self, rows: &[Row], now_ms: u64) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let res: Vec<i16> = rows.iter().map(|r| r.resolution.code()).collect();
        let scopes: Vec<&str> = rows.iter().map(|r| r.scope.as_str()).collect();
        let buckets: Vec<i64> = rows.iter().map(|r| ms(r.bucket_ms)).collect();
        let col = |f: fn(&Row) -> u64| rows.iter().map(|r| ms(f(r))).collect::<Vec<i64>>();
        let (succeeded, failed, retried) =
            (col(|r| r.counts.succeeded), col(|r| r.counts.failed), col(|r| r.counts.retried));
        let (attempts, sums) = (col(|r| r.counts.attempts), col(|r| r.counts.latency_ms_sum));
        // A two-dimensional array would unnest element by element: each row's histogram goes
        // as the text of an array literal instead, cast back per row.
        let latency: Vec<String> = rows
            .iter()
            .map(|r| format!("{{{}}}", r.counts.latency.iter().map(u64::to_string).collect::<Vec<_>>().join(",")))
            .collect();
        let stmt = self
            .txn
            .prepare_cached(
                "INSERT INTO tally (resolution, scope, bucket_ms, succeeded, failed, retried, attempts, latency_ms_sum, latency)
                 SELECT r, s, b, su, f, re, a, l, h::bigint[]
                   FROM unnest($1::smallint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                               $7::bigint[], $8::bigint[], $9::text[]) AS t(r, s, b, su, f, re, a, l, h)
                 ON CONFLICT (resolution, scope, bucket_ms) DO UPDATE SET
                   succeeded = tally.succeeded + EXCLUDED.succeeded,
                   failed = tally.failed + EXCLUDED.failed,
                   retried = tally.retried + EXCLUDED.retried,
                   attempts = tally.attempts + EXCLUDED.attempts,
                   latency_ms_sum = tally.latency_ms_sum + EXCLUDED.latency_ms_sum,
                   latency = ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0)
                                     FROM unnest(tally.latency, EXCLUDED.latency) AS u(x, y))",
            )
            .await
            .map_err(pg_error)?;
        self.txn
            .execute(&stmt, &[&res, &scopes, &buckets, &succeeded, &failed, &retried, &attempts, &sums, &latency])
            .await
            .map_err(pg_error)?;
        for r in Resolution::ALL {
            let touched: Vec<&str> =
                rows.iter().filter(|row| row.resolution == r).map(|row| row.scope.as_str()).collect();
            self.txn
                .execute(
                    "DELETE FROM tally WHERE resolution = $1 AND scope = ANY($2) AND bucket_ms < $3",
                    &[&r.code(), &touched, &ms(r.cutoff(now_ms))],
                )
                .await
                .map_err(pg_error)?;
        }
        Ok(())
    }
}
