//! Runs a profile end to end: start logdist (or use --target), connect the
//! analyzers, start the emitters, sample the timeline every second, run the chaos
//! schedule, stop the emitters, wait until everything sent has arrived (or the
//! drain timeout passes), stay quiet a little longer so late duplicates show up,
//! stop analyzers and logdist, and reconcile.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::chaos::{self, ChaosEvent};
use crate::chart;
use crate::crash::{self, CrashResult};
use crate::distributor_process;
use crate::harness::{
    Baseline as RunBaseline, Harness, RunOptions, SystemUnderTest, create_results_dir,
};
use crate::ledger::EmitterAccount;
use crate::profile::{EmitterKind, RampSettings};
use crate::ramp;
use crate::recorder::{Percentiles, new_histogram};
use crate::report::{
    AckTotals, AnalyzerRow, Baseline, DistributorStats, EmitterRow, PriorityLatency, RampResult,
    Summary, Throughput, Totals, shares, timeline_csv,
};

/// What a run produced.
pub struct RunOutcome {
    pub summary: Summary,
}

/// Lines in the dead-letter file (0 if it does not exist).
fn count_dead_letters(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        .unwrap_or(0)
}

/// Everything the report needs from the finished harness.
pub struct RunFacts {
    pub run_secs: f64,
    pub drain_secs: f64,
    pub drained: bool,
    pub chaos_schedule: Vec<ChaosEvent>,
    pub ramp: Option<RampResult>,
    pub baseline: Option<Baseline>,
    pub crash: Option<CrashResult>,
    pub distributor: Option<DistributorStats>,
    pub dead_letters: Option<u64>,
    pub target_rate: f64,
}

