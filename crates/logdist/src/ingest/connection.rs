//! One emitter connection: read, decode, route, acknowledge.
//!
//! Reads land in a large `BytesMut`; every decoded message is a slice of it, so
//! nothing is copied between this read and the analyzer's write. Routing a whole
//! read's worth of messages happens before the next read, which is how
//! backpressure works: while every analyzer is full, this socket is not read.
//! Nor is it while the memory budget is spent: the next read waits for room
//! in a charged buffer ([`ReadBuffer`]), a gzip frame for the budget of what
//! it may inflate to, and each message carries its share of that charge
//! until it leaves logdist.
//!
//! What a hostile or broken peer can cost is bounded:
//!
//! - **Replies.** They are written as soon as [`REPLY_FLUSH_BYTES`] are
//!   pending, not only after the whole read: a read that fans out into
//!   millions of replies (a gzip frame of tiny bad lines) holds that much,
//!   and a peer that does not read its replies stops being read.
//! - **Time on the worker.** Decoding yields to the other tasks every
//!   [`YIELD_EVERY_MESSAGES`] messages, [`YIELD_EVERY_BYTES`] message bytes
//!   or [`YIELD_AFTER`] (see [`Turn`]), and a gzip frame is inflated on a blocking thread (after a first
//!   [`INLINE_INFLATE_BYTES`] inline, which is all a small frame needs), in
//!   one of a few inflation slots.
//! - **Silence.** `limits.idle_timeout` closes a connection that sends
//!   nothing and takes no reply for that long, `limits.frame_timeout` one
//!   that has begun a message and does not complete it ([`Progress`]).
//! - **Shutdown.** At the end of the grace period (the hard stop) the
//!   connection stops whatever it waits for: a reply write, inflation, room
//!   in a queue. What it read and had not decoded yet is dropped: never
//!   accepted, like what is still in the socket.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use logdist_router::{Cursor, Envelope, Placed, RoutingTable, Wakes};
use logdist_spool::RecordId;
use logdist_wire::{
    Decoded, ErrorCode, GzipFrame, IngestDecoder, IngestError, RejectReason, Rejection, error_reply,
};
use tokio::io::AsyncReadExt;
use tokio_util::codec::Decoder;

use super::context::{EmitterTimeouts, IngestContext};
use super::listener::ListenerMode;
use super::read_buffer::ReadBuffer;
use super::spooling::GaveUp;
use crate::closes::CloseReason;
use crate::config::AckMode;
use crate::delivery::dead_letter::SHUTDOWN_ERROR;
use crate::stats::{CLASSES, class_of};
use crate::transport::Stream;
use crate::transport::stream::write_all_flushed;

/// Pending replies are written once there are this many bytes of them.
const REPLY_FLUSH_BYTES: usize = 64 * 1024;

/// Messages (or rejections) decoded in a row before yielding to other tasks.
const YIELD_EVERY_MESSAGES: u32 = 1024;

/// Message bytes decoded in a row before yielding (about a millisecond of
/// JSON parsing): long lines reach it before [`YIELD_EVERY_MESSAGES`].
const YIELD_EVERY_BYTES: usize = 1 << 20;

/// Time spent decoding in a row before yielding, whatever the count: the
/// message costs vary (a rejection costs more than a binary frame).
const YIELD_AFTER: Duration = Duration::from_millis(1);

/// Messages between two looks at the clock for [`YIELD_AFTER`].
const CLOCK_EVERY_MESSAGES: u32 = 64;

/// Output a gzip frame is inflated by on the async worker, before the rest
/// goes to a blocking thread: small frames (the usual shipper batch) never
/// pay for the thread hand-off.
const INLINE_INFLATE_BYTES: usize = 64 * 1024;

const ACK_OK: &[u8] = b"{\"status\":\"ok\",\"message\":\"received\"}\n";

pub struct EmitterConnection {
    stream: Stream,
    peer: SocketAddr,
    buffer: ReadBuffer,
    decoder: IngestDecoder,
    ack: AckMode,
    replies: Vec<u8>,
    /// Disk mode: the newest spool record appended since replies were last
    /// written; they are written once it is durable.
    unsynced: Option<RecordId>,
    tally: Tally,
    /// The writers a read's messages went to, woken once the read is
    /// routed (or before anything that may wait): see `Wakes`. Kept across
    /// reads so that its list is allocated once per connection.
    wakes: Wakes,
}

