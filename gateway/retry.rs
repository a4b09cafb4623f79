//! Retry timing: when the next attempt of a failed delivery is due.
//!
//! Owns: the backoff formula, jitter and `Retry-After` parsing.
//! Must not touch: clocks, randomness or I/O. The current time and the jitter sample are
//! arguments, so the schedule is a pure function that property tests can pin down.

use std::time::{Duration, SystemTime};

/// The `[delivery]` retry settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; a delivery gets at most `1 + max_retries` attempts.
    pub max_retries: u32,
    pub initial: Duration,
    pub multiplier: f64,
    /// No computed delay, jittered delay or `Retry-After` wait exceeds this.
    pub max: Duration,
    /// Fraction of the delay added or removed at random, in `[0, 1)`.
    pub jitter: f64,
}

impl RetryPolicy {
    /// Whether a delivery that has made `attempts_made` attempts may make another.
    pub fn may_retry(&self, attempts_made: u32) -> bool {
        attempts_made <= self.max_retries
    }

    /// The delay before retry number `retry_index` (0 for the first retry):
    /// `initial × multiplier^retry_index`, jittered by `jitter_sample ∈ [-1, 1]`, capped at `max`.
    pub fn backoff(&self, retry_index: u32, jitter_sample: f64) -> Duration {
        let max = self.max.as_secs_f64();
        // Powers are computed in f64 and capped before use, so large indexes cannot overflow.
        let base = (self.initial.as_secs_f64() * self.multiplier.powi(retry_index as i32)).min(max);
        let sample = jitter_sample.clamp(-1.0, 1.0);
        let jittered = (base * (1.0 + self.jitter * sample)).clamp(0.0, max);
        Duration::from_secs_f64(jittered)
    }

    /// The delay before the next attempt, honouring a receiver's `Retry-After` (sent with 429 or
    /// 503): we wait at least as long as it asks, but never longer than `max`.
    pub fn next_delay(&self, retry_index: u32, retry_after: Option<Duration>, jitter_sample: f64) -> Duration {
        let computed = self.backoff(retry_index, jitter_sample);
        match retry_after {
            Some(asked) => computed.max(asked).min(self.max),
            None => computed,
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the
/// past means "now". Anything else is ignored, as if the header were absent.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            initial: Duration::from_secs(5),
            multiplier: 5.0,
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }

    #[test]
    fn defaults_give_5_25_125_seconds() {
        let p = policy();
        let got: Vec<u64> = (0..3).map(|i| p.backoff(i, 0.0).as_secs()).collect();
        assert_eq!(got, [5, 25, 125]);
        assert_eq!(p.backoff(10, 0.0), Duration::from_secs(3600));
        assert!(p.may_retry(3) && !p.may_retry(4));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_max() {
        let p = policy();
        let asked = Some(Duration::from_secs(600));
        assert_eq!(p.next_delay(0, asked, 0.0), Duration::from_secs(600));
        assert_eq!(p.next_delay(0, Some(Duration::from_secs(1)), 0.0), Duration::from_secs(5));
        let huge = Some(Duration::from_secs(86_400));
        assert_eq!(p.next_delay(0, huge, 0.0), Duration::from_secs(3600));
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_within_bounds(i in 0u32..60, s in -1.0f64..=1.0) {
            let p = policy();
            let base = (5.0 * 5f64.powi(i as i32)).min(3600.0);
            let d = p.backoff(i, s).as_secs_f64();
            prop_assert!(d <= 3600.0 + 1e-9);
            prop_assert!(d >= base * 0.8 - 1e-9);
            prop_assert!(d <= (base * 1.2).min(3600.0) + 1e-9);
        }

        #[test]
        fn delays_never_shrink_without_jitter(i in 0u32..60) {
            let p = policy();
            prop_assert!(p.backoff(i + 1, 0.0) >= p.backoff(i, 0.0));
        }
    }
}
