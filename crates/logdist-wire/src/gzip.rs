//! Seed shipper gzip frames: `u32` big-endian length N of the gzip data (N
//! *excludes* the 4 length bytes), then N bytes of gzip (magic `1f 8b`) that
//! decompress to NDJSON lines.

use std::io::{Read, Write};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::reject::Rejection;

/// Length of the length word before the gzip data.
pub(crate) const GZIP_LENGTH_LEN: usize = 4;

/// The first three bytes of every gzip member: magic `1f 8b`, method 8 (deflate).
pub(crate) const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// No gzip member is shorter than its 10-byte header plus 8-byte trailer.
pub(crate) const GZIP_MIN_LEN: usize = 18;

/// Appends one gzip frame holding `ndjson` (lines, `\n`-terminated or not).
pub fn encode_gzip_frame(ndjson: &[u8], dst: &mut BytesMut) {
    let start = dst.len();
    dst.put_u32(0);
    let mut encoder = GzEncoder::new(dst.writer(), Compression::fast());
    encoder
        .write_all(ndjson)
        .expect("writing to memory cannot fail");
    let dst = encoder
        .finish()
        .expect("writing to memory cannot fail")
        .into_inner();
    let length = u32::try_from(dst.len() - start - GZIP_LENGTH_LEN)
        .expect("gzip frame longer than u32::MAX bytes");
    dst[start..start + GZIP_LENGTH_LEN].copy_from_slice(&length.to_be_bytes());
}

/// The gzip data of one complete gzip frame (the length word left out), not
/// inflated yet: a slice of the read buffer, so taking it copies nothing.
///
/// [`IngestDecoder::defer_gzip`](crate::IngestDecoder::defer_gzip) hands
/// these out so the caller can inflate them where it likes (off an async
/// worker, in steps); [`GzipFrame::inflate`] does it all at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GzipFrame {
    data: Bytes,
    max_decompressed_bytes: usize,
}

impl GzipFrame {
    pub(crate) fn new(data: Bytes, max_decompressed_bytes: usize) -> Self {
        GzipFrame {
            data,
            max_decompressed_bytes,
        }
    }

    /// Bytes of gzip data (the frame's N).
    pub fn compressed_len(&self) -> usize {
        self.data.len()
    }

    /// Inflates the whole frame: its lines, or why it is rejected.
    pub fn inflate(self) -> Result<BytesMut, Rejection> {
        self.inflater().finish()
    }

    /// An inflater that can be run in steps of bounded output.
    pub fn inflater(self) -> Inflater {
        // The gzip trailer's ISIZE (the last member's size mod 2^32) is the
        // whole output for the usual single member: reserving it up front
        // spares the doubling (and the copies and the twice-as-large peak) of
        // growing the buffer. A false ISIZE costs at most the limit in
        // address space, not in memory: untouched pages are not resident.
        let hint = self
            .data
            .last_chunk::<4>()
            .map_or(0, |isize| u32::from_le_bytes(*isize) as usize);
        let capacity = hint.min(self.max_decompressed_bytes.saturating_add(1));
        Inflater {
            decoder: MultiGzDecoder::new(self.data.reader()),
            out: Vec::with_capacity(capacity),
            max_decompressed_bytes: self.max_decompressed_bytes,
        }
    }
}

/// A gzip frame being inflated, a bounded step at a time (see [`GzipFrame`]).
///
/// Output is read at most one byte past `max_decompressed_bytes`, so a frame
/// that expands enormously (a "gzip bomb") costs no more than the limit.
pub struct Inflater {
    decoder: MultiGzDecoder<bytes::buf::Reader<Bytes>>,
    out: Vec<u8>,
    max_decompressed_bytes: usize,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("inflated", &self.out.len())
            .field("max_decompressed_bytes", &self.max_decompressed_bytes)
            .finish()
    }
}

impl Inflater {
    /// Inflates at most `budget` more bytes (at least one); the outcome once
    /// the frame is done, `None` while there is more.
    pub fn step(&mut self, budget: usize) -> Option<Result<BytesMut, Rejection>> {
        let limit = self.max_decompressed_bytes.saturating_add(1);
        let chunk = budget.max(1).min(limit - self.out.len());
        match (&mut self.decoder)
            .take(chunk as u64)
            .read_to_end(&mut self.out)
        {
            Err(error) => Some(Err(Rejection::corrupt_gzip(&error))),
            Ok(_) if self.out.len() > self.max_decompressed_bytes => {
                Some(Err(Rejection::gzip_too_large(self.max_decompressed_bytes)))
            }
            // Less than asked for: the end of the data.
            Ok(read) if read < chunk => Some(Ok(self.take_output())),
            Ok(_) => None,
        }
    }

    /// Inflates the rest.
    pub fn finish(mut self) -> Result<BytesMut, Rejection> {
        loop {
            if let Some(outcome) = self.step(usize::MAX) {
                return outcome;
            }
        }
    }

