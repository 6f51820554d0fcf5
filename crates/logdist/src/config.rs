//! Distributor configuration: TOML file, then `LOGDIST_*` environment variables and
//! CLI flags on top (see `cli.rs`), then validation.
//!
//! Every section and key has a working default, so an empty file (or no file)
//! gives this layout: emitters on 8080, the shipper listener with
//! per-message acks on 9000, analyzers on 8081.
//!
//! Transport settings (`allow`, `tls`) are checked here as far as they can be
//! without reading files; the certificate and key files themselves are read
//! and checked by [`crate::transport`] when the server binds or reloads, with
//! the same kind of error naming the key. Relative paths are relative to the
//! working directory of the process.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use logdist_wire::{
    AnalyzerFormat, DEFAULT_LEVELS, DEFAULT_PRIORITY, DEFAULT_SYSLOG_PRIORITIES, IngestFormat,
    MAX_FRAME_BYTES_CEILING, PriorityTable,
};
use serde::Deserialize;

/// `limits.max_buffered_bytes` by default: 512 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 512 << 20;

/// The smallest `limits.max_buffered_bytes`: a few reads' worth.
pub const MIN_MAX_BUFFERED_BYTES: usize = 1 << 20;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub analyzers: AnalyzersConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    pub priorities: PrioritiesConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    pub runtime: RuntimeConfig,
    pub durability: DurabilityConfig,
}

/// Where accepted messages live until they are done (docs/operations.md,
/// "Durability").
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilityConfig {
    pub mode: DurabilityMode,
    /// The spool directory (disk mode); created if missing, locked.
    pub dir: PathBuf,
    pub sync: SpoolSync,
    /// Group commit: how long to gather appends before one sync.
    #[serde(with = "humantime_serde")]
    pub max_batch_delay: Duration,
    pub segment_bytes: u64,
    /// Bytes of spool on disk at most; emitters are slowed past it.
    pub max_bytes: u64,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig {
            mode: DurabilityMode::Memory,
            dir: PathBuf::from("data/spool"),
            sync: SpoolSync::Fsync,
            max_batch_delay: Duration::from_millis(2),
            segment_bytes: 64 << 20,
            max_bytes: 10 << 30,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Messages live in memory only: a crash loses what logdist holds.
    #[default]
    Memory,
    /// Every accepted message is in the spool before its emitter is told `ok`.
    Disk,
}

/// When a message in the spool counts as stored (`durability.sync`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolSync {
    /// After `fdatasync`: survives power loss.
    #[default]
    Fsync,
    /// After `write(2)`: survives a crash of logdist, not of the host.
    Write,
}

/// The async runtime.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads; 0 means [`RuntimeConfig::auto_workers`]: half the
    /// CPU cores, at least one. Fewer workers spend less CPU per message (no
    /// cross-thread wake-ups); more raise the ceiling (README, "Performance").
    pub worker_threads: usize,
}

impl RuntimeConfig {
    /// The workers `worker_threads = 0` means for `cores` CPU cores: half of
    /// them, at least one. Most of logdist's work is the kernel's TCP work,
    /// done in its system calls and in softirqs on any core; the other half
    /// is left to that and to the peers. On two cores one worker spent a
    /// quarter to a third less CPU per message at 80,000 msg/s than two.
    pub fn auto_workers(cores: usize) -> usize {
        (cores / 2).max(1)
    }

    /// The workers to start on this machine.
    pub fn workers(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::auto_workers(cores)
    }
}

/// One emitter listener.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    #[serde(default)]
    pub ack: AckMode,
    /// The input formats taken: `auto` (every format, told apart at each
    /// message), or one of `ndjson` (lines and gzip frames), `frame`,
    /// `syslog`; messages in another format are rejected as `wrong_format`.
    #[serde(default)]
    pub format: IngestFormat,
    /// Source networks allowed to connect (CIDRs; a bare address is one
    /// host); absent: any. Others are closed at once, unread.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Serve TLS (mutual TLS with `client_ca`); absent: plain TCP.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

impl ListenerConfig {
    /// A plain TCP listener open to any source.
    pub fn plain(address: SocketAddr, ack: AckMode) -> Self {
        ListenerConfig {
            address,
            ack,
            format: IngestFormat::Auto,
            allow: None,
            tls: None,
        }
    }
}

