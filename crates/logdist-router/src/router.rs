//! The analyzer registry: the control path that builds routing tables, and
//! the lock-free handle the hot path routes through.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{
    AnalyzerEntry, Cursor, Envelope, HoldingQueue, PriorityQueues, Routed, RoutingTable, Wakes,
};

/// Why a registry change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    DuplicateId,
    UnknownId,
    /// Negative, NaN or infinite.
    InvalidWeight,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegisterError::DuplicateId => "an analyzer with this id is already registered",
            RegisterError::UnknownId => "no analyzer with this id is registered",
            RegisterError::InvalidWeight => "weight must be a finite number >= 0",
        })
    }
}

impl std::error::Error for RegisterError {}

/// The registered analyzers and the current [`RoutingTable`].
///
/// Registration, weight changes and removal are rare: they are serialized by a
/// mutex, build a fresh table and publish it with one atomic store. Routing
/// only ever loads the published table, so it never waits for them; a table
/// loaded just before a change stays valid (it keeps its analyzers' queues
/// alive) until it is dropped.
pub struct Router {
    table: ArcSwap<RoutingTable>,
    /// The source of truth the tables are built from.
    registry: Mutex<Vec<AnalyzerEntry>>,
    space: Arc<Notify>,
    /// Where messages wait while no analyzer can take any (none connected, or
    /// all draining); see [`Router::with_holding`].
    holding: Option<Arc<HoldingQueue>>,
}

/// Where [`Router::route_or_wait`] put an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// In an analyzer's queues.
    Routed(Routed),
    /// In the holding queue, because no analyzer could take messages.
    Held,
}

impl Router {
    /// A router without a holding queue: with no analyzer, producers wait.
    pub fn new() -> Self {
        Router {
            table: ArcSwap::from_pointee(RoutingTable::new(Vec::new())),
            registry: Mutex::new(Vec::new()),
            space: Arc::new(Notify::new()),
            holding: None,
        }
    }

    /// A router whose [`route_or_wait`](Self::route_or_wait) parks up to
    /// `capacity` messages in a holding queue while no analyzer has a positive
    /// weight, and makes producers wait only once that is full too. Someone
    /// must consume [`holding`](Self::holding) and route what it holds when
    /// analyzers arrive.
    pub fn with_holding(capacity: usize) -> Self {
        let mut router = Router::new();
        router.holding = Some(Arc::new(HoldingQueue::new(capacity, router.space.clone())));
        router
    }

    /// The holding queue, if this router has one.
    pub fn holding(&self) -> Option<&Arc<HoldingQueue>> {
        self.holding.as_ref()
    }

    /// Notified (`notify_waiters`) whenever room may have appeared for a
    /// message that found every analyzer full: a pop from a full level (give
    /// this to [`PriorityQueues::new`]) or any change of the table.
    ///
    /// `notify_waiters` stores no permit, so create the `Notified` *before*
    /// the attempt it guards; it then catches every notification after its
    /// creation, even before being polled:
    ///
    /// ```
    /// # use logdist_router::{Cursor, Envelope, Routed, Router, Wakes};
    /// async fn route(router: &Router, cursor: &mut Cursor, mut envelope: Envelope) -> Routed {
    ///     loop {
    ///         let space = router.space().notified();
    ///         let attempt = router.load().route(cursor, envelope, &mut Wakes::default());
    ///         match attempt {
    ///             Ok(routed) => return routed,
    ///             Err(back) => envelope = back,
    ///         }
    ///         space.await;
    ///     }
    /// }
    /// ```
    ///
    /// [`route_or_wait`](Self::route_or_wait) is that loop.
    pub fn space(&self) -> &Arc<Notify> {
        &self.space
    }

