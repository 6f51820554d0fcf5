//! One log line in, one NDJSON message out (without its `\n`).
//!
//! * `YYYY-MM-DD HH:MM:SS LEVEL message` →
//!   `{"timestamp":"YYYY-MM-DD HH:MM:SS","level":"LEVEL","message":"message"}`
//! * a JSON object line passes through unchanged (surrounding whitespace
//!   trimmed), unless `--priority` or `--level-map` has to change it;
//! * anything else → `{"level":"INFO","message":"<the line>"}`;
//! * blank lines (spaces, tabs, `\r` only) produce nothing: logdist would not
//!   answer them, so they are never sent.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{LevelMapping, LevelTarget};

/// Level given to lines that do not follow the `timestamp level message` form.
pub const DEFAULT_LEVEL: &str = "INFO";

/// Turns log lines into NDJSON messages.
#[derive(Clone, Debug, Default)]
pub struct Formatter {
    priority: Option<u8>,
    level_map: HashMap<String, LevelTarget>,
}

#[derive(Serialize)]
struct Parsed<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<&'a str>,
    level: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
}

impl Formatter {
    pub fn new(priority: Option<u8>, level_map: &[LevelMapping]) -> Formatter {
        Formatter {
            priority,
            level_map: level_map
                .iter()
                .map(|m| (m.from.to_ascii_uppercase(), m.to.clone()))
                .collect(),
        }
    }

    /// The NDJSON message for `raw` (a line without its `\n`), or `None` for
    /// a blank line.
    pub fn format(&self, raw: &[u8]) -> Option<Bytes> {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() {
            return None;
        }
        if is_json_object(trimmed) {
            return Some(self.pass_json(trimmed));
        }
        let text = String::from_utf8_lossy(raw);
        let (timestamp, level, message) = match split_log_line(&text) {
            Some((t, l, m)) => (Some(t), l, m),
            None => (None, DEFAULT_LEVEL, &*text),
        };
        let (level, priority) = self.map_level(level);
        let parsed = Parsed {
            timestamp,
            level: &level,
            message,
            priority: self.priority.or(priority),
        };
        Some(Bytes::from(
            serde_json::to_vec(&parsed).expect("serializing strings cannot fail"),
        ))
    }

    /// The level after `--level-map`, and the priority it asks for.
    fn map_level(&self, level: &str) -> (String, Option<u8>) {
        match self.level_map.get(&level.to_ascii_uppercase()) {
            Some(LevelTarget::Level(to)) => (to.clone(), None),
            Some(LevelTarget::Priority(p)) => (level.to_string(), Some(*p)),
            None => (level.to_string(), None),
        }
    }

    fn pass_json(&self, line: &[u8]) -> Bytes {
        if self.priority.is_none() && self.level_map.is_empty() {
            return Bytes::copy_from_slice(line);
        }
        let Ok(mut object) = serde_json::from_slice::<Map<String, Value>>(line) else {
            return Bytes::copy_from_slice(line);
        };
        let mut priority = None;
        if let Some(Value::String(level)) = object.get("level") {
            let (mapped, p) = self.map_level(level);
            priority = p;
            object.insert("level".into(), Value::String(mapped));
        }
        if let Some(p) = self.priority.or(priority) {
            object.insert("priority".into(), Value::from(p));
        }
        Bytes::from(serde_json::to_vec(&object).expect("serializing a map cannot fail"))
    }
}

