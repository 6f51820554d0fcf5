//! Reading log files line by line, once (batch) or following them
//! (continuous), each file on its own thread feeding one bounded channel.
//!
//! Memory stays bounded whatever the file size: a reader holds one read chunk
//! plus at most one line of `max_line_bytes` (longer lines are cut), and the
//! channel holds at most its capacity in lines; when it is full the reader
//! waits (the file itself is the overflow buffer).
//!
//! Following, at each end of file the path is looked at again (every
//! `poll_interval`):
//! * another file (device, inode) now has the name → **rotation**: the rest of
//!   the old file is read to its end, then the new one from offset 0;
//! * the same file is shorter than what was read → **truncation**: read again
//!   from offset 0;
//! * the name is gone → keep the old file and wait for a new one.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::checkpoint::{FileId, Position};
use crate::line_format::Formatter;

/// Bytes read from a file at a time.
const CHUNK: usize = 64 * 1024;

/// One formatted line ready to send.
#[derive(Clone, Debug)]
pub struct Line {
    /// Index of the source (the path as configured) it came from.
    pub source: usize,
    /// The file it was read from.
    pub id: FileId,
    /// Offset just past its `\n`: where to resume once it is acknowledged.
    pub end: u64,
    /// The NDJSON message, without `\n`.
    pub message: Bytes,
}

/// What the reader threads send to the shipper.
#[derive(Debug)]
pub enum Event {
    Line(Line),
    /// A file could not be read; its reader has stopped.
    Failed {
        source: usize,
        error: String,
    },
}

/// Tells reader threads to stop, and wakes them from their poll sleep.
#[derive(Default)]
pub struct StopFlag {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopFlag {
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps up to `d`; true if stopped (before or during the sleep).
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// How the readers read.
#[derive(Clone, Debug)]
pub struct TailSettings {
    /// Keep following the file (continuous mode) instead of stopping at its end.
    pub follow: bool,
    pub poll_interval: Duration,
    pub max_line_bytes: usize,
    /// Following, a file without checkpoint: start at its current end.
    pub start_at_end: bool,
}

/// One file to read.
#[derive(Clone, Debug)]
pub struct Source {
    pub index: usize,
    pub path: PathBuf,
    /// Where the checkpoint says shipping of this path stands.
    pub resume: Option<Position>,
}

/// Starts the reader thread of `source`. It ends at end of file (batch),
/// when `stop` is raised, or when the receiver is gone.
pub fn spawn(
    source: Source,
    settings: TailSettings,
    formatter: Arc<Formatter>,
    tx: mpsc::Sender<Event>,
    stop: Arc<StopFlag>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("tail-{}", source.index))
        .spawn(move || {
            let mut tail = Tail {
                source: &source,
                settings: &settings,
                formatter: &formatter,
                tx: &tx,
                stop: &stop,
            };
            if let Err(error) = tail.run()
                && error.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(file = %source.path.display(), %error, "cannot read log file");
                let _ = tx.blocking_send(Event::Failed {
                    source: source.index,
                    error: error.to_string(),
                });
            }
        })
}

struct Tail<'a> {
    source: &'a Source,
    settings: &'a TailSettings,
    formatter: &'a Formatter,
    tx: &'a mpsc::Sender<Event>,
    stop: &'a StopFlag,
}

/// Returned (as `Interrupted`) when the shipper no longer wants lines.
fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "stopped")
}

