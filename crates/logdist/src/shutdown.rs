//! Graceful shutdown in three phases, each a token every task can watch:
//!
//! 1. `stop_accepting`: listeners stop, emitter connections stop reading and
//!    route what they already read.
//! 2. `drain`: once emitters are done, analyzer sessions close as soon as their
//!    queues are empty and everything they sent is acknowledged.
//! 3. `hard_stop`: the grace period is over; whatever is still held is written
//!    to the dead-letter file with reason "shutdown", so nothing is lost.

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct Shutdown {
    pub stop_accepting: CancellationToken,
    pub drain: CancellationToken,
    pub hard_stop: CancellationToken,
}
