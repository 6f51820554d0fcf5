//! Command line: which profile, for how long, against which distributor.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Parser;
use logdist_net::{TlsClient, TlsClientSettings, TlsNames};

use crate::harness::{Baseline, RunOptions, TlsOptions};
use crate::partition::Island;
use crate::payload::ChecksumKind;
use crate::profile::{
    ChaosAction, DurabilityMode, DurabilitySync, Profile, parse_duration, workspace_root,
};
use crate::runner;

/// Exit code when every invariant held.
pub const EXIT_PASS: i32 = 0;
/// Exit code when the run finished but an invariant failed (loss, duplicates,
/// checksum failures, share deviation, ...).
pub const EXIT_FAIL: i32 = 1;
/// Exit code when the run could not be carried out (bad profile, logdist
/// missing or not starting, cannot connect).
pub const EXIT_ERROR: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "logdist-loadtest",
    version,
    after_help = "Standalone roles, one process each (docker-compose.yml uses them): \
`logdist-loadtest emitter --help`, `logdist-loadtest analyzer --help`.",
    about = "Load test for logdist: simulates emitters and analyzers, reconciles every message.",
    long_about = "Load test for logdist.\n\n\
One process simulates all emitters and analyzers of a profile as async tasks, each with its \
own TCP connection, speaking the seed wire formats. Emitters send binary frames open loop at a \
steady rate (payload `<emitter_id>:<unix_nanos>:<counter>:<padding><checksum>`); analyzers \
check every payload and ack in batches. At the end every message is reconciled exactly: sent, \
received, lost, duplicated, checksum failures per emitter; share per analyzer against its \
weight; latency percentiles per priority.\n\n\
By default it starts logdist itself (the binary next to this one, with the profile's \
configs/<profile>.toml on free ports) and stops it at the end; --target and --analyzer-target \
use an already running distributor instead.\n\n\
TLS: --tls makes the emitters, --analyzer-tls the analyzers, connect over TLS with \
--tls-ca (and --tls-cert/--tls-key for mutual TLS, --tls-server-name); --tls-dir DIR, when \
it starts logdist itself, puts every listener of logdist on mutual TLS with a test CA (made \
in DIR with rcgen unless DIR holds one) and connects both sides with it.\n\n\
Durability: --durability disk|memory (and --durability-sync fsync|write), when it starts \
logdist itself, sets [durability] in the run's config (disk mode spools into the results \
directory), so the cost of durability is measured on the same load. The crash profile \
SIGKILLs logdist on a schedule and restarts it on the same ports and spool; its emitters \
send NDJSON and read a reply per line, and every line acked ok must reach an analyzer.\n\n\
Results go to <results-dir>/<profile>-<time>/: summary.txt, summary.json, timeline.csv, \
weights.csv, chart.svg, and (when it started logdist) logdist.log and logdist.toml.\n\n\
Exit status: 0 all invariants held, 1 an invariant failed (each failure is printed with its \
reason), 2 the run could not be carried out."
)]
pub struct Cli {
    /// Profile to run: basic, throughput, chaos, max, crash
    /// (loadtest/profiles/<name>.toml), or any name together with --profile-file.
    pub profile: String,

    /// Shorten (or lengthen) the run: how long emitters send, e.g. "10s", "2m".
    /// For `max`, the time budget of the whole ramp.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Read the profile from this TOML file instead of loadtest/profiles/<profile>.toml.
    #[arg(long, value_name = "PATH")]
    pub profile_file: Option<PathBuf>,

    /// Emitter address of an already running distributor (needs --analyzer-target).
    #[arg(long, value_name = "ADDR", requires = "analyzer_target")]
    pub target: Option<SocketAddr>,

    /// Analyzer address of an already running distributor (needs --target).
    #[arg(long, value_name = "ADDR", requires = "target")]
    pub analyzer_target: Option<SocketAddr>,

    /// The logdist binary to start (default: `logdist` next to this binary).
    #[arg(long, value_name = "PATH", env = "LOGDIST_BIN")]
    pub logdist_bin: Option<PathBuf>,

    /// Where results go: a <profile>-<time>/ directory is created in it
    /// (default: loadtest/results).
    #[arg(long, value_name = "DIR")]
    pub results_dir: Option<PathBuf>,

    /// Payload checksum: sha256 (64 hex chars, seed-compatible) or fnv (16 hex
    /// chars, cheap). Default: the profile's `checksum`.
    #[arg(long, value_enum)]
    pub checksum: Option<ChecksumKind>,

    /// Seed for sizes and priorities (default: from the clock; printed in the report).
    #[arg(long)]
    pub seed: Option<u64>,

    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,

    /// Emitters connect over TLS (to an emitter listener with `tls`). Needs --tls-ca.
    #[arg(long)]
    pub tls: bool,

