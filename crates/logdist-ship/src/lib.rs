//! `logdist-ship`: reads log files and ships them to logdist over TCP as
//! NDJSON (optionally gzip-framed), waiting for one ack per message; the Rust
//! successor of the seed log-shipping client, with the same settings.
//!
//! * [`config`]: flags, environment variables, defaults;
//! * [`sources`]: which files (lists, globs);
//! * [`tailer`]: reading and following files (rotation, truncation);
//! * [`line_format`]: log line → NDJSON message;
//! * [`connection`]: the TCP client (its retry delays are
//!   [`logdist_net::Backoff`]);
//! * [`failover`]: which of the servers to dial, and when to back off;
//! * [`checkpoint`]: where each file stands, for restarts;
//! * [`shipper`]: the loop tying them together ([`run`]);
//! * [`health`] and [`metrics`]: the probe and the periodic report.

pub mod checkpoint;
pub mod config;
pub mod connection;
pub mod failover;
pub mod health;
pub mod line_format;
pub mod metrics;
pub mod shipper;
pub mod sources;
pub mod tailer;

pub use config::{Cli, Config, Mode, ServerAddress, ServerOrder, StartAt};
pub use shipper::{ShipError, Summary, run};
