//! One TCP (or TLS) connection to logdist: batches go out (plain NDJSON
//! lines, or one gzip frame per batch), acks come back one line per message,
//! read by a task of their own so writing never waits on reading.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use logdist_net::tls::explain_tls_error;
use logdist_net::{ClientWriteHalf, TlsClient};
use logdist_wire::{ErrorCode, NdjsonLineDecoder, RejectReason};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

/// Longest reply line read; logdist's are far shorter.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// The server's answer to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    Ok,
    /// Rejected. `code` is the reply's `reason` (`None` when it has none, as
    /// from the seed server, or one this version does not know: then it is a
    /// rejection of one line); `message` is the server's sentence, for logs only.
    Error {
        code: Option<ErrorCode>,
        message: String,
    },
    /// The server announces it is closing the connection (reason
    /// `bad_frame_length`, e.g. a binary or gzip frame longer than its
    /// `max_frame_bytes`): this reply answers no particular line, and nothing
    /// outstanding was taken; it is all resent on the next connection.
    Closing(String),
}

impl Ack {
    /// Parses a reply line (`{"status":"ok",...}` /
    /// `{"status":"error","reason":...,"message":...}`). Only `status` and
    /// `reason` decide; the wording of `message` never does.
    pub fn parse(line: &[u8]) -> Ack {
        #[derive(Deserialize)]
        struct Reply {
            status: String,
            #[serde(default)]
            reason: Option<String>,
            #[serde(default)]
            message: Option<String>,
        }
        let line = line.trim_ascii();
        let reply = match serde_json::from_slice::<Reply>(line) {
            Ok(reply) => reply,
            Err(_) => {
                return Ack::Error {
                    code: None,
                    message: format!("unreadable reply: {}", String::from_utf8_lossy(line)),
                };
            }
        };
        if reply.status.eq_ignore_ascii_case("ok") {
            return Ack::Ok;
        }
        let code = reply.reason.as_deref().and_then(ErrorCode::from_code);
        let message = reply.message.or(reply.reason).unwrap_or(reply.status);
        match code {
            Some(ErrorCode::BadFrameLength) => Ack::Closing(message),
            code => Ack::Error { code, message },
        }
    }

    /// An error reply that stands for a whole gzip frame, not one line.
    pub fn rejects_whole_frame(&self) -> bool {
        matches!(
            self,
            Ack::Error {
                code: Some(ErrorCode::Rejected(
                    RejectReason::CorruptGzip | RejectReason::GzipTooLarge
                )),
                ..
            }
        )
    }
}

/// A connected client.
pub struct Connection {
    writer: ClientWriteHalf,
    acks: mpsc::UnboundedReceiver<Ack>,
    reader: JoinHandle<()>,
    pub peer: SocketAddr,
}