/// Reconcile and build the summary.
pub fn build_summary(h: &Harness, opts: &RunOptions, facts: RunFacts) -> Summary {
    let sent = h.sent();
    let s = h.recorder.lock_collected();
    let mut totals = Totals {
        foreign: s.foreign,
        out_of_range: s.out_of_range,
        priority_mismatches: s.priority_mismatches,
        dead_lettered: facts.dead_letters,
        bytes_received: s.bytes,
        checksum_failures: s.checksum_failures_unattributed,
        ..Totals::default()
    };
    let mut emitters = Vec::new();
    let mut max_lag_ms: f64 = 0.0;
    let mut write_wait_us = 0;
    let acked_only = h.profile.emitters.kind == EmitterKind::NdjsonAck;
    let mut ack_totals = acked_only.then(AckTotals::default);
    for (i, shared) in h.emitters.iter().enumerate() {
        let mut account = s.ledger.account(i, sent[i]);
        // With acks, only what was acked `ok` has to arrive: that is what
        // `lost` counts.
        let acks = acked_only.then(|| {
            let a = s.acks.account(i, sent[i], &s.ledger);
            account = EmitterAccount {
                lost: a.lost,
                first_lost: a.first_lost.clone(),
                ..account
            };
            a
        });
        let reconnects = h
            .ack_status
            .get(i)
            .map(|st| st.reconnects.load(Ordering::Relaxed));
        if let (Some(t), Some(a)) = (ack_totals.as_mut(), &acks) {
            t.add(a, reconnects.unwrap_or(0));
        }
        totals.sent += account.sent;
        totals.received += account.received;
        totals.lost += account.lost;
        totals.duplicated += account.duplicated;
        totals.checksum_failures += account.checksum_failures;
        totals.unexpected += account.unexpected;
        let lag = shared.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0;
        max_lag_ms = max_lag_ms.max(lag);
        write_wait_us += shared.write_wait_us.load(Ordering::Relaxed);
        emitters.push(EmitterRow {
            id: h.emitter_ids[i].clone(),
            account,
            acks,
            reconnects,
            max_lag_ms: lag,
            error: shared.error.lock().clone(),
        });
    }
    let weights: Vec<f32> = h.analyzer_settings.iter().map(|a| a.weight).collect();
    let counts: Vec<u64> = s.analyzers.iter().map(|a| a.committed).collect();
    let analyzers: Vec<AnalyzerRow> = shares(&weights, &counts)
        .into_iter()
        .enumerate()
        .map(|(i, (expected_share, share, deviation))| AnalyzerRow {
            index: i,
            handshake: h.analyzer_settings[i].handshake,
            format: h.analyzer_settings[i].format,
            weight: weights[i],
            expected_share,
            share,
            deviation,
            tally: s.analyzers[i].clone(),
        })
        .collect();
    let mut overall = new_histogram();
    let latency_by_priority = s
        .latency_by_priority
        .iter()
        .map(|(&priority, hist)| {
            let _ = overall.add(hist);
            PriorityLatency {
                priority,
                latency: Percentiles::of(hist),
            }
        })
        .collect();
    let run_secs = facts.run_secs.max(1e-9);
    let delivered_peak = h
        .timeline
        .iter()
        .filter(|r| r.interval > 0.5)
        .map(|r| r.delivered as f64 / r.interval)
        .fold(0.0, f64::max);
    let throughput = Throughput {
        target_msgs_per_s: facts.target_rate,
        offered_msgs_per_s: totals.sent as f64 / run_secs,
        delivered_msgs_per_s: totals.received as f64 / run_secs,
        delivered_peak_msgs_per_s: delivered_peak,
        delivered_mb_per_s: s.bytes as f64 / 1e6 / run_secs,
    };
    let mut rejection_reasons: Vec<(String, u64)> = s
        .rejection_reasons
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    rejection_reasons.sort();
    if let Some(t) = ack_totals.as_mut() {
        t.rejection_reasons = s
            .acks
            .rejection_reasons
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
    }
    let mut summary = Summary {
        profile: h.profile.name.clone(),
        description: h.profile.description.clone(),
        started_at: humantime::format_rfc3339_seconds(
            SystemTime::now() - Duration::from_secs_f64(h.epoch.elapsed().as_secs_f64()),
        )
        .to_string(),
        results_dir: h.results_dir.display().to_string(),
        profile_source: opts.profile_source.clone(),
        run_secs: facts.run_secs,
        profile_duration_secs: h.profile.duration.as_secs_f64(),
        drain_secs: facts.drain_secs,
        drained: facts.drained,
        target: h.emitter_addr.to_string(),
        analyzer_target: h.analyzer_addr.to_string(),
        checksum: opts.checksum.name().to_string(),
        seed: opts.seed,
        emitter_kind: h.profile.emitters.kind,
        durability: h.durability.clone(),
        emitter_id_prefix: h.naming.id(0).trim_end_matches('0').to_string(),
        passed: false,
        failures: Vec::new(),
        warnings: Vec::new(),
        totals,
        acks: ack_totals,
        throughput,
        latency_overall: Percentiles::of(&overall),
        latency_by_priority,
        emitters,
        analyzers,
        generator_max_lag_ms: max_lag_ms,
        generator_write_wait_secs: write_wait_us as f64 / 1e6,
        loadtest_cpu_avg_pct: h.own_cpu_average(),
        distributor: facts.distributor,
        rejection_reasons,
        protocol_errors: s.protocol_errors.clone(),
        chaos_schedule: facts.chaos_schedule,
        events: s.events.clone(),
        ramp: facts.ramp,
        baseline: facts.baseline,
        costs: h.run_costs,
        syscalls_unavailable: h.syscalls_unavailable.clone(),
        crash: facts.crash,
        aborted: h.aborted.clone().or_else(|| h.interrupted_note.clone()),
    };
    drop(s);
    summary.evaluate(&h.profile.checks);
    summary
}

/// `--baseline relay`: the profile's ramp against the tester's relay, then
/// the relay stopped; its timeline goes to `relay-timeline.csv`.
async fn relay_baseline(
    opts: &RunOptions,
    r: &RampSettings,
    results_dir: &Path,
) -> Result<Baseline, String> {
    if opts.progress {
        eprintln!("logdist-loadtest: baseline: the ramp against the load tester's relay");
    }
    let mut h = Harness::setup(opts, 0.0, SystemUnderTest::Relay, results_dir).await?;
    let ramp = ramp::run(&mut h, r, opts.duration).await;
    h.stop_emitters().await;
    h.teardown().await;
    let (peak_rss_mib, stop) = h
        .relay_end
        .take()
        .ok_or("the relay was not running at the end of its ramp")?;
    std::fs::write(
        results_dir.join("relay-timeline.csv"),
        timeline_csv(&h.timeline, h.analyzers.len()),
    )
    .map_err(|e| format!("cannot write relay-timeline.csv: {e}"))?;
    Ok(Baseline::new(
        ramp,
        peak_rss_mib,
        stop,
        h.syscalls_unavailable.clone(),
    ))
}

