//! logdist-loadtest: simulates emitters and analyzers against a real logdist,
//! reconciles every message exactly, and reports what logdist did.
//!
//! One process runs all emitters and analyzers as tokio tasks, each with its own
//! TCP connection, speaking the seed wire formats. See README.md for usage.
//! [`roles`]: the emitter and the analyzer as standalone processes.

mod ack_emitter;
mod analyzer;
mod chaos;
mod chart;
pub mod cli;
mod crash;
mod distributor_process;
mod durability_ledger;
mod emitter;
mod harness;
mod ledger;
mod partition;
mod payload;
mod priority;
mod proc_stats;
mod profile;
mod ramp;
mod recorder;
mod relay;
mod report;
pub mod roles;
mod runner;
mod syslog;
mod timeline;
