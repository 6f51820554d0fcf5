//! The dead-letter record (protocol.md 4), both ways.
//!
//! Input: the first byte picks the mode.
//!   even   the rest, up to its first `\n`, is a line of a dead-letter file:
//!          `DeadLetterRecord::parse`; when it parses, writing the record
//!          and parsing that line again gives the same record, and writing
//!          is stable (the second line equals the first).
//!   odd    byte 1 is a priority, bits 1 and 2 of byte 0 the origin, the
//!          rest a message: a syslog message (bit 2; only with a PRI), an
//!          NDJSON line (only if the ingest decoder would accept it) or a
//!          frame payload. `DeadLetterRecord::new` for it must
//!          write one line that parses back to the same payload, origin and
//!          priority: replay must get back what was dead-lettered.
#![no_main]

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use logdist_wire::{
    DeadLetterRecord, Message, MessageField, Origin, PriorityTable, encode_frame, ndjson_priority,
    syslog_pri,
};

/// The record's line; asserts it is exactly one line.
fn line(record: &DeadLetterRecord) -> Vec<u8> {
    let mut out = Vec::new();
    record.write_line(&mut out);
    assert_eq!(out.last(), Some(&b'\n'), "a record ends in a newline");
    assert!(
        !out[..out.len() - 1].contains(&b'\n'),
        "a record is one line: {:?}",
        String::from_utf8_lossy(&out)
    );
    out.pop();
    out
}

fn assert_same(a: &DeadLetterRecord, b: &DeadLetterRecord) {
    let message = |record: &DeadLetterRecord| match &record.message {
        None => None,
        Some(MessageField::Json(raw)) => Some((true, raw.get().to_owned())),
        Some(MessageField::Text(text)) => Some((false, text.clone())),
    };
    assert_eq!(message(a), message(b));
    assert_eq!(a.payload_b64, b.payload_b64);
    assert_eq!(a.origin, b.origin);
    assert_eq!(a.priority, b.priority);
    assert_eq!(a.attempts, b.attempts);
    assert_eq!(a.analyzers, b.analyzers);
    assert_eq!(a.final_error, b.final_error);
    assert_eq!(a.failed_at, b.failed_at);
    assert_eq!(a.payload(), b.payload());
}

fn parse_and_rewrite(input: &[u8]) {
    let input = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(record) = DeadLetterRecord::parse(input) else {
        return;
    };
    let written = line(&record);
    let again = DeadLetterRecord::parse(&written).expect("a written record parses");
    assert_same(&record, &again);
    assert_eq!(line(&again), written, "writing is stable");
}

fn new_and_parse(flags: u8, priority: u8, body: &[u8]) {
    let message = if flags & 4 != 0 {
        // A syslog message: any bytes after a PRI (octet counting carries anything).
        if syslog_pri(body).is_none() {
            return;
        }
        Message::from_syslog(priority, Bytes::copy_from_slice(body))
    } else if flags & 2 == 0 {
        if body.contains(&b'\n') || ndjson_priority(body, &PriorityTable::default()).is_err() {
            return;
        }
        Message::from_ndjson_line(priority, Bytes::copy_from_slice(body))
    } else {
        let mut frame = BytesMut::new();
        encode_frame(priority, body, &mut frame);
        Message::from_frame(frame.freeze())
    };
    let analyzers: Vec<String> = body
        .chunks(7)
        .take(3)
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .collect();
    let final_error = String::from_utf8_lossy(body.get(..20).unwrap_or(body)).into_owned();
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_737_837_045_123);
    let record = DeadLetterRecord::new(&message, analyzers.clone(), final_error.clone(), at);
    let parsed = DeadLetterRecord::parse(&line(&record)).expect("a written record parses");
    assert_same(&record, &parsed);
    assert_eq!(parsed.origin, message.origin());
    assert_eq!(parsed.priority, Some(priority));
    assert_eq!(parsed.attempts as usize, analyzers.len());
    assert_eq!(parsed.analyzers, analyzers);
    assert_eq!(parsed.final_error, final_error);
    let payload = parsed.payload().expect("a written record has a payload");
    match message.origin() {
        Origin::Frame => assert_eq!(payload, body, "frame payload comes back byte for byte"),
        Origin::Syslog => assert_eq!(payload, body, "syslog message comes back byte for byte"),
        // The line comes back less the JSON whitespace around its object.
        Origin::Ndjson => assert_eq!(payload, body.trim_ascii()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        parse_and_rewrite(rest);
    } else if let Some((&priority, body)) = rest.split_first() {
        new_and_parse(mode, priority, body);
    }
});
