//! Seed shipper gzip frames: `u32` big-endian length N of the gzip data (N
//! *excludes* the 4 length bytes), then N bytes of gzip (magic `1f 8b`) that
//! decompress to NDJSON lines.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
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

/// Decompresses gzip data (one or more members) into a buffer that lines can
/// be split off without copying.
///
/// The output is read through `take(max + 1)` so a small frame that expands
/// enormously (a "gzip bomb") stops at one byte past the limit instead of
/// exhausting memory.
pub(crate) fn decompress(
    gzip: &[u8],
    max_decompressed_bytes: usize,
) -> Result<BytesMut, Rejection> {
    let limit = u64::try_from(max_decompressed_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut decompressed = Vec::new();
    MultiGzDecoder::new(gzip)
        .take(limit)
        .read_to_end(&mut decompressed)
        .map_err(|error| Rejection::corrupt_gzip(&error))?;
    if decompressed.len() > max_decompressed_bytes {
        return Err(Rejection::gzip_too_large(max_decompressed_bytes));
    }
    // `read_to_end` grows by doubling, and every line will be a slice of this
    // buffer, keeping it alive while any of them waits in a queue: give the
    // spare capacity back first (one copy at most, cheap next to inflating).
    decompressed.shrink_to_fit();
    // Vec -> Bytes -> BytesMut hands the allocation over; nothing is copied.
    Ok(BytesMut::from(Bytes::from(decompressed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::RejectReason;

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
