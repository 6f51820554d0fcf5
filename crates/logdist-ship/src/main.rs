//! `logdist-ship` command: see `logdist-ship --help`.

use std::process::ExitCode;

use clap::Parser;
use logdist_ship::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit with code 2
    let print_config = cli.print_config;
    let config = cli.into_config().unwrap_or_else(|usage| usage.exit());
    if print_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).expect("config serializes")
        );
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("logdist-ship: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let signal = shutdown_signal()?;
        Ok::<_, std::io::Error>(run(config, signal).await)
    });
    match result {
        Ok(Ok(summary)) => {
            println!("{summary}");
            ExitCode::from(summary.exit_code())
        }
        Ok(Err(error)) => {
            eprintln!("logdist-ship: {error}");
            ExitCode::from(error.exit_code())
        }
        Err(error) => {
            eprintln!("logdist-ship: cannot install signal handlers: {error}");
            ExitCode::from(1)
        }
    }
}

/// Completes at the first Ctrl-C (SIGINT) or SIGTERM. Handlers are installed
/// before it is returned, so a signal arriving early is not lost.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
