use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use logdist::cli::{Cli, Command, DeadLetterCommand, HealthArgs, ReplayArgs, ServeArgs};
use logdist::control::reload::ReloadHandle;
use logdist::server::{BindError, write_ready_file};
use logdist::{Config, Server};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|err| {
        eprintln!(
            "logdist: invalid --log filter {:?} ({err}); using \"info\"",
            cli.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    match cli.command {
        Some(Command::DeadLetter(DeadLetterCommand::Replay(args))) => with_runtime(0, replay(args)),
        Some(Command::Health(args)) => with_runtime(1, health(args)),
        None => {
            let config = match cli.serve.load_config() {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("logdist: {err}");
                    return ExitCode::from(2);
                }
            };
            with_runtime(config.runtime.workers(), serve(cli.serve, config))
        }
    }
}

/// How long the runtime may take to stop once the work is done.
const RUNTIME_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `job` on a multi-threaded runtime with `worker_threads` workers (0: one per core).
fn with_runtime(worker_threads: usize, job: impl Future<Output = ExitCode>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    match builder.enable_all().build() {
        Ok(runtime) => {
            let code = runtime.block_on(job);
            // Dropping a runtime waits for every blocking task (a gzip frame
            // still inflating for a connection that was cut): bound that.
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
            code
        }
        Err(err) => {
            eprintln!("logdist: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn replay(args: ReplayArgs) -> ExitCode {
    match logdist::delivery::replay::replay(
        &args.file,
        &args.target,
        args.timeout,
        args.default_priority,
    )
    .await
    {
        Ok(report) => {
            println!(
                "replayed {} dead letters from {}; {} kept in the file",
                report.replayed,
                args.file.display(),
                report.kept
            );
            if report.kept == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("logdist: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `logdist health`: one line on stdout when the admin API answered (errors
/// on stderr); 0 when it passes, 1 otherwise.
async fn health(args: HealthArgs) -> ExitCode {
    let endpoint = match logdist::health::endpoint(&args) {
        Ok(endpoint) => endpoint,
        Err(err) => {
            eprintln!("logdist health: {err}");
            return ExitCode::FAILURE;
        }
    };
    match logdist::health::ask(&endpoint, args.timeout).await {
        Ok(answer) => {
            let verdict =
                logdist::health::judge(&answer, &endpoint.url(), args.live, args.min_analyzers);
            println!("{}", verdict.line);
            if verdict.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("logdist health: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs, config: Config) -> ExitCode {
    {
        let server = match Server::bind(&config).await {
            Ok(server) => server,
            // A certificate or key that does not load is a bad setting like any other.
            Err(BindError::Config(err)) => {
                eprintln!("logdist: {err}");
                return ExitCode::from(2);
            }
            Err(err @ (BindError::Io(_) | BindError::Spool(_))) => {
                eprintln!("logdist: {err}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(path) = &args.ready_file
            && let Err(err) = write_ready_file(path, &server.addresses())
        {
            eprintln!("logdist: cannot write ready file {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        let reloads = tokio::spawn(reload_on_sighup(server.reload_handle(), args));
        let report = server.run(shutdown_signal()).await;
        reloads.abort();
        let s = &report.stats;
        tracing::info!(
            accepted = s.accepted,
            rejected = s.rejected_total(),
            delivered = s.delivered,
            redelivered = s.redelivered,
            dead_lettered = s.dead_lettered,
            dead_letter_failures = s.dead_letter_failures,
            kept_in_spool = report.kept_in_spool,
            "stopped"
        );
        if s.dead_letter_failures > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Reloads the config (file, then the same flags and env vars) on every
/// SIGHUP; a config that does not load or validate changes nothing.
async fn reload_on_sighup(reload: ReloadHandle, args: ServeArgs) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGHUP; config reload is off");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!(config = ?args.config, "SIGHUP received: reloading the config");
        match args.load_config() {
            // `reload` logs the outcome either way.
            Ok(config) => {
                let _ = reload.reload(config).await;
            }
            Err(err) => {
                tracing::error!(%err, "config reload rejected; the running config stays");
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM; only Ctrl-C will stop logdist");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
