//! One connected analyzer: its queues, its writer, its acks.
//!
//! The writer (this task) pops messages in strict priority order, encodes a batch
//! and writes it with one vectored write, then keeps every sent message in the
//! in-flight window until the analyzer's cumulative ack covers it. A separate
//! task reads the analyzer's control stream (acks, weight changes) and tells the
//! writer through [`AckState`]. When the connection ends, everything queued or
//! unacknowledged is handed back for another attempt elsewhere.
//!
//! Stalls: an analyzer is declared stalled when no ack has arrived for
//! `ack_timeout` while messages are unacknowledged *and* it has either never
//! acked or holds more unacked messages than the largest stride it ever acked
//! by. Seed analyzers ack every N messages, so up to N-1 can sit unacked for
//! as long as traffic is quiet: that tail is normal, not a stall. A write that
//! makes no progress for `ack_timeout` (the analyzer stopped reading) is a
//! stall too.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use logdist_router::{Envelope, HoldingQueue, PriorityQueues};
use logdist_wire::{AnalyzerFormat, Control, OutboundBatch};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::ack_state::AckState;
use super::directory::Directory;
use crate::shutdown::Shutdown;
use crate::stats::{Counter, DeliveryTally, Stats};
use crate::transport::WriteHalf;

/// Most bytes encoded into one write; enough to amortize the syscall, small
/// enough to keep a high-priority arrival from waiting long behind a batch.
const BATCH_BYTES: usize = 256 * 1024;
/// How long a failed session waits for its control reader to take in an ack
/// the analyzer sent just before it went (it is in the socket buffer already).
const FINAL_ACK_WAIT: Duration = Duration::from_millis(500);

/// Most buffers handed to one `writev` (Linux allows 1024).
const MAX_IOVECS: usize = 512;

/// Reads acks and weight updates until the analyzer goes away or misbehaves.
pub async fn read_control<R, D>(
    mut framed: tokio_util::codec::FramedRead<R, D>,
    id: Arc<str>,
    state: Arc<AckState>,
    directory: Arc<Directory>,
    hard_stop: CancellationToken,
) where
    R: tokio::io::AsyncRead + Unpin,
    D: Decoder<Item = Control>,
    D::Error: std::fmt::Display,
{
    let reason = loop {
        let control = tokio::select! {
            next = framed.next() => next,
            _ = hard_stop.cancelled() => break "shutdown".to_string(),
        };
        let result = match control {
            None => break "analyzer closed the connection".to_string(),
            Some(Err(err)) => break format!("bad control message: {err}"),
            Some(Ok(Control::SeedAck(low31))) => state.ack_seed(low31),
            Some(Ok(Control::Ack(total))) => state.ack_total(total),
            Some(Ok(Control::Weight(weight))) => {
                match directory.set_weight(&id, weight, "weight changed") {
                    Ok(()) => {
                        tracing::info!(analyzer = %id, weight, "analyzer changed its weight");
                        Ok(())
                    }
                    Err(err) => Err(format!("weight update refused: {err}")),
                }
            }
        };
        if let Err(reason) = result {
            break reason;
        }
    };
    state.close(reason);
}

/// The writer side of one analyzer connection.
pub struct AnalyzerSession {
    pub format: AnalyzerFormat,
    pub acks: bool,
    pub queues: Arc<PriorityQueues>,
    pub window_capacity: usize,
    pub ack_timeout: Duration,
    pub state: Arc<AckState>,
    /// This analyzer's delivery counter in the directory.
    pub delivered: Arc<Counter>,
    /// Cancelled when the analyzer is being retired (removed from the
    /// config): the session ends as soon as it has nothing queued or unacked.
    pub retiring: CancellationToken,
}

/// Why a session ended, and what it still held.
pub struct SessionEnd {
    pub reason: String,
    /// Whether the end was a failure (not a clean close or shutdown drain).
    pub failure: bool,
    /// Written to the analyzer but not acknowledged: these were tried.
    pub unacked: Vec<Envelope>,
    /// Still queued, never written.
    pub queued: Vec<Envelope>,
    pub delivered: u64,
}

