//! The append queue: where ids are assigned, the byte budget is kept and
//! appends and acknowledgements wait for the writer.
//!
//! Everything here runs under one mutex on the hot path (once per message,
//! from many tasks), so it does no I/O and allocates only when the pending
//! vectors grow past what an earlier batch needed (the writer hands its
//! emptied vectors back).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::{Full, Record, RecordId};

/// The writer stops gathering a batch once this much is pending.
pub(crate) const GATHER_BYTES: u64 = 1 << 20;

/// An append waiting for the writer: the payload is shared, not copied.
#[derive(Debug)]
pub(crate) struct Append {
    pub id: RecordId,
    pub priority: u8,
    pub kind: u8,
    pub payload: Bytes,
}

/// What the writer is doing, so that callers wake it only when it waits
/// for them (a wake-up is a syscall).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriterState {
    /// Waiting for work: the first append or ack wakes it.
    Asleep,
    /// Gathering a batch until its deadline: woken early only once
    /// [`GATHER_BYTES`] are pending.
    Gathering,
    /// Writing, or already woken: it looks at the queue before sleeping.
    Awake,
}

#[derive(Debug)]
pub(crate) struct Queue {
    /// The segment appended to and where its next record goes.
    segment: u32,
    next_offset: u64,
    /// Records start at offsets below this (a segment is closed past
    /// `segment_bytes`; ids hold offsets in 32 bits).
    segment_limit: u64,
    max_bytes: u64,
    /// Bytes of the segment files plus the appends queued for them.
    live_bytes: u64,
    /// Records appended (or recovered) and not acknowledged.
    live_records: u64,
    /// Bytes the last refused append needed: [`Queue::has_room`] waits for
    /// that much, so a refused caller does not spin on `room()`.
    refused: u64,
    group_commit: bool,
    pub appends: Vec<Append>,
    pub acks: Vec<RecordId>,
    /// Record bytes in `appends`.
    pub pending_bytes: u64,
    /// When the oldest pending append or ack arrived (group commit only).
    pub pending_since: Option<Instant>,
    pub writer: WriterState,
    pub closing: bool,
}

impl Queue {
    /// A queue appending to the new segment `segment`, with what recovery
    /// left live.
    pub(crate) fn new(
        segment: u32,
        segment_bytes: u64,
        max_bytes: u64,
        max_batch_delay: Duration,
        live_bytes: u64,
        live_records: u64,
    ) -> Queue {
        Queue {
            segment,
            next_offset: SEGMENT_HEADER_LEN,
            // Below u32::MAX so that the writer's "durable below" mark
            // (segment << 32 | end offset, clamped) stays past every record.
            segment_limit: segment_bytes.min(u64::from(u32::MAX) - 1),
            max_bytes,
            live_bytes,
            live_records,
            refused: 0,
            group_commit: !max_batch_delay.is_zero(),
            appends: Vec::new(),
            acks: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
            writer: WriterState::Asleep,
            closing: false,
        }
    }

    /// Assigns `record` its id and queues it; true in the second place when
    /// the writer must be woken.
    pub(crate) fn append(&mut self, record: &Record) -> Result<(RecordId, bool), Full> {
        if self.closing {
            return Err(Full);
        }
        let Ok(payload_len) = u32::try_from(record.payload.len()) else {
            tracing::error!(
                bytes = record.payload.len(),
                "a record of 4 GiB or more cannot be spooled"
            );
            return Err(Full);
        };
        let record_len = RECORD_HEADER_LEN + u64::from(payload_len);
        let (mut segment, mut offset) = (self.segment, self.next_offset);
        // A record that would pass the limit begins a new segment, unless
        // the segment is empty: a record bigger than a segment gets one of
        // its own.
        if offset > SEGMENT_HEADER_LEN && offset + record_len > self.segment_limit {
            segment = next_segment(segment)?;
            offset = SEGMENT_HEADER_LEN;
        }
        let mut needed = self.bytes_needed(offset, record_len);
        if self.live_bytes + needed > self.max_bytes {
            if self.live_records > 0 {
                self.refused = needed;
                return Err(Full);
            }
            // Nothing is live: accept whatever the size, so that one huge
            // record cannot wedge the spool, and begin a new segment so the
            // current one (all acknowledged) can be deleted.
            if offset > SEGMENT_HEADER_LEN {
                segment = next_segment(segment)?;
                offset = SEGMENT_HEADER_LEN;
                needed = self.bytes_needed(offset, record_len);
            }
        }
        let id = RecordId(u64::from(segment) << 32 | offset);
        self.segment = segment;
        self.next_offset = offset + record_len;
        self.live_bytes += needed;
        self.live_records += 1;
        self.appends.push(Append {
            id,
            priority: record.priority,
            kind: record.kind,
            payload: record.payload.clone(),
        });
        self.pending_bytes += record_len;
        Ok((id, self.wake_writer()))
    }

    /// A record's bytes, and the segment header's if it is the first.
    fn bytes_needed(&self, offset: u64, record_len: u64) -> u64 {
        if offset == SEGMENT_HEADER_LEN {
            record_len + SEGMENT_HEADER_LEN
        } else {
            record_len
        }
    }

