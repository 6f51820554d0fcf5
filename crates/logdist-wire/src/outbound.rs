//! Encoding messages for an analyzer as a list of chunks for one vectored
//! write, so payloads go from the emitter's read buffer to the analyzer's
//! socket without being copied.

use std::fmt::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::analyzer::AnalyzerFormat;
use crate::message::{FRAME_HEADER_LEN, Message, Origin};
use crate::syslog::write_syslog_json;

/// How much scratch space to allocate at a time. Headers and converted
/// messages are carved out of one block with `split().freeze()`, so encoding
/// allocates once per block (some 13,000 frame headers), not per message;
/// `reserve` reuses the block itself once no chunk points into it any more.
const SCRATCH_BLOCK: usize = 64 * 1024;

/// `{"priority":255,"payload_b64":""}` and its newline, around the base64.
const B64_LINE_OVERHEAD: usize = 36;

/// The bytes of a batch of messages, in order, ready for `write_vectored`.
#[derive(Debug, Default)]
pub struct OutboundBatch {
    chunks: Vec<Bytes>,
    scratch: BytesMut,
    byte_len: usize,
    message_count: usize,
}

impl OutboundBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one message in `format`:
    ///
    /// * frame, binary-born: the original frame, as is;
    /// * frame, NDJSON-born: a 5-byte header, then the line as payload;
    /// * ndjson, NDJSON-born: the line, then `\n`;
    /// * ndjson, binary-born: `{"priority":p,"message":"<payload>"}` when the
    ///   payload is UTF-8, else `{"priority":p,"payload_b64":"<base64>"}`;
    /// * frame, syslog-born: a 5-byte header, then the syslog message as
    ///   received (no octet count, no `\n`);
    /// * ndjson, syslog-born: the parsed message as a JSON object
    ///   ([`write_syslog_json`]).
    pub fn push(&mut self, message: &Message, format: AnalyzerFormat) {
        match (format, message.origin()) {
            (AnalyzerFormat::Frame, Origin::Frame) => self.push_chunk(message.data().clone()),
            (AnalyzerFormat::Frame, Origin::Ndjson | Origin::Syslog) => {
                let line = message.data();
                let length = u32::try_from(FRAME_HEADER_LEN + line.len())
                    .expect("a line or syslog message is bounded by max_line_bytes");
                self.reserve_scratch(FRAME_HEADER_LEN);
                self.scratch.put_u32(length);
                self.scratch.put_u8(message.priority());
                let header = self.scratch.split().freeze();
                self.push_chunk(header);
                self.push_chunk(line.clone());
            }
            (AnalyzerFormat::Ndjson, Origin::Ndjson) => {
                self.push_chunk(message.data().clone());
                self.push_chunk(Bytes::from_static(b"\n"));
            }
            (AnalyzerFormat::Ndjson, Origin::Frame) => {
                let converted = self.frame_as_json_line(message);
                self.push_chunk(converted);
            }
            (AnalyzerFormat::Ndjson, Origin::Syslog) => {
                // The fields are about as long as the message; a guess, not a bound.
                self.reserve_scratch(message.data().len() * 2 + 256);
                write_syslog_json(
                    message.priority(),
                    message.data(),
                    &mut (&mut self.scratch).writer(),
                );
                self.scratch.put_u8(b'\n');
                let converted = self.scratch.split().freeze();
                self.push_chunk(converted);
            }
        }
        self.message_count += 1;
    }

    /// The chunks to write, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Total bytes across all chunks.
    pub fn byte_len(&self) -> usize {
        self.byte_len
    }

    pub fn message_count(&self) -> usize {
        self.message_count
    }

    /// Empties the batch for reuse, keeping its allocations.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.byte_len = 0;
        self.message_count = 0;
    }

    fn push_chunk(&mut self, chunk: Bytes) {
        self.byte_len += chunk.len();
        self.chunks.push(chunk);
    }

    fn reserve_scratch(&mut self, additional: usize) {
        if self.scratch.capacity() < additional {
            self.scratch.reserve(additional.max(SCRATCH_BLOCK));
        }
    }

    /// A binary-born message as one JSON line, written into scratch.
    fn frame_as_json_line(&mut self, message: &Message) -> Bytes {
        #[derive(Serialize)]
        struct Utf8Line<'a> {
            priority: u8,
            message: &'a str,
        }
        let payload = &message.data()[FRAME_HEADER_LEN..];
        let priority = message.priority();
        match std::str::from_utf8(payload) {
            Ok(text) => {
                // Escaping can grow the text; this is a guess, not a bound.
                self.reserve_scratch(payload.len() + 32);
                let line = Utf8Line {
                    priority,
                    message: text,
                };
                serde_json::to_writer((&mut self.scratch).writer(), &line)
                    .expect("writing JSON to memory cannot fail");
            }
            Err(_) => {
                let encoded_len = base64::encoded_len(payload.len(), true)
                    .expect("a payload bounded by max_frame_bytes");
                self.reserve_scratch(B64_LINE_OVERHEAD + encoded_len);
                write!(self.scratch, "{{\"priority\":{priority},\"payload_b64\":\"")
                    .expect("BytesMut grows as needed");
                let start = self.scratch.len();
                self.scratch.resize(start + encoded_len, 0);
                BASE64
                    .encode_slice(payload, &mut self.scratch[start..])
                    .expect("the slice is sized by encoded_len");
                self.scratch.put_u8(b'"');
                self.scratch.put_u8(b'}');
            }
        }
        self.scratch.put_u8(b'\n');
        self.scratch.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameDecoder, encode_frame};
    use tokio_util::codec::Decoder;

    fn ndjson_message(priority: u8, line: &'static [u8]) -> Message {
        Message::from_ndjson_line(priority, Bytes::from_static(line))
    }

    fn frame_message(priority: u8, payload: &[u8]) -> Message {
        let mut buf = BytesMut::new();
        encode_frame(priority, payload, &mut buf);
        Message::from_frame(buf.freeze())
    }

    fn concat(batch: &OutboundBatch) -> Vec<u8> {
        batch.chunks().concat()
    }

    #[test]
    fn frame_format_passes_frames_through_without_copying() {
        let message = frame_message(7, b"payload");
        let mut batch = OutboundBatch::new();
        batch.push(&message, AnalyzerFormat::Frame);
        assert_eq!(batch.chunks().len(), 1);
        assert_eq!(batch.chunks()[0].as_ptr(), message.data().as_ptr());
        assert_eq!(batch.byte_len(), 12);
        assert_eq!(batch.message_count(), 1);
    }

    #[test]
    fn frame_format_wraps_lines_in_a_header() {
        let message = ndjson_message(2, b"{\"a\":1}");
        let mut batch = OutboundBatch::new();
        batch.push(&message, AnalyzerFormat::Frame);
        assert_eq!(batch.chunks().len(), 2);
        assert_eq!(&batch.chunks()[0][..], &[0, 0, 0, 12, 2]);
        assert_eq!(
            batch.chunks()[1].as_ptr(),
            message.data().as_ptr(),
            "the line is not copied"
        );

        let mut wire = BytesMut::from(&concat(&batch)[..]);
        let decoded = FrameDecoder::new(1024).decode(&mut wire).unwrap().unwrap();
        assert_eq!(decoded.priority(), 2);
        assert_eq!(&decoded.payload()[..], b"{\"a\":1}");
    }

    #[test]
    fn ndjson_format_passes_lines_through() {
        let message = ndjson_message(3, b"{\"level\":\"info\"}");
        let mut batch = OutboundBatch::new();
        batch.push(&message, AnalyzerFormat::Ndjson);
        batch.push(&message, AnalyzerFormat::Ndjson);
        assert_eq!(batch.chunks()[0].as_ptr(), message.data().as_ptr());
        assert_eq!(
            concat(&batch),
            b"{\"level\":\"info\"}\n{\"level\":\"info\"}\n"
        );
        assert_eq!(batch.byte_len(), 34);
        assert_eq!(batch.message_count(), 2);
    }

    #[test]
    fn ndjson_format_converts_frames() {
        let mut batch = OutboundBatch::new();
        batch.push(&frame_message(9, b"say \"hi\"\n"), AnalyzerFormat::Ndjson);
        batch.push(
            &frame_message(255, &[0xff, 0x00, 0x80]),
            AnalyzerFormat::Ndjson,
        );
        batch.push(&frame_message(0, b""), AnalyzerFormat::Ndjson);
        assert_eq!(
            String::from_utf8(concat(&batch)).unwrap(),
            "{\"priority\":9,\"message\":\"say \\\"hi\\\"\\n\"}\n\
             {\"priority\":255,\"payload_b64\":\"/wCA\"}\n\
             {\"priority\":0,\"message\":\"\"}\n"
        );
        for chunk in batch.chunks() {
            let value: serde_json::Value = serde_json::from_slice(chunk).unwrap();
            assert!(value.is_object());
        }
    }

    #[test]
    fn syslog_goes_raw_in_frames_and_parsed_in_ndjson() {
        let message = Message::from_syslog(
            1,
            Bytes::from_static(b"<11>1 2025-01-25T20:30:45.123Z web-1 nginx 42 - - disk full"),
        );
        let mut batch = OutboundBatch::new();
        batch.push(&message, AnalyzerFormat::Frame);
        let length = (FRAME_HEADER_LEN + message.data().len()) as u32;
        assert_eq!(batch.chunks()[0][..4], length.to_be_bytes());
        assert_eq!(batch.chunks()[0][4], 1);
        assert_eq!(batch.chunks()[1].as_ptr(), message.data().as_ptr());

        let mut batch = OutboundBatch::new();
        batch.push(&message, AnalyzerFormat::Ndjson);
        let wire = concat(&batch);
        assert_eq!(wire.last(), Some(&b'\n'));
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "{\"facility\":\"user\",\"severity\":\"err\",\"timestamp\":\"2025-01-25T20:30:45.123Z\",\
             \"hostname\":\"web-1\",\"app_name\":\"nginx\",\"procid\":42,\"msgid\":null,\
             \"structured_data\":{},\"message\":\"disk full\",\"priority\":1}\n"
        );
    }

    #[test]
    fn clear_resets_counts() {
        let mut batch = OutboundBatch::new();
        batch.push(&ndjson_message(1, b"{}"), AnalyzerFormat::Frame);
        batch.clear();
        assert!(batch.chunks().is_empty());
        assert_eq!((batch.byte_len(), batch.message_count()), (0, 0));
        batch.push(&ndjson_message(1, b"{}"), AnalyzerFormat::Ndjson);
        assert_eq!(concat(&batch), b"{}\n");
    }

    #[test]
    fn headers_are_carved_from_one_scratch_block() {
        let message = ndjson_message(1, b"{}");
        let mut batch = OutboundBatch::new();
        for _ in 0..1000 {
            batch.push(&message, AnalyzerFormat::Frame);
        }
        let first = batch.chunks()[0].as_ptr() as usize;
        for (i, header) in batch.chunks().iter().step_by(2).enumerate() {
            assert_eq!(header.as_ptr() as usize, first + i * FRAME_HEADER_LEN);
        }
    }
}
