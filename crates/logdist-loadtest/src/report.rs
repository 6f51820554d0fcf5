//! The end-of-run report: exact reconciliation, invariants, and the files under
//! the results directory (summary.json, summary.txt, timeline.csv, weights.csv).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::chaos::ChaosEvent;
use crate::crash::CrashResult;
use crate::distributor_process::{Durability, StopOutcome};
use crate::durability_ledger::AckAccount;
use crate::ledger::EmitterAccount;
use crate::profile::{AnalyzerFormat, Checks, EmitterKind, Handshake};
use crate::recorder::{AnalyzerTally, Event, Percentiles};
use crate::timeline::{MessageCosts, TimelineRow};

/// An emitter's lag above this means the generator could not keep its schedule.
pub const GENERATOR_LAG_WARN_MS: f64 = 100.0;

#[derive(Clone, Debug, Serialize)]
pub struct EmitterRow {
    pub id: String,
    /// For `ndjson_ack` emitters, `lost` counts lines acked `ok` that never
    /// arrived (the rest carries no guarantee).
    #[serde(flatten)]
    pub account: EmitterAccount,
    /// `ndjson_ack` emitters: the reconciliation against their replies.
    pub acks: Option<AckAccount>,
    /// `ndjson_ack` emitters: connections lost (and made again).
    pub reconnects: Option<u64>,
    pub max_lag_ms: f64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AnalyzerRow {
    pub index: usize,
    pub handshake: Handshake,
    pub format: AnalyzerFormat,
    pub weight: f32,
    pub expected_share: f64,
    pub share: f64,
    /// share / expected_share - 1
    pub deviation: f64,
    #[serde(flatten)]
    pub tally: AnalyzerTally,
}

#[derive(Clone, Debug, Serialize)]
pub struct PriorityLatency {
    pub priority: u8,
    #[serde(flatten)]
    pub latency: Percentiles,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub checksum_failures: u64,
    pub unexpected: u64,
    pub foreign: u64,
    pub out_of_range: u64,
    pub priority_mismatches: u64,
    pub dead_lettered: Option<u64>,
    pub bytes_received: u64,
}

/// The replies to all `ndjson_ack` emitters (see `durability_ledger`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AckTotals {
    pub acked_ok: u64,
    pub rejected: u64,
    pub unanswered: u64,
    pub unacked_received: u64,
    pub reconnects: u64,
    /// Error replies by `reason`.
    pub rejection_reasons: Vec<(String, u64)>,
}

impl AckTotals {
    pub fn add(&mut self, a: &AckAccount, reconnects: u64) {
        self.acked_ok += a.acked_ok;
        self.rejected += a.rejected;
        self.unanswered += a.unanswered;
        self.unacked_received += a.unacked_received;
        self.reconnects += reconnects;
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    pub target_msgs_per_s: f64,
    pub offered_msgs_per_s: f64,
    pub delivered_msgs_per_s: f64,
    pub delivered_peak_msgs_per_s: f64,
    pub delivered_mb_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DistributorStats {
    pub pid: u32,
    pub cpu_avg_pct: Option<f64>,
    pub cpu_peak_pct: f64,
    pub peak_rss_mib: Option<f64>,
    pub stop: StopOutcome,
    pub log: String,
    pub config: String,
    /// Where logdist writes dead letters.
    pub dead_letters: String,
}

/// One step of the `max` ramp (`ramp::run`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RampStep {
    pub step: usize,
    pub target_rate: f64,
    pub offered_rate: f64,
    pub sent: u64,
    pub lost: u64,
    pub latency: Percentiles,
    pub mb_per_s: f64,
    pub generator_max_lag_ms: f64,
    pub drain_secs: f64,
    /// What the distributor and the load tester cost per message over the
    /// step and its drain.
    pub costs: MessageCosts,
    pub passed: bool,
    pub reason: String,
}

/// The whole `max` ramp, as the report shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RampResult {
    pub steps: Vec<RampStep>,
    /// The highest passing step.
    pub best: Option<RampStep>,
    pub stop_reason: String,
    pub max_p99_ms: f64,
}

