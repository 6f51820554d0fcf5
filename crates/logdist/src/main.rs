use std::process::ExitCode;

use clap::Parser;
use logdist::Server;
use logdist::cli::{Cli, Command, DeadLetterCommand, ReplayArgs, ServeArgs};
use logdist::reload::ReloadHandle;
use logdist::server::write_ready_file;
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
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("logdist: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::DeadLetter(DeadLetterCommand::Replay(args))) => {
            runtime.block_on(replay(args))
        }
        None => runtime.block_on(serve(cli.serve)),
    }
}

async fn replay(args: ReplayArgs) -> ExitCode {
    match logdist::replay::replay(&args.file, &args.target, args.timeout).await {
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

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.load_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("logdist: {err}");
            return ExitCode::from(2);
        }
    };
    {
        let server = match Server::bind(&config).await {
            Ok(server) => server,
            Err(err) => {
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
