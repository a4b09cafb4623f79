//! Leases between nodes: the due scan that claims deliveries, renewals, hand-backs, the
//! heartbeat, and the `LISTEN` connection that wakes this node.
//!
//! Owns: the lease columns (`lease_owner`, `lease_until_ms`) except their clearing by a
//! pass's final write (that is `pg::write`), the `nodes` table, and the wake-up channels.
//! Must not touch: delivery records or their state; the protocol is described in `pg`'s header
//! and in ARCHITECTURE.md ("The lease protocol").

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CHANNEL, Pg, SETTINGS_CHANNEL, ms, pg_error};
use crate::model::{DeliveryRecord, EventRecord};
use crate::store::{DueItem, DueScan, Loaded, ScanLimits, StoreError};

impl Pg {
    /// The due scan with leases; see the module header. Runs in one transaction: the rows it
    /// takes are stamped with this node's lease before the commit, and rows it looked at but
    /// did not take are released by the commit.
    pub(in crate::store) async fn scan_due(
        &self,
        now_ms: u64,
        claimed: &HashSet<Uuid>,
        admit: &mut (dyn FnMut(&str) -> bool + Send),
        limits: ScanLimits,
    ) -> Result<DueScan, StoreError> {
        let mut scan = DueScan::default();
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_error)?;
        // A claim is not an acknowledgement: it need not wait for the WAL flush. A database
        // crash that forgets recent leases frees those deliveries again, which costs what a
        // node crash costs (the attempts then in flight may be sent twice), and saves an fsync
        // per scheduler round.
        txn.batch_execute("SET LOCAL synchronous_commit = off").await.map_err(pg_error)?;
        let now = ms(now_ms);
        // Claimed rows are skipped below (they are normally leased by this node and not
        // returned at all), so they must not use up an endpoint's candidates.
        let per_endpoint = limits.per_endpoint.min(limits.global_free).saturating_add(claimed.len());
        let per_endpoint = i64::try_from(per_endpoint).unwrap_or(i64::MAX);
        // Endpoints with due rows, by a loose index scan (one index probe per endpoint), then
        // up to `per_endpoint` free due rows of each, oldest due first. Locked rows (another
        // node is claiming them right now) are skipped, never waited for.
        let candidates = txn
            .prepare_cached(
                "WITH RECURSIVE eps(ep) AS (
                    (SELECT endpoint_id FROM deliveries WHERE due_ms IS NOT NULL ORDER BY endpoint_id LIMIT 1)
                    UNION ALL
                    SELECT (SELECT endpoint_id FROM deliveries
                            WHERE due_ms IS NOT NULL AND endpoint_id > eps.ep ORDER BY endpoint_id LIMIT 1)
                    FROM eps WHERE eps.ep IS NOT NULL
                 )
                 SELECT d.id, d.endpoint_id, d.due_ms, h.others
                 FROM eps CROSS JOIN LATERAL (
                    -- Other nodes' live leases of the endpoint: leased rows were due when they
                    -- were claimed, so they sit at the head of its due range.
                    SELECT count(*) FILTER (WHERE lease_until_ms > $1 AND lease_owner <> $3) AS others
                    FROM (SELECT lease_until_ms, lease_owner FROM deliveries
                          WHERE due_ms IS NOT NULL AND endpoint_id = eps.ep ORDER BY due_ms, id LIMIT $4) head
                 ) h CROSS JOIN LATERAL (
                    SELECT id, endpoint_id, due_ms FROM deliveries
                    WHERE due_ms IS NOT NULL AND endpoint_id = eps.ep AND due_ms <= $1
                      AND (lease_until_ms IS NULL OR lease_until_ms <= $1)
                    ORDER BY due_ms, id LIMIT $2
                    FOR UPDATE SKIP LOCKED
                 ) d
                 WHERE eps.ep IS NOT NULL
                 ORDER BY d.endpoint_id, d.due_ms, d.id",
            )
            .await
            .map_err(pg_error)?;
        // How far into an endpoint's due range to count other nodes' leases.
        let window = i64::try_from(limits.cluster_per_endpoint.min(4096)).unwrap_or(4096).saturating_add(per_endpoint);
        let rows = txn.query(&candidates, &[&now, &per_endpoint, &self.node, &window]).await.map_err(pg_error)?;
        let mut taken: Vec<(Uuid, String, u64)> = Vec::new();
        let mut per_ep: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for r in &rows {
            let id: Uuid = r.get(0);
            let ep: String = r.get(1);
            let due: i64 = r.get(2);
            let others: i64 = r.get(3);
            if claimed.contains(&id) {
                continue;
            }
            if taken.len() >= limits.global_free {
                break;
            }
            let mine = per_ep.entry(ep.clone()).or_default();
            // Other nodes' live leases count against the endpoint's cluster-wide bound.
            if others as usize + *mine >= limits.cluster_per_endpoint || !admit(&ep) {
                continue;
            }
            *mine += 1;
            taken.push((id, ep, due as u64));
        }
        if !taken.is_empty() {
            scan.items = self.stamp(&txn, taken, now_ms).await?;
        }
        // When to look again: the next due time. A lease that runs out (its node died) is
        // found by the scheduler's poll (every few seconds on PostgreSQL): finding the next
        // lease end would mean visiting every row ever leased that vacuum has not cleaned yet.
        let next = txn
            .prepare_cached("SELECT due_ms FROM deliveries WHERE due_ms > $1 ORDER BY due_ms LIMIT 1")
            .await
            .map_err(pg_error)?;
        let next: Option<i64> = txn.query_opt(&next, &[&now]).await.map_err(pg_error)?.map(|r| r.get(0));
        scan.next_due_ms = next.map(|n| n as u64);
        txn.commit().await.map_err(pg_error)?;
        Ok(scan)
    }

    /// Stamps `taken` with this node's lease and reads their records (and their events') in
    /// the same statement; the lease tokens become this node's fences.
    async fn stamp(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        taken: Vec<(Uuid, String, u64)>,
        now_ms: u64,
    ) -> Result<Vec<DueItem>, StoreError> {
        let mut items = Vec::with_capacity(taken.len());
        let ids: Vec<Uuid> = taken.iter().map(|t| t.0).collect();
        let lease_until = ms(now_ms.saturating_add(self.lease_ms));
        let stmt = txn
            .prepare_cached(
                "UPDATE deliveries d SET lease_owner = $2, lease_until_ms = $3, lease_token = d.lease_token + 1
                 WHERE d.id = ANY($1)
                 RETURNING d.id, d.record, (SELECT e.record FROM events e WHERE e.id = d.event_id), d.lease_token",
            )
            .await
            .map_err(pg_error)?;
        let rows = txn.query(&stmt, &[&ids, &self.node, &lease_until]).await.map_err(pg_error)?;
        let mut loaded: std::collections::HashMap<Uuid, Loaded> = std::collections::HashMap::new();
        for r in rows {
            let id: Uuid = r.get(0);
            self.fences.hold(id, r.get(3));
            loaded.insert(id, load(id, r.get(1), r.get(2)));
        }
        for (id, endpoint_id, due_ms) in taken {
            let loaded = loaded.remove(&id).unwrap_or(Loaded::NoDelivery);
            items.push(DueItem { delivery_id: id, endpoint_id, due_ms, loaded });
        }
        self.leases_taken.fetch_add(items.len() as u64, Ordering::Relaxed);
        self.leases_fresh_ms.fetch_max(now_ms, Ordering::Relaxed);
        Ok(items)
    }

    pub(in crate::store) async fn try_lease(&self, id: Uuid, now_ms: u64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE deliveries SET lease_owner = $2, lease_until_ms = $3, lease_token = lease_token + 1
                 WHERE id = $1 AND (lease_until_ms IS NULL OR lease_until_ms <= $4 OR lease_owner = $2)
                 RETURNING lease_token",
                &[&id, &self.node, &ms(now_ms.saturating_add(self.lease_ms)), &ms(now_ms)],
            )
            .await
            .map_err(pg_error)?;
        if let Some(r) = &row {
            self.fences.hold(id, r.get(0));
        }
        Ok(row.is_some())
    }

    /// Extends this node's leases on `ids`, each only while the row still carries this node's
    /// id and the token it was claimed with. Returns the leases that were lost (another node
    /// claimed the delivery after this one's lease ran out): their passes' results will be
    /// recorded as late attempts only.
    pub(in crate::store) async fn renew_leases(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let now = crate::model::now_ms();
        let client = self.client().await?;
        let held = self.fences.tokens(ids);
        let mut lost = Vec::new();
        if !held.is_empty() {
            let (ids, tokens): (Vec<Uuid>, Vec<i64>) = held.iter().copied().unzip();
            let renewed: std::collections::HashSet<Uuid> = client
                .query(
                    "UPDATE deliveries d SET lease_until_ms = $3
                     FROM unnest($1::uuid[], $4::bigint[]) AS u(id, token)
                     WHERE d.id = u.id AND d.lease_owner = $2 AND d.lease_token = u.token
                     RETURNING d.id",
                    &[&ids, &self.node, &ms(now + self.lease_ms), &tokens],
                )
                .await
                .map_err(pg_error)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            lost = ids.into_iter().filter(|id| !renewed.contains(id)).collect();
            self.fences.mark_lost(&lost);
        }
        // The heartbeat: this node is alive; count the nodes that are (for rate limits).
        let stale = ms(now.saturating_sub(2 * self.lease_ms));
        client
            .execute(
                "INSERT INTO nodes (id, seen_ms) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET seen_ms = $2",
                &[&self.node, &ms(now)],
            )
            .await
            .map_err(pg_error)?;
        client.execute("DELETE FROM nodes WHERE seen_ms < $1", &[&stale]).await.map_err(pg_error)?;
        let live: i64 = client.query_one("SELECT count(*) FROM nodes", &[]).await.map_err(pg_error)?.get(0);
        self.nodes.store((live as usize).max(1), Ordering::Relaxed);
        self.leases_fresh_ms.fetch_max(now, Ordering::Relaxed);
        Ok(lost)
    }

    /// Whether this node still holds the lease of `id` it claimed, before a pass sends: asked
    /// of the database only when the leases may have run out unrenewed (no renewal for half a
    /// lease: the process was paused, or starved), so that a node coming back from a pause does
    /// not send what another node has taken over meanwhile. Otherwise `true` without a query.
    pub(in crate::store) async fn still_leased(&self, id: Uuid) -> Result<bool, StoreError> {
        if self.fences.is_lost(id) {
            return Ok(false);
        }
        let silent = crate::model::now_ms().saturating_sub(self.leases_fresh_ms.load(Ordering::Relaxed));
        if silent < self.lease_ms / 2 {
            return Ok(true);
        }
        let Some(mine) = self.fences.token(id) else { return Ok(true) };
        let row = self
            .client()
            .await?
            .query_opt("SELECT lease_owner, lease_token FROM deliveries WHERE id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        Ok(row.is_some_and(|r| r.get::<_, Option<Uuid>>(0) == Some(self.node) && r.get::<_, i64>(1) == mine))
    }

    pub(in crate::store) async fn release_leases(&self, ids: Option<&[Uuid]>) -> Result<(), StoreError> {
        let client = self.client().await?;
        match ids {
            Some(ids) => {
                client
                    .execute(
                        "UPDATE deliveries SET lease_owner = NULL, lease_until_ms = NULL
                         WHERE id = ANY($1) AND lease_owner = $2",
                        &[&ids, &self.node],
                    )
                    .await
            }
            None => {
                client
                    .execute(
                        "UPDATE deliveries SET lease_owner = NULL, lease_until_ms = NULL
                         WHERE due_ms IS NOT NULL AND lease_owner = $1",
                        &[&self.node],
                    )
                    .await
            }
        }
        .map_err(pg_error)?;
        match ids {
            Some(ids) => self.fences.drop_ids(ids),
            None => {
                self.fences.clear();
                client.execute("DELETE FROM nodes WHERE id = $1", &[&self.node]).await.map_err(pg_error)?;
            }
        }
        // What was handed back is due now: the other nodes take it at once rather than at
        // their next poll.
        client.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await.map_err(pg_error)?;
        Ok(())
    }

    /// Listens on the wake-up channels until `stop`: `wake` is notified when another node made
    /// work due, `settings` when one changed endpoints, tenants or tokens. A lost connection is
    /// re-established with a growing pause (0.2 s to 5 s); both are notified after each
    /// reconnect, since announcements may have been missed meanwhile.
    pub fn spawn_listener(
        &self,
        wake: Arc<Notify>,
        settings: Arc<Notify>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                let connected = listen_once(&config, &wake, &settings, &stop).await;
                if stop.is_cancelled() {
                    return;
                }
                if let Err(e) = connected {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "LISTEN connection lost");
                } else {
                    pause = Duration::from_millis(200);
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                wake.notify_one();
                settings.notify_one();
            }
        })
    }
}

