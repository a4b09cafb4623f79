//! Endpoint health: the circuit breaker, auto-disable, rate limits and `Retry-After` pauses.
//!
//! Owns: the per-endpoint state machine ([`EndpointHealth`] in `model`, changed only by the
//! pure functions here), the in-memory [`HealthBook`] the scheduler asks before each attempt,
//! the token buckets of `rate_limit` and the success rate of the last hour.
//! Must not touch: storage, HTTP or the scheduler's claims. The book returns the snapshots to
//! persist and the transitions to announce; `dispatch` writes them with the attempt that caused
//! them (one transaction), and `api` with a PATCH.
//!
//! The circuit, per endpoint:
//!
//! ```text
//! closed ──breaker_failures in a row──▶ open ──cooldown over──▶ half_open (one probe)
//!   ▲                                    ▲                          │ failure: open again,
//!   └──────────── probe succeeds ────────┼──────────────────────────┘ cooldown doubled
//! ```
//!
//! Only failures that say the receiver is down count: timeouts, connect and request errors,
//! 5xx and 429. Another 4xx means it is up and answering (a probe answered so closes the
//! circuit), but the attempt still failed, so it keeps an auto-disable clock running: an
//! endpoint whose attempts have *all* failed for `disable_after` is disabled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::deliver::Outcome;
use crate::endpoint::RateLimit;
use crate::model::{AttemptError, Circuit, EndpointHealth, ErrorKind, HEALTH_HISTORY, HealthChange};

/// What the breaker and auto-disable are configured to do.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// The longest open period (`delivery.backoff_max`, or the cooldown if that is longer).
    pub cooldown_max: Duration,
    /// The longest `Retry-After` pause (`delivery.backoff_max`).
    pub pause_max: Duration,
    pub disable_after: Option<Duration>,
}

impl Policy {
    pub fn from_config(d: &crate::config::DeliveryConfig) -> Policy {
        Policy {
            breaker_failures: d.breaker_failures,
            breaker_cooldown: d.breaker_cooldown,
            cooldown_max: d.retry.max,
            pause_max: d.retry.max,
            disable_after: d.disable_after,
        }
    }
}

/// What an attempt says about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// The receiver looks down: timeout, connect or request error, 5xx, 429.
    Down,
    /// The receiver answered but refused (another 4xx or 3xx).
    Refused,
    /// No request reached the endpoint (a blocked address, an endpoint that is gone).
    NotTried,
}

pub fn verdict(outcome: &Outcome) -> Verdict {
    let Some(error) = &outcome.error else {
        return Verdict::Success;
    };
    match error.kind {
        ErrorKind::Timeout | ErrorKind::Connect | ErrorKind::Request => Verdict::Down,
        ErrorKind::Status => match outcome.status_code {
            Some(code) if code >= 500 || code == 429 => Verdict::Down,
            _ => Verdict::Refused,
        },
        _ => Verdict::NotTried,
    }
}

/// A change worth announcing (an operational webhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    CircuitOpened,
    CircuitClosed,
    Disabled,
    Enabled,
}

impl Transition {
    /// The name in an endpoint's history (the trigger without its `endpoint.` prefix).
    pub fn name(self) -> &'static str {
        &self.trigger()["endpoint.".len()..]
    }

    pub fn trigger(self) -> &'static str {
        match self {
            Transition::CircuitOpened => "endpoint.circuit_opened",
            Transition::CircuitClosed => "endpoint.circuit_closed",
            Transition::Disabled => "endpoint.disabled",
            Transition::Enabled => "endpoint.enabled",
        }
    }
}

/// How long the circuit stays open after its `opens`-th opening (1 for the first).
pub fn open_period(policy: &Policy, opens: u32) -> Duration {
    let factor = 2u32.saturating_pow(opens.saturating_sub(1).min(20));
    policy.breaker_cooldown.saturating_mul(factor).min(policy.cooldown_max.max(policy.breaker_cooldown))
}

