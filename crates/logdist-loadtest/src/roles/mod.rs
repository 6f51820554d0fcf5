//! The load tester's emitter and analyzer as standalone processes, one per
//! container or host (`logdist-loadtest emitter ...`, `logdist-loadtest
//! analyzer ...`), for docker-compose.yml and multi-host tests. They speak
//! the same wire formats and payloads as the simulated ones of a profile run,
//! print a progress line every second and a summary at the end (stopped by
//! SIGTERM or SIGINT, or after `--duration`), and the summaries of several
//! processes reconcile exactly: see [`emitter`] and [`analyzer`].
//!
//! The summary is a readable line, then `summary: {json}` with the numbers,
//! for scripts and tests.

pub mod analyzer;
pub mod emitter;

use std::borrow::Cow;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use logdist_net::{ClientStream, TlsClient, TlsClientSettings, TlsNames};
use tokio_util::sync::CancellationToken;

/// Exit status: stopped as asked, nothing wrong seen.
pub const EXIT_OK: i32 = 0;
/// Exit status: something wrong was seen (a connection that failed mid-run,
/// checksum failures, duplicates).
pub const EXIT_FAILED: i32 = 1;
/// Exit status: could not start (bad flags, no connection within
/// `--connect-timeout`, refused by the distributor).
pub const EXIT_ERROR: i32 = 2;

/// The role subcommands, parsed when the first argument names one.
#[derive(Debug, Parser)]
#[command(
    name = "logdist-loadtest",
    version,
    about = "Load-test roles as standalone processes: an emitter or an analyzer.",
    long_about = "Load-test roles as standalone processes, one per container or host: \
`logdist-loadtest emitter` sends frames at a steady rate, `logdist-loadtest analyzer` \
receives, checks and acknowledges them. Each prints a progress line every second (stderr) \
and, when stopped by SIGTERM/SIGINT or after --duration, a summary (stdout): a readable line \
and `summary: {json}`. The analyzers' summaries count every emitter's messages by id, with a \
fingerprint of their counters, so the summaries of all processes reconcile exactly (no loss, \
no duplicate) against the emitters'. Profile runs: `logdist-loadtest <profile> --help`."
)]
pub struct RoleCli {
    #[command(subcommand)]
    pub role: Role,
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// Send binary frames to an emitter listener, open loop at --rate.
    Emitter(emitter::EmitterArgs),
    /// Dial the analyzer listener, check and acknowledge what arrives.
    Analyzer(analyzer::AnalyzerArgs),
}

/// Names of the role subcommands: a first argument with one of them is a role.
pub const ROLE_NAMES: [&str; 2] = ["emitter", "analyzer"];

/// When the first argument names a role (or is the hidden `relay` that
/// `--baseline relay` starts): parse its flags, run it, and return its exit
/// status. `None` otherwise (a profile run).
pub fn dispatch(args: &[OsString]) -> Option<i32> {
    let first = args.get(1)?.to_str()?;
    if first == crate::relay::RELAY_COMMAND {
        return Some(crate::relay::main(&args[1..]));
    }
    if !ROLE_NAMES.contains(&first) {
        return None;
    }
    let cli = RoleCli::parse_from(args);
    Some(run(cli))
}

fn run(cli: RoleCli) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logdist-loadtest: cannot start the runtime: {e}");
            return EXIT_ERROR;
        }
    };
    let code = rt.block_on(async {
        let stop = match stop_on_signals() {
            Ok(stop) => stop,
            Err(e) => {
                eprintln!("logdist-loadtest: cannot install signal handlers: {e}");
                return EXIT_ERROR;
            }
        };
        match cli.role {
            Role::Emitter(args) => emitter::run(args, stop).await,
            Role::Analyzer(args) => analyzer::run(args, stop).await,
        }
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    code
}

/// Why a role stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Signal(&'static str),
    Duration,
}

impl StopReason {
    pub fn describe(self) -> String {
        match self {
            StopReason::Signal(name) => format!("stopped by {name}"),
            StopReason::Duration => "--duration reached".to_string(),
        }
    }
}

/// A token cancelled at the first SIGTERM or SIGINT, with the signal's name.
/// The handlers are installed before it returns, so an early signal counts.
pub struct Stop {
    pub token: CancellationToken,
    pub reason: std::sync::Arc<parking_lot::Mutex<Option<StopReason>>>,
}

impl Stop {
    /// Stops for `reason` unless already stopped.
    pub fn stop(&self, reason: StopReason) {
        self.reason.lock().get_or_insert(reason);
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock()
    }

    /// Stops when `duration` is over (if given).
    pub fn after(&self, duration: Option<Duration>) {
        if let Some(duration) = duration {
            let token = self.token.clone();
            let reason = self.reason.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(duration) => {
                        reason.lock().get_or_insert(StopReason::Duration);
                        token.cancel();
                    }
                }
            });
        }
    }
}

fn stop_on_signals() -> std::io::Result<Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = Stop {
        token: CancellationToken::new(),
        reason: Default::default(),
    };
    let token = stop.token.clone();
    let reason = stop.reason.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        reason.lock().get_or_insert(StopReason::Signal(name));
        token.cancel();
    });
    Ok(stop)
}