/// TLS on a listener. Paths are PEM files, relative to the working directory.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The certificate chain, the listener's own certificate first.
    pub cert: PathBuf,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates; when set, a client must present a certificate
    /// signed by one of them (mutual TLS), or the connection is refused.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// TLS for a connection the distributor dials (a static analyzer).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CA certificates the analyzer's certificate must be signed by.
    pub ca: PathBuf,
    /// The name the analyzer's certificate must carry; default: the host
    /// part of the analyzer's `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// A client certificate to present (with `key`), for analyzers that
    /// require one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Whether an emitter listener answers every NDJSON and syslog message.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Nothing is written back to the emitter.
    #[default]
    None,
    /// One `{"status":...}` line per NDJSON or syslog message, in order (the
    /// seed shipper waits for it).
    Message,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzersConfig {
    /// Where analyzers dial in.
    pub listen: SocketAddr,
    /// Source networks allowed to dial in (as for listeners); absent: any.
    pub allow: Option<Vec<String>>,
    /// TLS on the analyzer listener (mutual TLS with `client_ca`).
    pub tls: Option<ServerTlsConfig>,
    /// Most dial-in analyzer connections open at once (handshaking included).
    pub max_connections: usize,
    /// Bound of each of the 256 priority queues of each analyzer.
    pub queue_capacity: usize,
    /// Most messages sent to one analyzer connection and not yet acknowledged.
    pub window: usize,
    /// No ack progress for this long while messages are unacknowledged (beyond
    /// the analyzer's usual ack stride) declares the analyzer stalled.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// How long an analyzer's writer, woken by a message that found its
    /// queues empty, waits for more before writing (an ack ends the wait
    /// early); at most [`MAX_WRITE_COALESCE`]. "0s": write once the tasks
    /// ready on the worker have run. Fewer, larger writes cost the kernel
    /// less per message, and every message that much latency.
    #[serde(with = "humantime_serde")]
    pub write_coalesce: Duration,
    /// `TCP_USER_TIMEOUT` of analyzer connections (dial-in and static): data
    /// written and not acknowledged by the analyzer's host for this long ends
    /// the connection, and what it held is rerouted. "0s": the kernel's
    /// default (retransmissions for up to about 15 minutes).
    #[serde(with = "humantime_serde")]
    pub user_timeout: Duration,
    /// First reconnect delay for static analyzers; doubles per failure.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay for static analyzers (delays are jittered in [0, d]).
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// How often a connected static analyzer's address is probed with a TCP
    /// connect; "0s" turns probing off.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Analyzers the distributor dials out to.
    #[serde(rename = "static")]
    pub statics: Vec<StaticAnalyzerConfig>,
    /// When not empty, a JSON hello must carry one of these in `token`
    /// (`LOGDIST_ANALYZER_TOKENS`, comma-separated, replaces them).
    pub tokens: Vec<Secret>,
    /// A file with more tokens, one per line (blank lines and surrounding
    /// whitespace ignored); read at startup and at every reload.
    pub tokens_file: Option<PathBuf>,
    /// Networks (CIDR, or a bare address) allowed the tokenless seed
    /// handshake; absent means any, an empty list none.
    pub seed_handshake_from: Option<Vec<String>>,
    /// The largest weight any source may set (handshake, control message,
    /// admin API, static analyzer config).
    pub max_weight: f64,
}

/// A token or password: compared, never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for comparing; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The secrets a config names, with the files it points to read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Secrets {
    /// `analyzers.tokens` and the lines of `analyzers.tokens_file`; empty: no
    /// token required.
    pub analyzer_tokens: Vec<Secret>,
    /// `admin.token` or the content of `admin.token_file`.
    pub admin_token: Option<Secret>,
}

/// An analyzer at a fixed address that the distributor connects to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticAnalyzerConfig {
    pub id: String,
    pub address: String,
    pub weight: f64,
    #[serde(default)]
    pub format: AnalyzerFormat,
    #[serde(default = "yes")]
    pub acks: bool,
    /// Dial out over TLS; absent: plain TCP.
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Deliveries tried before a message is dead-lettered.
    pub max_attempts: u8,
    pub dead_letter_path: PathBuf,
    /// How long shutdown waits for queued messages to reach analyzers.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Most messages held while no analyzer can take any; beyond it, emitters
    /// feel backpressure.
    pub hold_capacity: usize,
    /// Held messages older than this are dead-lettered; absent (the default) = never.
    #[serde(with = "humantime_serde::option")]
    pub hold_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_frame_bytes: usize,
    pub max_line_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_connections: usize,
    /// An emitter connection that sends no byte (and takes none of its
    /// replies) for this long is closed; "0s" turns this off.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// An emitter connection with a message (line or frame) begun and not
    /// completed for this long is closed; "0s" turns this off.
    #[serde(with = "humantime_serde")]
    pub frame_timeout: Duration,
    /// Bytes of emitters' data held at once: read buffers (partial messages
    /// included), inflated gzip buffers, and every queued, held, in-flight or
    /// dead-lettering message, counted by the read block it pins. Reading
    /// waits while it is spent.
    pub max_buffered_bytes: usize,
}

