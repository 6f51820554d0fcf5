//! What the operator-facing outputs (admin API, Prometheus, CSV) read: the
//! counters, the analyzer directory, the router's holding queue and the
//! memory budget. Read
//! only: control changes go through the directory's own methods.

use std::sync::Arc;
use std::time::Instant;

use logdist_router::Router;

use crate::budget::MemoryBudget;
use crate::delivery::directory::Directory;
use crate::stats::Stats;

#[derive(Clone)]
pub struct Observed {
    pub stats: Arc<Stats>,
    pub directory: Arc<Directory>,
    pub router: Arc<Router>,
    pub budget: Arc<MemoryBudget>,
    /// When the server was bound, for uptimes.
    pub started: Instant,
}
