//! Recovery from damaged directories: torn tails at every offset, flipped
//! bits in segments and acknowledgement files, files that are not ours.

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use bytes::Bytes;
use common::*;
use logdist_spool::{Record, RecordId, SpoolConfig};

/// Writes `count` small records (`max_len` payload bytes at most) to a
/// fresh spool in `dir` with small segments, acknowledges those `ack`
/// picks, and closes it; all records written, in order.
fn write_spool(
    dir: &Path,
    count: usize,
    max_len: usize,
    ack: impl Fn(usize) -> bool,
) -> (SpoolConfig, Vec<(RecordId, Record)>) {
    let mut config = config(dir);
    config.segment_bytes = 200;
    let (spool, _) = open(&config);
    let written: Vec<(RecordId, Record)> = (0..count)
        .map(|i| {
            let record = record(i, max_len);
            (spool.try_append(&record).unwrap(), record)
        })
        .collect();
    let acked: Vec<RecordId> = written
        .iter()
        .enumerate()
        .filter(|(i, _)| ack(*i))
        .map(|(_, (id, _))| *id)
        .collect();
    spool.ack(&acked);
    spool.close();
    (config, written)
}

fn end(id: RecordId, record: &Record) -> u64 {
    u64::from(id.offset()) + record_len(record)
}

/// Opens a copy of `from` after `damage` was done to it; checks that the
/// recovered records are `expected` and read back as written, and returns
/// (torn tails, torn bytes, skipped segments).
fn recover_copy(
    from: &Path,
    damage: impl FnOnce(&Path),
    expected: &[(RecordId, Record)],
    what: &str,
) -> (u64, u64, u64) {
    let copy = tempfile::tempdir().unwrap();
    copy_spool(from, copy.path());
    damage(copy.path());
    let (spool, recovered) = open(&config(copy.path()));
    assert_eq!(recovered.records, index(expected), "{what}");
    assert_reads(&spool, expected);
    (
        recovered.torn_tails,
        recovered.torn_bytes,
        recovered.skipped_segments,
    )
}

fn flip(path: &Path, byte: u64, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[byte as usize] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_torn_tail_at_every_offset_leaves_exactly_the_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_, written) = write_spool(dir.path(), 20, 12, |_| false);
    let newest = newest_segment(dir.path());
    let (older, in_newest): (Vec<_>, Vec<_>) = written
        .iter()
        .cloned()
        .partition(|(id, _)| id.segment() < newest);
    assert!(older.len() >= 3 && in_newest.len() >= 3, "{older:?}");
    let path = segment_file(dir.path(), newest);
    let len = std::fs::metadata(&path).unwrap().len();
    let boundaries: Vec<u64> = std::iter::once(16)
        .chain(in_newest.iter().map(|(id, r)| end(*id, r)))
        .collect();
    assert_eq!(*boundaries.last().unwrap(), len);

    // Every offset of the file, its header included.
    for cut in 0..=len {
        let kept: Vec<_> = in_newest
            .iter()
            .filter(|(id, r)| end(*id, r) <= cut)
            .cloned()
            .collect();
        let expected: Vec<_> = older.iter().cloned().chain(kept.clone()).collect();
        let copy = tempfile::tempdir().unwrap();
        copy_spool(dir.path(), copy.path());
        let cut_path = segment_file(copy.path(), newest);
        OpenOptions::new()
            .write(true)
            .open(&cut_path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (spool, recovered) = open(&config(copy.path()));
        assert_eq!(recovered.records, index(&expected), "cut at {cut}");
        assert_reads(&spool, &expected);
        let torn = cut > 0 && !boundaries.contains(&cut);
        assert_eq!(recovered.torn_tails, u64::from(torn), "cut at {cut}");
        let whole = boundaries.iter().copied().filter(|&b| b <= cut).max();
        let torn_bytes = if torn { cut - whole.unwrap_or(0) } else { 0 };
        assert_eq!(recovered.torn_bytes, torn_bytes, "cut at {cut}");
        // The tail is gone from the file, or the file if nothing is left.
        match kept.last() {
            Some((id, r)) => assert_eq!(
                std::fs::metadata(&cut_path).unwrap().len(),
                end(*id, r),
                "cut at {cut}"
            ),
            None => assert!(!cut_path.exists(), "cut at {cut}"),
        }
        // New records go to a new segment and come back too.
        let id = spool.try_append(&record(99, 12)).unwrap();
        assert!(id.segment() > newest);
        drop(spool);
        let (_, again) = open(&config(copy.path()));
        assert_eq!(again.records.len(), expected.len() + 1);
        assert_eq!(again.torn_tails, 0, "cut at {cut}: the cut was made");
    }
}

