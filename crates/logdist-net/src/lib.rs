//! `logdist-net`: what every logdist program that dials a peer shares. For
//! now that is the reconnect delay, [`Backoff`]: the distributor dials its
//! static analyzers with it and `logdist-ship` dials the distributor with it.

mod backoff;

pub use backoff::Backoff;
