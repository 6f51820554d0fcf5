//! One emitter connection: read, decode, route, acknowledge.
//!
//! Reads land in a large `BytesMut`; every decoded message is a slice of it, so
//! nothing is copied between this read and the analyzer's write. Routing a whole
//! read's worth of messages happens before the next read, which is how
//! backpressure works: while every analyzer is full, this socket is not read.
//! Nor is it while the memory budget is spent: the next read waits for room
//! in a charged buffer ([`ReadBuffer`]), and each message carries its share
//! of that charge until it leaves logdist.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use logdist_router::{Cursor, Envelope, Placed, RoutingTable};
use logdist_wire::{
    Decoded, ErrorCode, IngestDecoder, IngestError, RejectReason, Rejection, error_reply,
};
use tokio::io::AsyncReadExt;
use tokio_util::codec::Decoder;

use super::context::IngestContext;
use super::read_buffer::ReadBuffer;
use crate::config::AckMode;
use crate::delivery::dead_letter::SHUTDOWN_ERROR;
use crate::stats::{CLASSES, class_of};
use crate::transport::Stream;
use crate::transport::stream::write_all_flushed;

const ACK_OK: &[u8] = b"{\"status\":\"ok\",\"message\":\"received\"}\n";

pub struct EmitterConnection {
    stream: Stream,
    peer: SocketAddr,
    buffer: ReadBuffer,
    decoder: IngestDecoder,
    ack: AckMode,
    replies: Vec<u8>,
    tally: Tally,
}

/// What this connection has done, added to the global stats after each read.
#[derive(Default)]
struct Tally {
    /// Messages accepted, by priority class.
    accepted_by_class: [u64; CLASSES.len()],
    routed: u64,
    held: u64,
    diverted: u64,
    /// Rejections, indexed like `RejectReason::ALL`.
    rejected: [u64; RejectReason::ALL.len()],
    /// Reasons already logged at warn level on this connection: the first of
    /// each kind is worth an operator's attention, the rest only a counter.
    logged: HashSet<RejectReason>,
    total_accepted: u64,
    total_rejected: u64,
}

