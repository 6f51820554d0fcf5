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

use bytes::Bytes;
use logdist_router::Envelope;
use logdist_spool::{Record, RecordId, Spool};
use logdist_wire::{Message, Origin};

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

/// The `kind` of a spool record: the origin of its message.
const KIND_NDJSON: u8 = 0;
const KIND_FRAME: u8 = 1;
const KIND_SYSLOG: u8 = 2;

/// How a message is kept in the spool: its priority, its origin as the
/// record's kind, its bytes ([`to_message`] is the way back).
pub fn to_record(message: &Message) -> Record {
    Record {
        priority: message.priority(),
        kind: match message.origin() {
            Origin::Ndjson => KIND_NDJSON,
            Origin::Frame => KIND_FRAME,
            Origin::Syslog => KIND_SYSLOG,
        },
        payload: message.data().clone(),
    }
}

/// Whether a record read back can be rebuilt into a message: a known kind,
/// and a frame no shorter than its header.
pub fn is_whole(record: &Record) -> bool {
    match record.kind {
        KIND_NDJSON | KIND_SYSLOG => true,
        KIND_FRAME => record.payload.len() >= logdist_wire::FRAME_HEADER_LEN,
        _ => false,
    }
}

/// The message of a record [`is_whole`] accepted.
pub fn to_message(kind: u8, priority: u8, payload: Bytes) -> Message {
    match kind {
        KIND_FRAME => Message::from_frame(payload),
        KIND_SYSLOG => Message::from_syslog(priority, payload),
        _ => Message::from_ndjson_line(priority, payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_rebuilds_its_message() {
        let frame = Bytes::from_static(b"\0\0\0\x07\x09hi");
        let cases = [
            (
                KIND_NDJSON,
                Bytes::from_static(b"{\"a\":1}"),
                Origin::Ndjson,
                3,
            ),
            (KIND_FRAME, frame, Origin::Frame, 9),
            (
                KIND_SYSLOG,
                Bytes::from_static(b"<11>1 - h a - - - x"),
                Origin::Syslog,
                1,
            ),
        ];
        for (kind, payload, origin, priority) in cases {
            let record = logdist_spool::Record {
                priority,
                kind,
                payload: payload.clone(),
            };
            assert!(is_whole(&record));
            let message = to_message(kind, priority, payload.clone());
            assert_eq!(message.origin(), origin);
            assert_eq!(message.priority(), priority);
            assert_eq!(message.data(), &payload);
        }
        let unknown = logdist_spool::Record {
            priority: 0,
            kind: 7,
            payload: Bytes::new(),
        };
        assert!(!is_whole(&unknown));
    }
}
