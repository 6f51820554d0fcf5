//! The logdist distributor: listeners, analyzer sessions, delivery and shutdown,
//! around the wire codecs of `logdist-wire` and the routing core of `logdist-router`.
//!
//! Data path: [`emitter`] connection (read, decode) → router (weighted pick,
//! priority queue) → [`analyzer`] session (strict-priority writer, in-flight
//! window, acks) → analyzer socket; failures go through [`delivery`] again or to
//! the [`dead_letter`] file.
//!
//! Operators get the [`admin`] HTTP API, Prometheus [`metrics`], the
//! [`metrics_csv`] export and config [`reload`] on SIGHUP.

pub mod admin;
pub mod analyzer;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod delivery;
pub mod emitter;
pub mod holding;
pub mod metrics;
pub mod metrics_csv;
pub mod reload;
pub mod replay;
pub mod server;
pub mod shutdown;
pub mod stats;

pub use config::Config;
pub use server::{Addresses, Server, ShutdownReport};
