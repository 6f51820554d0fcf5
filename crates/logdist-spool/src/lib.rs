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
//! - [`Spool::open`] takes the directory's lock (a second open, from this
//!   process or another, gets [`OpenError::Locked`]), recovers every record
//!   that is not acknowledged,
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
//!
//! # Inside
//! `queue`: ids, the byte budget and the pending batch (the hot path, one
//! mutex, no I/O). `writer`: the thread that writes, syncs, records
//! acknowledgements and deletes spent segments. `recovery`: what `open`
//! finds. `reader`: reads back, with open files and read-ahead. `format`:
//! the bytes on disk. `segment`: file names and per-segment bookkeeping.
//! `lock`: the `LOCK` file. `stats`: the counters.

mod format;
mod lock;
mod queue;
mod reader;
mod recovery;
mod segment;
mod stats;
mod writer;

use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Acquire};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use crate::lock::DirLock;
use crate::queue::Queue;
use crate::reader::Reader;
use crate::stats::Counters;
use crate::writer::Writer;

/// Where a record lives: the segment's number in the high 32 bits, its byte
/// offset in the segment in the low 32. Ids grow in append order, so "every
/// record before X is durable" is one comparison. Never 0: segments are
/// numbered from 1 and a segment's header comes before its records.
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
    /// `.seg` files that are not this spool's (no `LDSPOOL1` magic, another
    /// format version, a header naming another segment, not a regular
    /// file): left untouched, each logged, for an operator to look at.
    pub skipped_segments: u64,
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
/// and the dead-letter writer. Dropping the last `Arc` closes it.
pub struct Spool {
    shared: Arc<Shared>,
    /// The writer thread, until [`Spool::close`] joins it.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Held until the spool is dropped (declared last: released last).
    _lock: DirLock,
}

/// What callers and the writer thread share.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    /// The writer waits here for work ([`queue::WriterState`] says when to
    /// wake it).
    wake_writer: Condvar,
    /// Every id below this is durable: `segment << 32 | end offset` of the
    /// last record written (and synced), so ids of older segments, those
    /// recovered included, are below it.
    durable_below: AtomicU64,
    durable_changed: Notify,
    room_changed: Notify,
    counters: Counters,
    reader: Reader,
}

