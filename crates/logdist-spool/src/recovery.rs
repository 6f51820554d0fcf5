//! Recovery at open: what the directory holds, checked record by record.
//!
//! - Segments are read in number order. Each record's header, length
//!   (within the file) and CRC are checked; the first record that fails,
//!   or is incomplete, ends the segment: the file is cut there (a torn
//!   tail: logged, counted). Past a bad record nothing can be trusted to be
//!   a record boundary, so this holds for older segments too, where it
//!   means damage rather than a crash mid-write.
//! - A segment's `.ack` entries that check out mark records done; damaged
//!   entries are ignored (their records come back: at least once).
//! - A segment left with no live record is deleted, `.seg` then `.ack`;
//!   so is a `.seg` shorter than its header (created, then a crash), and an
//!   `.ack` whose segment is gone (a crash between the two deletions).
//! - A `.seg` whose header is not ours (magic, version, or another
//!   segment's number) is skipped and left alone, counted and logged: it may
//!   be an operator's copy or a newer logdist's, not ours to delete. Names
//!   that are not `<20 digits>.seg|.ack` are not looked at.
//! - New appends go to a new segment numbered past every segment or ack
//!   file seen, so an old segment, and its acknowledgement entries, are
//!   never appended to again (a cut record's offset is never reused).
//!
//! Content never panics or fails the open: only I/O errors do.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::format::{
    self, ACK_ENTRY_LEN, HeaderCheck, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN,
};
use crate::segment::{self, Segment, SpoolFile, ack_path, segment_path};
use crate::{RecordId, Recovered};

/// Reads segments in chunks this big.
const SCAN_BUFFER: usize = 1 << 20;

/// What recovery leaves for the spool to start from.
#[derive(Debug)]
pub(crate) struct RecoveredDir {
    pub recovered: Recovered,
    /// Segments holding live records.
    pub segments: BTreeMap<u32, Segment>,
    /// The segment new appends go to.
    pub next_segment: u32,
    /// Bytes of the segments kept.
    pub bytes: u64,
    pub live_records: u64,
}

pub(crate) fn recover(dir: &Path) -> io::Result<RecoveredDir> {
    let mut segments = BTreeSet::new();
    let mut acks = BTreeSet::new();
    let mut out = RecoveredDir {
        recovered: Recovered::default(),
        segments: BTreeMap::new(),
        next_segment: 1,
        bytes: 0,
        live_records: 0,
    };
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        match segment::parse_name(&entry.file_name()) {
            Some(SpoolFile::Segment(n)) if entry.file_type()?.is_file() => {
                segments.insert(n);
            }
            Some(SpoolFile::Segment(n)) => {
                tracing::warn!(
                    file = %entry.path().display(),
                    "named like a spool segment but not a regular file; left alone"
                );
                out.recovered.skipped_segments += 1;
                out.next_segment = out.next_segment.max(after(n)?);
            }
            Some(SpoolFile::Ack(n)) => {
                acks.insert(n);
            }
            None => {}
        }
    }
    if let Some(&highest) = segments.iter().chain(&acks).max() {
        out.next_segment = out.next_segment.max(after(highest)?);
    }
    for &n in acks.difference(&segments) {
        let path = ack_path(dir, n);
        tracing::warn!(file = %path.display(), "acknowledgements of a segment that is gone; deleted");
        if let Err(err) = segment::remove_if_present(&path) {
            tracing::warn!(file = %path.display(), %err, "cannot delete a stray acknowledgement file");
        }
    }
    let last = segments.last().copied();
    for &n in &segments {
        recover_segment(dir, n, Some(n) == last, &mut out).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("{}: {err}", segment_path(dir, n).display()),
            )
        })?;
    }
    Ok(out)
}

fn after(segment: u32) -> io::Result<u32> {
    segment.checked_add(1).ok_or_else(|| {
        io::Error::other("segment numbers are exhausted (a segment numbered 4294967295)")
    })
}

fn recover_segment(dir: &Path, n: u32, is_last: bool, out: &mut RecoveredDir) -> io::Result<()> {
    let path = segment_path(dir, n);
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    let mut header = [0; SEGMENT_HEADER_LEN as usize];
    let header_len = len.min(SEGMENT_HEADER_LEN) as usize;
    file.read_exact_at(&mut header[..header_len], 0)?;
    match format::check_segment_header(&header[..header_len], n) {
        HeaderCheck::Valid => {}
        HeaderCheck::Torn => {
            if len > 0 {
                tracing::warn!(file = %path.display(), bytes = len, "segment cut inside its header (a crash as it was created); deleted");
                out.recovered.torn_tails += 1;
                out.recovered.torn_bytes += len;
            }
            delete(dir, n);
            return Ok(());
        }
        HeaderCheck::Foreign(why) => {
            tracing::warn!(file = %path.display(), why, "not a segment of this spool; left alone");
            out.recovered.skipped_segments += 1;
            return Ok(());
        }
    }
    let scan = scan(&file, n, len)?;
    if scan.end < len {
        let cut = len - scan.end;
        if is_last {
            tracing::warn!(file = %path.display(), offset = scan.end, bytes = cut, "torn tail (an incomplete or corrupt record, as a crash leaves): cut");
        } else {
            tracing::warn!(file = %path.display(), offset = scan.end, bytes = cut, "corrupt record in an older segment: cut there, the records after it are lost");
        }
        file.set_len(scan.end)?;
        out.recovered.torn_tails += 1;
        out.recovered.torn_bytes += cut;
    }
    let (acked, ack_pos) = read_acks(dir, n)?;
    let mut live = Vec::new();
    for record in &scan.records {
        if acked.binary_search(&record.offset).is_err() {
            live.push(record.offset);
            out.recovered.records.push((
                RecordId(u64::from(n) << 32 | u64::from(record.offset)),
                record.priority,
            ));
        }
    }
    if live.is_empty() {
        delete(dir, n);
        return Ok(());
    }
    let first_ms = scan.records.first().map_or(0, |r| r.appended_ms);
    out.bytes += scan.end;
    out.live_records += live.len() as u64;
    out.segments
        .insert(n, Segment::recovered(live, scan.end, first_ms, ack_pos));
    Ok(())
}

