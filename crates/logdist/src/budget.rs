//! The memory budget, `limits.max_buffered_bytes`: how many bytes of what
//! emitters sent logdist may hold at once. Read buffers (partial messages
//! included), inflated gzip buffers and every queued, held, in-flight or
//! dead-lettering message count, by the allocation they live in (see
//! `ingest::read_buffer` for why that is a whole read block, not a message's
//! length).
//!
//! Ingest [`charge`](MemoryBudget::charge)s an allocation before it reads into
//! it (or inflates into it) and waits while the budget is spent, so the
//! kernel's TCP window slows the emitter: backpressure, never a drop. A
//! [`Charge`] gives its bytes back when dropped, which for a read block is
//! when the last message sliced out of it leaves logdist's custody.
//!
//! # Never stuck
//!
//! Waiting is only safe while something else will free budget. Messages that
//! no connection holds any more ([`let_go`]) are freed by delivery, so while
//! any are charged a waiter waits for them (that is the backpressure a
//! stalled analyzer must cause). When none are, everything charged belongs to
//! connections, and those may themselves be waiting (each holding the start
//! of a frame it cannot finish): then one waiter at a time is let past the
//! limit (an *overdraft*), which is also how a frame larger than what is left,
//! or than the whole budget, gets through. The overdraft ends when that
//! charge is released. Idle connections give their read block back when a
//! waiter [`pressure`](MemoryBudget::pressure)s them.
//!
//! Hot path: one compare-and-swap per 64 KiB read block, nothing per message.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::stats::Counter;

/// The budget; shared by every emitter connection and HTTP ingest request.
pub struct MemoryBudget {
    limit: usize,
    /// Bytes charged now.
    used: CachePadded<AtomicUsize>,
    /// Of `used`, what no connection holds any more: only messages keep it,
    /// and delivery (or the dead-letter file) frees it.
    retired: AtomicUsize,
    /// Tasks in [`charge`](Self::charge)'s slow path.
    waiters: AtomicUsize,
    /// One charge past the limit at a time (see the module docs).
    overdraft: AtomicBool,
    /// Notified (all waiters) when bytes are released while someone waits.
    room: Notify,
    /// Notified when someone waits: idle connections give their block back.
    pressure: Notify,
    /// Times a charge had to wait.
    waits: Counter,
    /// Times a charge was let past the limit.
    overdrafts: Counter,
}

/// Bytes taken from a [`MemoryBudget`], given back on drop.
///
/// A read block's charge is shared (`Arc<Charge>`) by the connection reading
/// into it and by every message sliced out of it; the last one to go gives
/// the bytes back.
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
    /// Counted in the budget's `retired` (see [`let_go`]).
    retired: AtomicBool,
    /// This charge is the one overdraft.
    overdraft: bool,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: CachePadded::new(AtomicUsize::new(0)),
            retired: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            overdraft: AtomicBool::new(false),
            room: Notify::new(),
            pressure: Notify::new(),
            waits: Counter::default(),
            overdrafts: Counter::default(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now (the `buffered_bytes` gauge).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Of [`used`](Self::used), bytes only messages hold (delivery frees them).
    pub fn retired(&self) -> usize {
        self.retired.load(Ordering::Relaxed)
    }

    /// Charges that had to wait for room, so far.
    pub fn waits(&self) -> u64 {
        self.waits.get()
    }

    /// Charges let past the limit, so far.
    pub fn overdrafts(&self) -> u64 {
        self.overdrafts.get()
    }

    /// Charges `bytes` if they fit under the limit now.
    pub fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        // SeqCst: pairs with `release`, which writes `used` then reads `waiters`.
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used.saturating_add(bytes) > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(self.charged(bytes, false)),
                Err(now) => used = now,
            }
        }
    }

    /// Charges `bytes`, waiting as long as they do not fit (see the module
    /// docs for when one charge may go past the limit). If `give_up`
    /// completes first (shutdown's hard stop), charges them anyway: by then
    /// nothing is read any more, and what was read must still be routed.
    pub async fn charge(
        self: &Arc<Self>,
        bytes: usize,
        give_up: impl Future<Output = ()>,
    ) -> Charge {
        if let Some(charge) = self.try_charge(bytes) {
            return charge;
        }
        self.waits.add(1);
        let _waiting = Waiting::new(self);
        let mut give_up = std::pin::pin!(give_up);
        loop {
            // Created before the checks: catches every release after them.
            let room = self.room.notified();
            if let Some(charge) = self.try_charge(bytes).or_else(|| self.try_overdraft(bytes)) {
                return charge;
            }
            self.pressure.notify_waiters();
            tokio::select! {
                _ = room => {}
                _ = &mut give_up => return self.force(bytes),
            }
        }
    }

    /// Completes when some charge is waiting for room: an idle holder of
    /// budget should give it back. Create it before checking for idleness.
    pub fn pressure(&self) -> Notified<'_> {
        self.pressure.notified()
    }

    /// The one overdraft, if nothing would free budget by itself.
    fn try_overdraft(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        if self.retired.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if self.overdraft.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.overdrafts.add(1);
        Some(self.force_charged(bytes, true))
    }

    fn force(self: &Arc<Self>, bytes: usize) -> Charge {
        self.force_charged(bytes, false)
    }

    fn force_charged(self: &Arc<Self>, bytes: usize, overdraft: bool) -> Charge {
        self.used.fetch_add(bytes, Ordering::SeqCst);
        self.charged(bytes, overdraft)
    }

    fn charged(self: &Arc<Self>, bytes: usize, overdraft: bool) -> Charge {
        Charge {
            budget: self.clone(),
            bytes,
            retired: AtomicBool::new(false),
            overdraft,
        }
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }
}

