//! Properties of the decoders over generated and arbitrary input:
//! chunking never changes what is decoded, nothing panics or buffers past its
//! limit, and every encoder round-trips through its decoder.

use std::sync::Arc;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use logdist_wire::{
    AnalyzerFormat, Decoded, FrameDecoder, HandshakeDecoder, IngestDecoder, IngestFormat,
    IngestLimits, JsonControlDecoder, Message, NdjsonLineDecoder, OutboundBatch, PriorityTable,
    RejectReason, SeedControlDecoder, encode_frame, encode_gzip_frame,
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// What the decoder should yield, compared without caring about buffer identity.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Message(Message),
    Rejected(RejectReason),
}

impl From<Decoded> for Outcome {
    fn from(decoded: Decoded) -> Self {
        match decoded {
            Decoded::Message(message) => Outcome::Message(message),
            Decoded::Rejected(rejection) => Outcome::Rejected(rejection.reason),
            Decoded::Gzip(_) => unreachable!("these decoders inflate gzip themselves"),
        }
    }
}

/// One generated NDJSON object and the priority the spec assigns it.
#[derive(Clone, Debug)]
struct JsonLine {
    text: String,
    priority: u8,
}

#[derive(Clone, Debug)]
enum Item {
    Line {
        line: JsonLine,
        crlf: bool,
    },
    Frame {
        priority: u8,
        payload: Vec<u8>,
    },
    Gzip {
        lines: Vec<JsonLine>,
        crlf: bool,
        terminate_last: bool,
    },
    Blank(&'static str),
    Invalid(&'static str, RejectReason),
    /// A syslog message, LF-framed (`crlf`: ended by `\r\n`) or octet-counted.
    Syslog {
        message: SyslogMessage,
        octet_counted: bool,
        crlf: bool,
    },
}

/// One generated syslog message and the priority the spec assigns it.
#[derive(Clone, Debug)]
struct SyslogMessage {
    text: String,
    priority: u8,
}

/// The spec's default table, written out independently of the crate's.
fn expected_level_priority(level: &str) -> Option<u8> {
    match level.to_ascii_lowercase().as_str() {
        "fatal" | "critical" => Some(0),
        "error" => Some(1),
        "warn" | "warning" => Some(2),
        "info" => Some(3),
        "debug" => Some(4),
        "trace" => Some(5),
        _ => None,
    }
}

fn level_name() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "fatal", "critical", "error", "warn", "warning", "info", "debug", "trace", "verbose",
        "notice",
    ]);
    (names, prop::collection::vec(any::<bool>(), 8)).prop_map(|(name, upper)| {
        name.chars()
            .zip(upper.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

fn json_line() -> impl Strategy<Value = JsonLine> {
    (
        prop::option::of(prop::option::of(any::<u8>())),
        prop::option::of(level_name()),
        prop::option::of(level_name()),
        "\\PC{0,40}",
        prop::sample::select(vec!["", " ", "\t "]),
    )
        .prop_map(|(priority, level, severity, message, indent)| {
            let mut object = serde_json::Map::new();
            object.insert("message".into(), message.into());
            object.insert("source".into(), "emitter-1".into());
            if let Some(priority) = priority {
                object.insert("priority".into(), priority.into());
            }
            if let Some(level) = &level {
                object.insert("level".into(), level.as_str().into());
            }
            if let Some(severity) = &severity {
                object.insert("severity".into(), severity.as_str().into());
            }
            // The spec: priority if present and not null, else level, else
            // severity; a level not in the table means the default.
            let by_name = level.as_deref().or(severity.as_deref());
            let expected = priority
                .flatten()
                .unwrap_or_else(|| by_name.and_then(expected_level_priority).unwrap_or(3));
            JsonLine {
                text: format!("{indent}{}", serde_json::Value::Object(object)),
                priority: expected,
            }
        })
}

fn frame_item() -> impl Strategy<Value = Item> {
    (
        prop_oneof![any::<u8>(), Just(0x1f)],
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            // What follows a 0x1f priority byte in the gzip-vs-binary edge cases.
            (
                prop::sample::select(vec![&[0x8b][..], &[0x8b, 0x08], &[0x8b, 0x00]]),
                prop::collection::vec(any::<u8>(), 0..20),
            )
                .prop_map(|(head, tail)| [head, &tail].concat()),
        ],
    )
        .prop_map(|(priority, mut payload)| {
            // A binary frame of 18+ bytes with priority 0x1f and payload
            // `8b 08 ...` is by definition a gzip frame: a valid binary stream
            // cannot contain one.
            if priority == 0x1f && payload.len() >= 13 && payload.starts_with(&[0x8b, 0x08]) {
                payload[1] = 0;
            }
            Item::Frame { priority, payload }
        })
}

/// RFC 5424 and RFC 3164 messages of every severity. An octet-counted one
/// may hold newlines; none ends with one (a counted trailing `\n` is not
/// part of the message).
fn syslog_message(octet_counted: bool) -> impl Strategy<Value = SyslogMessage> {
    let body = if octet_counted {
        "[^\r\n]{0,5}(\n[^\r\n]{1,10}){0,2}"
    } else {
        "[^\r\n]{0,40}"
    };
    (
        0u8..24,
        0u8..8,
        any::<bool>(),
        "[a-z0-9.-]{1,12}",
        prop::option::of("[a-z]{1,8}"),
        body,
    )
        .prop_map(|(facility, severity, rfc5424, host, app, body)| {
            let pri = facility * 8 + severity;
            let app = app.unwrap_or_else(|| "-".to_owned());
            let text = if rfc5424 {
                format!("<{pri}>1 2025-01-25T20:30:45.123Z {host} {app} - - - {body}")
            } else {
                format!("<{pri}>Jan 25 20:30:45 {host} {app}: {body}")
            };
            // The spec's default table, written out independently.
            let priority = [0, 0, 0, 1, 2, 3, 3, 4][usize::from(severity)];
            SyslogMessage { text, priority }
        })
}

fn syslog_item() -> impl Strategy<Value = Item> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(octet_counted, crlf)| {
        syslog_message(octet_counted).prop_map(move |message| Item::Syslog {
            message,
            octet_counted,
            crlf,
        })
    })
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        3 => syslog_item(),
        4 => (json_line(), any::<bool>()).prop_map(|(line, crlf)| Item::Line { line, crlf }),
        3 => frame_item(),
        1 => (prop::collection::vec(json_line(), 0..5), any::<bool>(), any::<bool>())
            .prop_map(|(lines, crlf, terminate_last)| Item::Gzip { lines, crlf, terminate_last }),
        1 => prop::sample::select(vec!["\n", "\r\n", " \t\n", "   \r\n"]).prop_map(Item::Blank),
        1 => prop::sample::select(vec![
            ("[1,2]", RejectReason::NotAnObject),
            ("\"text\"", RejectReason::NotAnObject),
            ("hello world", RejectReason::InvalidJson),
            ("{\"a\":", RejectReason::InvalidJson),
            ("{\"priority\":300}", RejectReason::BadPriority),
            ("{\"priority\":\"1\"}", RejectReason::BadPriority),
            ("<192>1 - - - - - - too big", RejectReason::BadSyslog),
            ("<a>no pri", RejectReason::BadSyslog),
            ("42", RejectReason::NotAnObject),
        ])
        .prop_map(|(text, reason)| Item::Invalid(text, reason)),
    ]
}

