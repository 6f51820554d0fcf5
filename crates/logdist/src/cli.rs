//! Command line: every flag also reads a `LOGDIST_*` environment variable, and
//! both win over the config file (CLI > env > file > defaults).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use logdist_net::{TlsClient, TlsClientSettings, TlsError, TlsNames};

use crate::config::{AckMode, Config, ConfigError, DurabilityMode, ListenerConfig, Secret};

/// Replaces `[admin] token`.
pub const ADMIN_TOKEN_ENV: &str = "LOGDIST_ADMIN_TOKEN";
/// Replaces `[analyzers] tokens`; comma-separated.
pub const ANALYZER_TOKENS_ENV: &str = "LOGDIST_ANALYZER_TOKENS";

/// logdist: a log distributor. Emitters stream logs over TCP (NDJSON lines,
/// length-prefixed binary frames with a priority byte, gzip frames); each message
/// goes to one analyzer in proportion to the analyzers' weights, through 256
/// strict-priority queues per analyzer, and is never dropped silently.
#[derive(Debug, Parser)]
#[command(
    name = "logdist",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Secrets are read from the config file (admin.token, admin.token_file, \
analyzers.tokens, analyzers.tokens_file) or from the environment, never from flags: \
LOGDIST_ADMIN_TOKEN replaces admin.token, LOGDIST_ANALYZER_TOKENS (comma-separated) \
replaces analyzers.tokens. SIGHUP reloads them."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,

    /// Log filter, in tracing's EnvFilter syntax (e.g. "info", "logdist=debug").
    #[arg(long, env = "LOGDIST_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// What else logdist can do besides distributing (the default).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with the dead-letter file.
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
    /// Ask a running distributor's admin API whether it is healthy
    /// (GET /api/v1/health) and say it in the exit status: 0 healthy or
    /// degraded, 1 unhealthy, unreachable or any error (for container health
    /// checks: no curl needed).
    Health(HealthArgs),
}

/// `logdist health`: where the admin API is, and what counts as healthy.
#[derive(Debug, Args)]
#[command(
    after_help = "The address is --admin (LOGDIST_ADMIN_LISTEN), else [admin] listen of \
--config (LOGDIST_CONFIG), else 127.0.0.1:8082; 0.0.0.0 and [::] are asked on loopback. When \
the config's [admin] has `tls`, the request goes over HTTPS and the certificate must be the \
one in its tls.cert (or chain to --tls-ca); with tls.client_ca, pass --tls-cert/--tls-key. \
The health endpoint needs no admin token. Prints one line, e.g. \
`healthy: 3 of 3 analyzers active, up 5m2s (http://127.0.0.1:8082/api/v1/health)`; errors \
go to stderr. Exit status: 0 healthy or degraded (with --live: any answer; with \
--min-analyzers: and enough active analyzers), 1 otherwise."
)]
pub struct HealthArgs {
    /// The admin API, HOST:PORT (default: the config's [admin] listen).
    #[arg(long, value_name = "HOST:PORT", env = "LOGDIST_ADMIN_LISTEN")]
    pub admin: Option<String>,
    /// The distributor's config file: where its admin API listens, and its TLS.
    #[arg(short, long, env = "LOGDIST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Give up (exit 1) when no answer came within this.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Pass on any answer of the health endpoint, unhealthy included: the
    /// process is up and serving (a liveness check). A distributor without
    /// analyzers is unhealthy.
    #[arg(long)]
    pub live: bool,
    /// Also require at least N active (healthy) analyzers.
    #[arg(long, value_name = "N")]
    pub min_analyzers: Option<u64>,
    /// Use HTTPS (implied by a --config whose [admin] has `tls`).
    #[arg(long)]
    pub tls: bool,
    /// PEM CA certificate(s) the admin API's certificate must chain to
    /// (default with a --config: trust exactly its [admin] tls.cert).
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for an admin API with `client_ca`. Needs --tls-key.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-ca: the name the certificate must carry (default: the host asked).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Send dead-lettered messages back into a distributor, each with its
    /// original priority. Records the distributor accepted are taken out of the
    /// file; everything else stays. Safe while a distributor writes the file.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The dead-letter file (NDJSON, as written by logdist).
    #[arg(long)]
    pub file: PathBuf,
    #[command(flatten)]
    pub target: ReplayTarget,
    /// Give up (keeping every record) if the distributor has not taken all within this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Priority for records whose `priority` is null or missing and that are
    /// sent as binary frames (frame-born ones). NDJSON-born records without a
    /// priority are sent as their original line, and the target computes one
    /// from `level`/`severity` as for any new line. The default, 3, is INFO's
    /// priority in the default [priorities] table.
    #[arg(long, default_value_t = logdist_wire::DEFAULT_PRIORITY)]
    pub default_priority: u8,
}

