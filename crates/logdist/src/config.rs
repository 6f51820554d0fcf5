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
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use logdist_wire::{AnalyzerFormat, DEFAULT_LEVELS, DEFAULT_PRIORITY, MAX_FRAME_BYTES_CEILING};
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
}

/// The async runtime.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads; 0 means one per CPU core. One worker spends the least
    /// CPU per message (no cross-thread wake-ups) and suits moderate rates;
    /// more raise the ceiling.
    pub worker_threads: usize,
}

/// One emitter listener.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    #[serde(default)]
    pub ack: AckMode,
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

/// Whether an emitter listener answers every NDJSON message.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Nothing is written back to the emitter.
    #[default]
    None,
    /// One `{"status":...}` line per NDJSON message, in order (the seed shipper waits for it).
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
    /// Bytes of emitters' data held at once: read buffers (partial messages
    /// included), inflated gzip buffers, and every queued, held, in-flight or
    /// dead-lettering message, counted by the read block it pins. Reading
    /// waits while it is spent.
    pub max_buffered_bytes: usize,
}

/// How NDJSON messages without a `priority` field get one.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrioritiesConfig {
    /// Priority of a message with neither `priority` nor a known `level`/`severity`.
    pub default: u8,
    /// `level`/`severity` value (matched case-insensitively) to priority.
    pub levels: BTreeMap<String, u8>,
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
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            probe_interval: Duration::from_secs(10),
            statics: Vec::new(),
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
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8082".to_string(),
            allow: None,
            tls: None,
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

    /// Rejects values the distributor cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
            ConfigError::invalid(key, problem)
        }
        if self.listeners.is_empty() {
            return Err(invalid(
                "listeners",
                "must name at least one emitter listener",
            ));
        }
        if self.analyzers.queue_capacity == 0 {
            return Err(invalid("analyzers.queue_capacity", "must be at least 1"));
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
        for (i, listener) in self.listeners.iter().enumerate() {
            let at = format!("listeners[{i}]");
            check_allow(&at, listener.allow.as_deref())?;
            check_server_tls(&at, listener.tls.as_ref())?;
        }
        check_allow("analyzers", self.analyzers.allow.as_deref())?;
        check_server_tls("analyzers", self.analyzers.tls.as_ref())?;
        check_allow("admin", self.admin.allow.as_deref())?;
        check_server_tls("admin", self.admin.tls.as_ref())?;
        let mut ids = std::collections::HashSet::new();
        for (i, analyzer) in self.analyzers.statics.iter().enumerate() {
            if analyzer.id.is_empty() || !ids.insert(analyzer.id.as_str()) {
                return Err(invalid(
                    "analyzers.static.id",
                    format!("must be non-empty and unique, got {:?}", analyzer.id),
                ));
            }
            if !(analyzer.weight.is_finite() && analyzer.weight >= 0.0) {
                return Err(invalid(
                    "analyzers.static.weight",
                    format!("must be a finite number >= 0 (analyzer {})", analyzer.id),
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
        if self.metrics.interval.is_zero() {
            return Err(invalid("metrics.interval", "must be longer than 0s"));
        }
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
}
