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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use logdist_router::{Envelope, HoldingQueue, PriorityQueues};
use logdist_wire::{AnalyzerFormat, Control, ControlError, OutboundBatch};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::ack_state::AckState;
use super::directory::Directory;
use super::drain::DrainWatch;
use crate::custody::Custody;
use crate::refusal::RefusalReason;
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

/// Weight changes from one connection rebuild the routing table at most this
/// often; within the window the last value wins, applied when it ends.
pub const WEIGHT_COALESCE: Duration = Duration::from_millis(100);
/// One connection's weight changes are logged at info at most this often;
/// the next line says how many changes there were in between.
pub const WEIGHT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Control messages taken from the read buffer in one go.
const CONTROL_BATCH: usize = 1024;

/// Reads acks and weight updates until the analyzer goes away, misbehaves,
/// or `done` is cancelled (its session is over). Weight updates are
/// coalesced ([`WEIGHT_COALESCE`]) and their log lines rate-limited
/// ([`WEIGHT_LOG_EVERY`]): an analyzer flooding weight words costs one
/// rebuild per window and a log line per 10 s, not one of each per word. A
/// change still pending when the reader stops is applied then.
pub async fn read_control<R, D>(
    mut framed: tokio_util::codec::FramedRead<R, D>,
    id: Arc<str>,
    state: Arc<AckState>,
    directory: Arc<Directory>,
    stats: Arc<Stats>,
    hard_stop: CancellationToken,
    done: CancellationToken,
) where
    R: tokio::io::AsyncRead + Unpin,
    D: Decoder<Item = Control, Error = ControlError>,
{
    let mut weights = WeightChanges::new(id, directory);
    let reason = 'read: loop {
        let apply_at = weights.apply_at();
        let log_at = weights.log_at();
        let mut control = tokio::select! {
            biased;
            _ = hard_stop.cancelled() => break Some("shutdown".to_string()),
            _ = done.cancelled() => break None,
            _ = tokio::time::sleep_until(apply_at.unwrap_or_else(Instant::now)), if apply_at.is_some() => {
                if let Err(reason) = weights.apply_pending() {
                    break Some(reason);
                }
                continue;
            }
            _ = tokio::time::sleep_until(log_at.unwrap_or_else(Instant::now)), if log_at.is_some() => {
                weights.log_summary();
                continue;
            }
            next = framed.next() => next,
        };
        // What is already buffered is taken without going back to the
        // select (no timers or tokens per word), a bounded number at a time.
        let mut taken = 0;
        while taken < CONTROL_BATCH {
            taken += 1;
            let result = match control {
                None => break 'read Some("analyzer closed the connection".to_string()),
                Some(Err(err)) => {
                    if matches!(err, ControlError::InvalidWeight(_)) {
                        weights.refuse(&stats, &err.to_string());
                    }
                    break 'read Some(format!("bad control message: {err}"));
                }
                Some(Ok(Control::SeedAck(low31))) => state.ack_seed(low31),
                Some(Ok(Control::Ack(total))) => state.ack_total(total),
                Some(Ok(Control::Weight(weight))) => match weights.check(weight) {
                    Ok(()) => weights.offer(weight),
                    Err(reason) => {
                        weights.refuse(&stats, &reason);
                        Err(reason)
                    }
                },
            };
            if let Err(reason) = result {
                break 'read Some(reason);
            }
            match framed.next().now_or_never() {
                Some(next) => control = next,
                None => break,
            }
        }
        if taken == CONTROL_BATCH {
            // A flood of control messages must not hold this worker thread.
            tokio::task::yield_now().await;
        }
    };
    // The last word of an analyzer that stops (or is stopped) still counts:
    // the directory remembers a static analyzer's weight for its next connection.
    let flushed = weights.apply_pending();
    weights.log_unlogged();
    if let Some(reason) = reason {
        state.close(reason);
    } else if let Err(reason) = flushed {
        state.close(reason);
    }
}

