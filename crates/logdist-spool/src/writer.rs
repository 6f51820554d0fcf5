//! The writer thread: group commit, acknowledgement files, and deletion of
//! spent segments.
//!
//! One thread owns every write to the directory, so appends need no I/O and
//! no lock beyond the queue's. A batch is everything queued when the writer
//! looks: after the first append (or ack) arrives it may wait up to
//! `max_batch_delay`, or until [`GATHER_BYTES`] are pending, so that many
//! appends share one `fdatasync`. Then, in order:
//!
//! 1. the batch's records are written with `pwrite` at their offsets (one
//!    write per segment touched, in chunks of about a megabyte), each file
//!    synced once (`SyncMode::Fsync`), and the directory too when a segment
//!    file was created;
//! 2. "durable below id X" is published and `durable()` waiters woken;
//! 3. acknowledgements are applied; a segment whose records are all
//!    acknowledged, and which is no longer appended to, is deleted (`.seg`,
//!    then `.ack`), its bytes released and `room()` waiters woken; the
//!    other segments' acknowledgement entries are written (not synced: a
//!    lost one only delivers its record again);
//! 4. the counters are updated.
//!
//! Writes go to fixed offsets, so a failed batch is simply written again:
//! the error is logged and counted, nothing is dropped, and the writer
//! retries every [`RETRY_PAUSE`] (at close, for a bounded time).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::queue::{Append, GATHER_BYTES, WriterState};
use crate::segment::{self, Segment, ack_path, segment_path};
use crate::stats::unix_ms;
use crate::{RecordId, Shared, SyncMode};