impl Tail<'_> {
    fn run(&mut self) -> io::Result<()> {
        let path = &self.source.path;
        let mut reader = match self.source.resume {
            Some(position) => self.resume(position)?,
            None => None,
        };
        if reader.is_none() {
            reader = self.open_fresh(self.source.resume.is_none())?;
        }
        let Some(mut reader) = reader else {
            return Ok(()); // stopped while waiting for the file
        };
        loop {
            self.ship_complete_lines(&mut reader)?;
            if !self.settings.follow {
                return self.ship_rest(&mut reader);
            }
            match fs::metadata(path) {
                Ok(meta) if FileId::of(&meta) != reader.id => {
                    // Rotated: finish the old file (lines appended before the
                    // rename included), then switch to the new one.
                    self.ship_complete_lines(&mut reader)?;
                    self.ship_rest(&mut reader)?;
                    match LineReader::open(path, 0, self.settings.max_line_bytes) {
                        Ok(new) => {
                            tracing::info!(file = %path.display(), "file rotated: following the new file");
                            reader = new;
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(meta) if meta.len() < reader.read_pos() => {
                    tracing::info!(file = %path.display(), size = meta.len(), was = reader.read_pos(),
                        "file truncated: reading again from the start");
                    reader.rewind()?;
                    continue;
                }
                _ => {}
            }
            if self.stop.sleep(self.settings.poll_interval) {
                return Err(stopped());
            }
        }
    }

    /// Opens the file where the checkpoint left it. When the name now
    /// belongs to another file, the checkpointed file is looked for (by
    /// identity) in the same directory under its rotated name and its rest is
    /// shipped first; `None` then means "start the current file afresh".
    fn resume(&mut self, position: Position) -> io::Result<Option<LineReader>> {
        let path = &self.source.path;
        let max = self.settings.max_line_bytes;
        match fs::metadata(path) {
            Ok(meta) if FileId::of(&meta) == position.id => {
                if meta.len() >= position.offset {
                    tracing::info!(file = %path.display(), offset = position.offset, "resuming from checkpoint");
                    return LineReader::open(path, position.offset, max).map(Some);
                }
                tracing::warn!(file = %path.display(), size = meta.len(), checkpoint = position.offset,
                    "file is shorter than its checkpoint (truncated): starting from the beginning");
                return LineReader::open(path, 0, max).map(Some);
            }
            Ok(_) | Err(_) => {}
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Some(rotated) = find_by_id(dir, position.id) {
            let size = fs::metadata(&rotated)?.len();
            if size >= position.offset {
                tracing::info!(file = %path.display(), rotated = %rotated.display(), offset = position.offset,
                    "file was rotated since the checkpoint: shipping the rest of the old file first");
                let mut old = LineReader::open(&rotated, position.offset, max)?;
                self.ship_complete_lines(&mut old)?;
                self.ship_rest(&mut old)?;
            }
        } else {
            tracing::warn!(file = %path.display(), "checkpointed file is gone: starting the current file from the beginning");
        }
        match LineReader::open(path, 0, max) {
            Ok(reader) => Ok(Some(reader)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.settings.follow => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the file from its beginning (or, following a file that exists
    /// at start and `may_start_at_end`, from its end); following, waits for
    /// it to exist.
    fn open_fresh(&mut self, may_start_at_end: bool) -> io::Result<Option<LineReader>> {
        let path = &self.source.path;
        let max = self.settings.max_line_bytes;
        let mut first = may_start_at_end;
        loop {
            match File::open(path) {
                Ok(file) => {
                    let at_end = self.settings.follow && self.settings.start_at_end && first;
                    let offset = if at_end { file.metadata()?.len() } else { 0 };
                    return LineReader::from_file(file, offset, max).map(Some);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.settings.follow => {
                    if first {
                        tracing::info!(file = %path.display(), "waiting for the file to appear");
                        first = false;
                    }
                    if self.stop.sleep(self.settings.poll_interval) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn ship_complete_lines(&mut self, reader: &mut LineReader) -> io::Result<()> {
        while let Some((raw, end)) = reader.next_line()? {
            self.ship(reader.id, &raw, end)?;
        }
        Ok(())
    }

    /// Ships the unterminated last line, if any (end of a batch file or of a
    /// rotated file).
    fn ship_rest(&mut self, reader: &mut LineReader) -> io::Result<()> {
        if let Some((raw, end)) = reader.take_rest() {
            self.ship(reader.id, &raw, end)?;
        }
        Ok(())
    }

    fn ship(&mut self, id: FileId, raw: &[u8], end: u64) -> io::Result<()> {
        if self.stop.is_stopped() {
            return Err(stopped());
        }
        let Some(message) = self.formatter.format(raw) else {
            return Ok(());
        };
        let line = Line {
            source: self.source.index,
            id,
            end,
            message,
        };
        self.tx
            .blocking_send(Event::Line(line))
            .map_err(|_| stopped())
    }
}

/// A file in `dir` with identity `id`, if there is one.
fn find_by_id(dir: &Path, id: FileId) -> Option<PathBuf> {
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let meta = entry.metadata().ok()?;
        (meta.is_file() && FileId::of(&meta) == id).then(|| entry.path())
    })
}

/// Splits a file into lines, keeping track of offsets.
pub struct LineReader {
    file: File,
    pub id: FileId,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    /// `buf[pos..scanned]` holds no `\n`.
    scanned: usize,
    /// The first `max_line` bytes of a line too long to keep whole.
    overlong: Option<Vec<u8>>,
    max_line: usize,
}

impl LineReader {
    pub fn open(path: &Path, offset: u64, max_line: usize) -> io::Result<LineReader> {
        LineReader::from_file(File::open(path)?, offset, max_line)
    }

    fn from_file(mut file: File, offset: u64, max_line: usize) -> io::Result<LineReader> {
        let id = FileId::of(&file.metadata()?);
        file.seek(SeekFrom::Start(offset))?;
        Ok(LineReader {
            file,
            id,
            buf: Vec::with_capacity(CHUNK),
            buf_start: offset,
            pos: 0,
            scanned: 0,
            overlong: None,
            max_line,
        })
    }

    /// Offset of the next byte to read from the file.
    pub fn read_pos(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Starts again at offset 0 (after a truncation).
    pub fn rewind(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.buf.clear();
        self.buf_start = 0;
        self.pos = 0;
        self.scanned = 0;
        self.overlong = None;
        Ok(())
    }

    /// The next complete line (without `\n`) and the offset past its `\n`;
    /// `None` when the file has no complete line left (for now).
    pub fn next_line(&mut self) -> io::Result<Option<(Vec<u8>, u64)>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
                let newline = self.scanned + i;
                let mut line = match self.overlong.take() {
                    Some(kept) => kept,
                    None => self.buf[self.pos..newline].to_vec(),
                };
                line.truncate(self.max_line);
                self.pos = newline + 1;
                self.scanned = self.pos;
                return Ok(Some((line, self.buf_start + self.pos as u64)));
            }
            self.scanned = self.buf.len();
            let pending = self.buf.len() - self.pos;
            if self.overlong.is_some() {
                self.pos = self.buf.len(); // discarding the rest of an overlong line
            } else if pending > self.max_line {
                tracing::warn!(
                    max = self.max_line,
                    "line longer than the maximum: cutting it"
                );
                self.overlong = Some(self.buf[self.pos..self.pos + self.max_line].to_vec());
                self.pos = self.buf.len();
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// The unterminated rest of the file, consumed.
    pub fn take_rest(&mut self) -> Option<(Vec<u8>, u64)> {
        let rest = match self.overlong.take() {
            Some(kept) => kept,
            None => self.buf[self.pos..].to_vec(),
        };
        self.pos = self.buf.len();
        self.scanned = self.pos;
        (!rest.is_empty()).then(|| (rest, self.read_pos()))
    }

    /// Drops consumed bytes and reads one chunk; returns the bytes read.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.buf_start += self.pos as u64;
            self.scanned -= self.pos;
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        let n = loop {
            match self.file.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(reader: &mut LineReader) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Some((l, end)) = reader.next_line().unwrap() {
            out.push((String::from_utf8(l).unwrap(), end));
        }
        out
    }

    #[test]
    fn offsets_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "ab\n\ncde\nfg").unwrap();
        let mut r = LineReader::open(&path, 0, 100).unwrap();
        assert_eq!(
            lines(&mut r),
            [("ab".into(), 3), ("".into(), 4), ("cde".into(), 8)]
        );
        // The unterminated "fg" waits for its newline...
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"h\nij").unwrap();
        assert_eq!(lines(&mut r), [("fgh".to_string(), 12)]);
        // ...or is taken as is at the end.
        assert_eq!(r.take_rest(), Some((b"ij".to_vec(), 14)));
        assert_eq!(r.take_rest(), None);

        let mut r = LineReader::open(&path, 8, 100).unwrap();
        assert_eq!(lines(&mut r), [("fgh".to_string(), 12)]);
    }

    #[test]
    fn long_lines_are_cut_and_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long = "x".repeat(5 * CHUNK);
        fs::write(&path, format!("a\n{long}\nb\n")).unwrap();
        let mut r = LineReader::open(&path, 0, 1000).unwrap();
        let got = lines(&mut r);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].0, "x".repeat(1000));
        assert_eq!(got[1].1, 2 + long.len() as u64 + 1);
        assert_eq!(got[2], ("b".to_string(), got[1].1 + 2));
        assert!(
            r.buf.capacity() <= 4 * CHUNK,
            "buffer grew to {}",
            r.buf.capacity()
        );
    }
}