/// Applies one attempt's verdict at `now_ms`. Pure: returns the transitions it caused.
pub fn apply(
    h: &mut EndpointHealth,
    v: Verdict,
    error: Option<&AttemptError>,
    now_ms: u64,
    p: &Policy,
) -> Vec<Transition> {
    let mut out = Vec::new();
    match v {
        Verdict::NotTried => return out,
        Verdict::Success => {
            h.consecutive_failures = 0;
            h.failing_since_ms = None;
            h.last_success_at_ms = Some(now_ms);
            if h.circuit != Circuit::Closed {
                h.circuit = Circuit::Closed;
                h.opens = 0;
                out.push(Transition::CircuitClosed);
            }
        }
        Verdict::Down | Verdict::Refused => {
            h.last_failure_at_ms = Some(now_ms);
            h.last_error = error.cloned();
            h.failing_since_ms.get_or_insert(now_ms);
            if v == Verdict::Down {
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                let open = match h.circuit {
                    // A failed probe: open again, for longer. Not announced again.
                    Circuit::HalfOpen => true,
                    Circuit::Closed if h.consecutive_failures >= p.breaker_failures => {
                        out.push(Transition::CircuitOpened);
                        true
                    }
                    _ => false,
                };
                if open {
                    h.opens = h.opens.saturating_add(1);
                    h.circuit = Circuit::Open;
                    h.open_until_ms = now_ms + open_period(p, h.opens).as_millis() as u64;
                }
            } else if h.circuit == Circuit::HalfOpen {
                // The probe was answered: the receiver is up, this request was refused.
                h.circuit = Circuit::Closed;
                h.opens = 0;
                h.consecutive_failures = 0;
                out.push(Transition::CircuitClosed);
            }
            if let (Some(after), Some(since), None) = (p.disable_after, h.failing_since_ms, h.disabled_at_ms)
                && now_ms.saturating_sub(since) >= after.as_millis() as u64
            {
                h.disabled_at_ms = Some(now_ms);
                out.push(Transition::Disabled);
            }
        }
    }
    for &t in &out {
        let detail = match (t, error) {
            (Transition::CircuitClosed, _) => "an attempt was answered".to_owned(),
            (Transition::Disabled, _) => {
                format!("every attempt failed for {} s", p.disable_after.map_or(0, |d| d.as_secs()))
            }
            (_, Some(e)) => format!("{} failures in a row, the last: {}", h.consecutive_failures, e.kind.as_str()),
            (_, None) => format!("{} failures in a row", h.consecutive_failures),
        };
        remember(h, t, now_ms, detail);
    }
    h.version += 1;
    out
}

/// Appends a change to the endpoint's history, keeping the last [`HEALTH_HISTORY`].
fn remember(h: &mut EndpointHealth, t: Transition, now_ms: u64, detail: String) {
    if h.history.len() >= HEALTH_HISTORY {
        h.history.remove(0);
    }
    h.history.push(HealthChange { at_ms: now_ms, change: t.name().to_owned(), detail });
}

/// Enables or disables an endpoint by hand. Enabling starts afresh: circuit closed, no failures.
pub fn set_enabled(h: &mut EndpointHealth, enabled: bool, now_ms: u64) -> Option<Transition> {
    match (enabled, h.disabled_at_ms) {
        (true, Some(_)) => {
            let id = std::mem::take(&mut h.endpoint_id);
            let version = h.version;
            *h = EndpointHealth {
                endpoint_id: id,
                version: version + 1,
                last_success_at_ms: h.last_success_at_ms,
                history: std::mem::take(&mut h.history),
                ..Default::default()
            };
            remember(h, Transition::Enabled, now_ms, "by hand".into());
            Some(Transition::Enabled)
        }
        (false, None) => {
            h.disabled_at_ms = Some(now_ms);
            h.version += 1;
            remember(h, Transition::Disabled, now_ms, "by hand".into());
            Some(Transition::Disabled)
        }
        _ => None,
    }
}

/// What the scheduler may do with an endpoint right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Attempts as the slots allow.
    Any,
    /// One probe (half-open circuit), if none is in flight.
    Probe,
    /// Nothing before this time (open circuit, or a `Retry-After` pause).
    WaitUntil(u64),
    /// Disabled: its due deliveries are settled, not attempted.
    Disabled,
}

/// A token bucket: at most `burst` at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    pub fn new(limit: RateLimit, now_ms: u64) -> Bucket {
        Bucket { limit, tokens: limit.burst(), last_ms: now_ms }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now_ms: u64) -> Result<(), Duration> {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.limit.per_second()).min(self.limit.burst());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / self.limit.per_second()).max(Duration::from_millis(1)))
        }
    }
}

/// Attempts and successes per minute over the last hour, for the dashboard's success rate.
#[derive(Debug, Clone, Default)]
struct HourWindow {
    /// (minute number, attempts, successes), at most 60 entries, oldest first.
    minutes: std::collections::VecDeque<(u64, u32, u32)>,
}

impl HourWindow {
    fn add(&mut self, now_ms: u64, success: bool) {
        let minute = now_ms / 60_000;
        match self.minutes.back_mut() {
            Some((m, a, s)) if *m == minute => {
                *a += 1;
                *s += u32::from(success);
            }
            _ => self.minutes.push_back((minute, 1, u32::from(success))),
        }
        while self.minutes.front().is_some_and(|(m, _, _)| *m + 60 <= minute) {
            self.minutes.pop_front();
        }
    }

