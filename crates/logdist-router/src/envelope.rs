//! The unit the router moves: a message plus the little delivery state that
//! travels with it.

use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use logdist_wire::Message;

/// A message on its way to an analyzer.
///
/// It is moved by value through every queue, so it stays small: the message
/// itself is a `Bytes` slice of the read buffer (no copy), and the header is
/// just what delivery needs to decide a message's fate.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub message: Message,
    /// When the distributor read the message, for end-to-end latency.
    arrived: Arrival,
    /// The message's record in the disk spool (a `logdist_spool::RecordId`):
    /// `None` in memory mode. Delivery tells the spool when it is done.
    pub spooled: Option<NonZeroU64>,
    /// The analyzers whose connections failed holding this message, oldest
    /// first; `None` until the first failure, so a healthy path never allocates.
    #[expect(
        clippy::box_collection,
        reason = "a thin pointer keeps the envelope at 64 bytes; a Vec would add 16"
    )]
    tried: Option<Box<Vec<Arc<str>>>>,
}

impl Envelope {
    /// A message that has just arrived and was never tried.
    pub fn new(message: Message) -> Self {
        Envelope::arrived_at(message, Instant::now())
    }

    /// A message that arrived at `arrived` (one clock read serves every
    /// message of a read) and was never tried.
    pub fn arrived_at(message: Message, arrived: Instant) -> Self {
        Envelope {
            message,
            arrived: Arrival::at(arrived),
            spooled: None,
            tried: None,
        }
    }

    /// When the distributor read the message.
    pub fn arrived(&self) -> Instant {
        self.arrived.instant()
    }

    /// Records a failed delivery attempt at analyzer `id`.
    pub fn record_attempt(&mut self, id: &Arc<str>) {
        self.tried.get_or_insert_default().push(id.clone());
    }

    /// Delivery attempts that already failed; the distributor dead-letters the
    /// message once this reaches its `max_attempts`.
    pub fn attempts(&self) -> usize {
        self.tried().len()
    }

    /// The analyzers tried so far, oldest first.
    pub fn tried(&self) -> &[Arc<str>] {
        self.tried.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The priority level the message is queued at (0 is served first).
    pub fn priority(&self) -> u8 {
        self.message.priority()
    }
}

/// An `Instant` in 8 bytes instead of 16: nanoseconds since a process-wide
/// epoch (the first arrival). Keeps the envelope at 64 bytes with room for
/// its spool record; 2^64 ns is 584 years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Arrival(u64);

static EPOCH: OnceLock<Instant> = OnceLock::new();

impl Arrival {
    fn at(instant: Instant) -> Self {
        let epoch = *EPOCH.get_or_init(|| instant);
        // An instant before the epoch (read by another thread just before it
        // was set) counts as the epoch: nanoseconds early at most.
        Arrival(instant.saturating_duration_since(epoch).as_nanos() as u64)
    }

    fn instant(self) -> Instant {
        let epoch = *EPOCH.get().expect("set by the arrival that made this one");
        epoch + std::time::Duration::from_nanos(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn new_envelope_is_untried_and_keeps_the_message_priority() {
        let env = Envelope::new(Message::from_frame(Bytes::from_static(b"\0\0\0\x06\x07x")));
        assert_eq!(env.attempts(), 0);
        assert_eq!(env.priority(), 7);
        assert!(env.arrived() <= Instant::now());
        assert!(env.tried().is_empty());
    }

    #[test]
    fn attempts_remember_the_analyzers_tried() {
        let mut env = Envelope::new(Message::from_frame(Bytes::from_static(b"\0\0\0\x05\x01")));
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        env.record_attempt(&a);
        env.record_attempt(&b);
        env.record_attempt(&a);
        assert_eq!(env.attempts(), 3);
        let tried: Vec<&str> = env.tried().iter().map(|id| &**id).collect();
        assert_eq!(tried, ["a", "b", "a"]);
    }

    #[test]
    fn arrival_keeps_the_instant_to_the_nanosecond() {
        let at = Instant::now();
        let env = Envelope::arrived_at(
            Message::from_frame(Bytes::from_static(b"\0\0\0\x05\x01")),
            at,
        );
        assert_eq!(env.arrived(), at);
        let later = at + std::time::Duration::from_secs(3600);
        let env = Envelope::arrived_at(
            Message::from_frame(Bytes::from_static(b"\0\0\0\x05\x01")),
            later,
        );
        assert_eq!(env.arrived(), later);
    }

    #[test]
    fn envelope_stays_small() {
        // It is moved once per hop; a regression here costs on every message.
        assert!(std::mem::size_of::<Envelope>() <= 64);
    }
}
