//! One row per second of the run: offered vs delivered messages, latency,
//! messages in flight and overdue, generator lag, distributor CPU and memory,
//! and what the distributor and the load tester each cost per message.
//! Also renders the live progress line.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::emitter::EmitterShared;
use crate::proc_stats::{self, CpuMeter, ProcessCost, ProcessCounters, ProcessMeter};
use crate::recorder::{Percentiles, Recorder};

/// A message not received this long after it was sent counts as "lost so far"
/// in the live figures (the final report is exact, not an estimate).
pub const OVERDUE_AFTER_SECS: usize = 5;

#[derive(Clone, Debug, serde::Serialize)]
pub struct TimelineRow {
    /// Seconds since emitters started.
    pub t: f64,
    pub phase: String,
    /// Messages sent in this interval.
    pub offered: u64,
    /// Distinct messages newly received (acked) in this interval.
    pub delivered: u64,
    /// Messages committed by each analyzer in this interval.
    pub per_analyzer: Vec<u64>,
    pub latency: Percentiles,
    /// Sent but not received yet.
    pub in_flight: u64,
    /// Sent more than OVERDUE_AFTER_SECS ago and not received (`ndjson_ack`:
    /// only lines acked `ok` count).
    pub lost_so_far: u64,
    /// Worst emitter lag behind its schedule right now.
    pub generator_lag_ms: f64,
    pub distributor_cpu_pct: Option<f64>,
    pub distributor_rss_mib: Option<f64>,
    pub loadtest_cpu_pct: Option<f64>,
    /// What the distributor and the load tester cost per message received
    /// in this interval.
    pub costs: MessageCosts,
    pub events: String,
    /// Interval length in seconds (1 except possibly the last row).
    pub interval: f64,
}

pub struct Sampler {
    last_t: f64,
    last_sent: u64,
    last_distinct: u64,
    last_committed: Vec<u64>,
    events_seen: usize,
    /// Per-emitter sent counts at each of the last few samples.
    sent_history: VecDeque<Vec<u64>>,
    distributor_cpu: Option<CpuMeter>,
    /// Meters of logdist processes a crash run killed: (wall, CPU) seconds.
    distributor_cpu_before: (f64, f64),
    own_cpu: CpuMeter,
    /// Counters behind the per-message figures.
    distributor_meter: Option<ProcessMeter>,
    own_meter: ProcessMeter,
    last_counters: CountersAt,
    pub distributor_cpu_peak: f64,
    /// "Lost so far" counts only lines acked `ok` (`ndjson_ack` emitters).
    pub acked_only: bool,
}

impl Sampler {
    pub fn new(analyzers: usize, distributor_pid: Option<u32>) -> Self {
        Sampler {
            last_t: 0.0,
            last_sent: 0,
            last_distinct: 0,
            last_committed: vec![0; analyzers],
            events_seen: 0,
            sent_history: VecDeque::new(),
            distributor_cpu: distributor_pid.map(CpuMeter::new),
            distributor_cpu_before: (0.0, 0.0),
            own_cpu: CpuMeter::new(std::process::id()),
            distributor_meter: distributor_pid.map(|pid| ProcessMeter::new(pid, true)),
            own_meter: ProcessMeter::new(std::process::id(), false),
            last_counters: CountersAt::default(),
            distributor_cpu_peak: 0.0,
            acked_only: false,
        }
    }

    /// The counters now, with `messages` received so far.
    pub fn counters(&mut self, messages: u64) -> CountersAt {
        CountersAt {
            at: Some(Instant::now()),
            messages,
            distributor: self.distributor_meter.as_mut().and_then(|m| m.read()),
            loadtest: self.own_meter.read(),
        }
    }

    /// Why the distributor's system calls are not counted, if they are not.
    pub fn syscalls_unavailable(&self) -> Option<String> {
        self.distributor_meter
            .as_ref()
            .and_then(|m| m.syscalls_unavailable())
    }

    /// Stop counting system calls (ends `perf`).
    pub fn stop_counting(&mut self) {
        if let Some(m) = &mut self.distributor_meter {
            m.stop();
        }
    }

    /// Meter the CPU of a new logdist (restarted after a kill); the average
    /// goes on over the old and the new ones.
    pub fn follow_distributor(&mut self, pid: u32) {
        if let Some((wall, cpu)) = self.distributor_cpu.as_ref().and_then(|m| m.totals()) {
            self.distributor_cpu_before.0 += wall;
            self.distributor_cpu_before.1 += cpu;
        }
        self.distributor_cpu = Some(CpuMeter::new(pid));
        if let Some(m) = &mut self.distributor_meter {
            m.follow(pid);
        }
    }

    /// Restart the CPU meters (call when emitters start, so averages cover the run).
    pub fn restart_meters(&mut self) {
        if let Some(m) = &self.distributor_cpu {
            self.distributor_cpu = Some(CpuMeter::new(m.pid()));
        }
        self.own_cpu = CpuMeter::new(std::process::id());
        let messages = self.last_counters.messages;
        self.last_counters = self.counters(messages);
    }

    pub fn distributor_cpu_average(&self) -> Option<f64> {
        let (wall0, cpu0) = self.distributor_cpu_before;
        let (wall, cpu) = self
            .distributor_cpu
            .as_ref()
            .and_then(|m| m.totals())
            .unwrap_or((0.0, 0.0));
        (wall + wall0 > 0.0).then(|| (cpu + cpu0) / (wall + wall0) * 100.0)
    }

    pub fn own_cpu_average(&self) -> Option<f64> {
        self.own_cpu.average()
    }