impl AnalyzerSession {
    /// Writes until the connection fails, the analyzer leaves, or shutdown.
    /// Draining at shutdown waits for the `holding` queue too: what it holds
    /// may still come this way.
    pub async fn run(
        self,
        mut writer: WriteHalf,
        stats: &Stats,
        shutdown: &Shutdown,
        holding: Option<&HoldingQueue>,
    ) -> SessionEnd {
        let mut window = InFlight::default();
        // When the analyzer last showed progress on what it holds: an ack, or
        // the window filling from empty.
        let mut last_progress = Instant::now();
        let mut batch = OutboundBatch::new();
        let mut pending: Vec<Envelope> = Vec::new();

        let (reason, failure) = loop {
            let acked = self.state.acked.load(Ordering::Acquire);
            if window.release_to(acked, stats, &self.delivered) > 0 {
                last_progress = Instant::now();
            }
            if let Some(reason) = self.state.closed_reason() {
                break (reason, true);
            }
            if shutdown.hard_stop.is_cancelled() {
                break ("shutdown: grace period over".to_string(), false);
            }

            let room = self.window_capacity.saturating_sub(window.len());
            while pending.len() < room && batch.byte_len() < BATCH_BYTES {
                match self.queues.pop() {
                    Some(env) => {
                        batch.push(&env.message, self.format);
                        pending.push(env);
                    }
                    None => break,
                }
            }

            if pending.is_empty() {
                let idle = window.is_empty() && self.queues.is_empty();
                if self.retiring.is_cancelled() && idle {
                    break ("removed from the config: drained".to_string(), false);
                }
                if shutdown.drain.is_cancelled() && idle && holding.is_none_or(|h| h.is_empty()) {
                    break ("shutdown: drained".to_string(), false);
                }
                let stall_check = last_progress + self.ack_timeout;
                tokio::select! {
                    _ = self.queues.notified(), if room > 0 => {}
                    _ = self.state.changed.notified() => {}
                    _ = shutdown.drain.cancelled(), if !shutdown.drain.is_cancelled() => {}
                    _ = self.retiring.cancelled(), if !self.retiring.is_cancelled() => {}
                    _ = shutdown.hard_stop.cancelled() => {}
                    _ = tokio::time::sleep_until(stall_check), if !window.is_empty() => {
                        if let Some(reason) = self.stalled(window.len(), window.released) {
                            break (reason, true);
                        }
                        // A quiet tail: look again after another ack_timeout.
                        last_progress = Instant::now();
                    }
                }
                continue;
            }

            if window.is_empty() {
                last_progress = Instant::now();
            }
            let written_count = pending.len() as u64;
            self.state.sent.fetch_add(written_count, Ordering::AcqRel);
            let written = self.write_watched(&mut writer, &batch, shutdown).await;
            batch.clear();
            window.messages.extend(pending.drain(..));
            if let Err(err) = written {
                let failure = !shutdown.hard_stop.is_cancelled();
                break (format!("write failed: {err}"), failure);
            }
            if !self.acks {
                // Without acks, what is written counts as acknowledged.
                self.state.acked.fetch_add(written_count, Ordering::AcqRel);
            }
        };
        let _ = writer.shutdown().await;

        // An analyzer that acks and closes (a clean restart) can make a write
        // fail before the control reader has taken in that last ack, which is
        // already in the socket buffer. Give the reader a moment to finish,
        // then release whatever was acked: handing it back would deliver it twice.
        if failure && !shutdown.hard_stop.is_cancelled() {
            let _ = tokio::time::timeout(FINAL_ACK_WAIT, self.state.closing.cancelled()).await;
        }
        let acked = self.state.acked.load(Ordering::Acquire);
        window.release_to(acked, stats, &self.delivered);

        SessionEnd {
            reason,
            failure,
            unacked: window.messages.into(),
            queued: self.queues.close_and_drain(),
            delivered: window.released,
        }
    }

    /// Whether `unacked` messages without an ack for `ack_timeout` mean a
    /// stall rather than a quiet tail (see the module docs).
    fn stalled(&self, unacked: usize, acked: u64) -> Option<String> {
        let stride = self.state.max_stride.load(Ordering::Relaxed);
        let timeout = self.ack_timeout;
        if acked == 0 {
            Some(format!(
                "ack timeout: {unacked} messages unacknowledged for {timeout:?}, none ever acknowledged"
            ))
        } else if unacked as u64 > stride {
            Some(format!(
                "ack timeout: {unacked} messages unacknowledged for {timeout:?} (acks came every {stride} at most)"
            ))
        } else {
            None
        }
    }

    /// Writes the batch; gives up when the session is closing, at the end of
    /// the grace period, or when the analyzer has neither read enough to let
    /// the write finish nor acked anything for `ack_timeout`.
    async fn write_watched(
        &self,
        writer: &mut WriteHalf,
        batch: &OutboundBatch,
        shutdown: &Shutdown,
    ) -> io::Result<()> {
        let write = write_chunks(writer, batch.chunks());
        tokio::pin!(write);
        let mut acked = self.state.acked.load(Ordering::Acquire);
        loop {
            tokio::select! {
                written = &mut write => return written,
                _ = self.state.closing.cancelled() => {
                    return Err(io::Error::other("session closing"));
                }
                _ = shutdown.hard_stop.cancelled() => {
                    return Err(io::Error::other("shutdown: grace period over"));
                }
                _ = tokio::time::sleep(self.ack_timeout) => {
                    let now = self.state.acked.load(Ordering::Acquire);
                    if now == acked {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("analyzer read nothing and acked nothing for {:?}", self.ack_timeout),
                        ));
                    }
                    acked = now;
                }
            }
        }
    }
}

/// Messages written to the analyzer and not acknowledged yet, oldest first.
#[derive(Default)]
struct InFlight {
    messages: VecDeque<Envelope>,
    /// Messages acknowledged (delivered) so far: `messages` holds the ones
    /// sent after them.
    released: u64,
    latency: DeliveryTally,
}

impl InFlight {
    /// Releases the messages a cumulative ack of `acked` covers, counting them
    /// delivered (globally, per class with their latency, and for the analyzer);
    /// returns how many. This is where a delivered message is dropped, and with
    /// the last message of a read block the block's memory budget comes back.
    fn release_to(&mut self, acked: u64, stats: &Stats, analyzer: &Counter) -> u64 {
        let newly = acked - self.released;
        if newly == 0 {
            return 0;
        }
        let now = std::time::Instant::now();
        for env in self.messages.drain(..newly as usize) {
            self.latency
                .record(env.priority(), now.duration_since(env.arrived));
        }
        self.latency.flush(stats);
        self.released = acked;
        analyzer.add(newly);
        newly
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Writes every chunk, as few `writev` calls as the kernel allows, and
/// flushes (TLS holds back what the socket did not take; plain TCP holds
/// nothing).
async fn write_chunks(writer: &mut WriteHalf, chunks: &[Bytes]) -> io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < chunks.len() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (i, chunk) in chunks[index..].iter().take(MAX_IOVECS).enumerate() {
            let start = if i == 0 { offset } else { 0 };
            slices[count] = IoSlice::new(&chunk[start..]);
            count += 1;
        }
        let mut written = writer.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let left = chunks[index].len() - offset;
            if written >= left {
                written -= left;
                index += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    writer.flush().await
}
