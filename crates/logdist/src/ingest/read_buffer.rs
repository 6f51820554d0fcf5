//! An emitter connection's read buffer, and what it costs the memory budget.
//!
//! Messages are zero-copy slices of the block they were read into (or of the
//! buffer a gzip frame inflated into), so one message keeps its whole block
//! alive: a starved low-priority message pins 64 KiB, not its own length.
//! The budget is therefore charged by allocation: a block's capacity (an
//! inflated buffer's length) is charged before anything is read (inflated)
//! into it and given back when the last slice of it is dropped, wherever that
//! happens (an ack releasing the in-flight window, the dead-letter writer,
//! the end of a pass that routed nothing).
//!
//! How the charge travels with the slices: each read pass wraps the bytes it
//! decodes in one `Bytes::from_owner` region that holds the block's
//! `Arc<Charge>`, and every message of the pass is re-sliced from that region
//! (`slice_ref`: a reference count, no copy). So the hot path costs one small
//! allocation per read and one atomic increment per message; the budget
//! itself is touched once per block.
//!
//! # Why pin rather than copy
//!
//! The other honest design copies every message that will wait (into a
//! crowded queue, the holding queue) into its own allocation so its block can
//! go. Measured on the throughput profile's shape (512-byte messages, 4 KiB
//! reads, 64 KiB blocks): re-slicing through a per-read region adds about
//! 15 ns per message (≈1.2 ms of CPU per second at 80,000 msg/s), copying
//! about 60 ns per copied message; and copying decides at routing time, so a
//! message already written (in an analyzer's window) or queued before its
//! analyzer stalled still pins its block uncounted. Pinning counts every
//! case and copies nothing.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use logdist_wire::{Message, Origin};

use crate::budget::{Charge, MemoryBudget, let_go};

/// Bytes asked of the socket per read; also the size of the blocks messages share.
pub const READ_CHUNK: usize = 64 * 1024;

/// A connection's read buffer with its charge on the budget.
pub struct ReadBuffer {
    bytes: BytesMut,
    /// The allocation `bytes` reads into, and its charge. `None`: no
    /// allocation (a new or idle connection).
    block: Option<Block>,
    /// The region of the current read pass (see the module docs).
    pass: Option<Bytes>,
    /// The gzip buffer whose lines are being decoded.
    inflation: Option<Inflation>,
}

struct Block {
    charge: Arc<Charge>,
    /// The addresses of the allocation.
    span: Range<usize>,
}

struct Inflation {
    charge: Arc<Charge>,
    span: Range<usize>,
    /// Made from the first line decoded from it.
    region: Option<Bytes>,
}

impl ReadBuffer {
    /// An empty buffer with no allocation: a connection that never sends
    /// costs the budget nothing.
    pub fn new() -> Self {
        ReadBuffer {
            bytes: BytesMut::new(),
            block: None,
            pass: None,
            inflation: None,
        }
    }

    /// What the decoder reads from and the socket appends to.
    pub fn bytes_mut(&mut self) -> &mut BytesMut {
        &mut self.bytes
    }

    /// Bytes read and not decoded yet (the start of a message).
    pub fn bytes(&self) -> &BytesMut {
        &self.bytes
    }

    /// Whether the buffer has a charged allocation.
    pub fn has_block(&self) -> bool {
        self.block.is_some()
    }