/// Run a profile (steady or ramp) end to end and write the results.
pub async fn run(opts: RunOptions) -> Result<RunOutcome, String> {
    let profile = opts.profile.clone();
    let ramp_settings = profile.ramp.clone();
    let initial_rate = match &ramp_settings {
        Some(_) => 0.0,
        None => profile.emitters.rate,
    };
    // Find the binary before creating anything, so a missing one fails cleanly.
    if opts.target.is_none() {
        distributor_process::find_binary(opts.logdist_bin.as_deref())?;
    }
    let results_dir = create_results_dir(&opts.results_root, &profile.name)?;
    let mut baseline = match (&ramp_settings, opts.baseline) {
        (Some(r), RunBaseline::Relay) => Some(relay_baseline(&opts, r, &results_dir).await?),
        _ => None,
    };
    if baseline.is_some() && opts.progress {
        eprintln!("logdist-loadtest: now the same ramp against logdist");
    }
    let mut h = Harness::setup(&opts, initial_rate, SystemUnderTest::Logdist, &results_dir).await?;
    let mut chaos_schedule = Vec::new();
    let stop_chaos = CancellationToken::new();
    let mut ramp_result = None;
    let mut crash_result = None;
    let run_secs;

    if let Some(r) = &ramp_settings {
        let result = ramp::run(&mut h, r, opts.duration).await;
        run_secs = h.epoch.elapsed().as_secs_f64();
        ramp_result = Some(result);
    } else {
        let mut chaos_task = None;
        if let Some(c) = &profile.chaos {
            chaos_schedule = chaos::schedule(c, opts.duration, h.analyzers.len());
            let events = chaos_schedule.clone();
            let handles: Vec<_> = h
                .analyzers
                .iter()
                .map(|a| (a.index, a.commands.clone()))
                .collect();
            let epoch = h.epoch;
            let stop = stop_chaos.clone();
            chaos_task = Some(tokio::spawn(async move {
                chaos::run_with_senders(events, handles, epoch, stop).await
            }));
        }
        match &profile.crash {
            Some(c) => crash_result = Some(crash::run(&mut h, c, opts.duration).await),
            None => {
                let end = h.epoch + opts.duration;
                h.wait_until(end, "run", |_| false).await;
            }
        }
        stop_chaos.cancel();
        if let Some(t) = chaos_task {
            let _ = t.await;
        }
        run_secs = h.epoch.elapsed().as_secs_f64();
    }
    h.stop_emitters().await;
    // After a crash of logdist there is nothing to drain; after Ctrl-C there is.
    let (drained, drain_secs) = if h.distributor_alive() {
        h.drain(profile.checks.drain_timeout).await
    } else {
        (false, 0.0)
    };
    if drained {
        h.settle().await;
    }
    let distributor = h.teardown().await;
    let dead_letters = distributor
        .as_ref()
        .map(|d| count_dead_letters(Path::new(&d.dead_letters)));
    if let (Some(b), Some(r)) = (baseline.as_mut(), &ramp_result) {
        b.compare(r);
    }
    let target_rate = match &ramp_result {
        Some(r) => r.steps.last().map(|s| s.target_rate).unwrap_or(0.0),
        None => profile.total_rate(),
    };
    let facts = RunFacts {
        run_secs,
        drain_secs,
        drained,
        chaos_schedule,
        ramp: ramp_result,
        baseline,
        crash: crash_result,
        distributor,
        dead_letters,
        target_rate,
    };
    let mut summary = build_summary(&h, &opts, facts);
    if let Some(skipped) = &opts.partition_skipped {
        summary.warnings.push(skipped.clone());
    }
    summary
        .write_files(&h.results_dir, &h.timeline)
        .map_err(|e| format!("cannot write results to {}: {e}", h.results_dir.display()))?;
    if let Err(e) = chart::write_svg(&h.results_dir.join("chart.svg"), &h.timeline, &summary) {
        tracing::warn!("could not draw chart.svg: {e}");
    }
    Ok(RunOutcome { summary })
}
