//! The bytes on disk: segment header, record layout, acknowledgement entries
//! and their checksums. Everything is little endian.
//!
//! # Segment file `<20-digit number>.seg`
//!
//! | bytes | field                                              |
//! |-------|----------------------------------------------------|
//! | 8     | magic `LDSPOOL1`                                   |
//! | 4     | `version: u32` = 1                                 |
//! | 4     | `segment: u32`, the number in the file's name      |
//!
//! then records back to back, the first at offset 16:
//!
//! | bytes | field                                                        |
//! |-------|--------------------------------------------------------------|
//! | 4     | `len: u32`, payload bytes                                    |
//! | 4     | `crc: u32`, CRC-32 (IEEE) of the segment number (u32), the record's offset (u32), `priority`, `kind`, `appended_ms` and the payload |
//! | 1     | `priority: u8`                                               |
//! | 1     | `kind: u8`, the caller's tag                                 |
//! | 2     | `reserved: u16` = 0                                          |
//! | 8     | `appended_ms: u64`, unix milliseconds when the writer took it |
//! | len   | payload                                                      |
//!
//! The header carries the segment number so that a file renamed or copied
//! into another spool is refused rather than read as someone else's
//! records; the CRC covers the segment number and offset for the same
//! reason one record further down: a record copied to another place (a
//! stale block, a misdirected write) does not validate there.
//!
//! # Acknowledgement file `<20-digit number>.ack`
//!
//! Entries of 8 bytes, appended by the writer in any order, no header:
//!
//! | bytes | field                                                   |
//! |-------|---------------------------------------------------------|
//! | 4     | `offset: u32` of the acknowledged record                |
//! | 4     | `check: u32`, CRC-32 of the segment number (u32) and `offset` |
//!
//! An entry whose check does not match is ignored (its record is delivered
//! again: at least once), as are the bytes of a torn last entry. A single
//! flipped bit is always caught (CRC-32 detects every single-bit error), so
//! a damaged entry never acknowledges another record.

use crc32fast::Hasher;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"LDSPOOL1";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
pub(crate) const RECORD_HEADER_LEN: u64 = 20;
pub(crate) const ACK_ENTRY_LEN: usize = 8;

/// The first bytes of segment `segment`.
pub(crate) fn segment_header(segment: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&segment.to_le_bytes());
    header
}

/// What the first bytes of a `.seg` file say about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// Ours, this version, this segment.
    Valid,
    /// Shorter than a header but what is there is the start of ours: the
    /// writer created the file and died before the header was on disk.
    Torn,
    /// Not one of our segments (why, for the log): left alone.
    Foreign(&'static str),
}

/// Checks the start of a file named as segment `segment` (`bytes` is the
/// whole file when it is shorter than a header).
pub(crate) fn check_segment_header(bytes: &[u8], segment: u32) -> HeaderCheck {
    let expected = segment_header(segment);
    if bytes.len() < expected.len() {
        return if expected.starts_with(bytes) {
            HeaderCheck::Torn
        } else {
            HeaderCheck::Foreign("too short for a segment header and not the start of one")
        };
    }
    if bytes[..8] != SEGMENT_MAGIC {
        HeaderCheck::Foreign("no LDSPOOL1 magic")
    } else if bytes[8..12] != expected[8..12] {
        HeaderCheck::Foreign("unknown format version (written by another logdist version?)")
    } else if bytes[12..16] != expected[12..16] {
        HeaderCheck::Foreign("its header names another segment (renamed or copied?)")
    } else {
        HeaderCheck::Valid
    }
}

/// A record's fixed part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub len: u32,
    pub crc: u32,
    pub priority: u8,
    pub kind: u8,
    pub appended_ms: u64,
}

impl RecordHeader {
    pub(crate) fn encode(&self) -> [u8; RECORD_HEADER_LEN as usize] {
        let mut out = [0; RECORD_HEADER_LEN as usize];
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..8].copy_from_slice(&self.crc.to_le_bytes());
        out[8] = self.priority;
        out[9] = self.kind;
        // out[10..12]: reserved, zero.
        out[12..20].copy_from_slice(&self.appended_ms.to_le_bytes());
        out
    }

    /// `None` when the reserved bits are set: not a record this version
    /// wrote (the cheapest garbage check before the CRC).
    pub(crate) fn decode(bytes: &[u8; RECORD_HEADER_LEN as usize]) -> Option<RecordHeader> {
        if bytes[10..12] != [0, 0] {
            return None;
        }
        Some(RecordHeader {
            len: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            crc: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            priority: bytes[8],
            kind: bytes[9],
            appended_ms: u64::from_le_bytes([
                bytes[12], bytes[13], bytes[14], bytes[15], bytes[16], bytes[17], bytes[18],
                bytes[19],
            ]),
        })
    }

    /// The checksum state before the payload: feed the payload (in pieces
    /// if need be) and compare `finalize()` with `crc`.
    pub(crate) fn crc_hasher(&self, segment: u32, offset: u32) -> Hasher {
        let mut hasher = Hasher::new();
        hasher.update(&segment.to_le_bytes());
        hasher.update(&offset.to_le_bytes());
        hasher.update(&[self.priority, self.kind]);
        hasher.update(&self.appended_ms.to_le_bytes());
        hasher
    }

    /// Whether `payload` is this record's, at `segment`/`offset`.
    pub(crate) fn verifies(&self, segment: u32, offset: u32, payload: &[u8]) -> bool {
        let mut hasher = self.crc_hasher(segment, offset);
        hasher.update(payload);
        payload.len() == self.len as usize && hasher.finalize() == self.crc
    }
}

