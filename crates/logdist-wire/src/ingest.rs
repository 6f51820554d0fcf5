//! The emitter-side decoder: NDJSON lines, binary frames and gzip frames,
//! mixed freely on one connection.
//!
//! The format is chosen again at every message boundary from the first bytes:
//!
//! * `\n`, `\r`, space, tab or any other printable ASCII byte (0x20..=0x7E)
//!   starts a text line, read up to `\n` and validated as an NDJSON object.
//!   This is unambiguous because the two framed formats start with a big-endian
//!   length word no larger than [`MAX_FRAME_BYTES_CEILING`] (128 MiB =
//!   0x0800_0000), whose first byte is therefore at most 0x08: below tab.
//! * Anything else starts a length word. When the four bytes after it are a
//!   gzip header (see [`IngestDecoder`]) it is a gzip frame, otherwise a binary
//!   frame.
//!
//! Bad messages become [`Decoded::Rejected`] and decoding goes on; only a
//! binary length that cannot be right is fatal, since after it there is no way
//! to know where the next message starts.

use std::io;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use crate::gzip::{GZIP_LENGTH_LEN, GZIP_MAGIC, GZIP_MIN_LEN, GzipFrame};
use crate::line::{LineFramer, LineOutcome};
use crate::message::{FRAME_HEADER_LEN, Message};
use crate::ndjson::{PriorityTable, ndjson_priority};
use crate::reject::Rejection;

/// The largest `max_frame_bytes` the ingest decoder honours; larger settings
/// are lowered to it. Above it, a length word could start with a whitespace
/// byte (tab is 0x09) and be mistaken for a text line.
pub const MAX_FRAME_BYTES_CEILING: usize = 128 * 1024 * 1024;

/// Size limits for one emitter connection; they also bound its read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest binary frame (header included) or gzip frame (length word
    /// excluded). At most [`MAX_FRAME_BYTES_CEILING`].
    pub max_frame_bytes: usize,
    /// Longest NDJSON line, without its line terminator.
    pub max_line_bytes: usize,
    /// Most bytes one gzip frame may decompress to.
    pub max_decompressed_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_frame_bytes: 1024 * 1024,
            max_line_bytes: 1024 * 1024,
            max_decompressed_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One outcome per input message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Message(Message),
    Rejected(Rejection),
    /// A complete gzip frame to inflate, only from a decoder that
    /// [defers gzip](IngestDecoder::defer_gzip): inflate it, then give the
    /// outcome to [`IngestDecoder::inflated`] before decoding on.
    Gzip(GzipFrame),
}

