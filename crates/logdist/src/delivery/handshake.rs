//! The first thing an analyzer says decides who it is and how it wants messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use logdist_wire::{AnalyzerFormat, ErrorCode, Handshake, HandshakeDecoder};
use tokio::io::AsyncReadExt;
use tokio_util::codec::FramedRead;

use super::access::AccessPolicy;
use super::directory::Link;
use crate::refusal::RefusalReason;
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

/// How long a seed analyzer must stay quiet after its handshake before it is
/// registered. A seed analyzer sends nothing before it has received a message
/// (its first words are acks), so bytes in that time mean the 4 bytes were
/// the start of something else (an HTTP request, an SSH banner, ...).
pub const SEED_QUIET_PERIOD: Duration = Duration::from_millis(100);

/// A handshake that was refused.
pub struct Refusal {
    /// The `reason` of the error reply.
    pub code: ErrorCode,
    /// How it is counted.
    pub counted: RefusalReason,
    pub reason: String,
    /// For JSON hellos, which wait for a status line before the close: where to write it.
    pub reply: Option<WriteHalf>,
}

impl Refusal {
    fn new(code: ErrorCode, counted: RefusalReason, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            counted,
            reason: reason.into(),
            reply: None,
        }
    }

    fn replying(mut self, json: bool, writer: WriteHalf) -> Self {
        self.reply = json.then_some(writer);
        self
    }
}

/// Reads the handshake from `stream` and checks it against `access` and
/// `max_weight`, then splits it: the reader keeps whatever followed the
/// handshake buffered (nothing, for a seed handshake).
pub async fn read_handshake(
    mut stream: Stream,
    peer: SocketAddr,
    access: &AccessPolicy,
    max_weight: f64,
) -> Result<
    (
        Introduction,
        FramedRead<ReadHalf, HandshakeDecoder>,
        WriteHalf,
    ),
    Refusal,
> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let timed_out = || {
        Refusal::new(
            ErrorCode::HandshakeTimeout,
            RefusalReason::BadHandshake,
            format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
        )
    };
    let closed = || {
        Refusal::new(
            ErrorCode::BadHandshake,
            RefusalReason::BadHandshake,
            "closed before its handshake",
        )
    };
    // Peeking first tells whether a refusal needs a reply line (JSON hellos wait for one).
    let json = match tokio::time::timeout_at(deadline, stream.peek_byte()).await {
        Err(_) => return Err(timed_out()),
        Ok(Ok(Some(first))) => first == b'{',
        Ok(_) => return Err(closed()),
    };
    if !json && !access.seed_allowed(peer.ip()) {
        // Refused before reading it: seed clients read no reply.
        return Err(Refusal::new(
            ErrorCode::Unauthorized,
            RefusalReason::Unauthorized,
            "seed handshake from an address outside analyzers.seed_handshake_from",
        ));
    }
    let (reader, writer) = stream.into_split();
    let mut framed = FramedRead::new(reader, HandshakeDecoder::default());
    let handshake = match tokio::time::timeout_at(deadline, framed.next()).await {
        Ok(Some(Ok(handshake))) => handshake,
        Err(_) => return Err(timed_out().replying(json, writer)),
        Ok(Some(Err(err))) => {
            let code = err.code();
            let counted = if code == ErrorCode::BadWeight {
                RefusalReason::BadWeight
            } else {
                RefusalReason::BadHandshake
            };
            return Err(
                Refusal::new(code, counted, format!("bad handshake: {err}")).replying(json, writer)
            );
        }
        Ok(_) => return Err(closed().replying(json, writer)),
    };
    let bad_weight = |weight: f64| {
        Refusal::new(
            ErrorCode::BadWeight,
            RefusalReason::BadWeight,
            format!(
                "bad handshake: weight must be a finite number in 0..={max_weight} (analyzers.max_weight), got {weight}"
            ),
        )
    };
    let intro = match handshake {
        Handshake::Seed { weight } => {
            let weight = f64::from(weight);
            if weight > max_weight {
                return Err(bad_weight(weight));
            }
            seed_stays_quiet(&mut framed).await?;
            Introduction {
                id: Arc::from(format!("analyzer_{peer}")),
                weight,
                format: AnalyzerFormat::Frame,
                acks: true,
                replies: false,
                seed_control: true,
                link: Link::DialIn,
                address: peer.to_string(),
            }
        }
        Handshake::Hello(hello) => {
            if !access.hello_allowed(hello.token.as_deref()) {
                let reason = if hello.token.is_some() {
                    "unauthorized: the token is not valid"
                } else {
                    "unauthorized: a token is required"
                };
                return Err(Refusal::new(
                    ErrorCode::Unauthorized,
                    RefusalReason::Unauthorized,
                    reason,
                )
                .replying(true, writer));
            }
            if hello.weight > max_weight {
                return Err(bad_weight(hello.weight).replying(true, writer));
            }
            Introduction {
                id: Arc::from(hello.id),
                weight: hello.weight,
                format: hello.format,
                acks: hello.acks,
                replies: true,
                seed_control: false,
                link: Link::DialIn,
                address: peer.to_string(),
            }
        }
    };
    Ok((intro, framed, writer))
}

/// Refuses a seed handshake that is followed by anything (already read, or
/// arriving within [`SEED_QUIET_PERIOD`]), or by a close: see
/// [`SEED_QUIET_PERIOD`]. Four bytes that encode a plausible weight followed
/// by silence cannot be told from a seed analyzer; that is what
/// `analyzers.seed_handshake_from` is for.
async fn seed_stays_quiet(
    framed: &mut FramedRead<ReadHalf, HandshakeDecoder>,
) -> Result<(), Refusal> {
    let not_seed = |what: &str| {
        Refusal::new(
            ErrorCode::BadHandshake,
            RefusalReason::BadHandshake,
            format!(
                "not a seed analyzer: {what} after its 4-byte handshake, before any message was sent to it"
            ),
        )
    };
    let buffered = framed.read_buffer().len();
    if buffered > 0 {
        return Err(not_seed(&format!("{buffered} more bytes")));
    }
    // A read, not a peek (a TLS stream cannot peek): any byte refuses the
    // connection anyway, and a read that times out has taken nothing.
    let mut byte = [0u8; 1];
    match tokio::time::timeout(SEED_QUIET_PERIOD, framed.get_mut().read(&mut byte)).await {
        Err(_) => Ok(()),
        Ok(Ok(0)) => Err(not_seed("closed")),
        Ok(Ok(_)) => Err(not_seed("more bytes")),
        Ok(Err(err)) => Err(not_seed(&format!("a read error ({err})"))),
    }
}
