//! Tests of `health`.

use super::*;

fn policy() -> Policy {
    Policy {
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(30),
        cooldown_max: Duration::from_secs(100),
        pause_max: Duration::from_secs(3),
        disable_after: Some(Duration::from_millis(1000)),
    }
}

/// A `Retry-After` longer than `backoff_max` pauses the endpoint for `backoff_max`, however
/// long the circuit's cooldown is; a shorter one for as long as asked.
#[test]
fn retry_after_pauses_at_most_backoff_max() {
    let book = HealthBook::new(policy(), vec![]);
    let limited = |secs: u64| Outcome {
        status_code: Some(429),
        error: Some(err(ErrorKind::Status)),
        response_body: String::new(),
        duration: Duration::ZERO,
        retry_after: Some(Duration::from_secs(secs)),
    };
    book.observe("a", &limited(60), 1_000);
    assert_eq!(book.allowance("a", 1_000), Allowance::WaitUntil(4_000));
    assert_eq!(book.begin_attempt("a", 3_999), None);
    assert_eq!(book.begin_attempt("a", 4_000), Some(false));
    book.observe("b", &limited(2), 1_000);
    assert_eq!(book.allowance("b", 1_000), Allowance::WaitUntil(3_000));
}

fn err(kind: ErrorKind) -> AttemptError {
    AttemptError { kind, message: "x".into() }
}

#[test]
fn verdicts_count_only_signs_of_a_down_receiver() {
    let o = |kind: Option<ErrorKind>, code: Option<u16>| Outcome {
        status_code: code,
        error: kind.map(err),
        response_body: String::new(),
        duration: Duration::ZERO,
        retry_after: None,
    };
    assert_eq!(verdict(&o(None, Some(200))), Verdict::Success);
    assert_eq!(verdict(&o(Some(ErrorKind::Timeout), None)), Verdict::Down);
    assert_eq!(verdict(&o(Some(ErrorKind::Connect), None)), Verdict::Down);
    assert_eq!(verdict(&o(Some(ErrorKind::Status), Some(503))), Verdict::Down);
    assert_eq!(verdict(&o(Some(ErrorKind::Status), Some(429))), Verdict::Down);
    assert_eq!(verdict(&o(Some(ErrorKind::Status), Some(404))), Verdict::Refused);
    assert_eq!(verdict(&o(Some(ErrorKind::Blocked), None)), Verdict::NotTried);
}

#[test]
fn the_circuit_opens_after_n_failures_probes_and_closes() {
    let p = Policy { disable_after: None, ..policy() };
    let mut h = EndpointHealth::default();
    let e = err(ErrorKind::Timeout);
    assert!(apply(&mut h, Verdict::Down, Some(&e), 0, &p).is_empty());
    assert!(apply(&mut h, Verdict::Down, Some(&e), 1, &p).is_empty());
    assert_eq!(apply(&mut h, Verdict::Down, Some(&e), 2, &p), [Transition::CircuitOpened]);
    assert_eq!((h.circuit, h.open_until_ms, h.consecutive_failures), (Circuit::Open, 30_002, 3));
    // A failed probe reopens for twice as long, then up to the cap, without announcing.
    h.circuit = Circuit::HalfOpen;
    assert!(apply(&mut h, Verdict::Down, Some(&e), 40_000, &p).is_empty());
    assert_eq!((h.circuit, h.open_until_ms), (Circuit::Open, 100_000));
    h.circuit = Circuit::HalfOpen;
    apply(&mut h, Verdict::Down, Some(&e), 200_000, &p);
    assert_eq!(h.open_until_ms, 300_000, "capped at cooldown_max");
    h.circuit = Circuit::HalfOpen;
    assert_eq!(apply(&mut h, Verdict::Success, None, 300_001, &p), [Transition::CircuitClosed]);
    assert_eq!((h.circuit, h.opens, h.consecutive_failures, h.failing_since_ms), (Circuit::Closed, 0, 0, None));
    // A 4xx neither opens the circuit nor counts towards it, but a probe answered closes it.
    for t in 0..10 {
        apply(&mut h, Verdict::Refused, Some(&err(ErrorKind::Status)), 400_000 + t, &p);
    }
    assert_eq!((h.circuit, h.consecutive_failures), (Circuit::Closed, 0));
}

