//! New rows as statement parameters: the events and deliveries of a batch, column by column,
//! for the one multi-row `INSERT` that writes them all.
//!
//! Owns: how a record becomes a row (the `keys` and `fifo_queue` columns) and the statement
//! that inserts new events and deliveries together.
//! Must not touch: transactions or the decision of what to write (`pg::write`).

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::ms;
use crate::model::{DeliveryRecord, DeliveryState, EventRecord};
use crate::store::rules::{index_keys, to_json};

/// Inserts new events (`$1..$3`) and their deliveries (`$4..$11`) in one statement: one round
/// trip for a whole batch, whatever its size.
pub(super) const INSERT_ROWS: &str = "WITH ev AS (
        INSERT INTO events (id, received_at_ms, record)
        SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[])
    )
    INSERT INTO deliveries (id, event_id, endpoint_id, state, keys, due_ms, fifo_queue, record)
    SELECT id, ev, ep, st, string_to_array(k, chr(31)), due, fq, rec
    FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[],
                $11::bytea[]) AS u(id, ev, ep, st, k, due, fq, rec)";

/// The parameters of [`INSERT_ROWS`].
pub(super) struct NewRows {
    event_ids: Vec<Uuid>,
    received: Vec<i64>,
    event_records: Vec<Vec<u8>>,
    ids: Vec<Uuid>,
    events: Vec<Uuid>,
    endpoints: Vec<String>,
    states: Vec<&'static str>,
    keys: Vec<String>,
    due: Vec<Option<i64>>,
    fifo: Vec<Option<String>>,
    records: Vec<Vec<u8>>,
}

impl NewRows {
    /// `deliveries` carries each delivery's due entry (`None`: waiting in its FIFO queue).
    pub(super) fn new(events: &[EventRecord], deliveries: &[(DeliveryRecord, Option<u64>)]) -> NewRows {
        NewRows {
            event_ids: events.iter().map(|e| e.id).collect(),
            received: events.iter().map(|e| ms(e.received_at_ms)).collect(),
            event_records: events.iter().map(to_json).collect(),
            ids: deliveries.iter().map(|(d, _)| d.id).collect(),
            events: deliveries.iter().map(|(d, _)| d.event_id).collect(),
            endpoints: deliveries.iter().map(|(d, _)| d.endpoint_id.clone()).collect(),
            states: deliveries.iter().map(|(d, _)| d.state.as_str()).collect(),
            keys: deliveries.iter().map(|(d, _)| filter_keys(d)).collect(),
            due: deliveries.iter().map(|(_, due)| due.map(ms)).collect(),
            fifo: deliveries.iter().map(|(d, _)| fifo_queue(d).map(str::to_owned)).collect(),
            records: deliveries.iter().map(|(d, _)| to_json(d)).collect(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.event_ids,
            &self.received,
            &self.event_records,
            &self.ids,
            &self.events,
            &self.endpoints,
            &self.states,
            &self.keys,
            &self.due,
            &self.fifo,
            &self.records,
        ]
    }
}

/// The `keys` column: every index key but the state and endpoint (which are columns), each as
/// [`pg_key`], joined with U+001F (which `pg_key` never leaves in a key).
pub(super) fn filter_keys(d: &DeliveryRecord) -> String {
    let mut keys = index_keys(d);
    keys.retain(|k| !k.starts_with("s:") && !k.starts_with("e:"));
    keys.iter().map(|k| pg_key(k)).collect::<Vec<_>>().join("\u{1f}")
}

/// The longest index key stored as itself; a longer one is stored as its hash (a GIN index
/// entry must fit in a third of a page, and a longer key filters nothing useful).
const MAX_PLAIN_KEY: usize = 512;

/// An index key as the `keys` column holds it, for writes and queries alike. A key that
/// PostgreSQL's `text` cannot hold (NUL), that would split into several keys (U+001F, from a
/// field *name*: values are canonical JSON, which escapes both) or that is too long for a GIN
/// entry is replaced by `#` and the hex SHA-256 of the key: no input can forge another key
/// (every other key starts with a letter and a colon), and no input can fail the batch it is
/// written with.
pub(super) fn pg_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_PLAIN_KEY && !key.contains(['\0', '\u{1f}']) {
        return std::borrow::Cow::Borrowed(key);
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(65);
    out.push('#');
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    std::borrow::Cow::Owned(out)
}

/// The `fifo_queue` column: the queue while the delivery is pending in it.
pub(super) fn fifo_queue(d: &DeliveryRecord) -> Option<&str> {
    (d.state == DeliveryState::Pending).then_some(d.fifo.as_deref()).flatten()
}