/// How NDJSON messages without a `priority` field, and syslog messages, get
/// one.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrioritiesConfig {
    /// Priority of a message with neither `priority` nor a known `level`/`severity`.
    pub default: u8,
    /// `level`/`severity` value (matched case-insensitively) to priority.
    pub levels: BTreeMap<String, u8>,
    /// Priority of a syslog message by severity: emerg, alert, crit, err,
    /// warning, notice, info, debug.
    pub syslog: [u8; 8],
}

impl PrioritiesConfig {
    /// The table the ingest decoders use.
    pub fn table(&self) -> PriorityTable {
        PriorityTable::new(self.levels.clone(), self.default).with_syslog(self.syslog)
    }
}

/// The admin HTTP API (docs/operations.md).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// host:port, or "" for no admin API.
    pub listen: String,
    /// Source networks allowed to connect (as for listeners); absent: any.
    pub allow: Option<Vec<String>>,
    /// HTTPS instead of HTTP (with `client_ca`, clients need a certificate).
    pub tls: Option<ServerTlsConfig>,
    /// When set, every request but `GET /api/v1/health` and `GET /metrics`
    /// needs `Authorization: Bearer <token>` (`LOGDIST_ADMIN_TOKEN` replaces it).
    pub token: Option<Secret>,
    /// A file holding the token instead (surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// The largest request body accepted (HTTP ingest included); larger ones
    /// get 413.
    pub max_body_bytes: usize,
    /// Most connections open at once; more are refused (counted) and closed unread.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; a slower one
    /// (a slowloris) is disconnected.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl AdminConfig {
    /// Where to listen, or `None` when the admin API is off. Only call on a
    /// validated config.
    pub fn address(&self) -> Option<SocketAddr> {
        if self.listen.is_empty() {
            None
        } else {
            self.listen.parse().ok()
        }
    }
}

/// The CSV metrics export (docs/operations.md lists its columns).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// File that gets one row per `interval`; "" for none.
    pub csv_path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

/// `analyzers.max_weight` unless configured.
pub const DEFAULT_MAX_WEIGHT: f64 = 1000.0;

/// The longest `analyzers.write_coalesce` accepted.
pub const MAX_WRITE_COALESCE: Duration = Duration::from_millis(100);

/// `analyzers.write_coalesce` by default.
pub const DEFAULT_WRITE_COALESCE: Duration = Duration::ZERO;

impl AnalyzersConfig {
    /// `seed_handshake_from` parsed: `None` allows any address. Only call on a
    /// validated config.
    pub fn seed_networks(&self) -> Option<Vec<ipnet::IpNet>> {
        self.seed_handshake_from
            .as_ref()
            .map(|list| list.iter().filter_map(|n| parse_network(n)).collect())
    }
}

impl DurabilityConfig {
    /// Segment sizes between these: a segment's offsets are 32-bit, and a
    /// tiny one would mean a file per handful of messages.
    const SEGMENT_BYTES: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 30);

    fn validate(&self) -> Result<(), ConfigError> {
        if !Self::SEGMENT_BYTES.contains(&self.segment_bytes) {
            return Err(invalid(
                "durability.segment_bytes",
                "must be between 1048576 (1 MiB) and 1073741824 (1 GiB)",
            ));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return Err(invalid(
                "durability.max_bytes",
                "must be at least twice durability.segment_bytes (space is freed a whole segment at a time)",
            ));
        }
        if self.max_batch_delay > Duration::from_secs(1) {
            return Err(invalid(
                "durability.max_batch_delay",
                "must be at most 1s (every acknowledgement to an emitter waits for it)",
            ));
        }
        if self.mode == DurabilityMode::Disk && self.dir.as_os_str().is_empty() {
            return Err(invalid(
                "durability.dir",
                "must name a directory in disk mode",
            ));
        }
        Ok(())
    }
}

/// A CIDR network, or a bare address as a one-address network.
fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![
                ListenerConfig::plain(
                    "0.0.0.0:8080".parse().expect("valid literal"),
                    AckMode::None,
                ),
                ListenerConfig::plain(
                    "0.0.0.0:9000".parse().expect("valid literal"),
                    AckMode::Message,
                ),
            ],
            analyzers: AnalyzersConfig::default(),
            delivery: DeliveryConfig::default(),
            limits: LimitsConfig::default(),
            priorities: PrioritiesConfig::default(),
            admin: AdminConfig::default(),
            metrics: MetricsConfig::default(),
            runtime: RuntimeConfig::default(),
            durability: DurabilityConfig::default(),
        }
    }
}