/// One connection's weight updates: applied at most once per
/// [`WEIGHT_COALESCE`], logged at info at most once per [`WEIGHT_LOG_EVERY`].
struct WeightChanges {
    id: Arc<str>,
    directory: Arc<Directory>,
    /// The latest update not applied yet (the window is still open).
    pending: Option<f64>,
    /// When an update last rebuilt the routing table.
    applied_at: Option<Instant>,
    /// Updates received since the last info line, and the weight in force.
    unlogged: u64,
    weight: f64,
    /// Until when updates are not logged at info.
    quiet_until: Option<Instant>,
}

impl WeightChanges {
    fn new(id: Arc<str>, directory: Arc<Directory>) -> Self {
        WeightChanges {
            id,
            directory,
            pending: None,
            applied_at: None,
            unlogged: 0,
            weight: 0.0,
            quiet_until: None,
        }
    }

    /// An update from the analyzer: applied now if the last one was applied
    /// at least [`WEIGHT_COALESCE`] ago, else kept (replacing any kept one).
    fn offer(&mut self, weight: f64) -> Result<(), String> {
        self.unlogged += 1;
        let now = Instant::now();
        match self.applied_at {
            Some(at) if now < at + WEIGHT_COALESCE => {
                self.pending = Some(weight);
                Ok(())
            }
            _ => self.apply(weight, now),
        }
    }

    /// Refuses a weight out of bounds (not finite, negative, above
    /// `analyzers.max_weight`) as soon as it arrives, before coalescing: a
    /// protocol error like any other, which closes the connection.
    fn check(&self, weight: f64) -> Result<(), String> {
        let max = self.directory.max_weight();
        if weight.is_finite() && (0.0..=max).contains(&weight) {
            Ok(())
        } else {
            Err(format!(
                "weight update refused: {weight} is not a finite number in 0..={max} (analyzers.max_weight)"
            ))
        }
    }

    /// Counts a refused weight update as an analyzer refusal (`bad_weight`).
    fn refuse(&self, stats: &Stats, reason: &str) {
        stats.refuse_analyzer(RefusalReason::BadWeight, &self.id, reason);
    }

    /// When the kept update is due.
    fn apply_at(&self) -> Option<Instant> {
        self.pending?;
        self.applied_at.map(|at| at + WEIGHT_COALESCE)
    }

    /// When updates that were not logged are summed up in one line.
    fn log_at(&self) -> Option<Instant> {
        if self.unlogged == 0 || self.pending.is_some() {
            return None;
        }
        self.quiet_until
    }

    fn apply_pending(&mut self) -> Result<(), String> {
        match self.pending.take() {
            Some(weight) => self.apply(weight, Instant::now()),
            None => Ok(()),
        }
    }

    fn apply(&mut self, weight: f64, now: Instant) -> Result<(), String> {
        self.pending = None;
        self.applied_at = Some(now);
        self.directory
            .set_weight(&self.id, weight, "weight changed")
            .map_err(|err| format!("weight update refused: {err}"))?;
        self.weight = weight;
        if self.quiet_until.is_none_or(|until| now >= until) {
            self.log(now);
        } else {
            tracing::debug!(analyzer = %self.id, weight, "analyzer changed its weight");
        }
        Ok(())
    }

    /// Logs the updates not logged yet, if the quiet period is over.
    fn log_summary(&mut self) {
        let now = Instant::now();
        if self.unlogged > 0 && self.quiet_until.is_none_or(|until| now >= until) {
            self.log(now);
        }
    }

    /// Logs the updates not logged yet, quiet period or not (the reader stops).
    fn log_unlogged(&mut self) {
        if self.unlogged > 0 {
            self.log(Instant::now());
        }
    }

    fn log(&mut self, now: Instant) {
        let (weight, updates) = (self.weight, self.unlogged);
        if updates <= 1 {
            tracing::info!(analyzer = %self.id, weight, "analyzer changed its weight");
        } else {
            tracing::info!(
                analyzer = %self.id, weight, updates,
                "analyzer changed its weight {updates} times since the last such line \
                 (applied at most every {WEIGHT_COALESCE:?}, logged at most every {WEIGHT_LOG_EVERY:?})"
            );
        }
        self.unlogged = 0;
        self.quiet_until = Some(now + WEIGHT_LOG_EVERY);
    }
}