    /// Makes room for the next read, in an allocation that is charged: may
    /// wait for the budget. Call it only once the socket has something to
    /// read if there is no block yet (see [`has_block`](Self::has_block)).
    /// Cancel-safe: what it gave up waiting for is charged again next time.
    pub async fn make_room(&mut self, budget: &Arc<MemoryBudget>) {
        let never = std::future::pending::<()>;
        let Some(block) = &self.block else {
            let charge = budget.charge(READ_CHUNK, never()).await;
            self.bytes = BytesMut::with_capacity(READ_CHUNK);
            self.set_block(charge);
            return;
        };
        if !self.in_block(block) {
            // The decoder moved the buffer to fit a frame: charge the new
            // allocation before reading into it.
            let hold = self.leave_block();
            let charge = budget.charge(self.bytes.capacity(), never()).await;
            drop(hold);
            self.set_block(charge);
            return;
        }
        if self.bytes.capacity() - self.bytes.len() >= READ_CHUNK / 4
            || self.bytes.try_reclaim(READ_CHUNK)
        {
            // Room, or the block reused in place: no message holds it.
            return;
        }
        // Messages still hold the block, or a long line outgrew it: a new
        // one, charged before the partial message is copied into it.
        let capacity = READ_CHUNK.max(self.bytes.len() * 2);
        let hold = self.leave_block();
        let charge = budget.charge(capacity, never()).await;
        let mut fresh = BytesMut::with_capacity(capacity);
        fresh.extend_from_slice(&self.bytes);
        self.bytes = fresh;
        drop(hold);
        self.set_block(charge);
    }

    /// Gives the block back if nothing partial is in it (an idle connection
    /// under budget pressure, or one whose block grew for a large message).
    pub fn give_back(&mut self) {
        if !self.bytes.is_empty() {
            return;
        }
        self.bytes = BytesMut::new();
        if let Some(block) = self.block.take() {
            let_go(block.charge);
        }
    }

    /// Starts a decoding pass over what is in the buffer: every message
    /// decoded until [`end_pass`](Self::end_pass) is pinned through it.
    pub fn begin_pass(&mut self) {
        let Some(block) = &self.block else { return };
        if self.bytes.is_empty() || !self.in_block(block) {
            return;
        }
        let charge = block.charge.clone();
        // A zero-length handle on the allocation: it keeps the allocation,
        // and so the bytes below, from being freed or reused in place while
        // the region lives.
        let keep = self.bytes.split_to(0).freeze();
        let region = Region {
            start: self.bytes.as_ptr(),
            len: self.bytes.len(),
            _keep: keep,
            _charge: charge,
        };
        self.pass = Some(Bytes::from_owner(region));
    }

    /// Ends a pass. A block larger than a read (grown for a large frame or
    /// line) is not kept once it holds nothing partial.
    pub fn end_pass(&mut self) {
        self.pass = None;
        if self
            .block
            .as_ref()
            .is_some_and(|block| block.span.len() > READ_CHUNK)
        {
            self.give_back();
        }
    }

    /// The message, re-sliced so that it holds the charge of the memory it
    /// lives in (see the module docs). Never copies.
    pub fn pin(&mut self, message: Message) -> Message {
        let data = message.data();
        if let Some(pass) = &self.pass
            && contains(
                pass.as_ptr() as usize..pass.as_ptr() as usize + pass.len(),
                data,
            )
        {
            let pinned = pass.slice_ref(data);
            return with_data(&message, pinned);
        }
        if let Some(inflation) = &mut self.inflation
            && contains(inflation.span.clone(), data)
        {
            let region = inflation.region.get_or_insert_with(|| {
                // From the line's own pointer, to keep its provenance.
                let offset = data.as_ptr() as usize - inflation.span.start;
                Bytes::from_owner(Region {
                    start: data.as_ptr().wrapping_sub(offset),
                    len: inflation.span.len(),
                    _keep: data.clone(),
                    _charge: inflation.charge.clone(),
                })
            });
            let pinned = region.slice_ref(data);
            return with_data(&message, pinned);
        }
        // Only after a wait for budget was cut short by shutdown: the
        // buffer then has no charged block, and what is left is routed as is.
        message
    }

    /// Lines of a gzip frame come next, from `inflated`, whose charge was
    /// taken before inflating (see `IngestDecoder::inflated`): they are
    /// pinned to it, and through it to that charge.
    pub fn start_inflation(&mut self, charge: Charge, inflated: &BytesMut) {
        self.end_inflation();
        let start = inflated.as_ptr() as usize;
        self.inflation = Some(Inflation {
            charge: Arc::new(charge),
            span: start..start + inflated.len(),
            region: None,
        });
    }

    /// The decoder has used up the inflated buffer (`IngestDecoder::inflating`
    /// is false): let go of it; its lines may still be queued.
    pub fn end_inflation(&mut self) {
        if let Some(done) = self.inflation.take() {
            drop(done.region);
            let_go(done.charge);
        }
    }

