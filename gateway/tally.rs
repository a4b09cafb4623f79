//! Delivery counts in time buckets, for the charts: what one bucket holds, how buckets are cut,
//! and the in-memory tally that the dispatcher adds to on every attempt.
//!
//! Owns: [`Counts`] (succeeded, failed, retried, attempts and a latency histogram, all of which
//! add up, so buckets of several nodes, endpoints or hours merge by addition), the two
//! [`Resolution`]s and what they keep, the scope names (`*`, `t:<tenant>`, `e:<endpoint>`),
//! the byte layout a bucket is stored in, and [`Tally`].
//! Must not touch: storage (the store writes and reads the rows `Tally::take` returns) or the
//! dispatcher's bookkeeping. Everything here is pure except the tally's mutex.
//!
//! The charts never scan the delivery log: the dispatcher adds each recorded attempt to the
//! tally (one map entry per endpoint and minute), a background pass hands what accumulated to
//! the store every second, and the store adds it to the minute and hour rows of the endpoint,
//! its tenant and the whole gateway. A crash loses at most that second of counts, never a
//! delivery.

use std::collections::HashMap;
use std::sync::Mutex;

/// Upper bounds (ms) of the latency histogram's slots; a last slot holds everything slower.
pub const LATENCY_BOUNDS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];
/// Slots of the latency histogram.
pub const SLOTS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// What one bucket counts. Every field adds up across buckets, nodes and scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Deliveries that reached `succeeded` in this bucket.
    pub succeeded: u64,
    /// Deliveries that reached `failed` (retries exhausted, a plugin failure, a failed requeue).
    pub failed: u64,
    /// Failed attempts after which another attempt was scheduled.
    pub retried: u64,
    /// Attempts made (each with its latency in `latency`).
    pub attempts: u64,
    /// Sum of the attempts' durations, for the mean.
    pub latency_ms_sum: u64,
    /// Attempts by duration: slot `i` holds those up to `LATENCY_BOUNDS_MS[i]`.
    pub latency: [u64; SLOTS],
}

/// One attempt's duration and whether it failed, and what the write that recorded it did to
/// its delivery: what [`Tally::add`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// `Some(duration_ms)` when an attempt was made.
    pub attempt_ms: Option<u64>,
    pub retried: bool,
    pub succeeded: bool,
    pub failed: bool,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.retried += other.retried;
        self.attempts += other.attempts;
        self.latency_ms_sum += other.latency_ms_sum;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
    }

    pub fn add_sample(&mut self, s: Sample) {
        self.succeeded += u64::from(s.succeeded);
        self.failed += u64::from(s.failed);
        self.retried += u64::from(s.retried);
        if let Some(ms) = s.attempt_ms {
            self.attempts += 1;
            self.latency_ms_sum += ms;
            self.latency[slot(ms)] += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }

    /// The `q` quantile (0 < q ≤ 1) of attempt latency in ms, estimated from the histogram by
    /// interpolating inside the slot that holds it; `None` without attempts. The last slot has
    /// no upper bound: a quantile there is reported as its lower bound.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let low = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] } as f64;
                let Some(&high) = LATENCY_BOUNDS_MS.get(i) else { return Some(low) };
                let within = (rank - below as f64) / n as f64;
                return Some(low + (high as f64 - low) * within);
            }
            below += n;
        }
        Some(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1] as f64)
    }

    /// The stored form: seventeen little-endian `u64`s (redb keeps it as a value; PostgreSQL
    /// has a column per field instead).
    pub fn to_bytes(&self) -> Vec<u8> {
        let head = [self.succeeded, self.failed, self.retried, self.attempts, self.latency_ms_sum];
        head.iter().chain(self.latency.iter()).flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Reads [`Counts::to_bytes`]; a value of another length (a newer layout) reads as empty
    /// rather than failing a chart.
    pub fn from_bytes(bytes: &[u8]) -> Counts {
        if bytes.len() != (5 + SLOTS) * 8 {
            return Counts::default();
        }
        let v: Vec<u64> = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        let mut latency = [0; SLOTS];
        latency.copy_from_slice(&v[5..]);
        Counts { succeeded: v[0], failed: v[1], retried: v[2], attempts: v[3], latency_ms_sum: v[4], latency }
    }
}

/// The histogram slot of a duration.
fn slot(ms: u64) -> usize {
    LATENCY_BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(SLOTS - 1)
}

/// How wide a bucket is, and how long buckets of that width are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// One bucket per minute, kept 24 hours.
    Minute,
    /// One bucket per hour, kept 30 days.
    Hour,
}

impl Resolution {
    pub const ALL: [Resolution; 2] = [Resolution::Minute, Resolution::Hour];

    pub fn bucket_ms(self) -> u64 {
        match self {
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
        }
    }