/// The writer side of one analyzer connection.
pub struct AnalyzerSession {
    pub id: Arc<str>,
    /// Where the other sessions are, for the drain at shutdown.
    pub directory: Arc<Directory>,
    pub drain: Arc<DrainWatch>,
    pub format: AnalyzerFormat,
    pub acks: bool,
    pub queues: Arc<PriorityQueues>,
    pub window_capacity: usize,
    pub ack_timeout: Duration,
    /// How long to wait, once a message arrives in empty queues, for more
    /// to write with it (zero: write at once).
    pub write_coalesce: Duration,
    pub state: Arc<AckState>,
    /// This analyzer's delivery counter in the directory.
    pub delivered: Arc<Counter>,
    /// Cancelled when the analyzer is being retired (removed from the
    /// config): the session ends as soon as it has nothing queued or unacked.
    pub retiring: CancellationToken,
    /// Told which messages the analyzer acknowledged.
    pub custody: Custody,
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
        // When an ack last released messages (or the session started).
        let mut last_ack = Instant::now();
        let mut batch = OutboundBatch::new();
        let mut pending: Vec<Envelope> = Vec::new();
        let alarm = Alarm::watch(shutdown, &self.retiring, &self.state);

        let (reason, failure) = loop {
            let acked = self.state.acked.load(Ordering::Acquire);
            if window.release_to(acked, stats, &self.delivered, &self.custody) > 0 {
                last_ack = Instant::now();
            }
            if let Some(reason) = self.state.closed_reason() {
                break (reason, true);
            }
            let alarmed = alarm.raised();
            if alarmed && shutdown.hard_stop.is_cancelled() {
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

            if pending.is_empty() && !alarmed {
                // The common wait: for messages or acks. The tokens below
                // are watched by `alarm`, which wakes this wait through
                // `state.changed`, so they cost nothing per turn here.
                let stall_at = self.stall_at(&window, last_ack);
                tokio::select! {
                    _ = self.queues.notified(), if room > 0 => self.gather().await,
                    _ = self.state.changed.notified() => {}
                    _ = tokio::time::sleep_until(stall_at.unwrap_or_else(Instant::now)), if stall_at.is_some() => {
                        break (self.stall_reason(window.len(), window.released), true);
                    }
                }
                continue;
            }
            if pending.is_empty() {
                let idle = window.is_empty() && self.queues.is_empty();
                if self.retiring.is_cancelled() && idle {
                    break ("removed from the config: drained".to_string(), false);
                }
                // Created before the checks it is about, so no change is missed.
                let drain_changed = self.drain.changed();
                let draining = shutdown.drain.is_cancelled() && idle;
                if draining && self.drained(holding) {
                    break ("shutdown: drained".to_string(), false);
                }
                let stall_at = self.stall_at(&window, last_ack);
                tokio::select! {
                    _ = self.queues.notified(), if room > 0 => {}
                    _ = self.state.changed.notified() => {}
                    _ = shutdown.drain.cancelled(), if !shutdown.drain.is_cancelled() => {}
                    _ = self.retiring.cancelled(), if !self.retiring.is_cancelled() => {}
                    _ = shutdown.hard_stop.cancelled() => {}
                    _ = drain_changed, if draining => {}
                    _ = tokio::time::sleep_until(stall_at.unwrap_or_else(Instant::now)), if stall_at.is_some() => {
                        break (self.stall_reason(window.len(), window.released), true);
                    }
                }
                continue;
            }

            let stall_at = self.stall_at(&window, last_ack);
            let written_count = pending.len() as u64;
            self.state.sent.fetch_add(written_count, Ordering::AcqRel);
            let write_started = Instant::now();
            let written = self
                .write_watched(&mut writer, &batch, shutdown, stall_at)
                .await;
            batch.clear();
            window.push_batch(pending.drain(..), write_started);
            if let Err(err) = written {
                let failure = !shutdown.hard_stop.is_cancelled();
                // A write cut short because the session is closing: the
                // reason it is closing (a timed-out connection, ...) says more.
                let reason = self
                    .state
                    .closed_reason()
                    .unwrap_or_else(|| format!("write failed: {err}"));
                break (reason, failure);
            }
            if !self.acks {
                // Without acks, what is written counts as acknowledged.
                self.state.acked.fetch_add(written_count, Ordering::AcqRel);
            }
        };
        // A TLS close_notify is a write: bounded, for an analyzer that reads nothing.
        let _ = tokio::time::timeout(FINAL_ACK_WAIT, writer.shutdown()).await;

        // An analyzer that acks and closes (a clean restart) can make a write
        // fail before the control reader has taken in that last ack, which is
        // already in the socket buffer. Give the reader a moment to finish,
        // then release whatever was acked: handing it back would deliver it twice.
        if failure && !shutdown.hard_stop.is_cancelled() {
            let _ = tokio::time::timeout(FINAL_ACK_WAIT, self.state.closing.cancelled()).await;
        }
        let acked = self.state.acked.load(Ordering::Acquire);
        window.release_to(acked, stats, &self.delivered, &self.custody);

        SessionEnd {
            reason,
            failure,
            unacked: window.messages.into(),
            queued: self.queues.close_and_drain(),
            delivered: window.released,
        }
    }