impl RampResult {
    /// The steps, and the max line: `MAX SUSTAINED:` for logdist,
    /// `<label> MAX SUSTAINED:` for a baseline (scripts read the first).
    pub fn render_text(&self, label: Option<&str>, distributor: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<5} {:>12} {:>12} {:>8} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9}  result",
            "step",
            "target/s",
            "offered/s",
            "lost",
            "p50 ms",
            "p99 ms",
            "MB/s",
            "lag ms",
            "usr µs",
            "sys µs",
            "tester %"
        );
        for st in &self.steps {
            let d = st.costs.distributor;
            let _ = writeln!(
                s,
                "{:<5} {:>12.0} {:>12.0} {:>8} {:>10.3} {:>10.3} {:>9.1} {:>8.1} {:>8} {:>8} {:>9}  {}",
                st.step,
                st.target_rate,
                st.offered_rate,
                st.lost,
                st.latency.p50_us / 1000.0,
                st.latency.p99_us / 1000.0,
                st.mb_per_s,
                st.generator_max_lag_ms,
                fixed(d.map(|c| c.user_us_per_msg), 3),
                fixed(d.map(|c| c.sys_us_per_msg), 3),
                fixed(st.costs.loadtest.map(|c| c.cpu_pct), 0),
                if st.passed {
                    "pass".to_string()
                } else {
                    format!("FAIL: {}", st.reason)
                }
            );
        }
        let prefix = label.map(|l| format!("{l} ")).unwrap_or_default();
        let _ = writeln!(s, "{prefix}ramp stopped: {}", self.stop_reason);
        match &self.best {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "{prefix}MAX SUSTAINED: {:.0} msg/s, {:.1} MB/s payload (zero loss, p99 {:.3} ms <= {:.1} ms)",
                    b.offered_rate,
                    b.mb_per_s,
                    b.latency.p99_us / 1000.0,
                    self.max_p99_ms
                );
                let _ = writeln!(s, "{prefix}at that step, per message received:");
                render_costs(&mut s, &b.costs, distributor);
            }
            None => {
                let _ = writeln!(s, "{prefix}MAX SUSTAINED: none (no step passed)");
            }
        }
        s
    }
}

/// `max --baseline relay`: the same ramp, run first against the load
/// tester's bare relay (`relay.rs`), which shows what this machine can carry.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub ramp: RampResult,
    pub peak_rss_mib: Option<f64>,
    pub stop: StopOutcome,
    pub syscalls_unavailable: Option<String>,
    /// logdist's max sustained msg/s and MB/s as a share of the relay's
    /// (None when either has no passing step).
    pub ratio_msgs: Option<f64>,
    pub ratio_mb: Option<f64>,
}

impl Baseline {
    pub fn new(
        ramp: RampResult,
        peak_rss_mib: Option<f64>,
        stop: StopOutcome,
        syscalls_unavailable: Option<String>,
    ) -> Self {
        Baseline {
            ramp,
            peak_rss_mib,
            stop,
            syscalls_unavailable,
            ratio_msgs: None,
            ratio_mb: None,
        }
    }

    /// Compare with logdist's ramp.
    pub fn compare(&mut self, logdist: &RampResult) {
        let (Some(relay), Some(ours)) = (&self.ramp.best, &logdist.best) else {
            return;
        };
        self.ratio_msgs =
            (relay.offered_rate > 0.0).then(|| ours.offered_rate / relay.offered_rate);
        self.ratio_mb = (relay.mb_per_s > 0.0).then(|| ours.mb_per_s / relay.mb_per_s);
    }

    fn render_text(&self, s: &mut String, logdist: Option<&RampResult>) {
        let _ = writeln!(
            s,
            "baseline: the same ramp against the load tester's bare relay (round robin, no queues): \
             peak RSS {}, stop: {}",
            mib(self.peak_rss_mib),
            self.stop.description
        );
        if let Some(why) = &self.syscalls_unavailable {
            let _ = writeln!(s, "relay system calls: n/a ({why})");
        }
        s.push_str(&self.ramp.render_text(Some("RELAY"), "relay"));
        let best = |r: Option<&RampResult>| {
            r.and_then(|r| r.best.as_ref())
                .map(|b| format!("{:.0} msg/s, {:.1} MB/s", b.offered_rate, b.mb_per_s))
                .unwrap_or_else(|| "none".into())
        };
        let _ = writeln!(
            s,
            "LOGDIST / RELAY: {} of the msg/s, {} of the MB/s (logdist {}; relay {})",
            fixed(self.ratio_msgs, 3),
            fixed(self.ratio_mb, 3),
            best(logdist),
            best(Some(&self.ramp))
        );
    }
}

