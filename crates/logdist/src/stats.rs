//! Process-wide counters. Hot paths count locally (per connection, per batch) and
//! add their tallies here, so these atomics are touched per batch, not per message.
//!
//! Per-priority counts use seven *priority classes* rather than 256 levels, so
//! metrics stay low-cardinality: levels 0 to 5 (the levels the default
//! `level`/`severity` table maps to) each have their own class, and everything
//! from 6 to 255 shares the class "6-255".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use logdist_router::Placed;
use logdist_wire::RejectReason;

use crate::closes::{CloseReason, Closes};
use crate::refusal::{Listener, RefusalReason, Refusals};

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
    /// Messages rejected, indexed like `RejectReason::ALL`.
    pub rejected: [Counter; RejectReason::ALL.len()],
    /// Emitter connections closed because a binary length could not be valid.
    pub bad_length_closes: Counter,
    /// Emitter connections closed for making no progress (see [`crate::closes`]).
    pub emitter_closes: Closes,
    /// Connections refused, by listener and reason (see [`crate::refusal`]).
    pub refused: Refusals,
    /// Messages put into an analyzer queue (first attempt or redelivery).
    pub routed: Counter,
    /// Of those, messages that went to another analyzer because the picked one was full.
    pub diverted: Counter,
    /// Messages parked in the holding queue because no analyzer could take any.
    pub held: Counter,
    /// Messages handed back by a failed analyzer connection for another attempt.
    pub redelivered: Counter,
    /// Messages written to the dead-letter file.
    pub dead_lettered: Counter,
    /// Disk mode: accepted messages kept in the spool only (no room in
    /// memory), to be read back as room appears.
    pub backlogged: Counter,
    /// Messages that could not even be written to the dead-letter file (logged).
    pub dead_letter_failures: Counter,
    /// Analyzer health transitions (healthy, unhealthy, draining).
    pub health_changes: Counter,
    /// Messages accepted, by priority class (see [`CLASSES`]).
    pub accepted_by_class: [Counter; CLASSES.len()],
    /// Messages delivered, by priority class, with their arrival-to-ack latency.
    pub delivered_by_class: [Latency; CLASSES.len()],
}

/// The priority classes per-priority counters are kept for; index with [`class_of`].
pub const CLASSES: [&str; 7] = ["0", "1", "2", "3", "4", "5", "6-255"];

/// The class of priority level `priority`.
pub fn class_of(priority: u8) -> usize {
    usize::from(priority).min(CLASSES.len() - 1)
}

/// Upper bounds (inclusive) of the latency histogram buckets, in seconds; a
/// last bucket (+Inf) takes the rest. From 100 µs (the distributor's own
/// share of a delivery) to 10 s (an analyzer that is barely keeping up).
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Deliveries of one priority class: a count and a latency histogram
/// (arrival at the distributor to acknowledgement by an analyzer).
#[derive(Default)]
pub struct Latency {
    /// Non-cumulative: `buckets[i]` counts latencies in (bound i-1, bound i];
    /// the last one those above every bound.
    pub buckets: [Counter; LATENCY_BOUNDS.len() + 1],
    pub sum_nanos: Counter,
}

impl Latency {
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).sum()
    }
}

/// Per-class deliveries counted locally by one analyzer session, added to
/// [`Stats`] with each ack batch.
pub struct DeliveryTally {
    buckets: [[u64; LATENCY_BOUNDS.len() + 1]; CLASSES.len()],
    sum_nanos: [u64; CLASSES.len()],
    /// The bounds in nanoseconds, so recording compares integers.
    bounds: [u64; LATENCY_BOUNDS.len()],
    /// Bit `c` set: class `c` has counts to flush (most batches touch one or two).
    dirty: u8,
}

impl Default for DeliveryTally {
    fn default() -> Self {
        DeliveryTally {
            buckets: [[0; LATENCY_BOUNDS.len() + 1]; CLASSES.len()],
            sum_nanos: [0; CLASSES.len()],
            bounds: LATENCY_BOUNDS.map(|s| (s * 1e9) as u64),
            dirty: 0,
        }
    }
}

impl DeliveryTally {
    /// Counts one delivered message of `priority` that took `latency`.
    pub fn record(&mut self, priority: u8, latency: Duration) {
        let class = class_of(priority);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds.partition_point(|&bound| bound < nanos);
        self.buckets[class][bucket] += 1;
        self.sum_nanos[class] = self.sum_nanos[class].saturating_add(nanos);
        self.dirty |= 1 << class;
    }

    /// Adds the tally to `stats` and clears it.
    pub fn flush(&mut self, stats: &Stats) {
        for (class, buckets) in self.buckets.iter_mut().enumerate() {
            if self.dirty & (1 << class) == 0 {
                continue;
            }
            let into = &stats.delivered_by_class[class];
            for (bucket, n) in buckets.iter_mut().enumerate() {
                into.buckets[bucket].add(std::mem::take(n));
            }
            into.sum_nanos
                .add(std::mem::take(&mut self.sum_nanos[class]));
        }
        self.dirty = 0;
    }
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

