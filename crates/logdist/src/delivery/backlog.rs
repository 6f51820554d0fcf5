//! Disk mode's backlog: messages that are in the spool but not in memory.
//!
//! In disk mode a message with no room in memory (every analyzer full, or
//! none connected and the holding queue full) does not make its emitter wait:
//! it is already in the spool, so only its record id and priority are kept
//! here, 8 bytes a message, and the emitter reads on. The spool, bounded by
//! `durability.max_bytes`, is then what slows emitters. Messages recovered
//! from the spool at start come here too.
//!
//! The [`feed`] task reads the most urgent records back from the spool, a
//! batch at a time, and routes them as an emitter would, waiting for room:
//! the backlog drains in priority order (first in, first out within a
//! level), interleaved by priority with new traffic in the analyzers' queues.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use logdist_router::{Cursor, Envelope, Router};
use logdist_spool::{RecordId, Spool};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::budget::{MemoryBudget, charged_copy};
use crate::custody::{is_whole, spooled, to_message};
use crate::stats::{Counter, Stats};

/// Records read back and routed at a time.
const FEED_BATCH: usize = 256;

/// Record ids by priority level.
pub struct Backlog {
    levels: Mutex<Box<[VecDeque<RecordId>; 256]>>,
    len: AtomicU64,
    arrivals: Notify,
    /// Records that could not be read back (each logged); they stay in the
    /// spool for the next start.
    pub read_errors: Counter,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            levels: Mutex::new(Box::new(std::array::from_fn(|_| VecDeque::new()))),
            len: AtomicU64::new(0),
            arrivals: Notify::new(),
            read_errors: Counter::default(),
        }
    }
}

impl Backlog {
    /// Messages waiting in the backlog.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&self, id: RecordId, priority: u8) {
        self.levels.lock()[usize::from(priority)].push_back(id);
        self.len.fetch_add(1, Ordering::Relaxed);
        self.arrivals.notify_one();
    }

    /// Adds records in id order (recovery).
    pub fn extend(&self, records: &[(RecordId, u8)]) {
        let mut levels = self.levels.lock();
        for &(id, priority) in records {
            levels[usize::from(priority)].push_back(id);
        }
        drop(levels);
        self.len.fetch_add(records.len() as u64, Ordering::Relaxed);
        self.arrivals.notify_one();
    }

    /// Takes up to `max` of the most urgent records, most urgent first.
    fn pop_batch(&self, max: usize) -> Vec<(RecordId, u8)> {
        let mut levels = self.levels.lock();
        let mut batch = Vec::new();
        for (priority, level) in levels.iter_mut().enumerate() {
            while batch.len() < max
                && let Some(id) = level.pop_front()
            {
                batch.push((id, priority as u8));
            }
            if batch.len() == max {
                break;
            }
        }
        drop(levels);
        self.len.fetch_sub(batch.len() as u64, Ordering::Relaxed);
        batch
    }

    /// Puts back records taken and not routed, at the front of their levels.
    fn put_back(&self, records: &[(RecordId, u8)]) {
        let mut levels = self.levels.lock();
        for &(id, priority) in records.iter().rev() {
            levels[usize::from(priority)].push_front(id);
        }
        drop(levels);
        self.len.fetch_add(records.len() as u64, Ordering::Relaxed);
    }
}

/// What [`feed`] needs.
pub struct Feeder {
    pub backlog: Arc<Backlog>,
    pub spool: Arc<Spool>,
    pub router: Arc<Router>,
    pub budget: Arc<MemoryBudget>,
    pub stats: Arc<Stats>,
    /// Feeding stops here (shutdown stops accepting): what is left stays in
    /// the spool.
    pub stop: CancellationToken,
}

/// Routes the backlog's messages, most urgent first, until `stop`.
pub async fn feed(feeder: Feeder) {
    let Feeder {
        backlog,
        spool,
        router,
        budget,
        stats,
        stop,
    } = feeder;
    // Any seed: the feeder is one more emitter to the router.
    let mut cursor = Cursor::new(0x006c_6f67_6469_7374);
    loop {
        let arrived = backlog.arrivals.notified();
        let batch = backlog.pop_batch(FEED_BATCH);
        if batch.is_empty() {
            tokio::select! {
                _ = arrived => continue,
                _ = stop.cancelled() => return,
            }
        }
        let last = batch.iter().map(|(id, _)| *id).max().expect("not empty");
        tokio::select! {
            _ = spool.durable(last) => {}
            _ = stop.cancelled() => {
                backlog.put_back(&batch);
                return;
            }
        }
        let envelopes = match read_back(&spool, &backlog, &budget, &batch, &stop).await {
            Some(envelopes) => envelopes,
            None => {
                backlog.put_back(&batch);
                return;
            }
        };
        for env in envelopes {
            match router
                .route_or_wait(&mut cursor, env, stop.cancelled())
                .await
            {
                Ok(placed) => stats.count(placed),
                // Stopped: it stays in the spool for the next start.
                Err(_) => return,
            }
        }
    }
}

/// Reads a batch back from the spool (off the async workers) into one
/// buffer charged to the memory budget; `None` if `stop` came first.
async fn read_back(
    spool: &Arc<Spool>,
    backlog: &Backlog,
    budget: &Arc<MemoryBudget>,
    batch: &[(RecordId, u8)],
    stop: &CancellationToken,
) -> Option<Vec<Envelope>> {
    let ids: Vec<RecordId> = batch.iter().map(|(id, _)| *id).collect();
    let reading = tokio::task::spawn_blocking({
        let spool = spool.clone();
        move || {
            ids.into_iter()
                .map(|id| (id, spool.read(id)))
                .collect::<Vec<_>>()
        }
    });
    let read = match reading.await {
        Ok(read) => read,
        Err(err) => {
            tracing::error!(%err, "reading the backlog from the spool failed");
            return None;
        }
    };
    let mut records = Vec::with_capacity(read.len());
    for (id, outcome) in read {
        match outcome {
            Ok(record) if is_whole(&record) => records.push((id, record)),
            Ok(_) => {
                backlog.read_errors.add(1);
                tracing::error!(
                    record = id.0,
                    "spool record is not a whole message; left in the spool"
                );
            }
            Err(err) => {
                backlog.read_errors.add(1);
                tracing::error!(record = id.0, %err, "cannot read a message back from the spool; left there for the next start");
            }
        }
    }
    let payloads = charged_copy(
        budget,
        records.iter().map(|(_, record)| &record.payload[..]),
        stop.cancelled(),
    )
    .await;
    if stop.is_cancelled() {
        return None;
    }
    Some(
        records
            .iter()
            .zip(payloads)
            .map(|((id, record), payload)| {
                let message = to_message(record.kind, record.priority, payload);
                let mut env = Envelope::new(message);
                env.spooled = spooled(*id);
                env
            })
            .collect(),
    )
}
