//! Emitter connections logdist closed because the peer made no progress:
//! counted by reason, and logged without letting many such peers flood the
//! log ([`LogLimit`]: the first of each reason at warn level, then at most one
//! warning per [`LOG_EVERY`] saying how many were only logged at debug level
//! since).
//!
//! To add a reason: a variant, its name in [`CloseReason::as_str`], and its
//! place in [`CloseReason::ALL`] (counters, the stats JSON and `/metrics`
//! follow from that list).

use std::fmt::Display;
use std::net::SocketAddr;

use crate::log_limit::{LOG_EVERY, LogLimit};
use crate::stats::Counter;

/// Why logdist closed an emitter connection that was still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// `limits.idle_timeout` passed with no byte read, no message completed
    /// and no reply taken by the peer.
    IdleTimeout,
    /// A message (line or frame) begun and not completed within
    /// `limits.frame_timeout`.
    FrameTimeout,
}

impl CloseReason {
    pub const ALL: [CloseReason; 2] = [CloseReason::IdleTimeout, CloseReason::FrameTimeout];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::FrameTimeout => "frame_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Close counters and the log limiter.
#[derive(Default)]
pub struct Closes {
    counts: [Counter; CloseReason::ALL.len()],
    logs: [LogLimit; CloseReason::ALL.len()],
}

impl Closes {
    /// Counts and logs (rate-limited) the close of `peer`'s connection.
    pub fn close(&self, reason: CloseReason, peer: SocketAddr, detail: &dyn Display) {
        self.counts[reason.index()].add(1);
        let warn = self.logs[reason.index()].warn();
        let reason = reason.as_str();
        if let Some(suppressed) = warn {
            tracing::warn!(
                reason, %peer, %detail, suppressed,
                "closing emitter connection (more of these within {LOG_EVERY:?} are only counted)"
            );
        } else {
            tracing::debug!(reason, %peer, %detail, "closing emitter connection");
        }
    }

    /// Closes so far for `reason`.
    pub fn get(&self, reason: CloseReason) -> u64 {
        self.counts[reason.index()].get()
    }

    /// Every reason with its count, in [`CloseReason::ALL`] order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        CloseReason::ALL
            .iter()
            .map(|&reason| (reason.as_str(), self.get(reason)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_is_counted_and_few_are_warned_about() {
        let closes = Closes::default();
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        for _ in 0..500 {
            closes.close(CloseReason::IdleTimeout, peer, &"x");
        }
        closes.close(CloseReason::FrameTimeout, peer, &"x");
        assert_eq!(closes.get(CloseReason::IdleTimeout), 500);
        assert_eq!(closes.get(CloseReason::FrameTimeout), 1);
        assert_eq!(
            closes.snapshot(),
            [("idle_timeout", 500), ("frame_timeout", 1)]
        );
        // One warning, the rest suppressed until the window passes.
        let limit = &closes.logs[CloseReason::IdleTimeout.index()];
        assert_eq!(limit.held_back(), 499);
    }
}