    /// Queues acknowledgements; true when the writer must be woken. After
    /// close they are not recorded (their records are delivered again after
    /// the next open: at least once).
    pub(crate) fn ack(&mut self, ids: &[RecordId]) -> bool {
        if self.closing {
            return false;
        }
        self.acks.extend_from_slice(ids);
        self.wake_writer()
    }

    /// Notes when a batch begins and whether the writer needs a wake-up,
    /// marking it woken so that later callers do not wake it again.
    fn wake_writer(&mut self) -> bool {
        if self.group_commit && self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        let wake = match self.writer {
            WriterState::Asleep => true,
            WriterState::Gathering => self.pending_bytes >= GATHER_BYTES,
            WriterState::Awake => false,
        };
        if wake {
            self.writer = WriterState::Awake;
        }
        wake
    }

    pub(crate) fn has_work(&self) -> bool {
        !self.appends.is_empty() || !self.acks.is_empty()
    }

    /// Hands the pending appends and acks to the writer in exchange for its
    /// emptied vectors (so neither side allocates in the steady state), with
    /// the segment being appended to now.
    pub(crate) fn take(&mut self, appends: &mut Vec<Append>, acks: &mut Vec<RecordId>) -> u32 {
        std::mem::swap(&mut self.appends, appends);
        std::mem::swap(&mut self.acks, acks);
        self.pending_bytes = 0;
        self.pending_since = None;
        self.segment
    }

    /// The writer deleted segments of `bytes` and `records` were
    /// acknowledged; true if appends may fit again (wake `room()`).
    pub(crate) fn release(&mut self, bytes: u64, records: u64) -> bool {
        debug_assert!(bytes <= self.live_bytes && records <= self.live_records);
        // Saturating: a bookkeeping slip must not wedge the spool as full.
        self.live_bytes = self.live_bytes.saturating_sub(bytes);
        self.live_records = self.live_records.saturating_sub(records);
        (bytes > 0 || records > 0) && self.has_room()
    }

    /// Whether an append like the last refused one fits (or nothing is live,
    /// when anything is accepted). Never after close.
    pub(crate) fn has_room(&self) -> bool {
        !self.closing
            && (self.live_records == 0 || self.live_bytes + self.refused <= self.max_bytes)
    }
}

/// Segment numbers are never reused while the spool is open; 4 billion
/// segments are a bound nothing reaches, refused rather than wrapped.
fn next_segment(segment: u32) -> Result<u32, Full> {
    segment.checked_add(1).ok_or_else(|| {
        tracing::error!("spool segment numbers are exhausted");
        Full
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize) -> Record {
        Record {
            priority: 1,
            kind: 2,
            payload: Bytes::from(vec![7; len]),
        }
    }

    fn queue(segment_bytes: u64, max_bytes: u64) -> Queue {
        Queue::new(3, segment_bytes, max_bytes, Duration::ZERO, 0, 0)
    }

    #[test]
    fn ids_grow_and_segments_roll() {
        let mut q = queue(100, 10_000);
        let (a, wake) = q.append(&record(10)).unwrap();
        assert!(wake, "the writer sleeps");
        assert_eq!((a.segment(), a.offset()), (3, 16));
        let (b, wake) = q.append(&record(10)).unwrap();
        assert!(!wake, "woken already");
        assert_eq!((b.segment(), b.offset()), (3, 46));
        // 76 + 30 > 100: next segment.
        let (c, _) = q.append(&record(10)).unwrap();
        assert_eq!((c.segment(), c.offset()), (4, 16));
        // Bigger than a segment: one of its own.
        let (d, _) = q.append(&record(500)).unwrap();
        assert_eq!((d.segment(), d.offset()), (5, 16));
        let (e, _) = q.append(&record(1)).unwrap();
        assert_eq!((e.segment(), e.offset()), (6, 16));
        assert!(a < b && b < c && c < d && d < e);
        assert_eq!(q.live_bytes, (16 + 60) + (16 + 30) + (16 + 520) + (16 + 21));
    }

    #[test]
    fn full_past_max_bytes_unless_empty() {
        let mut q = queue(1000, 200);
        q.append(&record(50)).unwrap(); // 16 + 70
        q.append(&record(50)).unwrap(); // 156
        assert_eq!(q.append(&record(50)), Err(Full));
        assert!(!q.has_room());
        q.append(&record(20)).unwrap(); // 196
        // Everything acknowledged, the segment not deleted (it is current):
        // accepted in a new segment whatever the size.
        assert!(!q.release(0, 2));
        assert!(q.release(0, 1));
        let (id, _) = q.append(&record(5000)).unwrap();
        assert_eq!((id.segment(), id.offset()), (4, 16));
        assert_eq!(q.append(&record(1)), Err(Full));
    }

    #[test]
    fn room_waits_for_the_refused_size() {
        let mut q = queue(1000, 300);
        q.append(&record(200)).unwrap(); // 236
        assert_eq!(q.append(&record(100)), Err(Full));
        // Freeing 10 bytes is not enough for 120.
        assert!(!q.release(10, 0));
        assert!(q.release(100, 0));
    }

    #[test]
    fn closed_refuses_everything() {
        let mut q = queue(1000, 300);
        q.closing = true;
        assert_eq!(q.append(&record(1)), Err(Full));
        assert!(!q.ack(&[RecordId(1)]));
        assert!(!q.has_room());
    }
}