/// One LISTEN connection's life: returns when it breaks (or at `stop`).
async fn listen_once(
    config: &tokio_postgres::Config,
    wake: &Notify,
    settings: &Notify,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(pg_error)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<bool>();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n.channel() == SETTINGS_CHANNEL).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let listening =
        client.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {SETTINGS_CHANNEL}")).await.map_err(pg_error);
    let result = match listening {
        Ok(()) => loop {
            tokio::select! {
                () = stop.cancelled() => break Ok(()),
                got = rx.recv() => match got {
                    Some(false) => wake.notify_one(),
                    Some(true) => settings.notify_one(),
                    None => break Err(StoreError::Storage("the LISTEN connection closed".into())),
                },
            }
        },
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

/// A scanned row's records, or what is wrong with them.
fn load(id: Uuid, delivery: Option<&[u8]>, event: Option<&[u8]>) -> Loaded {
    let Some(raw) = delivery else { return Loaded::NoDelivery };
    let delivery: DeliveryRecord = match serde_json::from_slice(raw) {
        Ok(d) => d,
        Err(e) => return Loaded::Unreadable(format!("delivery record {id}: {e}")),
    };
    let Some(raw) = event else { return Loaded::NoEvent(Box::new(delivery)) };
    match serde_json::from_slice::<EventRecord>(raw) {
        Ok(event) => Loaded::Ready(Box::new(delivery), Box::new(event)),
        Err(e) => {
            let message = format!("event record {}: {e}", delivery.event_id);
            Loaded::UnreadableEvent(Box::new(delivery), message)
        }
    }
}