/// Counts a task in the slow path while it lives.
struct Waiting<'a>(&'a MemoryBudget);

impl<'a> Waiting<'a> {
    fn new(budget: &'a MemoryBudget) -> Self {
        budget.waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(budget)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Charge {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back all but `bytes` (a reservation that turned out larger
    /// than what it was for).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        let freed = self.bytes - bytes;
        self.bytes = bytes;
        if *self.retired.get_mut() {
            self.budget.retired.fetch_sub(freed, Ordering::SeqCst);
        }
        self.budget.release(freed);
    }

    /// Marks the charge as held by messages only: delivery frees it.
    pub fn retire(&self) {
        if !self.retired.swap(true, Ordering::AcqRel) {
            self.budget.retired.fetch_add(self.bytes, Ordering::SeqCst);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let budget = &self.budget;
        if *self.retired.get_mut() {
            budget.retired.fetch_sub(self.bytes, Ordering::SeqCst);
        }
        if self.overdraft {
            budget.overdraft.store(false, Ordering::Release);
        }
        budget.release(self.bytes);
    }
}

/// The holder of a shared charge (a connection, for its read block) lets go
/// of it: given back now if nothing else holds it, else retired, to be given
/// back when the last message holding it is delivered or dead-lettered.
pub fn let_go(charge: Arc<Charge>) {
    // Only the holder makes new clones, so the count only falls meanwhile;
    // retiring first means the last drop, wherever it happens, undoes it.
    if Arc::strong_count(&charge) > 1 {
        charge.retire();
    }
    drop(charge);
}

/// Copies `parts` into one buffer charged to `budget` (waiting while it is
/// spent; charged anyway if `give_up` completes first) and returns them as
/// slices of it: the charge lasts until the last slice is dropped. For
/// messages that do not come from a read block: HTTP ingest, the backlog
/// read back from the spool.
pub async fn charged_copy<'a>(
    budget: &Arc<MemoryBudget>,
    parts: impl Iterator<Item = &'a [u8]> + Clone,
    give_up: impl Future<Output = ()>,
) -> Vec<Bytes> {
    let total = parts.clone().map(<[u8]>::len).sum();
    let charge = budget.charge(total, give_up).await;
    // Only the messages hold it: delivery frees it.
    charge.retire();
    let mut data = Vec::with_capacity(total);
    let mut spans = Vec::new();
    for part in parts {
        spans.push(data.len()..data.len() + part.len());
        data.extend_from_slice(part);
    }
    let data = Bytes::from_owner(Charged {
        data,
        _charge: charge,
    });
    spans.into_iter().map(|span| data.slice(span)).collect()
}

/// Bytes holding their charge on the budget.
struct Charged {
    data: Vec<u8>,
    _charge: Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charge")
            .field("bytes", &self.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn never() -> std::future::Pending<()> {
        std::future::pending()
    }

    #[test]
    fn charges_fit_under_the_limit_and_come_back_on_drop() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_charge(60).unwrap();
        assert!(budget.try_charge(41).is_none());
        let b = budget.try_charge(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        let mut b = b;
        b.shrink_to(10);
        assert_eq!(budget.used(), 10);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_room_when_a_message_is_delivered() {
        let budget = MemoryBudget::new(100);
        // A read block: the connection lets go of it, its messages stay queued.
        let block = Arc::new(budget.try_charge(80).unwrap());
        let message = block.clone();
        let_go(block);
        assert_eq!((budget.used(), budget.retired()), (80, 80));

        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.charge(50, never()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "retired bytes will be freed: wait for them"
        );
        assert_eq!(budget.waits(), 1);
        drop(message); // delivered
        let charge = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (budget.used(), budget.retired(), charge.bytes()),
            (50, 0, 50)
        );
        assert_eq!(budget.overdrafts(), 0);
    }

    #[tokio::test]
    async fn one_overdraft_at_a_time_when_only_connections_hold_budget() {
        let budget = MemoryBudget::new(100);
        // Connections hold everything (say, partial frames): nothing would
        // free it, so waiting would be forever.
        let held = budget.try_charge(90).unwrap();
        let big = tokio::time::timeout(Duration::from_secs(5), budget.charge(500, never()))
            .await
            .expect("a charge larger than the budget gets through");
        assert_eq!((budget.used(), budget.overdrafts()), (590, 1));
        // The next one waits for the overdraft to end.
        let next = tokio::spawn({
            let budget = budget.clone();
            async move { budget.charge(20, never()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!next.is_finished());
        drop(big);
        let next = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            budget.used(),
            110,
            "again past the limit, as the next overdraft"
        );
        assert_eq!(budget.overdrafts(), 2);
        drop((held, next));
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn waiters_press_idle_holders_and_give_up_at_shutdown() {
        let budget = MemoryBudget::new(100);
        let queued = budget.try_charge(100).unwrap();
        queued.retire();
        let pressed = budget.pressure();
        let stop = tokio_util::sync::CancellationToken::new();
        let waiter = tokio::spawn({
            let (budget, stop) = (budget.clone(), stop.clone());
            async move { budget.charge(10, stop.cancelled_owned()).await }
        });
        tokio::time::timeout(Duration::from_secs(5), pressed)
            .await
            .expect("a waiting charge asks idle holders to give back");
        stop.cancel();
        let forced = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(budget.used(), 110);
        drop((forced, queued));
        assert_eq!((budget.used(), budget.retired()), (0, 0));
    }

    #[test]
    fn letting_go_of_an_unshared_charge_frees_it_at_once() {
        let budget = MemoryBudget::new(100);
        let_go(Arc::new(budget.try_charge(30).unwrap()));
        assert_eq!((budget.used(), budget.retired()), (0, 0));
    }
}