    /// Analyzers connect over TLS (to an analyzer listener with `tls`). Needs --tls-ca.
    #[arg(long)]
    pub analyzer_tls: bool,

    /// With --tls / --analyzer-tls: PEM file of the CA certificate(s) that
    /// logdist's certificate must chain to.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// With --tls / --analyzer-tls: PEM file of the client certificate the
    /// emitters and analyzers present (mutual TLS). Needs --tls-key.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// With --tls / --analyzer-tls: PEM file of the private key of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// With --tls / --analyzer-tls: the name logdist's certificate must carry
    /// (default: the host of the address dialled).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// When it starts logdist: every listener on mutual TLS, and emitters and
    /// analyzers connecting over TLS. DIR holds ca.pem, server.pem,
    /// server-key.pem, client.pem, client-key.pem (scripts/gen-certs.sh), or
    /// gets a fresh test CA and certificates (rcgen) when it has no ca.pem.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["target", "tls_ca", "tls_cert", "tls_key"])]
    pub tls_dir: Option<PathBuf>,

    /// Token the analyzers put in their JSON hellos, for an analyzer listener
    /// with `tokens` (seed-handshake analyzers send none).
    #[arg(long, value_name = "TOKEN", env = "LOADTEST_ANALYZER_TOKEN")]
    pub analyzer_token: Option<String>,

    /// When it starts logdist: its `[durability] mode` (default: the
    /// profile's `durability`, else the config's). Disk mode spools into
    /// <results>/spool.
    #[arg(long, value_enum, conflicts_with = "target")]
    pub durability: Option<DurabilityMode>,

    /// When it starts logdist in disk mode: `[durability] sync` (default fsync).
    #[arg(long, value_enum, value_name = "SYNC", conflicts_with = "target")]
    pub durability_sync: Option<DurabilitySync>,

    /// Ramp profiles (max): `relay` first runs the same ramp against a bare
    /// relay built into the load tester (its own process: round robin, whole
    /// frames, no queues, weights or priorities), then against logdist, and
    /// reports both maxima and logdist / relay, how close logdist gets to
    /// what this machine can carry. `none` (default): logdist only.
    #[arg(long, value_enum, default_value = "none")]
    pub baseline: Baseline,
}

/// How errors name the TLS flags.
const TLS_NAMES: TlsNames = TlsNames {
    enable: Cow::Borrowed("--tls or --analyzer-tls"),
    ..TlsNames::FLAGS
};

/// The TLS clients of the command line.
fn tls_options(cli: &Cli) -> Result<TlsOptions, String> {
    if let Some(dir) = &cli.tls_dir {
        return Ok(TlsOptions {
            dir: Some(dir.clone()),
            server_name: cli.tls_server_name.clone(),
            ..TlsOptions::default()
        });
    }
    let settings = TlsClientSettings {
        ca: cli.tls_ca.clone(),
        server_name: cli.tls_server_name.clone(),
        cert: cli.tls_cert.clone(),
        key: cli.tls_key.clone(),
    };
    let client = TlsClient::from_flags(cli.tls || cli.analyzer_tls, &settings, &TLS_NAMES)
        .map_err(|e| e.to_string())?;
    Ok(TlsOptions {
        emitters: client.clone().filter(|_| cli.tls),
        analyzers: client.filter(|_| cli.analyzer_tls),
        dir: None,
        server_name: None,
    })
}

fn default_results_root() -> PathBuf {
    let local = PathBuf::from("loadtest");
    if local.is_dir() {
        return local.join("results");
    }
    let in_tree = workspace_root().join("loadtest");
    if in_tree.is_dir() {
        return in_tree.join("results");
    }
    local.join("results")
}

/// Build the run options from the command line.
pub fn options(cli: &Cli) -> Result<RunOptions, String> {
    let (profile, profile_source) = Profile::load(&cli.profile, cli.profile_file.as_deref())?;
    let duration = cli.duration.unwrap_or(profile.duration);
    if duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if profile.crash.is_some() && cli.target.is_some() {
        return Err(format!(
            "profile {}: the crash fault kills and restarts logdist, so it must start it \
             itself (drop --target and --analyzer-target)",
            profile.name
        ));
    }
    if cli.baseline != Baseline::None && profile.ramp.is_none() {
        return Err(format!(
            "--baseline relay needs a profile with a [ramp] (max); {} has none",
            profile.name
        ));
    }
    let seed = cli.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_007)
            .unwrap_or(1)
    });
    Ok(RunOptions {
        checksum: cli.checksum.unwrap_or(profile.checksum),
        profile,
        profile_source,
        duration,
        target: cli.target.zip(cli.analyzer_target),
        logdist_bin: cli.logdist_bin.clone(),
        results_root: cli.results_dir.clone().unwrap_or_else(default_results_root),
        seed,
        progress: !cli.quiet,
        tls: tls_options(cli)?,
        analyzer_token: cli.analyzer_token.clone(),
        island: None,
        partition_skipped: None,
        durability: cli.durability,
        durability_sync: cli.durability_sync,
        baseline: cli.baseline,
    })
}