    fn totals(&self, now_ms: u64) -> (u32, u32) {
        let minute = now_ms / 60_000;
        self.minutes.iter().filter(|(m, _, _)| *m + 60 > minute).fold((0, 0), |(a, s), (_, x, y)| (a + x, s + y))
    }
}

/// The least time between two changes of an endpoint's `enabled` by a tenant's token (the
/// admin is not limited). Each change is a write and an operational event: a tenant's token
/// flipping it in a loop must not turn into a flood of either.
pub const MANUAL_CHANGE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Entry {
    health: EndpointHealth,
    /// When `enabled` was last changed by hand.
    manual_change_at_ms: Option<u64>,
    probe_in_flight: bool,
    paused_until_ms: u64,
    bucket: Option<Bucket>,
    hour: HourWindow,
}

/// The endpoints' health, in memory, shared by dispatch (which changes it), ingest (which skips
/// disabled endpoints) and the API. Loaded from the store at start. A std mutex: held for a few
/// map operations, never across an `.await`.
pub struct HealthBook {
    /// Swapped by a config reload; read (copied) under the entries' lock.
    policy: Mutex<Policy>,
    entries: Mutex<HashMap<String, Entry>>,
}

/// What an API read shows of an endpoint's health.
#[derive(Debug, Clone)]
pub struct HealthView {
    pub health: EndpointHealth,
    pub attempts_last_hour: u32,
    pub successes_last_hour: u32,
    pub paused_until_ms: Option<u64>,
}

impl HealthBook {
    pub fn new(policy: Policy, stored: Vec<EndpointHealth>) -> HealthBook {
        let entries = stored
            .into_iter()
            .map(|mut h| {
                // A probe in flight at a crash is lost: the next one may start.
                if h.circuit == Circuit::HalfOpen {
                    h.circuit = Circuit::Open;
                }
                (h.endpoint_id.clone(), Entry { health: h, ..Entry::default() })
            })
            .collect();
        HealthBook { policy: Mutex::new(policy), entries: Mutex::new(entries) }
    }

    fn with<T>(&self, endpoint: &str, f: impl FnOnce(&mut Entry, &Policy) -> T) -> T {
        let mut entries = self.entries.lock().expect("health lock");
        let entry = entries.entry(endpoint.to_owned()).or_insert_with(|| Entry {
            health: EndpointHealth { endpoint_id: endpoint.to_owned(), ..EndpointHealth::default() },
            ..Entry::default()
        });
        let policy = *self.policy.lock().expect("health policy lock");
        f(entry, &policy)
    }

    /// Takes the endpoint's one change of `enabled` by hand per [`MANUAL_CHANGE_INTERVAL`], or
    /// says how long until the next is allowed.
    pub fn take_manual_change(&self, endpoint: &str, now_ms: u64) -> Result<(), Duration> {
        self.with(endpoint, |e, _| {
            let next = e.manual_change_at_ms.map_or(0, |at| at + MANUAL_CHANGE_INTERVAL.as_millis() as u64);
            if now_ms < next {
                return Err(Duration::from_millis(next - now_ms));
            }
            e.manual_change_at_ms = Some(now_ms);
            Ok(())
        })
    }

    /// Drops what is kept of a deleted endpoint (its stored health goes with it in the store).
    pub fn forget(&self, endpoint: &str) {
        self.entries.lock().expect("health lock").remove(endpoint);
    }

    /// How many endpoints the book holds (for tests of `forget`).
    pub fn held(&self) -> usize {
        self.entries.lock().expect("health lock").len()
    }