/// A well-formed JSON text that is an object (cheap: nothing is built).
///
/// The UTF-8 check comes first: skipping a string with `IgnoredAny` does not
/// validate its bytes, and logdist rejects a message that is not UTF-8. Such
/// a line is wrapped like any other non-JSON line (lossily).
fn is_json_object(line: &[u8]) -> bool {
    line.first() == Some(&b'{')
        && std::str::from_utf8(line).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

/// Splits `YYYY-MM-DD HH:MM:SS LEVEL message` (the message may be empty).
pub fn split_log_line(line: &str) -> Option<(&str, &str, &str)> {
    let bytes = line.as_bytes();
    const SHAPE: &[u8; 19] = b"dddd-dd-dd dd:dd:dd";
    if bytes.len() < SHAPE.len() + 2 {
        return None;
    }
    for (b, s) in bytes.iter().zip(SHAPE) {
        let ok = match s {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        };
        if !ok {
            return None;
        }
    }
    let timestamp = &line[..19];
    let rest = line[19..].strip_prefix(' ')?.trim_start_matches(' ');
    let level_len = rest
        .bytes()
        .position(|b| b == b' ' || b == b'\t')
        .unwrap_or(rest.len());
    let level = &rest[..level_len];
    if level.is_empty() || !level.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let message = rest[level_len..].trim_start_matches([' ', '\t']);
    Some((timestamp, level, message.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(f: &Formatter, line: &str) -> Option<String> {
        f.format(line.as_bytes())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn parses_the_seed_form() {
        let f = Formatter::default();
        assert_eq!(
            fmt(
                &f,
                "2024-01-15 08:23:45 INFO Application started successfully"
            )
            .unwrap(),
            r#"{"timestamp":"2024-01-15 08:23:45","level":"INFO","message":"Application started successfully"}"#
        );
        assert_eq!(
            fmt(&f, "2024-01-15 08:23:45 ERROR  disk \"full\"\r").unwrap(),
            r#"{"timestamp":"2024-01-15 08:23:45","level":"ERROR","message":"disk \"full\""}"#
        );
        assert_eq!(
            fmt(&f, "2024-01-15 08:23:45 WARN").unwrap(),
            r#"{"timestamp":"2024-01-15 08:23:45","level":"WARN","message":""}"#
        );
    }

    #[test]
    fn other_lines_become_info_messages() {
        let f = Formatter::default();
        for line in [
            "hello world",
            "2024-01-15 08:23 INFO short timestamp",
            "2024-01-15T08:23:45 INFO iso",
            "2024-01-15 08:23:45 IN-FO odd level",
            "{not json",
            "[1,2]",
        ] {
            let out: Value = serde_json::from_str(&fmt(&f, line).unwrap()).unwrap();
            assert_eq!(
                out,
                serde_json::json!({"level": "INFO", "message": line}),
                "{line}"
            );
        }
        // Invalid UTF-8 is replaced (U+FFFD), never dropped: the message
        // sent is always valid UTF-8.
        let out = f.format(b"caf\xe9").unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["message"], "caf\u{fffd}");
    }

    #[test]
    fn json_lines_with_invalid_utf8_are_wrapped() {
        let f = Formatter::default();
        // Well-formed JSON apart from the byte 0xe9 inside a string.
        let out = f.format(b"{\"message\":\"caf\xe9\"}").unwrap();
        let text = std::str::from_utf8(&out).expect("the message sent is UTF-8");
        let out: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"level": "INFO", "message": "{\"message\":\"caf\u{fffd}\"}"})
        );
    }

    #[test]
    fn json_lines_pass_through() {
        let f = Formatter::default();
        let line = r#"{"z":1,"level":"debug","message":"x"}"#;
        assert_eq!(fmt(&f, &format!("  {line} \r")).unwrap(), line);
    }

    #[test]
    fn blank_lines_are_skipped() {
        let f = Formatter::default();
        for line in ["", " ", "\t \r", "\r"] {
            assert_eq!(fmt(&f, line), None);
        }
    }

    #[test]
    fn priority_and_level_map() {
        let maps = [
            LevelMapping {
                from: "WARNING".into(),
                to: LevelTarget::Level("WARN".into()),
            },
            LevelMapping {
                from: "AUDIT".into(),
                to: LevelTarget::Priority(0),
            },
        ];
        let f = Formatter::new(None, &maps);
        assert_eq!(
            fmt(&f, "2024-01-15 08:23:45 warning low disk").unwrap(),
            r#"{"timestamp":"2024-01-15 08:23:45","level":"WARN","message":"low disk"}"#
        );
        assert_eq!(
            fmt(&f, "2024-01-15 08:23:45 AUDIT login").unwrap(),
            r#"{"timestamp":"2024-01-15 08:23:45","level":"AUDIT","message":"login","priority":0}"#
        );
        let out: Value =
            serde_json::from_str(&fmt(&f, r#"{"level":"Warning","m":1}"#).unwrap()).unwrap();
        assert_eq!(out, serde_json::json!({"level": "WARN", "m": 1}));

        let f = Formatter::new(Some(9), &maps);
        let out: Value =
            serde_json::from_str(&fmt(&f, "2024-01-15 08:23:45 AUDIT x").unwrap()).unwrap();
        assert_eq!(out["priority"], 9);
        let out: Value =
            serde_json::from_str(&fmt(&f, r#"{"priority":1,"a":"b"}"#).unwrap()).unwrap();
        assert_eq!(out, serde_json::json!({"priority": 9, "a": "b"}));
        let out: Value = serde_json::from_str(&fmt(&f, "plain").unwrap()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"level": "INFO", "message": "plain", "priority": 9})
        );
    }
}
