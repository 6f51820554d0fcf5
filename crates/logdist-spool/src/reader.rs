//! Reading records back: open segment files kept in a small cache, each
//! with a read-ahead window, so that draining a backlog of millions of
//! records costs one `pread` per window rather than two per record.
//!
//! A window holds durable bytes only (the caller says where they end in the
//! segment being appended to), and durable bytes never change, so a window
//! never goes stale while the segment exists. A segment the writer deletes
//! is dropped from the cache; a reader that opened it just before still
//! reads it (the file lives while open), which is what a read racing an
//! acknowledgement may see anyway.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::format::{self, HeaderCheck, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN};
use crate::segment::segment_path;
use crate::{Record, RecordId};

/// Segment files kept open for reading.
const OPEN_FILES: usize = 16;
/// Bytes read ahead per segment: a few hundred typical records a `pread`.
const WINDOW: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Reader {
    dir: PathBuf,
    files: Mutex<OpenFiles>,
}

#[derive(Debug, Default)]
struct OpenFiles {
    /// Each segment's reader and when it was last used (`clock`), to close
    /// the least recently used one.
    by_segment: HashMap<u32, (Arc<Mutex<SegmentReader>>, u64)>,
    clock: u64,
}

impl Reader {
    pub(crate) fn new(dir: &Path) -> Reader {
        Reader {
            dir: dir.to_path_buf(),
            files: Mutex::default(),
        }
    }

    /// Reads record `id`, durable, from a segment whose durable bytes end
    /// at `durable_end` (`u64::MAX`: all of it).
    pub(crate) fn read(&self, id: RecordId, durable_end: u64) -> io::Result<Record> {
        let segment = self.segment(id.segment())?;
        let mut segment = segment.lock();
        segment.read(id.offset(), durable_end)
    }

    fn segment(&self, n: u32) -> io::Result<Arc<Mutex<SegmentReader>>> {
        {
            let mut files = self.files.lock();
            files.clock += 1;
            let clock = files.clock;
            if let Some((reader, used)) = files.by_segment.get_mut(&n) {
                *used = clock;
                return Ok(reader.clone());
            }
        }
        // Opened without the lock: other segments' readers go on meanwhile.
        let opened = Arc::new(Mutex::new(SegmentReader::open(&self.dir, n)?));
        let mut files = self.files.lock();
        if files.by_segment.len() >= OPEN_FILES
            && let Some(&oldest) = files
                .by_segment
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(n, _)| n)
        {
            files.by_segment.remove(&oldest);
        }
        let clock = files.clock;
        // Another reader may have opened it meanwhile: keep one.
        let (reader, _) = files.by_segment.entry(n).or_insert((opened, clock));
        Ok(reader.clone())
    }

    /// Segment `n` was deleted: close it.
    pub(crate) fn forget(&self, n: u32) {
        self.files.lock().by_segment.remove(&n);
    }
}

#[derive(Debug)]
struct SegmentReader {
    file: File,
    path: PathBuf,
    segment: u32,
    /// The read-ahead window: `window[..window_len]` are the file's bytes
    /// from `window_start`.
    window: Vec<u8>,
    window_start: u64,
    window_len: usize,
}

impl SegmentReader {
    fn open(dir: &Path, segment: u32) -> io::Result<SegmentReader> {
        let path = segment_path(dir, segment);
        let file = File::open(&path)?;
        let mut header = [0; SEGMENT_HEADER_LEN as usize];
        let valid = match file.read_exact_at(&mut header, 0) {
            Ok(()) => format::check_segment_header(&header, segment) == HeaderCheck::Valid,
            Err(err) if err.kind() == ErrorKind::UnexpectedEof => false,
            Err(err) => return Err(err),
        };
        if !valid {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("{}: not a segment of this spool", path.display()),
            ));
        }
        Ok(SegmentReader {
            file,
            path,
            segment,
            window: Vec::new(),
            window_start: 0,
            window_len: 0,
        })
    }

    fn read(&mut self, offset: u32, durable_end: u64) -> io::Result<Record> {
        let at = u64::from(offset);
        let header_bytes = match self.header_at(at) {
            Some(bytes) => bytes,
            None => {
                self.fill(at, durable_end)?;
                self.header_at(at).ok_or_else(|| {
                    self.error(
                        offset,
                        ErrorKind::InvalidData,
                        "not a record (past the end)",
                    )
                })?
            }
        };
        let header = RecordHeader::decode(&header_bytes)
            .ok_or_else(|| self.error(offset, ErrorKind::InvalidData, "not a record header"))?;
        let payload_at = at + RECORD_HEADER_LEN;
        let len = header.len as usize;
        let payload = if let Some(bytes) = self.window_slice(payload_at, len) {
            Bytes::copy_from_slice(bytes)
        } else if RECORD_HEADER_LEN as usize + len <= WINDOW {
            self.fill(at, durable_end)?;
            Bytes::copy_from_slice(self.window_slice(payload_at, len).ok_or_else(|| {
                self.error(
                    offset,
                    ErrorKind::InvalidData,
                    "not a record (its length passes the end)",
                )
            })?)
        } else {
            // Bigger than a window: read on its own, not through it, once
            // the file is known to hold that many bytes (a damaged length
            // must not allocate gigabytes).
            if payload_at + len as u64 > self.file.metadata()?.len() {
                return Err(self.error(
                    offset,
                    ErrorKind::InvalidData,
                    "not a record (its length passes the end)",
                ));
            }
            let mut payload = vec![0; len];
            self.file.read_exact_at(&mut payload, payload_at)?;
            Bytes::from(payload)
        };
        if !header.verifies(self.segment, offset, &payload) {
            return Err(self.error(
                offset,
                ErrorKind::InvalidData,
                "checksum mismatch (not this record, or damaged)",
            ));
        }
        Ok(Record {
            priority: header.priority,
            kind: header.kind,
            payload,
        })
    }

    fn window_slice(&self, at: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(at.checked_sub(self.window_start)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.window_len).then(|| &self.window[start..end])
    }

    fn header_at(&self, at: u64) -> Option<[u8; RECORD_HEADER_LEN as usize]> {
        self.window_slice(at, RECORD_HEADER_LEN as usize)?
            .try_into()
            .ok()
    }

    /// Reads the window from `at`, durable bytes only.
    fn fill(&mut self, at: u64, durable_end: u64) -> io::Result<()> {
        if self.window.is_empty() {
            self.window = vec![0; WINDOW];
        }
        let want = (durable_end.saturating_sub(at)).min(WINDOW as u64) as usize;
        self.window_start = at;
        self.window_len = 0;
        while self.window_len < want {
            match self.file.read_at(
                &mut self.window[self.window_len..want],
                at + self.window_len as u64,
            ) {
                Ok(0) => break,
                Ok(n) => self.window_len += n,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn error(&self, offset: u32, kind: ErrorKind, what: &str) -> io::Error {
        io::Error::new(
            kind,
            format!("{} at offset {offset}: {what}", self.path.display()),
        )
    }
}
