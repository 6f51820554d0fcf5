//! The dead-letter record: one line of the dead-letter file (protocol.md §4).
//!
//! [`DeadLetterRecord`] is version 1 of the record, the only one so far. It is
//! what the distributor writes, what `logdist dead-letter replay` reads back
//! and what the admin API lists. Serializing it gives the exact bytes of §4:
//! fields in the table's order, `message` as the original JSON object of an
//! NDJSON-born message (byte for byte) or as the payload string of a UTF-8
//! frame, `payload_b64` otherwise, `analyzers` always present.
//!
//! Parsing is tolerant, so files written by other tools or older versions
//! still read: unknown fields are ignored; a missing or `null` `priority` is
//! `None`; missing `attempts`, `analyzers`, `final_error` and `failed_at` are
//! 0, empty and empty. Only `origin` is required.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::message::{Message, Origin};

/// One dead letter: a message that could not be delivered, and why.
/// Version 1 of the record; see the module docs and protocol.md §4.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    /// The message, when it can be shown as JSON: see [`MessageField`].
    /// Exactly one of `message` and `payload_b64` is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageField>,
    /// The payload in standard padded base64, when `message` cannot hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
    /// How the message arrived: `"ndjson"`, `"frame"` or `"syslog"`.
    pub origin: Origin,
    /// The message's priority. Always written; `None` (from `null` or a
    /// missing field) only in records logdist did not write.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Failed delivery attempts (analyzer connections that ended with the
    /// message sent but unacknowledged).
    #[serde(default)]
    pub attempts: u32,
    /// The ids of those analyzers, oldest first: one per attempt.
    #[serde(default)]
    pub analyzers: Vec<String>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub final_error: String,
    /// RFC 3339 UTC time with milliseconds, e.g. `2025-01-25T20:30:45.123Z`.
    #[serde(default)]
    pub failed_at: String,
}

/// The `message` field of a record.
#[derive(Clone, Debug)]
pub enum MessageField {
    /// A JSON value other than a string, kept byte for byte: for an
    /// NDJSON-born message, the original object (without surrounding
    /// whitespace).
    Json(Box<RawValue>),
    /// A string: the payload of a binary frame, or a syslog message, that
    /// is valid UTF-8.
    Text(String),
}

/// Why a record's payload cannot be recovered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("record has neither message nor payload_b64")]
    Missing,
    #[error("bad payload_b64: {0}")]
    Base64(String),
}

impl DeadLetterRecord {
    /// The record for `message`, which failed at `analyzers` (oldest first,
    /// one per attempt) and finally with `final_error` at `failed_at`.
    pub fn new(
        message: &Message,
        analyzers: Vec<String>,
        final_error: String,
        failed_at: SystemTime,
    ) -> DeadLetterRecord {
        let payload = message.payload();
        let field = match message.origin() {
            // Accepted NDJSON lines were validated as JSON objects on the way in.
            Origin::Ndjson => std::str::from_utf8(&payload)
                .ok()
                .and_then(|text| serde_json::from_str::<Box<RawValue>>(text).ok())
                .map(MessageField::Json),
            Origin::Frame | Origin::Syslog => std::str::from_utf8(&payload)
                .ok()
                .map(|text| MessageField::Text(text.to_owned())),
        };
        let payload_b64 = match field {
            Some(_) => None,
            None => Some(BASE64.encode(&payload)),
        };
        DeadLetterRecord {
            message: field,
            payload_b64,
            origin: message.origin(),
            priority: Some(message.priority()),
            attempts: u32::try_from(analyzers.len()).unwrap_or(u32::MAX),
            analyzers,
            final_error,
            failed_at: humantime::format_rfc3339_millis(failed_at).to_string(),
        }
    }

    /// Parses one line of the dead-letter file (without its `\n`).
    pub fn parse(line: &[u8]) -> serde_json::Result<DeadLetterRecord> {
        serde_json::from_slice(line)
    }

    /// Appends the record's line, `\n` included, to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("serializing to a Vec cannot fail");
        out.push(b'\n');
    }

    /// The message's payload (the bytes after a frame's header, or an NDJSON
    /// line): `payload_b64` decoded if present, else a string `message` as
    /// its UTF-8 bytes, else the JSON text of `message`.
    pub fn payload(&self) -> Result<Vec<u8>, PayloadError> {
        if let Some(b64) = &self.payload_b64 {
            return BASE64
                .decode(b64)
                .map_err(|err| PayloadError::Base64(err.to_string()));
        }
        match &self.message {
            Some(MessageField::Text(text)) => Ok(text.clone().into_bytes()),
            Some(MessageField::Json(raw)) => Ok(raw.get().as_bytes().to_vec()),
            None => Err(PayloadError::Missing),
        }
    }
}

