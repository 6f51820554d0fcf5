//! The routing core of logdist: which analyzer gets each message, and the
//! strict-priority queues in front of every analyzer.
//!
//! Synchronous and lock-free on the hot path. An emitter connection task
//! loads the current [`RoutingTable`] from the [`Router`] (an `ArcSwap`, no
//! lock), and [`RoutingTable::route`] picks an analyzer with a weighted tree
//! walked by the connection's low-discrepancy [`Cursor`] and pushes the
//! [`Envelope`] into that analyzer's [`PriorityQueues`]. The analyzer's writer
//! task pops lowest priority number first. Registering, reweighting and
//! removing analyzers build a new table off to the side. While no analyzer
//! can take messages at all, a [`HoldingQueue`] parks them.

mod cursor;
mod envelope;
mod holding_queue;
mod priority_queues;
mod router;
mod routing_table;
mod wakes;
mod weighted_tree;

pub use cursor::Cursor;
pub use envelope::Envelope;
pub use holding_queue::HoldingQueue;
pub use priority_queues::{PriorityQueues, PushError, PushErrorKind};
pub use router::{Placed, RegisterError, Router};
pub use routing_table::{AnalyzerEntry, Routed, RoutingTable};
pub use wakes::Wakes;
pub use weighted_tree::WeightedTree;
