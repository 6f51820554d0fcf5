//! Why an input message was refused.
//!
//! A rejection is an *outcome*, not an error: the connection it came from goes
//! on. The reason is a closed set so it can label a counter and be the `reason`
//! code of the emitter's `{"status":"error","reason":...,"message":...}` reply
//! (see [`crate::ErrorCode`]); the detail is that reply's `message`.

use std::fmt;

/// What was wrong with a rejected message, as a metric label and reply code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The line is not JSON at all.
    InvalidJson,
    /// The line is valid JSON but not an object.
    NotAnObject,
    /// The `priority` field is not an integer in 0..=255.
    BadPriority,
    /// The line is longer than `max_line_bytes`.
    LineTooLong,
    /// A gzip frame that does not decompress.
    CorruptGzip,
    /// A gzip frame that decompresses past `max_decompressed_bytes`.
    GzipTooLarge,
    /// The connection ended inside a binary or gzip frame, or inside an
    /// octet-counted syslog message.
    Truncated,
    /// A syslog message without a valid PRI (`<0>` to `<191>`) at its start.
    BadSyslog,
    /// A message in a format its listener's `format` does not take.
    WrongFormat,
}

impl RejectReason {
    /// Every reason, so counters can be registered (and exported as 0) up front.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::InvalidJson,
        RejectReason::NotAnObject,
        RejectReason::BadPriority,
        RejectReason::LineTooLong,
        RejectReason::CorruptGzip,
        RejectReason::GzipTooLarge,
        RejectReason::Truncated,
        RejectReason::BadSyslog,
        RejectReason::WrongFormat,
    ];

    /// The snake_case label used in metrics and stats, and as the `reason` of
    /// the error reply.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::BadPriority => "bad_priority",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::CorruptGzip => "corrupt_gzip",
            RejectReason::GzipTooLarge => "gzip_too_large",
            RejectReason::Truncated => "truncated",
            RejectReason::BadSyslog => "bad_syslog",
            RejectReason::WrongFormat => "wrong_format",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused message: the reason to count and the sentence to tell the emitter.
///
/// `Display` prints `detail` verbatim, so `detail` is a complete sentence
/// (e.g. "line exceeds 1048576 bytes"), not a fragment to be prefixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub(crate) fn invalid_json(error: impl fmt::Display) -> Self {
        Rejection {
            reason: RejectReason::InvalidJson,
            detail: format!("invalid JSON: {error}"),
        }
    }

    /// `found` names the JSON type that was sent instead ("an array", ...).
    pub(crate) fn not_an_object(found: &str) -> Self {
        Rejection {
            reason: RejectReason::NotAnObject,
            detail: format!("expected a JSON object, found {found}"),
        }
    }

    pub(crate) fn bad_priority() -> Self {
        Rejection {
            reason: RejectReason::BadPriority,
            detail: "priority must be an integer 0..=255".to_owned(),
        }
    }

    pub fn line_too_long(max_line_bytes: usize) -> Self {
        Rejection {
            reason: RejectReason::LineTooLong,
            detail: format!("line exceeds {max_line_bytes} bytes"),
        }
    }

    pub(crate) fn corrupt_gzip(error: &std::io::Error) -> Self {
        Rejection {
            reason: RejectReason::CorruptGzip,
            detail: format!("corrupt gzip frame: {error}"),
        }
    }

    pub(crate) fn gzip_too_large(max_decompressed_bytes: usize) -> Self {
        Rejection {
            reason: RejectReason::GzipTooLarge,
            detail: format!("gzip frame decompresses to more than {max_decompressed_bytes} bytes"),
        }
    }

    pub(crate) fn truncated() -> Self {
        Rejection {
            reason: RejectReason::Truncated,
            detail: "connection closed in the middle of a frame".to_owned(),
        }
    }

    pub(crate) fn truncated_syslog() -> Self {
        Rejection {
            reason: RejectReason::Truncated,
            detail: "connection closed in the middle of an octet-counted syslog message".to_owned(),
        }
    }

    pub(crate) fn bad_syslog() -> Self {
        Rejection {
            reason: RejectReason::BadSyslog,
            detail: "syslog message must start with a PRI from <0> to <191>".to_owned(),
        }
    }

    /// `found` names the message's format ("a syslog message", ...), `taken`
    /// the listener's `format`.
    pub(crate) fn wrong_format(found: &str, taken: &str) -> Self {
        Rejection {
            reason: RejectReason::WrongFormat,
            detail: format!("{found} on a listener that takes only {taken}"),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn labels_are_distinct_snake_case() {
        let labels: HashSet<_> = RejectReason::ALL.iter().map(RejectReason::as_str).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len());
        for label in labels {
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
        }
        assert_eq!(RejectReason::GzipTooLarge.as_str(), "gzip_too_large");
        assert_eq!(RejectReason::NotAnObject.to_string(), "not_an_object");
    }

    #[test]
    fn display_is_the_detail_sentence() {
        assert_eq!(
            Rejection::line_too_long(1048576).to_string(),
            "line exceeds 1048576 bytes"
        );
        assert_eq!(
            Rejection::bad_priority().to_string(),
            "priority must be an integer 0..=255"
        );
        let error = serde_json::from_str::<serde::de::IgnoredAny>("{").unwrap_err();
        assert_eq!(
            Rejection::invalid_json(error).to_string(),
            "invalid JSON: EOF while parsing an object at line 1 column 1"
        );
        assert_eq!(
            Rejection::not_an_object("an array").to_string(),
            "expected a JSON object, found an array"
        );
    }
}