    fn take_output(&mut self) -> BytesMut {
        let mut out = std::mem::take(&mut self.out);
        // Every line will be a slice of this buffer, keeping all of it alive
        // while any line waits in a queue: give back what the data did not
        // fill (nothing to give back when the ISIZE hint was right).
        out.shrink_to_fit();
        // Vec -> Bytes -> BytesMut hands the allocation over; nothing is copied.
        BytesMut::from(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::RejectReason;

    fn decompress(gzip: &[u8], max: usize) -> Result<BytesMut, Rejection> {
        GzipFrame::new(Bytes::copy_from_slice(gzip), max).inflate()
    }

    fn frame_data(frame: &BytesMut) -> &[u8] {
        let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4, "N excludes the length word");
        &frame[4..]
    }

    #[test]
    fn round_trips_through_a_frame() {
        let mut frame = BytesMut::from(&b"prefix"[..]);
        encode_gzip_frame(b"{\"a\":1}\n{\"b\":2}\n", &mut frame);
        let frame = frame.split_off(6);
        let data = frame_data(&frame);
        assert_eq!(data[..3], GZIP_MAGIC);
        assert_eq!(
            &decompress(data, 100).unwrap()[..],
            b"{\"a\":1}\n{\"b\":2}\n"
        );
    }

    #[test]
    fn empty_input_is_a_minimal_member() {
        let mut frame = BytesMut::new();
        encode_gzip_frame(b"", &mut frame);
        assert!(frame_data(&frame).len() >= GZIP_MIN_LEN);
        assert!(decompress(frame_data(&frame), 0).unwrap().is_empty());
    }

    #[test]
    fn reads_every_member_of_a_multi_member_stream() {
        let mut first = BytesMut::new();
        encode_gzip_frame(b"one\n", &mut first);
        let mut second = BytesMut::new();
        encode_gzip_frame(b"two\n", &mut second);
        let joined = [frame_data(&first), frame_data(&second)].concat();
        assert_eq!(&decompress(&joined, 100).unwrap()[..], b"one\ntwo\n");
    }

    #[test]
    fn enforces_the_decompressed_limit_exactly() {
        let mut frame = BytesMut::new();
        encode_gzip_frame(&[b'x'; 1000], &mut frame);
        assert_eq!(decompress(frame_data(&frame), 1000).unwrap().len(), 1000);
        let rejection = decompress(frame_data(&frame), 999).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::GzipTooLarge);
        assert_eq!(
            rejection.to_string(),
            "gzip frame decompresses to more than 999 bytes"
        );
    }

    #[test]
    fn inflating_in_steps_gives_the_same_outcome() {
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        let mut frame = BytesMut::new();
        encode_gzip_frame(&text, &mut frame);
        let data = Bytes::copy_from_slice(frame_data(&frame));
        for (step, max) in [(1, text.len()), (1000, text.len()), (1 << 20, text.len())] {
            let mut inflater = GzipFrame::new(data.clone(), max).inflater();
            let mut steps = 0;
            let outcome = loop {
                steps += 1;
                if let Some(outcome) = inflater.step(step) {
                    break outcome;
                }
            };
            assert_eq!(&outcome.unwrap()[..], &text[..], "step {step}");
            assert!(steps > text.len() / step, "steps of at most {step} bytes");
        }
        let mut inflater = GzipFrame::new(data.clone(), text.len() - 1).inflater();
        let outcome = loop {
            if let Some(outcome) = inflater.step(4096) {
                break outcome;
            }
        };
        assert_eq!(outcome.unwrap_err().reason, RejectReason::GzipTooLarge);
    }

    #[test]
    fn a_false_isize_changes_nothing_but_the_reservation() {
        let mut frame = BytesMut::new();
        encode_gzip_frame(b"{\"a\":1}\n", &mut frame);
        let mut data = frame_data(&frame).to_vec();
        let isize = data.len() - 4;
        for claimed in [0u32, 3, 1 << 30, u32::MAX] {
            data[isize..].copy_from_slice(&claimed.to_le_bytes());
            // The trailer no longer matches: corrupt, whatever it claimed.
            let outcome = decompress(&data, 1 << 20);
            assert_eq!(outcome.unwrap_err().reason, RejectReason::CorruptGzip);
        }
        // A right ISIZE reserves exactly the output: nothing to shrink.
        let inflated = decompress(frame_data(&frame), 1 << 20).unwrap();
        assert_eq!(inflated.capacity(), inflated.len());
    }

    #[test]
    fn corrupt_data_is_rejected() {
        let mut frame = BytesMut::new();
        encode_gzip_frame(b"{\"a\":1}\n", &mut frame);
        let mut data = frame_data(&frame).to_vec();
        let crc = data.len() - 8;
        data[crc] ^= 0xff;
        for corrupt in [
            &data[..],
            &data[..data.len() - 1],
            &GZIP_MAGIC[..],
            &[0x1f, 0x8b, 0x08, 0, 0][..],
        ] {
            assert_eq!(
                decompress(corrupt, 100).unwrap_err().reason,
                RejectReason::CorruptGzip
            );
        }
    }
}