/// The per-message lines of the distributor and the load tester.
fn render_costs(s: &mut String, costs: &MessageCosts, distributor: &str) {
    match &costs.distributor {
        Some(c) => {
            let _ = writeln!(
                s,
                "  {distributor:<11} user {:.3} µs  sys {:.3} µs  {:.4} context switches  {} system calls  \
                 (CPU {:.0} % of one core, {} messages in {:.1} s)",
                c.user_us_per_msg,
                c.sys_us_per_msg,
                c.ctx_switches_per_msg,
                fixed(c.syscalls_per_msg, 3),
                c.cpu_pct,
                c.messages,
                c.secs
            );
        }
        None => {
            let _ = writeln!(
                s,
                "  {distributor:<11} n/a (not started by the run, or no messages)"
            );
        }
    }
    if let Some(c) = &costs.loadtest {
        let _ = writeln!(
            s,
            "  {:<11} user {:.3} µs  sys {:.3} µs  {:.4} context switches  (CPU {:.0} % of one core: \
             the generator's own share)",
            "load tester", c.user_us_per_msg, c.sys_us_per_msg, c.ctx_switches_per_msg, c.cpu_pct
        );
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub profile: String,
    pub description: String,
    pub started_at: String,
    pub results_dir: String,
    pub profile_source: String,
    pub run_secs: f64,
    pub profile_duration_secs: f64,
    pub drain_secs: f64,
    pub drained: bool,
    pub target: String,
    pub analyzer_target: String,
    pub checksum: String,
    pub seed: u64,
    pub emitter_kind: EmitterKind,
    /// logdist's `[durability]` (None: a distributor the run did not start).
    pub durability: Option<Durability>,
    pub emitter_id_prefix: String,
    pub passed: bool,
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
    pub totals: Totals,
    /// `ndjson_ack` emitters: what their replies said.
    pub acks: Option<AckTotals>,
    pub throughput: Throughput,
    pub latency_overall: Percentiles,
    pub latency_by_priority: Vec<PriorityLatency>,
    pub emitters: Vec<EmitterRow>,
    pub analyzers: Vec<AnalyzerRow>,
    pub generator_max_lag_ms: f64,
    pub generator_write_wait_secs: f64,
    pub loadtest_cpu_avg_pct: Option<f64>,
    pub distributor: Option<DistributorStats>,
    pub rejection_reasons: Vec<(String, u64)>,
    pub protocol_errors: Vec<String>,
    pub chaos_schedule: Vec<ChaosEvent>,
    pub events: Vec<Event>,
    pub ramp: Option<RampResult>,
    /// `max --baseline relay`: the relay's ramp and logdist / relay.
    pub baseline: Option<Baseline>,
    /// Per message received, from the emitters' start to the end of the run.
    pub costs: MessageCosts,
    /// Why logdist's system calls were not counted (perf missing or not
    /// permitted), when they were not.
    pub syscalls_unavailable: Option<String>,
    pub crash: Option<CrashResult>,
    pub aborted: Option<String>,
}

impl Summary {
    /// Work out failures and warnings from the figures.
    pub fn evaluate(&mut self, checks: &Checks) {
        let mut failures = Vec::new();
        let mut warnings = Vec::new();
        let t = &self.totals;

        if let Some(why) = &self.aborted {
            failures.push(format!("RUN ABORTED: {why}"));
        }
        if t.lost > 0 {
            let worst: Vec<String> = self
                .emitters
                .iter()
                .filter(|e| e.account.lost > 0)
                .take(5)
                .map(|e| {
                    format!(
                        "{} lost {} (first missing counters {:?})",
                        e.id, e.account.lost, e.account.first_lost
                    )
                })
                .collect();
            let mut msg = match &self.acks {
                Some(a) => format!(
                    "LOSS: {} of {} messages acked ok by logdist never reached an analyzer \
                     ({:.3} %; durability {}): {}",
                    t.lost,
                    a.acked_ok,
                    t.lost as f64 * 100.0 / a.acked_ok.max(1) as f64,
                    self.durability
                        .as_ref()
                        .map_or_else(|| "unknown".to_string(), |d| d.describe()),
                    worst.join("; ")
                ),
                None => format!(
                    "LOSS: {} of {} sent messages never reached an analyzer ({:.3} %): {}",
                    t.lost,
                    t.sent,
                    t.lost as f64 * 100.0 / t.sent.max(1) as f64,
                    worst.join("; ")
                ),
            };
            if let Some(d) = t.dead_lettered.filter(|&d| d > 0) {
                let _ = write!(msg, "; the distributor dead-lettered {d} messages");
            }
            let hooked: u64 = self.analyzers.iter().map(|a| a.tally.hook_dropped).sum();
            if hooked > 0 {
                let _ = write!(
                    msg,
                    "; the drop_every test hook made analyzers drop {hooked} acked messages"
                );
            }
            if !self.drained {
                let _ = write!(
                    msg,
                    "; still missing after the {:.1} s drain",
                    self.drain_secs
                );
            }
            failures.push(msg);
        }
        if let Some(d) = t.dead_lettered.filter(|&d| d > 0) {
            let file = self
                .distributor
                .as_ref()
                .map_or("the dead-letter file", |s| s.dead_letters.as_str());
            failures.push(format!(
                "DEAD LETTERS: {d} messages were dead-lettered by logdist (see {file})"
            ));
        }
        if t.duplicated > 0 {
            let msg = format!(
                "DUPLICATES: {} messages were processed twice (acked by an analyzer more than once)",
                t.duplicated
            );
            if checks.allow_duplicates {
                warnings.push(msg);
            } else {
                failures.push(msg);
            }
        }
        if let Some(a) = self.acks.as_ref().filter(|a| a.rejected > 0) {
            let reasons: Vec<String> = a
                .rejection_reasons
                .iter()
                .map(|(r, n)| format!("{n} x {r}"))
                .collect();
            failures.push(format!(
                "REJECTED: logdist answered {} valid lines with an error ({})",
                a.rejected,
                reasons.join(", ")
            ));
        }
        let bad_checksums = t.checksum_failures;
        if bad_checksums > 0 {
            let reasons: Vec<String> = self
                .rejection_reasons
                .iter()
                .map(|(r, n)| format!("{n} x {r}"))
                .collect();
            failures.push(format!(
                "CHECKSUM: {bad_checksums} messages arrived corrupted or unparsable ({})",
                reasons.join(", ")
            ));
        }
        if t.priority_mismatches > 0 {
            failures.push(format!(
                "PRIORITY: {} messages arrived with a different priority than they were sent with",
                t.priority_mismatches
            ));
        }
        if t.unexpected > 0 || t.out_of_range > 0 {
            failures.push(format!(
                "INTEGRITY: {} messages arrived that their emitter never sent",
                t.unexpected + t.out_of_range
            ));
        }
        if t.foreign > 0 {
            warnings.push(format!(
                "{} messages from other runs or unknown emitters arrived (ignored)",
                t.foreign
            ));
        }
        for e in &self.emitters {
            if let Some(err) = &e.error {
                failures.push(format!("EMITTER: {err}"));
            }
        }
        for p in &self.protocol_errors {
            failures.push(format!("ANALYZER: {p}"));
        }
        if checks.check_shares && t.received > 0 {
            for a in &self.analyzers {
                if a.deviation.abs() > checks.share_tolerance {
                    failures.push(format!(
                        "SHARE: analyzer a{} got {:.3} % of messages, expected {:.3} % for weight {} \
                         (deviation {:+.2} %, tolerance {:.2} %)",
                        a.index,
                        a.share * 100.0,
                        a.expected_share * 100.0,
                        a.weight,
                        a.deviation * 100.0,
                        checks.share_tolerance * 100.0
                    ));
                }
            }
        }
        if let Some(bound) = checks.max_p99
            && self.latency_overall.p99() > bound
        {
            failures.push(format!(
                "LATENCY: p99 {:.3} ms is over the bound {:?}",
                self.latency_overall.p99_us / 1000.0,
                bound
            ));
        }
        if let Some(d) = &self.distributor
            && !d.stop.clean()
        {
            failures.push(format!("DISTRIBUTOR: logdist {}", d.stop.description));
        }
        if self.generator_max_lag_ms > GENERATOR_LAG_WARN_MS {
            warnings.push(format!(
                "the load generator fell behind its schedule by up to {:.0} ms \
                 (offered {:.0} of {:.0} msg/s; emitters spent {:.1} s in socket writes in \
                 total, which grows with distributor backpressure)",
                self.generator_max_lag_ms,
                self.throughput.offered_msgs_per_s,
                self.throughput.target_msgs_per_s,
                self.generator_write_wait_secs
            ));
        }
        if let Some(r) = &self.ramp
            && r.best.is_none()
        {
            failures.push(format!(
                "RAMP: not even the first step passed ({})",
                r.stop_reason
            ));
        }
        self.passed = failures.is_empty();
        self.failures = failures;
        self.warnings = warnings;
    }

    /// The report as text (printed and written to summary.txt).
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let t = &self.totals;
        let _ = writeln!(
            s,
            "logdist load test: profile {} ({}) - {}",
            self.profile, self.description, self.started_at
        );
        let _ = writeln!(
            s,
            "ran {:.1} s (profile {:.0} s) + drain {:.1} s; emitters -> {}, analyzers -> {}; checksum {}; seed {}",
            self.run_secs,
            self.profile_duration_secs,
            self.drain_secs,
            self.target,
            self.analyzer_target,
            self.checksum,
            self.seed
        );
        let _ = writeln!(
            s,
            "emitters: {}; logdist durability: {}",
            match self.emitter_kind {
                EmitterKind::Frames => "binary frames, open loop",
                EmitterKind::NdjsonAck => "NDJSON with a reply per line (ndjson_ack), closed loop",
            },
            self.durability.as_ref().map_or_else(
                || "unknown (not started by the run)".to_string(),
                |d| d.describe()
            )
        );
        let _ = writeln!(s, "results: {}", self.results_dir);
        let _ = writeln!(s);
        let _ = writeln!(s, "RESULT: {}", if self.passed { "PASS" } else { "FAIL" });
        for f in &self.failures {
            let _ = writeln!(s, "  FAILED  {f}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  WARNING {w}");
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "messages: sent {}  received {}  lost {}  duplicated {}  checksum failures {}  priority mismatches {}{}",
            t.sent,
            t.received,
            t.lost,
            t.duplicated,
            t.checksum_failures,
            t.priority_mismatches,
            match t.dead_lettered {
                Some(d) => format!("  dead-lettered {d}"),
                None => String::new(),
            }
        );
        if let Some(a) = &self.acks {
            let _ = writeln!(
                s,
                "replies: acked ok {}  rejected {}  unanswered {}  received without an ok {}  reconnects {}",
                a.acked_ok, a.rejected, a.unanswered, a.unacked_received, a.reconnects
            );
        }
        let tp = &self.throughput;
        let _ = writeln!(
            s,
            "throughput: target {:.0} msg/s  offered {:.0} msg/s  delivered {:.0} msg/s (peak {:.0})  {:.2} MB/s payload",
            tp.target_msgs_per_s,
            tp.offered_msgs_per_s,
            tp.delivered_msgs_per_s,
            tp.delivered_peak_msgs_per_s,
            tp.delivered_mb_per_s
        );
        let _ = writeln!(
            s,
            "generator: max lag {:.1} ms, {:.2} s waiting on writes; load test CPU {}",
            self.generator_max_lag_ms,
            self.generator_write_wait_secs,
            pct(self.loadtest_cpu_avg_pct)
        );
        if let Some(d) = &self.distributor {
            let _ = writeln!(
                s,
                "distributor: pid {}  CPU avg {} (peak {:.0} %) of one core  peak RSS {}  stop: {}",
                d.pid,
                pct(d.cpu_avg_pct),
                d.cpu_peak_pct,
                d.peak_rss_mib
                    .map(|m| format!("{m:.1} MiB"))
                    .unwrap_or_else(|| "n/a".into()),
                d.stop.description
            );
        }
        let _ = writeln!(
            s,
            "per message received, from the emitters' start to the end:"
        );
        render_costs(&mut s, &self.costs, "logdist");
        if let Some(why) = &self.syscalls_unavailable {
            let _ = writeln!(s, "  system calls: n/a ({why})");
        }
        let _ = writeln!(s);

        match &self.acks {
            None => self.render_emitters(&mut s),
            Some(a) => self.render_ack_emitters(&mut s, a),
        }
        let _ = writeln!(s);
        if let Some(c) = &self.crash {
            s.push_str(&c.render_text());
            let _ = writeln!(s);
        }

        let _ = writeln!(
            s,
            "{:<9} {:<12} {:>7} {:>10} {:>9} {:>9} {:>9} {:>6} {:>6} {:>8} {:>9}",
            "analyzer",
            "protocol",
            "weight",
            "received",
            "share %",
            "expect %",
            "dev %",
            "kills",
            "stalls",
            "restarts",
            "unacked"
        );
        for a in &self.analyzers {
            let proto = format!(
                "{}/{}",
                match a.handshake {
                    Handshake::Seed => "seed",
                    Handshake::Hello => "hello",
                },
                match a.format {
                    AnalyzerFormat::Frame => "frame",
                    AnalyzerFormat::Ndjson => "ndjson",
                }
            );
            let _ = writeln!(
                s,
                "{:<9} {:<12} {:>7} {:>10} {:>9.3} {:>9.3} {:>+9.3} {:>6} {:>6} {:>8} {:>9}",
                format!("a{}", a.index),
                proto,
                a.weight,
                a.tally.committed,
                a.share * 100.0,
                a.expected_share * 100.0,
                a.deviation * 100.0,
                a.tally.kills,
                a.tally.stalls,
                a.tally.restarts,
                a.tally.dropped_unacked
            );
        }
        let _ = writeln!(s);

        let _ = writeln!(
            s,
            "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency", "count", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let row = |s: &mut String, name: &str, p: &Percentiles| {
            let _ = writeln!(
                s,
                "{:<10} {:>10} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                name,
                p.count,
                p.p50_us / 1000.0,
                p.p99_us / 1000.0,
                p.p999_us / 1000.0,
                p.max_us / 1000.0
            );
        };
        for p in &self.latency_by_priority {
            row(&mut s, &format!("prio {}", p.priority), &p.latency);
        }
        row(&mut s, "all", &self.latency_overall);

        if !self.chaos_schedule.is_empty() || !self.events.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "events:");
            for e in &self.events {
                let who = e.analyzer.map(|a| format!("a{a} ")).unwrap_or_default();
                let _ = writeln!(s, "  {:>7.2}s {who}{}: {}", e.at_secs, e.kind, e.detail);
            }
        }
        if let Some(r) = &self.ramp {
            let _ = writeln!(s);
            s.push_str(&r.render_text(None, "logdist"));
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(s);
            b.render_text(&mut s, self.ramp.as_ref());
        }
        s
    }

    fn render_emitters(&self, s: &mut String) {
        let t = &self.totals;
        let _ = writeln!(
            s,
            "{:<18} {:>10} {:>10} {:>8} {:>6} {:>9} {:>9}",
            "emitter", "sent", "received", "lost", "dup", "checksum", "lag ms"
        );
        for e in &self.emitters {
            let a = &e.account;
            let _ = writeln!(
                s,
                "{:<18} {:>10} {:>10} {:>8} {:>6} {:>9} {:>9.1}",
                e.id, a.sent, a.received, a.lost, a.duplicated, a.checksum_failures, e.max_lag_ms
            );
        }
        let _ = writeln!(
            s,
            "{:<18} {:>10} {:>10} {:>8} {:>6} {:>9}",
            "total", t.sent, t.received, t.lost, t.duplicated, t.checksum_failures
        );
    }

    /// `ndjson_ack` emitters: lost means acked ok and never received.
    fn render_ack_emitters(&self, s: &mut String, totals: &AckTotals) {
        let t = &self.totals;
        let _ = writeln!(
            s,
            "{:<18} {:>10} {:>10} {:>10} {:>8} {:>6} {:>12} {:>9} {:>7} {:>9}",
            "emitter",
            "sent",
            "acked ok",
            "received",
            "lost",
            "dup",
            "unacked rcvd",
            "checksum",
            "reconn",
            "lag ms"
        );
        for e in &self.emitters {
            let (a, acks) = (&e.account, e.acks.clone().unwrap_or_default());
            let _ = writeln!(
                s,
                "{:<18} {:>10} {:>10} {:>10} {:>8} {:>6} {:>12} {:>9} {:>7} {:>9.1}",
                e.id,
                a.sent,
                acks.acked_ok,
                a.received,
                a.lost,
                a.duplicated,
                acks.unacked_received,
                a.checksum_failures,
                e.reconnects.unwrap_or(0),
                e.max_lag_ms
            );
        }
        let _ = writeln!(
            s,
            "{:<18} {:>10} {:>10} {:>10} {:>8} {:>6} {:>12} {:>9} {:>7}",
            "total",
            t.sent,
            totals.acked_ok,
            t.received,
            t.lost,
            t.duplicated,
            totals.unacked_received,
            t.checksum_failures,
            totals.reconnects
        );
    }

    /// Write summary.json, summary.txt, timeline.csv and weights.csv.
    pub fn write_files(&self, dir: &Path, timeline: &[TimelineRow]) -> std::io::Result<()> {
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::write(dir.join("summary.txt"), self.render_text())?;
        std::fs::write(
            dir.join("timeline.csv"),
            timeline_csv(timeline, self.analyzers.len()),
        )?;
        std::fs::write(dir.join("weights.csv"), weights_csv(&self.analyzers))?;
        Ok(())
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|c| format!("{c:.1} %"))
        .unwrap_or_else(|| "n/a".into())
}