impl Default for AnalyzersConfig {
    fn default() -> Self {
        AnalyzersConfig {
            listen: "0.0.0.0:8081".parse().expect("valid literal"),
            allow: None,
            tls: None,
            max_connections: 1024,
            queue_capacity: 1000,
            window: 4096,
            ack_timeout: Duration::from_secs(30),
            write_coalesce: DEFAULT_WRITE_COALESCE,
            user_timeout: Duration::from_secs(20),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            probe_interval: Duration::from_secs(10),
            statics: Vec::new(),
            tokens: Vec::new(),
            tokens_file: None,
            seed_handshake_from: None,
            max_weight: DEFAULT_MAX_WEIGHT,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 4,
            dead_letter_path: PathBuf::from("failed_messages.ndjson"),
            shutdown_grace: Duration::from_secs(5),
            hold_capacity: 10_000,
            hold_timeout: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 1 << 20,
            max_line_bytes: 1 << 20,
            max_decompressed_bytes: 16 << 20,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(30),
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

impl Default for PrioritiesConfig {
    fn default() -> Self {
        PrioritiesConfig {
            default: DEFAULT_PRIORITY,
            levels: DEFAULT_LEVELS
                .iter()
                .map(|(name, priority)| (name.to_string(), *priority))
                .collect(),
            syslog: DEFAULT_SYSLOG_PRIORITIES,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8082".to_string(),
            allow: None,
            tls: None,
            token: None,
            token_file: None,
            max_body_bytes: 1 << 20,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            csv_path: String::new(),
            interval: Duration::from_secs(1),
        }
    }
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: `{key}` {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    /// `key` (e.g. `listeners[2].tls.key`) cannot be used: `problem`.
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// One entry of an `allow` list: a network in CIDR notation, or a bare
/// address meaning that host alone (/32 or /128).
pub fn network(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{entry:?} is neither a network (10.0.0.0/8) nor an address"))
}

impl Config {
    /// Reads and parses `path`; the result still needs [`Config::validate`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The tokens, with `analyzers.tokens_file` and `admin.token_file` read.
    /// An unreadable or empty file is an error naming its key; no error
    /// message ever holds a token.
    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        let mut analyzer_tokens = self.analyzers.tokens.clone();
        if let Some(path) = &self.analyzers.tokens_file {
            let text = read_secret_file("analyzers.tokens_file", path)?;
            let before = analyzer_tokens.len();
            analyzer_tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(Secret::new),
            );
            if analyzer_tokens.len() == before {
                return Err(invalid(
                    "analyzers.tokens_file",
                    format!("{} holds no token", path.display()),
                ));
            }
        }
        if analyzer_tokens.iter().any(|t| t.expose().trim().is_empty()) {
            return Err(invalid("analyzers.tokens", "must not hold an empty token"));
        }
        let admin_token = match (&self.admin.token, &self.admin.token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "admin.token_file",
                    "cannot be set together with admin.token (or LOGDIST_ADMIN_TOKEN)",
                ));
            }
            (Some(token), None) => Some(token.clone()),
            (None, Some(path)) => {
                let text = read_secret_file("admin.token_file", path)?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(invalid(
                        "admin.token_file",
                        format!("{} holds no token", path.display()),
                    ));
                }
                Some(Secret::new(token))
            }
            (None, None) => None,
        };
        if let Some(token) = &admin_token {
            let key = if self.admin.token.is_some() {
                "admin.token"
            } else {
                "admin.token_file"
            };
            // It travels in an HTTP header: visible ASCII, no spaces.
            if token.expose().is_empty() || !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    key,
                    "must be non-empty visible ASCII without spaces",
                ));
            }
        }
        Ok(Secrets {
            analyzer_tokens,
            admin_token,
        })
    }

    /// Rejects values the distributor cannot run with, naming the key. Reads
    /// the token files (see [`Config::secrets`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(invalid(
                "listeners",
                "must name at least one emitter listener",
            ));
        }
        if self.analyzers.queue_capacity == 0 {
            return Err(invalid("analyzers.queue_capacity", "must be at least 1"));
        }
        if self.analyzers.write_coalesce > MAX_WRITE_COALESCE {
            return Err(invalid(
                "analyzers.write_coalesce",
                format!(
                    "must be at most {MAX_WRITE_COALESCE:?}: it adds up to that much to every message's latency"
                ),
            ));
        }
        if self.analyzers.window == 0 {
            return Err(invalid("analyzers.window", "must be at least 1"));
        }
        if self.analyzers.ack_timeout.is_zero() {
            return Err(invalid("analyzers.ack_timeout", "must be longer than 0s"));
        }
        if self.analyzers.reconnect_min.is_zero()
            || self.analyzers.reconnect_max < self.analyzers.reconnect_min
        {
            return Err(invalid(
                "analyzers.reconnect_min",
                "must be above 0s and at most analyzers.reconnect_max",
            ));
        }
        if self.analyzers.max_connections == 0 {
            return Err(invalid("analyzers.max_connections", "must be at least 1"));
        }
        if self.admin.max_connections == 0 {
            return Err(invalid("admin.max_connections", "must be at least 1"));
        }
        self.durability.validate()?;
        if self.admin.header_read_timeout.is_zero() {
            return Err(invalid(
                "admin.header_read_timeout",
                "must be longer than 0s",
            ));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            let at = format!("listeners[{i}]");
            check_allow(&at, listener.allow.as_deref())?;
            check_server_tls(&at, listener.tls.as_ref())?;
        }
        check_allow("analyzers", self.analyzers.allow.as_deref())?;
        check_server_tls("analyzers", self.analyzers.tls.as_ref())?;
        check_allow("admin", self.admin.allow.as_deref())?;
        check_server_tls("admin", self.admin.tls.as_ref())?;
        let max_weight = self.analyzers.max_weight;
        if !(max_weight.is_finite() && max_weight > 0.0) {
            return Err(invalid(
                "analyzers.max_weight",
                format!("must be a finite number > 0, got {max_weight}"),
            ));
        }
        for network in self.analyzers.seed_handshake_from.iter().flatten() {
            if parse_network(network).is_none() {
                return Err(invalid(
                    "analyzers.seed_handshake_from",
                    format!(
                        "must list networks like \"10.1.0.0/16\" or addresses, got {network:?}"
                    ),
                ));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, analyzer) in self.analyzers.statics.iter().enumerate() {
            if analyzer.id.is_empty() || !ids.insert(analyzer.id.as_str()) {
                return Err(invalid(
                    "analyzers.static.id",
                    format!("must be non-empty and unique, got {:?}", analyzer.id),
                ));
            }
            if !(analyzer.weight.is_finite()
                && analyzer.weight >= 0.0
                && analyzer.weight <= self.analyzers.max_weight)
            {
                return Err(invalid(
                    "analyzers.static.weight",
                    format!(
                        "must be a finite number in 0..={} (analyzers.max_weight), got {} (analyzer {})",
                        self.analyzers.max_weight, analyzer.weight, analyzer.id
                    ),
                ));
            }
            if analyzer.address.is_empty() {
                return Err(invalid(
                    "analyzers.static.address",
                    format!("must be host:port (analyzer {})", analyzer.id),
                ));
            }
            if let Some(tls) = &analyzer.tls {
                let at = format!("analyzers.static[{i}].tls");
                check_path(&format!("{at}.ca"), &tls.ca)?;
                match (&tls.cert, &tls.key) {
                    (Some(cert), Some(key)) => {
                        check_path(&format!("{at}.cert"), cert)?;
                        check_path(&format!("{at}.key"), key)?;
                    }
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(invalid(format!("{at}.key"), "must be set with cert"));
                    }
                    (None, Some(_)) => {
                        return Err(invalid(format!("{at}.cert"), "must be set with key"));
                    }
                }
                if tls.server_name.as_deref() == Some("") {
                    return Err(invalid(
                        format!("{at}.server_name"),
                        "must not be empty (leave it out to use the address's host)",
                    ));
                }
            }
        }
        if self.delivery.hold_timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid(
                "delivery.hold_timeout",
                "must be longer than 0s (leave it out to disable)",
            ));
        }
        if self.delivery.max_attempts == 0 {
            return Err(invalid("delivery.max_attempts", "must be at least 1"));
        }
        if self.delivery.dead_letter_path.as_os_str().is_empty() {
            return Err(invalid("delivery.dead_letter_path", "must not be empty"));
        }
        let frame = self.limits.max_frame_bytes;
        if !(5..=MAX_FRAME_BYTES_CEILING).contains(&frame) {
            return Err(invalid(
                "limits.max_frame_bytes",
                format!("must be in 5..={MAX_FRAME_BYTES_CEILING}, got {frame}"),
            ));
        }
        if self.limits.max_line_bytes == 0 {
            return Err(invalid("limits.max_line_bytes", "must be at least 1"));
        }
        if self.limits.max_decompressed_bytes == 0 {
            return Err(invalid(
                "limits.max_decompressed_bytes",
                "must be at least 1",
            ));
        }
        if self.limits.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        let buffered = self.limits.max_buffered_bytes;
        if buffered < MIN_MAX_BUFFERED_BYTES {
            return Err(invalid(
                "limits.max_buffered_bytes",
                format!("must be at least {MIN_MAX_BUFFERED_BYTES} (1 MiB), got {buffered}"),
            ));
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "admin.listen",
                format!("must be ip:port or \"\" (off), got {:?}", self.admin.listen),
            ));
        }
        if self.admin.max_body_bytes == 0 {
            return Err(invalid("admin.max_body_bytes", "must be at least 1"));
        }
        if self.metrics.interval.is_zero() {
            return Err(invalid("metrics.interval", "must be longer than 0s"));
        }
        self.secrets()?;
        Ok(())
    }
}