    /// Gives what arrives right after a message that found the queues empty
    /// a chance to go out in the same write. With `write_coalesce`, waits
    /// that long (an ack or a close ends the wait early). Without, lets the
    /// other tasks ready on this worker run first: reads from several
    /// emitters that became ready together then make one write, not one each,
    /// at no cost in latency.
    async fn gather(&self) {
        if self.write_coalesce.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(self.write_coalesce) => {}
                _ = self.state.changed.notified() => {}
            }
        }
    }

    /// At shutdown, with nothing queued or unacknowledged here: whether
    /// nothing can come this way any more. Held messages, messages being
    /// rerouted, and messages other analyzers hold (their connection may yet
    /// fail and hand them back) could.
    fn drained(&self, holding: Option<&HoldingQueue>) -> bool {
        holding.is_none_or(|h| h.is_empty())
            && self.drain.rerouting() == 0
            && !self.directory.holds_messages_elsewhere(&self.id)
    }

    /// When the messages in `window` amount to a stall if no ack comes
    /// first (see the module docs): `ack_timeout` after the later of the last
    /// ack and the sending of the first message beyond the analyzer's usual
    /// ack stride (any message, if it never acked). `None` while the window
    /// is empty or holds no more than a quiet tail. Measured from when that
    /// message went out, not from when the session last looked, so a stall
    /// is declared `ack_timeout` after it began, not up to twice that.
    fn stall_at(&self, window: &InFlight, last_ack: Instant) -> Option<Instant> {
        let stride = self.state.max_stride.load(Ordering::Relaxed);
        let tolerated = if window.released == 0 { 0 } else { stride };
        let sent = window.sent_after(tolerated)?;
        Some(sent.max(last_ack) + self.ack_timeout)
    }

    /// Why a session with `unacked` messages (`acked` acknowledged so far)
    /// is declared stalled.
    fn stall_reason(&self, unacked: usize, acked: u64) -> String {
        let stride = self.state.max_stride.load(Ordering::Relaxed);
        let timeout = self.ack_timeout;
        if acked == 0 {
            format!(
                "ack timeout: {unacked} messages unacknowledged for {timeout:?}, none ever acknowledged"
            )
        } else {
            format!(
                "ack timeout: {unacked} messages unacknowledged for {timeout:?} (acks came every {stride} at most)"
            )
        }
    }

    /// Writes the batch; gives up when the session is closing, at the end of
    /// the grace period, or when the analyzer has neither read enough to let
    /// the write finish nor acked anything for `ack_timeout`, or by
    /// `stall_at` (what it held before this batch is a stall by then) if no
    /// ack came in the meantime.
    async fn write_watched(
        &self,
        writer: &mut WriteHalf,
        batch: &OutboundBatch,
        shutdown: &Shutdown,
        stall_at: Option<Instant>,
    ) -> io::Result<()> {
        let write = write_chunks(writer, batch.chunks());
        tokio::pin!(write);
        // Most writes fit in the socket buffer and finish on the first poll:
        // those need no timer and no cancellation watch.
        if let Some(written) = (&mut write).now_or_never() {
            return written;
        }
        let mut acked = self.state.acked.load(Ordering::Acquire);
        let mut deadline = Instant::now() + self.ack_timeout;
        if let Some(stall_at) = stall_at {
            deadline = deadline.min(stall_at);
        }
        loop {
            tokio::select! {
                written = &mut write => return written,
                _ = self.state.closing.cancelled() => {
                    return Err(io::Error::other("session closing"));
                }
                _ = shutdown.hard_stop.cancelled() => {
                    return Err(io::Error::other("shutdown: grace period over"));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = self.state.acked.load(Ordering::Acquire);
                    if now == acked {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("analyzer read nothing and acked nothing for {:?}", self.ack_timeout),
                        ));
                    }
                    acked = now;
                    deadline = Instant::now() + self.ack_timeout;
                }
            }
        }
    }
}

