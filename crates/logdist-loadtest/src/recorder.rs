//! Where the simulated analyzers commit what they processed: the ledger,
//! per-analyzer tallies and the event log, behind one lock that is taken once
//! per ack batch (not per message). Latencies go first into each analyzer's
//! own histograms (one per priority, behind a lock no other analyzer takes),
//! and are merged into the run's histograms when they are read
//! ([`Recorder::lock_collected`]): one histogram update per message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::durability_ledger::AckLedger;
use crate::ledger::{Ledger, Recorded};

/// One message as an analyzer saw it, waiting for the analyzer's next ack.
#[derive(Clone, Copy, Debug)]
pub enum Received {
    Valid {
        emitter: u32,
        counter: u64,
        priority: u8,
        priority_ok: bool,
        latency_ns: u64,
        bytes: u32,
    },
    /// Failed to parse or checksum; `emitter` if the id was readable.
    Rejected {
        emitter: Option<u32>,
        reason: &'static str,
    },
    /// Valid, but from an emitter id this run did not create.
    Foreign,
}

/// What happened to one simulated analyzer over the run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AnalyzerTally {
    /// Messages committed (acked), duplicates included.
    pub committed: u64,
    pub duplicates: u64,
    pub bytes: u64,
    pub connections: u64,
    pub kills: u64,
    pub stalls: u64,
    pub restarts: u64,
    /// Partitions: the link cut without FIN/RST, then restored.
    pub partitions: u64,
    /// Unacked messages thrown away by kills and partitions (the distributor must redeliver them).
    pub dropped_unacked: u64,
    /// Messages dropped by the `drop_every` test hook.
    pub hook_dropped: u64,
}

/// Something worth a line in the timeline and the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    /// Seconds since emitters started.
    pub at_secs: f64,
    pub analyzer: Option<usize>,
    pub kind: String,
    pub detail: String,
}

/// Latency histogram in nanoseconds, 3 significant digits, up to 10 minutes.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

pub struct RecorderState {
    pub ledger: Ledger,
    /// Replies to `ndjson_ack` emitters: which lines were acked `ok`.
    pub acks: AckLedger,
    pub latency_by_priority: BTreeMap<u8, Histogram<u64>>,
    /// Latencies committed since the last timeline sample.
    pub latency_interval: Histogram<u64>,
    /// Latencies committed since the last `reset_step` (ramp steps).
    pub latency_step: Histogram<u64>,
    pub analyzers: Vec<AnalyzerTally>,
    pub checksum_failures_unattributed: u64,
    pub rejection_reasons: BTreeMap<&'static str, u64>,
    pub foreign: u64,
    pub out_of_range: u64,
    pub priority_mismatches: u64,
    pub bytes: u64,
    pub events: Vec<Event>,
    pub protocol_errors: Vec<String>,
}

pub struct Recorder {
    state: Mutex<RecorderState>,
    /// Latencies each analyzer committed since they were last collected.
    latencies: Vec<Mutex<PriorityHistograms>>,
    epoch: Mutex<Instant>,
}

/// One latency histogram per priority, made when a priority first appears.
struct PriorityHistograms {
    by_priority: Vec<Option<Histogram<u64>>>,
}

impl PriorityHistograms {
    fn new() -> Self {
        PriorityHistograms {
            by_priority: (0..=u8::MAX).map(|_| None).collect(),
        }
    }

    fn record(&mut self, priority: u8, latency_ns: u64) {
        self.by_priority[usize::from(priority)]
            .get_or_insert_with(new_histogram)
            .saturating_record(latency_ns);
    }

    /// Add every latency to the run's histograms, and start empty again.
    fn move_into(&mut self, s: &mut RecorderState) {
        for (priority, h) in self.by_priority.iter_mut().enumerate() {
            let Some(h) = h.as_mut().filter(|h| !h.is_empty()) else {
                continue;
            };
            // Same bounds everywhere: adding cannot fail.
            let _ = s
                .latency_by_priority
                .entry(priority as u8)
                .or_insert_with(new_histogram)
                .add(&*h);
            let _ = s.latency_interval.add(&*h);
            let _ = s.latency_step.add(&*h);
            h.reset();
        }
    }
}

impl Recorder {
    pub fn new(emitters: usize, analyzers: usize) -> Self {
        Recorder {
            state: Mutex::new(RecorderState {
                ledger: Ledger::new(emitters),
                acks: AckLedger::new(emitters),
                latency_by_priority: BTreeMap::new(),
                latency_interval: new_histogram(),
                latency_step: new_histogram(),
                analyzers: vec![AnalyzerTally::default(); analyzers],
                checksum_failures_unattributed: 0,
                rejection_reasons: BTreeMap::new(),
                foreign: 0,
                out_of_range: 0,
                priority_mismatches: 0,
                bytes: 0,
                events: Vec::new(),
                protocol_errors: Vec::new(),
            }),
            latencies: (0..analyzers)
                .map(|_| Mutex::new(PriorityHistograms::new()))
                .collect(),
            epoch: Mutex::new(Instant::now()),
        }
    }

    /// Mark "now" as time zero for events (when emitters start).
    pub fn set_epoch(&self, at: Instant) {
        *self.epoch.lock() = at;
    }

    pub fn elapsed_secs(&self) -> f64 {
        self.epoch.lock().elapsed().as_secs_f64()
    }

