//! logdist wire formats: framing and decoding for everything that crosses a
//! socket, with no sockets and no runtime.
//!
//! * Emitters → distributor: [`IngestDecoder`] reads NDJSON lines, syslog
//!   messages (both RFC 6587 framings), binary frames and gzip frames mixed
//!   on one connection ([`encode_frame`], [`encode_gzip_frame`],
//!   [`encode_octet_counted`] and [`encode_syslog_line`] write them).
//! * Distributor → analyzers: [`OutboundBatch`] encodes messages in the
//!   analyzer's [`AnalyzerFormat`]; analyzers read them back with
//!   [`FrameDecoder`] or [`NdjsonLineDecoder`].
//! * Analyzers → distributor: [`HandshakeDecoder`], then
//!   [`SeedControlDecoder`] or [`JsonControlDecoder`].
//! * The dead-letter file: one [`DeadLetterRecord`] per line.

mod analyzer;
mod dead_letter;
mod frame;
mod gzip;
mod ingest;
mod line;
mod message;
mod ndjson;
mod outbound;
mod reject;
mod reply;
mod syslog;

pub use analyzer::{
    AnalyzerFormat, Control, ControlError, Handshake, HandshakeDecoder, HandshakeError, Hello,
    JsonControlDecoder, MIN_SEED_WEIGHT, SeedControlDecoder, hello_ok, seed_ack_word,
    seed_handshake, seed_weight_word,
};
pub use dead_letter::{DeadLetterRecord, MessageField, PayloadError};
pub use frame::{FrameDecoder, FrameError, encode_frame};
pub use gzip::{GzipFrame, Inflater, encode_gzip_frame};
pub use ingest::{
    Decoded, IngestDecoder, IngestError, IngestFormat, IngestLimits, MAX_FRAME_BYTES_CEILING,
};
pub use line::NdjsonLineDecoder;
pub use message::{FRAME_HEADER_LEN, Message, Origin};
pub use ndjson::{
    DEFAULT_LEVELS, DEFAULT_PRIORITY, DEFAULT_SYSLOG_PRIORITIES, PriorityTable, ndjson_priority,
};
pub use outbound::OutboundBatch;
pub use reject::{RejectReason, Rejection};
pub use reply::{ErrorCode, error_reply};
pub use syslog::{
    MAX_PRIVAL, encode_octet_counted, encode_syslog_line, syslog_pri, write_syslog_json,
};