/// Where replay sends: an emitter listener, over plain TCP or TLS.
#[derive(Clone, Debug, Default, Args)]
pub struct ReplayTarget {
    /// An emitter listener, host:port (an acking one lets refused records stay in the file).
    #[arg(long = "target", value_name = "HOST:PORT")]
    pub address: String,
    /// Connect over TLS (to a listener with `tls` set). Needs --tls-ca.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: PEM file of the CA certificate(s) the listener's
    /// certificate must chain to.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls: PEM file of a client certificate, for listeners that
    /// require one (mutual TLS). Needs --tls-key.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// With --tls: PEM file of the private key of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// With --tls: the name the listener's certificate must carry (a DNS name
    /// or an IP address). Default: the host of --target.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl ReplayTarget {
    /// The TLS client of `--tls` and co. (`None` without `--tls`), every
    /// file read and checked; errors name the flag.
    pub fn tls_client(&self) -> Result<Option<TlsClient>, TlsError> {
        let settings = TlsClientSettings {
            ca: self.tls_ca.clone(),
            server_name: self.tls_server_name.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        };
        TlsClient::from_flags(self.tls, &settings, &TlsNames::FLAGS)
    }
}

/// A plain TCP target.
impl From<&str> for ReplayTarget {
    fn from(address: &str) -> ReplayTarget {
        ReplayTarget {
            address: address.to_string(),
            ..Default::default()
        }
    }
}

impl From<&String> for ReplayTarget {
    fn from(address: &String) -> ReplayTarget {
        ReplayTarget::from(address.as_str())
    }
}

impl From<&ReplayTarget> for ReplayTarget {
    fn from(target: &ReplayTarget) -> ReplayTarget {
        target.clone()
    }
}

/// Running the distributor: config file, then flags and `LOGDIST_*` variables.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see configs/default.toml). Without one, the defaults
    /// apply: emitters on 0.0.0.0:8080, shipper listener with acks on 0.0.0.0:9000,
    /// analyzers on 0.0.0.0:8081.
    #[arg(short, long, env = "LOGDIST_CONFIG")]
    pub config: Option<PathBuf>,

    /// Emitter listener without acks (repeatable, or comma-separated in the env
    /// var). Given with --ack-listen or alone, replaces the config's listeners.
    #[arg(long, env = "LOGDIST_LISTEN", value_delimiter = ',')]
    pub listen: Vec<SocketAddr>,

    /// Emitter listener that answers each NDJSON message with a status line
    /// (what the seed shipper expects). Repeatable.
    #[arg(long, env = "LOGDIST_ACK_LISTEN", value_delimiter = ',')]
    pub ack_listen: Vec<SocketAddr>,

    /// Address analyzers dial in to.
    #[arg(long, env = "LOGDIST_ANALYZER_LISTEN")]
    pub analyzer_listen: Option<SocketAddr>,

    /// Address of the admin HTTP API and /metrics; "" turns it off.
    #[arg(long, env = "LOGDIST_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,

    /// Capacity of each of an analyzer's 256 priority queues.
    #[arg(long, env = "LOGDIST_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,

    /// Most unacknowledged messages per analyzer connection.
    #[arg(long, env = "LOGDIST_WINDOW")]
    pub window: Option<usize>,

    /// Deliveries tried before a message is dead-lettered.
    #[arg(long, env = "LOGDIST_MAX_ATTEMPTS")]
    pub max_attempts: Option<u8>,

    /// NDJSON file that receives messages that could not be delivered.
    #[arg(long, env = "LOGDIST_DEAD_LETTER_PATH")]
    pub dead_letter_path: Option<PathBuf>,

    /// How long shutdown keeps draining queues to analyzers (e.g. "5s").
    #[arg(long, env = "LOGDIST_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,

    /// Largest binary or gzip frame accepted, in bytes.
    #[arg(long, env = "LOGDIST_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Longest NDJSON line accepted, in bytes.
    #[arg(long, env = "LOGDIST_MAX_LINE_BYTES")]
    pub max_line_bytes: Option<usize>,

    /// Most bytes one gzip frame may expand to.
    #[arg(long, env = "LOGDIST_MAX_DECOMPRESSED_BYTES")]
    pub max_decompressed_bytes: Option<usize>,

    /// Most emitter connections open at once; further ones are closed with a log line.
    #[arg(long, env = "LOGDIST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most bytes of emitters' data held at once (read buffers, inflated gzip,
    /// queued and in-flight messages); reading waits while it is spent.
    #[arg(long, env = "LOGDIST_MAX_BUFFERED_BYTES")]
    pub max_buffered_bytes: Option<usize>,

    /// Where accepted messages live until they are done: "memory" (a crash
    /// loses what logdist holds) or "disk" (every message is in the spool
    /// before its emitter is told ok; see durability.* in the config).
    #[arg(long, env = "LOGDIST_DURABILITY", value_parser = ["memory", "disk"])]
    pub durability: Option<String>,

    /// The spool directory in disk mode (durability.dir); locked, one
    /// logdist per directory.
    #[arg(long, env = "LOGDIST_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Async runtime worker threads (0: half the CPU cores, at least one).
    /// Fewer use less CPU per message; more raise the throughput ceiling.
    #[arg(long, env = "LOGDIST_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Once every listener is bound, write their real addresses here as JSON
    /// (useful with port 0). Written atomically.
    #[arg(long, env = "LOGDIST_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

