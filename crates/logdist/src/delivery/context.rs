//! What every analyzer connection of the delivery stage shares: the router
//! it takes messages from, the directory it registers in, where failed
//! messages go, the shutdown phases, and the settings of its session.

use std::sync::Arc;
use std::time::Duration;

use logdist_router::Router;

use super::access::AnalyzerAccess;
use super::directory::Directory;
use super::drain::DrainWatch;
use super::redelivery::Redelivery;
use crate::custody::Custody;
use crate::shutdown::Shutdown;
use crate::stats::Stats;

pub struct DeliveryContext {
    pub router: Arc<Router>,
    pub stats: Arc<Stats>,
    pub directory: Arc<Directory>,
    pub redelivery: Redelivery,
    /// What draining sessions wait for besides their own queues.
    pub drain: Arc<DrainWatch>,
    pub shutdown: Shutdown,
    pub settings: SessionSettings,
    /// Who may become an analyzer (tokens, seed networks); reloadable.
    pub access: Arc<AnalyzerAccess>,
    /// Told when an analyzer acknowledged messages (disk mode acknowledges
    /// their spool records).
    pub custody: Custody,
}

/// How analyzer sessions behave (`[analyzers]` and `delivery.shutdown_grace`).
#[derive(Clone, Copy, Debug)]
pub struct SessionSettings {
    /// Messages per priority level of one analyzer's queues.
    pub queue_capacity: usize,
    /// Messages written and not yet acknowledged, at most.
    pub window: usize,
    pub ack_timeout: Duration,
    /// How long a writer may gather messages before a write (zero: off).
    pub write_coalesce: Duration,
    /// `TCP_USER_TIMEOUT` of analyzer connections (zero: the kernel's).
    pub user_timeout: Duration,
    /// Between TCP probes of a connected static analyzer (zero: off).
    pub probe_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long draining may take: at shutdown, and for an analyzer removed
    /// from the config.
    pub drain_grace: Duration,
}