/// The TLS flags both roles take (the same as a profile run's).
#[derive(Clone, Debug, Default, Args)]
pub struct TlsArgs {
    /// Connect over TLS (to a listener with `tls`). Needs --tls-ca.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: PEM file of the CA certificate(s) logdist's certificate
    /// must chain to.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls: PEM client certificate to present (mutual TLS). Needs --tls-key.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// With --tls: PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// With --tls: the name logdist's certificate must carry (default: the
    /// host of --target).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The TLS client (`None` without --tls); errors name the flag.
    pub fn client(&self) -> Result<Option<TlsClient>, String> {
        let settings = TlsClientSettings {
            ca: self.tls_ca.clone(),
            server_name: self.tls_server_name.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        };
        let names = TlsNames {
            enable: Cow::Borrowed("--tls"),
            ..TlsNames::FLAGS
        };
        TlsClient::from_flags(self.tls, &settings, &names).map_err(|e| e.to_string())
    }
}

/// Connects to `host:port` (over TLS with `tls`), trying again every 200 ms
/// (saying why once per distinct error) until it works, `timeout` passes (an
/// error: the last failure) or `stop` comes (`None`).
pub async fn connect_until(
    host: &str,
    port: u16,
    tls: Option<&TlsClient>,
    timeout: Duration,
    stop: &Stop,
    name: &str,
) -> Result<Option<ClientStream>, String> {
    // A timeout too long to add to the clock has no deadline.
    let deadline = tokio::time::Instant::now().checked_add(timeout);
    let mut said: Option<String> = None;
    loop {
        let attempt = tokio::select! {
            _ = stop.token.cancelled() => return Ok(None),
            r = logdist_net::connect(host, port, tls, Duration::from_secs(5)) => r,
        };
        let error = match attempt {
            Ok(stream) => return Ok(Some(stream)),
            Err(e) => e.to_string(),
        };
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(error);
        }
        if said.as_deref() != Some(error.as_str()) {
            eprintln!("{name}: cannot connect to {host}:{port} yet ({error}); retrying");
            said = Some(error);
        }
        tokio::select! {
            _ = stop.token.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// `HOST:PORT` (a name, an IPv4 address or `[v6]`) split, or why not.
pub fn parse_target(target: &str) -> Result<(String, u16), String> {
    logdist_net::tls::split_host_port(target)
        .map(|(host, port)| (host.to_string(), port))
        .ok_or_else(|| format!("--target {target:?} is not HOST:PORT"))
}

/// This host's name (the container id in a container), for default ids.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// SplitMix64's finalizer: the fingerprint of one counter. An emitter's
/// fingerprint is the wrapping sum over the counters it sent, an analyzer's
/// over those it received from that emitter; summed over all analyzers it
/// equals the emitter's exactly when every message arrived once (a loss and
/// a duplicate cancelling out in the count still change the sum).
pub fn counter_fingerprint(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per-priority counts as `3=100 7=20`, non-zero ones only.
pub fn priorities_text(counts: &[u64; 256]) -> String {
    let parts: Vec<String> = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| format!("{p}={n}"))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(" ")
    }
}

/// Per-priority counts as a JSON object of non-zero ones.
pub fn priorities_json(counts: &[u64; 256]) -> serde_json::Value {
    counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| (p.to_string(), serde_json::Value::from(*n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_dispatched_by_the_first_argument_only() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(dispatch(&args(&["logdist-loadtest", "basic"])), None);
        assert_eq!(dispatch(&args(&["logdist-loadtest"])), None);
        assert_eq!(
            dispatch(&args(&["logdist-loadtest", "basic", "emitter"])),
            None
        );
        let cli = RoleCli::try_parse_from([
            "logdist-loadtest",
            "emitter",
            "--target",
            "logdist:8080",
            "--rate",
            "50",
            "--priority-mode",
            "weighted",
            "--priority-levels",
            "1,3",
            "--priority-weights",
            "1,3",
            "--duration",
            "2s",
        ])
        .unwrap();
        assert!(matches!(cli.role, Role::Emitter(_)));
        let cli = RoleCli::try_parse_from([
            "logdist-loadtest",
            "analyzer",
            "--target",
            "[::1]:8081",
            "--weight",
            "3",
            "--handshake",
            "seed",
            "--ack-every",
            "10",
        ])
        .unwrap();
        assert!(matches!(cli.role, Role::Analyzer(_)));
        assert!(
            RoleCli::try_parse_from(["logdist-loadtest", "analyzer", "--weight", "1"]).is_err(),
            "--target is required"
        );
    }

    #[test]
    fn targets_and_fingerprints() {
        assert_eq!(
            parse_target("logdist:8081").unwrap(),
            ("logdist".to_string(), 8081)
        );
        assert_eq!(parse_target("[::1]:1").unwrap(), ("::1".to_string(), 1));
        assert!(parse_target("logdist").is_err());
        // A permutation of 0..n has the same fingerprint; a duplicate plus a
        // loss (same count) does not.
        let sum = |cs: &[u64]| {
            cs.iter()
                .fold(0u64, |acc, &c| acc.wrapping_add(counter_fingerprint(c)))
        };
        assert_eq!(sum(&[0, 1, 2, 3]), sum(&[3, 1, 0, 2]));
        assert_ne!(sum(&[0, 1, 2, 3]), sum(&[0, 1, 2, 2]));
        let name = hostname();
        assert!(!name.is_empty() && !name.contains(':'), "{name}");
    }
}
