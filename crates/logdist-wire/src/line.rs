//! Newline framing with a length limit, shared by every line-based format.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// What the framer found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineOutcome {
    /// A line without its `\n` or `\r\n`, sliced out of the buffer.
    Line(Bytes),
    /// A line longer than the limit; its bytes are being skipped.
    TooLong,
}

/// Splits lines off a buffer without copying them.
///
/// An oversized line is reported as soon as it is known to be too long and its
/// bytes are then dropped as they arrive, up to and including its `\n`: a peer
/// sending an endless line costs at most `max_line_bytes + 1` bytes of buffer.
#[derive(Debug)]
pub(crate) struct LineFramer {
    max_line_bytes: usize,
    /// Bytes at the front of the buffer already searched for `\n`, so a line
    /// arriving in many small reads is scanned once, not once per read.
    scanned: usize,
    /// Inside a line already reported as too long.
    discarding: bool,
}

impl LineFramer {
    pub(crate) fn new(max_line_bytes: usize) -> Self {
        LineFramer {
            max_line_bytes,
            scanned: 0,
            discarding: false,
        }
    }

    /// Whether the rest of a line already reported as too long is being skipped.
    pub(crate) fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Drops the rest of a line already reported as too long. Returns `true`
    /// once the buffer starts at a line boundary again, `false` when the
    /// buffer was used up first (then it is empty and more input is needed).
    pub(crate) fn skip_rejected(&mut self, buf: &mut BytesMut) -> bool {
        if !self.discarding {
            return true;
        }
        match memchr::memchr(b'\n', buf) {
            Some(end) => {
                buf.advance(end + 1);
                self.discarding = false;
                true
            }
            None => {
                buf.clear();
                false
            }
        }
    }

    /// Frames the next line at the front of `buf`, first skipping what is
    /// left of a rejected one. `None` means more input is needed.
    pub(crate) fn next_line(&mut self, buf: &mut BytesMut) -> Option<LineOutcome> {
        if !self.skip_rejected(buf) {
            return None;
        }
        // A line of exactly max bytes may still be followed by "\r\n", so its
        // `\n` can sit at index max + 1: that is as far as we ever look.
        let window_len = self.max_line_bytes.saturating_add(2);
        let window = buf.len().min(window_len);
        match memchr::memchr(b'\n', &buf[self.scanned..window]) {
            Some(offset) => {
                let newline = self.scanned + offset;
                self.scanned = 0;
                let mut line = buf.split_to(newline + 1);
                line.truncate(newline);
                if line.last() == Some(&b'\r') {
                    line.truncate(newline - 1);
                }
                Some(self.check_length(line))
            }
            None if window == window_len => {
                buf.advance(window);
                self.scanned = 0;
                self.discarding = true;
                Some(LineOutcome::TooLong)
            }
            None => {
                self.scanned = window;
                None
            }
        }
    }

    /// At end of input: the unterminated rest of the buffer is the last line.
    pub(crate) fn last_line(&mut self, buf: &mut BytesMut) -> Option<LineOutcome> {
        self.scanned = 0;
        if !self.skip_rejected(buf) || buf.is_empty() {
            return None;
        }
        let mut line = buf.split();
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        Some(self.check_length(line))
    }

    fn check_length(&self, line: BytesMut) -> LineOutcome {
        if line.len() > self.max_line_bytes {
            LineOutcome::TooLong
        } else {
            LineOutcome::Line(line.freeze())
        }
    }
}

/// Reads newline-delimited lines, e.g. what the distributor sends an
/// ndjson-format analyzer: each item is one line without its terminator.
///
/// Unlike emitter ingest, an over-long line here is an error, not something to
/// skip: an analyzer reading its own distributor has no one to report it to.
#[derive(Debug)]
pub struct NdjsonLineDecoder {
    max: usize,
    lines: LineFramer,
}

impl NdjsonLineDecoder {
    /// `max` bounds a line without its terminator.
    pub fn new(max: usize) -> Self {
        NdjsonLineDecoder {
            max,
            lines: LineFramer::new(max),
        }
    }

    fn item(&self, outcome: Option<LineOutcome>) -> io::Result<Option<Bytes>> {
        match outcome {
            None => Ok(None),
            Some(LineOutcome::Line(line)) => Ok(Some(line)),
            Some(LineOutcome::TooLong) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line exceeds {} bytes", self.max),
            )),
        }
    }
}