/// What this connection has done, added to the global stats after each read.
#[derive(Default)]
struct Tally {
    /// Messages accepted, by priority class.
    accepted_by_class: [u64; CLASSES.len()],
    routed: u64,
    held: u64,
    diverted: u64,
    /// Disk mode: kept in the spool only, for want of room in memory.
    backlogged: u64,
    /// Rejections, indexed like `RejectReason::ALL`.
    rejected: [u64; RejectReason::ALL.len()],
    /// Reasons already logged at warn level on this connection: the first of
    /// each kind is worth an operator's attention, the rest only a counter.
    logged: HashSet<RejectReason>,
    total_accepted: u64,
    total_rejected: u64,
}

impl EmitterConnection {
    pub fn new(stream: Stream, peer: SocketAddr, mode: ListenerMode, ctx: &IngestContext) -> Self {
        EmitterConnection {
            stream,
            peer,
            buffer: ReadBuffer::new(),
            decoder: IngestDecoder::new(ctx.limits, ctx.priorities.clone())
                .format(mode.format)
                .defer_gzip(),
            ack: mode.ack,
            replies: Vec::new(),
            unsynced: None,
            tally: Tally::default(),
            wakes: Wakes::default(),
        }
    }

    /// Runs until the emitter closes, the stream is unrecoverable, the peer
    /// stalls past a timeout, or shutdown.
    pub async fn run(mut self, ctx: &IngestContext) {
        let mut cursor = Cursor::new(cursor_seed(self.peer));
        let mut watchdog = Watchdog::new(ctx.timeouts);
        let end = loop {
            let eof = match self.read(ctx, &mut watchdog).await {
                Ok(read) => read == 0,
                Err(end) => break end,
            };
            let decoded = match self.process(ctx, &mut cursor, eof).await {
                Ok(decoded) => decoded,
                Err(end) => break end,
            };
            if let Err(end) = self.flush_replies(ctx).await {
                break end;
            }
            if eof {
                break End::Eof;
            }
            watchdog.progress.advanced(
                tokio::time::Instant::now(),
                decoded > 0,
                self.decoder.in_message(self.buffer.bytes()),
            );
        };
        let end = match end {
            // Whatever was already read is routed, not dropped, until the hard stop.
            End::Shutdown => match self.process(ctx, &mut cursor, false).await {
                Ok(_) => self.flush_replies(ctx).await.err().unwrap_or(End::Shutdown),
                Err(end) => end,
            },
            end => end,
        };
        self.flush_tally(ctx);
        match end {
            End::Eof | End::Shutdown => tracing::debug!(
                peer = %self.peer,
                accepted = self.tally.total_accepted,
                rejected = self.tally.total_rejected,
                "emitter connection closed"
            ),
            End::HardStop => tracing::debug!(
                peer = %self.peer,
                accepted = self.tally.total_accepted,
                undecoded_bytes = self.buffer.bytes().len(),
                "emitter connection cut at the end of the shutdown grace period"
            ),
            End::Io(err) => tracing::info!(peer = %self.peer, %err, "emitter connection failed"),
            End::BadLength(reason) => {
                ctx.stats.bad_length_closes.add(1);
                tracing::warn!(peer = %self.peer, %reason, "closing emitter connection");
            }
            End::Stalled(reason, detail) => {
                ctx.stats.emitter_closes.close(reason, self.peer, &detail);
            }
        }
    }

