//! The analyzer connection protocol, both sides: the handshake an analyzer
//! opens with, the distributor's reply, and the control stream (acks and
//! weight updates) that follows.
//!
//! Two dialects exist. Seed analyzers speak 4-byte big-endian words; newer
//! ones speak JSON lines. The first byte of the handshake tells them apart:
//! `{` opens a JSON hello, anything else is the first byte of a seed weight
//! (a `{` there would mean a weight near 1e36, which no one sends).

use std::io;

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

use crate::line::{LineFramer, LineOutcome};

/// Longest JSON hello or control line, without its terminator.
const MAX_JSON_LINE_BYTES: usize = 4096;

/// Longest analyzer id in a JSON hello, in characters.
const MAX_ID_CHARS: usize = 128;

/// Seed control words use the sign bit to say "this is an ack".
const ACK_BIT: u32 = 1 << 31;

/// The smallest positive weight a seed handshake may carry. Four bytes that are
/// not a handshake at all (a TLS ClientHello starts `16 03 01`, a weight of
/// about 1e-25) mostly decode to a tiny or subnormal float; no analyzer asks
/// for a share that small, so such weights are refused (0 itself is allowed:
/// it connects draining).
pub const MIN_SEED_WEIGHT: f32 = 1e-6;

/// How the distributor encodes messages for an analyzer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnalyzerFormat {
    /// Seed binary frames.
    #[default]
    Frame,
    /// One JSON object per line.
    Ndjson,
}

/// What an analyzer said first.
#[derive(Clone, Debug, PartialEq)]
pub enum Handshake {
    /// The seed handshake: only a weight; binary frames with acks on.
    Seed {
        weight: f32,
    },
    Hello(Hello),
}

/// A JSON hello line. Unknown fields are accepted, so newer analyzers can
/// add fields without breaking older distributors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub id: String,
    pub weight: f64,
    #[serde(default)]
    pub format: AnalyzerFormat,
    #[serde(default = "acks_default")]
    pub acks: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn acks_default() -> bool {
    true
}

/// Why a handshake was refused; the message is sent back in `error_reply`,
/// with [`HandshakeError::code`] as its reason.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("hello line exceeds {MAX_JSON_LINE_BYTES} bytes")]
    HelloTooLong,
    #[error("invalid hello: {0}")]
    InvalidHello(serde_json::Error),
    #[error("analyzer id must be 1..={MAX_ID_CHARS} characters")]
    InvalidId,
    #[error("weight must be a finite number >= 0, got {0}")]
    InvalidWeight(f64),
    /// A seed weight that is positive but subnormal or below [`MIN_SEED_WEIGHT`]:
    /// most likely the first bytes of another protocol.
    #[error("seed weight must be 0 or a normal number >= {MIN_SEED_WEIGHT:e}, got {0:e}")]
    ImplausibleSeedWeight(f64),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the analyzer's handshake. After one item, hand the remaining buffer to
/// the control decoder for the dialect it chose.
#[derive(Debug)]
pub struct HandshakeDecoder {
    lines: LineFramer,
}

impl HandshakeDecoder {
    pub fn new() -> Self {
        HandshakeDecoder {
            lines: LineFramer::new(MAX_JSON_LINE_BYTES),
        }
    }

    fn hello(outcome: LineOutcome) -> Result<Handshake, HandshakeError> {
        let line = match outcome {
            LineOutcome::Line(line) => line,
            LineOutcome::TooLong => return Err(HandshakeError::HelloTooLong),
        };
        let hello: Hello = serde_json::from_slice(&line).map_err(HandshakeError::InvalidHello)?;
        if hello.id.is_empty() || hello.id.chars().count() > MAX_ID_CHARS {
            return Err(HandshakeError::InvalidId);
        }
        if !valid_weight(hello.weight) {
            return Err(HandshakeError::InvalidWeight(hello.weight));
        }
        Ok(Handshake::Hello(hello))
    }
}

impl Default for HandshakeDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for HandshakeDecoder {
    type Item = Handshake;
    type Error = HandshakeError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Handshake>, HandshakeError> {
        match buf.first() {
            None => Ok(None),
            Some(b'{') => self.lines.next_line(buf).map(Self::hello).transpose(),
            Some(_) => {
                let Some(word) = buf.first_chunk::<4>() else {
                    return Ok(None);
                };
                let weight = f32::from_be_bytes(*word);
                buf.advance(4);
                // Checking the sign bit, not `< 0.0`, also refuses -0.0.
                if weight.is_sign_negative() || !weight.is_finite() {
                    return Err(HandshakeError::InvalidWeight(weight.into()));
                }
                if weight != 0.0 && !plausible_seed_weight(weight) {
                    return Err(HandshakeError::ImplausibleSeedWeight(weight.into()));
                }
                Ok(Some(Handshake::Seed { weight }))
            }
        }
    }
}

