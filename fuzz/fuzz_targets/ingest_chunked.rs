//! The emitter decoder (`IngestDecoder`: NDJSON lines, syslog messages in
//! both framings, binary frames and gzip frames mixed) on arbitrary bytes.
//!
//! Input: 8 header bytes, then the stream.
//!   0..2  max_frame_bytes        = 5 + (u16 % 2048)
//!   2..4  max_line_bytes         = 1 + (u16 % 2048)
//!   4..6  max_decompressed_bytes = 1 + (u16 % 8192); its top three bits
//!         pick the listener format: 0, 4 auto; 1, 5 ndjson; 2, 6 frame;
//!         3, 7 syslog (so older corpus entries mostly stay auto)
//!   6..8  chunking (see `Chunking`)
//! Small limits, so oversized lines, frames and gzip bombs are reached.
//!
//! Checks: nothing panics; the stream decoded in one chunk and in the derived
//! chunks gives the same items (messages and rejections) and the same fatal
//! error; the decoder never buffers more than its limits allow; every item
//! obeys the spec (a frame's length word is its size, an NDJSON message is a
//! line that validates to its priority, a syslog message starts with a PRI
//! whose severity maps to its priority and converts to a JSON object for
//! ndjson analyzers; each is of a format the listener takes); at the end of
//! input nothing is left in the buffer.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use logdist_fuzz::{ChunkedStream, Chunking, u16_at};
use logdist_wire::{
    Decoded, FRAME_HEADER_LEN, IngestDecoder, IngestFormat, IngestLimits, Origin, PriorityTable,
    ndjson_priority, syslog_pri, write_syslog_json,
};

const HEADER: usize = 8;

fuzz_target!(|data: &[u8]| {
    let limits = IngestLimits {
        max_frame_bytes: 5 + usize::from(u16_at(data, 0) % 2048),
        max_line_bytes: 1 + usize::from(u16_at(data, 2) % 2048),
        max_decompressed_bytes: 1 + usize::from(u16_at(data, 4) % 8192),
    };
    let format = [
        IngestFormat::Auto,
        IngestFormat::Ndjson,
        IngestFormat::Frame,
        IngestFormat::Syslog,
    ][usize::from(u16_at(data, 4) >> 13) % 4];
    let chunking = Chunking::new(u16_at(data, 6).to_be_bytes());
    let stream = &data[HEADER.min(data.len())..];
    let table = Arc::new(PriorityTable::default());

    // A text line waits with at most max_line_bytes + 1 bytes (its `\n` may
    // follow a `\r`); an octet-counted message with its count of at most
    // ten digits and a space; a frame with less than its whole length (a
    // gzip frame's length excludes its 4-byte word).
    let max_buffered = (limits.max_line_bytes + 11).max(limits.max_frame_bytes + 4);
    // Each item takes at least one input byte, except that a gzip frame (at
    // least 22 bytes) expands to lines, and one `truncated` at the end.
    let max_items = stream.len() + 1 + (stream.len() / 22) * limits.max_decompressed_bytes;

    let decode = |chunks: Vec<&[u8]>| {
        let mut decoder = IngestDecoder::new(limits, table.clone()).format(format);
        let mut input = ChunkedStream::new(chunks);
        let (items, error) = input.drain(&mut decoder, max_buffered, max_items);
        if error.is_none() {
            assert_eq!(input.buffered(), 0, "bytes left over at the end of input");
            // The end stays the end.
            assert!(matches!(input.next(&mut decoder, max_buffered), Ok(None)));
        }
        (items, error)
    };
    let whole = decode(if stream.is_empty() {
        vec![]
    } else {
        vec![stream]
    });
    let chunked = decode(chunking.split(stream));
    assert_eq!(whole, chunked, "chunking changed what was decoded");

    let (items, _) = whole;
    for item in &items {
        let Decoded::Message(message) = item else {
            continue;
        };
        let bytes = message.data();
        let taken = match format {
            IngestFormat::Auto => true,
            IngestFormat::Ndjson => message.origin() == Origin::Ndjson,
            IngestFormat::Frame => message.origin() == Origin::Frame,
            IngestFormat::Syslog => message.origin() == Origin::Syslog,
        };
        assert!(
            taken,
            "{:?} message on a {format:?} listener",
            message.origin()
        );
        match message.origin() {
            Origin::Frame => {
                assert!((FRAME_HEADER_LEN..=limits.max_frame_bytes).contains(&bytes.len()));
                let word = u32::from_be_bytes(bytes[..4].try_into().unwrap());
                assert_eq!(word as usize, bytes.len(), "length word is the frame size");
                assert_eq!(message.priority(), bytes[4]);
            }
            Origin::Ndjson => {
                assert!(
                    bytes.len() <= limits.max_line_bytes,
                    "line over max_line_bytes"
                );
                assert!(!bytes.contains(&b'\n'), "a line holds no newline");
                assert_eq!(
                    ndjson_priority(bytes, &table),
                    Ok(message.priority()),
                    "an accepted line validates to its priority"
                );
            }
            Origin::Syslog => {
                assert!(
                    bytes.len() <= limits.max_line_bytes,
                    "syslog message over max_line_bytes"
                );
                let pri = syslog_pri(bytes).expect("an accepted syslog message has a PRI");
                assert_eq!(message.priority(), table.syslog_priority(pri & 7));
                let mut json = Vec::new();
                write_syslog_json(message.priority(), bytes, &mut json);
                let value: serde_json::Value =
                    serde_json::from_slice(&json).expect("the conversion is JSON");
                assert!(value.is_object());
                assert_eq!(value["priority"], u64::from(message.priority()));
            }
        }
    }
});
