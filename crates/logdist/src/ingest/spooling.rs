//! Disk mode's side of ingest: every accepted message is appended to the
//! spool before it is routed (its emitter's `ok` waits for the append to be
//! durable), and one that finds no room in memory goes to the backlog
//! instead of making its emitter wait.

use std::sync::Arc;
use std::time::Duration;

use logdist_router::{Cursor, Envelope, Placed, Router};
use logdist_spool::{RecordId, Spool};

use tokio_util::sync::CancellationToken;

use crate::custody::{record_id, spooled, to_record};
use crate::delivery::backlog::Backlog;

/// How long a message waits for room in memory before it goes to the
/// backlog: long enough for a burst to pass (queues drain in microseconds
/// to a few milliseconds), short enough that an analyzer outage does not
/// hold emitters.
pub const SPILL_AFTER: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct Spooling {
    pub spool: Arc<Spool>,
    pub backlog: Arc<Backlog>,
}

/// The spool is full and `give_up` came first.
pub struct GaveUp;

impl Spooling {
    /// Appends `env`'s message to the spool without waiting; `false` when the
    /// spool is full (then [`append`](Self::append) waits for room).
    pub fn try_append(&self, env: &mut Envelope) -> Option<RecordId> {
        let id = self.spool.try_append(&to_record(&env.message)).ok()?;
        env.spooled = spooled(id);
        Some(id)
    }

    /// Appends `env`'s message to the spool, waiting while it is full
    /// (`durability.max_bytes`): that is what slows emitters in disk mode.
    pub async fn append(
        &self,
        env: &mut Envelope,
        give_up: impl Future<Output = ()>,
    ) -> Result<RecordId, GaveUp> {
        let mut give_up = std::pin::pin!(give_up);
        loop {
            let room = self.spool.room();
            if let Some(id) = self.try_append(env) {
                return Ok(id);
            }
            tokio::select! {
                _ = room => {}
                _ = &mut give_up => return Err(GaveUp),
            }
        }
    }

    /// Routes a spooled message that found no room: waits up to
    /// [`SPILL_AFTER`] for some, as memory mode would (a burst keeps its
    /// latency), then keeps it on disk only, in the backlog. While there is
    /// a backlog, new messages without room join it at once. `None`: spilled.
    pub async fn wait_or_spill(
        &self,
        router: &Router,
        cursor: &mut Cursor,
        env: Envelope,
        hard_stop: &CancellationToken,
    ) -> Option<Placed> {
        let env = if self.backlog.is_empty() {
            let give_up = async {
                tokio::select! {
                    () = tokio::time::sleep(SPILL_AFTER) => {}
                    () = hard_stop.cancelled() => {}
                }
            };
            match router.route_or_wait(cursor, env, give_up).await {
                Ok(placed) => return Some(placed),
                Err(env) => env,
            }
        } else {
            env
        };
        let id = env
            .spooled
            .map(record_id)
            .expect("appended before it is routed");
        self.backlog.push(id, env.priority());
        None
    }

    /// Completes once `id` is stored as `durability.sync` says.
    pub async fn durable(&self, id: RecordId) {
        self.spool.durable(id).await;
    }
}
