//! A connection, plain TCP or TLS, and its read and write halves.
//!
//! Plain TCP stays a bare [`TcpStream`] (split without a lock by
//! [`TcpStream::into_split`]), so the plaintext path costs one predictable
//! branch per poll. Vectored writes are forwarded, so a session's batch is
//! still one `writev` on plain TCP (and one TLS write of many records).
//!
//! TLS buffers what it writes: whoever writes must `flush` before waiting
//! for an answer (a no-op on plain TCP). A TLS peer that closes without
//! `close_notify` reads as an end of stream, as on plain TCP: the protocols'
//! own framing (lines, length prefixes) tells a truncated message.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsStream;

/// A connection, either side of it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The read half of a [`Stream`].
pub enum ReadHalf {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of a [`Stream`].
pub enum WriteHalf {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The first byte that a read would return, without consuming it
    /// (waiting for it if need be); `None` at the end of the stream.
    pub async fn peek_byte(&mut self) -> io::Result<Option<u8>> {
        match self {
            Stream::Plain(tcp) => {
                let mut first = [0u8; 1];
                let n = tcp.peek(&mut first).await?;
                Ok((n == 1).then_some(first[0]))
            }
            Stream::Tls(tls) => {
                use tokio::io::AsyncBufReadExt;
                match tls.fill_buf().await {
                    Ok(buffered) => Ok(buffered.first().copied()),
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
                    Err(err) => Err(err),
                }
            }
        }
    }

    /// Reader and writer that can live in different tasks.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                (ReadHalf::Plain(read), WriteHalf::Plain(write))
            }
            Stream::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (ReadHalf::Tls(read), WriteHalf::Tls(write))
            }
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Self {
        Stream::Plain(tcp)
    }
}

/// A TLS read that ended without `close_notify` is an end of stream.
fn eof_without_close_notify(read: Poll<io::Result<()>>) -> Poll<io::Result<()>> {
    match read {
        Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
        other => other,
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => eof_without_close_notify(Pin::new(tls).poll_read(cx, buf)),
        }
    }
}

impl AsyncRead for ReadHalf {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(read) => Pin::new(read).poll_read(cx, buf),
            ReadHalf::Tls(read) => eof_without_close_notify(Pin::new(read).poll_read(cx, buf)),
        }
    }
}

/// Forwards every `AsyncWrite` method to the variant's own.
macro_rules! forward_write {
    ($type:ident) => {
        impl AsyncWrite for $type {
            #[inline]
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $type::Plain(io) => Pin::new(io).poll_write(cx, buf),
                    $type::Tls(io) => Pin::new(io).poll_write(cx, buf),
                }
            }

            #[inline]
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $type::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
                    $type::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
                }
            }

            #[inline]
            fn is_write_vectored(&self) -> bool {
                match self {
                    $type::Plain(io) => io.is_write_vectored(),
                    $type::Tls(io) => io.is_write_vectored(),
                }
            }

            #[inline]
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::Plain(io) => Pin::new(io).poll_flush(cx),
                    $type::Tls(io) => Pin::new(io).poll_flush(cx),
                }
            }

            #[inline]
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::Plain(io) => Pin::new(io).poll_shutdown(cx),
                    $type::Tls(io) => Pin::new(io).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_write!(Stream);
forward_write!(WriteHalf);

/// Writes all of `buf` and flushes it; for the few places that write outside
/// a session (acks, handshake replies).
pub async fn write_all_flushed<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &[u8],
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    writer.write_all(buf).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn plain_streams_split_and_write_vectored() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(address).await.unwrap() });
        let (server, _) = listener.accept().await.unwrap();
        let mut client = client.await.unwrap();
        let stream = Stream::from(server);
        assert!(!stream.is_tls());
        let (mut read, mut write) = stream.into_split();
        assert!(write.is_write_vectored());
        let slices = [IoSlice::new(b"ab"), IoSlice::new(b"cd")];
        let n = write.write_vectored(&slices).await.unwrap();
        assert_eq!(n, 4);
        write.flush().await.unwrap();
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcd");
        client.write_all(b"x").await.unwrap();
        drop(client);
        let mut back = Vec::new();
        read.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"x");
    }
}