impl Connection {
    /// Connects to `host:port` (every resolved address in turn), with `tls`
    /// over TLS (the handshake included), within `timeout`. A server
    /// certificate that does not verify is an error that says why.
    pub async fn connect(
        host: &str,
        port: u16,
        tls: Option<&TlsClient>,
        timeout: Duration,
    ) -> io::Result<Connection> {
        let stream = logdist_net::connect(host, port, tls, timeout).await?;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(stream.tcp()).set_tcp_keepalive(&keepalive);
        let peer = stream.peer_addr()?;
        let (read, writer) = stream.into_split();
        let (tx, acks) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut lines = FramedRead::new(read, NdjsonLineDecoder::new(MAX_REPLY_BYTES));
            // Closed, or a reply too long to be one of logdist's: either way
            // the connection is over; dropping tx tells the shipper, which
            // resends whatever is still outstanding.
            while let Some(line) = lines.next().await {
                match line {
                    Ok(line) if line.trim_ascii().is_empty() => continue,
                    Ok(line) => {
                        if tx.send(Ack::parse(&line)).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        // With TLS 1.3 a server that refuses the client
                        // certificate says so here, at the first read.
                        match explain_tls_error(&error, crate::config::TLS_NAMES.cert.as_ref()) {
                            Some(tls) => tracing::warn!("{tls}: dropping the connection"),
                            None => {
                                tracing::warn!(%error, "unreadable reply from the server: dropping the connection")
                            }
                        }
                        return;
                    }
                }
            }
        });
        Ok(Connection {
            writer,
            acks,
            reader,
            peer,
        })
    }

    /// Writes some of `data`; returns how much. Cancel safe: when the
    /// future is dropped before completing, nothing was written.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.writer.write(data).await? {
            0 if !data.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            n => Ok(n),
        }
    }

    /// Sends what earlier writes left buffered (TLS buffers records; plain
    /// TCP has nothing to do). Cancel safe.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().await
    }

    /// The next ack; `None` once the server has closed the connection (after
    /// every ack it sent has been returned).
    pub async fn next_ack(&mut self) -> Option<Ack> {
        self.acks.recv().await
    }

    /// An ack already received, without waiting.
    pub fn try_ack(&mut self) -> Option<Ack> {
        self.acks.try_recv().ok()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Encodes messages as sent on the wire: `\n`-terminated lines, or (with
/// `compress`) one gzip frame holding them.
pub fn encode_batch<'a>(messages: impl Iterator<Item = &'a Bytes>, compress: bool) -> BytesMut {
    let mut lines = BytesMut::new();
    for m in messages {
        lines.put_slice(m);
        lines.put_u8(b'\n');
    }
    if !compress {
        return lines;
    }
    let mut frame = BytesMut::with_capacity(lines.len() / 4 + 32);
    logdist_wire::encode_gzip_frame(&lines, &mut frame);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn error(code: Option<ErrorCode>, message: &str) -> Ack {
        Ack::Error {
            code,
            message: message.into(),
        }
    }

    #[test]
    fn parses_replies() {
        assert_eq!(
            Ack::parse(b"{\"status\":\"ok\",\"message\":\"received\"}\n"),
            Ack::Ok
        );
        assert_eq!(
            Ack::parse(b"{\"status\": \"ok\", \"message\": \"received\"}"),
            Ack::Ok
        );
        let e = Ack::parse(
            br#"{"status":"error","reason":"invalid_json","message":"invalid JSON: x"}"#,
        );
        let invalid_json = Some(ErrorCode::Rejected(RejectReason::InvalidJson));
        assert_eq!(e, error(invalid_json, "invalid JSON: x"));
        assert!(!e.rejects_whole_frame());
        for code in ["corrupt_gzip", "gzip_too_large"] {
            let reply = format!(r#"{{"status":"error","reason":"{code}","message":"m"}}"#);
            assert!(Ack::parse(reply.as_bytes()).rejects_whole_frame(), "{code}");
        }
        assert!(
            matches!(Ack::parse(b"garbage"), Ack::Error { code: None, message } if message.contains("garbage"))
        );
        assert!(
            matches!(Ack::parse(b"caf\xe9"), Ack::Error { code: None, message } if message.contains("caf"))
        );
        let closing = Ack::parse(
            br#"{"status":"error","reason":"bad_frame_length","message":"binary frame length 9999999 outside 5..=1048576; closing connection"}"#,
        );
        assert!(matches!(&closing, Ack::Closing(m) if m.starts_with("binary frame length")));
        assert!(!closing.rejects_whole_frame());
        // The field order does not matter, nor does the message.
        assert_eq!(
            Ack::parse(br#"{"message":"bye","status":"error","reason":"bad_frame_length"}"#),
            Ack::Closing("bye".into())
        );
    }

    #[test]
    fn the_reason_decides_never_the_wording() {
        // Per-line rejections that merely say "closing connection".
        let said_closing = "binary frame length 9999999 outside 5..=1048576; closing connection";
        let reply =
            format!(r#"{{"status":"error","reason":"invalid_json","message":"{said_closing}"}}"#);
        assert_eq!(
            Ack::parse(reply.as_bytes()),
            error(
                Some(ErrorCode::Rejected(RejectReason::InvalidJson)),
                said_closing
            )
        );
        // The seed server sends no reason: a per-line rejection, whatever it says.
        let seed = format!(r#"{{"status":"error","message":"{said_closing}"}}"#);
        assert_eq!(Ack::parse(seed.as_bytes()), error(None, said_closing));
        let seed_gzip = Ack::parse(br#"{"status":"error","message":"corrupt gzip frame: bad"}"#);
        assert_eq!(seed_gzip, error(None, "corrupt gzip frame: bad"));
        assert!(!seed_gzip.rejects_whole_frame());
        // A code this version does not know: also one line.
        let unknown = Ack::parse(
            br#"{"status":"error","reason":"from_the_future","message":"closing connection"}"#,
        );
        assert_eq!(unknown, error(None, "closing connection"));
        // No message: the reason (or the status) stands in for it in logs.
        assert_eq!(
            Ack::parse(br#"{"status":"error","reason":"bad_priority"}"#),
            error(
                Some(ErrorCode::Rejected(RejectReason::BadPriority)),
                "bad_priority"
            )
        );
        assert_eq!(Ack::parse(br#"{"status":"error"}"#), error(None, "error"));
    }

    /// A fake server on 127.0.0.1 that writes `replies` to the first client,
    /// then keeps the connection open until the client goes.
    async fn replying(replies: Vec<u8>) -> (SocketAddr, JoinHandle<()>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(&replies).await.unwrap();
            let mut buf = [0u8; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        (addr, task)
    }

    async fn acks_until_closed(conn: &mut Connection) -> Vec<Ack> {
        let mut acks = Vec::new();
        while let Some(ack) = tokio::time::timeout(Duration::from_secs(10), conn.next_ack())
            .await
            .expect("the reader ends")
        {
            acks.push(ack);
        }
        acks
    }

    #[tokio::test]
    async fn an_over_long_reply_ends_the_connection_and_is_not_two_acks() {
        let ok = b"{\"status\":\"ok\"}\n";
        let mut replies = ok.to_vec();
        // Longer than the limit: read_line with a `take` saw it as two lines.
        replies.extend_from_slice(br#"{"status":"error","message":""#);
        replies.extend(std::iter::repeat_n(b'x', MAX_REPLY_BYTES + 10));
        replies.extend_from_slice(b"\"}\n");
        replies.extend_from_slice(ok);
        let (addr, _server) = replying(replies).await;
        let mut conn = Connection::connect("127.0.0.1", addr.port(), None, Duration::from_secs(5))
            .await
            .unwrap();
        // The ok before it, then the end: what followed is never counted.
        assert_eq!(acks_until_closed(&mut conn).await, vec![Ack::Ok]);
    }

    #[tokio::test]
    async fn a_non_utf8_reply_is_one_reply() {
        let mut replies = b"{\"status\":\"ok\"}\n\xff\xfe not json\n".to_vec();
        replies.extend_from_slice(b"{\"status\":\"ok\"}\n");
        let (addr, server) = replying(replies).await;
        let mut conn = Connection::connect("127.0.0.1", addr.port(), None, Duration::from_secs(5))
            .await
            .unwrap();
        let mut acks = Vec::new();
        for _ in 0..3 {
            acks.push(conn.next_ack().await.unwrap());
        }
        assert_eq!(acks[0], Ack::Ok);
        assert!(
            matches!(&acks[1], Ack::Error { code: None, message } if message.starts_with("unreadable reply"))
        );
        assert_eq!(acks[2], Ack::Ok);
        server.abort();
    }

    #[test]
    fn encodes_plain_and_gzip() {
        let msgs = [
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::from_static(b"{\"b\":2}"),
        ];
        assert_eq!(
            &encode_batch(msgs.iter(), false)[..],
            b"{\"a\":1}\n{\"b\":2}\n"
        );
        let frame = encode_batch(msgs.iter(), true);
        let n = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(n, frame.len() - 4);
        assert_eq!(&frame[4..7], &[0x1f, 0x8b, 0x08]);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&frame[4..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "{\"a\":1}\n{\"b\":2}\n");
    }
}
