//! Process-wide counters. Hot paths count locally (per connection, per batch) and
//! add their tallies here, so these atomics are touched per batch, not per message.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use logdist_router::Placed;
use logdist_wire::RejectReason;
use serde::Serialize;

#[derive(Default)]
pub struct Counter(CachePadded<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        if n != 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every outcome a message or connection can have, counted.
#[derive(Default)]
pub struct Stats {
    /// Messages accepted from emitters.
    pub accepted: Counter,
    /// Messages rejected, indexed like `RejectReason::ALL`.
    pub rejected: [Counter; RejectReason::ALL.len()],
    /// Emitter connections closed because a binary length could not be valid.
    pub bad_length_closes: Counter,
    /// Emitter connections refused because `limits.max_connections` were open.
    pub connections_refused: Counter,
    /// Messages put into an analyzer queue (first attempt or redelivery).
    pub routed: Counter,
    /// Messages parked in the holding queue because no analyzer could take any.
    pub held: Counter,
    /// Of those, messages that went to another analyzer because the picked one was full.
    pub diverted: Counter,
    /// Messages acknowledged by an analyzer (or written, for analyzers without acks).
    pub delivered: Counter,
    /// Messages handed back by a failed analyzer connection for another attempt.
    pub redelivered: Counter,
    /// Messages written to the dead-letter file.
    pub dead_lettered: Counter,
    /// Messages that could not even be written to the dead-letter file (logged).
    pub dead_letter_failures: Counter,
    /// Analyzer health transitions (healthy, unhealthy, draining).
    pub health_changes: Counter,
}

impl Stats {
    /// Counts where the router put a message.
    pub fn count(&self, placed: Placed) {
        match placed {
            Placed::Routed(routed) => {
                self.routed.add(1);
                self.diverted.add(u64::from(routed.diverted));
            }
            Placed::Held => self.held.add(1),
        }
    }

    pub fn reject(&self, reason: RejectReason, n: u64) {
        self.rejected[reason as usize].add(n);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.get(),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.rejected[*r as usize].get()))
                .collect(),
            bad_length_closes: self.bad_length_closes.get(),
            connections_refused: self.connections_refused.get(),
            routed: self.routed.get(),
            held: self.held.get(),
            diverted: self.diverted.get(),
            delivered: self.delivered.get(),
            redelivered: self.redelivered.get(),
            dead_lettered: self.dead_lettered.get(),
            dead_letter_failures: self.dead_letter_failures.get(),
            health_changes: self.health_changes.get(),
        }
    }
}

/// A point-in-time copy of [`Stats`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub rejected: Vec<(&'static str, u64)>,
    pub bad_length_closes: u64,
    pub connections_refused: u64,
    pub routed: u64,
    pub held: u64,
    pub diverted: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub dead_letter_failures: u64,
    pub health_changes: u64,
}

impl StatsSnapshot {
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected
            .iter()
            .find(|(name, _)| *name == reason.as_str())
            .map_or(0, |(_, n)| *n)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }
}