    /// Reads once there is room in a charged buffer: a connection without a
    /// block waits for its emitter to send before taking one from the budget,
    /// then for the budget (time the watchdog does not count: the wait is
    /// logdist's). An idle connection gives its block back when the budget is
    /// pressed. Returns the bytes read (0: end of stream).
    async fn read(&mut self, ctx: &IngestContext, watchdog: &mut Watchdog) -> Result<usize, End> {
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
                    (reason, detail) = watchdog.expired() => return Err(End::Stalled(reason, detail)),
                }
            }
            // Room is almost always there at once: polled first, it spares
            // the shutdown token a registration per read.
            tokio::select! {
                biased;
                _ = self.buffer.make_room(&ctx.budget) => {}
                _ = stop.cancelled() => return Err(End::Shutdown),
            }
            let pressure = ctx.budget.pressure();
            let idle = self.buffer.bytes().is_empty();
            tokio::select! {
                read = self.stream.read_buf(self.buffer.bytes_mut()) => return read.map_err(End::Io),
                _ = pressure, if idle => self.buffer.give_back(),
                _ = stop.cancelled() => return Err(End::Shutdown),
                (reason, detail) = watchdog.expired() => return Err(End::Stalled(reason, detail)),
            }
        }
    }

    /// Decodes and routes every complete message in the buffer (and, at `eof`,
    /// what is left of it); returns how many messages (and rejections and
    /// gzip frames) it decoded.
    async fn process(
        &mut self,
        ctx: &IngestContext,
        cursor: &mut Cursor,
        eof: bool,
    ) -> Result<u64, End> {
        self.buffer.begin_pass();
        let decoded = self.route_all(ctx, cursor, eof).await;
        self.wakes.wake_all();
        self.buffer.end_pass();
        self.flush_tally(ctx);
        decoded
    }

    async fn route_all(
        &mut self,
        ctx: &IngestContext,
        cursor: &mut Cursor,
        eof: bool,
    ) -> Result<u64, End> {
        // One table and one arrival time for the read: nothing per message.
        let mut table = ctx.router.load_full();
        let arrived = Instant::now();
        let mut decoded = 0;
        let mut turn = Turn::starting(arrived);
        loop {
            if turn.spent() {
                // Let the other connections on this worker have their turn.
                self.flush_tally(ctx);
                self.wakes.wake_all();
                tokio::task::yield_now().await;
                if ctx.shutdown.hard_stop.is_cancelled() {
                    return Err(End::HardStop);
                }
                table = ctx.router.load_full();
                turn = Turn::starting(Instant::now());
            }
            let next = if eof {
                self.decoder.decode_eof(self.buffer.bytes_mut())
            } else {
                self.decoder.decode(self.buffer.bytes_mut())
            };
            if !self.decoder.inflating() {
                self.buffer.end_inflation();
            }
            let item = match next {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(err @ IngestError::BadLength { .. }) => {
                    self.wakes.wake_all();
                    let reason = err.to_string();
                    if self.ack == AckMode::Message {
                        self.replies
                            .extend_from_slice(&error_reply(ErrorCode::BadFrameLength, &reason));
                        let _ = self.flush_replies(ctx).await;
                    }
                    return Err(End::BadLength(reason));
                }
                // The decoder reads no socket: it never fails this way.
                Err(IngestError::Io(err)) => return Err(End::Io(err)),
            };
            decoded += 1;
            match item {
                Decoded::Message(message) => {
                    let message = self.buffer.pin(message);
                    turn.charge(message.data().len());
                    // NDJSON and syslog messages are answered; binary frames never.
                    let acked = self.ack == AckMode::Message
                        && message.origin() != logdist_wire::Origin::Frame;
                    let env = Envelope::arrived_at(message, arrived);
                    self.route(ctx, &table, cursor, env).await?;
                    if acked {
                        self.replies.extend_from_slice(ACK_OK);
                    }
                }
                Decoded::Rejected(rejection) => {
                    turn.charge(0);
                    self.reject(rejection);
                }
                Decoded::Gzip(frame) => {
                    self.wakes.wake_all();
                    let inflated = self.inflate(ctx, frame).await?;
                    turn.charge(inflated.as_ref().map_or(0, BytesMut::len));
                    if let Some(Decoded::Rejected(rejection)) = self.decoder.inflated(inflated) {
                        self.reject(rejection);
                    }
                }
            }
            if self.replies.len() >= REPLY_FLUSH_BYTES {
                self.wakes.wake_all();
                self.flush_replies(ctx).await?;
            }
        }
        Ok(decoded)
    }

    /// Inflates a gzip frame once the budget has room for what it may
    /// inflate to (`max_decompressed_bytes`); what it did inflate to stays
    /// charged while its lines are in logdist.
    async fn inflate(
        &mut self,
        ctx: &IngestContext,
        frame: GzipFrame,
    ) -> Result<Result<BytesMut, Rejection>, End> {
        let hard_stop = &ctx.shutdown.hard_stop;
        let max = ctx.limits.max_decompressed_bytes;
        let mut charge = match ctx.budget.try_charge(max) {
            Some(charge) => charge,
            None => {
                // Waiting may be long: publish the counts and replies first.
                self.flush_tally(ctx);
                self.flush_replies(ctx).await?;
                let charge = ctx.budget.charge(max, hard_stop.cancelled()).await;
                if hard_stop.is_cancelled() {
                    return Err(End::HardStop);
                }
                charge
            }
        };
        let inflated = inflate(ctx, frame).await?;
        if let Ok(lines) = &inflated {
            charge.shrink_to(lines.len());
            self.buffer.start_inflation(charge, lines);
        }
        Ok(inflated)
    }

    async fn route(
        &mut self,
        ctx: &IngestContext,
        table: &RoutingTable,
        cursor: &mut Cursor,
        mut env: Envelope,
    ) -> Result<(), End> {
        if let Some(spooling) = &ctx.spooling {
            let id = match spooling.try_append(&mut env) {
                Some(id) => id,
                None => {
                    // The spool is full: this may wait long.
                    self.flush_tally(ctx);
                    self.wakes.wake_all();
                    let give_up = ctx.shutdown.hard_stop.cancelled();
                    match spooling.append(&mut env, give_up).await {
                        Ok(id) => id,
                        // Never accepted: like what is still in the socket.
                        Err(GaveUp) => return Err(End::HardStop),
                    }
                }
            };
            self.unsynced = Some(id);
        }
        self.tally.accepted_by_class[class_of(env.priority())] += 1;
        let placed = match ctx.router.place(table, cursor, env, &mut self.wakes) {
            Ok(placed) => Ok(placed),
            Err(env) if let Some(spooling) = &ctx.spooling => {
                self.flush_tally(ctx);
                self.wakes.wake_all();
                let hard_stop = &ctx.shutdown.hard_stop;
                match spooling
                    .wait_or_spill(&ctx.router, cursor, env, hard_stop)
                    .await
                {
                    Some(placed) => Ok(placed),
                    None => {
                        self.tally.backlogged += 1;
                        return Ok(());
                    }
                }
            }
            Err(env) => {
                // Backpressure: this may wait long, so publish the counts
                // and wake the writers that will make room first.
                self.flush_tally(ctx);
                self.wakes.wake_all();
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

    /// Writes the pending replies. The peer must take them within
    /// `limits.idle_timeout`; the hard stop ends the wait too.
    async fn flush_replies(&mut self, ctx: &IngestContext) -> Result<(), End> {
        if self.replies.is_empty() {
            return Ok(());
        }
        if let (Some(spooling), Some(id)) = (&ctx.spooling, self.unsynced.take()) {
            // An `ok` promises the message is stored.
            tokio::select! {
                _ = spooling.durable(id) => {}
                _ = ctx.shutdown.hard_stop.cancelled() => return Err(End::HardStop),
            }
        }
        let idle = ctx.timeouts.idle;
        let result = tokio::select! {
            biased;
            written = write_all_flushed(&mut self.stream, &self.replies) => written.map_err(End::Io),
            _ = ctx.shutdown.hard_stop.cancelled() => Err(End::HardStop),
            () = sleep_or_never(idle) => Err(End::Stalled(
                CloseReason::IdleTimeout,
                format!("replies not read for {:?}", idle.unwrap_or_default()),
            )),
        };
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
        ctx.stats.backlogged.add(std::mem::take(&mut t.backlogged));
    }
}

enum End {
    Eof,
    Shutdown,
    /// The shutdown grace period ended while the connection still waited.
    HardStop,
    Io(std::io::Error),
    BadLength(String),
    /// The peer made no progress for too long.
    Stalled(CloseReason, String),
}

/// One turn of decoding between two yields: [`YIELD_EVERY_MESSAGES`]
/// messages, [`YIELD_EVERY_BYTES`] message bytes or [`YIELD_AFTER`],
/// whichever comes first (the clock is read every [`CLOCK_EVERY_MESSAGES`]
/// messages).
struct Turn {
    since: Instant,
    messages: u32,
    bytes: usize,
}

impl Turn {
    fn starting(since: Instant) -> Self {
        Turn {
            since,
            messages: 0,
            bytes: 0,
        }
    }

    fn charge(&mut self, bytes: usize) {
        self.messages += 1;
        self.bytes += bytes;
    }

    fn spent(&self) -> bool {
        self.messages >= YIELD_EVERY_MESSAGES
            || self.bytes >= YIELD_EVERY_BYTES
            || (self.messages.is_multiple_of(CLOCK_EVERY_MESSAGES)
                && self.messages > 0
                && self.since.elapsed() >= YIELD_AFTER)
    }
}

/// Inflates a gzip frame: the first [`INLINE_INFLATE_BYTES`] here, the rest
/// (if any) on a blocking thread, once one of the inflation slots is free.
async fn inflate(
    ctx: &IngestContext,
    frame: GzipFrame,
) -> Result<Result<BytesMut, Rejection>, End> {
    let mut inflater = frame.inflater();
    if let Some(inflated) = inflater.step(INLINE_INFLATE_BYTES) {
        return Ok(inflated);
    }
    let hard_stop = &ctx.shutdown.hard_stop;
    let slot = tokio::select! {
        slot = ctx.inflation_slots.clone().acquire_owned() => {
            slot.expect("the inflation slots are never closed")
        }
        _ = hard_stop.cancelled() => return Err(End::HardStop),
    };
    let job = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        inflater.finish()
    });
    tokio::select! {
        joined = job => joined.map_err(|err| {
            End::Io(std::io::Error::other(format!("gzip inflation failed: {err}")))
        }),
        // The thread finishes the frame on its own and drops it.
        _ = hard_stop.cancelled() => Err(End::HardStop),
    }
}

