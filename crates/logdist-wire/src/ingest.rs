//! The emitter-side decoder: NDJSON lines, syslog messages, binary frames
//! and gzip frames, mixed freely on one connection.
//!
//! The format is chosen again at every message boundary from the first byte:
//!
//! * `<` starts a syslog message ended by `\n` (RFC 6587 non-transparent
//!   framing).
//! * `1`..=`9` starts an RFC 6587 octet count (`MSG-LEN SP SYSLOG-MSG`) when
//!   one to ten digits are followed by a space; otherwise (`42\n`, `1.5\n`)
//!   the message is a text line.
//! * `\n`, `\r`, space, tab or any other printable ASCII byte (0x20..=0x7E)
//!   starts a text line, read up to `\n` and validated as an NDJSON object.
//!   This is unambiguous because the two framed formats start with a big-endian
//!   length word no larger than [`MAX_FRAME_BYTES_CEILING`] (128 MiB =
//!   0x0800_0000), whose first byte is therefore at most 0x08: below tab.
//! * Anything else starts a length word. When the four bytes after it are a
//!   gzip header (see [`IngestDecoder`]) it is a gzip frame, otherwise a binary
//!   frame.
//!
//! A listener may pin one format ([`IngestFormat`]): messages of the others
//! are then rejected as `wrong_format`, each skipped by its own framing.
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
use crate::syslog::{OctetHeader, octet_header, strip_trailing_newline, syslog_message};

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
    /// Longest NDJSON line or syslog message, without its line terminator
    /// (an octet count above it is refused before anything is buffered).
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

/// The formats a listener takes (`format` in its configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestFormat {
    /// Every format, told apart at each message boundary.
    #[default]
    Auto,
    /// NDJSON lines, plain or in gzip frames; `<` and digits start text
    /// lines, as before syslog was added.
    Ndjson,
    /// Binary frames only.
    Frame,
    /// Syslog messages only, in either framing.
    Syslog,
}

impl IngestFormat {
    fn as_str(self) -> &'static str {
        match self {
            IngestFormat::Auto => "auto",
            IngestFormat::Ndjson => "ndjson",
            IngestFormat::Frame => "frame",
            IngestFormat::Syslog => "syslog",
        }
    }

    /// Whether `<` and digits start syslog messages.
    fn detects_syslog(self) -> bool {
        matches!(self, IngestFormat::Auto | IngestFormat::Syslog)
    }

    fn takes(self, kind: Kind) -> bool {
        match self {
            IngestFormat::Auto => true,
            IngestFormat::Ndjson => matches!(kind, Kind::Ndjson | Kind::Gzip),
            IngestFormat::Frame => kind == Kind::Frame,
            IngestFormat::Syslog => kind == Kind::Syslog,
        }
    }
}

/// A message's format, for [`IngestFormat::takes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ndjson,
    Gzip,
    Frame,
    Syslog,
}