    /// The allocation `bytes` uses is the charged one.
    fn in_block(&self, block: &Block) -> bool {
        let start = self.bytes.as_ptr() as usize;
        block.span.start <= start && start + self.bytes.capacity() <= block.span.end
    }

    fn set_block(&mut self, charge: Charge) {
        let start = self.bytes.as_ptr() as usize;
        self.block = Some(Block {
            charge: Arc::new(charge),
            span: start..start + self.bytes.capacity(),
        });
    }

    /// Stops using the current block. Its charge is returned to be held
    /// while the next one is charged if nothing else holds it (it then covers
    /// the partial message being carried over); otherwise messages keep it,
    /// and it is let go of now.
    fn leave_block(&mut self) -> Option<Arc<Charge>> {
        let block = self.block.take()?;
        if Arc::strong_count(&block.charge) == 1 {
            Some(block.charge)
        } else {
            let_go(block.charge);
            None
        }
    }
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer::new()
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        self.pass = None;
        if let Some(block) = self.block.take() {
            let_go(block.charge);
        }
        self.end_inflation();
    }
}

fn contains(span: Range<usize>, data: &Bytes) -> bool {
    let start = data.as_ptr() as usize;
    span.start <= start && start + data.len() <= span.end
}

fn with_data(message: &Message, data: Bytes) -> Message {
    match message.origin() {
        Origin::Ndjson => Message::from_ndjson_line(message.priority(), data),
        Origin::Frame => Message::from_frame(data),
        Origin::Syslog => Message::from_syslog(message.priority(), data),
    }
}

/// Bytes of a read block or inflated buffer that messages are sliced from,
/// holding the charge for the whole allocation.
struct Region {
    start: *const u8,
    len: usize,
    /// Keeps the allocation alive.
    _keep: Bytes,
    _charge: Arc<Charge>,
}