async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// Ends a connection whose emitter makes no progress: [`Progress`] and one
/// timer for its next deadline.
struct Watchdog {
    progress: Progress,
    /// Never later than the next deadline; reset only when that moves
    /// earlier, or when it fires early (the deadline moved later): no timer
    /// work per read.
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Watchdog {
    fn new(timeouts: EmitterTimeouts) -> Self {
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        Watchdog {
            progress: Progress::new(timeouts, tokio::time::Instant::now()),
            timer: Box::pin(tokio::time::sleep_until(far)),
        }
    }

    /// Completes when a deadline has passed, with why; never when both
    /// timeouts are off. Cancel-safe.
    async fn expired(&mut self) -> (CloseReason, String) {
        loop {
            let Some((at, reason)) = self.progress.deadline() else {
                return std::future::pending().await;
            };
            if at < self.timer.deadline() {
                self.timer.as_mut().reset(at);
            }
            self.timer.as_mut().await;
            if tokio::time::Instant::now() >= at {
                return (reason, self.progress.detail(reason));
            }
            self.timer.as_mut().reset(at);
        }
    }
}

/// When an emitter last made progress, for `limits.idle_timeout` and
/// `limits.frame_timeout`. Time spent on logdist's side (routing under
/// backpressure, writing replies) does not count: the clocks restart after
/// each read has been dealt with.
struct Progress {
    timeouts: EmitterTimeouts,
    /// The last read (or the connection's start).
    active_at: tokio::time::Instant,
    /// Since when a message has been begun and not completed.
    in_message_since: Option<tokio::time::Instant>,
}

impl Progress {
    fn new(timeouts: EmitterTimeouts, now: tokio::time::Instant) -> Self {
        Progress {
            timeouts,
            active_at: now,
            in_message_since: None,
        }
    }