/// Sets up the chaos `partition` fault when the schedule has one: creates
/// its namespaces and moves this thread into the world one (before the
/// runtime exists, so all of the run follows), or takes the fault out of the
/// schedule with the reason it cannot run.
fn prepare_partition(opts: &mut RunOptions) -> Result<(), String> {
    let analyzers = opts.profile.analyzer_list().len();
    let Some(chaos) = opts.profile.chaos.as_mut() else {
        return Ok(());
    };
    if !chaos.actions.contains(&ChaosAction::Partition) {
        return Ok(());
    }
    let skipped = match Island::unavailable(opts.target.is_some()) {
        None => {
            let island = Island::create(analyzers - 1)?;
            island.enter_world()?;
            opts.island = Some(std::sync::Arc::new(island));
            return Ok(());
        }
        Some(reason) => reason,
    };
    eprintln!("logdist-loadtest: chaos fault `partition` skipped: {skipped}");
    chaos.actions.retain(|a| *a != ChaosAction::Partition);
    if chaos.actions.is_empty() {
        opts.profile.chaos = None;
    }
    opts.partition_skipped = Some(format!("chaos fault `partition` skipped: {skipped}"));
    Ok(())
}

/// Run and return the process exit code.
pub fn main(cli: Cli) -> i32 {
    let mut opts = match options(&cli) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("logdist-loadtest: {e}");
            return EXIT_ERROR;
        }
    };
    if let Err(e) = prepare_partition(&mut opts) {
        eprintln!("logdist-loadtest: {e}");
        return EXIT_ERROR;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logdist-loadtest: cannot start the runtime: {e}");
            return EXIT_ERROR;
        }
    };
    let result = rt.block_on(runner::run(opts));
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(outcome) => {
            print!("{}", outcome.summary.render_text());
            if outcome.summary.passed {
                EXIT_PASS
            } else {
                eprintln!("logdist-loadtest: FAILED:");
                for f in &outcome.summary.failures {
                    eprintln!("  {f}");
                }
                EXIT_FAIL
            }
        }
        Err(e) => {
            eprintln!("logdist-loadtest: run failed: {e}");
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec!["logdist-loadtest", "basic"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
    }

    fn tls(args: &[&str]) -> Result<TlsOptions, String> {
        tls_options(&parse(args).unwrap())
    }

    #[test]
    fn tls_flags_pick_which_side_uses_tls() {
        let dir = tempfile::tempdir().unwrap();
        let files = logdist_net::test_pki::TestPki::generate(&[])
            .write_to(dir.path())
            .unwrap();
        let ca = files.ca.to_str().unwrap();
        let (cert, key) = (
            files.client.to_str().unwrap(),
            files.client_key.to_str().unwrap(),
        );

        let plain = tls(&[]).unwrap();
        assert!(plain.emitters.is_none() && plain.analyzers.is_none() && plain.dir.is_none());
        let emitters = tls(&["--tls", "--tls-ca", ca]).unwrap();
        assert!(emitters.emitters.is_some() && emitters.analyzers.is_none());
        let analyzers = tls(&["--analyzer-tls", "--tls-ca", ca]).unwrap();
        assert!(analyzers.emitters.is_none() && analyzers.analyzers.is_some());
        let both = tls(&[
            "--tls",
            "--analyzer-tls",
            "--tls-ca",
            ca,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-server-name",
            "localhost",
        ])
        .unwrap();
        assert!(both.emitters.is_some() && both.analyzers.is_some());

        // Errors name the flags.
        let err = tls(&["--tls-ca", ca]).unwrap_err();
        assert!(
            err.starts_with("--tls-ca is set but TLS is off: add --tls or --analyzer-tls"),
            "{err}"
        );
        let err = tls(&["--analyzer-tls"]).unwrap_err();
        assert!(
            err.starts_with("--tls or --analyzer-tls needs --tls-ca"),
            "{err}"
        );
        let err = tls(&["--tls", "--tls-ca", ca, "--tls-cert", cert]).unwrap_err();
        assert!(err.starts_with("--tls-cert needs --tls-key"), "{err}");

        // --tls-dir: certificates are made or read when the run starts logdist.
        let with_dir = tls(&["--tls-dir", "some/dir"]).unwrap();
        assert_eq!(
            with_dir.dir.as_deref(),
            Some(std::path::Path::new("some/dir"))
        );
        for conflicting in [
            &[
                "--tls-dir",
                "d",
                "--target",
                "127.0.0.1:1",
                "--analyzer-target",
                "127.0.0.1:2",
            ][..],
            &["--tls-dir", "d", "--tls-ca", ca],
        ] {
            assert!(parse(conflicting).is_err(), "{conflicting:?}");
        }
    }
}
