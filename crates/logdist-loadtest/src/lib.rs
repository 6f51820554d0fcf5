//! logdist-loadtest: simulates emitters and analyzers against a real logdist,
//! reconciles every message exactly, and reports what logdist did.
//!
//! One process runs all emitters and analyzers as tokio tasks, each with its own
//! TCP connection, speaking the seed wire formats. See README.md for usage.

pub mod analyzer;
pub mod chaos;
pub mod chart;
pub mod cli;
pub mod distributor_process;
pub mod emitter;
pub mod ledger;
pub mod payload;
pub mod priority;
pub mod proc_stats;
pub mod profile;
pub mod ramp;
pub mod recorder;
pub mod report;
pub mod runner;
pub mod timeline;
