//! The chaos schedule: which analyzer gets killed, stalled or restarted when.
//!
//! Events start at `start` and repeat every `interval`, cycling through the
//! actions and through the analyzers, and none may still be in effect during the
//! last `quiet_tail` (so the run ends with every analyzer up). When fewer than
//! `min_events` fit (a run shortened with `--duration`), the schedule is
//! compressed to fit `min_events` in.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use tokio::sync::mpsc::UnboundedSender;

use crate::analyzer::AnalyzerCommand;
use crate::profile::{ChaosAction, ChaosSettings};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ChaosEvent {
    /// Since emitters started.
    #[serde(serialize_with = "secs")]
    pub at: Duration,
    pub analyzer: usize,
    pub action: ChaosAction,
    /// Downtime of a kill, length of a stall or partition; zero for a restart.
    #[serde(serialize_with = "secs")]
    pub lasts: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ChaosEvent {
    pub fn command(&self) -> AnalyzerCommand {
        match self.action {
            ChaosAction::Kill => AnalyzerCommand::Kill {
                downtime: self.lasts,
            },
            ChaosAction::Stall => AnalyzerCommand::Stall {
                duration: self.lasts,
            },
            ChaosAction::Restart => AnalyzerCommand::Restart,
            ChaosAction::Partition => AnalyzerCommand::Partition {
                duration: self.lasts,
            },
        }
    }
}

struct Shape {
    start: Duration,
    interval: Duration,
    downtime: Duration,
    stall: Duration,
    partition: Duration,
    tail: Duration,
}

fn generate(c: &ChaosSettings, shape: &Shape, run: Duration, analyzers: usize) -> Vec<ChaosEvent> {
    let mut events = Vec::new();
    let end = run.saturating_sub(shape.tail);
    let mut at = shape.start;
    let mut k = 0usize;
    while at < end && analyzers > 0 {
        let action = c.actions[k % c.actions.len()];
        let lasts = match action {
            ChaosAction::Kill => shape.downtime,
            ChaosAction::Stall => shape.stall,
            ChaosAction::Restart => Duration::ZERO,
            ChaosAction::Partition => shape.partition,
        };
        if at + lasts > end {
            break;
        }
        // Only the last analyzer sits behind a link that can be cut.
        let analyzer = match action {
            ChaosAction::Partition => analyzers - 1,
            _ => k % analyzers,
        };
        events.push(ChaosEvent {
            at,
            analyzer,
            action,
            lasts,
        });
        k += 1;
        at += shape.interval;
    }
    events
}

/// The events of a run of length `run` with `analyzers` analyzers.
pub fn schedule(c: &ChaosSettings, run: Duration, analyzers: usize) -> Vec<ChaosEvent> {
    let shape = Shape {
        start: c.start,
        interval: c.interval,
        downtime: c.downtime,
        stall: c.stall,
        partition: c.partition,
        tail: c.quiet_tail,
    };
    let events = generate(c, &shape, run, analyzers);
    if events.len() >= c.min_events {
        return events;
    }
    // Compress: a shorter lead-in and tail, and min_events evenly spaced.
    let start = c.start.min(run.mul_f64(0.15));
    let tail = c.quiet_tail.min(run.mul_f64(0.2));
    let interval = run.saturating_sub(start + tail) / c.min_events.max(1) as u32;
    let shape = Shape {
        start,
        interval,
        downtime: c.downtime.min(interval / 2),
        stall: c.stall.min(interval / 2),
        partition: c.partition.min(interval / 2),
        tail,
    };
    generate(c, &shape, run, analyzers)
}

/// Carry out `events`, timed from `epoch`, until done or `stop`. `analyzers`
/// are (index, command channel) pairs.
pub async fn run_with_senders(
    events: Vec<ChaosEvent>,
    analyzers: Vec<(usize, UnboundedSender<AnalyzerCommand>)>,
    epoch: Instant,
    stop: CancellationToken,
) {
    for e in events {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep_until(epoch + e.at) => {}
        }
        if let Some((_, tx)) = analyzers.iter().find(|(i, _)| *i == e.analyzer) {
            let _ = tx.send(e.command());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ChaosSettings {
        ChaosSettings {
            start: Duration::from_secs(5),
            interval: Duration::from_secs(10),
            actions: vec![ChaosAction::Kill, ChaosAction::Stall, ChaosAction::Restart],
            downtime: Duration::from_secs(2),
            stall: Duration::from_secs(3),
            quiet_tail: Duration::from_secs(5),
            partition: Duration::from_secs(4),
            min_events: 3,
        }
    }

    #[test]
    fn full_length_schedule_cycles_actions_and_analyzers() {
        let ev = schedule(&settings(), Duration::from_secs(300), 8);
        assert_eq!(ev.len(), 29);
        assert_eq!(ev[0].at, Duration::from_secs(5));
        assert_eq!(ev[1].at, Duration::from_secs(15));
        assert_eq!((ev[0].action, ev[0].analyzer), (ChaosAction::Kill, 0));
        assert_eq!((ev[1].action, ev[1].analyzer), (ChaosAction::Stall, 1));
        assert_eq!(
            (ev[2].action, ev[2].lasts),
            (ChaosAction::Restart, Duration::ZERO)
        );
        assert_eq!(ev[8].analyzer, 0);
        assert!(
            ev.iter()
                .all(|e| e.at + e.lasts <= Duration::from_secs(295))
        );
    }

    #[test]
    fn partitions_always_cut_off_the_last_analyzer() {
        let mut c = settings();
        c.actions.push(ChaosAction::Partition);
        let ev = schedule(&c, Duration::from_secs(300), 8);
        let partitions: Vec<_> = ev
            .iter()
            .filter(|e| e.action == ChaosAction::Partition)
            .collect();
        assert_eq!(partitions.len(), 7);
        for e in partitions {
            assert_eq!((e.analyzer, e.lasts), (7, Duration::from_secs(4)));
            assert!(matches!(
                e.command(),
                AnalyzerCommand::Partition { duration } if duration == Duration::from_secs(4)
            ));
        }
        // Compressed, it still happens, shorter.
        c.min_events = 4;
        let ev = schedule(&c, Duration::from_secs(6), 8);
        let partition = ev
            .iter()
            .find(|e| e.action == ChaosAction::Partition)
            .unwrap();
        assert!(partition.lasts < Duration::from_secs(1));
    }

    #[test]
    fn short_runs_are_compressed_to_min_events() {
        let ev = schedule(&settings(), Duration::from_secs(6), 8);
        assert_eq!(ev.len(), 3);
        let kinds: Vec<_> = ev.iter().map(|e| e.action).collect();
        assert_eq!(
            kinds,
            [ChaosAction::Kill, ChaosAction::Stall, ChaosAction::Restart]
        );
        for e in &ev {
            assert!(
                e.at + e.lasts <= Duration::from_secs(6).mul_f64(0.8) + Duration::from_millis(1)
            );
            assert!(e.lasts <= Duration::from_secs(1));
        }
        // Events on different analyzers, so they never overlap on one.
        assert_ne!(ev[0].analyzer, ev[1].analyzer);
    }
}