    /// The breaker and auto-disable settings of a reloaded config, for the next attempts.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.lock().expect("health policy lock") = policy;
    }

    pub fn is_enabled(&self, endpoint: &str) -> bool {
        let entries = self.entries.lock().expect("health lock");
        entries.get(endpoint).is_none_or(|e| e.health.disabled_at_ms.is_none())
    }

    /// What the scheduler may start for this endpoint now (no side effects).
    pub fn allowance(&self, endpoint: &str, now_ms: u64) -> Allowance {
        let entries = self.entries.lock().expect("health lock");
        let Some(e) = entries.get(endpoint) else {
            return Allowance::Any;
        };
        if e.health.disabled_at_ms.is_some() {
            return Allowance::Disabled;
        }
        if now_ms < e.paused_until_ms {
            return Allowance::WaitUntil(e.paused_until_ms);
        }
        match e.health.circuit {
            Circuit::Closed => Allowance::Any,
            Circuit::Open if now_ms < e.health.open_until_ms => Allowance::WaitUntil(e.health.open_until_ms),
            Circuit::Open | Circuit::HalfOpen if e.probe_in_flight => Allowance::WaitUntil(u64::MAX),
            Circuit::Open | Circuit::HalfOpen => Allowance::Probe,
        }
    }

    /// Asked by a claimed pass just before it prepares its attempt: `None` if it may not go
    /// now, `Some(true)` if it goes as the circuit's probe (the circuit turns half-open),
    /// `Some(false)` for an ordinary attempt.
    pub fn begin_attempt(&self, endpoint: &str, now_ms: u64) -> Option<bool> {
        self.with(endpoint, |e, _| {
            if e.health.disabled_at_ms.is_some() {
                return Some(false);
            }
            if now_ms < e.paused_until_ms {
                return None;
            }
            match e.health.circuit {
                Circuit::Closed => Some(false),
                Circuit::Open if now_ms < e.health.open_until_ms => None,
                _ if e.probe_in_flight => None,
                _ => {
                    e.health.circuit = Circuit::HalfOpen;
                    e.probe_in_flight = true;
                    Some(true)
                }
            }
        })
    }

    /// A pass that began but sent nothing (a plugin settled it): the probe slot is free again.
    pub fn abandon_attempt(&self, endpoint: &str) {
        self.with(endpoint, |e, _| e.probe_in_flight = false);
    }

    /// Records an attempt's outcome. Returns the snapshot to persist and what changed, or
    /// `None` when the attempt says nothing about the endpoint.
    pub fn observe(&self, endpoint: &str, outcome: &Outcome, now_ms: u64) -> Option<(EndpointHealth, Vec<Transition>)> {
        let v = verdict(outcome);
        self.with(endpoint, |e, p| {
            e.probe_in_flight = false;
            if let (Some(429), Some(wait)) = (outcome.status_code, outcome.retry_after) {
                // The receiver asked for a pause: the whole endpoint waits, not just this one,
                // for as long as asked, up to `backoff_max`, like every retry wait (a receiver
                // cannot park an endpoint for a year, nor longer than the operator allows).
                let wait = wait.min(p.pause_max);
                e.paused_until_ms = e.paused_until_ms.max(now_ms + wait.as_millis() as u64);
            }
            if v == Verdict::NotTried {
                return None;
            }
            e.hour.add(now_ms, v == Verdict::Success);
            let changes = apply(&mut e.health, v, outcome.error.as_ref(), now_ms, p);
            Some((e.health.clone(), changes))
        })
    }

    /// Enables or disables by hand; returns the snapshot to persist and the transition, if the
    /// state changed.
    pub fn set_enabled(&self, endpoint: &str, enabled: bool, now_ms: u64) -> Option<(EndpointHealth, Transition)> {
        self.with(endpoint, |e, _| {
            let t = set_enabled(&mut e.health, enabled, now_ms)?;
            if enabled {
                e.paused_until_ms = 0;
                e.probe_in_flight = false;
            }
            Some((e.health.clone(), t))
        })
    }

    /// Waits for a token of the endpoint's rate limit (none: returns at once).
    pub fn rate_wait(&self, endpoint: &str, limit: Option<RateLimit>, now_ms: u64) -> Result<(), Duration> {
        let Some(limit) = limit else { return Ok(()) };
        self.with(endpoint, |e, _| {
            let bucket = match &mut e.bucket {
                Some(b) if b.limit == limit => b,
                slot => slot.insert(Bucket::new(limit, now_ms)),
            };
            bucket.take(now_ms)
        })
    }

    /// The earliest future time at which some endpoint's allowance changes.
    pub fn next_change(&self, now_ms: u64) -> Option<u64> {
        let entries = self.entries.lock().expect("health lock");
        entries
            .values()
            .flat_map(|e| {
                let open = (e.health.circuit == Circuit::Open).then_some(e.health.open_until_ms);
                [open, Some(e.paused_until_ms)]
            })
            .flatten()
            .filter(|&t| t > now_ms)
            .min()
    }

    /// (endpoints whose circuit is not closed, disabled endpoints), for `/metrics`.
    pub fn counts(&self) -> (u64, u64) {
        let entries = self.entries.lock().expect("health lock");
        entries.values().fold((0, 0), |(open, disabled), e| {
            (
                open + u64::from(e.health.circuit != Circuit::Closed),
                disabled + u64::from(e.health.disabled_at_ms.is_some()),
            )
        })
    }

    pub fn view(&self, endpoint: &str, now_ms: u64) -> HealthView {
        self.with(endpoint, |e, _| {
            let (attempts, successes) = e.hour.totals(now_ms);
            HealthView {
                health: e.health.clone(),
                attempts_last_hour: attempts,
                successes_last_hour: successes,
                paused_until_ms: (e.paused_until_ms > now_ms).then_some(e.paused_until_ms),
            }
        })
    }
}

#[cfg(test)]
mod tests;