    /// After a read that completed `completed` messages and left `in_message`
    /// one begun and not completed.
    fn advanced(&mut self, now: tokio::time::Instant, completed: bool, in_message: bool) {
        self.active_at = now;
        self.in_message_since = match self.in_message_since {
            _ if !in_message => None,
            Some(since) if !completed => Some(since),
            _ => Some(now),
        };
    }

    /// The next deadline and what passing it means.
    fn deadline(&self) -> Option<(tokio::time::Instant, CloseReason)> {
        let idle = (self.timeouts.idle)
            .map(|timeout| (self.active_at + timeout, CloseReason::IdleTimeout));
        let frame = (self.timeouts.frame)
            .zip(self.in_message_since)
            .map(|(timeout, since)| (since + timeout, CloseReason::FrameTimeout));
        match (idle, frame) {
            (Some(idle), Some(frame)) => Some(if frame.0 < idle.0 { frame } else { idle }),
            (idle, frame) => idle.or(frame),
        }
    }

    fn detail(&self, reason: CloseReason) -> String {
        match reason {
            CloseReason::IdleTimeout => format!(
                "nothing received for {:?} (limits.idle_timeout)",
                self.timeouts.idle.unwrap_or_default()
            ),
            CloseReason::FrameTimeout => format!(
                "a message begun {:?} ago is not complete (limits.frame_timeout)",
                self.timeouts.frame.unwrap_or_default()
            ),
        }
    }
}

/// Spreads connections over the low-discrepancy sequence so that many emitters
/// starting together do not all pick the same analyzer first.
fn cursor_seed(peer: SocketAddr) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(300);
    const FRAME: Duration = Duration::from_secs(30);