/// The distributor's reply to an accepted JSON hello.
pub fn hello_ok() -> &'static [u8] {
    b"{\"status\":\"ok\"}\n"
}

/// What an analyzer tells the distributor after the handshake.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    /// Seed ack: messages received on this connection so far, mod 2^31.
    SeedAck(u32),
    /// JSON ack: messages received on this connection so far.
    Ack(u64),
    /// New weight; 0 drains the analyzer.
    Weight(f64),
}

/// Why an analyzer's control stream cannot be read any further.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("weight must be a finite number >= 0, got {0}")]
    InvalidWeight(f64),
    #[error("control line exceeds {MAX_JSON_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("invalid control line (expected {{\"ack\":N}} or {{\"weight\":W}}): {0}")]
    InvalidLine(serde_json::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads seed control words: sign bit set = cumulative ack in the low 31
/// bits, sign bit clear = f32 weight update.
#[derive(Debug, Default)]
pub struct SeedControlDecoder;

impl Decoder for SeedControlDecoder {
    type Item = Control;
    type Error = ControlError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Control>, ControlError> {
        let Some(word) = buf.first_chunk::<4>().map(|word| u32::from_be_bytes(*word)) else {
            return Ok(None);
        };
        buf.advance(4);
        if word & ACK_BIT != 0 {
            return Ok(Some(Control::SeedAck(word & !ACK_BIT)));
        }
        let weight = f64::from(f32::from_bits(word));
        if !valid_weight(weight) {
            return Err(ControlError::InvalidWeight(weight));
        }
        Ok(Some(Control::Weight(weight)))
    }
}

/// Reads JSON control lines `{"ack":N}` and `{"weight":W}`; blank lines are
/// skipped.
#[derive(Debug)]
pub struct JsonControlDecoder {
    lines: LineFramer,
}

/// The JSON form of a control line: exactly one of the two keys.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum JsonControl {
    Ack(u64),
    Weight(f64),
}

impl JsonControlDecoder {
    pub fn new() -> Self {
        JsonControlDecoder {
            lines: LineFramer::new(MAX_JSON_LINE_BYTES),
        }
    }