/// Checks an `allow` list at `<at>.allow`.
fn check_allow(at: &str, allow: Option<&[String]>) -> Result<(), ConfigError> {
    let Some(allow) = allow else {
        return Ok(());
    };
    let key = format!("{at}.allow");
    if allow.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "must list at least one network (leave it out to allow any source)",
        ));
    }
    for entry in allow {
        network(entry).map_err(|problem| ConfigError::invalid(key.clone(), problem))?;
    }
    Ok(())
}

/// Checks what can be checked of a listener's `tls` without reading files.
fn check_server_tls(at: &str, tls: Option<&ServerTlsConfig>) -> Result<(), ConfigError> {
    let Some(tls) = tls else {
        return Ok(());
    };
    check_path(&format!("{at}.tls.cert"), &tls.cert)?;
    check_path(&format!("{at}.tls.key"), &tls.key)?;
    if let Some(ca) = &tls.client_ca {
        check_path(&format!("{at}.tls.client_ca"), ca)?;
    }
    Ok(())
}

fn check_path(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::invalid(key, "must be a file path"));
    }
    Ok(())
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, problem)
}

/// Reads a token file; the error names `key` and the path, never the content.
fn read_secret_file(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|err| invalid(key, format!("cannot read {}: {err}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listeners[0].address.port(), 8080);
        assert_eq!(config.listeners[0].ack, AckMode::None);
        assert_eq!(config.listeners[1].address.port(), 9000);
        assert_eq!(config.listeners[1].ack, AckMode::Message);
        assert_eq!(config.analyzers.listen.port(), 8081);
        config.validate().unwrap();
    }

    #[test]
    fn example_with_every_default_spelled_out_parses() {
        let text = r#"
[[listeners]]
address = "0.0.0.0:8080"
ack = "none"

[[listeners]]
address = "0.0.0.0:9000"
ack = "message"

[analyzers]
listen = "0.0.0.0:8081"
queue_capacity = 1000
window = 4096
ack_timeout = "30s"

[delivery]
max_attempts = 4
dead_letter_path = "failed_messages.ndjson"

[limits]
max_frame_bytes = 1048576
max_line_bytes = 1048576
max_decompressed_bytes = 16777216
max_connections = 10000
idle_timeout = "5m"
frame_timeout = "30s"
max_buffered_bytes = 536870912

[admin]
listen = "127.0.0.1:8082"

[metrics]
csv_path = ""
interval = "1s"
"#;
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn shipped_default_config_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/default.toml");
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn shipped_secure_config_has_syslog_over_tls_on_6514() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/secure.toml");
        let config = Config::from_file(&path).unwrap();
        let syslog = config
            .listeners
            .iter()
            .find(|l| l.address.port() == 6514)
            .expect("a 6514 listener");
        assert_eq!(syslog.format, IngestFormat::Syslog);
        assert_eq!(
            syslog.ack,
            AckMode::None,
            "syslog senders never read replies"
        );
        assert!(syslog.tls.is_some(), "RFC 5425: syslog over TLS");
    }

    #[test]
    fn static_analyzers_parse_with_defaults() {
        let text = r#"
[[analyzers.static]]
id = "a1"
address = "127.0.0.1:9501"
weight = 0.4

[[analyzers.static]]
id = "a2"
address = "localhost:9502"
weight = 0.6
format = "ndjson"
acks = false
"#;
        let config = Config::from_toml(text).unwrap();
        config.validate().unwrap();
        let statics = &config.analyzers.statics;
        assert_eq!(statics.len(), 2);
        assert_eq!(statics[0].format, AnalyzerFormat::Frame);
        assert!(statics[0].acks);
        assert_eq!(statics[1].format, AnalyzerFormat::Ndjson);
        assert!(!statics[1].acks);

        let dup = text.replace("\"a2\"", "\"a1\"");
        let err = Config::from_toml(&dup)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("analyzers.static.id"), "{err}");
    }

    #[test]
    fn listener_format_and_syslog_priorities_parse() {
        let config = Config::from_toml(
            "[[listeners]]\naddress = \"0.0.0.0:6514\"\nformat = \"syslog\"\n\n\
             [priorities]\nsyslog = [0, 1, 2, 3, 4, 5, 6, 7]\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.listeners[0].format, IngestFormat::Syslog);
        assert_eq!(config.listeners[0].ack, AckMode::None);
        assert_eq!(config.priorities.table().syslog_priority(7), 7);
        assert_eq!(Config::default().listeners[0].format, IngestFormat::Auto);
        assert_eq!(
            Config::default().priorities.syslog,
            [0, 0, 0, 1, 2, 3, 3, 4]
        );
        let err = problem("[[listeners]]\naddress = \"0.0.0.0:1\"\nformat = \"xml\"\n");
        assert!(err.contains("format"), "{err}");
        let err = problem("[priorities]\nsyslog = [0, 1]\n");
        assert!(err.contains("syslog"), "{err}");
        let err = problem("[priorities]\nsyslog = [0, 0, 0, 0, 0, 0, 0, 256]\n");
        assert!(err.contains("syslog"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[analyzers]\nqueue_capacty = 5\n").unwrap_err();
        assert!(err.to_string().contains("queue_capacty"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::from_toml("[analyzers]\nwindow = \"big\"\n").unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
        let err = Config::from_toml("[[listeners]]\naddress = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("address"), "{err}");
    }

    #[test]
    fn transport_keys_parse_and_bad_ones_are_named() {
        let text = r#"
[[listeners]]
address = "0.0.0.0:6514"
ack = "message"
allow = ["10.0.0.0/8", "127.0.0.1", "::1"]
tls = { cert = "certs/server.pem", key = "certs/server-key.pem", client_ca = "certs/ca.pem" }

[analyzers]
listen = "0.0.0.0:8081"
allow = ["10.0.0.0/8"]
tls = { cert = "a.pem", key = "a-key.pem" }
max_connections = 16

[[analyzers.static]]
id = "a1"
address = "analyzer-1:9501"
weight = 1.0
tls = { ca = "certs/ca.pem", server_name = "analyzer-1", cert = "c.pem", key = "c-key.pem" }

[admin]
listen = "127.0.0.1:8082"
tls = { cert = "s.pem", key = "s-key.pem" }
"#;
        let config = Config::from_toml(text).unwrap();
        config.validate().unwrap();
        let tls = config.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.client_ca.as_deref(), Some(Path::new("certs/ca.pem")));
        assert_eq!(config.analyzers.max_connections, 16);
        let statics = &config.analyzers.statics[0];
        assert_eq!(
            statics.tls.as_ref().unwrap().server_name.as_deref(),
            Some("analyzer-1")
        );
        assert!(config.admin.tls.is_some());
        assert_eq!(
            network("127.0.0.1").unwrap(),
            "127.0.0.1/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(network("::1").unwrap(), "::1/128".parse::<IpNet>().unwrap());

        let mut bad = config.clone();
        bad.listeners[0].allow = Some(vec!["10.0.0.0/33".to_string()]);
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("listeners[0].allow"), "{err}");
        bad.listeners[0].allow = Some(Vec::new());
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("listeners[0].allow"), "{err}");

        let mut bad = config.clone();
        bad.analyzers.allow = Some(vec!["not-a-network".to_string()]);
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("analyzers.allow"), "{err}");

        let mut bad = config.clone();
        bad.analyzers.statics[0].tls.as_mut().unwrap().key = None;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("analyzers.static[0].tls.key"), "{err}");

        let mut bad = config.clone();
        bad.admin.tls.as_mut().unwrap().cert = PathBuf::new();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("admin.tls.cert"), "{err}");

        let mut bad = config;
        bad.analyzers.max_connections = 0;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("analyzers.max_connections"), "{err}");

        let err = Config::from_toml("[admin]\ntls = { cert = \"a\", kye = \"b\" }\n").unwrap_err();
        assert!(err.to_string().contains("kye"), "{err}");
    }

    #[test]
    fn emitter_timeouts_parse_and_zero_turns_them_off() {
        let config =
            Config::from_toml("[limits]\nidle_timeout = \"0s\"\nframe_timeout = \"250ms\"\n")
                .unwrap();
        config.validate().unwrap();
        assert_eq!(config.limits.idle_timeout, Duration::ZERO);
        assert_eq!(config.limits.frame_timeout, Duration::from_millis(250));
        let err = Config::from_toml("[limits]\nidle_timeout = 5\n").unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
    }

    #[test]
    fn durability_parses_and_bad_sizes_are_named() {
        let config = Config::from_toml(
            "[durability]\nmode = \"disk\"\ndir = \"/var/lib/logdist\"\nsync = \"write\"\nmax_batch_delay = \"5ms\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.durability.mode, DurabilityMode::Disk);
        assert_eq!(config.durability.sync, SpoolSync::Write);
        assert_eq!(config.durability.max_batch_delay, Duration::from_millis(5));
        let bad = |toml: &str, key: &str| {
            let err = Config::from_toml(toml).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        };
        bad(
            "[durability]\nsegment_bytes = 1000\n",
            "durability.segment_bytes",
        );
        bad(
            "[durability]\nsegment_bytes = 1048576\nmax_bytes = 1048576\n",
            "durability.max_bytes",
        );
        bad(
            "[durability]\nmax_batch_delay = \"2s\"\n",
            "durability.max_batch_delay",
        );
        bad(
            "[durability]\nmode = \"disk\"\ndir = \"\"\n",
            "durability.dir",
        );
        let err = Config::from_toml("[durability]\nmode = \"ssd\"\n").unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = Config::default();
        config.limits.max_frame_bytes = 4;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.max_frame_bytes"), "{err}");

        let mut config = Config::default();
        config.analyzers.window = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("analyzers.window"), "{err}");

        let mut config = Config::default();
        config.admin.listen = "localhost".to_string();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("admin.listen"), "{err}");
        config.admin.listen = String::new();
        config.validate().unwrap();
        assert_eq!(config.admin.address(), None);

        let mut config = Config::default();
        config.limits.max_buffered_bytes = MIN_MAX_BUFFERED_BYTES - 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.max_buffered_bytes"), "{err}");
        config.limits.max_buffered_bytes = MIN_MAX_BUFFERED_BYTES;
        config.validate().unwrap();
    }

    fn problem(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(config) => config.validate().unwrap_err().to_string(),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn weights_are_bounded_by_max_weight() {
        for bad in ["0", "-1", "nan", "inf"] {
            let err = problem(&format!("[analyzers]\nmax_weight = {bad}\n"));
            assert!(err.contains("analyzers.max_weight"), "{bad}: {err}");
        }
        let statics = "[[analyzers.static]]\nid = \"s\"\naddress = \"127.0.0.1:1\"\n";
        for bad in ["1000.5", "-1", "nan"] {
            let err = problem(&format!("{statics}weight = {bad}\n"));
            assert!(err.contains("analyzers.static.weight"), "{bad}: {err}");
        }
        let fine = format!("[analyzers]\nmax_weight = 5000.0\n{statics}weight = 4000\n");
        Config::from_toml(&fine).unwrap().validate().unwrap();
    }

    #[test]
    fn networks_parse_with_bare_addresses() {
        let config = Config::from_toml(
            "[analyzers]\nseed_handshake_from = [\"10.1.0.0/16\", \"192.168.1.7\", \"::1\"]\n",
        )
        .unwrap();
        config.validate().unwrap();
        let networks = config.analyzers.seed_networks().unwrap();
        assert_eq!(networks[1].to_string(), "192.168.1.7/32");
        assert_eq!(networks[2].to_string(), "::1/128");
        assert_eq!(Config::default().analyzers.seed_networks(), None);
        let err = problem("[analyzers]\nseed_handshake_from = [\"10.1.0.0/33\"]\n");
        assert!(err.contains("analyzers.seed_handshake_from"), "{err}");
    }

    #[test]
    fn auto_workers_are_half_the_cores_at_least_one() {
        let auto: Vec<usize> = [1, 2, 3, 4, 16].map(RuntimeConfig::auto_workers).to_vec();
        assert_eq!(auto, [1, 1, 1, 2, 8]);
        let set = RuntimeConfig { worker_threads: 3 };
        assert_eq!(set.workers(), 3);
    }

    #[test]
    fn token_files_are_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "\n  first-token  \n\nsecond-token\n").unwrap();
        let admin = dir.path().join("admin");
        std::fs::write(&admin, "admin-secret\n").unwrap();
        let mut config = Config::default();
        config.analyzers.tokens = vec![Secret::new("inline-token")];
        config.analyzers.tokens_file = Some(tokens.clone());
        config.admin.token_file = Some(admin.clone());
        config.validate().unwrap();
        let secrets = config.secrets().unwrap();
        let values: Vec<&str> = secrets.analyzer_tokens.iter().map(Secret::expose).collect();
        assert_eq!(values, ["inline-token", "first-token", "second-token"]);
        assert_eq!(secrets.admin_token.unwrap().expose(), "admin-secret");
        assert!(!format!("{config:?}").contains("inline-token"));

        std::fs::write(&tokens, "\n   \n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("analyzers.tokens_file"), "{err}");
        config.analyzers.tokens_file = Some(dir.path().join("missing"));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("analyzers.tokens_file"), "{err}");
        config.analyzers.tokens_file = None;

        config.admin.token = Some(Secret::new("also-set"));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("admin.token_file"), "{err}");
        config.admin.token_file = None;
        config.admin.token = Some(Secret::new("has space"));
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("admin.token") && !err.contains("has space"),
            "{err}"
        );
    }
}