impl Serialize for MessageField {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MessageField::Json(raw) => raw.serialize(serializer),
            MessageField::Text(text) => text.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for MessageField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if raw.get().starts_with('"') {
            let text = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
            Ok(MessageField::Text(text))
        } else {
            Ok(MessageField::Json(raw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn round_trip(line: &str) -> DeadLetterRecord {
        let record = DeadLetterRecord::parse(line.as_bytes()).unwrap();
        let mut out = Vec::new();
        record.write_line(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\n"));
        record
    }

    #[test]
    fn each_payload_kind_round_trips_byte_for_byte() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_737_837_045_123);
        let messages = [
            // NDJSON-born: the object as it came, odd spacing and escapes kept.
            Message::from_ndjson_line(
                1,
                Bytes::from_static(b" {\"level\":\"ERROR\", \"m\" : \"a \\\"b\\\" \\u00e9\"} "),
            ),
            // A UTF-8 frame: a string, with characters that need escaping.
            Message::from_frame(Bytes::from_static(
                b"\0\0\0\x0f\x03hi \"x\"\n\t\xc3\xa9\x01",
            )),
            // A frame that is not UTF-8: base64.
            Message::from_frame(Bytes::from_static(b"\0\0\0\x08\xff\xff\x00\x80")),
        ];
        let expected = [
            r#"{"message":{"level":"ERROR", "m" : "a \"b\" \u00e9"},"origin":"ndjson","priority":1,"attempts":2,"analyzers":["a1","a\"2"],"final_error":"closed","failed_at":"2025-01-25T20:30:45.123Z"}"#,
            "{\"message\":\"hi \\\"x\\\"\\n\\t\u{e9}\\u0001\",\"origin\":\"frame\",\"priority\":3,\"attempts\":2,\"analyzers\":[\"a1\",\"a\\\"2\"],\"final_error\":\"closed\",\"failed_at\":\"2025-01-25T20:30:45.123Z\"}",
            r#"{"payload_b64":"/wCA","origin":"frame","priority":255,"attempts":2,"analyzers":["a1","a\"2"],"final_error":"closed","failed_at":"2025-01-25T20:30:45.123Z"}"#,
        ];
        for (message, line) in messages.iter().zip(expected) {
            let record = DeadLetterRecord::new(
                message,
                vec!["a1".into(), "a\"2".into()],
                "closed".into(),
                at,
            );
            let mut out = Vec::new();
            record.write_line(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\n"));
            // The payload comes back, less the whitespace around a JSON line.
            let parsed = round_trip(line);
            assert_eq!(parsed.payload().unwrap(), message.payload().trim_ascii());
        }
    }

    #[test]
    fn the_protocol_examples_parse() {
        let protocol = include_str!("../../../docs/protocol.md");
        let section = &protocol[protocol.find("## 4. Dead-letter file").unwrap()..];
        let section = &section[..section.find("\n## 5.").unwrap()];
        let examples = &section[section.find("Examples:").unwrap()..];
        let block = examples.split("```").nth(1).unwrap();
        let lines: Vec<&str> = block.lines().filter(|l| l.starts_with('{')).collect();
        assert_eq!(lines.len(), 3, "{block}");
        let records: Vec<DeadLetterRecord> = lines.iter().map(|l| round_trip(l)).collect();
        assert!(matches!(&records[0].message, Some(MessageField::Json(raw))
            if raw.get() == r#"{"level":"ERROR","msg":"disk full"}"#));
        assert_eq!(records[0].origin, Origin::Ndjson);
        assert_eq!(records[0].attempts, 4);
        assert_eq!(records[0].analyzers, ["a1", "a2", "a1", "a3"]);
        assert_eq!(records[1].payload().unwrap(), b"hi");
        assert_eq!(records[1].origin, Origin::Frame);
        assert_eq!(records[2].payload().unwrap(), b"\xff\x00\x80");
        assert_eq!(records[2].priority, Some(255));
        assert_eq!(records[2].final_error, "shutdown");
    }

    #[test]
    fn parsing_is_tolerant() {
        let record = DeadLetterRecord::parse(
            br#"{"message":"a","origin":"frame","priority":null,"extra":[1,{"x":2}]}"#,
        )
        .unwrap();
        assert_eq!(record.priority, None);
        assert_eq!((record.attempts, record.analyzers.len()), (0, 0));
        let record = DeadLetterRecord::parse(br#"{"payload_b64":"","origin":"ndjson"}"#).unwrap();
        assert_eq!(record.priority, None);
        assert_eq!(record.payload().unwrap(), b"");
        // A null priority stays in the record when written back.
        let mut out = Vec::new();
        record.write_line(&mut out);
        assert_eq!(
            out,
            br#"{"payload_b64":"","origin":"ndjson","priority":null,"attempts":0,"analyzers":[],"final_error":"","failed_at":""}
"#
        );

        assert!(DeadLetterRecord::parse(br#"{"message":"a"}"#).is_err());
        assert!(DeadLetterRecord::parse(br#"{"origin":"carrier pigeon"}"#).is_err());
        assert!(DeadLetterRecord::parse(br#"{"origin":"frame","priority":256}"#).is_err());
        assert_eq!(
            DeadLetterRecord::parse(br#"{"origin":"frame"}"#)
                .unwrap()
                .payload(),
            Err(PayloadError::Missing)
        );
    }
}