#[test]
fn endpoints_failing_for_disable_after_are_disabled_once() {
    let p = policy();
    let mut h = EndpointHealth::default();
    let e = err(ErrorKind::Status);
    apply(&mut h, Verdict::Refused, Some(&e), 10, &p);
    assert!(apply(&mut h, Verdict::Refused, Some(&e), 1_009, &p).is_empty());
    assert_eq!(apply(&mut h, Verdict::Refused, Some(&e), 1_010, &p), [Transition::Disabled]);
    assert_eq!(h.disabled_at_ms, Some(1_010));
    assert!(apply(&mut h, Verdict::Refused, Some(&e), 2_000, &p).is_empty());
    // A success in between restarts the clock.
    let mut h = EndpointHealth::default();
    apply(&mut h, Verdict::Down, Some(&e), 0, &p);
    apply(&mut h, Verdict::Success, None, 500, &p);
    assert!(!apply(&mut h, Verdict::Down, Some(&e), 1_200, &p).contains(&Transition::Disabled));
    // Turned off.
    let off = Policy { disable_after: None, ..p };
    let mut h = EndpointHealth::default();
    apply(&mut h, Verdict::Refused, Some(&e), 0, &off);
    assert!(apply(&mut h, Verdict::Refused, Some(&e), u64::MAX / 2, &off).is_empty());
    // Enabling by hand starts afresh.
    let mut h = EndpointHealth {
        disabled_at_ms: Some(5),
        consecutive_failures: 9,
        circuit: Circuit::Open,
        ..Default::default()
    };
    assert_eq!(set_enabled(&mut h, true, 10), Some(Transition::Enabled));
    assert_eq!((h.disabled_at_ms, h.consecutive_failures, h.circuit), (None, 0, Circuit::Closed));
    assert_eq!(set_enabled(&mut h, true, 10), None);
    assert_eq!(set_enabled(&mut h, false, 11), Some(Transition::Disabled));
}

#[test]
fn buckets_allow_one_seconds_worth_then_the_rate() {
    let mut b = Bucket::new(RateLimit::parse("10/s").unwrap(), 0);
    for _ in 0..10 {
        assert!(b.take(0).is_ok());
    }
    let wait = b.take(0).unwrap_err();
    assert_eq!(wait, Duration::from_millis(100));
    assert!(b.take(100).is_ok());
    assert!(b.take(100).is_err());
    // Over any window, at most burst + rate * window.
    let mut b = Bucket::new(RateLimit::parse("50/s").unwrap(), 0);
    let taken = (0..10_000u64).filter(|ms| b.take(*ms / 5).is_ok()).count();
    assert!(taken <= 50 + 50 * 2, "{taken}");
    let mut b = Bucket::new(RateLimit::parse("6/m").unwrap(), 0);
    assert!(b.take(0).is_ok());
    assert_eq!(b.take(0).unwrap_err(), Duration::from_secs(10));
}

#[test]
fn the_book_lets_one_probe_through() {
    let book = HealthBook::new(policy(), vec![]);
    let down = Outcome {
        status_code: Some(503),
        error: Some(err(ErrorKind::Status)),
        response_body: String::new(),
        duration: Duration::ZERO,
        retry_after: None,
    };
    for t in 0..3 {
        assert_eq!(book.begin_attempt("a", t), Some(false));
        book.observe("a", &down, t);
    }
    assert_eq!(book.allowance("a", 10), Allowance::WaitUntil(30_002));
    assert_eq!(book.begin_attempt("a", 10), None);
    assert_eq!(book.allowance("a", 30_002), Allowance::Probe);
    assert_eq!(book.begin_attempt("a", 30_002), Some(true));
    assert_eq!(book.begin_attempt("a", 30_003), None, "one probe at a time");
    book.abandon_attempt("a");
    assert_eq!(book.begin_attempt("a", 30_004), Some(true));
    assert_eq!(book.allowance("b", 0), Allowance::Any, "other endpoints are unaffected");
    let ok = Outcome { status_code: Some(200), error: None, ..down };
    let (h, t) = book.observe("a", &ok, 30_005).unwrap();
    assert_eq!((h.circuit, t), (Circuit::Closed, vec![Transition::CircuitClosed]));
    assert_eq!(book.view("a", 30_005).attempts_last_hour, 4);
}

/// Every circuit and enabled change lands in the endpoint's history, with why, and the history
/// keeps the last `HEALTH_HISTORY` through a re-enable (which otherwise starts afresh).
#[test]
fn health_changes_are_remembered_with_their_reason() {
    let p = Policy { disable_after: None, ..policy() };
    let mut h = EndpointHealth::default();
    let e = err(ErrorKind::Timeout);
    for t in 0..3 {
        apply(&mut h, Verdict::Down, Some(&e), t, &p);
    }
    h.circuit = Circuit::HalfOpen;
    apply(&mut h, Verdict::Success, None, 40_000, &p);
    set_enabled(&mut h, false, 50_000);
    set_enabled(&mut h, true, 60_000);
    let seen: Vec<(u64, &str)> = h.history.iter().map(|c| (c.at_ms, c.change.as_str())).collect();
    assert_eq!(seen, [(2, "circuit_opened"), (40_000, "circuit_closed"), (50_000, "disabled"), (60_000, "enabled")]);
    assert!(h.history[0].detail.contains("3 failures in a row") && h.history[0].detail.contains("timeout"));
    assert_eq!(h.history[2].detail, "by hand");
    for t in 0..(2 * HEALTH_HISTORY as u64) {
        set_enabled(&mut h, t % 2 == 1, 100_000 + t);
    }
    assert_eq!(h.history.len(), HEALTH_HISTORY);
    assert_eq!(h.history.last().unwrap().at_ms, 100_000 + 2 * HEALTH_HISTORY as u64 - 1);
}