/// Appends the record at `segment`/`offset` to `out`: header, then payload.
/// The payload's length must fit a u32 (the caller checked).
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    segment: u32,
    offset: u32,
    priority: u8,
    kind: u8,
    appended_ms: u64,
    payload: &[u8],
) {
    let mut header = RecordHeader {
        len: payload.len() as u32,
        crc: 0,
        priority,
        kind,
        appended_ms,
    };
    let mut hasher = header.crc_hasher(segment, offset);
    hasher.update(payload);
    header.crc = hasher.finalize();
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
}

fn ack_check(segment: u32, offset: u32) -> u32 {
    let mut hasher = Hasher::new();
    hasher.update(&segment.to_le_bytes());
    hasher.update(&offset.to_le_bytes());
    hasher.finalize()
}

/// The entry acknowledging the record at `offset` of `segment`.
pub(crate) fn ack_entry(segment: u32, offset: u32) -> [u8; ACK_ENTRY_LEN] {
    let mut entry = [0; ACK_ENTRY_LEN];
    entry[..4].copy_from_slice(&offset.to_le_bytes());
    entry[4..].copy_from_slice(&ack_check(segment, offset).to_le_bytes());
    entry
}

/// The offset an entry of `segment`'s ack file acknowledges, if it is intact.
pub(crate) fn decode_ack_entry(segment: u32, entry: &[u8; ACK_ENTRY_LEN]) -> Option<u32> {
    let offset = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let check = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
    (check == ack_check(segment, offset)).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_is_bound_to_its_place() {
        let mut out = Vec::new();
        encode_record(&mut out, 7, 16, 3, 9, 1_700_000_000_000, b"hello");
        assert_eq!(out.len(), RECORD_HEADER_LEN as usize + 5);
        let header_bytes: [u8; 20] = out[..20].try_into().unwrap();
        let header = RecordHeader::decode(&header_bytes).unwrap();
        assert_eq!(header.len, 5);
        assert_eq!((header.priority, header.kind), (3, 9));
        assert_eq!(header.appended_ms, 1_700_000_000_000);
        assert!(header.verifies(7, 16, b"hello"));
        assert!(!header.verifies(8, 16, b"hello"), "another segment");
        assert!(!header.verifies(7, 36, b"hello"), "another offset");
        assert!(!header.verifies(7, 16, b"hellO"));
        assert!(!header.verifies(7, 16, b"hell"));
    }

    #[test]
    fn reserved_bits_are_refused() {
        let mut bytes = RecordHeader {
            len: 1,
            crc: 2,
            priority: 3,
            kind: 4,
            appended_ms: 5,
        }
        .encode();
        bytes[11] = 1;
        assert_eq!(RecordHeader::decode(&bytes), None);
    }

    #[test]
    fn segment_header_checks() {
        let header = segment_header(42);
        assert_eq!(check_segment_header(&header, 42), HeaderCheck::Valid);
        assert!(matches!(
            check_segment_header(&header, 43),
            HeaderCheck::Foreign(_)
        ));
        for len in 0..header.len() {
            assert_eq!(
                check_segment_header(&header[..len], 42),
                HeaderCheck::Torn,
                "{len}"
            );
        }
        assert!(matches!(
            check_segment_header(b"LDSPOOL", 42),
            HeaderCheck::Torn
        ));
        assert!(matches!(
            check_segment_header(b"hello", 42),
            HeaderCheck::Foreign(_)
        ));
        let mut other_version = header;
        other_version[8] = 2;
        assert!(matches!(
            check_segment_header(&other_version, 42),
            HeaderCheck::Foreign(_)
        ));
    }

    #[test]
    fn every_single_bit_flip_of_an_ack_entry_is_caught() {
        let entry = ack_entry(5, 1234);
        assert_eq!(decode_ack_entry(5, &entry), Some(1234));
        assert_eq!(decode_ack_entry(6, &entry), None, "another segment's");
        for bit in 0..64 {
            let mut flipped = entry;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode_ack_entry(5, &flipped), None, "bit {bit}");
        }
    }
}