impl Decoder for NdjsonLineDecoder {
    type Item = Bytes;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
        let outcome = self.lines.next_line(buf);
        self.item(outcome)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None => {
                let outcome = self.lines.last_line(buf);
                self.item(outcome)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn line(text: &str) -> Option<LineOutcome> {
        Some(LineOutcome::Line(Bytes::copy_from_slice(text.as_bytes())))
    }

    #[test]
    fn splits_lines_and_strips_carriage_returns() {
        let mut framer = LineFramer::new(100);
        let mut buf = BytesMut::from(&b"one\r\ntwo\n\nthree\r\r\nrest"[..]);
        assert_eq!(framer.next_line(&mut buf), line("one"));
        assert_eq!(framer.next_line(&mut buf), line("two"));
        assert_eq!(framer.next_line(&mut buf), line(""));
        assert_eq!(
            framer.next_line(&mut buf),
            line("three\r"),
            "only one \\r is stripped"
        );
        assert_eq!(framer.next_line(&mut buf), None);
        assert_eq!(&buf[..], b"rest");
        assert_eq!(framer.last_line(&mut buf), line("rest"));
        assert_eq!(framer.last_line(&mut buf), None);
    }

    #[test]
    fn lines_are_slices_of_the_buffer() {
        let mut framer = LineFramer::new(100);
        let mut buf = BytesMut::from(&b"abc\ndef\n"[..]);
        let start = buf.as_ptr();
        let Some(LineOutcome::Line(first)) = framer.next_line(&mut buf) else {
            panic!("expected a line");
        };
        assert_eq!(first.as_ptr(), start);
    }

    #[test]
    fn the_limit_excludes_the_terminator() {
        let mut framer = LineFramer::new(3);
        let mut buf = BytesMut::from(&b"abc\r\nabc\nabcd\n"[..]);
        assert_eq!(framer.next_line(&mut buf), line("abc"));
        assert_eq!(framer.next_line(&mut buf), line("abc"));
        assert_eq!(framer.next_line(&mut buf), Some(LineOutcome::TooLong));
        assert!(buf.is_empty());
        assert!(
            framer.skip_rejected(&mut buf),
            "the whole line was in the buffer"
        );
    }

    #[test]
    fn oversized_line_is_reported_once_then_skipped_without_buffering() {
        let mut framer = LineFramer::new(4);
        let mut buf = BytesMut::from(&b"abcdefgh"[..]);
        assert_eq!(framer.next_line(&mut buf), Some(LineOutcome::TooLong));
        assert!(buf.len() <= 5);
        assert!(!framer.skip_rejected(&mut buf));
        assert!(buf.is_empty());
        buf.put_slice(b"ijklmnop");
        assert!(!framer.skip_rejected(&mut buf));
        assert!(buf.is_empty());
        buf.put_slice(b"qr\nok\n");
        assert!(framer.skip_rejected(&mut buf));
        assert_eq!(framer.next_line(&mut buf), line("ok"));
    }

    #[test]
    fn a_line_arriving_byte_by_byte_is_found() {
        let mut framer = LineFramer::new(10);
        let mut buf = BytesMut::new();
        for &byte in b"hello" {
            buf.put_u8(byte);
            assert_eq!(framer.next_line(&mut buf), None);
        }
        buf.put_slice(b"\r\n");
        assert_eq!(framer.next_line(&mut buf), line("hello"));
    }

    #[test]
    fn last_line_over_the_limit_is_too_long() {
        let mut framer = LineFramer::new(3);
        let mut buf = BytesMut::from(&b"abcd"[..]);
        assert_eq!(framer.next_line(&mut buf), None);
        assert_eq!(framer.last_line(&mut buf), Some(LineOutcome::TooLong));
        assert!(buf.is_empty());
    }

    #[test]
    fn ndjson_line_decoder_reads_lines_and_refuses_long_ones() {
        let mut decoder = NdjsonLineDecoder::new(8);
        let mut buf = BytesMut::from(&b"{\"a\":1}\n{\"b\":2}"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap(),
            &b"{\"a\":1}"[..]
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(
            decoder.decode_eof(&mut buf).unwrap().unwrap(),
            &b"{\"b\":2}"[..]
        );
        assert_eq!(decoder.decode_eof(&mut buf).unwrap(), None);

        let mut long = BytesMut::from(&b"0123456789\n"[..]);
        let error = decoder.decode(&mut long).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(error.to_string(), "line exceeds 8 bytes");
    }
}