// SAFETY: `start` points into the allocation `_keep` keeps alive; the region
// only hands out shared, read-only slices of it (see `as_ref`).
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl AsRef<[u8]> for Region {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `start..start + len` lies in the allocation `_keep` holds a
        // reference on, so it is not freed before the region. Every byte of it
        // was written before the region was made (read from the socket, or
        // inflated) and none is written while it lives: decoding only splits
        // and advances, reads append past the end, and a `BytesMut` reuses
        // its allocation in place only when it holds the sole reference,
        // which `_keep` prevents. `Bytes::from_owner` calls this once, and
        // the region then only gives out `slice_ref`s of messages.
        unsafe { std::slice::from_raw_parts(self.start, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use logdist_wire::{Decoded, IngestDecoder, IngestLimits, PriorityTable, encode_gzip_frame};
    use tokio_util::codec::Decoder;

    fn decoder() -> IngestDecoder {
        IngestDecoder::new(IngestLimits::default(), Arc::new(PriorityTable::default())).defer_gzip()
    }

    /// Reads `input` as one read and decodes it as a connection does,
    /// pinning every message.
    async fn pass(
        buffer: &mut ReadBuffer,
        decoder: &mut IngestDecoder,
        budget: &Arc<MemoryBudget>,
        input: &[u8],
    ) -> Vec<Message> {
        buffer.make_room(budget).await;
        buffer.bytes_mut().put_slice(input);
        buffer.begin_pass();
        let mut out = Vec::new();
        loop {
            let decoded = decoder.decode(buffer.bytes_mut()).unwrap();
            if !decoder.inflating() {
                buffer.end_inflation();
            }
            match decoded {
                Some(Decoded::Message(m)) => out.push(buffer.pin(m)),
                Some(Decoded::Rejected(r)) => panic!("{r}"),
                Some(Decoded::Gzip(frame)) => {
                    let mut charge = budget.charge(1 << 20, std::future::pending()).await;
                    let inflated = frame.inflate().unwrap();
                    charge.shrink_to(inflated.capacity());
                    buffer.start_inflation(charge, &inflated);
                    assert!(decoder.inflated(Ok(inflated)).is_none());
                }
                None => break,
            }
        }
        buffer.end_pass();
        out
    }

    #[tokio::test]
    async fn a_message_keeps_its_whole_block_charged_until_it_goes() {
        let budget = MemoryBudget::new(1 << 20);
        let mut buffer = ReadBuffer::new();
        let mut decoder = decoder();
        assert_eq!(budget.used(), 0, "no block before the first read");
        let first = pass(
            &mut buffer,
            &mut decoder,
            &budget,
            b"{\"a\":1}\n{\"b\":2}\n",
        )
        .await;
        assert_eq!(budget.used(), READ_CHUNK);
        let (a, b) = (first[0].clone(), first[1].clone());
        drop(first);
        assert_eq!(&a.data()[..], b"{\"a\":1}");
        // Fill the block so the next read needs a new one while `a` and `b`
        // still hold the first.
        let filler = format!("{{\"x\":\"{}\"}}\n", "y".repeat(READ_CHUNK - 40));
        let rest = pass(&mut buffer, &mut decoder, &budget, filler.as_bytes()).await;
        drop(rest);
        let _c = pass(&mut buffer, &mut decoder, &budget, b"{\"c\":3}\n").await;
        assert_eq!(budget.used(), 2 * READ_CHUNK, "the first block is pinned");
        assert_eq!(budget.retired(), READ_CHUNK);
        drop(a);
        assert_eq!(budget.used(), 2 * READ_CHUNK, "b still pins it");
        assert_eq!(&b.data()[..], b"{\"b\":2}", "and its bytes are intact");
        drop(b);
        assert_eq!((budget.used(), budget.retired()), (READ_CHUNK, 0));
        drop(buffer);
        drop(_c);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_free_block_is_reused_in_place() {
        let budget = MemoryBudget::new(1 << 20);
        let mut buffer = ReadBuffer::new();
        let mut decoder = decoder();
        let line = format!("{{\"x\":\"{}\"}}\n", "y".repeat(1000));
        for _ in 0..200 {
            let out = pass(&mut buffer, &mut decoder, &budget, line.as_bytes()).await;
            assert_eq!(out.len(), 1);
        }
        assert_eq!(budget.used(), READ_CHUNK);
        assert_eq!(budget.waits(), 0);
    }

    #[tokio::test]
    async fn inflated_lines_hold_their_buffer_charged_at_its_size() {
        let budget = MemoryBudget::new(4 << 20);
        let mut buffer = ReadBuffer::new();
        let mut decoder = decoder();
        let mut frame = BytesMut::new();
        let text = format!("{{\"a\":\"{}\"}}\n{{\"b\":2}}\n", "z".repeat(100_000));
        encode_gzip_frame(text.as_bytes(), &mut frame);
        let lines = pass(&mut buffer, &mut decoder, &budget, &frame).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(budget.used(), READ_CHUNK + text.len());
        let b = lines[1].clone();
        drop(lines);
        // The block is free again, the inflated buffer is pinned by `b`.
        assert_eq!(budget.used(), READ_CHUNK + text.len());
        drop(b);
        assert_eq!(budget.used(), READ_CHUNK);
    }

    #[tokio::test]
    async fn a_large_frame_grows_the_buffer_then_gives_it_back() {
        let budget = MemoryBudget::new(8 << 20);
        let mut buffer = ReadBuffer::new();
        let mut decoder = decoder();
        let mut frame = BytesMut::new();
        let payload = vec![7u8; (1 << 20) - 5];
        logdist_wire::encode_frame(5, &payload, &mut frame);
        let (head, tail) = frame.split_at(1000);
        assert!(
            pass(&mut buffer, &mut decoder, &budget, head)
                .await
                .is_empty()
        );
        // The decoder reserved the whole frame: charged before reading on.
        buffer.make_room(&budget).await;
        assert!(budget.used() >= (1 << 20));
        let mut got = Vec::new();
        for chunk in tail.chunks(200_000) {
            got.extend(pass(&mut buffer, &mut decoder, &budget, chunk).await);
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload(), payload);
        assert!(!buffer.has_block(), "not kept once empty");
        drop(got);
        assert_eq!(budget.used(), 0);
    }
}
