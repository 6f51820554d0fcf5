//! The analyzer control decoders, `SeedControlDecoder` (4-byte words) and
//! `JsonControlDecoder` (`{"ack":N}` / `{"weight":W}` lines), each on the
//! same arbitrary bytes.
//!
//! Input: 2 chunking bytes (see `Chunking`), then the stream.
//!
//! Checks: nothing panics; one chunk and the derived chunks give the same
//! controls and errors; seed words decode exactly as protocol.md 3.4 says
//! (checked against an independent decoding of the words); every JSON control
//! is what its line says (one key, `ack` an integer, `weight` finite >= 0);
//! buffers stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logdist_fuzz::{ChunkedStream, Chunking, u16_at};
use logdist_wire::{Control, JsonControlDecoder, SeedControlDecoder};
use serde_json::Value;

const HEADER: usize = 2;
const MAX_LINE: usize = 4096;

/// protocol.md 3.4, written out independently: every whole word is an ack
/// (bit 31 set) or a finite weight; decoding stops at the first other word.
/// `Err(())` when the stream ends in an invalid word or a partial one.
fn seed_reference(stream: &[u8]) -> (Vec<Control>, bool) {
    let mut controls = Vec::new();
    for word in stream.chunks(4) {
        let Ok(word) = <[u8; 4]>::try_from(word) else {
            return (controls, true); // bytes remaining at the end of the stream
        };
        let word = u32::from_be_bytes(word);
        if word & 0x8000_0000 != 0 {
            controls.push(Control::SeedAck(word & 0x7fff_ffff));
        } else if f32::from_bits(word).is_finite() {
            controls.push(Control::Weight(f64::from(f32::from_bits(word))));
        } else {
            return (controls, true);
        }
    }
    (controls, false)
}

/// The non-blank control lines of the stream, as protocol.md 3.4 frames them.
fn json_lines(stream: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    if stream.ends_with(b"\n") {
        lines.pop(); // no line after the last `\n`
    }
    lines
        .into_iter()
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let chunking = Chunking::new(u16_at(data, 0).to_be_bytes());
    let stream = &data[HEADER.min(data.len())..];
    let whole = || {
        if stream.is_empty() {
            vec![]
        } else {
            vec![stream]
        }
    };

    // Seed words.
    let seed = ChunkedStream::new(whole()).drain(&mut SeedControlDecoder, 3, stream.len() / 4);
    let seed_chunked = ChunkedStream::new(chunking.split(stream)).drain(
        &mut SeedControlDecoder,
        3,
        stream.len() / 4,
    );
    assert_eq!(seed, seed_chunked, "chunking changed the seed controls");
    let (expected, error) = seed_reference(stream);
    assert_eq!(seed.0, expected);
    assert_eq!(seed.1.is_some(), error, "{:?}", seed.1);

    // JSON lines.
    let json = ChunkedStream::new(whole()).drain(
        &mut JsonControlDecoder::new(),
        MAX_LINE + 1,
        stream.len(),
    );
    let json_chunked = ChunkedStream::new(chunking.split(stream)).drain(
        &mut JsonControlDecoder::new(),
        MAX_LINE + 1,
        stream.len(),
    );
    assert_eq!(json, json_chunked, "chunking changed the JSON controls");
    let lines = json_lines(stream);
    assert!(json.0.len() <= lines.len());
    if json.1.is_none() {
        assert_eq!(
            json.0.len(),
            lines.len(),
            "every non-blank line is a control"
        );
    }
    for (control, line) in json.0.iter().zip(&lines) {
        assert!(
            line.len() <= MAX_LINE,
            "line of {} bytes accepted",
            line.len()
        );
        let value: Value = serde_json::from_slice(line).expect("an accepted line is JSON");
        let object = value.as_object().expect("an accepted line is an object");
        assert_eq!(object.len(), 1, "exactly one key: {value}");
        match control {
            Control::Ack(count) => {
                assert_eq!(object.get("ack").and_then(Value::as_u64), Some(*count))
            }
            Control::Weight(weight) => {
                assert!(weight.is_finite() && *weight >= 0.0);
                assert_eq!(object.get("weight").and_then(Value::as_f64), Some(*weight));
            }
            Control::SeedAck(_) => panic!("a JSON line decoded to a seed ack"),
        }
    }
});