impl Spool {
    /// Opens `config.dir` (created if missing), takes its lock, recovers what
    /// it holds and starts the writer thread.
    ///
    /// `segment_bytes` well below `max_bytes` (logdist asks for at most
    /// half) lets acknowledgements free room a segment at a time; a segment
    /// is only deleted once no longer appended to.
    pub fn open(config: SpoolConfig) -> Result<(Arc<Spool>, Recovered), OpenError> {
        let dir = config.dir.clone();
        let io_error = |source| OpenError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        let lock = DirLock::acquire(&dir)?;
        let found = recovery::recover(&dir).map_err(io_error)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(
                found.next_segment,
                config.segment_bytes,
                config.max_bytes,
                config.max_batch_delay,
                found.bytes,
                found.live_records,
            )),
            wake_writer: Condvar::new(),
            durable_below: AtomicU64::new(u64::from(found.next_segment) << 32),
            durable_changed: Notify::new(),
            room_changed: Notify::new(),
            counters: Counters::default(),
            reader: Reader::new(&dir),
        });
        let writer = Writer::new(
            Arc::clone(&shared),
            &dir,
            config.sync,
            config.max_batch_delay,
            found.segments,
        )
        .spawn()
        .map_err(io_error)?;
        let spool = Spool {
            shared,
            writer: Mutex::new(Some(writer)),
            _lock: lock,
        };
        Ok((Arc::new(spool), found.recovered))
    }

    /// Queues `record` for the writer and says where it will be; refuses when
    /// the spool is full. Never blocks on the disk.
    ///
    /// When nothing in the spool is live it accepts any record, bigger than
    /// `max_bytes` too, so that one huge record cannot wedge it. Refused
    /// after [`close`](Self::close), and for a payload of 4 GiB or more
    /// (lengths are 32 bits; logged).
    pub fn try_append(&self, record: &Record) -> Result<RecordId, Full> {
        let (id, wake) = self.shared.queue.lock().append(record)?;
        if wake {
            self.shared.wake_writer.notify_one();
        }
        Ok(id)
    }

    /// Completes once the spool has room for appends again: for an append
    /// as big as the last one refused, or for any when nothing is live.
    /// Never completes after [`close`](Self::close) (select it with your
    /// shutdown signal). Cancel-safe.
    pub async fn room(&self) {
        loop {
            let mut changed = pin!(self.shared.room_changed.notified());
            // Registered before the check: a release in between wakes it.
            changed.as_mut().enable();
            if self.shared.queue.lock().has_room() {
                return;
            }
            changed.await;
        }
    }

    /// Completes once `id` (and every record appended before it) is durable
    /// as [`SyncMode`] says. Cancel-safe. Should the disk fail until close
    /// gives up on a batch (logged), its records never become durable.
    pub async fn durable(&self, id: RecordId) {
        loop {
            let mut changed = pin!(self.shared.durable_changed.notified());
            // Registered before the check: a batch written in between wakes it.
            changed.as_mut().enable();
            if self.is_durable(id) {
                return;
            }
            changed.await;
        }
    }

    /// Whether `id` is durable already.
    pub fn is_durable(&self, id: RecordId) -> bool {
        id.0 < self.shared.durable_below.load(Acquire)
    }

    /// Marks records done (delivered, or synced to the dead-letter file).
    /// Acknowledging an id twice, or one recovery did not return, is a no-op.
    /// Recorded in the segment's `.ack` file by the writer, not synced: after
    /// a crash a record may be delivered again (at least once). After
    /// [`close`](Self::close) acknowledgements are not recorded.
    pub fn ack(&self, ids: &[RecordId]) {
        if ids.is_empty() {
            return;
        }
        if self.shared.queue.lock().ack(ids) {
            self.shared.wake_writer.notify_one();
        }
    }

    /// Reads a recovered or appended record back and checks its checksum.
    /// Blocking file I/O: call it off the async workers. An appended record
    /// can be read once [`durable`](Self::durable) completed for it (before,
    /// `ErrorKind::WouldBlock`); an acknowledged one may be gone (`NotFound`).
    /// A damaged record, or an id that is not a record's, is `InvalidData`.
    ///
    /// Segment files stay open between reads (a few, least recently used
    /// closed first) with a read-ahead window each, so reading a backlog in
    /// id order costs a `pread` per 64 KiB.
    pub fn read(&self, id: RecordId) -> std::io::Result<Record> {
        let durable_below = self.shared.durable_below.load(Acquire);
        if id.0 >= durable_below {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the record is not durable yet",
            ));
        }
        // In the segment being written, bytes past the mark may be in flight.
        let durable_end = if id.segment() == (durable_below >> 32) as u32 {
            durable_below & u64::from(u32::MAX)
        } else {
            u64::MAX
        };
        self.shared.reader.read(id, durable_end)
    }

    /// Counters from atomics the writer keeps: cheap, a batch behind at most.
    pub fn stats(&self) -> SpoolStats {
        self.shared.counters.snapshot()
    }

    /// Writes and syncs everything appended and acknowledged so far, then
    /// stops the writer. Appends after this are refused with [`Full`];
    /// reads still work. Blocks until the writer is done (a batch to write
    /// and sync: from async code, a `spawn_blocking`); a second call waits
    /// for the first. The directory stays locked until the spool is dropped.
    pub fn close(&self) {
        let mut writer = self.writer.lock();
        let Some(handle) = writer.take() else {
            return;
        };
        self.shared.queue.lock().closing = true;
        self.shared.wake_writer.notify_one();
        if handle.join().is_err() {
            tracing::error!("the spool writer thread panicked");
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_last_handle_stops_the_writer() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (spool, _) = Spool::open(SpoolConfig {
            dir: dir.path().to_path_buf(),
            sync: SyncMode::Write,
            max_batch_delay: Duration::from_secs(3600),
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
        })
        .expect("opens");
        let shared = Arc::downgrade(&spool.shared);
        spool
            .try_append(&Record {
                priority: 0,
                kind: 0,
                payload: Bytes::from_static(b"queued"),
            })
            .expect("room");
        drop(spool);
        // The writer thread held the other reference: it has ended, and
        // wrote what was queued on its way out.
        assert!(shared.upgrade().is_none());
        let (_, recovered) = Spool::open(SpoolConfig {
            dir: dir.path().to_path_buf(),
            sync: SyncMode::Write,
            max_batch_delay: Duration::ZERO,
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
        })
        .expect("opens again");
        assert_eq!(recovered.records.len(), 1);
    }
}
