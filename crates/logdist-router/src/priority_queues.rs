//! The 256 strict-priority FIFO levels in front of one analyzer.
//!
//! Many producers (emitter connection tasks, on any thread) push; exactly one
//! consumer (the analyzer's writer task) pops. Nothing here takes a lock on the
//! push or pop path.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;
use crossbeam_utils::{Backoff, CachePadded};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::Envelope;

/// One level per possible priority byte.
const LEVELS: usize = 256;

/// High bit of a level's reservation counter: set once, by `close_and_drain`.
///
/// Keeping it in the same word as the count is what makes closing exact: a push
/// reserves with a compare-and-swap on that word, so every push either reserved
/// before the close (and the drainer counts it and waits for it) or sees the
/// bit and fails with `Closed`. There is no third case.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// Why a push was refused. The envelope comes back so the router can try
/// another analyzer; nothing is dropped.
#[derive(Debug)]
pub struct PushError {
    pub envelope: Envelope,
    pub kind: PushErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushErrorKind {
    /// The envelope's level already holds `capacity_per_level` envelopes.
    Full,
    /// The analyzer is gone; its queues were drained and take nothing more.
    Closed,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PushErrorKind::Full => write!(f, "priority level {} is full", self.envelope.priority()),
            PushErrorKind::Closed => f.write_str("analyzer queues are closed"),
        }
    }
}

impl std::error::Error for PushError {}

/// Bounded FIFO queues, one per priority level, for one analyzer.
///
/// `pop` always serves the lowest-numbered non-empty level (strict priority),
/// found in O(1) through a bitmap of non-empty levels.
///
/// Memory is lazy: a level is an unbounded lock-free `SegQueue` (which
/// allocates blocks of slots only as envelopes arrive and frees them as they
/// leave) bounded by a separate reservation counter. An idle analyzer costs a
/// few hundred bytes per level, whatever the capacity.
pub struct PriorityQueues {
    levels: Box<[Level]>,
    /// Bit `p` is set while level `p` may hold envelopes. It may be set on an
    /// empty level (the consumer then clears it), but never clear on a level
    /// that holds an envelope whose push has returned.
    non_empty: CachePadded<[AtomicU64; LEVELS / 64]>,
    capacity_per_level: usize,
    /// Wakes the consumer after a push.
    consumer: Notify,
    /// The router's "some queue has room" notify, shared by every analyzer.
    space: Arc<Notify>,
    /// Envelopes taken out (by `pop` or `close_and_drain`). Written only by
    /// the one consumer, so counting costs producers nothing; with `len` it
    /// gives `enqueued`.
    popped: CachePadded<AtomicU64>,
    /// Only touched when the router diverts a message here, so it shares a
    /// cache line with nobody busy.
    diverted_in: AtomicU64,
}

struct Level {
    /// `SegQueue` pads its own head and tail, so producers and the consumer do
    /// not share a cache line through it.
    queue: SegQueue<Envelope>,
    /// Envelopes queued or being pushed at this level, plus the `CLOSED` bit.
    ///
    /// Relaxed ordering is enough for every use of this counter: it only
    /// counts. Visibility of envelopes is carried by the `SegQueue` itself and
    /// by the bitmap; wake-ups by the `Notify`s, which order the counter
    /// writes made before them.
    reserved: CachePadded<AtomicUsize>,
}

impl PriorityQueues {
    /// Empty queues holding at most `capacity_per_level` envelopes per level.
    ///
    /// `space` is notified (`notify_waiters`) whenever a pop frees a slot in a
    /// level that was full, so producers waiting out backpressure retry; pass
    /// the router's [`Router::space`](crate::Router::space).
    ///
    /// # Panics
    /// If `capacity_per_level` is 0 (nothing could ever be queued) or does not
    /// fit beside the closed flag.
    pub fn new(capacity_per_level: usize, space: Arc<Notify>) -> Self {
        assert!(
            capacity_per_level > 0 && capacity_per_level < CLOSED,
            "capacity_per_level must be in 1..2^63, got {capacity_per_level}"
        );
        PriorityQueues {
            levels: (0..LEVELS)
                .map(|_| Level {
                    queue: SegQueue::new(),
                    reserved: CachePadded::new(AtomicUsize::new(0)),
                })
                .collect(),
            non_empty: CachePadded::new([const { AtomicU64::new(0) }; LEVELS / 64]),
            capacity_per_level,
            consumer: Notify::new(),
            space,
            popped: CachePadded::new(AtomicU64::new(0)),
            diverted_in: AtomicU64::new(0),
        }
    }

