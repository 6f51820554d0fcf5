//! Seed binary frames: `u32` big-endian length N counting the *whole* frame
//! (the 4 length bytes included), one priority byte, then N-5 payload bytes.
//!
//! The distributor sends these to frame-format analyzers; analyzers (test
//! clients, the loadtest) read them back with [`FrameDecoder`]. Emitters'
//! frames are read by the mixed-format ingest decoder instead.

use std::io;

use bytes::{BufMut, BytesMut};
use tokio_util::codec::Decoder;

use crate::message::{FRAME_HEADER_LEN, Message};

/// Appends one binary frame to `dst`.
///
/// # Panics
/// If the frame would not fit the u32 length word (payload over 4 GiB - 6).
pub fn encode_frame(priority: u8, payload: &[u8], dst: &mut BytesMut) {
    let length = u32::try_from(FRAME_HEADER_LEN + payload.len())
        .expect("binary frame longer than u32::MAX bytes");
    dst.reserve(FRAME_HEADER_LEN + payload.len());
    dst.put_u32(length);
    dst.put_u8(priority);
    dst.put_slice(payload);
}

/// Reads binary frames, each as a [`Message`] whose data is the whole frame.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// `max_frame_bytes` bounds the whole frame, header included; it is also
    /// the most this decoder will ask the read buffer to hold.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder { max_frame_bytes }
    }
}

/// Why a binary frame stream cannot be read any further.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length word is outside 5..=max: the stream has lost its framing
    /// and there is no way to find the next frame.
    #[error("binary frame length {length} outside 5..={max}")]
    BadLength { length: u32, max: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Decoder for FrameDecoder {
    type Item = Message;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        let Some(length) = buf.first_chunk::<4>().map(|word| u32::from_be_bytes(*word)) else {
            return Ok(None);
        };
        let frame_len = length as usize;
        if !(FRAME_HEADER_LEN..=self.max_frame_bytes).contains(&frame_len) {
            return Err(FrameError::BadLength {
                length,
                max: self.max_frame_bytes,
            });
        }
        if buf.len() < frame_len {
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        Ok(Some(Message::from_frame(buf.split_to(frame_len).freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Origin;

    #[test]
    fn encodes_the_seed_layout() {
        let mut dst = BytesMut::new();
        encode_frame(7, b"abc", &mut dst);
        assert_eq!(&dst[..], &[0, 0, 0, 8, 7, b'a', b'b', b'c']);
    }

    #[test]
    fn decodes_frames_without_copying() {
        let mut buf = BytesMut::new();
        encode_frame(1, b"hello", &mut buf);
        encode_frame(255, b"", &mut buf);
        let start = buf.as_ptr();
        let mut decoder = FrameDecoder::new(1024);

        let first = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first.origin(), Origin::Frame);
        assert_eq!(first.priority(), 1);
        assert_eq!(&first.payload()[..], b"hello");
        assert_eq!(first.data().len(), 10);
        assert_eq!(
            first.data().as_ptr(),
            start,
            "the frame is a slice of the read buffer"
        );

        let empty = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(empty.priority(), 255);
        assert_eq!(&empty.data()[..], &[0, 0, 0, 5, 255]);
        assert!(empty.payload().is_empty());
        assert!(decoder.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn waits_for_the_whole_frame() {
        let mut whole = BytesMut::new();
        encode_frame(3, b"payload", &mut whole);
        let mut decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        for &byte in &whole[..whole.len() - 1] {
            buf.put_u8(byte);
            assert!(decoder.decode(&mut buf).unwrap().is_none());
        }
        buf.put_u8(whole[whole.len() - 1]);
        assert_eq!(
            &decoder.decode(&mut buf).unwrap().unwrap().data()[..],
            &whole[..]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_lengths_outside_the_valid_range() {
        let mut decoder = FrameDecoder::new(16);
        for (length, bad) in [
            (4u32, true),
            (5, false),
            (16, false),
            (17, true),
            (u32::MAX, true),
        ] {
            let mut buf = BytesMut::from(&length.to_be_bytes()[..]);
            let result = decoder.decode(&mut buf);
            match result {
                Err(FrameError::BadLength { length: got, max }) => {
                    assert!(bad, "{length} should be valid");
                    assert_eq!((got, max), (length, 16));
                }
                Ok(None) => assert!(!bad, "{length} should be refused"),
                other => panic!("unexpected {other:?}"),
            }
        }
        let error = decoder
            .decode(&mut BytesMut::from(&[0xff; 4][..]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "binary frame length 4294967295 outside 5..=16"
        );
    }
}