/// Why an emitter connection must be closed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A binary length outside 5..=max: the stream cannot be resynchronized.
    #[error("binary frame length {length} outside 5..={max}; closing connection")]
    BadLength { length: u32, max: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Decodes everything an emitter may send (see the module docs).
///
/// # Gzip or binary?
/// A binary frame with priority 0x1f whose payload starts with 0x8b looks like
/// a gzip frame. The decoder takes a frame as gzip only when
///
/// * bytes 4..7 are `1f 8b 08` (gzip magic and the deflate method byte), and
/// * its length word N satisfies 18 <= N <= max_frame_bytes: a gzip member is
///   never shorter than 18 bytes (10-byte header, 8-byte trailer).
///
/// Everything else is a binary frame. Because of the 18-byte minimum, the
/// decoder never waits for a 7th byte that a shorter binary frame (such as an
/// empty 5-byte frame with priority 0x1f) would not send.
///
/// Messages are slices of the read buffer (or of a decompressed gzip buffer):
/// the happy path neither copies nor allocates per message.
///
/// # Inflating elsewhere
/// By default a complete gzip frame is inflated inside `decode`, which may
/// take a while (up to `max_decompressed_bytes` of output). A decoder made
/// with [`defer_gzip`](Self::defer_gzip) yields the frame as
/// [`Decoded::Gzip`] instead; the caller inflates it where it likes and hands
/// the outcome back with [`inflated`](Self::inflated).
#[derive(Debug)]
pub struct IngestDecoder {
    limits: IngestLimits,
    table: Arc<PriorityTable>,
    lines: LineFramer,
    gzip_lines: Option<GzipLines>,
    defer_gzip: bool,
}

/// The not yet decoded lines of a decompressed gzip frame.
#[derive(Debug)]
struct GzipLines {
    lines: LineFramer,
    rest: BytesMut,
}

/// What the bytes at a message boundary turned out to be.
enum Boundary {
    TextLine,
    /// A binary frame of this many bytes, header included.
    Frame(usize),
    /// A gzip frame with this many bytes of gzip data after the length word.
    Gzip(usize),
}

impl IngestDecoder {
    /// A decoder for one connection; `table` is shared by all connections.
    pub fn new(limits: IngestLimits, table: Arc<PriorityTable>) -> Self {
        let limits = IngestLimits {
            max_frame_bytes: limits.max_frame_bytes.min(MAX_FRAME_BYTES_CEILING),
            ..limits
        };
        IngestDecoder {
            limits,
            table,
            lines: LineFramer::new(limits.max_line_bytes),
            gzip_lines: None,
            defer_gzip: false,
        }
    }

    /// Yield complete gzip frames as [`Decoded::Gzip`] instead of inflating
    /// them inside `decode` (see "Inflating elsewhere").
    pub fn defer_gzip(mut self) -> Self {
        self.defer_gzip = true;
        self
    }

    /// Takes the outcome of inflating the [`Decoded::Gzip`] frame just
    /// decoded: its lines come next from `decode`, or its rejection is
    /// returned here.
    pub fn inflated(&mut self, inflated: Result<BytesMut, Rejection>) -> Option<Decoded> {
        match inflated {
            Ok(rest) => {
                debug_assert!(self.gzip_lines.is_none(), "a frame's lines come first");
                self.gzip_lines = Some(GzipLines {
                    lines: LineFramer::new(self.limits.max_line_bytes),
                    rest,
                });
                None
            }
            Err(rejection) => Some(Decoded::Rejected(rejection)),
        }
    }

    /// Whether lines of an inflated gzip frame may still come from `decode`:
    /// until it returns false, messages may be slices of the buffer last
    /// handed to [`inflated`](Self::inflated).
    pub fn inflating(&self) -> bool {
        self.gzip_lines.is_some()
    }

    /// Whether a message has begun and not ended: `buf` holds part of one,
    /// or the rest of an over-long line is still being skipped. Meaningful
    /// after `decode` returned `None`.
    pub fn in_message(&self, buf: &BytesMut) -> bool {
        !buf.is_empty() || self.lines.is_discarding()
    }

    /// Decides the format of the message at the front of `buf` (not empty);
    /// `None` when more bytes are needed to tell.
    fn boundary(&self, buf: &BytesMut) -> Result<Option<Boundary>, IngestError> {
        if starts_text_line(buf[0]) {
            return Ok(Some(Boundary::TextLine));
        }
        let Some(word) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let length = u32::from_be_bytes(*word);
        let max = self.limits.max_frame_bytes;
        let bad_length = IngestError::BadLength { length, max };
        let length = length as usize;
        if length > max {
            return Err(bad_length);
        }
        let magic_end = buf.len().min(GZIP_LENGTH_LEN + GZIP_MAGIC.len());
        let magic_so_far = &buf[GZIP_LENGTH_LEN..magic_end];
        if length >= GZIP_MIN_LEN && GZIP_MAGIC.starts_with(magic_so_far) {
            // A binary frame this long would not be complete yet either, so
            // waiting for all three magic bytes delays nothing.
            return Ok((magic_so_far.len() == GZIP_MAGIC.len()).then_some(Boundary::Gzip(length)));
        }
        if length < FRAME_HEADER_LEN {
            return Err(bad_length);
        }
        Ok(Some(Boundary::Frame(length)))
    }

    fn next_gzip_line(&mut self) -> Option<Decoded> {
        let gzip = self.gzip_lines.as_mut()?;
        while let Some(outcome) = gzip
            .lines
            .next_line(&mut gzip.rest)
            .or_else(|| gzip.lines.last_line(&mut gzip.rest))
        {
            if let Some(decoded) = check_line(outcome, &self.table, &self.limits) {
                return Some(decoded);
            }
        }
        self.gzip_lines = None;
        None
    }
}

impl Decoder for IngestDecoder {
    type Item = Decoded;
    type Error = IngestError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, IngestError> {
        loop {
            if let Some(decoded) = self.next_gzip_line() {
                return Ok(Some(decoded));
            }
            if !self.lines.skip_rejected(buf) || buf.is_empty() {
                return Ok(None);
            }
            match self.boundary(buf)? {
                None => return Ok(None),
                Some(Boundary::TextLine) => match self.lines.next_line(buf) {
                    None => return Ok(None),
                    Some(outcome) => {
                        if let Some(decoded) = check_line(outcome, &self.table, &self.limits) {
                            return Ok(Some(decoded));
                        }
                    }
                },
                Some(Boundary::Frame(length)) => {
                    if buf.len() < length {
                        buf.reserve(length - buf.len());
                        return Ok(None);
                    }
                    let frame = buf.split_to(length).freeze();
                    return Ok(Some(Decoded::Message(Message::from_frame(frame))));
                }
                Some(Boundary::Gzip(length)) => {
                    let frame_len = GZIP_LENGTH_LEN + length;
                    if buf.len() < frame_len {
                        buf.reserve(frame_len - buf.len());
                        return Ok(None);
                    }
                    let mut data = buf.split_to(frame_len).freeze();
                    data.advance(GZIP_LENGTH_LEN);
                    let frame = GzipFrame::new(data, self.limits.max_decompressed_bytes);
                    if self.defer_gzip {
                        return Ok(Some(Decoded::Gzip(frame)));
                    }
                    if let Some(rejected) = self.inflated(frame.inflate()) {
                        return Ok(Some(rejected));
                    }
                }
            }
        }
    }

    /// At end of input an unterminated text line still counts as a line; a
    /// partial binary or gzip frame is reported once as truncated.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, IngestError> {
        if let Some(decoded) = self.decode(buf)? {
            return Ok(Some(decoded));
        }
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if starts_text_line(first) {
            let last = self.lines.last_line(buf);
            return Ok(last.and_then(|outcome| check_line(outcome, &self.table, &self.limits)));
        }
        buf.clear();
        Ok(Some(Decoded::Rejected(Rejection::truncated())))
    }
}

