//! One TCP connection to logdist: batches go out (plain NDJSON lines, or one
//! gzip frame per batch), acks come back one line per message, read by a
//! task of their own so writing never waits on reading.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest reply line read; logdist's are far shorter.
const MAX_REPLY_BYTES: u64 = 64 * 1024;

/// The server's answer to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    Ok,
    /// Rejected, with the server's sentence.
    Error(String),
}

impl Ack {
    /// Parses a reply line (`{"status":"ok",...}` / `{"status":"error","message":...}`).
    pub fn parse(line: &str) -> Ack {
        #[derive(Deserialize)]
        struct Reply {
            status: String,
            #[serde(default)]
            message: Option<String>,
        }
        match serde_json::from_str::<Reply>(line.trim()) {
            Ok(reply) if reply.status.eq_ignore_ascii_case("ok") => Ack::Ok,
            Ok(reply) => Ack::Error(reply.message.unwrap_or(reply.status)),
            Err(_) => Ack::Error(format!("unreadable reply: {}", line.trim())),
        }
    }

    /// An error reply that stands for a whole gzip frame, not one line.
    pub fn rejects_whole_frame(&self) -> bool {
        matches!(self, Ack::Error(m)
            if m.starts_with("corrupt gzip frame") || m.starts_with("gzip frame decompresses"))
    }
}

/// A connected client.
pub struct Connection {
    writer: OwnedWriteHalf,
    acks: mpsc::UnboundedReceiver<Ack>,
    reader: JoinHandle<()>,
    pub peer: SocketAddr,
}

impl Connection {
    /// Connects to `host:port` (every resolved address in turn), within `timeout`.
    pub async fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<Connection> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let peer = stream.peer_addr()?;
        let (read, writer) = stream.into_split();
        let (tx, acks) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut read = BufReader::new(read);
            let mut line = String::new();
            loop {
                line.clear();
                match (&mut read).take(MAX_REPLY_BYTES).read_line(&mut line).await {
                    Ok(0) | Err(_) => return, // closed: dropping tx tells the shipper
                    Ok(_) if line.trim().is_empty() => continue,
                    Ok(_) => {
                        if tx.send(Ack::parse(&line)).is_err() {
                            return;
                        }
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

    /// Writes one encoded batch.
    pub async fn send(&mut self, batch: &[u8]) -> io::Result<()> {
        self.writer.write_all(batch).await
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

    #[test]
    fn parses_replies() {
        assert_eq!(
            Ack::parse("{\"status\":\"ok\",\"message\":\"received\"}\n"),
            Ack::Ok
        );
        assert_eq!(
            Ack::parse("{\"status\": \"ok\", \"message\": \"received\"}"),
            Ack::Ok
        );
        let e = Ack::parse(r#"{"status":"error","message":"invalid JSON: x"}"#);
        assert_eq!(e, Ack::Error("invalid JSON: x".into()));
        assert!(!e.rejects_whole_frame());
        assert!(
            Ack::parse(r#"{"status":"error","message":"corrupt gzip frame: bad"}"#)
                .rejects_whole_frame()
        );
        assert!(matches!(Ack::parse("garbage"), Ack::Error(m) if m.contains("garbage")));
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
