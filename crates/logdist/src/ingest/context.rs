//! What every emitter connection shares: how to decode (limits, the priority
//! table), where messages go (the router), where they go when shutdown's
//! grace runs out first (the dead-letter file), the memory budget every read
//! is charged to, and the counters.

use std::sync::Arc;

use logdist_router::Router;
use logdist_wire::{IngestLimits, PriorityTable};

use crate::budget::MemoryBudget;
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
    /// `limits.max_buffered_bytes`.
    pub budget: Arc<MemoryBudget>,
}
