//! Exponential backoff with full jitter: before attempt n (n = 1 after the
//! first failure) wait a random time in [0, min(max, initial * 2^(n-1))]
//! (the doubling stops at 2^30). Drawing the whole wait at random keeps
//! clients that failed together from all coming back at the same instant.

use std::time::Duration;

/// Reconnect delays for one peer: [`fail`](Backoff::fail) after each failed
/// attempt, [`reset`](Backoff::reset) once a connection has done its job.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// The first wait is at most `initial`, each further one at most twice the
    /// last, never above `max` (taken as `initial` if it is smaller).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The ceiling, without jitter, of the wait the last [`fail`](Backoff::fail)
    /// drew (before any failure: of the first wait).
    pub fn ceiling(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1 << exp).min(self.max)
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling().as_secs_f64();
        Duration::from_secs_f64(rand::random_range(0.0..=ceiling))
    }

    /// Forgets the failures: the next wait is at most `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_below_it() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let wait = b.fail();
            ceilings.push(b.ceiling().as_millis());
            assert!(wait <= b.ceiling(), "{wait:?} above {:?}", b.ceiling());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.failures(), 0);
        // Jitter: 50 draws below a 1 s ceiling are not all the same.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let draws: std::collections::HashSet<_> = (0..50).map(|_| b.fail()).collect();
        assert!(draws.len() > 1);
    }
}