    /// Commit an analyzer's acked batch and empty it.
    pub fn commit(&self, analyzer: usize, batch: &mut Vec<Received>) {
        if batch.is_empty() {
            return;
        }
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let mut latencies = self.latencies[analyzer].lock();
        for r in batch.drain(..) {
            match r {
                Received::Valid {
                    emitter,
                    counter,
                    priority,
                    priority_ok,
                    latency_ns,
                    bytes,
                } => {
                    let tally = &mut s.analyzers[analyzer];
                    tally.committed += 1;
                    tally.bytes += u64::from(bytes);
                    match s.ledger.record(emitter as usize, counter) {
                        Recorded::New => {}
                        Recorded::Duplicate => tally.duplicates += 1,
                        Recorded::OutOfRange => s.out_of_range += 1,
                    }
                    if !priority_ok {
                        s.priority_mismatches += 1;
                    }
                    s.bytes += u64::from(bytes);
                    latencies.record(priority, latency_ns.max(1));
                }
                Received::Rejected { emitter, reason } => {
                    s.analyzers[analyzer].committed += 1;
                    *s.rejection_reasons.entry(reason).or_default() += 1;
                    match emitter {
                        Some(e) if (e as usize) < s.ledger.emitter_count() => {
                            s.ledger.record_checksum_failure(e as usize)
                        }
                        _ => s.checksum_failures_unattributed += 1,
                    }
                }
                Received::Foreign => {
                    s.analyzers[analyzer].committed += 1;
                    s.foreign += 1;
                }
            }
        }
    }

    /// Record the replies an `ndjson_ack` emitter read: the counters of the
    /// lines acked `ok`, and the `reason` of each error reply.
    pub fn record_replies(&self, emitter: usize, ok: &[u64], rejected: &[String]) {
        if ok.is_empty() && rejected.is_empty() {
            return;
        }
        let mut s = self.state.lock();
        for &counter in ok {
            s.acks.record_ok(emitter, counter);
        }
        for reason in rejected {
            s.acks.record_rejected(emitter, reason);
        }
    }

    /// Has every line acked `ok` so far been committed by an analyzer?
    pub fn all_acked_received(&self) -> bool {
        let s = self.state.lock();
        s.acks.all_received(&s.ledger)
    }

    /// Run `f` on the analyzer's tally.
    pub fn with_analyzer(&self, analyzer: usize, f: impl FnOnce(&mut AnalyzerTally)) {
        f(&mut self.state.lock().analyzers[analyzer]);
    }

    pub fn event(&self, analyzer: Option<usize>, kind: &str, detail: String) {
        let at_secs = self.elapsed_secs().max(0.0);
        self.state.lock().events.push(Event {
            at_secs,
            analyzer,
            kind: kind.to_string(),
            detail,
        });
    }

    pub fn protocol_error(&self, analyzer: usize, what: String) {
        let msg = format!("analyzer {analyzer}: {what}");
        tracing::warn!("{msg}");
        self.state.lock().protocol_errors.push(msg);
    }

    /// Lock the state for reading or sampling (its latency histograms may
    /// lag: see [`Recorder::lock_collected`]).
    pub fn lock(&self) -> parking_lot::MutexGuard<'_, RecorderState> {
        self.state.lock()
    }

    /// Lock the state with every latency committed so far in its histograms.
    pub fn lock_collected(&self) -> parking_lot::MutexGuard<'_, RecorderState> {
        let mut s = self.state.lock();
        for latencies in &self.latencies {
            latencies.lock().move_into(&mut s);
        }
        s
    }

    /// Have all sent messages (per emitter) been committed?
    pub fn all_received(&self, sent: &[u64]) -> bool {
        self.state.lock().ledger.all_received(sent)
    }

    /// Start a ramp step: what was committed before is not its latency.
    pub fn reset_step(&self) {
        self.lock_collected().latency_step.reset();
    }
}

/// p50, p99, p99.9 and max of a histogram, as durations.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    pub fn p99(&self) -> Duration {
        Duration::from_nanos((self.p99_us * 1000.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_counts_everything_once() {
        let r = Recorder::new(2, 2);
        let v = |emitter, counter| Received::Valid {
            emitter,
            counter,
            priority: 3,
            priority_ok: true,
            latency_ns: 1_000_000,
            bytes: 500,
        };
        let mut batch = vec![v(0, 0), v(0, 1), v(1, 0)];
        r.commit(0, &mut batch);
        assert!(batch.is_empty());
        let mut batch = vec![
            v(0, 1),
            Received::Rejected {
                emitter: Some(1),
                reason: "checksum mismatch",
            },
            Received::Rejected {
                emitter: None,
                reason: "malformed payload",
            },
            Received::Foreign,
        ];
        r.commit(1, &mut batch);
        let s = r.lock_collected();
        assert_eq!(s.analyzers[0].committed, 3);
        assert_eq!(s.analyzers[1].committed, 4);
        assert_eq!(s.analyzers[1].duplicates, 1);
        assert_eq!(s.ledger.account(1, 1).checksum_failures, 1);
        assert_eq!(s.checksum_failures_unattributed, 1);
        assert_eq!(s.foreign, 1);
        assert_eq!(s.latency_by_priority[&3].len(), 4);
        let p = Percentiles::of(&s.latency_by_priority[&3]);
        assert!((p.p50_us - 1000.0).abs() < 2.0, "{p:?}");
        drop(s);
        assert!(r.all_received(&[2, 1]));
        assert!(!r.all_received(&[3, 1]));
    }
}
