//! What the operator-facing outputs (admin API, Prometheus, CSV) read: the
//! counters, the analyzer directory, the router's holding queue, the
//! memory budget and disk mode's spool. Read only: control changes go
//! through the directory's own methods.

use std::sync::Arc;
use std::time::Instant;

use logdist_router::Router;

use crate::budget::MemoryBudget;
use crate::custody::Custody;
use crate::delivery::backlog::Backlog;
use crate::delivery::directory::Directory;
use crate::stats::Stats;

#[derive(Clone)]
pub struct Observed {
    pub stats: Arc<Stats>,
    pub directory: Arc<Directory>,
    pub router: Arc<Router>,
    pub budget: Arc<MemoryBudget>,
    /// Disk mode's spool and counters.
    pub custody: Custody,
    /// Disk mode: messages on disk only, waiting for room in memory.
    pub backlog: Option<Arc<Backlog>>,
    /// When the server was bound, for uptimes.
    pub started: Instant,
}

/// Disk mode's numbers, for stats and /metrics (zeros in memory mode).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct DurabilityView {
    pub mode: crate::config::DurabilityMode,
    /// Bytes of spool files on disk.
    pub spool_bytes: u64,
    pub spool_segments: u64,
    /// Messages in the spool not yet done (delivered or dead-lettered).
    pub spool_messages: u64,
    /// Of those, messages on disk only, waiting for room in memory.
    pub backlog: u64,
    /// Age of the oldest spool segment holding an unfinished message.
    pub oldest_unacked_seconds: f64,
    /// Syncs (`fdatasync`) since start.
    pub syncs: u64,
    /// Bytes written to the spool since start.
    pub written_bytes: u64,
    /// Messages found in the spool at start and delivered again.
    pub recovered: u64,
    /// Spool files whose end was cut at start (a crash mid-write).
    pub torn_tails: u64,
    /// Spool writes or syncs that failed and were retried.
    pub write_errors: u64,
    /// Backlog messages that could not be read back (left in the spool).
    pub read_errors: u64,
}

impl Observed {
    pub fn durability(&self) -> DurabilityView {
        let Some(spool) = self.custody.spool() else {
            return DurabilityView::default();
        };
        let spooled = spool.stats();
        let counts = self.custody.counts();
        let backlog = self.backlog.as_deref();
        DurabilityView {
            mode: crate::config::DurabilityMode::Disk,
            spool_bytes: spooled.bytes,
            spool_segments: spooled.segments,
            spool_messages: spooled.live_records,
            backlog: backlog.map_or(0, Backlog::len),
            oldest_unacked_seconds: spooled.oldest_unacked_ms as f64 / 1000.0,
            syncs: spooled.syncs,
            written_bytes: spooled.written_bytes,
            recovered: counts.recovered.get(),
            torn_tails: counts.torn_tails.get(),
            write_errors: spooled.write_errors,
            read_errors: backlog.map_or(0, |b| b.read_errors.get()),
        }
    }
}