impl ServeArgs {
    /// The config file (or defaults) with every given flag and env var applied, validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        apply_secret_env(&mut config, |name| std::env::var(name).ok());
        config.validate()?;
        Ok(config)
    }

    fn apply(&self, config: &mut Config) {
        if !self.listen.is_empty() || !self.ack_listen.is_empty() {
            let plain = self
                .listen
                .iter()
                .map(|&address| ListenerConfig::plain(address, AckMode::None));
            let acked = self
                .ack_listen
                .iter()
                .map(|&address| ListenerConfig::plain(address, AckMode::Message));
            config.listeners = plain.chain(acked).collect();
        }
        set(&mut config.analyzers.listen, self.analyzer_listen);
        set(&mut config.admin.listen, self.admin_listen.clone());
        set(&mut config.analyzers.queue_capacity, self.queue_capacity);
        set(&mut config.analyzers.window, self.window);
        set(&mut config.delivery.max_attempts, self.max_attempts);
        set(
            &mut config.delivery.dead_letter_path,
            self.dead_letter_path.clone(),
        );
        set(&mut config.delivery.shutdown_grace, self.shutdown_grace);
        set(&mut config.limits.max_frame_bytes, self.max_frame_bytes);
        set(&mut config.limits.max_line_bytes, self.max_line_bytes);
        set(
            &mut config.limits.max_decompressed_bytes,
            self.max_decompressed_bytes,
        );
        set(&mut config.limits.max_connections, self.max_connections);
        set(
            &mut config.limits.max_buffered_bytes,
            self.max_buffered_bytes,
        );
        set(&mut config.runtime.worker_threads, self.worker_threads);
        if let Some(mode) = &self.durability {
            config.durability.mode = match mode.as_str() {
                "disk" => DurabilityMode::Disk,
                _ => DurabilityMode::Memory,
            };
        }
        set(&mut config.durability.dir, self.spool_dir.clone());
    }
}