/// Whether shutdown has begun or the analyzer is being retired, kept in a
/// flag by a small task so that the writer's every turn reads one atomic
/// instead of registering with three cancellation tokens. Raising it wakes
/// the writer through `state.changed`. The task ends with the session.
struct Alarm {
    raised: Arc<AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Alarm {
    fn watch(shutdown: &Shutdown, retiring: &CancellationToken, state: &Arc<AckState>) -> Self {
        let raised = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn({
            let (drain, hard_stop) = (shutdown.drain.clone(), shutdown.hard_stop.clone());
            let (retiring, state, raised) = (retiring.clone(), state.clone(), raised.clone());
            async move {
                tokio::select! {
                    _ = drain.cancelled() => {}
                    _ = hard_stop.cancelled() => {}
                    _ = retiring.cancelled() => {}
                }
                raised.store(true, Ordering::Release);
                state.changed.notify_one();
            }
        });
        Alarm { raised, watcher }
    }

    fn raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Messages written to the analyzer and not acknowledged yet, oldest first.
#[derive(Default)]
struct InFlight {
    messages: VecDeque<Envelope>,
    /// Per batch not wholly acknowledged: the count of messages sent on the
    /// connection once it was written, and when its write began.
    batches: VecDeque<(u64, Instant)>,
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
    fn release_to(
        &mut self,
        acked: u64,
        stats: &Stats,
        analyzer: &Counter,
        custody: &Custody,
    ) -> u64 {
        let newly = acked - self.released;
        if newly == 0 {
            return 0;
        }
        let now = std::time::Instant::now();
        let released = self.messages.range(..newly as usize);
        for env in released.clone() {
            self.latency
                .record(env.priority(), now.duration_since(env.arrived()));
        }
        custody.done(released);
        self.messages.drain(..newly as usize);
        self.latency.flush(stats);
        self.released = acked;
        while self.batches.front().is_some_and(|(end, _)| *end <= acked) {
            self.batches.pop_front();
        }
        analyzer.add(newly);
        newly
    }

    /// Adds a batch whose write began at `at`.
    fn push_batch(&mut self, batch: impl Iterator<Item = Envelope>, at: Instant) {
        self.messages.extend(batch);
        let end = self.released + self.messages.len() as u64;
        if self.batches.back().is_none_or(|(last, _)| *last < end) {
            self.batches.push_back((end, at));
        }
    }

    /// When the unacknowledged message after the oldest `skip` ones was sent;
    /// `None` if there are no more than `skip`.
    fn sent_after(&self, skip: u64) -> Option<Instant> {
        if self.messages.len() as u64 <= skip {
            return None;
        }
        let index = self.released + skip;
        self.batches
            .iter()
            .find(|(end, _)| *end > index)
            .map(|(_, at)| *at)
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
