//! One immutable snapshot of the analyzers and their weights, which the hot
//! path routes with.

use std::sync::Arc;

use crate::{Cursor, Envelope, PriorityQueues, Wakes, WeightedTree};

/// One registered analyzer as the routing table sees it.
#[derive(Debug, Clone)]
pub struct AnalyzerEntry {
    pub id: Arc<str>,
    /// 0 means draining: still registered, given no new messages.
    pub weight: f64,
    pub queues: Arc<PriorityQueues>,
}

/// Where `RoutingTable::route` put an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// Index into [`RoutingTable::analyzers`].
    pub analyzer: usize,
    /// The analyzer the weights picked had no room (or was closed), so the
    /// envelope went to another one.
    pub diverted: bool,
}

/// The analyzers and the weighted tree over them, built once per control
/// change and never mutated, so routing reads it without any lock.
#[derive(Debug)]
pub struct RoutingTable {
    analyzers: Vec<AnalyzerEntry>,
    tree: WeightedTree,
}

impl RoutingTable {
    pub(crate) fn new(analyzers: Vec<AnalyzerEntry>) -> Self {
        let weights: Vec<f64> = analyzers.iter().map(|entry| entry.weight).collect();
        RoutingTable {
            tree: WeightedTree::new(&weights),
            analyzers,
        }
    }

    /// Queues `envelope` at an analyzer chosen by weight with the next point of
    /// `cursor`.
    ///
    /// If that analyzer's level is full or closed, the other analyzers with a
    /// positive weight are tried in table order, starting after the picked one,
    /// so that one lagging analyzer does not stall every emitter (the result
    /// says `diverted`). When none has room, or there is no analyzer to pick,
    /// the envelope comes back: the caller waits on
    /// [`Router::space`](crate::Router::space) and retries (backpressure).
    ///
    /// The writer of the queue it lands in is owed a wake-up if that queue
    /// was empty: `wakes` gives it (see [`Wakes`]).
    pub fn route(
        &self,
        cursor: &mut Cursor,
        envelope: Envelope,
        wakes: &mut Wakes,
    ) -> Result<Routed, Envelope> {
        let Some(picked) = self.tree.pick(cursor.next_point()) else {
            return Err(envelope);
        };
        let mut envelope = match self.push(picked, envelope, wakes) {
            Ok(()) => {
                return Ok(Routed {
                    analyzer: picked,
                    diverted: false,
                });
            }
            Err(back) => back,
        };
        let others = (picked + 1..self.analyzers.len()).chain(0..picked);
        for analyzer in others {
            let entry = &self.analyzers[analyzer];
            // Draining (the router admits no NaN or negative weight).
            if entry.weight <= 0.0 {
                continue;
            }
            match self.push(analyzer, envelope, wakes) {
                Ok(()) => {
                    entry.queues.count_diverted_in();
                    return Ok(Routed {
                        analyzer,
                        diverted: true,
                    });
                }
                Err(back) => envelope = back,
            }
        }
        Err(envelope)
    }

    fn push(&self, analyzer: usize, envelope: Envelope, wakes: &mut Wakes) -> Result<(), Envelope> {
        let queues = &self.analyzers[analyzer].queues;
        match queues.push_owing(envelope) {
            Ok(owed) => {
                if owed {
                    wakes.owe(queues);
                }
                Ok(())
            }
            Err(refused) => Err(refused.envelope),
        }
    }

    /// Every registered analyzer, in registration order, draining ones
    /// included.
    pub fn analyzers(&self) -> &[AnalyzerEntry] {
        &self.analyzers
    }

    pub fn is_empty(&self) -> bool {
        self.analyzers.is_empty()
    }

