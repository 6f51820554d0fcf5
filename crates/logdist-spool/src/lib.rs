//! logdist's disk spool (`[durability] mode = "disk"`): every accepted
//! message is appended here before its emitter is told `ok`, and stays until
//! an analyzer acknowledged it or it was synced to the dead-letter file.
//!
//! An append-only log of segment files with records acknowledged out of
//! order. Appends are gathered by one writer thread and made durable together
//! (group commit: one `fdatasync` per batch, not per message). The format,
//! record by record, and the recovery rules are in docs/operations.md,
//! "Disk spool".
//!
//! Why not a crate: the access pattern (append, acknowledge in any order,
//! delete a segment once all of it is acknowledged, recover after a crash
//! with torn tails) is what Vector's disk buffer and Kafka's segments do, but
//! no maintained Rust crate offers it without an ordered-consumer model;
//! the log here is small and its format is documented.
//!
//! # Contract
//! - [`Spool::open`] takes the directory's lock (a second process gets
//!   [`OpenError::Locked`]), recovers every record that is not acknowledged,
//!   and returns their index ([`Recovered`]); payloads stay on disk until
//!   [`Spool::read`].
//! - [`Spool::try_append`] assigns a [`RecordId`] at once (ids grow in append
//!   order) and queues the record for the writer; it refuses with
//!   [`Full`] when the live records would pass `max_bytes`.
//! - [`Spool::durable`] completes once a record is on disk as the
//!   [`SyncMode`] promises.
//! - [`Spool::ack`] marks a record done; a segment whose records are all done
//!   (and that is no longer appended to) is deleted.
//! - [`Spool::close`] writes and syncs everything queued, then stops the
//!   writer.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

/// Where a record lives: the segment's number in the high 32 bits, its byte
/// offset in the segment in the low 32. Ids grow in append order, so "every
/// record before X is durable" is one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(pub u64);

impl RecordId {
    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

/// When an appended record counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// After `fdatasync`: survives power loss.
    Fsync,
    /// After `write(2)`: survives a crash of the process, not of the host.
    Write,
}

#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub sync: SyncMode,
    /// Group commit: how long the writer may gather appends before one sync.
    pub max_batch_delay: Duration,
    /// A segment is closed, and a new one begun, past this size.
    pub segment_bytes: u64,
    /// Bytes of live segment files at most; appends past it are refused
    /// ([`Full`]) until acknowledgements free whole segments.
    pub max_bytes: u64,
}

/// One record as the caller gave it: its priority, what kind of message it
/// is (the caller's own tag, kept as is) and the message bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub priority: u8,
    pub kind: u8,
    pub payload: Bytes,
}

/// What recovery found in the directory.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every record not acknowledged before, in id (append) order, with its
    /// priority: read payloads with [`Spool::read`].
    pub records: Vec<(RecordId, u8)>,
    /// Segments whose end held an incomplete or corrupt record, cut there
    /// (each is logged).
    pub torn_tails: u64,
    /// Bytes cut off by those cuts.
    pub torn_bytes: u64,
}

/// The spool is at `max_bytes`: wait for [`Spool::room`] and try again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the spool is full (max_bytes)")]
pub struct Full;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("spool directory {dir} is in use by another logdist process ({holder})")]
    Locked { dir: PathBuf, holder: String },
    #[error("spool directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Counters and gauges for stats and /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of segment files on disk now.
    pub bytes: u64,
    pub segments: u64,
    /// Records appended and not acknowledged.
    pub live_records: u64,
    /// Records appended since open.
    pub appended: u64,
    /// Record bytes (headers included) written since open.
    pub written_bytes: u64,
    /// Syncs (`fdatasync`) since open.
    pub syncs: u64,
    /// Age of the oldest segment that still holds an unacknowledged record,
    /// in milliseconds (0 when none): an upper bound on the oldest record's age.
    pub oldest_unacked_ms: u64,
    /// Writes or syncs that failed (each logged); the records stay queued
    /// and are retried.
    pub write_errors: u64,
}

/// The spool of one directory. Shared (`Arc`) by every connection, session
/// and the dead-letter writer.
pub struct Spool {
    _private: (),
}

impl Spool {
    /// Opens `config.dir` (created if missing), takes its lock, recovers what
    /// it holds and starts the writer thread.
    pub fn open(config: SpoolConfig) -> Result<(std::sync::Arc<Spool>, Recovered), OpenError> {
        let _ = config;
        todo!()
    }

    /// Queues `record` for the writer and says where it will be; refuses when
    /// the spool is full. Never blocks on the disk.
    pub fn try_append(&self, record: &Record) -> Result<RecordId, Full> {
        let _ = record;
        todo!()
    }

    /// Completes once the spool has room for appends again.
    pub async fn room(&self) {
        todo!()
    }

    /// Completes once `id` (and every record appended before it) is durable
    /// as [`SyncMode`] says.
    pub async fn durable(&self, id: RecordId) {
        let _ = id;
        todo!()
    }

    /// Whether `id` is durable already.
    pub fn is_durable(&self, id: RecordId) -> bool {
        let _ = id;
        todo!()
    }

    /// Marks records done (delivered, or synced to the dead-letter file).
    /// Acknowledging an id twice, or one recovery did not return, is a no-op.
    pub fn ack(&self, ids: &[RecordId]) {
        let _ = ids;
        todo!()
    }

    /// Reads a recovered or appended record back and checks its checksum.
    /// Blocking file I/O: call it off the async workers. An appended record
    /// can be read once [`durable`](Self::durable) completed for it (before,
    /// `ErrorKind::WouldBlock`); an acknowledged one may be gone (`NotFound`).
    pub fn read(&self, id: RecordId) -> std::io::Result<Record> {
        let _ = id;
        todo!()
    }

    pub fn stats(&self) -> SpoolStats {
        todo!()
    }

    /// Writes and syncs everything appended and acknowledged so far, then
    /// stops the writer. Appends after this are refused with [`Full`].
    pub fn close(&self) {
        todo!()
    }
}