impl Kind {
    fn described(self) -> &'static str {
        match self {
            Kind::Ndjson => "a text line",
            Kind::Gzip => "a gzip frame",
            Kind::Frame => "a binary frame",
            Kind::Syslog => "a syslog message",
        }
    }
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
    format: IngestFormat,
    /// Bytes still to drop of an octet-counted message or a frame that was
    /// rejected without being buffered.
    skip: u64,
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
    /// A syslog message up to `\n`.
    SyslogLine,
    /// An octet-counted syslog message: `count` bytes after `header_len`.
    OctetCounted {
        header_len: usize,
        count: u64,
    },
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
            format: IngestFormat::Auto,
            skip: 0,
        }
    }

    /// Takes only `format` (see [`IngestFormat`]).
    pub fn format(mut self, format: IngestFormat) -> Self {
        self.format = format;
        self
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
        !buf.is_empty() || self.lines.is_discarding() || self.skip > 0
    }

    /// Drops what is left of a message rejected unbuffered. Returns `true`
    /// once the buffer starts at a message boundary again.
    fn skip_rejected(&mut self, buf: &mut BytesMut) -> bool {
        if self.skip == 0 {
            return true;
        }
        let now = usize::try_from(self.skip).map_or(buf.len(), |skip| skip.min(buf.len()));
        buf.advance(now);
        self.skip -= now as u64;
        self.skip == 0
    }

    /// Rejects a message of `kind` this listener does not take, and skips
    /// its `len` bytes as they come.
    fn skip_wrong_format(&mut self, buf: &mut BytesMut, kind: Kind, len: u64) -> Decoded {
        self.skip = len;
        self.skip_rejected(buf);
        Decoded::Rejected(Rejection::wrong_format(
            kind.described(),
            self.format.as_str(),
        ))
    }

    /// Decides the format of the message at the front of `buf` (not empty);
    /// `None` when more bytes are needed to tell.
    fn boundary(&self, buf: &BytesMut) -> Result<Option<Boundary>, IngestError> {
        if self.format.detects_syslog() {
            match buf[0] {
                b'<' => return Ok(Some(Boundary::SyslogLine)),
                b'1'..=b'9' => match octet_header(buf) {
                    OctetHeader::NeedMore => return Ok(None),
                    OctetHeader::Counted { header_len, count } => {
                        return Ok(Some(Boundary::OctetCounted { header_len, count }));
                    }
                    OctetHeader::NotCounted => return Ok(Some(Boundary::TextLine)),
                },
                _ => {}
            }
        }
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

    /// A framed text line: an NDJSON message, unless the listener takes
    /// none (blank lines are skipped either way).
    fn text_line(&self, outcome: LineOutcome) -> Option<Decoded> {
        if !self.format.takes(Kind::Ndjson)
            && let LineOutcome::Line(line) = &outcome
        {
            if is_blank(line) {
                return None;
            }
            return Some(Decoded::Rejected(Rejection::wrong_format(
                Kind::Ndjson.described(),
                self.format.as_str(),
            )));
        }
        check_line(outcome, &self.table, &self.limits)
    }

    /// A framed syslog line (LF framing).
    fn syslog_line(&self, outcome: LineOutcome) -> Decoded {
        match outcome {
            LineOutcome::TooLong => {
                Decoded::Rejected(Rejection::line_too_long(self.limits.max_line_bytes))
            }
            LineOutcome::Line(_) if !self.format.takes(Kind::Syslog) => Decoded::Rejected(
                Rejection::wrong_format(Kind::Syslog.described(), self.format.as_str()),
            ),
            LineOutcome::Line(line) => match syslog_message(line, &self.table) {
                Ok(message) => Decoded::Message(message),
                Err(rejection) => Decoded::Rejected(rejection),
            },
        }
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
            if !self.skip_rejected(buf) || !self.lines.skip_rejected(buf) || buf.is_empty() {
                return Ok(None);
            }
            match self.boundary(buf)? {
                None => return Ok(None),
                Some(Boundary::TextLine) => match self.lines.next_line(buf) {
                    None => return Ok(None),
                    Some(outcome) => {
                        if let Some(decoded) = self.text_line(outcome) {
                            return Ok(Some(decoded));
                        }
                    }
                },
                Some(Boundary::SyslogLine) => {
                    return Ok(self.lines.next_line(buf).map(|o| self.syslog_line(o)));
                }
                Some(Boundary::OctetCounted { header_len, count }) => {
                    if !self.format.takes(Kind::Syslog) {
                        let len = header_len as u64 + count;
                        return Ok(Some(self.skip_wrong_format(buf, Kind::Syslog, len)));
                    }
                    let max = self.limits.max_line_bytes;
                    let Some(count) = usize::try_from(count).ok().filter(|&c| c <= max) else {
                        // Refused before it is buffered: its bytes are dropped as they come.
                        buf.advance(header_len);
                        self.skip = count;
                        self.skip_rejected(buf);
                        return Ok(Some(Decoded::Rejected(Rejection::line_too_long(max))));
                    };
                    let frame_len = header_len + count;
                    if buf.len() < frame_len {
                        buf.reserve(frame_len - buf.len());
                        return Ok(None);
                    }
                    buf.advance(header_len);
                    let message = strip_trailing_newline(buf.split_to(count).freeze());
                    return Ok(Some(match syslog_message(message, &self.table) {
                        Ok(message) => Decoded::Message(message),
                        Err(rejection) => Decoded::Rejected(rejection),
                    }));
                }
                Some(Boundary::Frame(length)) if !self.format.takes(Kind::Frame) => {
                    return Ok(Some(self.skip_wrong_format(
                        buf,
                        Kind::Frame,
                        length as u64,
                    )));
                }
                Some(Boundary::Gzip(length)) if !self.format.takes(Kind::Gzip) => {
                    let len = (GZIP_LENGTH_LEN + length) as u64;
                    return Ok(Some(self.skip_wrong_format(buf, Kind::Gzip, len)));
                }
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

    /// At end of input an unterminated text line or syslog line still
    /// counts as a line; a partial binary frame, gzip frame or octet-counted
    /// message is reported once as truncated.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, IngestError> {
        if let Some(decoded) = self.decode(buf)? {
            return Ok(Some(decoded));
        }
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let boundary = self.boundary(buf)?;
        if let Some(Boundary::OctetCounted { .. }) = boundary {
            buf.clear();
            return Ok(Some(Decoded::Rejected(Rejection::truncated_syslog())));
        }
        if let Some(Boundary::SyslogLine) = boundary {
            return Ok(self.lines.last_line(buf).map(|o| self.syslog_line(o)));
        }
        // Digits without their space are a text line, like any text.
        if starts_text_line(first) {
            let last = self.lines.last_line(buf);
            return Ok(last.and_then(|outcome| self.text_line(outcome)));
        }
        buf.clear();
        Ok(Some(Decoded::Rejected(Rejection::truncated())))
    }
}

/// Whether a message starting with `byte` is a text line, once syslog has
/// had its turn (see module docs).
fn starts_text_line(byte: u8) -> bool {
    matches!(byte, b'\t' | b'\n' | b'\r' | 0x20..=0x7e)
}

/// A line of only spaces, tabs and `\r`: no message.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|byte| matches!(byte, b' ' | b'\t' | b'\r'))
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
    if is_blank(&line) {
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

    fn syslog(priority: u8, text: &str) -> Decoded {
        Decoded::Message(Message::from_syslog(
            priority,
            Bytes::copy_from_slice(text.as_bytes()),
        ))
    }

    fn reasons(decoded: &[Decoded]) -> Vec<RejectReason> {
        decoded.iter().map(reason).collect()
    }

    #[test]
    fn syslog_in_both_framings_mixed_with_everything_else() {
        let mut input = BytesMut::new();
        input.put_slice(b"<11>1 - host app - - - lf framed\n");
        input.put_slice(b"29 <8>Oct 11 22:14:15 h a: emerg");
        input.put_slice(b"{\"a\":1}\n");
        encode_frame(9, b"bin", &mut input);
        input.put_slice(b"<15>crlf\r\n");
        input.put_slice(b"23 <12>1 - - - - - - warn\n");
        encode_gzip_frame(b"{\"level\":\"debug\"}\n", &mut input);
        input.put_slice(b"<14>unterminated");
        let decoded = decode_all(&mut decoder(), &input);
        assert_eq!(
            decoded,
            vec![
                syslog(1, "<11>1 - host app - - - lf framed"),
                syslog(0, "<8>Oct 11 22:14:15 h a: emerg"),
                ndjson(3, "{\"a\":1}"),
                Decoded::Message(Message::from_frame(frame(9, b"bin").freeze())),
                syslog(4, "<15>crlf"),
                syslog(2, "<12>1 - - - - - - warn"),
                ndjson(4, "{\"level\":\"debug\"}"),
                syslog(3, "<14>unterminated"),
            ]
        );
    }

    #[test]
    fn digits_without_a_space_are_a_text_line() {
        let decoded = decode_all(&mut decoder(), b"42\n1.5\n12345678901 x\n7");
        use RejectReason::*;
        assert_eq!(
            reasons(&decoded),
            [NotAnObject, NotAnObject, InvalidJson, NotAnObject]
        );
    }

    #[test]
    fn syslog_without_a_pri_is_rejected_and_the_stream_goes_on() {
        let decoded = decode_all(&mut decoder(), b"<192>too big\n<x>\n5 hello<7>ok\n3 <1>\n");
        assert_eq!(reasons(&decoded[..3]), [RejectReason::BadSyslog; 3]);
        assert_eq!(decoded[3], syslog(4, "<7>ok"));
        assert_eq!(decoded[4], syslog(0, "<1>"), "a counted \\n is not kept");
        assert_eq!(decoded.len(), 5);
    }

    #[test]
    fn octet_count_over_the_limit_is_skipped_unbuffered() {
        let mut decoder = small_decoder(1024, 16, 1024);
        let mut buf = BytesMut::from(&b"1000 <1>"[..]);
        let first = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first, Decoded::Rejected(Rejection::line_too_long(16)));
        assert!(buf.is_empty());
        // 997 more bytes belong to it: dropped as they come, never buffered.
        for _ in 0..9 {
            buf.put_slice(&[b'z'; 100]);
            assert_eq!(decoder.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
            assert!(decoder.in_message(&buf));
        }
        buf.put_slice(&[b'z'; 97]);
        buf.put_slice(b"<13>next\n");
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap(),
            syslog(3, "<13>next")
        );
        assert!(!decoder.in_message(&buf));
        // At the limit: taken; LF-framed over it: line_too_long.
        let decoded = decode_all(
            &mut small_decoder(1024, 16, 1024),
            b"16 <13>123456789012<13>12345678901234\n<13>ok\n",
        );
        assert_eq!(decoded[0], syslog(3, "<13>123456789012"));
        assert_eq!(reason(&decoded[1]), RejectReason::LineTooLong);
        assert_eq!(decoded[2], syslog(3, "<13>ok"));
    }

    #[test]
    fn octet_counted_message_cut_by_eof_is_truncated() {
        let decoded = decode_all(&mut decoder(), b"<13>a\n20 <13>cut");
        assert_eq!(decoded[0], syslog(3, "<13>a"));
        assert_eq!(reason(&decoded[1]), RejectReason::Truncated);
        assert_eq!(decoded.len(), 2);
        let Decoded::Rejected(rejection) = &decoded[1] else {
            unreachable!()
        };
        assert!(rejection.detail.contains("octet-counted"), "{rejection}");
    }

    #[test]
    fn a_pinned_format_rejects_the_others_in_step() {
        let mut input = BytesMut::new();
        input.put_slice(b"{\"a\":1}\n");
        input.put_slice(b"<13>lf\n");
        input.put_slice(b"8 <13>oct\n");
        encode_frame(2, b"bin", &mut input);
        encode_gzip_frame(b"{\"b\":2}\n", &mut input);
        input.put_slice(b"  \n");
        input.put_slice(b"{\"c\":3}\n");
        let run = |format| {
            decode_all(&mut decoder().format(format), &input)
                .into_iter()
                .map(|d| match d {
                    Decoded::Message(m) => format!("{:?}", m.origin()),
                    Decoded::Rejected(r) => r.reason.to_string(),
                    Decoded::Gzip(_) => unreachable!(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            run(IngestFormat::Auto),
            ["Ndjson", "Syslog", "Syslog", "Frame", "Ndjson", "Ndjson"]
        );
        assert_eq!(
            run(IngestFormat::Syslog),
            [
                "wrong_format",
                "Syslog",
                "Syslog",
                "wrong_format",
                "wrong_format",
                "wrong_format"
            ]
        );
        // As before syslog: `<` and digits start NDJSON lines (rejected ones here).
        assert_eq!(
            run(IngestFormat::Ndjson),
            [
                "Ndjson",
                "invalid_json",
                "invalid_json",
                "wrong_format",
                "Ndjson",
                "Ndjson"
            ]
        );
        assert_eq!(
            run(IngestFormat::Frame),
            [
                "wrong_format",
                "wrong_format",
                "wrong_format",
                "Frame",
                "wrong_format",
                "wrong_format"
            ]
        );
    }

    #[test]
    fn the_protocol_syslog_examples_decode() {
        let protocol = include_str!("../../../docs/protocol.md");
        let section = &protocol[protocol.find("### 2.4a Syslog message").unwrap()..];
        let examples = &section[section.find("Examples, each one message").unwrap()..];
        let block = examples.split("```").nth(1).unwrap();
        let wire = block.trim_start().replace("\\n", "\n");
        let decoded = decode_all(&mut decoder(), wire.as_bytes());
        assert_eq!(decoded.len(), 3, "{decoded:?}");
        for item in &decoded {
            assert_eq!(message(item).priority(), 1);
            assert_eq!(message(item).origin(), Origin::Syslog);
            assert!(message(item).data().ends_with(b"disk full"));
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