    /// Sum of the weights of the analyzers that can be picked.
    pub fn total_weight(&self) -> f64 {
        self.tree.total_weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Wakes;
    use bytes::Bytes;
    use logdist_wire::Message;
    use tokio::sync::Notify;

    fn envelope(priority: u8) -> Envelope {
        Envelope::new(Message::from_ndjson_line(
            priority,
            Bytes::from_static(b"{}"),
        ))
    }

    fn entry(id: &str, weight: f64, capacity: usize) -> AnalyzerEntry {
        AnalyzerEntry {
            id: id.into(),
            weight,
            queues: Arc::new(PriorityQueues::new(capacity, Arc::new(Notify::new()))),
        }
    }

    #[test]
    fn routes_by_weight_when_everyone_has_room() {
        let table = RoutingTable::new(vec![entry("a", 3.0, 10_000), entry("b", 1.0, 10_000)]);
        let mut cursor = Cursor::new(1);
        let mut counts = [0u32; 2];
        for _ in 0..10_000 {
            let routed = table
                .route(&mut cursor, envelope(3), &mut Wakes::default())
                .unwrap();
            assert!(!routed.diverted);
            counts[routed.analyzer] += 1;
        }
        assert!(counts[0].abs_diff(7_500) <= 50, "{counts:?}");
        assert_eq!(table.analyzers()[1].queues.enqueued(), u64::from(counts[1]));
        assert_eq!(table.total_weight(), 4.0);
    }

    #[test]
    fn a_full_analyzer_diverts_to_the_next_one_with_room() {
        let table = RoutingTable::new(vec![
            entry("full", 1.0, 1),
            entry("draining", 0.0, 100),
            entry("roomy", 1.0, 100),
        ]);
        table.analyzers()[0].queues.push(envelope(5)).unwrap();
        let mut cursor = Cursor::new(2);
        let mut diverted = 0;
        for _ in 0..50 {
            let routed = table
                .route(&mut cursor, envelope(5), &mut Wakes::default())
                .unwrap();
            assert_eq!(routed.analyzer, 2);
            diverted += u64::from(routed.diverted);
        }
        assert!(diverted > 10, "about half should have picked the full one");
        assert_eq!(table.analyzers()[2].queues.diverted_in(), diverted);
        assert_eq!(table.analyzers()[0].queues.len(), 1);
        assert_eq!(
            table.analyzers()[1].queues.len(),
            0,
            "weight 0 takes no diversions"
        );
        // Other priority levels of the "full" analyzer still have room.
        let routed = (0..10)
            .map(|_| {
                table
                    .route(&mut cursor, envelope(6), &mut Wakes::default())
                    .unwrap()
            })
            .find(|routed| routed.analyzer == 0)
            .expect("level 6 of the first analyzer has room");
        assert!(!routed.diverted);
    }

    #[test]
    fn diversion_wraps_around_the_table() {
        let table = RoutingTable::new(vec![entry("roomy", 1.0, 100), entry("full", 1.0, 1)]);
        table.analyzers()[1].queues.push(envelope(0)).unwrap();
        let mut cursor = Cursor::new(3);
        let diverted = (0..20)
            .map(|_| {
                table
                    .route(&mut cursor, envelope(0), &mut Wakes::default())
                    .unwrap()
            })
            .filter(|routed| {
                assert_eq!(routed.analyzer, 0);
                routed.diverted
            })
            .count();
        assert!(diverted > 0);
    }

    #[test]
    fn gives_the_envelope_back_when_every_analyzer_is_full_or_closed() {
        let table = RoutingTable::new(vec![
            entry("full", 1.0, 1),
            entry("closed", 2.0, 1),
            entry("draining", 0.0, 1),
        ]);
        table.analyzers()[0].queues.push(envelope(9)).unwrap();
        table.analyzers()[1].queues.close_and_drain();
        let mut cursor = Cursor::new(4);
        for _ in 0..10 {
            let back = table
                .route(&mut cursor, envelope(9), &mut Wakes::default())
                .unwrap_err();
            assert_eq!(back.priority(), 9);
        }
        assert_eq!(table.analyzers()[2].queues.len(), 0);
    }

    #[test]
    fn an_empty_or_all_draining_table_routes_nothing() {
        let mut cursor = Cursor::new(5);
        let empty = RoutingTable::new(Vec::new());
        assert!(empty.is_empty());
        assert!(
            empty
                .route(&mut cursor, envelope(0), &mut Wakes::default())
                .is_err()
        );
        let draining = RoutingTable::new(vec![entry("a", 0.0, 10)]);
        assert!(!draining.is_empty());
        assert!(
            draining
                .route(&mut cursor, envelope(0), &mut Wakes::default())
                .is_err()
        );
        assert_eq!(draining.analyzers()[0].queues.len(), 0);
    }
}