/// Records are written in pieces of about this size (a batch can be large
/// after a stall; its copy should not be).
const WRITE_CHUNK: usize = 1 << 20;
/// Between attempts to write a batch that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Attempts at close before giving up on a batch (five seconds): closing
/// must end even when the disk is gone.
const ATTEMPTS_AT_CLOSE: u32 = 50;
/// Pending-vector capacity kept between batches.
const KEEP_ENTRIES: usize = 64 * 1024;
/// A failing write is logged the first time, then every this many attempts.
const LOG_EVERY: u32 = 50;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    sync: SyncMode,
    max_batch_delay: Duration,
    segments: BTreeMap<u32, Segment>,
    /// The segment file last written, kept open for the next batch.
    file: Option<(u32, File)>,
    /// The batch: taken from the queue, which gets these back emptied.
    appends: Vec<Append>,
    acks: Vec<RecordId>,
    /// Where records are encoded before they are written.
    buf: Vec<u8>,
    /// Segments whose records were all acknowledged: deleted once they are
    /// not the segment appended to (unless appended to meanwhile).
    drained: BTreeSet<u32>,
    /// Segments with acknowledgement entries not written yet.
    unwritten_acks: BTreeSet<u32>,
    /// Acknowledgement files written and not synced (synced at close).
    unsynced_acks: BTreeSet<u32>,
    /// Bytes of the segment files.
    disk_bytes: u64,
    live_records: u64,
    /// Consecutive failed acknowledgement writes (to log only some).
    ack_failures: u32,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        dir: &Path,
        sync: SyncMode,
        max_batch_delay: Duration,
        segments: BTreeMap<u32, Segment>,
    ) -> Writer {
        let disk_bytes = segments.values().map(|s| s.size).sum();
        let live_records = segments.values().map(Segment::live).sum();
        let writer = Writer {
            shared,
            dir: dir.to_path_buf(),
            sync,
            max_batch_delay,
            segments,
            file: None,
            appends: Vec::new(),
            acks: Vec::new(),
            buf: Vec::new(),
            drained: BTreeSet::new(),
            unwritten_acks: BTreeSet::new(),
            unsynced_acks: BTreeSet::new(),
            disk_bytes,
            live_records,
            ack_failures: 0,
        };
        writer.publish_stats();
        writer
    }

    pub(crate) fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("spool-writer".to_string())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        while let Some((current, closing)) = self.next_batch() {
            let now_ms = unix_ms();
            if !self.appends.is_empty() && self.write_appends(now_ms, closing) {
                self.note_written(now_ms);
            }
            let acked = self.apply_acks();
            let freed = self.delete_drained(current);
            self.write_acks();
            self.release(freed, acked);
            self.publish_stats();
            self.appends.clear();
            self.acks.clear();
            // A burst's vectors are not kept (they go back to the queue).
            self.appends.shrink_to(KEEP_ENTRIES);
            self.acks.shrink_to(KEEP_ENTRIES);
        }
        self.sync_acks_at_close();
    }

    /// Waits for work, gathers a batch and takes it from the queue; with
    /// the segment appended to and whether the spool is closing. `None`
    /// once closed and nothing is left.
    fn next_batch(&mut self) -> Option<(u32, bool)> {
        let shared = Arc::clone(&self.shared);
        let mut queue = shared.queue.lock();
        while !queue.has_work() {
            if queue.closing {
                return None;
            }
            queue.writer = WriterState::Asleep;
            shared.wake_writer.wait(&mut queue);
        }
        if let Some(since) = queue.pending_since {
            // A delay too long for the clock means: until woken.
            let deadline = since.checked_add(self.max_batch_delay);
            queue.writer = WriterState::Gathering;
            while !queue.closing && queue.pending_bytes < GATHER_BYTES {
                match deadline {
                    Some(deadline) => {
                        if shared
                            .wake_writer
                            .wait_until(&mut queue, deadline)
                            .timed_out()
                        {
                            break;
                        }
                    }
                    None => shared.wake_writer.wait(&mut queue),
                }
            }
        }
        queue.writer = WriterState::Awake;
        let current = queue.take(&mut self.appends, &mut self.acks);
        Some((current, queue.closing))
    }

    /// Writes (and syncs) the batch's records, retrying until it works;
    /// false only when closing and the disk still fails after the attempts
    /// allowed then.
    fn write_appends(&mut self, now_ms: u64, mut closing: bool) -> bool {
        let mut attempt = 0u32;
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let written = self.write_batch(&mut buf, now_ms);
            buf.clear();
            if buf.capacity() > 4 * WRITE_CHUNK {
                buf.shrink_to(WRITE_CHUNK);
            }
            self.buf = buf;
            let err = match written {
                Ok(()) => {
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, "spool writes work again");
                    }
                    return true;
                }
                Err(err) => err,
            };
            attempt += 1;
            self.shared.counters.write_errors.fetch_add(1, Relaxed);
            if attempt == 1 || attempt.is_multiple_of(LOG_EVERY) {
                tracing::error!(%err, attempt, records = self.appends.len(), "spool write failed; the records stay queued and are written again");
            }
            closing = closing || self.shared.queue.lock().closing;
            if closing && attempt >= ATTEMPTS_AT_CLOSE {
                tracing::error!(%err, records = self.appends.len(), "spool closed with records it could not write: they are lost, their emitters were not told they are stored");
                return false;
            }
            thread::sleep(RETRY_PAUSE);
        }
    }

    /// One attempt at the batch: encode, write each segment's run, sync.
    fn write_batch(&mut self, buf: &mut Vec<u8>, now_ms: u64) -> io::Result<()> {
        // Files written by this attempt, the segment appended to last.
        let mut written: Vec<(u32, File)> = Vec::new();
        let mut created = false;
        // The segment and file offset `buf` goes to.
        let mut run: Option<(u32, u64)> = None;
        for append in &self.appends {
            let (segment, offset) = (append.id.segment(), append.id.offset());
            if let Some((run_segment, start)) = run
                && (run_segment != segment || buf.len() >= WRITE_CHUNK)
            {
                write_run(
                    &self.dir,
                    &mut self.file,
                    &mut written,
                    run_segment,
                    start,
                    buf,
                )?;
                buf.clear();
                run = None;
            }
            if run.is_none() {
                if u64::from(offset) == SEGMENT_HEADER_LEN {
                    buf.extend_from_slice(&format::segment_header(segment));
                    run = Some((segment, 0));
                    created = true;
                } else {
                    run = Some((segment, u64::from(offset)));
                }
            }
            format::encode_record(
                buf,
                segment,
                offset,
                append.priority,
                append.kind,
                now_ms,
                &append.payload,
            );
        }
        if let Some((segment, start)) = run {
            write_run(&self.dir, &mut self.file, &mut written, segment, start, buf)?;
        }
        if self.sync == SyncMode::Fsync {
            for (segment, file) in &written {
                file.sync_data()
                    .map_err(|err| with_path(&segment_path(&self.dir, *segment), err))?;
                self.shared.counters.syncs.fetch_add(1, Relaxed);
            }
            if created {
                segment::sync_dir(&self.dir).map_err(|err| with_path(&self.dir, err))?;
                self.shared.counters.syncs.fetch_add(1, Relaxed);
            }
        }
        self.file = written.pop();
        Ok(())
    }

    /// The batch is on disk: note its records and wake `durable()` waiters.
    fn note_written(&mut self, now_ms: u64) {
        let mut record_bytes = 0;
        let mut durable_below = 0;
        for append in &self.appends {
            let (n, offset) = (append.id.segment(), append.id.offset());
            let len = RECORD_HEADER_LEN + append.payload.len() as u64;
            let end = u64::from(offset) + len;
            let segment = self.segments.entry(n).or_insert_with(|| {
                self.disk_bytes += SEGMENT_HEADER_LEN;
                Segment::new(SEGMENT_HEADER_LEN, now_ms)
            });
            segment.push(offset, end);
            record_bytes += len;
            // The end of the record, clamped: no record starts at or past
            // u32::MAX (the queue's segment limit).
            durable_below = u64::from(n) << 32 | end.min(u64::from(u32::MAX));
        }
        self.disk_bytes += record_bytes;
        self.live_records += self.appends.len() as u64;
        let counters = &self.shared.counters;
        counters
            .appended
            .fetch_add(self.appends.len() as u64, Relaxed);
        counters.written_bytes.fetch_add(record_bytes, Relaxed);
        self.shared.durable_below.store(durable_below, Release);
        self.shared.durable_changed.notify_waiters();
    }

    /// Applies the batch's acknowledgements; how many records they retired.
    fn apply_acks(&mut self) -> u64 {
        let mut acked = 0;
        for id in &self.acks {
            let n = id.segment();
            let Some(segment) = self.segments.get_mut(&n) else {
                continue;
            };
            if segment.ack(id.offset()) {
                acked += 1;
                segment
                    .ack_buf
                    .extend_from_slice(&format::ack_entry(n, id.offset()));
                self.unwritten_acks.insert(n);
                if segment.live() == 0 {
                    self.drained.insert(n);
                }
            }
        }
        self.live_records -= acked;
        acked
    }

    /// Deletes the segments all acknowledged and older than `current`, the
    /// one appended to; the bytes freed. A failed deletion is retried with
    /// the next batch.
    fn delete_drained(&mut self, current: u32) -> u64 {
        let spent: Vec<u32> = self.drained.range(..current).copied().collect();
        let mut freed = 0;
        for n in spent {
            // All acknowledged when it was the segment appended to, it may
            // have been appended to since.
            if self.segments.get(&n).is_some_and(|s| s.live() > 0) {
                self.drained.remove(&n);
                continue;
            }
            let path = segment_path(&self.dir, n);
            if let Err(err) = segment::remove_if_present(&path) {
                self.shared.counters.write_errors.fetch_add(1, Relaxed);
                tracing::error!(file = %path.display(), %err, "cannot delete a spent spool segment; retried later");
                continue;
            }
            let acks = ack_path(&self.dir, n);
            if let Err(err) = segment::remove_if_present(&acks) {
                tracing::warn!(file = %acks.display(), %err, "cannot delete a spent acknowledgement file (the next open does)");
            }
            self.drained.remove(&n);
            self.unwritten_acks.remove(&n);
            self.unsynced_acks.remove(&n);
            if self.file.as_ref().is_some_and(|(open, _)| *open == n) {
                self.file = None;
            }
            if let Some(segment) = self.segments.remove(&n) {
                freed += segment.size;
            }
            self.shared.reader.forget(n);
        }
        self.disk_bytes -= freed;
        freed
    }

    /// Appends the pending acknowledgement entries to their files (kept
    /// for the next batch if that fails).
    fn write_acks(&mut self) {
        for n in std::mem::take(&mut self.unwritten_acks) {
            let Some(segment) = self.segments.get_mut(&n) else {
                continue;
            };
            let path = ack_path(&self.dir, n);
            let written = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .and_then(|file| file.write_all_at(&segment.ack_buf, segment.ack_pos));
            match written {
                Ok(()) => {
                    segment.ack_pos += segment.ack_buf.len() as u64;
                    segment.ack_buf.clear();
                    self.ack_failures = 0;
                    if self.sync == SyncMode::Fsync {
                        self.unsynced_acks.insert(n);
                    }
                }
                Err(err) => {
                    self.shared.counters.write_errors.fetch_add(1, Relaxed);
                    self.ack_failures += 1;
                    if self.ack_failures == 1 || self.ack_failures.is_multiple_of(LOG_EVERY) {
                        tracing::error!(file = %path.display(), %err, "cannot write acknowledgements; retried with the next batch");
                    }
                    self.unwritten_acks.insert(n);
                }
            }
        }
    }

    /// Returns freed bytes and retired records to the queue's budget and
    /// wakes `room()` waiters if appends may fit again.
    fn release(&self, bytes: u64, records: u64) {
        if bytes == 0 && records == 0 {
            return;
        }
        let room = self.shared.queue.lock().release(bytes, records);
        if room {
            self.shared.room_changed.notify_waiters();
        }
    }

    fn publish_stats(&self) {
        let counters = &self.shared.counters;
        counters.bytes.store(self.disk_bytes, Relaxed);
        counters.segments.store(self.segments.len() as u64, Relaxed);
        counters.live_records.store(self.live_records, Relaxed);
        let oldest = self
            .segments
            .values()
            .find(|segment| segment.live() > 0)
            .map_or(0, |segment| segment.first_ms.max(1));
        counters.oldest_live_ms.store(oldest, Relaxed);
    }

    /// Close: acknowledgements written since open are made durable too
    /// (`SyncMode::Fsync`), so a clean stop delivers nothing twice.
    fn sync_acks_at_close(&mut self) {
        for n in std::mem::take(&mut self.unsynced_acks) {
            let path = ack_path(&self.dir, n);
            match File::open(&path).and_then(|file| file.sync_data()) {
                Ok(()) => {
                    self.shared.counters.syncs.fetch_add(1, Relaxed);
                }
                Err(err) => {
                    self.shared.counters.write_errors.fetch_add(1, Relaxed);
                    tracing::error!(file = %path.display(), %err, "cannot sync acknowledgements at close (their records may be delivered again)");
                }
            }
        }
    }
}

/// Writes `bytes` at `start` of `segment`, opening its file unless this
/// attempt (`written`) or the last batch (`kept`) has it open.
fn write_run(
    dir: &Path,
    kept: &mut Option<(u32, File)>,
    written: &mut Vec<(u32, File)>,
    segment: u32,
    start: u64,
    bytes: &[u8],
) -> io::Result<()> {
    let path = segment_path(dir, segment);
    let index = match written.iter().position(|(n, _)| *n == segment) {
        Some(index) => index,
        None => {
            let file = match kept.take() {
                Some((n, file)) if n == segment => file,
                other => {
                    *kept = other;
                    OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .map_err(|err| with_path(&path, err))?
                }
            };
            written.push((segment, file));
            written.len() - 1
        }
    };
    written[index]
        .1
        .write_all_at(bytes, start)
        .map_err(|err| with_path(&path, err))
}

/// Names the file in an I/O error, for the log.
fn with_path(path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}