    fn progress(
        idle: Option<Duration>,
        frame: Option<Duration>,
    ) -> (Progress, tokio::time::Instant) {
        let start = tokio::time::Instant::now();
        (Progress::new(EmitterTimeouts { idle, frame }, start), start)
    }

    #[test]
    fn idle_deadline_moves_with_every_read() {
        let (mut p, start) = progress(Some(IDLE), Some(FRAME));
        assert_eq!(p.deadline(), Some((start + IDLE, CloseReason::IdleTimeout)));
        let later = start + Duration::from_secs(10);
        p.advanced(later, true, false);
        assert_eq!(p.deadline(), Some((later + IDLE, CloseReason::IdleTimeout)));
    }

    #[test]
    fn frame_deadline_runs_from_the_start_of_an_incomplete_message() {
        let (mut p, start) = progress(Some(IDLE), Some(FRAME));
        let t = |s| start + Duration::from_secs(s);
        // A message begins: its clock starts.
        p.advanced(t(1), false, true);
        assert_eq!(
            p.deadline(),
            Some((t(1) + FRAME, CloseReason::FrameTimeout))
        );
        // More bytes of it, nothing completed: the clock runs on.
        p.advanced(t(5), false, true);
        assert_eq!(
            p.deadline(),
            Some((t(1) + FRAME, CloseReason::FrameTimeout))
        );
        // Messages completed and another begun: a new clock.
        p.advanced(t(8), true, true);
        assert_eq!(
            p.deadline(),
            Some((t(8) + FRAME, CloseReason::FrameTimeout))
        );
        // At a boundary: only the idle clock.
        p.advanced(t(9), true, false);
        assert_eq!(p.deadline(), Some((t(9) + IDLE, CloseReason::IdleTimeout)));
    }

    #[test]
    fn timeouts_turned_off_have_no_deadline() {
        let (mut p, start) = progress(None, None);
        p.advanced(start, false, true);
        assert_eq!(p.deadline(), None);
        let (mut p, start) = progress(None, Some(FRAME));
        assert_eq!(p.deadline(), None, "no message begun");
        p.advanced(start, false, true);
        assert_eq!(
            p.deadline(),
            Some((start + FRAME, CloseReason::FrameTimeout))
        );
        // A frame timeout longer than the idle one: idle comes first.
        let (mut p, start) = progress(Some(FRAME), Some(IDLE));
        p.advanced(start, false, true);
        assert_eq!(
            p.deadline(),
            Some((start + FRAME, CloseReason::IdleTimeout))
        );
    }

    #[test]
    fn a_turn_ends_by_count_bytes_or_time() {
        let mut turn = Turn::starting(Instant::now());
        for _ in 0..YIELD_EVERY_MESSAGES - 1 {
            turn.charge(10);
        }
        assert!(!turn.spent());
        turn.charge(10);
        assert!(turn.spent());
        let mut turn = Turn::starting(Instant::now());
        turn.charge(YIELD_EVERY_BYTES);
        assert!(turn.spent());
        let mut turn = Turn::starting(Instant::now() - YIELD_AFTER);
        turn.charge(0);
        assert!(
            !turn.spent(),
            "the clock is read every {CLOCK_EVERY_MESSAGES} messages"
        );
        for _ in 1..CLOCK_EVERY_MESSAGES {
            turn.charge(0);
        }
        assert!(turn.spent());
    }
}