    /// Counts a refused connection and logs it (rate-limited).
    pub fn refuse(
        &self,
        listener: Listener,
        reason: RefusalReason,
        peer: &dyn std::fmt::Display,
        detail: &dyn std::fmt::Display,
    ) {
        self.refused.refuse(listener, reason, peer, detail);
    }

    /// Counts a connection to the analyzer listener that did not become an
    /// analyzer (or a weight update refused), and logs it (rate-limited).
    pub fn refuse_analyzer(&self, reason: RefusalReason, peer: &str, detail: &str) {
        self.refused
            .refuse(Listener::Analyzer, reason, &peer, &detail);
    }

    /// Totals are the sums of their per-class counts, read once, so a snapshot
    /// is always consistent with itself.
    pub fn snapshot(&self) -> StatsSnapshot {
        let accepted_by_class = self.accepted_by_class.each_ref().map(Counter::get);
        let delivered_by_class = self.delivered_by_class.each_ref().map(Latency::count);
        let refused = self.refused.snapshot();
        StatsSnapshot {
            accepted: accepted_by_class.iter().sum(),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.rejected[*r as usize].get()))
                .collect(),
            bad_length_closes: self.bad_length_closes.get(),
            emitter_closes: self.emitter_closes.snapshot(),
            connections_refused: refused.iter().map(|(_, _, n)| n).sum(),
            refused,
            routed: self.routed.get(),
            held: self.held.get(),
            diverted: self.diverted.get(),
            backlogged: self.backlogged.get(),
            delivered: delivered_by_class.iter().sum(),
            redelivered: self.redelivered.get(),
            dead_lettered: self.dead_lettered.get(),
            dead_letter_failures: self.dead_letter_failures.get(),
            health_changes: self.health_changes.get(),
            accepted_by_class,
            delivered_by_class,
        }
    }
}

/// A point-in-time copy of [`Stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub rejected: Vec<(&'static str, u64)>,
    pub bad_length_closes: u64,
    /// Emitter connections closed for making no progress, by reason (every
    /// reason, zeros included).
    pub emitter_closes: Vec<(&'static str, u64)>,
    /// Connections refused on every listener for every reason.
    pub connections_refused: u64,
    /// Refusals by listener and reason (every pair, zeros included).
    pub refused: Vec<(Listener, RefusalReason, u64)>,
    pub routed: u64,
    pub held: u64,
    pub diverted: u64,
    pub backlogged: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub dead_letter_failures: u64,
    pub health_changes: u64,
    /// Indexed like [`CLASSES`].
    pub accepted_by_class: [u64; CLASSES.len()],
    /// Indexed like [`CLASSES`].
    pub delivered_by_class: [u64; CLASSES.len()],
}

impl StatsSnapshot {
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected
            .iter()
            .find(|(name, _)| *name == reason.as_str())
            .map_or(0, |(_, n)| *n)
    }

    /// Connections to the analyzer listener refused for `reason`.
    pub fn analyzer_refused(&self, reason: RefusalReason) -> u64 {
        self.refused(Listener::Analyzer, reason)
    }

    /// Connections refused on `listener` for `reason`.
    pub fn refused(&self, listener: Listener, reason: RefusalReason) -> u64 {
        self.refused
            .iter()
            .find(|(l, r, _)| *l == listener && *r == reason)
            .map_or(0, |(_, _, n)| *n)
    }

    /// Emitter connections closed for `reason`.
    pub fn emitter_closes(&self, reason: CloseReason) -> u64 {
        self.emitter_closes
            .iter()
            .find(|(name, _)| *name == reason.as_str())
            .map_or(0, |(_, n)| *n)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_latency_buckets() {
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(5), 5);
        assert_eq!(class_of(6), 6);
        assert_eq!(class_of(255), 6);

        let stats = Stats::default();
        let mut tally = DeliveryTally::default();
        tally.record(1, Duration::from_micros(100)); // on the first bound: first bucket
        tally.record(1, Duration::from_micros(101));
        tally.record(200, Duration::from_secs(60)); // past every bound: +Inf
        tally.flush(&stats);
        tally.flush(&stats); // flushing clears: nothing counted twice
        let one = &stats.delivered_by_class[1];
        assert_eq!((one.buckets[0].get(), one.buckets[1].get()), (1, 1));
        assert_eq!(one.sum_nanos.get(), 201_000);
        assert_eq!(stats.delivered_by_class[6].buckets[16].get(), 1);
        assert_eq!(stats.snapshot().delivered_by_class, [0, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn analyzer_refusals_count_under_the_analyzer_listener() {
        let stats = Stats::default();
        for _ in 0..3 {
            stats.refuse_analyzer(RefusalReason::BadWeight, "127.0.0.1:1", "test");
        }
        stats.refuse_analyzer(RefusalReason::ReservedId, "127.0.0.1:1", "test");
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.analyzer_refused(RefusalReason::BadWeight), 3);
        assert_eq!(snapshot.analyzer_refused(RefusalReason::ReservedId), 1);
        assert_eq!(
            snapshot.refused(Listener::Emitter, RefusalReason::BadWeight),
            0
        );
        assert_eq!(snapshot.connections_refused, 4);
    }
}
