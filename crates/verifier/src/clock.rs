//! Time, injected: validity windows are checked against a [`Clock`] so tests can stand at
//! any instant without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current unix time in seconds.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the unix epoch.
    fn now_unix_s(&self) -> u64;

    /// Milliseconds since the unix epoch (records that order events within a second, such as
    /// the audit trail). A clock that only knows seconds reads the start of its second.
    fn now_unix_ms(&self) -> u64 {
        self.now_unix_s().saturating_mul(1000)
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_s(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    fn now_unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that stands still until told otherwise (milliseconds inside, so that records
/// kept to the millisecond can be tested).
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    /// A clock reading `now_unix_s`.
    pub fn new(now_unix_s: u64) -> Self {
        FixedClock(AtomicU64::new(now_unix_s.saturating_mul(1000)))
    }
    /// Moves the clock to `now_unix_s`.
    pub fn set(&self, now_unix_s: u64) {
        self.0.store(now_unix_s.saturating_mul(1000), Ordering::SeqCst);
    }
    /// Moves the clock to `now_unix_ms`.
    pub fn set_ms(&self, now_unix_ms: u64) {
        self.0.store(now_unix_ms, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_unix_s(&self) -> u64 {
        self.0.load(Ordering::SeqCst) / 1000
    }

    fn now_unix_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
