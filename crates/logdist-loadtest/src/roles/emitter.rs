//! `logdist-loadtest emitter`: one emitter of a profile run as a process of
//! its own. It opens one connection to an emitter listener (TLS with
//! `--tls`), sends binary frames open loop at `--rate` (the same emitter code
//! and payloads as a profile run: `<id>:<unix_nanos>:<counter>:<padding><checksum>`,
//! counters from 0), with priorities by `--priority-mode`, until SIGTERM,
//! SIGINT or `--duration`, then closes and prints its summary: messages sent
//! (completely written), by priority, and the fingerprint of their counters
//! that the analyzers' summaries add up to.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;
use tokio::time::Instant;

use super::{
    EXIT_ERROR, EXIT_FAILED, EXIT_OK, Stop, TlsArgs, counter_fingerprint, parse_target,
    priorities_json, priorities_text,
};
use crate::emitter::{EmitterConfig, EmitterShared, SizeModel};
use crate::payload::ChecksumKind;
use crate::priority::PriorityPlan;
use crate::profile::{PriorityMode, PrioritySettings, SizeSettings, parse_duration};

/// How long the emitter may take, once stopped, to close (what TLS or the
/// socket still holds goes out); then it gives up and says so.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Every message gets the first level.
    Single,
    /// Uniformly one of the levels.
    Random,
    /// One of the levels, in proportion to --priority-weights.
    Weighted,
    /// The levels in turn.
    Cyclic,
}

impl From<ModeArg> for PriorityMode {
    fn from(mode: ModeArg) -> PriorityMode {
        match mode {
            ModeArg::Single => PriorityMode::Single,
            ModeArg::Random => PriorityMode::Random,
            ModeArg::Weighted => PriorityMode::Weighted,
            ModeArg::Cyclic => PriorityMode::Cyclic,
        }
    }
}

#[derive(Clone, Debug, Args)]
#[command(
    after_help = "Example: logdist-loadtest emitter --target logdist:8080 --rate 100 \
--priority-mode cyclic --priority-levels 0,1,2,3\n\n\
Progress goes to stderr every --progress (sent, rate, lag behind the schedule); the summary \
to stdout at the end: a line, then `summary: {json}` with role, id, sent, by_priority, \
fingerprint (wrapping sum of SplitMix64(counter) over the counters sent), max_lag_ms, error. \
Exit status: 0 stopped as asked (SIGTERM, SIGINT, --duration); 1 the connection failed \
mid-run; 2 no connection within --connect-timeout, or bad flags."
)]
pub struct EmitterArgs {
    /// Emitter listener of logdist, HOST:PORT (a name, an address, [v6]).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,
    /// Messages per second, offered open loop.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How priorities are picked from --priority-levels.
    #[arg(long, value_enum, default_value_t = ModeArg::Single)]
    pub priority_mode: ModeArg,
    /// Priority levels (0 most urgent .. 255), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "3",
        value_name = "LEVELS"
    )]
    pub priority_levels: Vec<u8>,
    /// With --priority-mode weighted: one weight per level, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "WEIGHTS")]
    pub priority_weights: Vec<f64>,
    /// Stop after this long (default: until SIGTERM or SIGINT), e.g. "30s".
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Emitter id, the first field of every payload (no ':'). Default:
    /// <hostname>-<pid>-<random>, new for every start.
    #[arg(long)]
    pub id: Option<String>,
    /// Payload checksum: sha256 (seed-compatible) or fnv (cheap).
    #[arg(long, value_enum, default_value_t = ChecksumKind::Sha256)]
    pub checksum: ChecksumKind,
    /// Mean payload size in bytes (log-normal, clamped to 64..=4096).
    #[arg(long, default_value_t = 512.0)]
    pub size_mean: f64,
    /// Coefficient of variation of payload sizes (0: all --size-mean).
    #[arg(long, default_value_t = 0.3)]
    pub size_cv: f64,
    /// How often the emitter writes what is due.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub tick: Duration,
    /// Seed of the random and weighted priority choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep trying to connect this long before giving up (exit 2).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// A progress line this often on stderr; "0s": none.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub progress: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The default id: unique per start, so a restarted emitter's counters
