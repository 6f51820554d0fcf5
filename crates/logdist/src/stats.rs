//! Process-wide counters. Hot paths count locally (per connection, per batch) and
//! add their tallies here, so these atomics are touched per batch, not per message.
//!
//! Per-priority counts use seven *priority classes* rather than 256 levels, so
//! metrics stay low-cardinality: levels 0 to 5 (the levels the default
//! `level`/`severity` table maps to) each have their own class, and everything
//! from 6 to 255 shares the class "6-255".

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use logdist_router::Placed;
use logdist_wire::RejectReason;

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
    /// Emitter connections refused because `limits.max_connections` were open.
    pub connections_refused: Counter,
    /// Connections to the analyzer listener that did not become analyzers, and
    /// weight changes refused, indexed like [`AnalyzerRefusal::ALL`].
    pub analyzer_refusals: [Counter; AnalyzerRefusal::ALL.len()],
    /// When each refusal reason was last logged, for [`Stats::refuse_analyzer`].
    refusal_log: [RateLimit; AnalyzerRefusal::ALL.len()],
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
    /// Messages that could not even be written to the dead-letter file (logged).
    pub dead_letter_failures: Counter,
    /// Analyzer health transitions (healthy, unhealthy, draining).
    pub health_changes: Counter,
    /// Messages accepted, by priority class (see [`CLASSES`]).
    pub accepted_by_class: [Counter; CLASSES.len()],
    /// Messages delivered, by priority class, with their arrival-to-ack latency.
    pub delivered_by_class: [Latency; CLASSES.len()],
}

/// Why the analyzer listener (or an analyzer's control stream) was refused.
/// The label is the `reason` of `logdist_connections_refused_total{listener="analyzer"}`
/// and the key under `analyzer_refusals` in the admin stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnalyzerRefusal {
    /// A weight out of bounds: negative, not finite, above `analyzers.max_weight`,
    /// or (seed handshake) positive but tiny or subnormal. From a handshake, a
    /// control message or (not counted here) the admin API.
    BadWeight,
    /// Not a handshake: an invalid hello, bytes after a seed handshake before any
    /// message was sent, a close or timeout before a complete handshake.
    BadHandshake,
    /// A JSON hello without a valid token, or a seed handshake from a network
    /// not in `analyzers.seed_handshake_from`.
    Unauthorized,
    /// A JSON hello claiming the id of a static analyzer.
    ReservedId,
}

impl AnalyzerRefusal {
    pub const ALL: [AnalyzerRefusal; 4] = [
        AnalyzerRefusal::BadWeight,
        AnalyzerRefusal::BadHandshake,
        AnalyzerRefusal::Unauthorized,
        AnalyzerRefusal::ReservedId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnalyzerRefusal::BadWeight => "bad_weight",
            AnalyzerRefusal::BadHandshake => "bad_handshake",
            AnalyzerRefusal::Unauthorized => "unauthorized",
            AnalyzerRefusal::ReservedId => "reserved_id",
        }
    }
}

impl std::fmt::Display for AnalyzerRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often one refusal reason may be logged at warn level: once per period,
/// so a scanner cannot flood the log (every refusal is still counted).
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// The base of the rate limiter's clock.
static CLOCK: LazyLock<Instant> = LazyLock::new(Instant::now);

/// One log line per [`REFUSAL_LOG_PERIOD`]; counts what it held back.
#[derive(Default)]
struct RateLimit {
    /// Milliseconds since [`CLOCK`] of the last line, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// `Some(n)` when a line may be written now (`n` were held back since the
    /// last one), `None` when this one is only counted.
    fn allow(&self) -> Option<u64> {
        self.allow_at(CLOCK.elapsed().as_millis() as u64 + 1)
    }

    /// [`RateLimit::allow`] at `now` milliseconds (plus one) since [`CLOCK`].
    fn allow_at(&self, now: u64) -> Option<u64> {
        let period = REFUSAL_LOG_PERIOD.as_millis() as u64;
        let last = self.last.load(Ordering::Relaxed);
        if (last == 0 || now >= last + period)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
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

    /// Counts an analyzer refusal and logs it, rate-limited per reason: the
    /// first in each [`REFUSAL_LOG_PERIOD`] at warn level (with how many were
    /// held back), the others at debug level only.
    pub fn refuse_analyzer(&self, reason: AnalyzerRefusal, peer: &str, detail: &str) {
        let index = reason as usize;
        self.analyzer_refusals[index].add(1);
        match self.refusal_log[index].allow() {
            Some(suppressed) => tracing::warn!(
                %reason, peer, detail, suppressed,
                "analyzer connection refused (further refusals for this reason are only counted for {REFUSAL_LOG_PERIOD:?})"
            ),
            None => tracing::debug!(%reason, peer, detail, "analyzer connection refused"),
        }
    }

    /// Totals are the sums of their per-class counts, read once, so a snapshot
    /// is always consistent with itself.
    pub fn snapshot(&self) -> StatsSnapshot {
        let accepted_by_class = self.accepted_by_class.each_ref().map(Counter::get);
        let delivered_by_class = self.delivered_by_class.each_ref().map(Latency::count);
        StatsSnapshot {
            accepted: accepted_by_class.iter().sum(),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.rejected[*r as usize].get()))
                .collect(),
            bad_length_closes: self.bad_length_closes.get(),
            connections_refused: self.connections_refused.get(),
            analyzer_refusals: AnalyzerRefusal::ALL
                .iter()
                .map(|r| (r.as_str(), self.analyzer_refusals[*r as usize].get()))
                .collect(),
            routed: self.routed.get(),
            held: self.held.get(),
            diverted: self.diverted.get(),
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
    pub connections_refused: u64,
    /// By [`AnalyzerRefusal`] label.
    pub analyzer_refusals: Vec<(&'static str, u64)>,
    pub routed: u64,
    pub held: u64,
    pub diverted: u64,
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

    pub fn analyzer_refused(&self, reason: AnalyzerRefusal) -> u64 {
        self.analyzer_refusals
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
    fn refusals_are_counted_and_logged_once_per_period() {
        let stats = Stats::default();
        for _ in 0..3 {
            stats.refuse_analyzer(AnalyzerRefusal::BadWeight, "127.0.0.1:1", "test");
        }
        stats.refuse_analyzer(AnalyzerRefusal::ReservedId, "127.0.0.1:1", "test");
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.analyzer_refused(AnalyzerRefusal::BadWeight), 3);
        assert_eq!(snapshot.analyzer_refused(AnalyzerRefusal::ReservedId), 1);
        assert_eq!(snapshot.analyzer_refused(AnalyzerRefusal::Unauthorized), 0);
        let labels: Vec<&str> = AnalyzerRefusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            ["bad_weight", "bad_handshake", "unauthorized", "reserved_id"]
        );

        let limit = RateLimit::default();
        assert_eq!(limit.allow_at(1), Some(0), "the first is logged");
        assert_eq!(limit.allow_at(2), None, "the next within the period is not");
        assert_eq!(limit.allow_at(10_000), None);
        assert_eq!(
            limit.allow_at(10_001),
            Some(2),
            "a period later: logged, with the two held back"
        );
        assert_eq!(limit.allow_at(10_002), None);
    }
}
