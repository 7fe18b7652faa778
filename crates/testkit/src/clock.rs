//! The clock seam for tests: a [`Clock`] answers `now_ms()` as the milliseconds since the Unix epoch, the `i64`
//! the pure cores already take (`Log::apply_retention(now_ms)`, the group coordinator's `poll(now_ms)`,
//! `FetchSessionCache` calls), so a test reads time from a [`ManualClock`] it moves by hand and passes it in,
//! instead of sleeping or computing offsets from the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A source of the current time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        wall_clock_ms()
    }
}

/// The wall clock's milliseconds since the Unix epoch (what brokers stamp and compare timestamps with).
pub fn wall_clock_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is after 1970");
    i64::try_from(since_epoch.as_millis()).expect("milliseconds fit in i64")
}

/// A clock that moves only when told to. Clones share the same time, so a test can hand one to the code under
/// test and advance it from outside. Time never moves backwards.
///
/// ```
/// use sluice_testkit::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// let seen_by_code = clock.clone();
/// clock.advance_ms(250);
/// assert_eq!(seen_by_code.now_ms(), 1_250);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicI64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `by_ms` milliseconds and returns the new time.
    pub fn advance_ms(&self, by_ms: i64) -> i64 {
        assert!(by_ms >= 0, "a clock never moves backwards (by {by_ms} ms)");
        self.now_ms.fetch_add(by_ms, Ordering::SeqCst) + by_ms
    }

    /// Moves the clock forward by `by` and returns the new time.
    pub fn advance(&self, by: Duration) -> i64 {
        self.advance_ms(i64::try_from(by.as_millis()).expect("duration fits in i64 ms"))
    }

    /// Sets the clock to `to_ms`, which must not be before the current time.
    pub fn set_ms(&self, to_ms: i64) {
        let before = self.now_ms.swap(to_ms, Ordering::SeqCst);
        assert!(
            to_ms >= before,
            "a clock never moves backwards ({before} -> {to_ms})"
        );
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualClock::new(1_700_000_000_000);
        let shared = clock.clone();
        assert_eq!(shared.now_ms(), 1_700_000_000_000);
        assert_eq!(clock.advance_ms(500), 1_700_000_000_500);
        assert_eq!(clock.advance(Duration::from_secs(2)), 1_700_000_002_500);
        assert_eq!(shared.now_ms(), 1_700_000_002_500);
        clock.set_ms(1_700_000_010_000);
        assert_eq!(shared.now_ms(), 1_700_000_010_000);
        assert_eq!(ManualClock::default().now_ms(), 0);
    }

    #[test]
    #[should_panic(expected = "never moves backwards")]
    fn manual_clock_refuses_to_go_back() {
        ManualClock::new(10).set_ms(9);
    }

    #[test]
    fn a_clock_is_usable_as_a_trait_object() {
        let clocks: Vec<Box<dyn Clock>> =
            vec![Box::new(ManualClock::new(5)), Box::new(SystemClock)];
        assert_eq!(clocks[0].now_ms(), 5);
        assert!(clocks[1].now_ms() > 1_600_000_000_000);
    }
}