    pub fn keep_ms(self) -> u64 {
        match self {
            Resolution::Minute => 24 * 3_600_000,
            Resolution::Hour => 30 * 24 * 3_600_000,
        }
    }

    /// The start of the bucket holding `ms`.
    pub fn bucket_of(self, ms: u64) -> u64 {
        ms - ms % self.bucket_ms()
    }

    /// Buckets starting before this are due for removal at `now_ms`.
    pub fn cutoff(self, now_ms: u64) -> u64 {
        self.bucket_of(now_ms.saturating_sub(self.keep_ms()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
        }
    }

    /// The number PostgreSQL stores for it.
    pub fn code(self) -> i16 {
        match self {
            Resolution::Minute => 0,
            Resolution::Hour => 1,
        }
    }
}

/// The scope of the whole gateway.
pub const ALL_SCOPE: &str = "*";

/// The scope of one tenant's deliveries.
pub fn tenant_scope(tenant: &str) -> String {
    format!("t:{tenant}")
}

/// The scope of one endpoint's deliveries (its internal id, tenant prefix included).
pub fn endpoint_scope(internal_id: &str) -> String {
    format!("e:{internal_id}")
}

/// Counts to add to one stored bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub resolution: Resolution,
    pub scope: String,
    pub bucket_ms: u64,
    pub counts: Counts,
}

/// The most endpoints [`Tally::restore`] keeps counts of.
pub const MAX_HELD: usize = 10_000;

/// What this process counted since the last [`Tally::take`], by endpoint and minute.
#[derive(Debug, Default)]
pub struct Tally {
    /// By endpoint, then its minutes (one or two between takes).
    pending: Mutex<HashMap<String, Vec<(u64, Counts)>>>,
}

impl Tally {
    /// Counts one recorded pass of a delivery to `endpoint` (its internal id) at `now_ms`.
    pub fn add(&self, endpoint: &str, now_ms: u64, sample: Sample) {
        if sample == Sample::default() {
            return;
        }
        let minute = Resolution::Minute.bucket_of(now_ms);
        let mut pending = self.pending.lock().expect("tally lock");
        // Looked up by reference first: the endpoint's key is allocated once per take.
        let minutes = match pending.get_mut(endpoint) {
            Some(m) => m,
            None => pending.entry(endpoint.to_owned()).or_default(),
        };
        match minutes.iter_mut().find(|(m, _)| *m == minute) {
            Some((_, c)) => c.add_sample(sample),
            None => {
                let mut c = Counts::default();
                c.add_sample(sample);
                minutes.push((minute, c));
            }
        }
    }

