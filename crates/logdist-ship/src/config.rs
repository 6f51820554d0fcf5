//! Settings: command-line flags, then environment variables, then defaults
//! (clap resolves the precedence). The seed shipper's names are kept as they
//! were (`LOG_FILE`, `SERVER_HOST`, ..., `--log-file`, `--mode`, ...).

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser, ValueEnum};
use logdist_net::{TlsClient, TlsClientSettings, TlsError, TlsNames};
use serde::Serialize;

/// Batch ships the files once and exits; continuous tails them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Batch,
    Continuous,
}

/// Where continuous mode starts in a file that has no checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

/// What a `--level-map` entry turns a level into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LevelTarget {
    /// Rewrite the `level` field.
    Level(String),
    /// Keep the level, set `"priority"`.
    Priority(u8),
}

/// One `FROM=TO` entry of `--level-map`; FROM is compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LevelMapping {
    pub from: String,
    pub to: LevelTarget,
}

fn parse_level_mapping(text: &str) -> Result<LevelMapping, String> {
    let (from, to) = text
        .split_once('=')
        .ok_or_else(|| format!("expected FROM=TO, got {text:?}"))?;
    let (from, to) = (from.trim(), to.trim());
    if from.is_empty() || to.is_empty() {
        return Err(format!(
            "expected FROM=TO with both sides non-empty, got {text:?}"
        ));
    }
    let to = if to.bytes().all(|b| b.is_ascii_digit()) {
        LevelTarget::Priority(
            to.parse()
                .map_err(|_| format!("priority {to:?} is not in 0..=255"))?,
        )
    } else {
        LevelTarget::Level(to.to_string())
    };
    Ok(LevelMapping {
        from: from.to_ascii_uppercase(),
        to,
    })
}

/// Which of several servers the shipper dials first; after that it goes
/// round robin, to the next server each time a connection fails or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerOrder {
    /// A server drawn at random once per process: many shippers given the
    /// same list spread over the servers instead of all crowding the first.
    Random,
    /// The first one listed: it is the primary, the others are standbys.
    Listed,
}

/// One logdist listener: a host name or IP address, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    pub fn new(host: &str, port: u16) -> ServerAddress {
        ServerAddress {
            host: host.to_string(),
            port,
        }
    }
}

/// As `--server` takes it: `HOST:PORT`, an IPv6 address in brackets.
impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A string, as `--server` takes it (so `--print-config` shows the list as given).
impl Serialize for ServerAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `--server`'s `HOST:PORT`. An IPv6 address must be in brackets
/// (`[::1]:9000`): without them, where the address ends and the port
/// begins is a guess.
pub fn parse_server_address(text: &str) -> Result<ServerAddress, String> {
    let text = text.trim();
    let expected =
        || format!("expected HOST:PORT (an IPv6 address in brackets: [::1]:9000), got {text:?}");
    let (host, port) = text.rsplit_once(':').ok_or_else(expected)?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.strip_suffix(']').ok_or_else(expected)?,
        None if host.contains(':') => return Err(expected()),
        None => host,
    };
    if host.is_empty() {
        return Err(expected());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(ServerAddress::new(host, port)),
        _ => Err(format!("port {port:?} of {text:?} is not in 1..=65535")),
    }
}

/// Seconds as a decimal number (`0.5`, `10`, the seed's form) or a humantime
/// duration (`500ms`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("{text:?} is not a duration >= 0"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))
}

const ABOUT: &str =
    "Ship log files to logdist over TCP, one JSON line per log line, with per-message acks.";

const LONG_ABOUT: &str = "\
Ship log files to logdist over TCP, one JSON line per log line, with per-message acks.

