//! The unit that flows through logdist: one log message, as bytes that still
//! point into the buffer it was read from.

use bytes::Bytes;

/// How a message arrived, which decides how it is re-encoded for an analyzer.
/// In a dead-letter record it is written `"ndjson"`, `"frame"` or `"syslog"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// An NDJSON line (plain or from inside a gzip frame).
    Ndjson,
    /// A seed binary frame.
    Frame,
    /// A syslog message (RFC 5424 or RFC 3164), LF-framed or octet-counted.
    Syslog,
}

/// One log message.
///
/// `data` is a slice of the read buffer, never a copy: for a binary frame it is
/// the *whole* frame (length word, priority byte, payload) so it can be written to
/// a frame-format analyzer unchanged; for an NDJSON line it is the line without its
/// `\n` (and without a trailing `\r`); for a syslog message it is the message
/// as received, without its framing (octet count or trailing `\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    priority: u8,
    origin: Origin,
    data: Bytes,
}

/// Bytes before the payload in a binary frame: u32 length + priority byte.
pub const FRAME_HEADER_LEN: usize = 5;

impl Message {
    /// A message from an NDJSON line (without line terminator) and its priority.
    pub fn from_ndjson_line(priority: u8, line: Bytes) -> Self {
        Message {
            priority,
            origin: Origin::Ndjson,
            data: line,
        }
    }

    /// A syslog message (without framing) and its priority.
    pub fn from_syslog(priority: u8, message: Bytes) -> Self {
        Message {
            priority,
            origin: Origin::Syslog,
            data: message,
        }
    }

    /// A message from a complete binary frame, header included.
    ///
    /// # Panics
    /// If `frame` is shorter than the 5-byte header; decoders check that first.
    pub fn from_frame(frame: Bytes) -> Self {
        assert!(
            frame.len() >= FRAME_HEADER_LEN,
            "binary frame shorter than its header"
        );
        Message {
            priority: frame[4],
            origin: Origin::Frame,
            data: frame,
        }
    }

    pub fn priority(&self) -> u8 {
        self.priority
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The bytes as they travelled: the whole frame, or the line.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The log content: the frame payload after the header, or the whole
    /// line or syslog message.
    pub fn payload(&self) -> Bytes {
        match self.origin {
            Origin::Ndjson | Origin::Syslog => self.data.clone(),
            Origin::Frame => self.data.slice(FRAME_HEADER_LEN..),
        }
    }
}