/// Deletes a segment with nothing live, `.seg` first: a crash in between
/// leaves a stray `.ack`, which the next recovery deletes.
fn delete(dir: &Path, n: u32) {
    for path in [segment_path(dir, n), ack_path(dir, n)] {
        if let Err(err) = segment::remove_if_present(&path) {
            tracing::warn!(file = %path.display(), %err, "cannot delete a spent spool file");
            return;
        }
    }
}

#[derive(Debug)]
struct Scanned {
    offset: u32,
    priority: u8,
    appended_ms: u64,
}

#[derive(Debug)]
struct Scan {
    records: Vec<Scanned>,
    /// Where the valid records end.
    end: u64,
}

/// Reads segment `n` (`len` bytes, header checked) record by record up to
/// the first that is incomplete or does not check out.
fn scan(file: &File, n: u32, len: u64) -> io::Result<Scan> {
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
    reader.seek(SeekFrom::Start(SEGMENT_HEADER_LEN))?;
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    while let Some(record) = next_record(&mut reader, n, offset, len)? {
        offset += RECORD_HEADER_LEN + u64::from(record.1);
        records.push(record.0);
    }
    Ok(Scan {
        records,
        end: offset,
    })
}

/// The record at `offset` and its payload length, if it is whole and
/// intact; the reader is positioned at `offset`.
fn next_record(
    reader: &mut BufReader<&File>,
    n: u32,
    offset: u64,
    len: u64,
) -> io::Result<Option<(Scanned, u32)>> {
    let Ok(offset32) = u32::try_from(offset) else {
        return Ok(None);
    };
    if len - offset < RECORD_HEADER_LEN {
        return Ok(None);
    }
    let mut bytes = [0; RECORD_HEADER_LEN as usize];
    reader.read_exact(&mut bytes)?;
    let Some(header) = RecordHeader::decode(&bytes) else {
        return Ok(None);
    };
    if len - offset - RECORD_HEADER_LEN < u64::from(header.len) {
        return Ok(None);
    }
    let mut hasher = header.crc_hasher(n, offset32);
    let mut left = header.len as usize;
    while left > 0 {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            // Shorter than its length said: the file shrank under us.
            return Ok(None);
        }
        let take = left.min(chunk.len());
        hasher.update(&chunk[..take]);
        reader.consume(take);
        left -= take;
    }
    if hasher.finalize() != header.crc {
        return Ok(None);
    }
    Ok(Some((
        Scanned {
            offset: offset32,
            priority: header.priority,
            appended_ms: header.appended_ms,
        },
        header.len,
    )))
}

/// The offsets segment `n`'s ack file acknowledges (sorted), and where its
/// next entry goes: past the last whole entry, over a torn one.
fn read_acks(dir: &Path, n: u32) -> io::Result<(Vec<u32>, u64)> {
    let path = ack_path(dir, n);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => return Err(err),
    };
    let len = file.metadata()?.len();
    let whole = len - len % ACK_ENTRY_LEN as u64;
    if whole < len {
        tracing::warn!(file = %path.display(), bytes = len - whole, "torn acknowledgement entry ignored");
    }
    let mut reader = BufReader::with_capacity(64 * 1024, file).take(whole);
    let entries = whole / ACK_ENTRY_LEN as u64;
    // The file's length is not trusted for an allocation.
    let mut acked = Vec::with_capacity(entries.min(1 << 20) as usize);
    let mut damaged = 0u64;
    let mut entry = [0; ACK_ENTRY_LEN];
    for _ in 0..entries {
        reader.read_exact(&mut entry)?;
        match format::decode_ack_entry(n, &entry) {
            Some(offset) => acked.push(offset),
            None => damaged += 1,
        }
    }
    if damaged > 0 {
        tracing::warn!(file = %path.display(), entries = damaged, "damaged acknowledgement entries ignored (their records are delivered again)");
    }
    acked.sort_unstable();
    acked.dedup();
    Ok((acked, whole))
}
