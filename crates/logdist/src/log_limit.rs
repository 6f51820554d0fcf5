//! Warn once, then count: what keeps a peer that misbehaves over and over
//! (a scanner, a flood of stalled connections) from flooding the log. Each
//! kind of event gets a [`LogLimit`]; the first event in [`LOG_EVERY`] is
//! logged at warn level with how many were held back since the last such
//! line, the others only at debug level.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one warning per kind of event this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The base of every limiter's clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The warn-level budget of one kind of event.
#[derive(Default)]
pub struct LogLimit {
    /// Milliseconds since [`EPOCH`] before which events are not logged at warn.
    quiet_until: AtomicU64,
    /// Events logged at debug only since the last warning.
    suppressed: AtomicU64,
}

impl LogLimit {
    /// `Some(held_back)` when this event may be logged at warn level (with
    /// how many were held back since the last warning), `None` when it is
    /// only to be logged at debug level.
    pub fn warn(&self) -> Option<u64> {
        let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
        let quiet_until = self.quiet_until.load(Ordering::Relaxed);
        let open = now >= quiet_until
            && self
                .quiet_until
                .compare_exchange(
                    quiet_until,
                    now.saturating_add(LOG_EVERY.as_millis() as u64),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if open {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Events held back (debug only) since the last warning.
    pub fn held_back(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_a_warning_the_rest_are_held_back() {
        let limit = LogLimit::default();
        assert_eq!(limit.warn(), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.warn(), None);
        }
        assert_eq!(limit.held_back(), 5);
    }
}