    /// The current table. Cheap and lock-free; a caller routing many messages
    /// loads it once per batch ([`load_full`](Self::load_full) to keep it
    /// across awaits) and routes each with [`place`](Self::place).
    pub fn load(&self) -> Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// The current table as an owned `Arc`, which may be held across awaits.
    pub fn load_full(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Places `envelope` without waiting: in an analyzer's queues by `table`,
    /// or, when `table` has no analyzer with a positive weight, in the holding
    /// queue. Gives it back when there is no room anywhere: then
    /// [`route_or_wait`](Self::route_or_wait) waits for some. The writer
    /// it lands with may be owed a wake-up: `wakes` gives it.
    pub fn place(
        &self,
        table: &RoutingTable,
        cursor: &mut Cursor,
        envelope: Envelope,
        wakes: &mut Wakes,
    ) -> Result<Placed, Envelope> {
        let envelope = match table.route(cursor, envelope, wakes) {
            Ok(routed) => return Ok(Placed::Routed(routed)),
            Err(back) => back,
        };
        match &self.holding {
            Some(holding) if table.total_weight() == 0.0 => {
                holding.push(envelope).map(|()| Placed::Held)
            }
            _ => Err(envelope),
        }
    }

    /// [`place`](Self::place)s `envelope`, waiting for room as long as there is
    /// none. This is where backpressure reaches an emitter: its task stops
    /// reading the socket while it waits here. Each attempt loads the current
    /// table and takes the cursor's next point.
    ///
    /// Gives the envelope back if `give_up` completes first (shutdown), so a
    /// waiting message is never lost with a dropped future.
    pub async fn route_or_wait(
        &self,
        cursor: &mut Cursor,
        mut envelope: Envelope,
        give_up: impl Future<Output = ()>,
    ) -> Result<Placed, Envelope> {
        let mut give_up = std::pin::pin!(give_up);
        loop {
            let space = self.space.notified();
            // Bound to a statement of its own so the table guard is dropped
            // before the await (it must not be held across it).
            let attempt = self.place(&self.load(), cursor, envelope, &mut Wakes::default());
            match attempt {
                Ok(placed) => return Ok(placed),
                Err(back) => envelope = back,
            }
            tokio::select! {
                _ = space => {}
                _ = &mut give_up => return Err(envelope),
            }
        }
    }

    /// Adds an analyzer with its queues. Weight 0 registers it draining.
    pub fn register(
        &self,
        id: Arc<str>,
        weight: f64,
        queues: Arc<PriorityQueues>,
    ) -> Result<(), RegisterError> {
        check_weight(weight)?;
        self.change(|analyzers| {
            if analyzers.iter().any(|entry| entry.id == id) {
                return Err(RegisterError::DuplicateId);
            }
            analyzers.push(AnalyzerEntry { id, weight, queues });
            Ok(())
        })
    }

    /// Changes an analyzer's weight; 0 drains it.
    pub fn set_weight(&self, id: &str, weight: f64) -> Result<(), RegisterError> {
        check_weight(weight)?;
        self.change(|analyzers| {
            let entry = analyzers
                .iter_mut()
                .find(|entry| &*entry.id == id)
                .ok_or(RegisterError::UnknownId)?;
            entry.weight = weight;
            Ok(())
        })
    }

    /// Removes an analyzer and hands back its queues, so the caller can
    /// `close_and_drain` them and reroute what they held. `None` if unknown.
    pub fn unregister(&self, id: &str) -> Option<Arc<PriorityQueues>> {
        self.change(|analyzers| {
            let position = analyzers.iter().position(|entry| &*entry.id == id);
            position
                .map(|position| analyzers.remove(position).queues)
                .ok_or(())
        })
        .ok()
    }

    /// Applies `edit` to the registry and, if it succeeds, publishes a table
    /// built from the result and wakes producers waiting for room.
    fn change<T, E>(
        &self,
        edit: impl FnOnce(&mut Vec<AnalyzerEntry>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut analyzers = self.registry.lock();
        let outcome = edit(&mut analyzers)?;
        self.table
            .store(Arc::new(RoutingTable::new(analyzers.clone())));
        drop(analyzers);
        self.space.notify_waiters();
        Ok(outcome)
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("table", &self.load())
            .finish()
    }
}

fn check_weight(weight: f64) -> Result<(), RegisterError> {
    if weight.is_finite() && weight >= 0.0 {
        Ok(())
    } else {
        Err(RegisterError::InvalidWeight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use logdist_wire::Message;

    fn envelope() -> Envelope {
        Envelope::new(Message::from_ndjson_line(3, Bytes::from_static(b"{}")))
    }

    fn queues(router: &Router, capacity: usize) -> Arc<PriorityQueues> {
        Arc::new(PriorityQueues::new(capacity, router.space().clone()))
    }

    /// Routes 10,000 envelopes and counts them per analyzer id.
    fn shares(router: &Router, cursor: &mut Cursor) -> Vec<(Arc<str>, u32)> {
        let table = router.load();
        let mut counts = vec![0u32; table.analyzers().len()];
        for _ in 0..10_000 {
            counts[table
                .route(cursor, envelope(), &mut Wakes::default())
                .unwrap()
                .analyzer] += 1;
        }
        for entry in table.analyzers() {
            while entry.queues.pop().is_some() {}
        }
        let ids = table.analyzers().iter().map(|entry| entry.id.clone());
        ids.zip(counts).collect()
    }

    #[test]
    fn place_routes_holds_or_gives_back() {
        let router = Router::with_holding(1);
        let mut cursor = Cursor::new(3);
        // No analyzer: held, until the holding queue is full.
        assert_eq!(
            router
                .place(
                    &router.load(),
                    &mut cursor,
                    envelope(),
                    &mut Wakes::default()
                )
                .unwrap(),
            Placed::Held
        );
        assert!(
            router
                .place(
                    &router.load(),
                    &mut cursor,
                    envelope(),
                    &mut Wakes::default()
                )
                .is_err()
        );

        let a = queues(&router, 1);
        router.register("a".into(), 1.0, a.clone()).unwrap();
        let table = router.load_full();
        assert!(matches!(
            router.place(&table, &mut cursor, envelope(), &mut Wakes::default()),
            Ok(Placed::Routed(_))
        ));
        // The analyzer is full: given back, not held (an analyzer exists).
        assert!(
            router
                .place(&table, &mut cursor, envelope(), &mut Wakes::default())
                .is_err()
        );
        assert_eq!((a.len(), router.holding().unwrap().len()), (1, 1));
    }

    #[test]
    fn register_refuses_duplicates_and_bad_weights() {
        let router = Router::new();
        router
            .register("a".into(), 1.0, queues(&router, 8))
            .unwrap();
        assert_eq!(
            router.register("a".into(), 2.0, queues(&router, 8)),
            Err(RegisterError::DuplicateId)
        );
        for weight in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                router.register("b".into(), weight, queues(&router, 8)),
                Err(RegisterError::InvalidWeight)
            );
        }
        router
            .register("b".into(), 0.0, queues(&router, 8))
            .unwrap();
        let table = router.load();
        let ids: Vec<&str> = table.analyzers().iter().map(|entry| &*entry.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(table.total_weight(), 1.0);
    }

    #[test]
    fn set_weight_changes_shares() {
        let router = Router::new();
        router
            .register("a".into(), 1.0, queues(&router, 10_000))
            .unwrap();
        router
            .register("b".into(), 1.0, queues(&router, 10_000))
            .unwrap();
        let mut cursor = Cursor::new(11);
        let even = shares(&router, &mut cursor);
        assert!(
            even.iter().all(|(_, count)| count.abs_diff(5_000) <= 50),
            "{even:?}"
        );

        router.set_weight("b", 3.0).unwrap();
        let skewed = shares(&router, &mut cursor);
        assert!(skewed[0].1.abs_diff(2_500) <= 50, "{skewed:?}");
        assert!(skewed[1].1.abs_diff(7_500) <= 50, "{skewed:?}");

        router.set_weight("a", 0.0).unwrap();
        assert_eq!(shares(&router, &mut cursor)[0].1, 0, "weight 0 drains");

        assert_eq!(router.set_weight("zz", 1.0), Err(RegisterError::UnknownId));
        assert_eq!(
            router.set_weight("a", -0.5),
            Err(RegisterError::InvalidWeight)
        );
    }

    #[test]
    fn unregistered_analyzer_is_never_picked_again() {
        let router = Router::new();
        let gone = queues(&router, 10_000);
        router.register("a".into(), 5.0, gone.clone()).unwrap();
        router
            .register("b".into(), 1.0, queues(&router, 10_000))
            .unwrap();
        let returned = router.unregister("a").expect("registered");
        assert!(Arc::ptr_eq(&returned, &gone));
        assert!(router.unregister("a").is_none());

        let counts = shares(&router, &mut Cursor::new(12));
        assert_eq!(counts.len(), 1);
        assert_eq!(&*counts[0].0, "b");
        assert_eq!(gone.enqueued(), 0);
    }

    #[test]
    fn a_loaded_table_outlives_later_changes() {
        let router = Router::new();
        router
            .register("a".into(), 1.0, queues(&router, 10))
            .unwrap();
        let before = router.load();
        router.unregister("a");
        assert_eq!(before.analyzers().len(), 1);
        assert!(
            before
                .route(&mut Cursor::new(0), envelope(), &mut Wakes::default())
                .is_ok()
        );
        assert!(router.load().is_empty());
    }

    #[test]
    fn route_or_wait_future_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let router = Router::new();
        let mut cursor = Cursor::new(0);
        assert_send(&router.route_or_wait(&mut cursor, envelope(), std::future::pending()));
    }
}
