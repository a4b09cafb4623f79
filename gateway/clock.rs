//! The clock that stamps and schedules deliveries, injected so tests can move time.
//!
//! Owns: what "now" means for ingest (creation and first due times) and dispatch (which
//! deliveries are due, when the next retry is). Production uses the system clock; tests pass a
//! [`ManualClock`] to `run_with` and move it forward instead of sleeping through backoffs.
//! Must not touch: timers. Sleeping stays with tokio; a test that moves a manual clock wakes
//! the dispatcher (`Hooks::wake`) so it looks at the due index again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::model::now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// Starts at the system's current time, so stored timestamps look real.
    pub fn starting_now() -> Arc<ManualClock> {
        Arc::new(ManualClock { ms: AtomicU64::new(crate::model::now_ms()) })
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// The shared handle stages hold.
pub type SharedClock = Arc<dyn Clock>;

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}
