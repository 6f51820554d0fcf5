//! The first thing an analyzer says decides who it is and how it wants messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use logdist_wire::{AnalyzerFormat, ErrorCode, Handshake, HandshakeDecoder};
use tokio_util::codec::FramedRead;

use super::directory::Link;
use crate::transport::{ReadHalf, Stream, WriteHalf};

/// Who an analyzer is and how it wants to be spoken to.
#[derive(Debug)]
pub struct Introduction {
    pub id: Arc<str>,
    pub weight: f64,
    pub format: AnalyzerFormat,
    pub acks: bool,
    /// JSON-hello analyzers wait for a status line before messages flow.
    pub replies: bool,
    /// Seed-style 4-byte control words back (else JSON lines).
    pub seed_control: bool,
    pub link: Link,
    pub address: String,
}

/// How long a new analyzer connection may take to introduce itself.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A handshake that was refused.
pub struct Refusal {
    /// The `reason` of the error reply.
    pub code: ErrorCode,
    pub reason: String,
    /// For JSON hellos, which wait for a status line before the close: where to write it.
    pub reply: Option<WriteHalf>,
}

/// Reads the handshake from `stream`, then splits it: the reader keeps whatever
/// followed the handshake buffered.
pub async fn read_handshake(
    mut stream: Stream,
    peer: SocketAddr,
) -> Result<
    (
        Introduction,
        FramedRead<ReadHalf, HandshakeDecoder>,
        WriteHalf,
    ),
    Refusal,
> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let timed_out = || Refusal {
        code: ErrorCode::HandshakeTimeout,
        reason: format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
        reply: None,
    };
    // Peeking first tells whether a refusal needs a reply line (JSON hellos wait for one).
    let json = match tokio::time::timeout_at(deadline, stream.peek_byte()).await {
        Err(_) => return Err(timed_out()),
        Ok(Ok(Some(first))) => first == b'{',
        Ok(_) => {
            return Err(Refusal {
                code: ErrorCode::BadHandshake,
                reason: "closed before its handshake".to_string(),
                reply: None,
            });
        }
    };
    let (reader, writer) = stream.into_split();
    let mut framed = FramedRead::new(reader, HandshakeDecoder::default());
    let handshake = match tokio::time::timeout_at(deadline, framed.next()).await {
        Ok(Some(Ok(handshake))) => handshake,
        failed => {
            let (code, reason) = match failed {
                Err(_) => (
                    ErrorCode::HandshakeTimeout,
                    format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
                ),
                Ok(Some(Err(err))) => (err.code(), format!("bad handshake: {err}")),
                _ => (
                    ErrorCode::BadHandshake,
                    "closed before its handshake".to_string(),
                ),
            };
            return Err(Refusal {
                code,
                reason,
                reply: json.then_some(writer),
            });
        }
    };
    let intro = match handshake {
        Handshake::Seed { weight } => Introduction {
            id: Arc::from(format!("analyzer_{peer}")),
            weight: f64::from(weight),
            format: AnalyzerFormat::Frame,
            acks: true,
            replies: false,
            seed_control: true,
            link: Link::DialIn,
            address: peer.to_string(),
        },
        Handshake::Hello(hello) => Introduction {
            id: Arc::from(hello.id),
            weight: hello.weight,
            format: hello.format,
            acks: hello.acks,
            replies: true,
            seed_control: false,
            link: Link::DialIn,
            address: peer.to_string(),
        },
    };
    Ok((intro, framed, writer))
}
