use clap::Parser;
use logdist_loadtest::cli::Cli;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // `logdist-loadtest emitter|analyzer ...`: a standalone role.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = logdist_loadtest::roles::dispatch(&args) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    std::process::exit(logdist_loadtest::cli::main(cli));
}