    /// Queues `envelope` at the level of its priority, behind the envelopes
    /// already there, and wakes the consumer.
    pub fn push(&self, envelope: Envelope) -> Result<(), PushError> {
        if self.push_owing(envelope)? {
            self.wake();
        }
        Ok(())
    }

    /// Queues `envelope` like [`push`](Self::push) but leaves the wake-up to
    /// the caller: true if the consumer is owed one ([`wake`](Self::wake)),
    /// which must follow, though not at once (see [`Wakes`](crate::Wakes)).
    pub(crate) fn push_owing(&self, envelope: Envelope) -> Result<bool, PushError> {
        let priority = usize::from(envelope.priority());
        let level = &self.levels[priority];
        if let Err(kind) = level.reserve(self.capacity_per_level) {
            return Err(PushError { envelope, kind });
        }
        level.queue.push(envelope);
        // Only the push that turns the bit on owes the consumer a wake-up;
        // see `pop` for why a push that finds it already on may stay silent.
        Ok(self.mark_non_empty(priority))
    }

    /// Wakes the consumer (what a push that turned a level's bit on owes).
    pub(crate) fn wake(&self) {
        self.consumer.notify_one();
    }

    /// Takes the oldest envelope of the lowest-numbered non-empty level.
    ///
    /// Only the one consumer may call this. `None` means every level was seen
    /// empty; await [`notified`](Self::notified) before popping again.
    ///
    /// # Why no envelope is stranded
    ///
    /// Every change to the bitmap is a read-modify-write (`fetch_or` by
    /// producers, `fetch_and` by the consumer, both `AcqRel`), so the changes
    /// to one word are totally ordered and each reads the value the previous
    /// one left. A producer pushes the envelope *then* sets the bit; the
    /// consumer clears a bit *then* re-checks that level's queue. For a set S
    /// and a clear C of the same bit: if S precedes C, C reads from S's release
    /// sequence, so the push happens-before the re-check, which sees the
    /// envelope and sets the bit again; if C precedes S, the bit is on after
    /// the clear. Either way the envelope is never left with its bit off.
    ///
    /// # Why no wake-up is lost
    ///
    /// Only the consumer clears bits, so after each of its clears the first
    /// set of that bit finds it off, and that producer calls `notify_one`
    /// (at once, or when its run of pushes ends: see [`Wakes`](crate::Wakes)),
    /// which stores a permit if the consumer is not waiting yet. A producer
    /// that finds the bit already on relies on that earlier set: either its
    /// producer has notified or will (after the consumer's last clear), or
    /// the bit is the consumer's own re-set inside a `pop` still running,
    /// which will look at the level again. A consumer woken by a notify synchronizes with it
    /// and so sees the bit that preceded it.
    pub fn pop(&self) -> Option<Envelope> {
        while let Some(priority) = self.lowest_marked_level() {
            let level = &self.levels[priority];
            if let Some(envelope) = level.queue.pop() {
                self.release_slot(level);
                // Single writer: a plain store, no read-modify-write.
                let popped = self.popped.load(Ordering::Relaxed);
                self.popped.store(popped + 1, Ordering::Relaxed);
                return Some(envelope);
            }
            self.clear_mark(priority);
            if !level.queue.is_empty() {
                // Pushed between our failed pop and the clear: put the bit
                // back; the next turn of the loop takes the envelope.
                self.mark_non_empty(priority);
            }
        }
        None
    }

