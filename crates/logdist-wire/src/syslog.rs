//! Syslog over TCP: RFC 5424 and RFC 3164 (BSD) messages, in either RFC 6587
//! framing: non-transparent (one message per line, ended by `\n`) or octet
//! counting (`MSG-LEN SP SYSLOG-MSG`).
//!
//! Ingest needs only a message's PRI (`<PRIVAL>`, facility × 8 + severity):
//! it is checked and mapped to a priority through the severity table, and
//! the message is kept as received. The full parse, with
//! [`syslog_loose`] (the parser Vector uses), happens only when a message
//! goes to an `ndjson` analyzer as a JSON object ([`write_syslog_json`]).

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use syslog_loose::{ProcId, StructuredElement, Variant};

use crate::message::Message;
use crate::ndjson::PriorityTable;
use crate::reject::Rejection;

/// The most digits an octet count may have (9,999,999,999 bytes); a longer
/// run of digits is not an octet count but a text line.
pub(crate) const MAX_COUNT_DIGITS: usize = 10;

/// The largest PRIVAL: facility 23 (local7) × 8 + severity 7 (debug).
pub const MAX_PRIVAL: u8 = 191;

/// What the bytes at a message boundary that starts with `1`..=`9` are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OctetHeader {
    /// Only digits so far: more bytes are needed to tell.
    NeedMore,
    /// Digits followed by something other than a space (or too many
    /// digits): a text line, not an octet count.
    NotCounted,
    /// `count` bytes of message follow the `header_len` bytes of count and
    /// space.
    Counted { header_len: usize, count: u64 },
}

/// Reads an RFC 6587 octet-count header (`MSG-LEN SP`) at the front of
/// `buf`, which starts with a nonzero digit.
pub(crate) fn octet_header(buf: &[u8]) -> OctetHeader {
    let mut count: u64 = 0;
    for (at, &byte) in buf.iter().enumerate().take(MAX_COUNT_DIGITS + 1) {
        match byte {
            b'0'..=b'9' if at < MAX_COUNT_DIGITS => {
                count = count * 10 + u64::from(byte - b'0');
            }
            b' ' if at > 0 => {
                return OctetHeader::Counted {
                    header_len: at + 1,
                    count,
                };
            }
            _ => return OctetHeader::NotCounted,
        }
    }
    OctetHeader::NeedMore
}

/// The PRIVAL of a syslog message: `<`, one to three digits, `>`, with a
/// value of at most 191. `None` when the message does not start so.
pub fn syslog_pri(message: &[u8]) -> Option<u8> {
    let rest = message.strip_prefix(b"<")?;
    let end = rest.iter().take(4).position(|&b| b == b'>')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u32, |value, &d| value * 10 + u32::from(d - b'0'));
    u8::try_from(value).ok().filter(|&v| v <= MAX_PRIVAL)
}

/// A syslog message as accepted at ingest: its PRI checked, its priority
/// from its severity.
pub(crate) fn syslog_message(data: Bytes, table: &PriorityTable) -> Result<Message, Rejection> {
    let pri = syslog_pri(&data).ok_or_else(Rejection::bad_syslog)?;
    Ok(Message::from_syslog(table.syslog_priority(pri & 7), data))
}

/// The message inside an octet-counted frame: a trailing `\n` (or `\r\n`)
/// that some senders count in is not part of it.
pub(crate) fn strip_trailing_newline(mut message: Bytes) -> Bytes {
    if message.last() == Some(&b'\n') {
        message.truncate(message.len() - 1);
        if message.last() == Some(&b'\r') {
            message.truncate(message.len() - 1);
        }
    }
    message
}

/// Appends `message` with RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`.
pub fn encode_octet_counted(message: &[u8], out: &mut BytesMut) {
    out.put_slice(message.len().to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(message);
}

/// Appends `message` with RFC 6587 non-transparent framing: the message,
/// then `\n` (the message must hold no `\n`).
pub fn encode_syslog_line(message: &[u8], out: &mut BytesMut) {
    out.put_slice(message);
    out.put_u8(b'\n');
}

/// A procid: a number when it is one, else the text.
#[derive(Serialize)]
#[serde(untagged)]
enum ProcIdJson<'a> {
    Number(i32),
    Text(&'a str),
}

/// `structured_data` as an object of objects: SD-ID → PARAM-NAME → value
/// (escapes removed). A repeated SD-ID or name: the last one wins.
struct StructuredData<'a>(&'a [StructuredElement<&'a str>]);

impl Serialize for StructuredData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut elements: Vec<&StructuredElement<&str>> = Vec::with_capacity(self.0.len());
        for element in self.0 {
            elements.retain(|known| known.id != element.id);
            elements.push(element);
        }
        let mut map = serializer.serialize_map(Some(elements.len()))?;
        for element in elements {
            let mut params: Vec<(&str, String)> = Vec::with_capacity(element.params.len());
            for (name, value) in element.params() {
                params.retain(|(known, _)| known != name);
                params.push((name, value));
            }
            map.serialize_entry(element.id, &Params(&params))?;
        }
        map.end()
    }
}

