//! Segment files: their names, and what the writer keeps in memory about
//! each one (which records are still live) to know when it can go.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// `<number, 20 digits>.seg`: names sort in number order, and the width
/// fits any u64 should ids ever grow.
pub(crate) fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

/// `<number, 20 digits>.ack`: the segment's acknowledgement entries.
pub(crate) fn ack_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:020}.ack"))
}

/// A file of ours in the spool directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpoolFile {
    Segment(u32),
    Ack(u32),
}

/// Which of our files `name` is; `None` for anything else (the lock file,
/// an operator's notes, a number past u32: not ours, left alone).
pub(crate) fn parse_name(name: &OsStr) -> Option<SpoolFile> {
    let name = name.to_str()?;
    let (number, extension) = name.split_once('.')?;
    if number.len() != 20 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u32 = number.parse().ok()?;
    match extension {
        "seg" => Some(SpoolFile::Segment(number)),
        "ack" => Some(SpoolFile::Ack(number)),
        _ => None,
    }
}

/// Makes the directory's entries (a created or removed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `path`; already gone is fine.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// The writer's view of one segment file: its records' offsets in order and
/// which are acknowledged. Four bytes and a bit a record, so millions of
/// records cost a few megabytes; an acknowledgement is a binary search.
#[derive(Debug)]
pub(crate) struct Segment {
    offsets: Vec<u32>,
    /// A bit per entry of `offsets`, set once acknowledged.
    acked: Vec<u64>,
    live: u64,
    /// Bytes of the file (header included).
    pub size: u64,
    /// `appended_ms` of its first record: how old the segment is.
    pub first_ms: u64,
    /// Where the next acknowledgement entry goes in the `.ack` file (a torn
    /// entry found at recovery is overwritten).
    pub ack_pos: u64,
    /// Acknowledgement entries not written yet (a failed write is retried).
    pub ack_buf: Vec<u8>,
}

impl Segment {
    /// A segment created by this writer, holding no record yet.
    pub(crate) fn new(size: u64, first_ms: u64) -> Segment {
        Segment {
            offsets: Vec::new(),
            acked: Vec::new(),
            live: 0,
            size,
            first_ms,
            ack_pos: 0,
            ack_buf: Vec::new(),
        }
    }

    /// A segment found at open: `live` are the offsets of its records not
    /// acknowledged (ascending); acknowledged ones are left out, so
    /// acknowledging them again is a no-op.
    pub(crate) fn recovered(live: Vec<u32>, size: u64, first_ms: u64, ack_pos: u64) -> Segment {
        let mut segment = Segment::new(size, first_ms);
        segment.acked = vec![0; live.len().div_ceil(64)];
        segment.live = live.len() as u64;
        segment.offsets = live;
        segment.ack_pos = ack_pos;
        segment
    }

    /// A record was written at `offset`, the file now ends at `end`.
    /// Offsets come in increasing order.
    pub(crate) fn push(&mut self, offset: u32, end: u64) {
        let index = self.offsets.len();
        self.offsets.push(offset);
        if index.is_multiple_of(64) {
            self.acked.push(0);
        }
        self.live += 1;
        self.size = end;
    }

    /// Acknowledges the record at `offset`: true if it was live, false if
    /// there is no such record or it was acknowledged before.
    pub(crate) fn ack(&mut self, offset: u32) -> bool {
        let Ok(index) = self.offsets.binary_search(&offset) else {
            return false;
        };
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.acked[word] & bit != 0 {
            return false;
        }
        self.acked[word] |= bit;
        self.live -= 1;
        true
    }

    /// Records not acknowledged.
    pub(crate) fn live(&self) -> u64 {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let dir = Path::new("/spool");
        let seg = segment_path(dir, 42);
        assert_eq!(seg, Path::new("/spool/00000000000000000042.seg"));
        assert_eq!(
            parse_name(seg.file_name().unwrap()),
            Some(SpoolFile::Segment(42))
        );
        assert_eq!(
            parse_name(ack_path(dir, 7).file_name().unwrap()),
            Some(SpoolFile::Ack(7))
        );
        for stranger in [
            "LOCK",
            "42.seg",
            "0000000000000000042.seg",
            "00000000000000000042.seg.tmp",
            "00000000000000000042.log",
            "0000000000000000004x.seg",
            "00000000004294967296.seg",
            "+0000000000000000042.seg",
        ] {
            assert_eq!(parse_name(OsStr::new(stranger)), None, "{stranger}");
        }
    }

    #[test]
    fn acks_count_once_and_only_for_records() {
        let mut segment = Segment::new(16, 0);
        for i in 0..200u32 {
            segment.push(16 + i * 30, 16 + (i as u64 + 1) * 30);
        }
        assert_eq!(segment.live(), 200);
        assert!(segment.ack(16));
        assert!(!segment.ack(16), "twice");
        assert!(!segment.ack(17), "not a record");
        assert!(segment.ack(16 + 199 * 30));
        assert_eq!(segment.live(), 198);
        for i in 0..200u32 {
            segment.ack(16 + i * 30);
        }
        assert_eq!(segment.live(), 0);
    }

    #[test]
    fn recovered_segments_know_only_live_records() {
        let mut segment = Segment::recovered(vec![16, 100, 300], 400, 5, 24);
        assert_eq!(segment.live(), 3);
        assert!(!segment.ack(50), "acknowledged before the restart");
        assert!(segment.ack(100));
        assert_eq!(segment.live(), 2);
    }
}
