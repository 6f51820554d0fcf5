//! What every emitter connection shares: how to decode (limits, the priority
//! table), where messages go (the router), where they go when shutdown's
//! grace runs out first (the dead-letter file), how long a peer may make no
//! progress, the gzip inflation slots, the memory budget every read is
//! charged to, and the counters.

use std::sync::Arc;
use std::time::Duration;

use logdist_router::Router;
use logdist_wire::{IngestLimits, PriorityTable};
use tokio::sync::Semaphore;

use super::spooling::Spooling;
use crate::budget::MemoryBudget;
use crate::config::LimitsConfig;
use crate::delivery::dead_letter::DeadLetters;
use crate::shutdown::Shutdown;
use crate::stats::Stats;

#[derive(Clone)]
pub struct IngestContext {
    pub router: Arc<Router>,
    pub stats: Arc<Stats>,
    pub dead_letters: DeadLetters,
    pub shutdown: Shutdown,
    pub limits: IngestLimits,
    pub priorities: Arc<PriorityTable>,
    pub timeouts: EmitterTimeouts,
    /// Gzip frames inflated off the async workers at once (one slot each):
    /// bounds the threads, CPU and memory that inflation takes, however
    /// many emitters send large frames.
    pub inflation_slots: Arc<Semaphore>,
    /// `limits.max_buffered_bytes`.
    pub budget: Arc<MemoryBudget>,
    /// Disk mode: the spool and the backlog.
    pub spooling: Option<Spooling>,
}

impl IngestContext {
    /// Inflation slots for this machine: one per core.
    pub fn inflation_slots() -> Arc<Semaphore> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Semaphore::new(cores))
    }
}

/// How long an emitter connection may make no progress (`[limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmitterTimeouts {
    /// No byte read, no reply taken: `limits.idle_timeout`.
    pub idle: Option<Duration>,
    /// A message begun and not completed: `limits.frame_timeout`.
    pub frame: Option<Duration>,
}

impl EmitterTimeouts {
    /// From `[limits]`; a zero duration turns that timeout off.
    pub fn from_limits(limits: &LimitsConfig) -> Self {
        let on = |timeout: Duration| (!timeout.is_zero()).then_some(timeout);
        EmitterTimeouts {
            idle: on(limits.idle_timeout),
            frame: on(limits.frame_timeout),
        }
    }
}