    /// Resolves after a push that may have made a level non-empty (or at once,
    /// if such a push happened since the last wait). Consumer pattern:
    /// `loop { while let Some(e) = q.pop() { .. } q.notified().await }`.
    pub fn notified(&self) -> Notified<'_> {
        self.consumer.notified()
    }

    /// Closes every level and returns everything still queued, lowest priority
    /// number first and FIFO within a level.
    ///
    /// Call it once the consumer has stopped (the analyzer is gone). Every push
    /// after the close fails with `Closed`; a push that reserved its slot just
    /// before the close still completes, and this waits (spinning, then
    /// yielding) for its envelope, so every envelope ever accepted is either
    /// popped by the consumer or returned here.
    pub fn close_and_drain(&self) -> Vec<Envelope> {
        // Close every level before draining any, so that the drain of the
        // later levels cannot race new pushes.
        let held: usize = self
            .levels
            .iter()
            .map(|level| level.reserved.fetch_or(CLOSED, Ordering::Relaxed) & !CLOSED)
            .sum();
        let mut drained = Vec::with_capacity(held);
        for level in self.levels.iter() {
            // After the close the count can only fall, and only by pops.
            let backoff = Backoff::new();
            while level.reserved.load(Ordering::Relaxed) & !CLOSED != 0 {
                match level.queue.pop() {
                    Some(envelope) => {
                        level.reserved.fetch_sub(1, Ordering::Relaxed);
                        drained.push(envelope);
                    }
                    // A producer reserved before the close and is still
                    // writing its envelope.
                    None => backoff.snooze(),
                }
            }
        }
        self.popped
            .fetch_add(drained.len() as u64, Ordering::Relaxed);
        drained
    }

    /// Whether `close_and_drain` has been called.
    pub fn is_closed(&self) -> bool {
        // Every level is closed together; level 0 stands for all of them.
        self.levels[0].reserved.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Envelopes queued at every level (including pushes in progress).
    /// Exact only when nothing is pushing or popping: meant for stats.
    pub fn len(&self) -> usize {
        self.levels.iter().map(Level::depth).sum()
    }

    /// Whether no envelope is queued (see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(|level| level.depth() == 0)
    }

    /// Envelopes queued at priority `level`.
    pub fn depth(&self, level: u8) -> usize {
        self.levels[usize::from(level)].depth()
    }

    pub fn capacity_per_level(&self) -> usize {
        self.capacity_per_level
    }

    /// Envelopes ever accepted by `push` (those taken out plus those queued;
    /// exact whenever no push or pop is under way).
    pub fn enqueued(&self) -> u64 {
        self.popped.load(Ordering::Relaxed) + self.len() as u64
    }

    /// Envelopes routed here because the analyzer picked for them had no room.
    pub fn diverted_in(&self) -> u64 {
        self.diverted_in.load(Ordering::Relaxed)
    }

    pub(crate) fn count_diverted_in(&self) {
        self.diverted_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back the slot of an envelope just popped from `level`, telling
    /// waiting producers when that turned a full level into one with room.
    ///
    /// The counter's previous value says whether the level was full, so the
    /// common case costs no extra atomic. Reservations use compare-and-swap and
    /// never overshoot the capacity, so a producer that saw `Full` saw the
    /// counter at capacity, and the next pop from that level sees it too and
    /// notifies. (A producer creates its `Notified` before trying to push, and
    /// `notify_waiters` wakes every `Notified` created before it.)
    fn release_slot(&self, level: &Level) {
        let previous = level.reserved.fetch_sub(1, Ordering::Relaxed) & !CLOSED;
        if previous >= self.capacity_per_level {
            self.space.notify_waiters();
        }
    }

    /// Sets the bit of `priority`; true if it was off.
    fn mark_non_empty(&self, priority: usize) -> bool {
        let bit = 1 << (priority % 64);
        self.non_empty[priority / 64].fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    fn clear_mark(&self, priority: usize) {
        let bit = 1 << (priority % 64);
        self.non_empty[priority / 64].fetch_and(!bit, Ordering::AcqRel);
    }

    fn lowest_marked_level(&self) -> Option<usize> {
        self.non_empty
            .iter()
            .enumerate()
            .find_map(|(word_index, word)| {
                let bits = word.load(Ordering::Acquire);
                (bits != 0).then(|| word_index * 64 + bits.trailing_zeros() as usize)
            })
    }
}

impl Level {
    /// Takes one slot, unless the level is closed or full.
    fn reserve(&self, capacity: usize) -> Result<(), PushErrorKind> {
        let mut current = self.reserved.load(Ordering::Relaxed);
        loop {
            if current & CLOSED != 0 {
                return Err(PushErrorKind::Closed);
            }
            if current >= capacity {
                return Err(PushErrorKind::Full);
            }
            match self.reserved.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    fn depth(&self) -> usize {
        self.reserved.load(Ordering::Relaxed) & !CLOSED
    }
}

impl fmt::Debug for PriorityQueues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityQueues")
            .field("capacity_per_level", &self.capacity_per_level)
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use logdist_wire::Message;

    fn envelope(priority: u8, seq: u64) -> Envelope {
        Envelope::new(Message::from_ndjson_line(
            priority,
            Bytes::from(seq.to_string()),
        ))
    }

    fn seq(envelope: &Envelope) -> u64 {
        std::str::from_utf8(envelope.message.data())
            .unwrap()
            .parse()
            .unwrap()
    }

    fn queues(capacity: usize) -> PriorityQueues {
        PriorityQueues::new(capacity, Arc::new(Notify::new()))
    }

    #[test]
    fn pops_lowest_priority_number_first_and_fifo_within_a_level() {
        let q = queues(10);
        for (seq, priority) in [(0, 200), (1, 3), (2, 255), (3, 0), (4, 3), (5, 64), (6, 63)] {
            q.push(envelope(priority, seq)).unwrap();
        }
        let order: Vec<(u8, u64)> = std::iter::from_fn(|| q.pop())
            .map(|e| (e.priority(), seq(&e)))
            .collect();
        assert_eq!(
            order,
            [(0, 3), (3, 1), (3, 4), (63, 6), (64, 5), (200, 0), (255, 2)]
        );
        assert!(q.pop().is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_level_refuses_and_returns_the_envelope_other_levels_still_accept() {
        let q = queues(2);
        q.push(envelope(5, 0)).unwrap();
        q.push(envelope(5, 1)).unwrap();
        let err = q.push(envelope(5, 2)).unwrap_err();
        assert_eq!(err.kind, PushErrorKind::Full);
        assert_eq!(seq(&err.envelope), 2);
        q.push(envelope(6, 3)).unwrap();
        assert_eq!((q.depth(5), q.depth(6), q.len()), (2, 1, 3));
        assert_eq!(q.enqueued(), 3);

        q.pop().unwrap();
        q.push(envelope(5, 4)).unwrap();
    }

    #[test]
    fn popping_from_a_full_level_notifies_space_and_other_pops_do_not() {
        let space = Arc::new(Notify::new());
        let q = PriorityQueues::new(2, space.clone());
        q.push(envelope(1, 0)).unwrap();
        q.push(envelope(1, 1)).unwrap();
        q.push(envelope(2, 2)).unwrap();

        let waiting = space.notified();
        tokio::pin!(waiting);
        q.pop().unwrap(); // level 1 was full
        assert!(futures_ready(waiting.as_mut()));

        let waiting = space.notified();
        tokio::pin!(waiting);
        q.pop().unwrap(); // level 1 had room already
        q.pop().unwrap(); // level 2 too
        assert!(!futures_ready(waiting.as_mut()));
    }

    #[test]
    fn push_wakes_the_consumer_even_before_it_waits() {
        let q = queues(4);
        q.push(envelope(9, 0)).unwrap();
        // The permit stored by `notify_one` completes the next wait at once.
        let woken = q.notified();
        tokio::pin!(woken);
        assert!(futures_ready(woken.as_mut()));
    }

    #[test]
    fn close_and_drain_returns_everything_in_priority_order_then_refuses() {
        let q = queues(3);
        for (seq, priority) in [(0, 7), (1, 2), (2, 7), (3, 255)] {
            q.push(envelope(priority, seq)).unwrap();
        }
        assert!(!q.is_closed());
        let drained: Vec<u64> = q.close_and_drain().iter().map(seq).collect();
        assert_eq!(drained, [1, 0, 2, 3]);
        assert!(q.is_closed());
        assert_eq!(q.len(), 0);
        let err = q.push(envelope(0, 4)).unwrap_err();
        assert_eq!(err.kind, PushErrorKind::Closed);
        assert!(q.pop().is_none());
        assert!(q.close_and_drain().is_empty());
    }

    #[test]
    fn a_closed_full_level_reports_closed() {
        let q = queues(1);
        q.push(envelope(0, 0)).unwrap();
        q.close_and_drain();
        assert_eq!(
            q.push(envelope(0, 1)).unwrap_err().kind,
            PushErrorKind::Closed
        );
    }

    /// Polls a future once with a no-op waker.
    fn futures_ready<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        future.poll(&mut cx).is_ready()
    }
}