Lines `YYYY-MM-DD HH:MM:SS LEVEL message` become {\"timestamp\",\"level\",\"message\"};
JSON object lines pass through; other lines become {\"level\":\"INFO\",\"message\":<line>}.
Every setting is a flag or an environment variable; a flag wins over the variable,
the variable over the default.

Servers: --server HOST:PORT (repeat it or separate with commas) lists logdist
listeners; --server-host and --server-port name a single one. Give one form, not
both. The shipper is connected to one server at a time, first to a random one
(--server-order random, the default: many shippers spread over the servers) or to
the first listed (--server-order listed: a primary and standbys). When that
connection fails or the server closes it, the lines sent and not acknowledged are
resent, first, to the next server in the list, at once: the reconnect backoff
applies only after every server failed in a row, and --max-retries counts such
rounds. The shipper stays on a server while its connection lasts (it does not go
back to the first one when that one recovers).

With --tls the connection is TLS: the server's certificate must chain to a CA in
--tls-ca and carry the name --tls-server-name (default: the host of the server
being connected to);
--tls-cert/--tls-key present a client certificate to listeners that require one.
The health probe (--health-interval) stays a plain TCP connect.

Exit codes: 0 every line read was acknowledged ok; 1 some line was rejected by the
server, could not be delivered, or a file could not be read; 2 usage error.";

/// The command line. Every field has an environment variable and a default.
#[derive(Clone, Debug, Parser)]
#[command(name = "logdist-ship", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Log file(s) to ship. Repeat the flag or separate with commas; glob
    /// patterns (*, ?, [..]) are expanded once at start.
    #[arg(
        long = "log-file",
        env = "LOG_FILE",
        value_delimiter = ',',
        default_value = "/var/log/app.log",
        value_name = "PATH"
    )]
    pub log_file: Vec<String>,

    /// Host name or address of the logdist listener (an `ack = "message"`
    /// one), when there is one; for several, use --server instead.
    /// Default: localhost.
    //
    // No clap default for this and --server-port: one set from the command
    // line or the environment must be told from the default, to refuse it
    // beside --server.
    #[arg(long, env = "SERVER_HOST", value_name = "HOST")]
    pub server_host: Option<String>,

    /// Port of the logdist listener of --server-host. Default: 9000.
    #[arg(long, env = "SERVER_PORT", value_name = "PORT")]
    pub server_port: Option<u16>,

    /// logdist listeners (`ack = "message"` ones) to fail over between, as
    /// HOST:PORT (`[::1]:9000` for IPv6): repeat the flag or separate with
    /// commas. Replaces --server-host/--server-port; giving both is an error.
    #[arg(
        long = "server",
        env = "SERVERS",
        value_delimiter = ',',
        value_parser = parse_server_address,
        value_name = "HOST:PORT"
    )]
    pub servers: Vec<ServerAddress>,

    /// With several servers, which one is dialled first; then each lost
    /// connection moves on to the next in the list.
    #[arg(long, env = "SERVER_ORDER", value_enum, default_value_t = ServerOrder::Random)]
    pub server_order: ServerOrder,

    /// `batch`: ship the files to their end and exit with a summary;
    /// `continuous`: tail them, following rotation and truncation.
    #[arg(long = "mode", env = "SHIPPING_MODE", value_enum, default_value_t = Mode::Batch)]
    pub mode: Mode,

    /// Send each batch as one gzip frame. `--compress` alone means true.
    #[arg(
        long,
        env = "COMPRESS",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub compress: bool,

    /// Most lines per network write (and per gzip frame).
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Buffer up to --buffer-size lines between the file reader and the
    /// sender, and retry the connection forever (unless --max-retries).
    #[arg(
        long,
        env = "RESILIENT",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub resilient: bool,

    /// Capacity, in lines, of the resilient-mode buffer. When it is full the
    /// reader waits (the file is the overflow buffer: nothing is dropped).
    #[arg(long, env = "BUFFER_SIZE", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub buffer_size: u32,

    /// Seconds between metrics reports on stderr (sent, failed, latency,
    /// buffer use); 0 = off.
    #[arg(long, env = "METRICS_INTERVAL", default_value = "0", value_parser = parse_duration, value_name = "SECONDS")]
    pub metrics_interval: Duration,

    /// Seconds between checks of a tailed file for new lines, rotation and
    /// truncation.
    #[arg(long, env = "POLL_INTERVAL", default_value = "0.5", value_parser = parse_duration, value_name = "SECONDS")]
    pub poll_interval: Duration,

    /// Checkpoint file: file identity (device, inode) and offset of the last
    /// acknowledged line of every log file, so a restart resumes there.
    /// Unset = no checkpoint (every run starts per --start-at).
    #[arg(long, env = "CHECKPOINT_FILE", value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,

    /// Continuous mode, file without checkpoint: ship it from the
    /// `beginning` or only what is appended after start (`end`). Batch mode
    /// always starts at the beginning (or the checkpoint).
    #[arg(long, env = "START_AT", value_enum, default_value_t = StartAt::Beginning)]
    pub start_at: StartAt,

    /// Set `"priority":N` (0 = highest .. 255) on every message, overriding
    /// the level-based priority logdist would compute.
    #[arg(long, env = "PRIORITY", value_name = "N")]
    pub priority: Option<u8>,

    /// Map levels, comma separated FROM=TO entries (FROM case-insensitive):
    /// TO a name rewrites `level` (WARNING=WARN), TO a number 0..=255 sets
    /// `"priority"` (AUDIT=0).
    #[arg(long, env = "LEVEL_MAP", value_delimiter = ',', value_parser = parse_level_mapping, value_name = "FROM=TO")]
    pub level_map: Vec<LevelMapping>,

    /// Consecutive failed rounds of connection attempts (every server tried
    /// once; with one server, attempts) before giving up (exit 1).
    /// 0 = never give up. Default: 0 with --resilient, else 5.
    #[arg(long, env = "MAX_RETRIES", value_name = "N")]
    pub max_retries: Option<u32>,

    /// First reconnect delay, once every server failed in a row; it doubles
    /// per failed round up to --backoff-max, and each wait is drawn at random
    /// below it (full jitter).
    #[arg(long, env = "BACKOFF_INITIAL", default_value = "0.5", value_parser = parse_duration, value_name = "SECONDS")]
    pub backoff_initial: Duration,

    /// Largest reconnect delay.
    #[arg(long, env = "BACKOFF_MAX", default_value = "30", value_parser = parse_duration, value_name = "SECONDS")]
    pub backoff_max: Duration,

    /// Seconds between TCP connect probes of every server (logs each one
    /// becoming reachable or unreachable; metrics show how many are).
    /// 0 = off. Default: 10 with --resilient, else 0.
    #[arg(long, env = "HEALTH_INTERVAL", value_parser = parse_duration, value_name = "SECONDS")]
    pub health_interval: Option<Duration>,

    /// Reconnect (and resend) when lines are outstanding and no ack arrived
    /// for this long; 0 = wait forever (logdist holds acks back under
    /// backpressure, which is not a failure).
    #[arg(long, env = "ACK_TIMEOUT", default_value = "0", value_parser = parse_duration, value_name = "SECONDS")]
    pub ack_timeout: Duration,

    /// On Ctrl-C / SIGTERM, how long to wait for outstanding acks before
    /// writing the checkpoint and exiting.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10", value_parser = parse_duration, value_name = "SECONDS")]
    pub shutdown_timeout: Duration,

    /// Longest log line kept; longer lines are cut to this many bytes (the
    /// rest is skipped). Bounds memory whatever the file holds.
    #[arg(long, env = "MAX_LINE_BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u32).range(64..))]
    pub max_line_bytes: u32,

    /// Connect over TLS (to a listener with `tls` set; 9443 in
    /// configs/secure.toml). Needs --tls-ca. `--tls` alone means true.
    #[arg(
        long,
        env = "TLS",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub tls: bool,

    /// With --tls: PEM file of the CA certificate(s) the server's
    /// certificate must chain to.
    #[arg(long, env = "TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// With --tls: PEM file of a client certificate, for listeners that
    /// require one (mutual TLS). Needs --tls-key.
    #[arg(long, env = "TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// With --tls: PEM file of the private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// With --tls: the name the server's certificate must carry (a DNS name
    /// or an IP address), whichever server it is. Default: the host of the
    /// server being connected to.
    #[arg(long, env = "TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// How errors name the TLS settings: flag and environment variable.