    /// `None` for a blank line.
    fn control(outcome: LineOutcome) -> Result<Option<Control>, ControlError> {
        let line = match outcome {
            LineOutcome::Line(line) => line,
            LineOutcome::TooLong => return Err(ControlError::LineTooLong),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice(&line).map_err(ControlError::InvalidLine)? {
            JsonControl::Ack(count) => Ok(Some(Control::Ack(count))),
            JsonControl::Weight(weight) if valid_weight(weight) => {
                Ok(Some(Control::Weight(weight)))
            }
            JsonControl::Weight(weight) => Err(ControlError::InvalidWeight(weight)),
        }
    }
}

impl Default for JsonControlDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for JsonControlDecoder {
    type Item = Control;
    type Error = ControlError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Control>, ControlError> {
        while let Some(outcome) = self.lines.next_line(buf) {
            if let Some(control) = Self::control(outcome)? {
                return Ok(Some(control));
            }
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Control>, ControlError> {
        if let Some(control) = self.decode(buf)? {
            return Ok(Some(control));
        }
        match self.lines.last_line(buf) {
            Some(outcome) => Self::control(outcome),
            None => Ok(None),
        }
    }
}

/// The seed handshake an analyzer sends: its weight as a big-endian f32.
pub fn seed_handshake(weight: f32) -> [u8; 4] {
    weight.to_be_bytes()
}

/// A seed ack word for `cumulative` messages received (kept mod 2^31).
pub fn seed_ack_word(cumulative: u64) -> [u8; 4] {
    // Truncation to the low 31 bits is the protocol.
    let low = (cumulative & u64::from(!ACK_BIT)) as u32;
    (ACK_BIT | low).to_be_bytes()
}

/// A seed weight-update word. The weight must be finite and >= 0 (its sign
/// bit is the ack flag).
pub fn seed_weight_word(weight: f32) -> [u8; 4] {
    weight.to_be_bytes()
}

fn valid_weight(weight: f64) -> bool {
    weight.is_finite() && weight >= 0.0
}

/// A positive seed weight that someone could mean: a normal float, not tiny.
fn plausible_seed_weight(weight: f32) -> bool {
    weight.is_normal() && weight >= MIN_SEED_WEIGHT
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn handshake(input: &[u8]) -> Result<Option<Handshake>, HandshakeError> {
        HandshakeDecoder::new().decode(&mut BytesMut::from(input))
    }

    fn error_reply_text(input: &str) -> String {
        handshake(input.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn seed_handshake_is_a_big_endian_weight() {
        let mut buf = BytesMut::from(&seed_handshake(0.4)[..]);
        buf.put_slice(&seed_ack_word(1));
        let decoded = HandshakeDecoder::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(decoded, Handshake::Seed { weight: 0.4 });
        assert_eq!(
            &buf[..],
            &seed_ack_word(1),
            "control words stay in the buffer"
        );
        assert_eq!(seed_handshake(1.0), [0x3f, 0x80, 0, 0]);
        assert_eq!(handshake(&[0x3f, 0x80]).unwrap(), None, "waits for 4 bytes");
    }

    #[test]
    fn seed_handshake_weight_must_be_positive_and_finite() {
        for weight in [-1.0f32, -0.0, f32::NAN, f32::INFINITY] {
            let error = handshake(&weight.to_be_bytes()).unwrap_err();
            assert!(
                matches!(error, HandshakeError::InvalidWeight(_)),
                "{weight}"
            );
        }
        assert_eq!(
            handshake(&0f32.to_be_bytes()).unwrap(),
            Some(Handshake::Seed { weight: 0.0 })
        );
    }

    #[test]
    fn tiny_and_subnormal_seed_weights_are_refused() {
        // A TLS ClientHello's first bytes, a subnormal, and a weight just below the minimum.
        for bytes in [
            [0x16, 0x03, 0x01, 0x02],
            f32::from_bits(1).to_be_bytes(),
            (MIN_SEED_WEIGHT / 2.0).to_be_bytes(),
        ] {
            let error = handshake(&bytes).unwrap_err();
            assert!(
                matches!(error, HandshakeError::ImplausibleSeedWeight(_)),
                "{bytes:02x?}: {error}"
            );
            assert_eq!(error.code().as_str(), "bad_weight");
        }
        assert_eq!(
            handshake(&MIN_SEED_WEIGHT.to_be_bytes()).unwrap(),
            Some(Handshake::Seed {
                weight: MIN_SEED_WEIGHT
            })
        );
    }

    #[test]
    fn json_hello_with_defaults() {
        let decoded = handshake(b"{\"id\":\"a1\",\"weight\":0.4}\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            decoded,
            Handshake::Hello(Hello {
                id: "a1".to_owned(),
                weight: 0.4,
                format: AnalyzerFormat::Frame,
                acks: true,
                token: None,
            })
        );
    }

    #[test]
    fn json_hello_with_every_field_and_unknown_ones() {
        let line = b"{\"id\":\"a2\",\"weight\":0,\"format\":\"ndjson\",\"acks\":false,\"token\":\"s3cret\",\"extra\":[1]}\n";
        let Some(Handshake::Hello(hello)) = handshake(line).unwrap() else {
            panic!("expected a hello");
        };
        assert_eq!(hello.format, AnalyzerFormat::Ndjson);
        assert!(!hello.acks);
        assert_eq!(hello.token.as_deref(), Some("s3cret"));
        assert_eq!(hello.weight, 0.0);
    }

    #[test]
    fn hello_serializes_to_what_the_decoder_reads() {
        let hello = Hello {
            id: "x".to_owned(),
            weight: 2.5,
            format: AnalyzerFormat::Ndjson,
            acks: true,
            token: None,
        };
        let mut line = serde_json::to_vec(&hello).unwrap();
        assert_eq!(
            line,
            br#"{"id":"x","weight":2.5,"format":"ndjson","acks":true}"#
        );
        line.push(b'\n');
        assert_eq!(handshake(&line).unwrap(), Some(Handshake::Hello(hello)));
    }

    #[test]
    fn json_error_replys_are_precise() {
        assert_eq!(
            error_reply_text("{\"id\":\"\",\"weight\":1}\n"),
            "analyzer id must be 1..=128 characters"
        );
        let long_id = format!("{{\"id\":\"{}\",\"weight\":1}}\n", "é".repeat(129));
        assert_eq!(
            error_reply_text(&long_id),
            "analyzer id must be 1..=128 characters"
        );
        let max_id = format!("{{\"id\":\"{}\",\"weight\":1}}\n", "é".repeat(128));
        assert!(handshake(max_id.as_bytes()).unwrap().is_some());
        assert_eq!(
            error_reply_text("{\"id\":\"a\",\"weight\":-0.5}\n"),
            "weight must be a finite number >= 0, got -0.5"
        );
        assert_eq!(
            error_reply_text("{\"id\":\"a\"}\n"),
            "invalid hello: missing field `weight` at line 1 column 10"
        );
        assert_eq!(
            error_reply_text("{\"id\":\"a\",\"weight\":1,\"format\":\"xml\"}\n"),
            "invalid hello: unknown variant `xml`, expected `frame` or `ndjson` at line 1 column 35"
        );
        let long = format!("{{\"id\":\"{}\"", "a".repeat(5000));
        assert_eq!(error_reply_text(&long), "hello line exceeds 4096 bytes");
        assert_eq!(
            handshake(b"{\"id\":\"a\",").unwrap(),
            None,
            "waits for the newline"
        );
    }

    #[test]
    fn refused_hellos_have_their_codes() {
        let code = |input: &[u8]| handshake(input).unwrap_err().code().as_str();
        assert_eq!(code(b"{\"id\":\"\",\"weight\":1}\n"), "bad_id");
        assert_eq!(code(b"{\"id\":\"a\",\"weight\":-0.5}\n"), "bad_weight");
        assert_eq!(code(b"{\"id\":\"a\"}\n"), "bad_handshake");
        assert_eq!(
            code(b"{\"id\":\"a\",\"id\":\"b\",\"weight\":1}\n"),
            "bad_handshake"
        );
        assert_eq!(code(b"{not json}\n"), "bad_handshake");
        assert_eq!(code(&[b'{'; 5000]), "hello_too_long");
        assert_eq!(code(&(-1.0f32).to_be_bytes()), "bad_weight");
        let eof = HandshakeDecoder::new()
            .decode_eof(&mut BytesMut::from(&b"{\"id\":"[..]))
            .unwrap_err();
        assert_eq!(eof.code().as_str(), "bad_handshake");
    }

    #[test]
    fn reply_bytes() {
        assert_eq!(hello_ok(), b"{\"status\":\"ok\"}\n");
    }

    #[test]
    fn seed_control_words() {
        let mut buf = BytesMut::new();
        buf.put_slice(&seed_ack_word(5));
        buf.put_slice(&seed_ack_word((1 << 31) + 7));
        buf.put_slice(&seed_weight_word(0.25));
        buf.put_slice(&seed_weight_word(0.0));
        buf.put_slice(&[0x80, 0, 0]);
        let mut decoder = SeedControlDecoder;
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Control::SeedAck(5)));
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Control::SeedAck(7)),
            "mod 2^31"
        );
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Control::Weight(0.25))
        );
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Control::Weight(0.0))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(seed_ack_word(5), [0x80, 0, 0, 5]);
        assert_eq!(seed_ack_word(u64::from(u32::MAX)), [0xff; 4]);
    }

    #[test]
    fn seed_weight_must_be_finite() {
        for weight in [f32::INFINITY, f32::NAN] {
            let mut buf = BytesMut::from(&seed_weight_word(weight)[..]);
            let error = SeedControlDecoder.decode(&mut buf).unwrap_err();
            assert!(matches!(error, ControlError::InvalidWeight(_)));
        }
        let mut buf = BytesMut::from(&seed_weight_word(f32::INFINITY)[..]);
        assert_eq!(
            SeedControlDecoder.decode(&mut buf).unwrap_err().to_string(),
            "weight must be a finite number >= 0, got inf"
        );
    }

    #[test]
    fn json_control_lines() {
        let mut buf = BytesMut::from(
            &b"{\"ack\":10}\n\n  \r\n{\"weight\":0.5}\r\n{\"ack\":18446744073709551615}"[..],
        );
        let mut decoder = JsonControlDecoder::new();
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Control::Ack(10)));
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Control::Weight(0.5))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(
            decoder.decode_eof(&mut buf).unwrap(),
            Some(Control::Ack(u64::MAX))
        );
        assert_eq!(decoder.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn json_control_errors() {
        let error = |line: &[u8]| {
            JsonControlDecoder::new()
                .decode(&mut BytesMut::from(line))
                .unwrap_err()
        };
        assert!(matches!(error(b"{\"weight\":-1}\n"), ControlError::InvalidWeight(w) if w == -1.0));
        assert_eq!(
            error(b"{\"nack\":1}\n").to_string(),
            "invalid control line (expected {\"ack\":N} or {\"weight\":W}): unknown variant `nack`, expected `ack` or `weight` at line 1 column 7"
        );
        assert!(matches!(
            error(b"{\"ack\":-1}\n"),
            ControlError::InvalidLine(_)
        ));
        assert!(matches!(
            error(b"{\"ack\":1,\"weight\":1}\n"),
            ControlError::InvalidLine(_)
        ));
        assert!(matches!(error(b"not json\n"), ControlError::InvalidLine(_)));
        assert!(matches!(error(&[b'{'; 5000]), ControlError::LineTooLong));
    }
}
