//! Who answers for an accepted message until it is done (delivered, or
//! synced to the dead-letter file): memory alone (`durability.mode =
//! "memory"`), or the disk spool as well (`"disk"`).
//!
//! The stages that finish a message (a session releasing what an analyzer
//! acknowledged, the dead-letter writer after its sync) tell [`Custody`];
//! in disk mode it acknowledges their spool records, so a restart does not
//! deliver them again. At shutdown, disk mode leaves what is still held in
//! the spool instead of dead-lettering it.

use std::num::NonZeroU64;
use std::sync::Arc;

use logdist_router::Envelope;
use logdist_spool::{RecordId, Spool};

use crate::stats::Counter;

/// Cheap to clone; one per server.
#[derive(Clone, Default)]
pub struct Custody {
    spool: Option<Arc<Spool>>,
    counts: Arc<CustodyCounts>,
}

/// Disk mode's own counters (zero in memory mode).
#[derive(Default)]
pub struct CustodyCounts {
    /// Messages found in the spool at start and not acknowledged before.
    pub recovered: Counter,
    /// Messages still held at shutdown and left in the spool for the next
    /// start (memory mode dead-letters these).
    pub kept_at_shutdown: Counter,
    /// Segment tails cut at start (a crash in the middle of a write).
    pub torn_tails: Counter,
}

impl Custody {
    /// Memory mode: nothing outlives the process.
    pub fn memory() -> Self {
        Custody::default()
    }

    pub fn disk(spool: Arc<Spool>) -> Self {
        Custody {
            spool: Some(spool),
            counts: Arc::default(),
        }
    }

    /// The spool, in disk mode.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    pub fn counts(&self) -> &CustodyCounts {
        &self.counts
    }

    /// These messages left logdist (delivered, or synced to the dead-letter
    /// file): their spool records are done.
    pub fn done<'a>(&self, envelopes: impl IntoIterator<Item = &'a Envelope>) {
        let Some(spool) = &self.spool else { return };
        let ids: Vec<RecordId> = envelopes
            .into_iter()
            .filter_map(|env| env.spooled.map(record_id))
            .collect();
        if !ids.is_empty() {
            spool.ack(&ids);
        }
    }

    /// Shutdown is about to give up on `envelope`: true when the spool keeps
    /// it for the next start (then it must not be dead-lettered).
    pub fn keep_at_shutdown(&self, envelope: &Envelope) -> bool {
        if self.spool.is_some() && envelope.spooled.is_some() {
            self.counts.kept_at_shutdown.add(1);
            return true;
        }
        false
    }
}

/// The spool record an envelope carries.
pub fn record_id(spooled: NonZeroU64) -> RecordId {
    RecordId(spooled.get())
}

/// What an envelope carries for a spool record. Record ids are never 0 (a
/// segment's header comes first).
pub fn spooled(id: RecordId) -> Option<NonZeroU64> {
    NonZeroU64::new(id.0)
}