pub const TLS_NAMES: TlsNames = TlsNames {
    enable: Cow::Borrowed("--tls/TLS"),
    ca: Cow::Borrowed("--tls-ca/TLS_CA"),
    server_name: Cow::Borrowed("--tls-server-name/TLS_SERVER_NAME"),
    cert: Cow::Borrowed("--tls-cert/TLS_CERT"),
    key: Cow::Borrowed("--tls-key/TLS_KEY"),
};

/// The resolved settings the shipper runs with.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub log_files: Vec<String>,
    /// The listeners, in the order given; never empty (the command line's
    /// single-server form is a list of one).
    pub servers: Vec<ServerAddress>,
    pub server_order: ServerOrder,
    pub mode: Mode,
    pub compress: bool,
    pub batch_size: usize,
    pub resilient: bool,
    pub buffer_size: usize,
    #[serde(with = "secs")]
    pub metrics_interval: Duration,
    #[serde(with = "secs")]
    pub poll_interval: Duration,
    pub checkpoint: Option<PathBuf>,
    pub start_at: StartAt,
    pub priority: Option<u8>,
    pub level_map: Vec<LevelMapping>,
    /// 0 = unlimited. (The command line resolves its default from
    /// `resilient`; set it yourself when building a `Config` by hand.)
    pub max_retries: u32,
    #[serde(with = "secs")]
    pub backoff_initial: Duration,
    #[serde(with = "secs")]
    pub backoff_max: Duration,
    /// Zero = no probe (the command line's default depends on `resilient`).
    #[serde(with = "secs")]
    pub health_interval: Duration,
    #[serde(with = "secs")]
    pub ack_timeout: Duration,
    #[serde(with = "secs")]
    pub shutdown_timeout: Duration,
    pub max_line_bytes: usize,
    /// Connect over TLS, with the settings below.
    pub tls: bool,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_server_name: Option<String>,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// The single-server form's defaults.
