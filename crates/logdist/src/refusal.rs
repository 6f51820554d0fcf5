//! Connections refused before a stage serves them: counted by listener and
//! reason, and logged without letting a scanner flood the log.
//!
//! Each (listener, reason) pair logs its first refusal at warn level, then at
//! most one more per [`LOG_EVERY`]; the refusals in between are logged at
//! debug level only, and the next warning says how many there were. The
//! counters see every one.
//!
//! To add a reason: a variant, its name in [`RefusalReason::as_str`], and
//! its place in [`RefusalReason::ALL`] (counters, the stats JSON and
//! `/metrics` follow from that list).

use std::fmt::Display;

use crate::log_limit::{LOG_EVERY, LogLimit};
use crate::stats::Counter;

/// The listener a connection was refused on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    Emitter,
    Analyzer,
    Admin,
}

impl Listener {
    pub const ALL: [Listener; 3] = [Listener::Emitter, Listener::Analyzer, Listener::Admin];

    /// The `listener` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Emitter => "emitter",
            Listener::Analyzer => "analyzer",
            Listener::Admin => "admin",
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The listener's connection limit (`limits.max_connections`,
    /// `analyzers.max_connections`) was reached.
    MaxConnections,
    /// The source address is outside the listener's `allow` networks.
    NotAllowed,
    /// The TLS handshake failed or timed out: a plaintext client on a TLS
    /// port, no or an unknown client certificate under mutual TLS, a client
    /// that does not trust the listener's certificate.
    TlsHandshake,
    /// A weight out of bounds: negative, not finite, above
    /// `analyzers.max_weight`, or (seed handshake) positive but tiny or
    /// subnormal; from a handshake or a control message.
    BadWeight,
    /// Not a handshake: an invalid hello, bytes after a seed handshake before
    /// any message was sent, a close or timeout before a complete handshake.
    BadHandshake,
    /// A JSON hello without a valid token, or a seed handshake from a network
    /// not in `analyzers.seed_handshake_from`.
    Unauthorized,
    /// A JSON hello claiming the id of a static analyzer.
    ReservedId,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 7] = [
        RefusalReason::MaxConnections,
        RefusalReason::NotAllowed,
        RefusalReason::TlsHandshake,
        RefusalReason::BadWeight,
        RefusalReason::BadHandshake,
        RefusalReason::Unauthorized,
        RefusalReason::ReservedId,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::MaxConnections => "max_connections",
            RefusalReason::NotAllowed => "not_allowed",
            RefusalReason::TlsHandshake => "tls_handshake",
            RefusalReason::BadWeight => "bad_weight",
            RefusalReason::BadHandshake => "bad_handshake",
            RefusalReason::Unauthorized => "unauthorized",
            RefusalReason::ReservedId => "reserved_id",
        }
    }

    fn index(self) -> usize {
        RefusalReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL")
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Listener {
    fn index(self) -> usize {
        self as usize
    }
}

const REASONS: usize = RefusalReason::ALL.len();
const LISTENERS: usize = Listener::ALL.len();

/// Refusal counters and the log limiter.
#[derive(Default)]
pub struct Refusals {
    counts: [[Counter; REASONS]; LISTENERS],
    logs: [[LogLimit; REASONS]; LISTENERS],
}

impl Refusals {
    /// Counts and logs (rate-limited) a refused connection from `peer`.
    pub fn refuse(
        &self,
        listener: Listener,
        reason: RefusalReason,
        peer: &dyn Display,
        detail: &dyn Display,
    ) {
        let (l, r) = (listener.index(), reason.index());
        self.counts[l][r].add(1);
        let warn = self.logs[l][r].warn();
        let (listener, reason) = (listener.as_str(), reason.as_str());
        if let Some(suppressed) = warn {
            tracing::warn!(
                listener, reason, %peer, %detail, suppressed,
                "connection refused (more of these within {LOG_EVERY:?} are only counted)"
            );
        } else {
            tracing::debug!(listener, reason, %peer, %detail, "connection refused");
        }
    }

    /// Refusals so far on `listener` for `reason`.
    pub fn get(&self, listener: Listener, reason: RefusalReason) -> u64 {
        self.counts[listener.index()][reason.index()].get()
    }

    /// Every (listener, reason) pair with its count, in [`Listener::ALL`] ×
    /// [`RefusalReason::ALL`] order.
    pub fn snapshot(&self) -> Vec<(Listener, RefusalReason, u64)> {
        Listener::ALL
            .iter()
            .flat_map(|&l| {
                RefusalReason::ALL
                    .iter()
                    .map(move |&r| (l, r, self.get(l, r)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_by_listener_and_reason() {
        let refusals = Refusals::default();
        let peer: std::net::SocketAddr = "192.0.2.1:4000".parse().unwrap();
        for _ in 0..1000 {
            refusals.refuse(Listener::Analyzer, RefusalReason::NotAllowed, &peer, &"x");
        }
        refusals.refuse(Listener::Emitter, RefusalReason::TlsHandshake, &peer, &"x");
        assert_eq!(
            refusals.get(Listener::Analyzer, RefusalReason::NotAllowed),
            1000
        );
        assert_eq!(
            refusals.get(Listener::Emitter, RefusalReason::TlsHandshake),
            1
        );
        assert_eq!(refusals.get(Listener::Admin, RefusalReason::NotAllowed), 0);
        // One warning, the rest suppressed until the window passes.
        let limit = &refusals.logs[Listener::Analyzer.index()][RefusalReason::NotAllowed.index()];
        assert_eq!(limit.held_back(), 999);
        let snapshot = refusals.snapshot();
        assert_eq!(snapshot.len(), LISTENERS * REASONS);
        assert_eq!(snapshot.iter().map(|(_, _, n)| n).sum::<u64>(), 1001);
    }
}