/// `LOGDIST_ADMIN_TOKEN` and `LOGDIST_ANALYZER_TOKENS` over the file's tokens
/// (secrets have no flags: a command line is visible to every local user). An
/// empty variable counts as unset.
pub fn apply_secret_env(config: &mut Config, var: impl Fn(&str) -> Option<String>) {
    if let Some(token) = var(ADMIN_TOKEN_ENV).filter(|t| !t.trim().is_empty()) {
        config.admin.token = Some(Secret::new(token.trim()));
    }
    if let Some(tokens) = var(ANALYZER_TOKENS_ENV).filter(|t| !t.trim().is_empty()) {
        config.analyzers.tokens = tokens
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .collect();
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[analyzers]\nwindow = 10\nqueue_capacity = 7\n").unwrap();
        let cli = Cli::try_parse_from([
            "logdist",
            "--config",
            path.to_str().unwrap(),
            "--window",
            "99",
            "--listen",
            "127.0.0.1:0",
            "--ack-listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let config = cli.serve.load_config().unwrap();
        assert_eq!(config.analyzers.window, 99);
        assert_eq!(config.analyzers.queue_capacity, 7);
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.listeners[1].ack, AckMode::Message);
    }

    #[test]
    fn replay_is_a_subcommand_and_excludes_server_flags() {
        let cli = Cli::try_parse_from([
            "logdist",
            "dead-letter",
            "replay",
            "--file",
            "d.ndjson",
            "--target",
            "127.0.0.1:8080",
        ])
        .unwrap();
        let Some(Command::DeadLetter(DeadLetterCommand::Replay(args))) = cli.command else {
            panic!("not parsed as replay");
        };
        assert_eq!(args.target.address, "127.0.0.1:8080");
        assert!(!args.target.tls);
        assert!(args.target.tls_client().unwrap().is_none());
        assert_eq!(args.timeout, Duration::from_secs(60));
        assert_eq!(args.default_priority, 3);
        assert!(
            Cli::try_parse_from(["logdist", "--window", "5", "dead-letter", "replay"]).is_err()
        );
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let mut config = Config::default();
        config.analyzers.tokens = vec![Secret::new("from-file")];
        apply_secret_env(&mut config, |_| None);
        assert_eq!(config.analyzers.tokens, [Secret::new("from-file")]);
        apply_secret_env(&mut config, |name| match name {
            ADMIN_TOKEN_ENV => Some(" admin-env ".to_string()),
            ANALYZER_TOKENS_ENV => Some("one, two,,".to_string()),
            _ => None,
        });
        assert_eq!(config.admin.token, Some(Secret::new("admin-env")));
        assert_eq!(
            config.analyzers.tokens,
            [Secret::new("one"), Secret::new("two")]
        );
        config.validate().unwrap();
    }

    #[test]
    fn replay_takes_tls_flags() {
        let cli = Cli::try_parse_from([
            "logdist",
            "dead-letter",
            "replay",
            "--file",
            "d.ndjson",
            "--target",
            "logs.example:6514",
            "--tls",
            "--tls-ca",
            "certs/ca.pem",
            "--tls-cert",
            "certs/client.pem",
            "--tls-key",
            "certs/client-key.pem",
            "--tls-server-name",
            "logdist",
        ])
        .unwrap();
        let Some(Command::DeadLetter(DeadLetterCommand::Replay(args))) = cli.command else {
            panic!("not parsed as replay");
        };
        let t = &args.target;
        assert!(t.tls);
        assert_eq!(t.address, "logs.example:6514");
        assert_eq!(
            t.tls_ca.as_deref(),
            Some(std::path::Path::new("certs/ca.pem"))
        );
        assert_eq!(
            t.tls_cert.as_deref(),
            Some(std::path::Path::new("certs/client.pem"))
        );
        assert_eq!(
            t.tls_key.as_deref(),
            Some(std::path::Path::new("certs/client-key.pem"))
        );
        assert_eq!(t.tls_server_name.as_deref(), Some("logdist"));
        // The files are read when the client is made: errors name the flag.
        let err = t.tls_client().unwrap_err().to_string();
        assert!(
            err.starts_with("--tls-ca: cannot read certs/ca.pem"),
            "{err}"
        );
        let plain = ReplayTarget {
            tls: false,
            ..t.clone()
        };
        let err = plain.tls_client().unwrap_err().to_string();
        assert!(err.contains("is set but TLS is off: add --tls"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let cli = Cli::try_parse_from(["logdist", "--config", "/nonexistent/x.toml"]).unwrap();
        let err = cli.serve.load_config().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x.toml"), "{err}");
    }
}
