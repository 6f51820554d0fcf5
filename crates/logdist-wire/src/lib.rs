//! logdist wire formats: framing and decoding for everything that crosses a
//! socket, with no sockets and no runtime.

mod message;

pub use message::{FRAME_HEADER_LEN, Message, Origin};