    pub fn sample(
        &mut self,
        t: f64,
        phase: &str,
        emitters: &[Arc<EmitterShared>],
        recorder: &Recorder,
    ) -> TimelineRow {
        let sent: Vec<u64> = emitters.iter().map(|e| e.sent()).collect();
        let sent_total: u64 = sent.iter().sum();
        let lag_us = emitters
            .iter()
            .map(|e| e.lag_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        self.sent_history.push_back(sent.clone());
        while self.sent_history.len() > OVERDUE_AFTER_SECS + 1 {
            self.sent_history.pop_front();
        }
        let cutoff = if self.sent_history.len() > OVERDUE_AFTER_SECS {
            self.sent_history.front().cloned().unwrap_or_default()
        } else {
            vec![0; sent.len()]
        };

        let (distinct, committed, latency, lost_so_far, events) = {
            let mut s = recorder.lock_collected();
            let distinct = s.ledger.total_distinct();
            let committed: Vec<u64> = s.analyzers.iter().map(|a| a.committed).collect();
            let latency = Percentiles::of(&s.latency_interval);
            s.latency_interval.reset();
            let lost = if self.acked_only {
                let s = &mut *s;
                s.acks.overdue(&s.ledger, &cutoff)
            } else {
                s.ledger.overdue(&cutoff)
            };
            let events: Vec<String> = s.events[self.events_seen..]
                .iter()
                .map(|e| match e.analyzer {
                    Some(a) => format!("a{a} {}", e.kind),
                    None => e.kind.clone(),
                })
                .collect();
            self.events_seen = s.events.len();
            (distinct, committed, latency, lost, events.join("; "))
        };

        let distributor_cpu_pct = self.distributor_cpu.as_mut().and_then(|m| m.sample());
        if let Some(c) = distributor_cpu_pct {
            self.distributor_cpu_peak = self.distributor_cpu_peak.max(c);
        }
        let distributor_rss_mib = self
            .distributor_cpu
            .as_ref()
            .and_then(|m| proc_stats::status_bytes(m.pid(), "VmRSS"))
            .map(|b| b as f64 / (1024.0 * 1024.0));

        let counters = self.counters(committed.iter().sum());
        let costs = self.last_counters.costs_until(&counters);
        self.last_counters = counters;
        let row = TimelineRow {
            t,
            phase: phase.to_string(),
            offered: sent_total - self.last_sent,
            delivered: distinct - self.last_distinct,
            per_analyzer: committed
                .iter()
                .zip(&self.last_committed)
                .map(|(now, before)| now - before)
                .collect(),
            latency,
            in_flight: sent_total.saturating_sub(distinct),
            lost_so_far,
            generator_lag_ms: lag_us as f64 / 1000.0,
            distributor_cpu_pct,
            distributor_rss_mib,
            loadtest_cpu_pct: self.own_cpu.sample(),
            costs,
            events,
            interval: (t - self.last_t).max(1e-9),
        };
        self.last_t = t;
        self.last_sent = sent_total;
        self.last_distinct = distinct;
        self.last_committed = committed;
        row
    }
}

/// The counters of the distributor and the load tester at one moment, and
/// how many messages the analyzers had received by then.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountersAt {
    at: Option<Instant>,
    pub messages: u64,
    distributor: Option<ProcessCounters>,
    loadtest: Option<ProcessCounters>,
}

impl CountersAt {
    /// What each cost per message from these counters to `later`'s.
    pub fn costs_until(&self, later: &CountersAt) -> MessageCosts {
        let (Some(t0), Some(t1)) = (self.at, later.at) else {
            return MessageCosts::default();
        };
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        let messages = later.messages.saturating_sub(self.messages);
        let cost = |a: &Option<ProcessCounters>, b: &Option<ProcessCounters>| {
            ProcessCost::between(a.as_ref()?, b.as_ref()?, secs, messages)
        };
        MessageCosts {
            distributor: cost(&self.distributor, &later.distributor),
            loadtest: cost(&self.loadtest, &later.loadtest),
        }
    }
}

/// What the distributor (logdist, or the relay of a baseline) and the load
/// tester itself cost per message over a window.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MessageCosts {
    pub distributor: Option<ProcessCost>,
    pub loadtest: Option<ProcessCost>,
}

/// Live progress on stderr: rewritten in place on a terminal, one line per
/// second otherwise.
pub struct Progress {
    tty: bool,
    enabled: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stderr().is_terminal(),
            enabled,
        }
    }

    pub fn show(&self, row: &TimelineRow, total: Duration) {
        if !self.enabled {
            return;
        }
        let line = format_progress(row, total);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    pub fn finish(&self) {
        if self.enabled && self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

pub fn format_progress(row: &TimelineRow, total: Duration) -> String {
    let rate = |n: u64| n as f64 / row.interval;
    let mut line = format!(
        "[{:>5.0}s/{}s {}] offered {:>8.0} msg/s  delivered {:>8.0} msg/s  in flight {:>6}  lost {:>4}  p99 {:>7.2} ms",
        row.t,
        total.as_secs(),
        row.phase,
        rate(row.offered),
        rate(row.delivered),
        row.in_flight,
        row.lost_so_far,
        row.latency.p99_us / 1000.0,
    );
    if row.generator_lag_ms > 100.0 {
        line.push_str(&format!(
            "  GENERATOR BEHIND {:.0} ms",
            row.generator_lag_ms
        ));
    }
    if let Some(c) = row.distributor_cpu_pct {
        line.push_str(&format!("  logdist cpu {c:.0}%"));
    }
    if !row.events.is_empty() {
        line.push_str(&format!("  [{}]", row.events));
    }
    line
}