    /// Everything counted so far as the rows to add to the store (each endpoint's minute, the
    /// hour holding it, and the same for its tenant and for the whole gateway), leaving the
    /// tally empty.
    pub fn take(&self) -> Vec<Row> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("tally lock"));
        let mut merged: HashMap<(Resolution, String, u64), Counts> = HashMap::new();
        for (endpoint, minutes) in pending {
            let (tenant, _) = crate::endpoint::split_id(&endpoint);
            let scopes = [endpoint_scope(&endpoint), tenant_scope(tenant), ALL_SCOPE.to_owned()];
            for ((minute, counts), res) in minutes.iter().flat_map(|m| Resolution::ALL.map(|r| (m, r))) {
                for scope in &scopes {
                    merged.entry((res, scope.clone(), res.bucket_of(*minute))).or_default().add(counts);
                }
            }
        }
        let mut rows: Vec<Row> = merged
            .into_iter()
            .map(|((resolution, scope, bucket_ms), counts)| Row { resolution, scope, bucket_ms, counts })
            .collect();
        // A stable order: writers of several nodes then take row locks in the same order.
        rows.sort_by(|a, b| {
            (a.resolution.code(), &a.scope, a.bucket_ms).cmp(&(b.resolution.code(), &b.scope, b.bucket_ms))
        });
        rows
    }

    /// Puts rows that could not be stored back, so that a store that refused a write loses no
    /// counts (the minute rows carry everything; hour rows are rebuilt from them). While the
    /// tally holds more than [`MAX_HELD`] endpoints, rows are dropped instead: a store that
    /// stays broken must not grow memory.
    pub fn restore(&self, rows: Vec<Row>) {
        let mut pending = self.pending.lock().expect("tally lock");
        for row in rows {
            if pending.len() >= MAX_HELD {
                return;
            }
            if row.resolution != Resolution::Minute {
                continue;
            }
            if let Some(endpoint) = row.scope.strip_prefix("e:") {
                let minutes = pending.entry(endpoint.to_owned()).or_default();
                match minutes.iter_mut().find(|(m, _)| *m == row.bucket_ms) {
                    Some((_, c)) => c.add(&row.counts),
                    None => minutes.push((row.bucket_ms, row.counts)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(ms: u64) -> Sample {
        Sample { attempt_ms: Some(ms), ..Sample::default() }
    }

    #[test]
    fn counts_round_trip_and_merge() {
        let mut a = Counts::default();
        a.add_sample(Sample { attempt_ms: Some(30), succeeded: true, ..Sample::default() });
        a.add_sample(Sample { attempt_ms: Some(20_000), retried: true, ..Sample::default() });
        a.add_sample(Sample { failed: true, ..Sample::default() });
        assert_eq!((a.succeeded, a.failed, a.retried, a.attempts, a.latency_ms_sum), (1, 1, 1, 2, 20_030));
        assert_eq!(a.latency[3], 1, "30 ms is in the (25, 50] slot");
        assert_eq!(a.latency[SLOTS - 1], 1, "20 s is in the last slot");
        assert_eq!(Counts::from_bytes(&a.to_bytes()), a);
        assert_eq!(Counts::from_bytes(b"short"), Counts::default());
        let mut b = a;
        b.add(&a);
        assert_eq!(b.attempts, 4);
        assert_eq!(b.latency[3], 2);
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut c = Counts::default();
        assert_eq!(c.latency_quantile(0.5), None);
        for _ in 0..90 {
            c.add_sample(attempt(8)); // (5, 10]
        }
        for _ in 0..10 {
            c.add_sample(attempt(400)); // (250, 500]
        }
        let p50 = c.latency_quantile(0.5).unwrap();
        assert!((5.0..=10.0).contains(&p50), "p50 {p50}");
        let p95 = c.latency_quantile(0.95).unwrap();
        assert!((250.0..=500.0).contains(&p95), "p95 {p95}");
        assert!(c.latency_quantile(0.99).unwrap() > p95);
    }

    #[test]
    fn buckets_are_cut_and_kept_by_resolution() {
        let t = 1_700_000_123_456;
        assert_eq!(Resolution::Minute.bucket_of(t) % 60_000, 0);
        assert!(Resolution::Minute.bucket_of(t) <= t && t - Resolution::Minute.bucket_of(t) < 60_000);
        assert_eq!(Resolution::Hour.bucket_of(t) % 3_600_000, 0);
        assert!(Resolution::Minute.cutoff(t) <= t - 24 * 3_600_000);
        assert!(Resolution::Hour.cutoff(t) > t - 31 * 24 * 3_600_000);
    }

    #[test]
    fn the_tally_spreads_to_every_scope_and_empties() {
        let tally = Tally::default();
        let t = 3_600_000 * 1000 + 5;
        tally.add("acme/hook", t, Sample { attempt_ms: Some(12), succeeded: true, ..Sample::default() });
        tally.add("acme/hook", t + 1, Sample { attempt_ms: Some(12), retried: true, ..Sample::default() });
        tally.add("plain", t + 61_000, Sample { failed: true, ..Sample::default() });
        tally.add("plain", t, Sample::default());
        let rows = tally.take();
        let find = |res, scope: &str, bucket| {
            rows.iter().find(|r| r.resolution == res && r.scope == scope && r.bucket_ms == bucket).map(|r| r.counts)
        };
        let hook = find(Resolution::Minute, "e:acme/hook", t - 5).unwrap();
        assert_eq!((hook.succeeded, hook.retried, hook.attempts), (1, 1, 2));
        assert_eq!(find(Resolution::Minute, "t:acme", t - 5).unwrap(), hook);
        assert_eq!(find(Resolution::Minute, "t:default", t - 5 + 60_000).unwrap().failed, 1);
        let all_hour = find(Resolution::Hour, "*", t - 5).unwrap();
        assert_eq!((all_hour.succeeded, all_hour.failed, all_hour.attempts), (1, 1, 2));
        // 2 minutes' endpoint and tenant rows, 1 minute of the whole each, then the hours.
        assert_eq!(rows.iter().filter(|r| r.resolution == Resolution::Minute).count(), 6);
        assert_eq!(rows.iter().filter(|r| r.resolution == Resolution::Hour).count(), 5);
        assert!(tally.take().is_empty());
        // Counts a store refused come back whole, hours included.
        tally.restore(rows.clone());
        let mut again = tally.take();
        let mut before = rows.clone();
        again.sort_by(|a, b| {
            (&a.scope, a.bucket_ms, a.resolution.code()).cmp(&(&b.scope, b.bucket_ms, b.resolution.code()))
        });
        before.sort_by(|a, b| {
            (&a.scope, a.bucket_ms, a.resolution.code()).cmp(&(&b.scope, b.bucket_ms, b.resolution.code()))
        });
        assert_eq!(again, before);
    }
}