struct Params<'a>(&'a [(&'a str, String)]);

impl Serialize for Params<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The JSON object an `ndjson` analyzer gets for a syslog message.
#[derive(Serialize)]
struct SyslogJson<'a> {
    facility: Option<&'static str>,
    severity: Option<&'static str>,
    timestamp: Option<String>,
    hostname: Option<&'a str>,
    app_name: Option<&'a str>,
    procid: Option<ProcIdJson<'a>>,
    msgid: Option<&'a str>,
    structured_data: StructuredData<'a>,
    message: &'a str,
    priority: u8,
}

/// Writes a syslog message as one JSON object (no newline):
/// `{"facility":"user","severity":"err","timestamp":"2025-01-25T20:30:45.123Z",
/// "hostname":"web-1","app_name":"nginx","procid":4711,"msgid":null,
/// "structured_data":{"id@1":{"k":"v"}},"message":"...","priority":1}`.
///
/// Fields the message does not have are `null` (`structured_data`: `{}`).
/// `facility` and `severity` are names (`kern` .. `local7`, `emerg` ..
/// `debug`) from the PRI; `timestamp` is RFC 3339, in the message's offset
/// (an RFC 3164 timestamp, which has neither year nor zone, is taken as UTC
/// in the year that puts it at most a month ahead of now); `procid` is a
/// number when it is one. Bytes that are not UTF-8 are replaced by U+FFFD; a
/// UTF-8 byte-order mark before the message text (RFC 5424) is dropped.
pub fn write_syslog_json(priority: u8, message: &[u8], out: &mut impl io::Write) {
    let text = String::from_utf8_lossy(message);
    let parsed = parse(&text);
    let pri = syslog_pri(message);
    let (facility, severity) = match pri {
        Some(pri) => {
            let (facility, severity) = syslog_loose::decompose_pri(pri);
            (facility.map(|f| f.as_str()), severity.map(|s| s.as_str()))
        }
        None => (None, None),
    };
    let json = match &parsed {
        Some(parsed) => SyslogJson {
            facility,
            severity,
            timestamp: parsed.timestamp.map(rfc3339),
            hostname: parsed.hostname.filter(|h| *h != "-"),
            app_name: parsed.appname.filter(|a| *a != "-"),
            procid: parsed.procid.as_ref().map(|procid| match procid {
                ProcId::PID(pid) => ProcIdJson::Number(*pid),
                ProcId::Name(name) => ProcIdJson::Text(name),
            }),
            msgid: parsed.msgid.filter(|m| *m != "-"),
            structured_data: StructuredData(&parsed.structured_data),
            message: parsed.msg.strip_prefix('\u{feff}').unwrap_or(parsed.msg),
            priority,
        },
        None => SyslogJson {
            facility,
            severity,
            timestamp: None,
            hostname: None,
            app_name: None,
            procid: None,
            msgid: None,
            structured_data: StructuredData(&[]),
            message: &text,
            priority,
        },
    };
    serde_json::to_writer(out, &json).expect("writing JSON to memory cannot fail");
}

/// Parses with `syslog_loose`, RFC 5424 first, then RFC 3164. `None` if the
/// parser panicked (it is third-party code fed hostile input: the message
/// then goes as unparsed text rather than taking the analyzer session down).
fn parse(text: &str) -> Option<syslog_loose::Message<&str>> {
    std::panic::catch_unwind(|| {
        syslog_loose::parse_message_with_year_tz(text, year_of, Some(Utc), Variant::Either)
    })
    .ok()
}

/// The year of an RFC 3164 timestamp (month, day, hour, minute, second):
/// this year, unless that puts it more than a month ahead (a December
/// message read in January).
fn year_of((month, ..): syslog_loose::IncompleteDate) -> i32 {
    let now = Utc::now();
    if month > now.month() + 1 {
        now.year() - 1
    } else {
        now.year()
    }
}

fn rfc3339(timestamp: DateTime<FixedOffset>) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(message: &str) -> serde_json::Value {
        let mut out = Vec::new();
        write_syslog_json(3, message.as_bytes(), &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn pri_is_checked() {
        assert_eq!(syslog_pri(b"<0>x"), Some(0));
        assert_eq!(syslog_pri(b"<34>1 2025"), Some(34));
        assert_eq!(syslog_pri(b"<191>"), Some(191));
        assert_eq!(syslog_pri(b"<007>"), Some(7));
        for bad in [
            &b"<192>x"[..],
            b"<>x",
            b"<1000>",
            b"<1a>",
            b"<12",
            b"34>",
            b"",
            b"<",
            b"<-1>",
            b"< 1>",
        ] {
            assert_eq!(syslog_pri(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn octet_headers() {
        use OctetHeader::*;
        assert_eq!(
            octet_header(b"12 <1>"),
            Counted {
                header_len: 3,
                count: 12
            }
        );
        assert_eq!(octet_header(b"1"), NeedMore);
        assert_eq!(octet_header(b"1234567890"), NeedMore);
        assert_eq!(
            octet_header(b"9999999999 "),
            Counted {
                header_len: 11,
                count: 9_999_999_999
            }
        );
        assert_eq!(octet_header(b"12345678901 "), NotCounted);
        assert_eq!(octet_header(b"42\n"), NotCounted);
        assert_eq!(octet_header(b"1.5"), NotCounted);
        assert_eq!(octet_header(b"12x"), NotCounted);
    }

    #[test]
    fn severity_maps_through_the_table() {
        let table = PriorityTable::default();
        let priorities: Vec<u8> = (0..8)
            .map(|severity| {
                let text = format!("<{}>1 - - - - - - x", 8 + severity);
                syslog_message(Bytes::from(text), &table)
                    .unwrap()
                    .priority()
            })
            .collect();
        assert_eq!(priorities, [0, 0, 0, 1, 2, 3, 3, 4]);
        let table = PriorityTable::default().with_syslog([7, 6, 5, 4, 3, 2, 1, 0]);
        let message = syslog_message(Bytes::from_static(b"<191>x"), &table).unwrap();
        assert_eq!(message.priority(), 0);
        let rejection = syslog_message(Bytes::from_static(b"<x>"), &table).unwrap_err();
        assert_eq!(rejection.reason, crate::RejectReason::BadSyslog);
    }

    #[test]
    fn rfc5424_to_json() {
        let value = json(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 4711 ID47 \
             [exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\\"ication\"][other@1 a=\"b\"] \u{feff}An application event",
        );
        assert_eq!(
            value,
            serde_json::json!({
                "facility": "local4",
                "severity": "notice",
                "timestamp": "2003-10-11T22:14:15.003Z",
                "hostname": "mymachine.example.com",
                "app_name": "evntslog",
                "procid": 4711,
                "msgid": "ID47",
                "structured_data": {
                    "exampleSDID@32473": {"iut": "3", "eventSource": "Appl\"ication"},
                    "other@1": {"a": "b"}
                },
                "message": "An application event",
                "priority": 3
            })
        );
    }

    #[test]
    fn rfc5424_nil_values_are_null() {
        let value = json("<11>1 - - - - - - failed");
        assert_eq!(value["facility"], "user");
        assert_eq!(value["severity"], "err");
        for field in ["timestamp", "hostname", "app_name", "procid", "msgid"] {
            assert!(value[field].is_null(), "{field}: {value}");
        }
        assert_eq!(value["structured_data"], serde_json::json!({}));
        assert_eq!(value["message"], "failed");
    }

    #[test]
    fn rfc3164_to_json() {
        let value = json("<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick");
        assert_eq!(value["facility"], "auth");
        assert_eq!(value["severity"], "crit");
        assert_eq!(value["hostname"], "mymachine");
        assert_eq!(value["app_name"], "su");
        assert_eq!(value["procid"], 230);
        assert!(value["msgid"].is_null());
        assert_eq!(value["message"], "'su root' failed for lonvick");
        let timestamp = value["timestamp"].as_str().unwrap();
        assert!(timestamp.ends_with("-10-11T22:14:15Z"), "{timestamp}");
    }

    #[test]
    fn unparsable_and_non_utf8_messages_still_convert() {
        let value = json("<13>just some text");
        assert_eq!(value["severity"], "notice");
        assert_eq!(value["priority"], 3);
        assert!(
            value["message"]
                .as_str()
                .unwrap()
                .contains("just some text")
        );
        let mut out = Vec::new();
        write_syslog_json(4, b"<15>1 - host app - - - bad \xff byte", &mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["message"], "bad \u{fffd} byte");
        assert_eq!(value["hostname"], "host");
    }

    #[test]
    fn framings_encode() {
        let mut out = BytesMut::new();
        encode_octet_counted(b"<13>hi", &mut out);
        encode_syslog_line(b"<13>yo", &mut out);
        assert_eq!(&out[..], b"6 <13>hi<13>yo\n");
        assert_eq!(
            strip_trailing_newline(Bytes::from_static(b"<1>a\r\n")),
            &b"<1>a"[..]
        );
        assert_eq!(
            strip_trailing_newline(Bytes::from_static(b"<1>a\r")),
            &b"<1>a\r"[..]
        );
    }
}
