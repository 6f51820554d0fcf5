//! The `max` benchmark: offer `start_rate`, then `factor` times more each step,
//! until a step loses messages, its p99 latency goes over the bound, or the
//! generator cannot offer the step's rate (CPU-bound, or held back by
//! distributor backpressure). Between steps the emitters pause and the step's
//! messages drain, so each step is judged on its own messages.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::harness::Harness;
use crate::profile::RampSettings;
use crate::recorder::Percentiles;
use crate::report::{RampResult, RampStep};

/// Run the ramp within `budget` on a harness whose emitters are paused (rate 0).
pub async fn run(h: &mut Harness, r: &RampSettings, budget: Duration) -> RampResult {
    let start = Instant::now();
    let n = h.emitters.len() as f64;
    let mut steps: Vec<RampStep> = Vec::new();
    let mut stop_reason = String::from("time budget used up");
    let mut target = r.start_rate;
    for step in 0.. {
        if start.elapsed() + r.step > budget {
            break;
        }
        h.recorder.reset_step();
        for e in &h.emitters {
            e.max_lag_us.store(0, Ordering::Relaxed);
        }
        let counters0 = h.counters();
        let sent0: u64 = h.sent().iter().sum();
        let bytes0 = h.recorder.lock().bytes;
        for e in &h.emitters {
            e.set_rate(target / n);
        }
        let phase = format!("step{step}");
        h.wait_until(Instant::now() + r.step, &phase, |_| false)
            .await;
        for e in &h.emitters {
            e.set_rate(0.0);
        }
        // Let the emitters notice the pause (one tick) before counting.
        tokio::time::sleep(h.profile.emitters.tick * 2).await;
        let t_drain = Instant::now();
        let drained = h
            .wait_until(t_drain + r.drain_timeout, &format!("{phase}-drain"), |h| {
                h.all_received()
            })
            .await;
        let drain_secs = t_drain.elapsed().as_secs_f64();
        // The step's messages, from its start until they all arrived.
        let costs = counters0.costs_until(&h.counters());
        let sent_now = h.sent();
        let sent1: u64 = sent_now.iter().sum();
        let (lost, latency, bytes1) = {
            let s = h.recorder.lock_collected();
            let lost: u64 = (0..sent_now.len())
                .map(|i| s.ledger.account(i, sent_now[i]).lost)
                .sum();
            (lost, Percentiles::of(&s.latency_step), s.bytes)
        };
        let secs = r.step.as_secs_f64();
        let offered_rate = (sent1 - sent0) as f64 / secs;
        let lag = h
            .emitters
            .iter()
            .map(|e| e.max_lag_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0) as f64
            / 1000.0;
        let mut reasons = Vec::new();
        if lost > 0 {
            reasons.push(format!("{lost} messages lost"));
        }
        if !drained && lost == 0 {
            reasons.push("did not drain".to_string());
        }
        if latency.p99() > r.max_p99 {
            reasons.push(format!(
                "p99 {:.3} ms over {:?}",
                latency.p99_us / 1000.0,
                r.max_p99
            ));
        }
        if offered_rate < r.min_offered * target {
            reasons.push(format!(
                "generator offered only {:.0} of {:.0} msg/s",
                offered_rate, target
            ));
        }
        if h.aborted.is_some() {
            reasons.push("run aborted".to_string());
        }
        let passed = reasons.is_empty();
        steps.push(RampStep {
            step,
            target_rate: target,
            offered_rate,
            sent: sent1 - sent0,
            lost,
            latency,
            mb_per_s: (bytes1 - bytes0) as f64 / 1e6 / secs,
            generator_max_lag_ms: lag,
            drain_secs,
            costs,
            passed,
            reason: reasons.join("; "),
        });
        if !passed {
            stop_reason = format!(
                "step {step} at {target:.0} msg/s failed: {}",
                reasons.join("; ")
            );
            break;
        }
        target *= r.factor;
    }
    let best = steps.iter().rfind(|s| s.passed).cloned();
    RampResult {
        steps,
        best,
        stop_reason,
        max_p99_ms: r.max_p99.as_secs_f64() * 1000.0,
    }
}