#[test]
fn flipped_bits_in_segments_cut_there_and_never_yield_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (_, written) = write_spool(dir.path(), 40, 20, |i| i % 4 == 1);
    let live: Vec<_> = written
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 1)
        .map(|(_, r)| r.clone())
        .collect();
    let newest = newest_segment(dir.path());
    let segments: Vec<u32> = {
        let mut s: Vec<u32> = written.iter().map(|(id, _)| id.segment()).collect();
        s.dedup();
        s
    };
    assert!(segments.len() >= 4);

    // (segment, byte, bit): every byte of the newest segment's last three
    // records (every bit of the last one's header), and a sample of every
    // segment, headers included.
    let mut flips = Vec::new();
    for &segment in &segments {
        let len = std::fs::metadata(segment_file(dir.path(), segment))
            .unwrap()
            .len();
        let step = if segment == newest {
            let in_segment: Vec<_> = written
                .iter()
                .filter(|(id, _)| id.segment() == segment)
                .collect();
            let last = u64::from(in_segment.last().unwrap().0.offset());
            for byte in last..last + 20 {
                flips.extend((0..8).map(|bit| (segment, byte, bit)));
            }
            let from = u64::from(in_segment[in_segment.len().saturating_sub(3)].0.offset());
            for byte in from..len {
                flips.push((segment, byte, (byte * 3 % 8) as u8));
            }
            3
        } else {
            7
        };
        for byte in (0..len).step_by(step) {
            flips.push((segment, byte, (byte % 8) as u8));
        }
    }

    for (segment, byte, bit) in flips {
        // The records of that segment before the damaged one survive.
        let expected: Vec<_> = live
            .iter()
            .filter(|(id, r)| id.segment() != segment || (byte >= 16 && end(*id, r) <= byte))
            .cloned()
            .collect();
        let what = format!("segment {segment}, byte {byte}, bit {bit}");
        let (torn, _, skipped) = recover_copy(
            dir.path(),
            |copy| flip(&segment_file(copy, segment), byte, bit),
            &expected,
            &what,
        );
        if byte < 16 {
            assert_eq!((torn, skipped), (0, 1), "{what}: a header not ours");
        } else {
            assert_eq!((torn, skipped), (1, 0), "{what}");
        }
    }
}

#[test]
fn flipped_bits_in_ack_files_only_bring_records_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_, written) = write_spool(dir.path(), 40, 20, |i| i % 3 == 0);
    let live: Vec<_> = written
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, r)| r.clone())
        .collect();
    let ack_files: Vec<(u32, Vec<u8>)> = files(dir.path())
        .iter()
        .filter_map(|name| {
            let segment: u32 = name.strip_suffix(".ack")?.parse().ok()?;
            Some((segment, std::fs::read(ack_file(dir.path(), segment)).ok()?))
        })
        .collect();
    assert!(ack_files.len() >= 3);

    for (n, (segment, bytes)) in ack_files.iter().enumerate() {
        assert_eq!(bytes.len() % 8, 0);
        for byte in 0..bytes.len() {
            // Every bit of the first file's first two entries, one bit a
            // byte elsewhere.
            let bits = if n == 0 && byte < 16 {
                0..8
            } else {
                byte as u8 % 8..byte as u8 % 8 + 1
            };
            for bit in bits {
                let entry = byte / 8 * 8;
                let offset = u32::from_le_bytes(bytes[entry..entry + 4].try_into().unwrap());
                let back = RecordId(u64::from(*segment) << 32 | u64::from(offset));
                let mut expected: Vec<_> = live
                    .iter()
                    .cloned()
                    .chain(written.iter().filter(|(id, _)| *id == back).cloned())
                    .collect();
                expected.sort_by_key(|(id, _)| *id);
                let what = format!("ack file {segment}, byte {byte}, bit {bit}");
                let (torn, _, skipped) = recover_copy(
                    dir.path(),
                    |copy| flip(&ack_file(copy, *segment), byte as u64, bit),
                    &expected,
                    &what,
                );
                assert_eq!((torn, skipped), (0, 0), "{what}");
            }
        }
        // A torn last entry is ignored, the others hold.
        let expected = live.clone();
        let segment = *segment;
        recover_copy(
            dir.path(),
            |copy| {
                let path = ack_file(copy, segment);
                let mut file = OpenOptions::new().append(true).open(path).unwrap();
                std::io::Write::write_all(&mut file, &[1, 2, 3]).unwrap();
            },
            &expected,
            "torn ack entry",
        );
    }
}