impl EmitterConnection {
    pub fn new(stream: Stream, peer: SocketAddr, ack: AckMode, ctx: &IngestContext) -> Self {
        EmitterConnection {
            stream,
            peer,
            buffer: ReadBuffer::new(),
            decoder: IngestDecoder::new(ctx.limits, ctx.priorities.clone()).with_inflation_gate(),
            ack,
            replies: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Runs until the emitter closes, the stream is unrecoverable, or shutdown.
    pub async fn run(mut self, ctx: &IngestContext) {
        let mut cursor = Cursor::new(cursor_seed(self.peer));
        let end = loop {
            let eof = match self.read(ctx).await {
                Ok(read) => read == 0,
                Err(end) => break end,
            };
            if let Err(end) = self.process(ctx, &mut cursor, eof).await {
                break end;
            }
            if let Err(err) = self.flush_replies().await {
                break End::Io(err);
            }
            if eof {
                break End::Eof;
            }
        };
        if matches!(end, End::Shutdown) {
            // Whatever was already read is routed, not dropped.
            let _ = self.process(ctx, &mut cursor, false).await;
            let _ = self.flush_replies().await;
        }
        self.flush_tally(ctx);
        match end {
            End::Eof | End::Shutdown => tracing::debug!(
                peer = %self.peer,
                accepted = self.tally.total_accepted,
                rejected = self.tally.total_rejected,
                "emitter connection closed"
            ),
            End::Io(err) => tracing::info!(peer = %self.peer, %err, "emitter connection failed"),
            End::BadLength(reason) => {
                ctx.stats.bad_length_closes.add(1);
                tracing::warn!(peer = %self.peer, %reason, "closing emitter connection");
            }
        }
    }

    /// Reads once there is room in a charged buffer: a connection without a
    /// block waits for its emitter to send before taking one from the budget,
    /// then for the budget. An idle one gives its block back when the budget
    /// is pressed. Returns the bytes read (0: end of stream).
    async fn read(&mut self, ctx: &IngestContext) -> Result<usize, End> {
        let stop = &ctx.shutdown.stop_accepting;
        loop {
            if !self.buffer.has_block() {
                tokio::select! {
                    peeked = self.stream.peek_byte() => match peeked {
                        Ok(Some(_)) => {}
                        Ok(None) => return Ok(0),
                        Err(err) => return Err(End::Io(err)),
                    },
                    _ = stop.cancelled() => return Err(End::Shutdown),
                }
            }
            tokio::select! {
                _ = self.buffer.make_room(&ctx.budget) => {}
                _ = stop.cancelled() => return Err(End::Shutdown),
            }
            let pressure = ctx.budget.pressure();
            let idle = self.buffer.is_empty();
            let step = tokio::select! {
                read = self.stream.read_buf(self.buffer.bytes_mut()) => Step::Read(read),
                _ = pressure, if idle => Step::GiveBack,
                _ = stop.cancelled() => Step::Stop,
            };
            match step {
                Step::Read(Ok(read)) => return Ok(read),
                Step::Read(Err(err)) => return Err(End::Io(err)),
                Step::GiveBack => self.buffer.give_back(),
                Step::Stop => return Err(End::Shutdown),
            }
        }
    }

    /// Decodes and routes every complete message in the buffer (and, at `eof`,
    /// what is left of it).
    async fn process(
        &mut self,
        ctx: &IngestContext,
        cursor: &mut Cursor,
        eof: bool,
    ) -> Result<(), End> {
        self.buffer.begin_pass();
        let routed = self.route_all(ctx, cursor, eof).await;
        self.buffer.end_pass();
        routed?;
        self.flush_tally(ctx);
        Ok(())
    }

    async fn route_all(
        &mut self,
        ctx: &IngestContext,
        cursor: &mut Cursor,
        eof: bool,
    ) -> Result<(), End> {
        // One table and one arrival time for the whole read: nothing per message.
        let table = ctx.router.load_full();
        let arrived = Instant::now();
        loop {
            let decoded = if eof {
                self.decoder.decode_eof(self.buffer.bytes_mut())
            } else {
                self.decoder.decode(self.buffer.bytes_mut())
            };
            self.buffer
                .track_inflation(self.decoder.inflated(), self.decoder.inflation_waiting());
            let item = match decoded {
                Ok(Some(item)) => item,
                Ok(None) if self.decoder.inflation_waiting() => {
                    // Budget for what the frame may inflate to, before inflating it.
                    self.flush_tally(ctx);
                    let give_up = ctx.shutdown.hard_stop.cancelled();
                    let max = ctx.limits.max_decompressed_bytes;
                    self.buffer
                        .reserve_inflation(&ctx.budget, max, give_up)
                        .await;
                    self.decoder.allow_inflation();
                    continue;
                }
                Ok(None) => break,
                Err(err @ IngestError::BadLength { .. }) => {
                    let reason = err.to_string();
                    if self.ack == AckMode::Message {
                        self.replies
                            .extend_from_slice(&error_reply(ErrorCode::BadFrameLength, &reason));
                        let _ = self.flush_replies().await;
                    }
                    return Err(End::BadLength(reason));
                }
                // The decoder reads no socket: it never fails this way.
                Err(IngestError::Io(err)) => return Err(End::Io(err)),
            };
            match item {
                Decoded::Message(message) => {
                    let message = self.buffer.pin(message);
                    let acked = self.ack == AckMode::Message
                        && message.origin() == logdist_wire::Origin::Ndjson;
                    let env = Envelope::arrived_at(message, arrived);
                    self.route(ctx, &table, cursor, env).await?;
                    if acked {
                        self.replies.extend_from_slice(ACK_OK);
                    }
                }
                Decoded::Rejected(rejection) => self.reject(rejection),
            }
        }
        Ok(())
    }

    async fn route(
        &mut self,
        ctx: &IngestContext,
        table: &RoutingTable,
        cursor: &mut Cursor,
        env: Envelope,
    ) -> Result<(), End> {
        self.tally.accepted_by_class[class_of(env.priority())] += 1;
        let placed = match ctx.router.place(table, cursor, env) {
            Ok(placed) => Ok(placed),
            Err(env) => {
                // Backpressure: this may wait long, so publish the counts first.
                self.flush_tally(ctx);
                let give_up = ctx.shutdown.hard_stop.cancelled();
                ctx.router.route_or_wait(cursor, env, give_up).await
            }
        };
        match placed {
            Ok(Placed::Routed(routed)) => {
                self.tally.routed += 1;
                self.tally.diverted += u64::from(routed.diverted);
                Ok(())
            }
            Ok(Placed::Held) => {
                self.tally.held += 1;
                Ok(())
            }
            Err(env) => {
                // Accepted, but the grace period ended before any analyzer had room.
                ctx.dead_letters.send(env, Arc::from(SHUTDOWN_ERROR));
                Ok(())
            }
        }
    }

    fn reject(&mut self, rejection: Rejection) {
        if self.tally.logged.insert(rejection.reason) {
            tracing::warn!(peer = %self.peer, reason = rejection.reason.as_str(), %rejection, "rejected message (further rejections of this kind on this connection are only counted)");
        } else {
            tracing::debug!(peer = %self.peer, reason = rejection.reason.as_str(), %rejection, "rejected message");
        }
        self.tally.rejected[rejection.reason as usize] += 1;
        if self.ack == AckMode::Message {
            self.replies
                .extend_from_slice(&error_reply(rejection.reason.into(), &rejection.detail));
        }
    }

    async fn flush_replies(&mut self) -> std::io::Result<()> {
        if self.replies.is_empty() {
            return Ok(());
        }
        let result = write_all_flushed(&mut self.stream, &self.replies).await;
        self.replies.clear();
        result
    }

    fn flush_tally(&mut self, ctx: &IngestContext) {
        let t = &mut self.tally;
        for (class, n) in t.accepted_by_class.iter_mut().enumerate() {
            t.total_accepted += *n;
            ctx.stats.accepted_by_class[class].add(std::mem::take(n));
        }
        for (reason, n) in RejectReason::ALL.into_iter().zip(&mut t.rejected) {
            t.total_rejected += *n;
            ctx.stats.reject(reason, std::mem::take(n));
        }
        ctx.stats.routed.add(std::mem::take(&mut t.routed));
        ctx.stats.held.add(std::mem::take(&mut t.held));
        ctx.stats.diverted.add(std::mem::take(&mut t.diverted));
    }
}

/// What woke a connection waiting to read.
enum Step {
    Read(std::io::Result<usize>),
    /// The budget is pressed and this connection is idle.
    GiveBack,
    Stop,
}

enum End {
    Eof,
    Shutdown,
    Io(std::io::Error),
    BadLength(String),
}

/// Spreads connections over the low-discrepancy sequence so that many emitters
/// starting together do not all pick the same analyzer first.
fn cursor_seed(peer: SocketAddr) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(peer)
}
