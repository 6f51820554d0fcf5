//! The logdist distributor: listeners, analyzer sessions, delivery and shutdown,
//! around the wire codecs of `logdist-wire` and the routing core of `logdist-router`.
//!
//! Data path: [`emitter`] connection (read, decode) → router (weighted pick,
//! priority queue) → [`analyzer`] session (strict-priority writer, in-flight
//! window, acks) → analyzer socket; failures go through [`delivery`] again or to
//! the [`dead_letter`] file.

pub mod analyzer;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod delivery;
pub mod emitter;
pub mod holding;
pub mod replay;
pub mod server;
pub mod shutdown;
pub mod stats;

pub use config::Config;
pub use server::{Addresses, Server, ShutdownReport};