/// Encodes the items as one stream; `open_tail` leaves a final text line
/// unterminated. Returns the bytes and what decoding them must yield.
fn encode_stream(items: &[Item], open_tail: bool) -> (Vec<u8>, Vec<Outcome>) {
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    let ndjson = |line: &JsonLine| {
        Outcome::Message(Message::from_ndjson_line(
            line.priority,
            Bytes::from(line.text.clone()),
        ))
    };
    for (index, item) in items.iter().enumerate() {
        let last = index + 1 == items.len();
        match item {
            Item::Line { line, crlf } => {
                wire.extend_from_slice(line.text.as_bytes());
                if !(last && open_tail) {
                    wire.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                }
                expected.push(ndjson(line));
            }
            Item::Frame { priority, payload } => {
                let mut frame = BytesMut::new();
                encode_frame(*priority, payload, &mut frame);
                wire.extend_from_slice(&frame);
                expected.push(Outcome::Message(Message::from_frame(frame.freeze())));
            }
            Item::Gzip {
                lines,
                crlf,
                terminate_last,
            } => {
                let terminator = if *crlf { "\r\n" } else { "\n" };
                let mut text = lines
                    .iter()
                    .map(|line| line.text.as_str())
                    .collect::<Vec<_>>()
                    .join(terminator);
                if *terminate_last && !lines.is_empty() {
                    text.push_str(terminator);
                }
                encode_gzip_frame(text.as_bytes(), &mut wire);
                expected.extend(lines.iter().map(ndjson));
            }
            Item::Blank(blank) => wire.extend_from_slice(blank.as_bytes()),
            Item::Syslog {
                message,
                octet_counted,
                crlf,
            } => {
                let text = message.text.as_bytes();
                if *octet_counted {
                    logdist_wire::encode_octet_counted(text, &mut wire);
                } else {
                    wire.extend_from_slice(text);
                    if !(last && open_tail) {
                        wire.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                    }
                }
                expected.push(Outcome::Message(Message::from_syslog(
                    message.priority,
                    Bytes::from(message.text.clone()),
                )));
            }
            Item::Invalid(text, reason) => {
                wire.extend_from_slice(text.as_bytes());
                wire.extend_from_slice(b"\n");
                expected.push(Outcome::Rejected(*reason));
            }
        }
    }
    (wire.to_vec(), expected)
}