/// (from 0 again) are not taken for duplicates.
fn default_id() -> String {
    let nonce = crate::payload::unix_nanos_now() ^ (u64::from(std::process::id()) << 40);
    format!(
        "{}-{}-{:06x}",
        super::hostname(),
        std::process::id(),
        super::counter_fingerprint(nonce) & 0xff_ffff
    )
}

/// The priority plan, or why the flags do not make one.
fn plan(args: &EmitterArgs) -> Result<PriorityPlan, String> {
    if args.priority_levels.is_empty() {
        return Err("--priority-levels needs at least one level".into());
    }
    let mode = PriorityMode::from(args.priority_mode);
    if mode == PriorityMode::Weighted {
        if args.priority_weights.len() != args.priority_levels.len() {
            return Err(format!(
                "--priority-mode weighted needs one --priority-weights entry per level: {} \
                 levels, {} weights",
                args.priority_levels.len(),
                args.priority_weights.len()
            ));
        }
        if args
            .priority_weights
            .iter()
            .any(|w| !w.is_finite() || *w < 0.0)
            || args.priority_weights.iter().sum::<f64>() <= 0.0
        {
            return Err("--priority-weights must be finite, >= 0, and not all 0".to_string());
        }
    } else if !args.priority_weights.is_empty() {
        return Err("--priority-weights is only for --priority-mode weighted".into());
    }
    Ok(PriorityPlan::new(
        &PrioritySettings {
            mode,
            levels: args.priority_levels.clone(),
            weights: args.priority_weights.clone(),
        },
        args.seed,
    ))
}

pub async fn run(args: EmitterArgs, stop: Stop) -> i32 {
    match run_inner(args, stop).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("logdist-loadtest emitter: {e}");
            EXIT_ERROR
        }
    }
}

