//! Validating an NDJSON line and reading its priority.
//!
//! This runs once per message at up to a million messages a second, so the
//! line is checked in one pass with a borrowed struct that only looks at the
//! three fields that matter, and never becomes a `serde_json::Value`.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::reject::Rejection;

/// Maps `level`/`severity` names to priorities, case-insensitively, and
/// syslog severities (0 emerg ..= 7 debug) to priorities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorityTable {
    /// Few entries, so a linear scan comparing without allocation beats
    /// hashing a lowercased copy of every level.
    entries: Vec<(String, u8)>,
    default: u8,
    syslog: [u8; 8],
}

impl PriorityTable {
    /// A table from `(name, priority)` pairs; names match case-insensitively
    /// and a later entry for the same name replaces an earlier one. Messages
    /// with no level, or a level not in the table, get `default`.
    pub fn new(entries: impl IntoIterator<Item = (String, u8)>, default: u8) -> Self {
        let mut table = PriorityTable {
            entries: Vec::new(),
            default,
            syslog: DEFAULT_SYSLOG_PRIORITIES,
        };
        for (name, priority) in entries {
            match table
                .entries
                .iter_mut()
                .find(|(known, _)| known.eq_ignore_ascii_case(&name))
            {
                Some(entry) => entry.1 = priority,
                None => table.entries.push((name, priority)),
            }
        }
        table
    }

    /// The priority for a level name, or the default when it is unknown.
    pub fn level_priority(&self, level: &str) -> u8 {
        self.entries
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(level))
            .map_or(self.default, |&(_, priority)| priority)
    }

    /// The priority of a message that names no known level.
    pub fn default_priority(&self) -> u8 {
        self.default
    }

    /// The table with `syslog[severity]` as the priority of syslog messages
    /// of each severity (0 emerg ..= 7 debug), instead of
    /// [`DEFAULT_SYSLOG_PRIORITIES`].
    pub fn with_syslog(mut self, syslog: [u8; 8]) -> Self {
        self.syslog = syslog;
        self
    }

    /// The priority of a syslog message of `severity` (0..=7; the low three
    /// bits are used).
    pub fn syslog_priority(&self, severity: u8) -> u8 {
        self.syslog[usize::from(severity & 7)]
    }
}

/// Syslog severity to priority, consistent with [`DEFAULT_LEVELS`]: emerg,
/// alert, crit → 0 (FATAL); err → 1 (ERROR); warning → 2 (WARN); notice,
/// info → 3 (INFO); debug → 4 (DEBUG).
pub const DEFAULT_SYSLOG_PRIORITIES: [u8; 8] = [0, 0, 0, 1, 2, 3, 3, 4];

/// The syslog-like level mapping the seed systems used.
pub const DEFAULT_LEVELS: [(&str, u8); 8] = [
    ("FATAL", 0),
    ("CRITICAL", 0),
    ("ERROR", 1),
    ("WARN", 2),
    ("WARNING", 2),
    ("INFO", 3),
    ("DEBUG", 4),
    ("TRACE", 5),
];

/// The priority of messages with no usable priority or level: INFO's.
pub const DEFAULT_PRIORITY: u8 = 3;

impl Default for PriorityTable {
    /// [`DEFAULT_LEVELS`], with [`DEFAULT_PRIORITY`] for everything else.
    fn default() -> Self {
        PriorityTable::new(
            DEFAULT_LEVELS.map(|(name, priority)| (name.to_owned(), priority)),
            DEFAULT_PRIORITY,
        )
    }
}

/// The fields of a log line that decide its priority; everything else is
/// skipped by the parser without being stored.
///
/// A duplicated `priority`, `level` or `severity` key is refused as invalid
/// JSON (serde's "duplicate field" error): which one wins would be a guess.
#[derive(Deserialize)]
struct PriorityFields<'a> {
    #[serde(borrow, default)]
    priority: Option<&'a RawValue>,
    #[serde(borrow, default)]
    level: Option<&'a RawValue>,
    #[serde(borrow, default)]
    severity: Option<&'a RawValue>,
}

/// Checks that `line` is one JSON object and returns its priority: the integer
/// `priority` field if present (and not null), else `level`, else `severity`
/// looked up in `table`, else the table's default.
///
/// A `level`/`severity` that is not a string counts as absent: it is valid
/// JSON and a valid log line, it just carries no level we can map.
pub fn ndjson_priority(line: &[u8], table: &PriorityTable) -> Result<u8, Rejection> {
    // serde_json skips the strings it ignores without checking their UTF-8,
    // so check it up front: a line that is not UTF-8 is not JSON.
    let line = std::str::from_utf8(line).map_err(Rejection::invalid_json)?;
    if line.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(not_an_object(line));
    }
    let fields: PriorityFields = serde_json::from_str(line).map_err(Rejection::invalid_json)?;
    // A JSON null deserializes to `None`: "priority": null is no priority.
    if let Some(raw) = fields.priority {
        // The raw text of a JSON integer in range is exactly what u8 parses;
        // 256, -1, 1.5, 1e2 and "3" all fail.
        return raw.get().parse().map_err(|_| Rejection::bad_priority());
    }
    let level = fields
        .level
        .and_then(json_string)
        .or_else(|| fields.severity.and_then(json_string));
    Ok(match level {
        Some(Some(level)) => table.level_priority(&level),
        // A string that is no text matches no table entry.
        Some(None) | None => table.default_priority(),
    })
}

