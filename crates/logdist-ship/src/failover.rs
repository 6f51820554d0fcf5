//! Which server to dial: the `--server`s taken round robin, from a start
//! chosen by `--server-order`, and when a failure calls for the reconnect
//! backoff. The backoff waits only once a whole round of the list has failed,
//! never between two servers of a round: when the server the shipper is
//! connected to dies, it goes on to a live one at once.

use std::hash::{BuildHasher, Hasher, RandomState};

use crate::config::{ServerAddress, ServerOrder};

/// The servers, and where the shipper stands among them.
#[derive(Debug)]
pub struct ServerRotation {
    servers: Vec<ServerAddress>,
    /// The server connected to, or to be dialled next.
    current: usize,
    /// The server of the last connection made.
    last_connected: Option<usize>,
    /// Servers that failed one after the other since the last ack (or the
    /// last full round).
    failed_in_round: usize,
}

impl ServerRotation {
    /// `servers` must not be empty.
    pub fn new(servers: Vec<ServerAddress>, order: ServerOrder) -> ServerRotation {
        assert!(!servers.is_empty(), "a shipper needs a server");
        let current = match order {
            ServerOrder::Listed => 0,
            ServerOrder::Random => (random_u64() % servers.len() as u64) as usize,
        };
        ServerRotation {
            servers,
            current,
            last_connected: None,
            failed_in_round: 0,
        }
    }

    pub fn servers(&self) -> &[ServerAddress] {
        &self.servers
    }

    /// The server connected to, or to be dialled next.
    pub fn current(&self) -> &ServerAddress {
        &self.servers[self.current]
    }

    /// A connection to the current server is up. True when it is a
    /// failover: the last connection was to another server.
    pub fn connected(&mut self) -> bool {
        let failover = self.last_connected.is_some_and(|last| last != self.current);
        self.last_connected = Some(self.current);
        failover
    }

    /// The current server answered: a new round of failures starts from zero.
    pub fn acked(&mut self) {
        self.failed_in_round = 0;
    }

    /// The current server could not be reached, or lost the connection
    /// before answering anything: goes on to the next one. True when that
    /// completes a round (every server failed in a row): time to back off.
    pub fn failed(&mut self) -> bool {
        self.move_on();
        self.failed_in_round += 1;
        if self.failed_in_round < self.servers.len() {
            return false;
        }
        self.failed_in_round = 0;
        true
    }

    /// Goes on to the next server in the list (after the end, the first).
    pub fn move_on(&mut self) {
        self.current = (self.current + 1) % self.servers.len();
    }
}

/// A random number: std's `RandomState` is keyed from the operating system's
/// randomness, so the hash of nothing is one draw, and one draw per process
/// is all the start needs (no random-number crate for it).
fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<ServerAddress> {
        (1..=3)
            .map(|port| ServerAddress::new("127.0.0.1", port))
            .collect()
    }

    fn port(rotation: &ServerRotation) -> u16 {
        rotation.current().port
    }

    #[test]
    fn listed_starts_at_the_first_and_backs_off_once_per_round() {
        let mut rotation = ServerRotation::new(three(), ServerOrder::Listed);
        assert_eq!(port(&rotation), 1);
        // Two failures go on at once; the third completes the round.
        assert!(!rotation.failed());
        assert_eq!(port(&rotation), 2);
        assert!(!rotation.failed());
        assert_eq!(port(&rotation), 3);
        assert!(rotation.failed());
        assert_eq!(port(&rotation), 1);
        // A round counts from wherever it began, and an ack starts it over.
        assert!(!rotation.failed());
        rotation.acked();
        assert!(!rotation.failed());
        assert!(!rotation.failed());
        assert!(rotation.failed());
    }

    #[test]
    fn one_server_backs_off_after_every_failure() {
        let mut rotation = ServerRotation::new(three()[..1].to_vec(), ServerOrder::Random);
        for _ in 0..3 {
            assert!(rotation.failed());
            assert_eq!(port(&rotation), 1);
        }
        assert!(!rotation.connected());
        rotation.move_on();
        assert!(!rotation.connected(), "the same server again");
    }

    #[test]
    fn a_connection_to_another_server_is_a_failover() {
        let mut rotation = ServerRotation::new(three(), ServerOrder::Listed);
        assert!(!rotation.connected(), "the first connection");
        rotation.move_on();
        assert!(rotation.connected());
        assert_eq!(port(&rotation), 2);
        rotation.failed();
        rotation.failed();
        rotation.failed();
        assert!(!rotation.connected(), "back on the same server");
        // Past the end of the list comes the first again.
        rotation.move_on();
        rotation.move_on();
        assert_eq!(port(&rotation), 1);
    }

    #[test]
    fn random_starts_at_every_server() {
        // 60 draws over three servers all missing one: odds of 3 * (2/3)^60.
        let starts: std::collections::BTreeSet<u16> = (0..60)
            .map(|_| port(&ServerRotation::new(three(), ServerOrder::Random)))
            .collect();
        assert_eq!(starts.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    }
}
