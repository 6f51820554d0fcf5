//! Ingest: from an emitter's socket to the router.
//!
//! Each emitter [`listener`] accepts [`connection`]s that read, decode
//! (`logdist-wire`), route (`logdist-router`) and acknowledge; [`http`] is
//! the same for the seed's `POST /api/v1/logs`. All of them share one
//! [`context`]; [`read_buffer`] charges what they read to the memory budget.
//! Once a message is placed in an analyzer queue or the holding
//! queue, ingest is done with it: delivery owns it.

pub mod connection;
pub mod context;
pub mod http;
pub mod listener;
pub mod read_buffer;
pub mod spooling;