/// For a JSON string value, `Some` of its contents (borrowed unless it has
/// escapes); `None` for any other value.
///
/// The contents are `None` when the string escapes a lone UTF-16 surrogate
/// (`"\ud800"`): grammatical JSON (RFC 8259 8.2), the parser skipped it, but
/// it is no Rust string. It is still a string, so it must not count as an
/// absent `level` and let `severity` decide (found by the `ndjson_priority`
/// fuzz target); it just matches nothing in the table.
fn json_string(raw: &RawValue) -> Option<Option<Cow<'_, str>>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    Some(if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    })
}

/// A line that does not start with `{`: valid JSON of another type, or not JSON.
fn not_an_object(line: &str) -> Rejection {
    if let Err(error) = serde_json::from_str::<IgnoredAny>(line) {
        return Rejection::invalid_json(error);
    }
    Rejection::not_an_object(match line.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::RejectReason;

    fn priority(line: &str) -> Result<u8, Rejection> {
        ndjson_priority(line.as_bytes(), &PriorityTable::default())
    }

    fn reason(line: &str) -> RejectReason {
        priority(line).unwrap_err().reason
    }

    #[test]
    fn priority_field_wins() {
        assert_eq!(priority(r#"{"priority":0,"level":"DEBUG"}"#), Ok(0));
        assert_eq!(priority(r#"{"level":"debug","priority":255}"#), Ok(255));
        assert_eq!(priority(r#" { "priority" : 7 } "#), Ok(7));
    }

    #[test]
    fn null_priority_counts_as_absent() {
        assert_eq!(priority(r#"{"priority":null,"level":"error"}"#), Ok(1));
        assert_eq!(priority(r#"{"priority":null}"#), Ok(3));
    }

    #[test]
    fn level_then_severity_then_default() {
        assert_eq!(priority(r#"{"level":"ERROR","severity":"debug"}"#), Ok(1));
        assert_eq!(priority(r#"{"severity":"trace"}"#), Ok(5));
        assert_eq!(priority(r#"{"message":"no level"}"#), Ok(3));
        assert_eq!(
            priority(r#"{"level":"verbose"}"#),
            Ok(3),
            "unknown level: default"
        );
        assert_eq!(
            priority(r#"{"level":3,"severity":"fatal"}"#),
            Ok(0),
            "non-string level is absent"
        );
        assert_eq!(priority(r#"{}"#), Ok(3));
    }

    #[test]
    fn levels_match_case_insensitively() {
        for (level, expected) in [
            ("fatal", 0),
            ("Critical", 0),
            ("error", 1),
            ("Warn", 2),
            ("wArNiNg", 2),
            ("info", 3),
            ("DeBuG", 4),
            ("trace", 5),
        ] {
            assert_eq!(
                priority(&format!(r#"{{"level":"{level}"}}"#)),
                Ok(expected),
                "{level}"
            );
        }
        assert_eq!(priority(r#"{"level":"\u0057ARN"}"#), Ok(2), "escaped level");
    }

    #[test]
    fn custom_table_and_default() {
        let table = PriorityTable::new(
            [
                ("notice".to_owned(), 9),
                ("NOTICE".to_owned(), 10),
                ("alert".to_owned(), 1),
            ],
            42,
        );
        assert_eq!(ndjson_priority(br#"{"level":"Notice"}"#, &table), Ok(10));
        assert_eq!(ndjson_priority(br#"{"severity":"ALERT"}"#, &table), Ok(1));
        assert_eq!(ndjson_priority(br#"{"level":"info"}"#, &table), Ok(42));
        assert_eq!(table.default_priority(), 42);
    }

    #[test]
    fn bad_priorities_are_rejected() {
        for value in [
            "256", "-1", "1.5", "\"3\"", "1e2", "3.0", "true", "[1]", "{}",
        ] {
            let line = format!(r#"{{"priority":{value}}}"#);
            assert_eq!(reason(&line), RejectReason::BadPriority, "{line}");
        }
        assert_eq!(
            priority(r#"{"priority":256}"#).unwrap_err().to_string(),
            "priority must be an integer 0..=255"
        );
    }

    #[test]
    fn non_objects_and_invalid_json_are_told_apart() {
        assert_eq!(reason("[1,2]"), RejectReason::NotAnObject);
        assert_eq!(reason("\"text\""), RejectReason::NotAnObject);
        assert_eq!(reason("42"), RejectReason::NotAnObject);
        assert_eq!(reason("null"), RejectReason::NotAnObject);
        assert_eq!(reason("true"), RejectReason::NotAnObject);
        assert_eq!(
            priority("[1,2]").unwrap_err().to_string(),
            "expected a JSON object, found an array"
        );
        assert_eq!(reason("hello"), RejectReason::InvalidJson);
        assert_eq!(reason("{\"a\":"), RejectReason::InvalidJson);
        assert_eq!(reason("{\"a\":1} trailing"), RejectReason::InvalidJson);
        assert_eq!(reason("{\"a\":1}{\"b\":2}"), RejectReason::InvalidJson);
        assert_eq!(reason("[1,"), RejectReason::InvalidJson);
        assert_eq!(reason(""), RejectReason::InvalidJson);
        assert_eq!(
            reason("{\"level\":\"a\",\"level\":\"b\"}"),
            RejectReason::InvalidJson
        );
        assert_eq!(
            priority("{\"a\" 1}").unwrap_err().to_string(),
            "invalid JSON: expected `:` at line 1 column 6"
        );
    }

    #[test]
    fn invalid_utf8_is_invalid_json() {
        let rejection =
            ndjson_priority(b"{\"message\":\"\xff\"}", &PriorityTable::default()).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::InvalidJson);
        assert_eq!(
            rejection.to_string(),
            "invalid JSON: invalid utf-8 sequence of 1 bytes from index 12"
        );
    }
}
