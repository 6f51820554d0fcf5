//! The unit the router moves: a message plus the little delivery state that
//! travels with it.

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
    /// Delivery attempts that already failed; the distributor dead-letters the
    /// message once this reaches its `max_attempts`.
    pub attempts: u8,
    /// When the distributor read the message, for end-to-end latency.
    pub arrived: Instant,
}

impl Envelope {
    /// A message that has just arrived and was never tried.
    pub fn new(message: Message) -> Self {
        Envelope {
            message,
            attempts: 0,
            arrived: Instant::now(),
        }
    }

    /// The priority level the message is queued at (0 is served first).
    pub fn priority(&self) -> u8 {
        self.message.priority()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn new_envelope_is_untried_and_keeps_the_message_priority() {
        let env = Envelope::new(Message::from_frame(Bytes::from_static(b"\0\0\0\x06\x07x")));
        assert_eq!(env.attempts, 0);
        assert_eq!(env.priority(), 7);
        assert!(env.arrived <= Instant::now());
    }

    #[test]
    fn envelope_stays_small() {
        // It is moved once per hop; a regression here costs on every message.
        assert!(std::mem::size_of::<Envelope>() <= 64);
    }
}
