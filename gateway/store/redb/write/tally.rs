//! The writer's side of the charts: adding a batch of bucket counts and dropping buckets past
//! their resolution's keep.
//!
//! Owns: `tally_minute` / `tally_hour` writes, inside the batch's transaction.
//! Must not touch: reads for callers, or other tables.

use std::collections::BTreeSet;

use redb::{ReadableTable, WriteTransaction};

use super::super::schema::tally_table;
use super::super::storage;
use crate::store::StoreError;
use crate::tally::{Counts, Resolution, Row};

/// Adds every row to its stored bucket, then drops the buckets of the scopes it touched that
/// are older than their resolution keeps (a scope that stops receiving deliveries keeps its
/// last buckets until retention's pass; charts never read past the keep).
pub(crate) fn add_rows(txn: &WriteTransaction, rows: &[Row], now_ms: u64) -> Result<(), StoreError> {
    for res in Resolution::ALL {
        let mut table = txn.open_table(tally_table(res)).map_err(storage)?;
        let mut scopes = BTreeSet::new();
        for row in rows.iter().filter(|r| r.resolution == res) {
            let key = (row.scope.as_str(), row.bucket_ms);
            let mut counts =
                table.get(key).map_err(storage)?.map_or_else(Counts::default, |v| Counts::from_bytes(v.value()));
            counts.add(&row.counts);
            table.insert(key, counts.to_bytes().as_slice()).map_err(storage)?;
            scopes.insert(row.scope.as_str());
        }
        let cutoff = res.cutoff(now_ms);
        for scope in scopes {
            table.retain_in((scope, 0)..(scope, cutoff), |_, _| false).map_err(storage)?;
        }
    }
    Ok(())
}

/// Drops every bucket of one scope (its endpoint or tenant is deleted).
pub(crate) fn remove_scope(txn: &WriteTransaction, scope: &str) -> Result<(), StoreError> {
    for res in Resolution::ALL {
        let mut table = txn.open_table(tally_table(res)).map_err(storage)?;
        table.retain_in((scope, 0)..=(scope, u64::MAX), |_, _| false).map_err(storage)?;
    }
    Ok(())
}
