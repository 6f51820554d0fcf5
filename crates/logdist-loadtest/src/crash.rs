//! The `crash` fault: logdist itself dies. Every `crash.interval` the load
//! test sends the logdist it started SIGKILL and starts it again at once, on
//! the same run config: the same spool directory, and the ports the first
//! start got (pinned in the config from its ready file), so emitters and
//! analyzers find it where it was and reconnect by themselves.
//!
//! Per restart it measures how long logdist took to be ready again (SIGKILL
//! to its ready file) and how long until the emitters were acked `ok` again
//! (on connections made after the kill: replies of the dead connection that
//! are read late do not count).

use std::io::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use crate::ack_emitter::clock_us;
use crate::distributor_process::DistributorProcess;
use crate::harness::Harness;
use crate::profile::CrashSettings;

/// One kill and restart.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Restart {
    /// 1 for the first kill.
    pub number: usize,
    /// When the SIGKILL went out, in seconds since the emitters started.
    pub killed_at_secs: f64,
    pub old_pid: u32,
    pub new_pid: u32,
    /// SIGKILL to the new logdist's ready file.
    pub ready_secs: f64,
    /// SIGKILL to the first `ok` any emitter got from the new logdist.
    pub first_acked_secs: Option<f64>,
    /// SIGKILL to the moment every emitter had had an `ok` from the new
    /// logdist (None: not before the next kill or the end of sending).
    pub all_acked_secs: Option<f64>,
}

/// What the crash fault did over a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CrashResult {
    pub interval_secs: f64,
    pub restarts: Vec<Restart>,
}

impl CrashResult {
    /// The per-restart table of the report.
    pub fn render_text(&self) -> String {
        let secs = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |s| format!("{s:.3}"));
        let mut s = format!(
            "logdist SIGKILLed every {:.0} s and restarted on the same ports and spool:\n\
             {:<8} {:>9} {:>9} {:>9} {:>10} {:>14} {:>14}\n",
            self.interval_secs,
            "restart",
            "at s",
            "old pid",
            "new pid",
            "ready s",
            "first ack s",
            "all acked s"
        );
        for r in &self.restarts {
            s.push_str(&format!(
                "{:<8} {:>9.1} {:>9} {:>9} {:>10.3} {:>14} {:>14}\n",
                r.number,
                r.killed_at_secs,
                r.old_pid,
                r.new_pid,
                r.ready_secs,
                secs(r.first_acked_secs),
                secs(r.all_acked_secs)
            ));
        }
        if self.restarts.is_empty() {
            s.push_str("(no kill: the run was shorter than one interval plus crash.quiet_tail)\n");
        }
        s
    }
}

/// The kill times: every `interval` from the emitters' start, none in the
/// last `quiet_tail` of a run of `run`.
pub fn schedule(c: &CrashSettings, run: Duration) -> Vec<Duration> {
    let last = run.saturating_sub(c.quiet_tail);
    (1..)
        .map(|k| c.interval * k)
        .take_while(|&at| at <= last)
        .collect()
}

/// Run the emitters until `duration` after the start, killing and restarting
/// logdist on the schedule. A restart that fails aborts the run.
pub async fn run(h: &mut Harness, c: &CrashSettings, duration: Duration) -> CrashResult {
    let end = h.epoch + duration;
    let kills = schedule(c, duration);
    let mut restarts = Vec::new();
    for (i, &at) in kills.iter().enumerate() {
        h.wait_until(h.epoch + at, "run", |_| false).await;
        if h.aborted.is_some() || h.interrupted_note.is_some() {
            break;
        }
        let number = i + 1;
        let Some((kill_us, mut restart)) = kill_and_restart(h, c, number).await else {
            break;
        };
        // Until every emitter is acked again, or the next kill (or the end).
        let next = kills.get(i + 1).map_or(end, |&t| h.epoch + t).min(end);
        h.wait_until(next, "run", |h| {
            h.ack_status
                .iter()
                .all(|s| s.acked_since(kill_us).is_some())
        })
        .await;
        let acked: Vec<Option<u64>> = h
            .ack_status
            .iter()
            .map(|s| s.acked_since(kill_us))
            .collect();
        let since_kill = |us: u64| us.saturating_sub(kill_us) as f64 / 1e6;
        restart.first_acked_secs = acked.iter().flatten().min().map(|&us| since_kill(us));
        restart.all_acked_secs = acked
            .iter()
            .copied()
            .collect::<Option<Vec<u64>>>()
            .and_then(|all| all.into_iter().max())
            .map(since_kill);
        restarts.push(restart);
    }
    h.wait_until(end, "run", |_| false).await;
    CrashResult {
        interval_secs: c.interval.as_secs_f64(),
        restarts,
    }
}

/// SIGKILL logdist and start it again on the same config with its ports
/// pinned. Returns the kill time (µs on the emitters' clock) and the
/// restart's figures so far, or None (the run is aborted, saying why).
async fn kill_and_restart(
    h: &mut Harness,
    c: &CrashSettings,
    number: usize,
) -> Option<(u64, Restart)> {
    let (Some(d), Some(bin)) = (h.distributor.take(), h.logdist_bin.clone()) else {
        h.aborted = Some("the crash fault needs a logdist the run started".into());
        return None;
    };
    let old_pid = d.pid;
    let log_path = d.log_path.clone();
    let t_kill = Instant::now();
    let kill_us = clock_us(h.epoch);
    let killed_at_secs = t_kill.saturating_duration_since(h.epoch).as_secs_f64();
    let restarted = async {
        let (config, ready) = d.kill().await?;
        config.pin_addresses(&ready)?;
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&log_path) {
            let _ = writeln!(
                log,
                "===== logdist-loadtest: SIGKILL to pid {old_pid} at {killed_at_secs:.3} s; restart {number} ====="
            );
        }
        DistributorProcess::start(&bin, config, &h.results_dir, c.ready_timeout).await
    }
    .await;
    let d = match restarted {
        Ok(d) => d,
        Err(e) => {
            h.aborted = Some(format!(
                "restart {number} of logdist (after SIGKILL to pid {old_pid}) failed: {e}"
            ));
            return None;
        }
    };
    let ready_secs = t_kill.elapsed().as_secs_f64();
    let new_pid = d.pid;
    h.follow_distributor(new_pid);
    h.distributor = Some(d);
    h.recorder.event(
        None,
        "logdist-restart",
        format!(
            "SIGKILL to pid {old_pid}; pid {new_pid} ready after {:.0} ms",
            ready_secs * 1000.0
        ),
    );
    Some((
        kill_us,
        Restart {
            number,
            killed_at_secs,
            old_pid,
            new_pid,
            ready_secs,
            first_acked_secs: None,
            all_acked_secs: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_every_interval_but_not_in_the_quiet_tail() {
        let c = CrashSettings {
            interval: Duration::from_secs(10),
            quiet_tail: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(30),
        };
        let secs = |v: Vec<Duration>| v.iter().map(|d| d.as_secs()).collect::<Vec<_>>();
        assert_eq!(
            secs(schedule(&c, Duration::from_secs(120))),
            (1..=11).map(|k| k * 10).collect::<Vec<_>>()
        );
        let short = CrashSettings {
            interval: Duration::from_secs(8),
            ..c.clone()
        };
        assert_eq!(secs(schedule(&short, Duration::from_secs(25))), [8, 16]);
        assert!(schedule(&c, Duration::from_secs(12)).is_empty());
    }
}
