//! What an analyzer's control reader tells its writer: acks, and why the
//! session must end. Shared by the two tasks of one analyzer connection and
//! read by the directory for its in-flight gauge.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the control reader tells the writer.
pub struct AckState {
    /// Analyzers that said `acks: false` get no window; their acks are ignored.
    pub(super) acks: bool,
    /// Messages handed to the socket so far (counted before the write, so an
    /// ack racing the write's completion is never taken for a lie).
    pub(super) sent: AtomicU64,
    /// Messages the analyzer has acknowledged so far.
    pub(super) acked: AtomicU64,
    /// The largest number of messages one ack has covered: the analyzer's
    /// ack stride, as far as it has shown it.
    pub(super) max_stride: AtomicU64,
    /// Why the session must end, once it must.
    closed: Mutex<Option<String>>,
    /// Set with `closed`: the writer looks at it on every turn, without the lock.
    is_closed: AtomicBool,
    /// Cancelled together with `closed`, so even a blocked write stops.
    pub(super) closing: CancellationToken,
    pub(super) changed: Notify,
}

impl AckState {
    pub fn new(acks: bool) -> Self {
        AckState {
            acks,
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            max_stride: AtomicU64::new(0),
            closed: Mutex::new(None),
            is_closed: AtomicBool::new(false),
            closing: CancellationToken::new(),
            changed: Notify::new(),
        }
    }

    /// Ends the session (first reason wins).
    pub fn close(&self, reason: String) {
        self.closed.lock().get_or_insert(reason);
        self.is_closed.store(true, Ordering::Release);
        self.closing.cancel();
        self.changed.notify_one();
    }

    pub(super) fn closed_reason(&self) -> Option<String> {
        if !self.is_closed.load(Ordering::Acquire) {
            return None;
        }
        self.closed.lock().clone()
    }

    /// Messages written to the analyzer and not acknowledged yet.
    pub fn in_flight(&self) -> u64 {
        let acked = self.acked.load(Ordering::Acquire);
        self.sent.load(Ordering::Acquire).saturating_sub(acked)
    }

    /// Applies a cumulative ack of `total` messages.
    pub(super) fn ack_total(&self, total: u64) -> Result<(), String> {
        if !self.acks {
            return Ok(());
        }
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
        self.max_stride.fetch_max(total - acked, Ordering::Relaxed);
        self.acked.store(total, Ordering::Release);
        self.changed.notify_one();
        Ok(())
    }

    /// Applies a seed ack, which carries the cumulative count mod 2^31.
    pub(super) fn ack_seed(&self, low31: u32) -> Result<(), String> {
        let acked = self.acked.load(Ordering::Acquire);
        let delta = (low31.wrapping_sub(acked as u32)) & 0x7FFF_FFFF;
        self.ack_total(acked + u64::from(delta))
    }
}
