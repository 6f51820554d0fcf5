//! Where messages wait while no analyzer can take any.
//!
//! Only used when there is no analyzer with a positive weight, never on the
//! hot path, so a mutex over per-priority FIFOs is the simple right tool: it
//! gives what a lock-free queue cannot, a look at each level's oldest message
//! for `hold_timeout`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::Envelope;

/// A bounded, strict-priority holding area with one consumer.
#[derive(Debug)]
pub struct HoldingQueue {
    levels: Mutex<Levels>,
    capacity: usize,
    /// Wakes the consumer after a push.
    arrivals: Notify,
    /// The router's "room appeared" notification, for producers kept waiting
    /// by a full holding queue.
    space: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Levels {
    by_priority: BTreeMap<u8, VecDeque<Envelope>>,
    len: usize,
}

impl HoldingQueue {
    /// Holds at most `capacity` messages in all.
    pub fn new(capacity: usize, space: Arc<Notify>) -> Self {
        HoldingQueue {
            levels: Mutex::new(Levels::default()),
            capacity,
            arrivals: Notify::new(),
            space,
        }
    }

    /// Parks `envelope`, or hands it back if the queue is full.
    pub fn push(&self, envelope: Envelope) -> Result<(), Envelope> {
        let mut levels = self.levels.lock();
        if levels.len >= self.capacity {
            return Err(envelope);
        }
        levels
            .by_priority
            .entry(envelope.priority())
            .or_default()
            .push_back(envelope);
        levels.len += 1;
        drop(levels);
        self.arrivals.notify_one();
        Ok(())
    }

    /// The oldest message of the most urgent non-empty level.
    pub fn pop(&self) -> Option<Envelope> {
        let mut levels = self.levels.lock();
        let mut entry = levels.by_priority.first_entry()?;
        let envelope = entry.get_mut().pop_front();
        if entry.get().is_empty() {
            entry.remove();
        }
        let was_full = levels.len == self.capacity;
        levels.len -= 1;
        drop(levels);
        if was_full {
            self.space.notify_waiters();
        }
        envelope
    }

    /// Removes every message that arrived before `cutoff`, most urgent first.
    pub fn take_arrived_before(&self, cutoff: Instant) -> Vec<Envelope> {
        let mut levels = self.levels.lock();
        let mut expired = Vec::new();
        for queue in levels.by_priority.values_mut() {
            while queue.front().is_some_and(|env| env.arrived() < cutoff) {
                expired.extend(queue.pop_front());
            }
        }
        levels.by_priority.retain(|_, queue| !queue.is_empty());
        let was_full = levels.len == self.capacity;
        levels.len -= expired.len();
        drop(levels);
        if was_full && !expired.is_empty() {
            self.space.notify_waiters();
        }
        expired
    }

    /// When the longest-waiting message arrived.
    pub fn oldest_arrival(&self) -> Option<Instant> {
        let levels = self.levels.lock();
        levels
            .by_priority
            .values()
            .filter_map(|queue| queue.front().map(|env| env.arrived()))
            .min()
    }

    /// Completes after the next push (or at once if one happened since the
    /// last wait): the consumer awaits this when `pop` finds nothing.
    pub fn notified(&self) -> Notified<'_> {
        self.arrivals.notified()
    }

    pub fn len(&self) -> usize {
        self.levels.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use logdist_wire::Message;

    use super::*;

    fn envelope(priority: u8, tag: &'static str) -> Envelope {
        Envelope::new(Message::from_ndjson_line(
            priority,
            Bytes::from_static(tag.as_bytes()),
        ))
    }

    fn tag(env: &Envelope) -> Vec<u8> {
        env.message.payload().to_vec()
    }

    #[test]
    fn pops_by_priority_then_arrival() {
        let queue = HoldingQueue::new(10, Arc::new(Notify::new()));
        for (p, t) in [(5, "a"), (1, "b"), (5, "c"), (0, "d")] {
            queue.push(envelope(p, t)).unwrap();
        }
        let order: Vec<Vec<u8>> = std::iter::from_fn(|| queue.pop())
            .map(|e| tag(&e))
            .collect();
        assert_eq!(
            order,
            [b"d".to_vec(), b"b".to_vec(), b"a".to_vec(), b"c".to_vec()]
        );
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn full_queue_refuses_and_a_pop_makes_room_known() {
        let space = Arc::new(Notify::new());
        let queue = HoldingQueue::new(2, space.clone());
        queue.push(envelope(1, "a")).unwrap();
        queue.push(envelope(1, "b")).unwrap();
        let refused = queue.push(envelope(0, "c")).unwrap_err();
        assert_eq!(tag(&refused), b"c");

        let room = space.notified();
        queue.pop().unwrap();
        tokio::time::timeout(Duration::from_secs(5), room)
            .await
            .expect("a pop from a full holding queue must announce room");
        queue.push(refused).unwrap();
    }

    #[test]
    fn expiry_takes_only_what_arrived_before_the_cutoff() {
        let queue = HoldingQueue::new(10, Arc::new(Notify::new()));
        queue.push(envelope(3, "old-3")).unwrap();
        queue.push(envelope(0, "old-0")).unwrap();
        let cutoff = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        queue.push(envelope(3, "new-3")).unwrap();

        assert!(queue.oldest_arrival().unwrap() < cutoff);
        let expired: Vec<Vec<u8>> = queue.take_arrived_before(cutoff).iter().map(tag).collect();
        assert_eq!(expired, [b"old-0".to_vec(), b"old-3".to_vec()]);
        assert_eq!(queue.len(), 1);
        assert_eq!(tag(&queue.pop().unwrap()), b"new-3");
    }
}