async fn run_inner(args: EmitterArgs, stop: Stop) -> Result<i32, String> {
    let (host, port) = parse_target(&args.target)?;
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(format!("--rate must be positive, got {}", args.rate));
    }
    let id = args.id.clone().unwrap_or_else(default_id);
    if id.is_empty() || id.contains(':') {
        return Err(format!("--id {id:?} must be non-empty and without ':'"));
    }
    let plan = plan(&args)?;
    let sizes = SizeModel::new(&SizeSettings {
        mean: args.size_mean,
        cv: args.size_cv,
        ..SizeSettings::default()
    })?;
    if args.tick.is_zero() {
        return Err("--tick must be positive".into());
    }
    let tls = args.tls.client()?;
    let name = format!("emitter {id}");

    let started = Instant::now();
    let Some(stream) = super::connect_until(
        &host,
        port,
        tls.as_ref(),
        args.connect_timeout,
        &stop,
        &name,
    )
    .await
    .map_err(|e| {
        format!(
            "could not connect to {} within {:?}: {e}",
            args.target, args.connect_timeout
        )
    })?
    else {
        // Stopped before it could connect: nothing sent.
        print_summary(&id, &args, &plan, 0, 0, None, &stop, started);
        return Ok(EXIT_OK);
    };
    // --duration is how long it sends.
    stop.after(args.duration);
    eprintln!(
        "{name}: connected to {}{}, sending {} msg/s",
        args.target,
        if tls.is_some() { " over TLS" } else { "" },
        args.rate
    );

    let shared = Arc::new(EmitterShared::with_rate(args.rate));
    let config = EmitterConfig {
        index: 0,
        id: id.clone(),
        checksum: args.checksum,
        plan: plan.clone(),
        sizes,
        tick: args.tick,
        seed: args.seed,
        format: crate::syslog::EmitterFormat::Frame,
    };
    let send_stop = stop.token.child_token();
    let mut task = tokio::spawn(crate::emitter::run(
        config,
        shared.clone(),
        stream,
        Instant::now(),
        send_stop.clone(),
    ));

    let mut last = (Instant::now(), 0u64);
    let mut ticker = (!args.progress.is_zero()).then(|| {
        let mut t = tokio::time::interval_at(Instant::now() + args.progress, args.progress);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let finished_early = loop {
        tokio::select! {
            _ = stop.token.cancelled() => break false,
            _ = &mut task => break true,
            _ = async { ticker.as_mut().expect("guarded").tick().await }, if ticker.is_some() => {
                let sent = shared.sent();
                let now = Instant::now();
                let rate = (sent - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, sent);
                eprintln!(
                    "{name}: {:.0}s sent {sent} ({rate:.0} msg/s), lag {} ms",
                    started.elapsed().as_secs_f64(),
                    shared.lag_us.load(std::sync::atomic::Ordering::Relaxed) / 1000
                );
            }
        }
    };
    let mut error = shared.error.lock().clone();
    if !finished_early {
        send_stop.cancel();
        if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
            task.abort();
            error.get_or_insert_with(|| {
                format!(
                    "logdist did not take what was written last within {CLOSE_GRACE:?} of the \
                     stop; some messages counted as sent may not have reached it"
                )
            });
        }
        if error.is_none() {
            error = shared.error.lock().clone();
        }
    }
    let sent = shared.sent();
    let max_lag_ms = shared.max_lag_us.load(std::sync::atomic::Ordering::Relaxed) / 1000;
    print_summary(
        &id,
        &args,
        &plan,
        sent,
        max_lag_ms,
        error.as_deref(),
        &stop,
        started,
    );
    Ok(if error.is_some() {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    id: &str,
    args: &EmitterArgs,
    plan: &PriorityPlan,
    sent: u64,
    max_lag_ms: u64,
    error: Option<&str>,
    stop: &Stop,
    started: Instant,
) {
    let mut by_priority = [0u64; 256];
    let mut fingerprint = 0u64;
    for counter in 0..sent {
        by_priority[usize::from(plan.priority_for(0, counter))] += 1;
        fingerprint = fingerprint.wrapping_add(counter_fingerprint(counter));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let why = match (error, stop.reason()) {
        (Some(e), _) => format!("failed: {e}"),
        (None, Some(reason)) => reason.describe(),
        (None, None) => "stopped".to_string(),
    };
    println!(
        "emitter {id}: {why}; sent {sent} messages to {} in {elapsed:.1} s ({:.0} msg/s); \
         priorities {}; max lag {max_lag_ms} ms",
        args.target,
        sent as f64 / elapsed.max(1e-3),
        priorities_text(&by_priority)
    );
    let summary = json!({
        "role": "emitter",
        "id": id,
        "target": args.target,
        "sent": sent,
        "by_priority": priorities_json(&by_priority),
        "fingerprint": fingerprint.to_string(),
        "rate": args.rate,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "max_lag_ms": max_lag_ms,
        "stopped": stop.reason().map(StopText::text),
        "error": error,
    });
    println!("summary: {summary}");
}

/// How a stop reason reads in the JSON summary.
trait StopText {
    fn text(self) -> String;
}

impl StopText for super::StopReason {
    fn text(self) -> String {
        match self {
            super::StopReason::Signal(name) => name.to_string(),
            super::StopReason::Duration => "duration".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> EmitterArgs {
        let mut argv = vec!["logdist-loadtest", "emitter", "--target", "h:1"];
        argv.extend_from_slice(extra);
        match super::super::RoleCli::try_parse_from(argv).unwrap().role {
            super::super::Role::Emitter(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn priority_flags_are_checked() {
        assert!(plan(&args(&[])).is_ok());
        let p = plan(&args(&[
            "--priority-mode",
            "cyclic",
            "--priority-levels",
            "0,5",
        ]))
        .unwrap();
        assert_eq!(
            (0..4).map(|c| p.priority_for(0, c)).collect::<Vec<_>>(),
            [0, 5, 0, 5]
        );
        let err = plan(&args(&[
            "--priority-mode",
            "weighted",
            "--priority-levels",
            "0,5",
        ]))
        .unwrap_err();
        assert!(
            err.contains("one --priority-weights entry per level"),
            "{err}"
        );
        let err = plan(&args(&["--priority-weights", "1"])).unwrap_err();
        assert!(err.contains("only for --priority-mode weighted"), "{err}");
        assert!(
            plan(&args(&[
                "--priority-mode",
                "weighted",
                "--priority-levels",
                "0,5",
                "--priority-weights",
                "0,0",
            ]))
            .is_err()
        );
        let id = default_id();
        assert!(!id.contains(':') && id.len() > 8, "{id}");
    }
}