/// Whether a message starting with `byte` is a text line (see module docs).
fn starts_text_line(byte: u8) -> bool {
    matches!(byte, b'\t' | b'\n' | b'\r' | 0x20..=0x7e)
}

/// Turns a framed line into an outcome; blank lines produce none.
fn check_line(
    outcome: LineOutcome,
    table: &PriorityTable,
    limits: &IngestLimits,
) -> Option<Decoded> {
    let line = match outcome {
        LineOutcome::TooLong => {
            return Some(Decoded::Rejected(Rejection::line_too_long(
                limits.max_line_bytes,
            )));
        }
        LineOutcome::Line(line) => line,
    };
    if line.iter().all(|byte| matches!(byte, b' ' | b'\t' | b'\r')) {
        return None;
    }
    Some(match ndjson_priority(&line, table) {
        Ok(priority) => Decoded::Message(Message::from_ndjson_line(priority, line)),
        Err(rejection) => Decoded::Rejected(rejection),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;
    use crate::gzip::encode_gzip_frame;
    use crate::message::Origin;
    use crate::reject::RejectReason;
    use bytes::{BufMut, Bytes};

    fn decoder() -> IngestDecoder {
        IngestDecoder::new(IngestLimits::default(), Arc::new(PriorityTable::default()))
    }

    fn small_decoder(
        max_frame_bytes: usize,
        max_line_bytes: usize,
        max_decompressed_bytes: usize,
    ) -> IngestDecoder {
        let limits = IngestLimits {
            max_frame_bytes,
            max_line_bytes,
            max_decompressed_bytes,
        };
        IngestDecoder::new(limits, Arc::new(PriorityTable::default()))
    }

    /// Everything `decoder` yields for `input`, end of input included.
    fn decode_all(decoder: &mut IngestDecoder, input: &[u8]) -> Vec<Decoded> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(decoded) = decoder.decode(&mut buf).unwrap() {
            out.push(decoded);
        }
        while let Some(decoded) = decoder.decode_eof(&mut buf).unwrap() {
            out.push(decoded);
        }
        out
    }

    fn message(decoded: &Decoded) -> &Message {
        match decoded {
            Decoded::Message(message) => message,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn reason(decoded: &Decoded) -> RejectReason {
        match decoded {
            Decoded::Rejected(rejection) => rejection.reason,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn ndjson(priority: u8, line: &str) -> Decoded {
        Decoded::Message(Message::from_ndjson_line(
            priority,
            Bytes::copy_from_slice(line.as_bytes()),
        ))
    }

    fn frame(priority: u8, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_frame(priority, payload, &mut buf);
        buf
    }

    #[test]
    fn mixed_formats_on_one_connection() {
        let mut input = BytesMut::new();
        input.put_slice(b"{\"level\":\"error\",\"m\":1}\n");
        encode_frame(9, b"binary payload", &mut input);
        encode_gzip_frame(b"{\"priority\":0}\n\n{\"level\":\"debug\"}\n", &mut input);
        input.put_slice(b"{\"m\":2}\r\n");
        let decoded = decode_all(&mut decoder(), &input);
        assert_eq!(decoded.len(), 5);
        assert_eq!(decoded[0], ndjson(1, "{\"level\":\"error\",\"m\":1}"));
        assert_eq!(
            decoded[1],
            Decoded::Message(Message::from_frame(frame(9, b"binary payload").freeze()))
        );
        assert_eq!(decoded[2], ndjson(0, "{\"priority\":0}"));
        assert_eq!(decoded[3], ndjson(4, "{\"level\":\"debug\"}"));
        assert_eq!(decoded[4], ndjson(3, "{\"m\":2}"));
    }

    #[test]
    fn messages_are_slices_of_the_read_buffer() {
        let mut buf = BytesMut::from(&b"{\"a\":1}\n"[..]);
        buf.put_slice(&frame(2, b"xyz"));
        let start = buf.as_ptr() as usize;
        let mut decoder = decoder();
        let line = decoder.decode(&mut buf).unwrap().unwrap();
        let binary = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(message(&line).data().as_ptr() as usize, start);
        assert_eq!(message(&binary).data().as_ptr() as usize, start + 8);
        assert_eq!(message(&binary).origin(), Origin::Frame);
    }

    #[test]
    fn blank_and_whitespace_lines_are_skipped() {
        let decoded = decode_all(
            &mut decoder(),
            b"\n\r\n  \t\r\n\t\n{\"a\":1}\n   \n \t {\"b\":2}\n\n",
        );
        assert_eq!(
            decoded,
            vec![ndjson(3, "{\"a\":1}"), ndjson(3, " \t {\"b\":2}")]
        );
    }

    #[test]
    fn every_text_line_reject_reason() {
        let decoded = decode_all(
            &mut decoder(),
            b"[1,2]\nhello\n\"s\"\n{\"priority\":256}\n{\"priority\":-1}\n{\"priority\":1.5}\n{\"priority\":\"3\"}\n{\"ok\":true}\n",
        );
        let reasons: Vec<_> = decoded[..7].iter().map(reason).collect();
        use RejectReason::*;
        assert_eq!(
            reasons,
            [
                NotAnObject,
                InvalidJson,
                NotAnObject,
                BadPriority,
                BadPriority,
                BadPriority,
                BadPriority
            ]
        );
        assert_eq!(
            decoded[7],
            ndjson(3, "{\"ok\":true}"),
            "the connection goes on"
        );
    }

    #[test]
    fn oversized_line_is_rejected_once_and_the_stream_resyncs() {
        let mut decoder = small_decoder(1024, 16, 1024);
        let mut buf = BytesMut::new();
        buf.put_slice(b"{\"pad\":\"");
        buf.put_slice(&[b'x'; 20]);
        let first = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(reason(&first), RejectReason::LineTooLong);
        assert_eq!(first, Decoded::Rejected(Rejection::line_too_long(16)));
        // The rest of the line keeps arriving and is dropped, not buffered.
        for _ in 0..100 {
            buf.put_slice(&[b'x'; 100]);
            assert_eq!(decoder.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
        }
        buf.put_slice(b"x\"}\n");
        buf.put_slice(&frame(1, b"after"));
        buf.put_slice(b"{\"a\":1}\n");
        let after = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&message(&after).payload()[..], b"after");
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap(),
            ndjson(3, "{\"a\":1}")
        );
    }

    #[test]
    fn line_at_the_limit_is_accepted_with_crlf() {
        let line = format!("{{\"p\":\"{}\"}}", "y".repeat(10));
        let mut decoder = small_decoder(1024, line.len(), 1024);
        let decoded = decode_all(&mut decoder, format!("{line}\r\n{line}x\n").as_bytes());
        assert_eq!(decoded[0], ndjson(3, &line));
        assert_eq!(reason(&decoded[1]), RejectReason::LineTooLong);
        assert_eq!(decoded.len(), 2);
    }

    #[test]
    fn empty_binary_frames() {
        for priority in [0, 0x1f, 0xff] {
            let mut buf = frame(priority, b"");
            let decoded = decoder().decode(&mut buf).unwrap().unwrap();
            assert_eq!(message(&decoded).priority(), priority);
            assert!(message(&decoded).payload().is_empty());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn short_frames_with_priority_1f_do_not_wait_for_a_gzip_magic() {
        // 5 bytes: priority 0x1f, nothing after it yet.
        let mut buf = frame(0x1f, b"");
        assert!(decoder().decode(&mut buf).unwrap().is_some());
        // 6 bytes: 1f 8b, looks like the gzip magic so far.
        let mut buf = frame(0x1f, &[0x8b]);
        let decoded = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(&message(&decoded).payload()[..], &[0x8b]);
        // 17 bytes with the full magic: still shorter than any gzip member.
        let mut payload = vec![0x8b, 0x08];
        payload.resize(12, 0);
        let mut buf = frame(0x1f, &payload);
        let decoded = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(message(&decoded).origin(), Origin::Frame);
        assert_eq!(&message(&decoded).payload()[..], &payload[..]);
    }

    #[test]
    fn binary_frame_with_priority_1f_and_payload_8b_00_is_binary() {
        let payload = [
            0x8b, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ];
        let whole = frame(0x1f, &payload);
        let mut decoder = decoder();
        let mut buf = BytesMut::new();
        // Fed byte by byte, the decision waits for byte 6 and then the frame.
        for &byte in &whole[..whole.len() - 1] {
            buf.put_u8(byte);
            assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        }
        buf.put_u8(whole[whole.len() - 1]);
        let decoded = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(message(&decoded).priority(), 0x1f);
        assert_eq!(&message(&decoded).payload()[..], &payload[..]);
    }

    #[test]
    fn gzip_magic_after_an_oversized_length_is_fatal() {
        // Gzip magic after a length word over max_frame_bytes: fatal, whatever follows.
        let mut decoder = small_decoder(64, 64, 64);
        let mut buf = BytesMut::from(&[0, 0, 0, 65, 0x1f, 0x8b, 0x08][..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(IngestError::BadLength {
                length: 65,
                max: 64
            })
        ));
    }

    #[test]
    fn gzip_lines_are_checked_like_plain_lines() {
        let mut input = BytesMut::new();
        let long = format!("{{\"p\":\"{}\"}}", "z".repeat(40));
        encode_gzip_frame(
            format!("{{\"level\":\"WARN\"}}\r\n[1]\n{long}\n   \n{{\"last\":true}}").as_bytes(),
            &mut input,
        );
        let decoded = decode_all(&mut small_decoder(1024, 32, 1024), &input);
        assert_eq!(decoded.len(), 4);
        assert_eq!(decoded[0], ndjson(2, "{\"level\":\"WARN\"}"));
        assert_eq!(reason(&decoded[1]), RejectReason::NotAnObject);
        assert_eq!(reason(&decoded[2]), RejectReason::LineTooLong);
        assert_eq!(
            decoded[3],
            ndjson(3, "{\"last\":true}"),
            "unterminated last line counts"
        );
    }

    #[test]
    fn gzip_long_unterminated_last_line_is_rejected() {
        let mut input = BytesMut::new();
        encode_gzip_frame(
            format!("{{\"a\":1}}\n{}", "q".repeat(100)).as_bytes(),
            &mut input,
        );
        let decoded = decode_all(&mut small_decoder(1024, 32, 1024), &input);
        assert_eq!(decoded.len(), 2);
        assert_eq!(reason(&decoded[1]), RejectReason::LineTooLong);
    }

    #[test]
    fn corrupt_and_oversized_gzip_are_rejected_once_and_the_stream_goes_on() {
        let mut input = BytesMut::new();
        let mut corrupt = BytesMut::new();
        encode_gzip_frame(b"{\"a\":1}\n", &mut corrupt);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        input.put_slice(&corrupt);
        encode_gzip_frame(&[b' '; 200], &mut input);
        input.put_slice(b"{\"b\":2}\n");
        let decoded = decode_all(&mut small_decoder(1024, 1024, 100), &input);
        assert_eq!(decoded.len(), 3);
        assert_eq!(reason(&decoded[0]), RejectReason::CorruptGzip);
        assert_eq!(reason(&decoded[1]), RejectReason::GzipTooLarge);
        assert_eq!(decoded[2], ndjson(3, "{\"b\":2}"));
    }

    #[test]
    fn bad_binary_lengths_are_fatal() {
        for word in [[0, 0, 0, 0], [0, 0, 0, 4], [0, 0x10, 0, 1], [0xff; 4]] {
            let mut buf = BytesMut::from(&word[..]);
            let error = decoder().decode(&mut buf).unwrap_err();
            let IngestError::BadLength { length, max } = error else {
                panic!("expected BadLength, got {error}");
            };
            assert_eq!((length, max), (u32::from_be_bytes(word), 1024 * 1024));
        }
        let error = decoder()
            .decode(&mut BytesMut::from(&[0xff; 4][..]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "binary frame length 4294967295 outside 5..=1048576; closing connection"
        );
    }

    #[test]
    fn max_frame_bytes_is_capped_below_whitespace_bytes() {
        let mut decoder = small_decoder(usize::MAX, 1024, 1024);
        let mut buf = BytesMut::from(&[0x08, 0, 0, 1][..]);
        let error = decoder.decode(&mut buf).unwrap_err();
        assert!(matches!(
            error,
            IngestError::BadLength {
                max: MAX_FRAME_BYTES_CEILING,
                ..
            }
        ));
    }

    #[test]
    fn in_message_covers_partial_messages_and_skipped_lines() {
        let mut decoder = small_decoder(1024, 8, 1024);
        let mut buf = BytesMut::from(&b"{\"a\":1}\n"[..]);
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert!(!decoder.in_message(&buf), "at a boundary");
        buf.put_slice(b"{\"b");
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert!(decoder.in_message(&buf), "half a line");
        buf.put_slice(b"xxxxxxxxxxxx");
        assert!(decoder.decode(&mut buf).unwrap().is_some(), "too long");
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        assert!(
            decoder.in_message(&buf),
            "the rest of a long line is skipped"
        );
        buf.put_slice(b"x\n");
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert!(!decoder.in_message(&buf));
    }

    #[test]
    fn eof_completes_an_unterminated_line() {
        let mut decoder = decoder();
        let mut buf = BytesMut::from(&b"{\"a\":1}\n{\"level\":\"fatal\"}\r"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap(),
            ndjson(3, "{\"a\":1}")
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(
            decoder.decode_eof(&mut buf).unwrap().unwrap(),
            ndjson(0, "{\"level\":\"fatal\"}")
        );
        assert_eq!(decoder.decode_eof(&mut buf).unwrap(), None);

        let decoded = decode_all(&mut self::decoder(), b"{\"a\":");
        assert_eq!(
            decoded.iter().map(reason).collect::<Vec<_>>(),
            [RejectReason::InvalidJson]
        );
        assert!(
            decode_all(&mut self::decoder(), b"  \t").is_empty(),
            "blank last line"
        );
    }

    #[test]
    fn eof_inside_a_frame_is_truncated_once() {
        let whole_binary = frame(4, b"cut short");
        let mut whole_gzip = BytesMut::new();
        encode_gzip_frame(b"{\"a\":1}\n", &mut whole_gzip);
        for partial in [
            &whole_binary[..2],
            &whole_binary[..7],
            &whole_gzip[..5],
            &whole_gzip[..20],
        ] {
            let decoded = decode_all(&mut decoder(), partial);
            assert_eq!(decoded.len(), 1, "{partial:?}");
            assert_eq!(reason(&decoded[0]), RejectReason::Truncated);
        }
    }

    #[test]
    fn eof_while_discarding_an_oversized_line_yields_nothing_more() {
        let decoded = decode_all(&mut small_decoder(1024, 8, 1024), &[b'a'; 100]);
        assert_eq!(
            decoded.iter().map(reason).collect::<Vec<_>>(),
            [RejectReason::LineTooLong]
        );
    }

    /// Like `decode_all`, from a decoder that defers gzip: each frame is
    /// inflated here, in steps of `step` bytes, and handed back.
    fn decode_all_deferred(decoder: IngestDecoder, input: &[u8], step: usize) -> Vec<Decoded> {
        let mut decoder = decoder.defer_gzip();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let feed = |decoded: Decoded, decoder: &mut IngestDecoder, out: &mut Vec<Decoded>| {
            let Decoded::Gzip(frame) = decoded else {
                out.push(decoded);
                return;
            };
            let mut inflater = frame.inflater();
            let inflated = loop {
                if let Some(outcome) = inflater.step(step) {
                    break outcome;
                }
            };
            out.extend(decoder.inflated(inflated));
        };
        // Fed in pieces, so frames and lines straddle reads.
        for piece in input.chunks(97) {
            buf.put_slice(piece);
            while let Some(decoded) = decoder.decode(&mut buf).unwrap() {
                feed(decoded, &mut decoder, &mut out);
            }
        }
        while let Some(decoded) = decoder.decode_eof(&mut buf).unwrap() {
            feed(decoded, &mut decoder, &mut out);
        }
        out
    }

    #[test]
    fn deferred_gzip_decodes_the_same_as_inline() {
        let mut input = BytesMut::new();
        input.put_slice(b"{\"a\":1}\n");
        encode_gzip_frame(b"{\"level\":\"WARN\"}\n[1]\n\n{\"last\":true}", &mut input);
        encode_frame(9, b"binary", &mut input);
        let mut corrupt = BytesMut::new();
        encode_gzip_frame(b"{\"a\":1}\n", &mut corrupt);
        let crc = corrupt.len() - 8;
        corrupt[crc] ^= 0xff;
        input.put_slice(&corrupt);
        encode_gzip_frame(&[b' '; 300], &mut input);
        encode_gzip_frame(b"", &mut input);
        input.put_slice(b"{\"b\":2}\n");
        encode_gzip_frame(b"{\"cut\":1}\n", &mut input);
        input.truncate(input.len() - 3);
        let inline = decode_all(&mut small_decoder(1024, 1024, 200), &input);
        assert_eq!(inline.len(), 9, "{inline:?}");
        for step in [1, 7, 64 * 1024] {
            let deferred = decode_all_deferred(small_decoder(1024, 1024, 200), &input, step);
            assert_eq!(deferred, inline, "step {step}");
        }
    }

    #[test]
    fn partial_frames_are_bounded_by_their_length() {
        let mut decoder = small_decoder(64, 64, 64);
        let mut buf = BytesMut::from(&[0, 0, 0, 64, 1][..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= 64, "the whole frame is reserved up front");
    }
}
