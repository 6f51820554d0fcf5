//! What the fuzz targets share: cutting an input into chunks the way a socket
//! would, and driving a `tokio_util` decoder over those chunks the way
//! `FramedRead` does (decode after every read, `decode_eof` at the end).

use std::fmt::Display;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Chunk sizes derived from two input bytes, so libFuzzer mutates the
/// chunking along with the data.
///
/// The high byte picks the largest chunk, `1 << (high % 10)` bytes (1 means
/// byte by byte, which splits the stream at every offset at once); both
/// bytes seed a xorshift generator that draws each size in 1..=largest.
#[derive(Clone, Copy, Debug)]
pub struct Chunking {
    largest: usize,
    state: u32,
}

impl Chunking {
    pub fn new(seed: [u8; 2]) -> Self {
        Chunking {
            largest: 1 << (seed[0] % 10),
            // Never 0: xorshift would stay at 0.
            state: u32::from(u16::from_be_bytes(seed)) | 0x1_0000,
        }
    }

    /// Cuts `data` into chunks (none for empty data).
    pub fn split(self, data: &[u8]) -> Vec<&[u8]> {
        let mut state = self.state;
        let mut rest = data;
        let mut chunks = Vec::new();
        while !rest.is_empty() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let size = (state as usize % self.largest + 1).min(rest.len());
            let (chunk, tail) = rest.split_at(size);
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }
}

/// A byte stream arriving in chunks, read through one or more decoders in
/// turn (a handshake decoder, then a control decoder on what is left).
pub struct ChunkedStream<'a> {
    chunks: std::vec::IntoIter<&'a [u8]>,
    buf: BytesMut,
    eof: bool,
}

impl<'a> ChunkedStream<'a> {
    pub fn new(chunks: Vec<&'a [u8]>) -> Self {
        ChunkedStream {
            chunks: chunks.into_iter(),
            buf: BytesMut::new(),
            eof: false,
        }
    }

    /// The next item, as `FramedRead` would produce it: `decode` after every
    /// chunk, `decode_eof` once the chunks are used up. After every
    /// `Ok(None)` from `decode` (the decoder waits for more input) asserts
    /// that the decoder keeps at most `max_buffered` bytes.
    pub fn next<D: Decoder>(
        &mut self,
        decoder: &mut D,
        max_buffered: usize,
    ) -> Result<Option<D::Item>, D::Error> {
        loop {
            if self.eof {
                return decoder.decode_eof(&mut self.buf);
            }
            if let Some(item) = decoder.decode(&mut self.buf)? {
                return Ok(Some(item));
            }
            assert!(
                self.buf.len() <= max_buffered,
                "decoder waits with {} bytes buffered, bound {max_buffered}",
                self.buf.len()
            );
            match self.chunks.next() {
                Some(chunk) => self.buf.extend_from_slice(chunk),
                None => self.eof = true,
            }
        }
    }

    /// Every item up to the end of the stream or the first error (as its
    /// `Display` text). Panics past `max_items`: a decoder that keeps
    /// yielding without consuming input would otherwise loop forever.
    pub fn drain<D: Decoder>(
        &mut self,
        decoder: &mut D,
        max_buffered: usize,
        max_items: usize,
    ) -> (Vec<D::Item>, Option<String>)
    where
        D::Error: Display,
    {
        let mut items = Vec::new();
        loop {
            match self.next(decoder, max_buffered) {
                Ok(Some(item)) => {
                    items.push(item);
                    assert!(
                        items.len() <= max_items,
                        "more than {max_items} items: the decoder yields without consuming"
                    );
                }
                Ok(None) => return (items, None),
                Err(error) => return (items, Some(error.to_string())),
            }
        }
    }

    /// Bytes still buffered (after the end of the stream: what no decoder took).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Reads a big-endian `u16` at `at`, 0 where the input is too short.
pub fn u16_at(data: &[u8], at: usize) -> u16 {
    let hi = data.get(at).copied().unwrap_or(0);
    let lo = data.get(at + 1).copied().unwrap_or(0);
    u16::from_be_bytes([hi, lo])
}