/// Feeds `input` to `decoder` in chunks of the given sizes (cycled; whole if
/// none), then ends the stream. Checks after every `Ok(None)` that the decoder
/// left at most `max_buffered` bytes buffered. Stops at the first error.
fn feed<D: Decoder>(
    decoder: &mut D,
    input: &[u8],
    chunk_sizes: &[usize],
    max_buffered: usize,
) -> (Vec<D::Item>, Option<D::Error>) {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut sizes = chunk_sizes.iter().copied().cycle();
    let mut rest = input;
    // Every item consumes at least one input byte, except one Truncated at EOF.
    let max_items = input.len() + 1;
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(error) => return (items, Some(error)),
            }
            assert!(items.len() <= max_items, "decoder yields without consuming");
        }
        assert!(
            buf.len() <= max_buffered,
            "{} bytes buffered, limit {max_buffered}",
            buf.len()
        );
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => break,
            Err(error) => return (items, Some(error)),
        }
        assert!(items.len() <= max_items, "decode_eof never ends");
    }
    (items, None)
}

fn ingest_decoder(limits: IngestLimits) -> IngestDecoder {
    IngestDecoder::new(limits, Arc::new(PriorityTable::default()))
}

fn decode_ingest(input: &[u8], chunk_sizes: &[usize]) -> Vec<Outcome> {
    let limits = IngestLimits::default();
    let bound = limits.max_frame_bytes + 4;
    let (items, error) = feed(&mut ingest_decoder(limits), input, chunk_sizes, bound);
    assert!(error.is_none(), "valid stream failed: {error:?}");
    items.into_iter().map(Outcome::from).collect()
}

/// Valid streams with a few bytes overwritten, or cut short.
fn damaged_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(item(), 0..8),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(items, damage, cut)| {
            let (mut wire, _) = encode_stream(&items, false);
            if !wire.is_empty() {
                for (at, byte) in damage {
                    let at = at.index(wire.len());
                    wire[at] = byte;
                }
                wire.truncate(cut.index(wire.len() + 1));
            }
            wire
        })
}

fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2000),
        damaged_stream(),
        // Mostly text, to reach the line paths.
        prop::collection::vec(
            prop::sample::select(b"{}[]<>\":,0123456789abc \r\n\t".to_vec()),
            0..2000
        ),
    ]
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..300, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chunking_never_changes_what_is_decoded(
        items in prop::collection::vec(item(), 0..12),
        open_tail in any::<bool>(),
        chunk_sizes in chunk_sizes(),
    ) {
        let (wire, expected) = encode_stream(&items, open_tail);
        let whole = decode_ingest(&wire, &[]);
        prop_assert_eq!(&whole, &expected);
        let chunked = decode_ingest(&wire, &chunk_sizes);
        prop_assert_eq!(&chunked, &expected);
        let byte_by_byte = decode_ingest(&wire, &[1]);
        prop_assert_eq!(&byte_by_byte, &expected);
    }

    #[test]
    fn hostile_input_never_panics_or_overbuffers(input in hostile_input(), chunk_sizes in chunk_sizes()) {
        let limits = IngestLimits { max_frame_bytes: 512, max_line_bytes: 256, max_decompressed_bytes: 1024 };
        let bound = (limits.max_line_bytes + 1).max(limits.max_frame_bytes + 4);
        feed(&mut ingest_decoder(limits), &input, &chunk_sizes, bound);
        for format in [IngestFormat::Ndjson, IngestFormat::Frame, IngestFormat::Syslog] {
            feed(&mut ingest_decoder(limits).format(format), &input, &chunk_sizes, bound);
        }
        feed(&mut FrameDecoder::new(512), &input, &chunk_sizes, 512);
        feed(&mut HandshakeDecoder::new(), &input, &chunk_sizes, 4097);
        feed(&mut SeedControlDecoder, &input, &chunk_sizes, 3);
        feed(&mut JsonControlDecoder::new(), &input, &chunk_sizes, 4097);
        feed(&mut NdjsonLineDecoder::new(256), &input, &chunk_sizes, 257);
    }

    #[test]
    fn handshake_then_controls_survive_any_chunking(
        controls in prop::collection::vec(any::<u32>(), 0..20),
        chunk_sizes in chunk_sizes(),
    ) {
        // Random words after a seed handshake: each decodes to an ack, a weight,
        // or an invalid-weight error; never to anything else, whatever the chunking.
        let mut wire = logdist_wire::seed_handshake(1.5).to_vec();
        for word in &controls {
            wire.extend_from_slice(&word.to_be_bytes());
        }
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert!(HandshakeDecoder::new().decode(&mut buf).unwrap().is_some());
        let (decoded, error) = feed(&mut SeedControlDecoder, &buf, &chunk_sizes, 3);
        // Every word decodes, up to the first weight word that is not a
        // finite number (the decoder refuses it and stops there).
        let valid = controls
            .iter()
            .take_while(|&&w| w & 0x8000_0000 != 0 || f32::from_bits(w).is_finite())
            .count();
        prop_assert_eq!(decoded.len(), valid);
        prop_assert_eq!(error.is_some(), valid < controls.len());
        for (control, word) in decoded.iter().zip(&controls) {
            match control {
                logdist_wire::Control::SeedAck(count) => prop_assert_eq!(*count, word & 0x7fff_ffff),
                logdist_wire::Control::Weight(weight) => prop_assert_eq!(*weight, f64::from(f32::from_bits(*word))),
                logdist_wire::Control::Ack(_) => prop_assert!(false, "seed words never decode to JSON acks"),
            }
        }
    }

    #[test]
    fn frames_round_trip(
        frames in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..600)), 0..20),
        chunk_sizes in chunk_sizes(),
    ) {
        let mut wire = BytesMut::new();
        for (priority, payload) in &frames {
            encode_frame(*priority, payload, &mut wire);
        }
        let (decoded, error) = feed(&mut FrameDecoder::new(605), &wire, &chunk_sizes, 605);
        prop_assert!(error.is_none());
        let decoded: Vec<_> = decoded.iter().map(|m| (m.priority(), m.payload().to_vec())).collect();
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn outbound_batches_round_trip(
        items in prop::collection::vec(prop_oneof![json_line().prop_map(Ok), frame_item().prop_map(Err), syslog_item().prop_map(Err)], 0..20),
        chunk_sizes in chunk_sizes(),
    ) {
        let messages: Vec<Message> = items
            .iter()
            .map(|item| match item {
                Ok(line) => Message::from_ndjson_line(line.priority, Bytes::from(line.text.clone())),
                Err(Item::Frame { priority, payload }) => {
                    let mut frame = BytesMut::new();
                    encode_frame(*priority, payload, &mut frame);
                    Message::from_frame(frame.freeze())
                }
                Err(Item::Syslog { message, .. }) => {
                    Message::from_syslog(message.priority, Bytes::from(message.text.clone()))
                }
                Err(other) => unreachable!("frame_item made {other:?}"),
            })
            .collect();

        let mut frames = OutboundBatch::new();
        let mut lines = OutboundBatch::new();
        for message in &messages {
            frames.push(message, AnalyzerFormat::Frame);
            lines.push(message, AnalyzerFormat::Ndjson);
        }
        prop_assert_eq!(frames.message_count(), messages.len());
        let wire = frames.chunks().concat();
        prop_assert_eq!(wire.len(), frames.byte_len());

        let (decoded, error) = feed(&mut FrameDecoder::new(1 << 20), &wire, &chunk_sizes, 1 << 20);
        prop_assert!(error.is_none());
        prop_assert_eq!(decoded.len(), messages.len());
        for (got, sent) in decoded.iter().zip(&messages) {
            prop_assert_eq!(got.priority(), sent.priority());
            prop_assert_eq!(got.payload(), sent.payload());
        }

        let wire = lines.chunks().concat();
        prop_assert_eq!(wire.len(), lines.byte_len());
        let (decoded, error) = feed(&mut NdjsonLineDecoder::new(1 << 20), &wire, &chunk_sizes, 1 << 20);
        prop_assert!(error.is_none());
        prop_assert_eq!(decoded.len(), messages.len());
        for (got, sent) in decoded.iter().zip(&messages) {
            let value: serde_json::Value = serde_json::from_slice(got).unwrap();
            match sent.origin() {
                logdist_wire::Origin::Ndjson => prop_assert_eq!(got, sent.data()),
                logdist_wire::Origin::Syslog => {
                    prop_assert_eq!(value["priority"].as_u64(), Some(u64::from(sent.priority())));
                    let text = std::str::from_utf8(sent.data()).unwrap();
                    let body = value["message"].as_str().unwrap();
                    prop_assert!(text.trim_end().ends_with(body.trim()), "{} from {}", body, text);
                    prop_assert!(value["severity"].is_string());
                    prop_assert!(value["facility"].is_string());
                }
                logdist_wire::Origin::Frame => {
                    prop_assert_eq!(value["priority"].as_u64(), Some(u64::from(sent.priority())));
                    let payload = match (value["message"].as_str(), value["payload_b64"].as_str()) {
                        (Some(text), None) => text.as_bytes().to_vec(),
                        (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
                        other => panic!("bad conversion {other:?}"),
                    };
                    prop_assert_eq!(&payload[..], &sent.payload()[..]);
                }
            }
        }
    }
}
