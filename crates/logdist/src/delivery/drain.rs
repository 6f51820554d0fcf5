//! What draining sessions watch at shutdown besides their own queues:
//! messages handed back by a failed connection and not yet placed again
//! ([`Redelivery`](super::redelivery::Redelivery) counts them here), and the
//! end of other sessions, which may hand messages back.
//!
//! A session that finished its own work stays while any of that may still
//! come its way, so rerouted messages reach a connected analyzer instead of
//! the dead-letter file (bounded by the grace period, as all draining is).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

#[derive(Default)]
pub struct DrainWatch {
    /// Messages inside redelivery: handed back, not yet placed or dead-lettered.
    rerouting: AtomicUsize,
    changed: Notify,
}

impl DrainWatch {
    /// Messages still being rerouted.
    pub fn rerouting(&self) -> usize {
        self.rerouting.load(Ordering::Acquire)
    }

    /// A wake-up for the next change; create it before looking at the
    /// state it is about, so no change between the two is missed.
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// Something a draining session waits for happened (a session ended).
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// `n` messages entered redelivery.
    pub(super) fn enter(&self, n: usize) {
        self.rerouting.fetch_add(n, Ordering::AcqRel);
    }

    /// `n` messages left redelivery (placed or dead-lettered).
    pub(super) fn leave(&self, n: usize) {
        if n > 0 && self.rerouting.fetch_sub(n, Ordering::AcqRel) == n {
            self.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_count_reaching_zero_wakes_waiters() {
        let watch = std::sync::Arc::new(DrainWatch::default());
        watch.enter(3);
        let waiter = tokio::spawn({
            let watch = watch.clone();
            async move {
                loop {
                    let changed = watch.changed();
                    if watch.rerouting() == 0 {
                        return;
                    }
                    changed.await;
                }
            }
        });
        watch.leave(1);
        watch.leave(2);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