#[test]
fn strange_files_do_not_stop_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (config, written) = write_spool(dir.path(), 5, 20, |_| false);
    assert_eq!(newest_segment(dir.path()), 1);
    let first = std::fs::read(segment_file(dir.path(), 1)).unwrap();
    let header = |segment: u32| {
        let mut header = b"LDSPOOL1".to_vec();
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&segment.to_le_bytes());
        header
    };
    let put = |segment: u32, bytes: &[u8]| {
        std::fs::write(segment_file(dir.path(), segment), bytes).unwrap();
    };
    std::fs::write(dir.path().join("notes.txt"), "an operator's").unwrap();
    std::fs::write(dir.path().join("12.seg"), "not our name").unwrap();
    // Created, then a crash: empty, or part of a header.
    put(99, b"");
    put(95, b"LDSP");
    // Not ours: garbage, a copy of segment 1 under another number, a
    // directory.
    put(98, &[0x5a; 100]);
    put(94, &first);
    std::fs::create_dir(segment_file(dir.path(), 96)).unwrap();
    // Ours, then a record claiming 4 GiB.
    let mut huge = header(97);
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 16]);
    huge.extend_from_slice(&[1; 50]);
    put(97, &huge);
    // Ours, then segment 1's first record copied in: its CRC names segment 1.
    let mut copied = header(93);
    copied.extend_from_slice(&first[16..16 + record_len(&written[0].1) as usize]);
    put(93, &copied);
    // Acknowledgements of a segment that is gone.
    std::fs::write(ack_file(dir.path(), 50), [0; 16]).unwrap();

    let (spool, recovered) = open(&config);
    assert_eq!(recovered.records, index(&written));
    assert_reads(&spool, &written);
    assert_eq!(recovered.torn_tails, 3, "95, 97 and 93");
    assert_eq!(
        recovered.torn_bytes,
        4 + (huge.len() as u64 - 16) + (copied.len() as u64 - 16)
    );
    assert_eq!(recovered.skipped_segments, 3, "98, 94 and 96");
    let left = files(dir.path());
    for gone in ["99.seg", "95.seg", "97.seg", "93.seg", "50.ack"] {
        let name = format!("{:0>24}", gone);
        assert!(!left.contains(&name), "{name} in {left:?}");
    }
    for kept in ["98.seg", "94.seg", "96.seg", "01.seg"] {
        let name = format!("{:0>24}", kept);
        assert!(left.contains(&name), "{name} not in {left:?}");
    }
    assert!(left.contains(&"notes.txt".to_string()) && left.contains(&"12.seg".to_string()));
    // New segments are numbered past everything seen.
    let id = spool
        .try_append(&Record {
            priority: 0,
            kind: 0,
            payload: Bytes::from_static(b"after"),
        })
        .unwrap();
    assert_eq!(id.segment(), 100);
    // A skipped file reads as not ours.
    let foreign = RecordId(94 << 32 | 16);
    assert_eq!(
        spool.read(foreign).unwrap_err().kind(),
        std::io::ErrorKind::InvalidData
    );
}
