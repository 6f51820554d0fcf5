//! Error replies: the `{"status":"error","reason":...,"message":...}` lines the
//! distributor writes to emitters on acking listeners and to JSON-hello
//! analyzers it refuses.
//!
//! `reason` is a machine-readable [`ErrorCode`]; clients decide on it. `message`
//! is a sentence for people, and its wording may change.

use std::fmt;

use serde::Serialize;

use crate::analyzer::HandshakeError;
use crate::reject::RejectReason;

/// The `reason` of an error reply: what went wrong, as a stable snake_case code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An emitter's line or frame was rejected; the connection goes on. The code
    /// is the reason's stats label ([`RejectReason::as_str`]).
    Rejected(RejectReason),
    /// An emitter sent a length word outside 5..=`max_frame_bytes`: the reply
    /// answers no message, and the distributor closes the connection.
    BadFrameLength,
    /// A JSON hello that is not a valid hello (not JSON, not an object, a field
    /// missing, repeated or of the wrong type, an unknown `format`), or a
    /// connection that ended inside it.
    BadHandshake,
    /// A JSON hello line longer than 4096 bytes.
    HelloTooLong,
    /// A JSON hello whose `id` is empty or longer than 128 characters.
    BadId,
    /// A JSON hello whose `weight` is negative, not finite, or above the
    /// distributor's `analyzers.max_weight`.
    BadWeight,
    /// A JSON hello whose `id` is already used by a connected analyzer.
    DuplicateId,
    /// A JSON hello that was not complete within the handshake timeout.
    HandshakeTimeout,
    /// A JSON hello without a valid `token` while the distributor requires one.
    Unauthorized,
    /// A JSON hello whose `id` is the id of a configured static analyzer
    /// (`[[analyzers.static]]`), connected or not.
    ReservedId,
}

impl ErrorCode {
    /// Every code, emitter ones first.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::Rejected(RejectReason::InvalidJson),
        ErrorCode::Rejected(RejectReason::NotAnObject),
        ErrorCode::Rejected(RejectReason::BadPriority),
        ErrorCode::Rejected(RejectReason::LineTooLong),
        ErrorCode::Rejected(RejectReason::CorruptGzip),
        ErrorCode::Rejected(RejectReason::GzipTooLarge),
        ErrorCode::Rejected(RejectReason::Truncated),
        ErrorCode::Rejected(RejectReason::BadSyslog),
        ErrorCode::Rejected(RejectReason::WrongFormat),
        ErrorCode::BadFrameLength,
        ErrorCode::BadHandshake,
        ErrorCode::HelloTooLong,
        ErrorCode::BadId,
        ErrorCode::BadWeight,
        ErrorCode::DuplicateId,
        ErrorCode::HandshakeTimeout,
        ErrorCode::Unauthorized,
        ErrorCode::ReservedId,
    ];

    /// The code as written in the `reason` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Rejected(reason) => reason.as_str(),
            ErrorCode::BadFrameLength => "bad_frame_length",
            ErrorCode::BadHandshake => "bad_handshake",
            ErrorCode::HelloTooLong => "hello_too_long",
            ErrorCode::BadId => "bad_id",
            ErrorCode::BadWeight => "bad_weight",
            ErrorCode::DuplicateId => "duplicate_id",
            ErrorCode::HandshakeTimeout => "handshake_timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ReservedId => "reserved_id",
        }
    }

    /// The code a `reason` field names; `None` for one this version does not know.
    pub fn from_code(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|known| known.as_str() == code)
    }
}

impl From<RejectReason> for ErrorCode {
    fn from(reason: RejectReason) -> Self {
        ErrorCode::Rejected(reason)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HandshakeError {
    /// The code of the reply that refuses this handshake.
    pub fn code(&self) -> ErrorCode {
        match self {
            HandshakeError::HelloTooLong => ErrorCode::HelloTooLong,
            HandshakeError::InvalidHello(_) => ErrorCode::BadHandshake,
            HandshakeError::InvalidId => ErrorCode::BadId,
            HandshakeError::InvalidWeight(_) | HandshakeError::ImplausibleSeedWeight(_) => {
                ErrorCode::BadWeight
            }
            // The connection ended (or failed) inside the hello.
            HandshakeError::Io(_) => ErrorCode::BadHandshake,
        }
    }
}

/// A `{"status":"error","reason":"<code>","message":"<message>"}` line: the
/// reply to a rejected message on an acking listener, to an impossible frame
/// length (the distributor then closes), and to a refused JSON hello (likewise).
///
/// `reason` comes before `message`, so a reply still ends with the message, as
/// before the field existed.
pub fn error_reply(code: ErrorCode, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorReply<'a> {
        status: &'static str,
        reason: &'static str,
        message: &'a str,
    }
    let mut reply = serde_json::to_vec(&ErrorReply {
        status: "error",
        reason: code.as_str(),
        message,
    })
    .expect("a struct of strings always serializes");
    reply.push(b'\n');
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_snake_case_and_round_trip() {
        let codes: HashSet<_> = ErrorCode::ALL.iter().map(ErrorCode::as_str).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
            assert_eq!(ErrorCode::from_code(text), Some(code));
        }
        assert_eq!(ErrorCode::from_code("closing connection"), None);
        assert_eq!(ErrorCode::from_code(""), None);
    }

    #[test]
    fn rejection_codes_are_the_stats_labels() {
        for reason in RejectReason::ALL {
            assert!(ErrorCode::ALL.contains(&reason.into()), "{reason}");
            assert_eq!(ErrorCode::from(reason).as_str(), reason.as_str());
        }
        assert_eq!(
            ErrorCode::Rejected(RejectReason::GzipTooLarge).to_string(),
            "gzip_too_large"
        );
        assert_eq!(ErrorCode::BadFrameLength.to_string(), "bad_frame_length");
    }

    #[test]
    fn reply_bytes() {
        assert_eq!(
            error_reply(ErrorCode::BadWeight, "bad weight"),
            b"{\"status\":\"error\",\"reason\":\"bad_weight\",\"message\":\"bad weight\"}\n"
        );
        assert_eq!(
            error_reply(
                RejectReason::InvalidJson.into(),
                "quote \" back\\slash\nnewline \u{1} \u{e9}"
            ),
            "{\"status\":\"error\",\"reason\":\"invalid_json\",\"message\":\"quote \\\" back\\\\slash\\nnewline \\u0001 \u{e9}\"}\n"
                .as_bytes()
        );
    }

    #[test]
    fn replies_parse_back_as_json() {
        for code in ErrorCode::ALL {
            let reply = error_reply(code, "a \"sentence\"\twith\ttabs");
            let value: serde_json::Value = serde_json::from_slice(&reply).unwrap();
            assert_eq!(value["status"], "error");
            assert_eq!(value["reason"], code.as_str());
            assert_eq!(value["message"], "a \"sentence\"\twith\ttabs");
            assert_eq!(value.as_object().unwrap().len(), 3);
        }
    }

    #[test]
    fn handshake_errors_have_their_codes() {
        let invalid = serde_json::from_str::<serde::de::IgnoredAny>("{").unwrap_err();
        let cases = [
            (HandshakeError::HelloTooLong, "hello_too_long"),
            (HandshakeError::InvalidHello(invalid), "bad_handshake"),
            (HandshakeError::InvalidId, "bad_id"),
            (HandshakeError::InvalidWeight(-1.0), "bad_weight"),
            (
                HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()),
                "bad_handshake",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code().as_str(), code, "{error}");
        }
    }
}