const DEFAULT_SERVER_HOST: &str = "localhost";
const DEFAULT_SERVER_PORT: u16 = 9000;

impl Cli {
    /// The resolved settings. The one usage error clap cannot see: both
    /// forms of the server setting given (from flags or the environment,
    /// where clap's own conflict message would name a flag never typed).
    pub fn into_config(self) -> Result<Config, clap::Error> {
        let single_form: Vec<&str> = [
            (self.server_host.is_some(), "--server-host/SERVER_HOST"),
            (self.server_port.is_some(), "--server-port/SERVER_PORT"),
        ]
        .into_iter()
        .filter_map(|(given, name)| given.then_some(name))
        .collect();
        if !self.servers.is_empty() && !single_form.is_empty() {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--server/SERVERS cannot be combined with {}: list every server, \
                     one or several, with --server HOST:PORT",
                    single_form.join(" or ")
                ),
            ));
        }
        let servers = if self.servers.is_empty() {
            let host = self.server_host.as_deref().unwrap_or(DEFAULT_SERVER_HOST);
            vec![ServerAddress::new(
                host,
                self.server_port.unwrap_or(DEFAULT_SERVER_PORT),
            )]
        } else {
            self.servers
        };
        Ok(Config {
            log_files: self
                .log_file
                .into_iter()
                .map(|f| f.trim().to_string())
                .filter(|f| !f.is_empty())
                .collect(),
            servers,
            server_order: self.server_order,
            mode: self.mode,
            compress: self.compress,
            batch_size: self.batch_size as usize,
            resilient: self.resilient,
            buffer_size: self.buffer_size as usize,
            metrics_interval: self.metrics_interval,
            poll_interval: self.poll_interval.max(Duration::from_millis(1)),
            checkpoint: self.checkpoint,
            start_at: self.start_at,
            priority: self.priority,
            level_map: self.level_map,
            max_retries: self
                .max_retries
                .unwrap_or(if self.resilient { 0 } else { 5 }),
            backoff_initial: self.backoff_initial.max(Duration::from_millis(1)),
            backoff_max: self.backoff_max.max(self.backoff_initial),
            health_interval: self.health_interval.unwrap_or(if self.resilient {
                Duration::from_secs(10)
            } else {
                Duration::ZERO
            }),
            ack_timeout: self.ack_timeout,
            shutdown_timeout: self.shutdown_timeout,
            max_line_bytes: self.max_line_bytes as usize,
            tls: self.tls,
            tls_ca: self.tls_ca,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_server_name: self.tls_server_name,
        })
    }
}

