//! One connected analyzer: its queues, its writer, its acks.
//!
//! The writer (this task) pops messages in strict priority order, encodes a batch
//! and writes it with one vectored write, then keeps every sent message in the
//! in-flight window until the analyzer's cumulative ack covers it. A separate
//! task reads the analyzer's control stream (acks, weight changes) and tells the
//! writer through [`AckState`]. When the connection ends, everything queued or
//! unacknowledged is handed back for another attempt elsewhere.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use logdist_router::{Envelope, PriorityQueues};
use logdist_wire::{AnalyzerFormat, Control, OutboundBatch};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::codec::Decoder;

use crate::server::Shared;

/// Most bytes encoded into one write; enough to amortize the syscall, small
/// enough to keep a high-priority arrival from waiting long behind a batch.
const BATCH_BYTES: usize = 256 * 1024;
/// Most buffers handed to one `writev` (Linux allows 1024).
const MAX_IOVECS: usize = 512;

/// What the control reader tells the writer.
#[derive(Default)]
pub struct AckState {
    /// Messages handed to the socket so far (counted before the write, so an
    /// ack racing the write's completion is never taken for a lie).
    sent: AtomicU64,
    /// Messages the analyzer has acknowledged so far.
    acked: AtomicU64,
    /// Why the control stream ended, once it has.
    closed: Mutex<Option<String>>,
    changed: Notify,
}

impl AckState {
    fn close(&self, reason: String) {
        self.closed.lock().get_or_insert(reason);
        self.changed.notify_one();
    }

    fn closed_reason(&self) -> Option<String> {
        self.closed.lock().clone()
    }

    /// Applies a cumulative ack of `total` messages.
    fn ack_total(&self, total: u64) -> Result<(), String> {
        let sent = self.sent.load(Ordering::Acquire);
        let acked = self.acked.load(Ordering::Acquire);
        if total > sent {
            return Err(format!(
                "acknowledged {total} messages but only {sent} were sent"
            ));
        }
        if total < acked {
            return Err(format!("ack went backwards from {acked} to {total}"));
        }
        self.acked.store(total, Ordering::Release);
        self.changed.notify_one();
        Ok(())
    }

    /// Applies a seed ack, which carries the cumulative count mod 2^31.
    fn ack_seed(&self, low31: u32) -> Result<(), String> {
        let acked = self.acked.load(Ordering::Acquire);
        let delta = (low31.wrapping_sub(acked as u32)) & 0x7FFF_FFFF;
        self.ack_total(acked + u64::from(delta))
    }
}

/// Reads acks and weight updates until the analyzer goes away or misbehaves.
pub async fn read_control<R, D>(
    mut framed: tokio_util::codec::FramedRead<R, D>,
    id: Arc<str>,
    state: Arc<AckState>,
    shared: Arc<Shared>,
) where
    R: tokio::io::AsyncRead + Unpin,
    D: Decoder<Item = Control>,
    D::Error: std::fmt::Display,
{
    let reason = loop {
        let control = tokio::select! {
            next = framed.next() => next,
            _ = shared.shutdown.hard_stop.cancelled() => break "shutdown".to_string(),
        };
        let result = match control {
            None => break "analyzer closed the connection".to_string(),
            Some(Err(err)) => break format!("bad control message: {err}"),
            Some(Ok(Control::SeedAck(low31))) => state.ack_seed(low31),
            Some(Ok(Control::Ack(total))) => state.ack_total(total),
            Some(Ok(Control::Weight(weight))) => match shared.router.set_weight(&id, weight) {
                Ok(()) => {
                    tracing::info!(analyzer = %id, weight, "analyzer changed its weight");
                    Ok(())
                }
                Err(err) => Err(format!("weight update refused: {err}")),
            },
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
    pub state: Arc<AckState>,
}

/// Why a session ended, and what it still held.
pub struct SessionEnd {
    pub reason: String,
    /// Queued or unacknowledged messages, for redelivery.
    pub held: Vec<Envelope>,
    pub delivered: u64,
}

impl AnalyzerSession {
    /// Writes until the connection fails, the analyzer leaves, or shutdown.
    pub async fn run(self, mut writer: OwnedWriteHalf, shared: &Shared) -> SessionEnd {
        let mut window: VecDeque<Envelope> = VecDeque::new();
        // Acks seen so far; `window` holds messages `released..sent`.
        let mut released: u64 = 0;
        let mut delivered: u64 = 0;
        let mut batch = OutboundBatch::new();
        let mut pending: Vec<Envelope> = Vec::new();
        let shutdown = &shared.shutdown;

        let reason = loop {
            let acked = self.state.acked.load(Ordering::Acquire);
            let newly = acked - released;
            if newly > 0 {
                window.drain(..newly as usize);
                released = acked;
                delivered += newly;
                shared.stats.delivered.add(newly);
            }
            if let Some(reason) = self.state.closed_reason() {
                break reason;
            }
            if shutdown.hard_stop.is_cancelled() {
                break "shutdown: grace period over".to_string();
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
                if shutdown.drain.is_cancelled() && window.is_empty() && self.queues.is_empty() {
                    break "shutdown: drained".to_string();
                }
                tokio::select! {
                    _ = self.queues.notified(), if room > 0 => {}
                    _ = self.state.changed.notified() => {}
                    _ = shutdown.drain.cancelled(), if !shutdown.drain.is_cancelled() => {}
                    _ = shutdown.hard_stop.cancelled() => {}
                }
                continue;
            }

            self.state
                .sent
                .fetch_add(pending.len() as u64, Ordering::AcqRel);
            let written = tokio::select! {
                written = write_chunks(&mut writer, batch.chunks()) => written,
                _ = shutdown.hard_stop.cancelled() => Err(io::Error::other("shutdown: grace period over")),
            };
            batch.clear();
            if let Err(err) = written {
                window.extend(pending.drain(..));
                break format!("write failed: {err}");
            }
            if self.acks {
                window.extend(pending.drain(..));
            } else {
                delivered += pending.len() as u64;
                shared.stats.delivered.add(pending.len() as u64);
                pending.clear();
                // Without acks, everything written counts as acknowledged.
                self.state
                    .acked
                    .store(self.state.sent.load(Ordering::Acquire), Ordering::Release);
                released = self.state.acked.load(Ordering::Acquire);
            }
        };
        let _ = writer.shutdown().await;

        // Unacknowledged messages went out before anything still queued, so
        // keep them first within each priority.
        let mut held: Vec<Envelope> = window.into();
        held.extend(self.queues.close_and_drain());
        held.sort_by_key(|env| env.priority());
        SessionEnd {
            reason,
            held,
            delivered,
        }
    }
}

/// Writes every chunk, as few `writev` calls as the kernel allows.
async fn write_chunks(writer: &mut OwnedWriteHalf, chunks: &[Bytes]) -> io::Result<()> {
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
    Ok(())
}
