//! The logdist distributor, around the wire codecs of `logdist-wire` and the
//! routing core of `logdist-router`. Folders follow the data path:
//!
//! - [`ingest`]: emitter listeners and connections (read, decode, route,
//!   acknowledge) and HTTP ingest;
//! - [`delivery`]: analyzer sessions (strict-priority writer, in-flight
//!   window, acks), static analyzer links, redelivery, holding, the
//!   dead-letter file and its replay;
//! - [`control`]: the admin HTTP API, Prometheus metrics, the CSV export and
//!   config reload.
//!
//! Below them: [`config`], [`stats`], [`budget`] (the memory budget), [`refusal`],
//! [`closes`], [`shutdown`], [`accept`], [`api_error`] and [`transport`] (allow lists, TLS, the stream type every
//! connection uses), which import none of the stages. Above them: [`server`],
//! which wires the stages together, [`cli`], and [`health`] (the `logdist
//! health` client). ARCHITECTURE.md at the
//! repository root has the map and the invariants.

pub mod accept;
pub mod api_error;
pub mod budget;
pub mod cli;
pub mod closes;
pub mod config;
pub mod control;
pub mod custody;
pub mod delivery;
pub mod health;
pub mod ingest;
pub mod log_limit;
pub mod refusal;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod transport;

pub use config::Config;
pub use server::{Addresses, Server, ShutdownReport};
