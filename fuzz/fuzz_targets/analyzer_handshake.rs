//! The analyzer handshake (`HandshakeDecoder`: a 4-byte seed weight or a JSON
//! hello line), then the control stream of the dialect it chose, on
//! arbitrary bytes.
//!
//! Input: 2 chunking bytes (see `Chunking`), then the stream.
//!
//! Checks: nothing panics; one chunk and the derived chunks give the same
//! handshake, the same control items and the same errors; an accepted seed
//! handshake is a finite weight with sign bit 0 taken from exactly the first
//! 4 bytes; an accepted hello has an id of 1..=128 characters and a finite
//! weight >= 0, and is one line that parses as that hello; buffers stay
//! bounded by the 4096-byte line limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logdist_fuzz::{ChunkedStream, Chunking, u16_at};
use logdist_wire::{Control, Handshake, HandshakeDecoder, JsonControlDecoder, SeedControlDecoder};

const HEADER: usize = 2;
/// Longest hello or control line (protocol.md 3.1, 3.4), plus a `\r`.
const MAX_LINE_BUFFERED: usize = 4096 + 1;

#[derive(Debug, PartialEq)]
struct Outcome {
    handshake: Result<Option<Handshake>, String>,
    controls: Vec<Control>,
    control_error: Option<String>,
}

fn run(chunks: Vec<&[u8]>, stream_len: usize) -> Outcome {
    let mut input = ChunkedStream::new(chunks);
    let handshake = input
        .next(&mut HandshakeDecoder::new(), MAX_LINE_BUFFERED)
        .map_err(|error| error.to_string());
    let (controls, control_error) = match &handshake {
        Ok(Some(Handshake::Seed { .. })) => input.drain(&mut SeedControlDecoder, 3, stream_len / 4),
        Ok(Some(Handshake::Hello(_))) => input.drain(
            &mut JsonControlDecoder::new(),
            MAX_LINE_BUFFERED,
            stream_len,
        ),
        Ok(None) | Err(_) => (Vec::new(), None),
    };
    Outcome {
        handshake,
        controls,
        control_error,
    }
}

fuzz_target!(|data: &[u8]| {
    let chunking = Chunking::new(u16_at(data, 0).to_be_bytes());
    let stream = &data[HEADER.min(data.len())..];
    let whole = run(
        if stream.is_empty() {
            vec![]
        } else {
            vec![stream]
        },
        stream.len(),
    );
    let chunked = run(chunking.split(stream), stream.len());
    assert_eq!(whole, chunked, "chunking changed what was decoded");

    match &whole.handshake {
        Ok(Some(Handshake::Seed { weight })) => {
            assert_ne!(stream[0], b'{', "a `{{` starts a JSON hello");
            assert_eq!(
                weight.to_be_bytes(),
                stream[..4],
                "the weight is the first 4 bytes"
            );
            assert!(weight.is_finite() && weight.is_sign_positive());
        }
        Ok(Some(Handshake::Hello(hello))) => {
            assert_eq!(stream[0], b'{');
            let chars = hello.id.chars().count();
            assert!((1..=128).contains(&chars), "id of {chars} characters");
            assert!(hello.weight.is_finite() && hello.weight >= 0.0);
            // The hello is the first line (without `\n` or one `\r`), at most 4096 bytes.
            let end = stream
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(stream.len());
            let mut line = &stream[..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            assert!(line.len() <= 4096, "hello of {} bytes accepted", line.len());
            let parsed: logdist_wire::Hello = serde_json::from_slice(line).expect("hello parses");
            assert_eq!(&parsed, hello);
        }
        Ok(None) => assert!(stream.is_empty(), "no handshake only for no input"),
        Err(_) => {}
    }
    for control in &whole.controls {
        match (control, &whole.handshake) {
            (Control::SeedAck(count), Ok(Some(Handshake::Seed { .. }))) => {
                assert!(*count < 1 << 31);
            }
            (Control::Ack(_), Ok(Some(Handshake::Hello(_)))) => {}
            (Control::Weight(weight), _) => assert!(weight.is_finite() && *weight >= 0.0),
            (other, handshake) => panic!("{other:?} after {handshake:?}"),
        }
    }
});
