//! NDJSON validation and priority extraction (`ndjson_priority`) with an
//! arbitrary level table, checked against protocol.md 2.2 written out
//! independently on `serde_json::Value`.
//!
//! Input:
//!   0      the table's default priority
//!   1      table: >= 0x80 the built-in levels, else (byte % 8) entries of
//!          [priority, name length % 16, name bytes (lossy UTF-8)]
//!   rest   the line
//!
//! Checks: nothing panics; an accepted line is UTF-8, one JSON object
//! without a repeated `priority`/`level`/`severity`, and its priority is its
//! `priority` field, else the table's value for its `level` string, else for
//! its `severity` string, else the default; a rejected line is rejected for
//! the reason the spec gives.
#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use logdist_wire::{DEFAULT_LEVELS, PriorityTable, RejectReason, ndjson_priority};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// A level table as pairs (for the reference lookup) and its default.
type Table = (Vec<(String, u8)>, u8);

/// Parses the table from the front of `data`; returns it and the rest of
/// the input.
fn table(data: &[u8]) -> Option<(Table, &[u8])> {
    let (&default, rest) = data.split_first()?;
    let (&kind, mut rest) = rest.split_first()?;
    if kind >= 0x80 {
        let entries = DEFAULT_LEVELS
            .iter()
            .map(|&(name, p)| (name.to_owned(), p))
            .collect();
        return Some(((entries, default), rest));
    }
    let mut entries = Vec::new();
    for _ in 0..kind % 8 {
        let (&priority, tail) = rest.split_first()?;
        let (&len, tail) = tail.split_first()?;
        let len = usize::from(len % 16).min(tail.len());
        let (name, tail) = tail.split_at(len);
        entries.push((String::from_utf8_lossy(name).into_owned(), priority));
        rest = tail;
    }
    Some(((entries, default), rest))
}

/// The reference lookup: the last entry whose name matches ASCII
/// case-insensitively (a later entry replaces an earlier one), else the default.
fn lookup(entries: &[(String, u8)], default: u8, name: &str) -> u8 {
    entries
        .iter()
        .rev()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map_or(default, |&(_, priority)| priority)
}

/// An object's keys in order, repeats kept (a `Value` map keeps only one).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(KeysVisitor)
    }
}

/// Stands for a lone UTF-16 surrogate escape (`"\ud800"`) in the text given
/// to `serde_json::Value`, which refuses them: two noncharacters, escaped.
const LONE_SURROGATE: &str = "\\uffff\\ufffe";
const LONE_SURROGATE_CHARS: &str = "\u{ffff}\u{fffe}";

/// The 4 hex digits at `at`, if there are 4.
fn hex4(text: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(text.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

/// `text` with every lone surrogate escape inside a string replaced by
/// [`LONE_SURROGATE`]; `None` when it has none.
fn replace_lone_surrogates(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut replaced, mut i) = (false, false, 0);
    while i < bytes.len() {
        let byte = bytes[i];
        if in_string && byte == b'\\' {
            if bytes.get(i + 1) == Some(&b'u')
                && let Some(unit) = hex4(bytes, i + 2)
            {
                let low = bytes.get(i + 6..i + 8) == Some(&b"\\u"[..])
                    && hex4(bytes, i + 8).is_some_and(|low| (0xdc00..0xe000).contains(&low));
                if (0xd800..0xdc00).contains(&unit) && low {
                    out.extend_from_slice(&bytes[i..i + 12]);
                    i += 12;
                    continue;
                }
                if (0xd800..0xe000).contains(&unit) {
                    out.extend_from_slice(LONE_SURROGATE.as_bytes());
                    replaced = true;
                    i += 6;
                    continue;
                }
            }
            // Any other escape: the backslash and the byte it escapes.
            out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
            i += 2;
            continue;
        }
        if byte == b'"' {
            in_string = !in_string;
        }
        out.push(byte);
        i += 1;
    }
    replaced.then(|| String::from_utf8(out).expect("only ASCII was replaced"))
}

/// protocol.md 2.2, on a `serde_json::Value`; `None` where a `Value` cannot
/// tell: it refuses numbers beyond f64 (`1e999`), which are valid JSON.
fn reference(
    text: &str,
    entries: &[(String, u8)],
    default: u8,
) -> Option<Result<u8, RejectReason>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) if error.to_string().starts_with("number out of range") => return None,
        Err(_) => return Some(Err(RejectReason::InvalidJson)),
    };
    let Value::Object(object) = value else {
        return Some(Err(RejectReason::NotAnObject));
    };
    let Keys(keys) = serde_json::from_str(text).expect("an object parses as keys");
    for field in ["priority", "level", "severity"] {
        if keys.iter().filter(|key| *key == field).count() > 1 {
            return Some(Err(RejectReason::InvalidJson));
        }
    }
    match object.get("priority") {
        None | Some(Value::Null) => {}
        Some(Value::Number(number)) => {
            // An integer 0..=255 without sign, fraction or exponent: `3.0`
            // and `1e2` are floats in a Value, `-0` is a float or negative.
            return Some(match number.as_u64() {
                Some(priority)
                    if priority <= 255 && !number.to_string().contains(['.', 'e', 'E', '-']) =>
                {
                    Ok(priority as u8)
                }
                _ => Err(RejectReason::BadPriority),
            });
        }
        Some(_) => return Some(Err(RejectReason::BadPriority)),
    }
    let name = match (object.get("level"), object.get("severity")) {
        (Some(Value::String(level)), _) => Some(level),
        (_, Some(Value::String(severity))) => Some(severity),
        _ => None,
    };
    Some(Ok(match name {
        // A string with a lone surrogate is no text: no table entry matches it.
        Some(name) if name.contains(LONE_SURROGATE_CHARS) => default,
        Some(name) => lookup(entries, default, name),
        None => default,
    }))
}

fuzz_target!(|data: &[u8]| {
    let Some(((entries, default), line)) = table(data) else {
        return;
    };
    let table = PriorityTable::new(entries.clone(), default);
    for (name, _) in &entries {
        assert_eq!(table.level_priority(name), lookup(&entries, default, name));
    }
    let got = ndjson_priority(line, &table).map_err(|rejection| rejection.reason);
    let Ok(text) = std::str::from_utf8(line) else {
        assert_eq!(got, Err(RejectReason::InvalidJson), "not UTF-8");
        return;
    };
    let expected = match replace_lone_surrogates(text) {
        None => reference(text, &entries, default),
        // Lone surrogates are grammatical JSON but no text: the decoder may
        // refuse a line with one as invalid JSON (it does when one is in a
        // key), but what it accepts must be right.
        Some(_) if got == Err(RejectReason::InvalidJson) => None,
        Some(replaced) => reference(&replaced, &entries, default),
    };
    if let Some(expected) = expected {
        assert_eq!(got, expected, "line {text:?}");
    }
});