impl Config {
    /// The defaults, as `logdist-ship` with no flags and no environment
    /// would run, pointed at `log_files` on `host:port` (for tests and
    /// embedding).
    pub fn new(log_files: Vec<String>, host: &str, port: u16) -> Config {
        let mut config = cli_defaults()
            .into_config()
            .expect("the defaults are consistent");
        config.log_files = log_files;
        config.servers = vec![ServerAddress::new(host, port)];
        config
    }

    /// The TLS client of `--tls` and co. (`None` without `--tls`): every file
    /// read and checked; an error names the flag and variable at fault.
    pub fn tls_client(&self) -> Result<Option<TlsClient>, TlsError> {
        let settings = TlsClientSettings {
            ca: self.tls_ca.clone(),
            server_name: self.tls_server_name.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        };
        TlsClient::from_flags(self.tls, &settings, &TLS_NAMES)
    }

    /// Lines kept in memory between the file readers and the sender.
    pub fn channel_capacity(&self) -> usize {
        if self.resilient {
            self.buffer_size
        } else {
            self.batch_size
        }
    }
}

/// The built-in defaults, independent of the environment.
fn cli_defaults() -> Cli {
    Cli {
        log_file: vec!["/var/log/app.log".into()],
        server_host: None,
        server_port: None,
        servers: Vec::new(),
        server_order: ServerOrder::Random,
        mode: Mode::Batch,
        compress: false,
        batch_size: 1,
        resilient: false,
        buffer_size: 50_000,
        metrics_interval: Duration::ZERO,
        poll_interval: Duration::from_millis(500),
        checkpoint: None,
        start_at: StartAt::Beginning,
        priority: None,
        level_map: Vec::new(),
        max_retries: None,
        backoff_initial: Duration::from_millis(500),
        backoff_max: Duration::from_secs(30),
        health_interval: None,
        ack_timeout: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(10),
        max_line_bytes: 1 << 20,
        tls: false,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        tls_server_name: None,
        print_config: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["logdist-ship"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().into_config().unwrap()
    }

    #[test]
    fn flags_parse() {
        let c = parse(&[
            "--log-file",
            "a.log,b.log",
            "--log-file",
            "c/*.log",
            "--server-host",
            "h",
            "--server-port",
            "1234",
            "--mode",
            "continuous",
            "--compress",
            "--batch-size",
            "5",
            "--resilient=true",
            "--buffer-size",
            "10",
            "--metrics-interval",
            "2",
            "--poll-interval",
            "250ms",
            "--priority",
            "7",
            "--level-map",
            "warning=WARN,audit=0",
            "--max-retries",
            "3",
        ]);
        assert_eq!(c.log_files, ["a.log", "b.log", "c/*.log"]);
        assert_eq!(c.servers, [ServerAddress::new("h", 1234)]);
        assert_eq!(c.mode, Mode::Continuous);
        assert!(c.compress && c.resilient);
        assert_eq!((c.batch_size, c.buffer_size), (5, 10));
        assert_eq!(c.metrics_interval, Duration::from_secs(2));
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert_eq!(c.priority, Some(7));
        assert_eq!(
            c.level_map,
            [
                LevelMapping {
                    from: "WARNING".into(),
                    to: LevelTarget::Level("WARN".into())
                },
                LevelMapping {
                    from: "AUDIT".into(),
                    to: LevelTarget::Priority(0)
                },
            ]
        );
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.health_interval, Duration::from_secs(10));
    }

    #[test]
    fn tls_flags() {
        let c = parse(&[
            "--tls",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-server-name",
            "logs.example",
        ]);
        assert!(c.tls);
        assert_eq!(c.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(c.tls_cert.as_deref(), Some(std::path::Path::new("c.pem")));
        assert_eq!(c.tls_key.as_deref(), Some(std::path::Path::new("k.pem")));
        assert_eq!(c.tls_server_name.as_deref(), Some("logs.example"));
        assert!(!parse(&["--tls=false"]).tls);
        assert!(parse(&[]).tls_client().unwrap().is_none());

        // Errors name the flag and its variable.
        let err = parse(&["--tls-ca", "ca.pem"]).tls_client().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--tls-ca/TLS_CA is set but TLS is off: add --tls/TLS"),
            "{err}"
        );
        let err = parse(&["--tls"]).tls_client().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--tls/TLS needs --tls-ca/TLS_CA"),
            "{err}"
        );
        let err = parse(&["--tls", "--tls-ca", "/nonexistent/ca.pem"])
            .tls_client()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--tls-ca/TLS_CA: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn compress_forms() {
        assert!(!parse(&["--compress=false"]).compress);
        assert!(parse(&["--compress=yes"]).compress);
        assert!(parse(&["--compress", "--batch-size", "2"]).compress);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--mode", "sometimes"][..],
            &["--batch-size", "0"],
            &["--priority", "256"],
            &["--level-map", "nonsense"],
            &["--level-map", "A=300"],
            &["--poll-interval", "-1"],
            &["--compress", "maybe"],
            &["--no-such-flag"],
        ] {
            let mut argv = vec!["logdist-ship"];
            argv.extend_from_slice(bad);
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn server_forms() {
        let listed = parse(&[
            "--server",
            "a.example:9000, 10.0.0.2:9001",
            "--server",
            "[::1]:9002",
            "--server-order",
            "listed",
        ]);
        assert_eq!(
            listed.servers,
            [
                ServerAddress::new("a.example", 9000),
                ServerAddress::new("10.0.0.2", 9001),
                ServerAddress::new("::1", 9002),
            ]
        );
        assert_eq!(listed.server_order, ServerOrder::Listed);
        assert_eq!(listed.servers[2].to_string(), "[::1]:9002");
        // The single-server form, whole or in part, is a list of one.
        assert_eq!(parse(&[]).servers, [ServerAddress::new("localhost", 9000)]);
        assert_eq!(
            parse(&["--server-port", "9443"]).servers,
            [ServerAddress::new("localhost", 9443)]
        );
        assert_eq!(parse(&[]).server_order, ServerOrder::Random);
    }

    #[test]
    fn server_usage_errors_name_the_flag() {
        for (bad, says) in [
            ("nonsense", "expected HOST:PORT"),
            ("host:", "port \"\" of \"host:\" is not in 1..=65535"),
            ("host:0", "is not in 1..=65535"),
            ("host:65536", "is not in 1..=65535"),
            (":9000", "expected HOST:PORT"),
            ("::1:9000", "an IPv6 address in brackets"),
            ("[::1:9000", "expected HOST:PORT"),
            ("a:1,", "got \"\""),
        ] {
            let err = Cli::try_parse_from(["logdist-ship", "--server", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            let text = err.to_string();
            assert!(
                text.contains("for '--server <HOST:PORT>'") && text.contains(says),
                "{bad}: {text}"
            );
        }
        for single in [&["--server-host", "b"][..], &["--server-port", "1"]] {
            let mut argv = vec!["logdist-ship", "--server", "a:1"];
            argv.extend_from_slice(single);
            let err = Cli::try_parse_from(argv)
                .unwrap()
                .into_config()
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{single:?}");
            let text = err.to_string();
            assert!(
                text.contains("--server/SERVERS cannot be combined with")
                    && text.contains(&format!("{}/", single[0])),
                "{text}"
            );
        }
    }

    #[test]
    fn defaults_of_new() {
        let c = Config::new(vec!["x".into()], "127.0.0.1", 1);
        assert_eq!(c.batch_size, 1);
        assert_eq!(c.buffer_size, 50_000);
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        assert_eq!(c.max_retries, 5);
        assert_eq!(c.mode, Mode::Batch);
        assert!(!c.compress && !c.resilient);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