fn mib(v: Option<f64>) -> String {
    v.map(|m| format!("{m:.1} MiB"))
        .unwrap_or_else(|| "n/a".into())
}

/// `v` with `decimals`, or "n/a".
fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}"))
        .unwrap_or_else(|| "n/a".into())
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_default()
}

pub fn timeline_csv(rows: &[TimelineRow], analyzers: usize) -> String {
    let mut s = String::from(
        "t_s,phase,offered_msgs,delivered_msgs,offered_msgs_per_s,delivered_msgs_per_s,in_flight,lost_so_far,\
         p50_us,p99_us,max_us,generator_lag_ms,distributor_cpu_pct,distributor_rss_mib,loadtest_cpu_pct,\
         distributor_user_us_per_msg,distributor_sys_us_per_msg,distributor_ctx_switches_per_msg,\
         distributor_syscalls_per_msg,loadtest_user_us_per_msg,loadtest_sys_us_per_msg",
    );
    for a in 0..analyzers {
        let _ = write!(s, ",a{a}_msgs");
    }
    s.push_str(",events\n");
    for r in rows {
        let _ = write!(
            s,
            "{:.3},{},{},{},{:.1},{:.1},{},{},{:.1},{:.1},{:.1},{:.2},{},{},{}",
            r.t,
            r.phase,
            r.offered,
            r.delivered,
            r.offered as f64 / r.interval,
            r.delivered as f64 / r.interval,
            r.in_flight,
            r.lost_so_far,
            r.latency.p50_us,
            r.latency.p99_us,
            r.latency.max_us,
            r.generator_lag_ms,
            opt(r.distributor_cpu_pct),
            opt(r.distributor_rss_mib),
            opt(r.loadtest_cpu_pct),
        );
        let (d, l) = (r.costs.distributor, r.costs.loadtest);
        let per_msg = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
        let _ = write!(
            s,
            ",{},{},{},{},{},{}",
            per_msg(d.map(|c| c.user_us_per_msg)),
            per_msg(d.map(|c| c.sys_us_per_msg)),
            per_msg(d.map(|c| c.ctx_switches_per_msg)),
            per_msg(d.and_then(|c| c.syscalls_per_msg)),
            per_msg(l.map(|c| c.user_us_per_msg)),
            per_msg(l.map(|c| c.sys_us_per_msg)),
        );
        for a in 0..analyzers {
            let _ = write!(s, ",{}", r.per_analyzer.get(a).copied().unwrap_or(0));
        }
        let _ = writeln!(s, ",\"{}\"", r.events.replace('"', "'"));
    }
    s
}

