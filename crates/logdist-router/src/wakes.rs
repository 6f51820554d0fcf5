//! Consumer wake-ups owed by a run of pushes, given when the run ends.

use std::sync::Arc;

use crate::PriorityQueues;

/// The analyzer writers a run of [`RoutingTable::route`](crate::RoutingTable::route)
/// calls owes a wake-up: one per queue the run found empty.
///
/// An emitter connection routes a whole read with one `Wakes` and wakes the
/// writers when it is done, so a writer woken on another worker thread finds
/// the read's messages already queued and writes them together, instead of
/// writing the first one alone while the rest are still being routed.
/// Dropping a `Wakes` gives every wake-up it owes, so none is lost on an early
/// return; the caller only decides how soon.
#[derive(Default)]
pub struct Wakes {
    owed: Vec<Arc<PriorityQueues>>,
}

impl Wakes {
    pub(crate) fn owe(&mut self, queues: &Arc<PriorityQueues>) {
        self.owed.push(queues.clone());
    }

    /// Wakes every writer owed a wake-up. Call it before waiting on anything.
    pub fn wake_all(&mut self) {
        for queues in self.owed.drain(..) {
            queues.wake();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}