pub fn weights_csv(analyzers: &[AnalyzerRow]) -> String {
    let mut s = String::from(
        "analyzer,handshake,format,weight,expected_share,received,share,deviation,kills,stalls,restarts,dropped_unacked\n",
    );
    for a in analyzers {
        let _ = writeln!(
            s,
            "a{},{:?},{:?},{},{:.6},{},{:.6},{:.6},{},{},{},{}",
            a.index,
            a.handshake,
            a.format,
            a.weight,
            a.expected_share,
            a.tally.committed,
            a.share,
            a.deviation,
            a.tally.kills,
            a.tally.stalls,
            a.tally.restarts,
            a.tally.dropped_unacked
        );
    }
    s.to_lowercase()
}

/// Expected shares from weights, actual shares from counts, and the relative
/// deviation of each.
pub fn shares(weights: &[f32], counts: &[u64]) -> Vec<(f64, f64, f64)> {
    let wsum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let csum: u64 = counts.iter().sum();
    weights
        .iter()
        .zip(counts)
        .map(|(&w, &c)| {
            let expected = f64::from(w) / wsum;
            let share = if csum > 0 {
                c as f64 / csum as f64
            } else {
                0.0
            };
            let deviation = if csum > 0 {
                share / expected - 1.0
            } else {
                0.0
            };
            (expected, share, deviation)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(totals: Totals) -> Summary {
        Summary {
            profile: "t".into(),
            description: String::new(),
            started_at: String::new(),
            results_dir: String::new(),
            profile_source: String::new(),
            run_secs: 1.0,
            profile_duration_secs: 1.0,
            drain_secs: 0.0,
            drained: true,
            target: String::new(),
            analyzer_target: String::new(),
            checksum: "fnv".into(),
            seed: 0,
            emitter_kind: EmitterKind::Frames,
            durability: None,
            emitter_id_prefix: String::new(),
            passed: false,
            failures: Vec::new(),
            warnings: Vec::new(),
            totals,
            acks: None,
            throughput: Throughput::default(),
            latency_overall: Percentiles::default(),
            latency_by_priority: Vec::new(),
            emitters: Vec::new(),
            analyzers: Vec::new(),
            generator_max_lag_ms: 0.0,
            generator_write_wait_secs: 0.0,
            loadtest_cpu_avg_pct: None,
            distributor: Some(DistributorStats {
                pid: 1,
                cpu_avg_pct: None,
                cpu_peak_pct: 0.0,
                peak_rss_mib: None,
                stop: StopOutcome {
                    exit_code: Some(0),
                    killed: false,
                    stop_secs: 0.1,
                    description: "exited with code 0".into(),
                },
                log: "logdist.log".into(),
                config: "logdist.toml".into(),
                dead_letters: "/r/dead_letters.ndjson".into(),
            }),
            rejection_reasons: Vec::new(),
            protocol_errors: Vec::new(),
            chaos_schedule: Vec::new(),
            events: Vec::new(),
            ramp: None,
            baseline: None,
            costs: MessageCosts::default(),
            syscalls_unavailable: None,
            crash: None,
            aborted: None,
        }
    }

    /// Dead letters fail a run even when nothing is lost.
    #[test]
    fn dead_letters_fail_the_run() {
        let totals = Totals {
            sent: 10,
            received: 10,
            dead_lettered: Some(0),
            ..Totals::default()
        };
        let mut s = summary(totals.clone());
        s.evaluate(&Checks::default());
        assert!(s.passed, "{:?}", s.failures);

        let mut s = summary(Totals {
            dead_lettered: Some(3),
            ..totals
        });
        s.evaluate(&Checks::default());
        assert!(!s.passed);
        assert_eq!(
            s.failures,
            vec![
                "DEAD LETTERS: 3 messages were dead-lettered by logdist \
                 (see /r/dead_letters.ndjson)"
                    .to_string()
            ]
        );
    }

    /// With acks: loss of acked lines fails the run and says so, duplicates
    /// are a warning where allowed, error replies fail it.
    #[test]
    fn acked_loss_and_rejections_fail_duplicates_may_not() {
        let totals = Totals {
            sent: 100,
            received: 98,
            duplicated: 4,
            dead_lettered: Some(0),
            ..Totals::default()
        };
        let acks = AckTotals {
            acked_ok: 95,
            unanswered: 5,
            unacked_received: 3,
            ..AckTotals::default()
        };
        let with_acks = |totals: Totals, acks: AckTotals| Summary {
            emitter_kind: EmitterKind::NdjsonAck,
            acks: Some(acks),
            ..summary(totals)
        };
        let allow = Checks {
            allow_duplicates: true,
            check_shares: false,
            ..Checks::default()
        };
        let mut s = with_acks(totals.clone(), acks.clone());
        s.evaluate(&allow);
        assert!(s.passed, "{:?}", s.failures);
        assert!(s.warnings.iter().any(|w| w.starts_with("DUPLICATES")));
        let text = s.render_text();
        assert!(
            text.contains("acked ok 95") && text.contains("unacked rcvd"),
            "{text}"
        );

        let mut s = with_acks(
            Totals {
                lost: 2,
                ..totals.clone()
            },
            acks.clone(),
        );
        s.evaluate(&allow);
        assert!(!s.passed);
        assert!(
            s.failures[0].starts_with("LOSS: 2 of 95 messages acked ok"),
            "{:?}",
            s.failures
        );

        let mut s = with_acks(
            totals,
            AckTotals {
                rejected: 1,
                rejection_reasons: vec![("invalid_json".into(), 1)],
                ..acks
            },
        );
        s.evaluate(&allow);
        assert!(
            s.failures
                .iter()
                .any(|f| f.starts_with("REJECTED") && f.contains("1 x invalid_json")),
            "{:?}",
            s.failures
        );
    }

    #[test]
    fn share_deviation_is_relative() {
        let s = shares(&[0.5, 0.3, 0.2], &[500, 300, 200]);
        for (e, sh, d) in &s {
            assert!((e - sh).abs() < 1e-6 && d.abs() < 1e-6);
        }
        let s = shares(&[1.0, 1.0], &[505, 495]);
        assert!((s[0].2 - 0.01).abs() < 1e-9);
        assert!((s[1].2 + 0.01).abs() < 1e-9);
    }
}
