//! Every analyzer the distributor knows of, and its health.
//!
//! The routing table only holds analyzers that can take messages; this
//! directory also remembers static analyzers that are down, so operators see
//! them, and it is where health changes are logged and counted.
//!
//! It is also the one place that changes an analyzer's weight in the router.
//! Weights come from three sides (the analyzer's own control messages, the
//! admin API, a config reload) and an operator can take an analyzer out of
//! routing by hand; doing every change under the directory's lock keeps the
//! router's weight and the remembered one consistent whatever the interleaving.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use logdist_router::{PriorityQueues, RegisterError, Router};
use parking_lot::Mutex;
use serde::Serialize;

use super::ack_state::AckState;
use crate::stats::{CLASSES, Counter, Stats, class_of};

/// The health reason recorded when an operator takes an analyzer out of routing.
const MANUAL_OVERRIDE: &str = "manual override";

/// What an analyzer can do for routing right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Connected with a positive weight: gets its share.
    Healthy,
    /// Not connected, failed, or taken out by hand: gets nothing.
    Unhealthy,
    /// Connected with weight 0: gets nothing new, finishes what it has.
    Draining,
}

/// How an analyzer reaches the distributor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// It connected to the analyzer listener.
    DialIn,
    /// The distributor connects to it (`[[analyzers.static]]`).
    Static,
}

/// One analyzer as operators see it.
#[derive(Clone, Debug, Serialize)]
pub struct AnalyzerRecord {
    pub id: Arc<str>,
    pub link: Link,
    pub address: String,
    /// The weight it asked for (or an operator or reload set). While
    /// `manual_override` is on, the router uses 0 instead.
    pub weight: f64,
    pub health: Health,
    /// Taken out of routing by an operator (`POST /api/v1/analyzers/{id}/health`).
    pub manual_override: bool,
    pub connected: bool,
    /// When `health` last changed.
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
    /// Messages put into its queues, all connections.
    pub routed: u64,
    /// Of those, messages it got because the analyzer picked for them was full.
    pub diverted_in: u64,
    /// Messages it acknowledged (or, without acks, was written), all connections.
    pub delivered: u64,
    /// Messages its failed or closed connections handed back for rerouting.
    pub handed_back: u64,
    /// Messages written to it and not acknowledged yet.
    pub in_flight: u64,
    /// Messages in its queues, all levels.
    pub queue_depth: u64,
    /// The fullest level's share of `analyzers.queue_capacity`, in percent:
    /// at 100 the router diverts that level's messages elsewhere.
    pub queue_util_percent: f64,
    /// `queue_depth` by priority class (indexed like [`CLASSES`]).
    #[serde(skip)]
    pub queued_by_class: [u64; CLASSES.len()],
    /// Connections to it that ended in a failure.
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What one connection of an analyzer left behind when it ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct Departure {
    /// Messages it handed back for rerouting (queued or unacknowledged).
    pub handed_back: u64,
    /// Whether it ended in a failure rather than a clean close.
    pub failure: bool,
}

struct Entry {
    record: AnalyzerRecord,
    delivered: Arc<Counter>,
    /// The live connection's queues and ack state, for counts and gauges.
    live: Option<(Arc<PriorityQueues>, Arc<AckState>)>,
}

impl Entry {
    fn new(id: &Arc<str>, link: Link, address: &str, weight: f64) -> Entry {
        Entry {
            record: AnalyzerRecord {
                id: id.clone(),
                link,
                address: address.to_string(),
                weight,
                health: Health::Unhealthy,
                manual_override: false,
                connected: false,
                since: SystemTime::now(),
                routed: 0,
                diverted_in: 0,
                delivered: 0,
                handed_back: 0,
                in_flight: 0,
                queue_depth: 0,
                queue_util_percent: 0.0,
                queued_by_class: [0; CLASSES.len()],
                failures: 0,
                last_error: None,
            },
            delivered: Arc::default(),
            live: None,
        }
    }

    /// The weight the router should use: none while taken out by hand.
    fn routing_weight(&self) -> f64 {
        if self.record.manual_override {
            0.0
        } else {
            self.record.weight
        }
    }

    /// The health a connected analyzer has with its current weight and override.
    fn connected_health(&self) -> Health {
        if self.record.manual_override {
            Health::Unhealthy
        } else if self.record.weight > 0.0 {
            Health::Healthy
        } else {
            Health::Draining
        }
    }
}

/// Why a directory change was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DirectoryError {
    #[error("no analyzer with id {0:?}")]
    UnknownId(String),
    #[error("weight must be a finite number in 0..={max} (analyzers.max_weight), got {weight}")]
    WeightOutOfRange { weight: f64, max: f64 },
    #[error("{0}")]
    Router(#[from] RegisterError),
}

/// Why an analyzer could not join.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectError {
    #[error("weight must be a finite number in 0..={max} (analyzers.max_weight), got {weight}")]
    WeightOutOfRange { weight: f64, max: f64 },
    /// A dial-in analyzer claimed the id of a static one.
    #[error("the id {0:?} is reserved for a static analyzer")]
    ReservedId(String),
    #[error("{0}")]
    Router(#[from] RegisterError),
}

/// The analyzers and their health.
pub struct Directory {
    entries: Mutex<BTreeMap<Arc<str>, Entry>>,
    stats: Arc<Stats>,
    router: Arc<Router>,
    /// `analyzers.max_weight`, as f64 bits.
    max_weight: AtomicU64,
    /// The ids of the configured static analyzers: no dial-in analyzer may
    /// take one, whether or not the static analyzer is connected. Kept apart
    /// from `entries` because a dial-in analyzer may still hold an id that a
    /// reload has just made static.
    reserved: Mutex<std::collections::HashSet<Arc<str>>>,
}

impl Directory {
    pub fn new(stats: Arc<Stats>, router: Arc<Router>) -> Self {
        Directory {
            entries: Mutex::new(BTreeMap::new()),
            stats,
            router,
            max_weight: AtomicU64::new(crate::config::DEFAULT_MAX_WEIGHT.to_bits()),
            reserved: Mutex::default(),
        }
    }

    /// The largest weight an analyzer may have (`analyzers.max_weight`).
    pub fn max_weight(&self) -> f64 {
        f64::from_bits(self.max_weight.load(Ordering::Relaxed))
    }

    /// Sets `analyzers.max_weight` for the weight changes and connections that
    /// follow; weights already set stay.
    pub fn set_max_weight(&self, max: f64) {
        self.max_weight.store(max.to_bits(), Ordering::Relaxed);
    }

    /// Whether `weight` is one an analyzer may have: finite, >= 0, at most `max_weight`.
    pub fn weight_allowed(&self, weight: f64) -> bool {
        weight.is_finite() && weight >= 0.0 && weight <= self.max_weight()
    }

    /// Lists a static analyzer, unhealthy until its first connection. An
    /// analyzer already listed keeps its state. Its id is reserved from now
    /// on: no dial-in analyzer can take it.
    pub fn add_static(&self, id: &Arc<str>, address: &str, weight: f64) {
        self.reserved.lock().insert(id.clone());
        self.entries.lock().entry(id.clone()).or_insert_with(|| {
            let mut entry = Entry::new(id, Link::Static, address, weight);
            entry.record.last_error = Some("not connected yet".to_string());
            entry
        });
    }

    /// Forgets a static analyzer that was removed from the config (its id is
    /// free again).
    pub fn forget(&self, id: &str) {
        self.reserved.lock().remove(id);
        let mut entries = self.entries.lock();
        if entries
            .get(id)
            .is_some_and(|e| e.record.link == Link::Static)
        {
            entries.remove(id);
        }
    }

    /// Whether `id` is the id of a listed static analyzer, connected or not.
    pub fn is_reserved(&self, id: &str) -> bool {
        self.reserved.lock().contains(id)
    }

    /// An analyzer connected: registers it in the router (with weight 0 while
    /// it is overridden by hand) and returns the counter its session adds
    /// deliveries to. A static analyzer reconnects with the weight last set
    /// for it (by itself, the admin API or a reload), not the one it started with.
    pub fn connect(
        &self,
        id: &Arc<str>,
        link: Link,
        address: &str,
        weight: f64,
        queues: Arc<PriorityQueues>,
        state: Arc<AckState>,
    ) -> Result<Arc<Counter>, ConnectError> {
        let mut entries = self.entries.lock();
        if link == Link::DialIn && self.is_reserved(id) {
            return Err(ConnectError::ReservedId(id.to_string()));
        }
        let known = entries.get(id).filter(|e| e.record.link == Link::Static);
        if known.is_none() && !self.weight_allowed(weight) {
            return Err(ConnectError::WeightOutOfRange {
                weight,
                max: self.max_weight(),
            });
        }
        let weight = known.map_or(weight, |e| e.record.weight);
        let routing = if known.is_some_and(|e| e.record.manual_override) {
            0.0
        } else {
            weight
        };
        self.router.register(id.clone(), routing, queues.clone())?;
        let entry = entries
            .entry(id.clone())
            .or_insert_with(|| Entry::new(id, link, address, weight));
        entry.record.weight = weight;
        entry.record.address = address.to_string();
        entry.record.connected = true;
        entry.live = Some((queues, state));
        let health = entry.connected_health();
        self.transition(&mut entry.record, health, "connected");
        Ok(entry.delivered.clone())
    }

    /// Sets an analyzer's weight (0 drains it): from its own control stream,
    /// the admin API or a reload. While the analyzer is overridden by hand the
    /// weight is remembered and applied when the override ends; while it is
    /// not connected it is remembered for its next connection.
    pub fn set_weight(&self, id: &str, weight: f64, reason: &str) -> Result<(), DirectoryError> {
        if !self.weight_allowed(weight) {
            return Err(DirectoryError::WeightOutOfRange {
                weight,
                max: self.max_weight(),
            });
        }
        let mut entries = self.entries.lock();
        let entry = entries
            .get_mut(id)
            .ok_or_else(|| DirectoryError::UnknownId(id.to_string()))?;
        entry.record.weight = weight;
        if entry.record.connected && !entry.record.manual_override {
            self.router.set_weight(id, weight)?;
            let health = entry.connected_health();
            self.transition(&mut entry.record, health, reason);
        }
        Ok(())
    }

    /// Takes an analyzer out of routing by hand (`healthy == false`) without
    /// disconnecting it, or puts it back with its remembered weight.
    pub fn set_manual_health(&self, id: &str, healthy: bool) -> Result<(), DirectoryError> {
        let mut entries = self.entries.lock();
        let entry = entries
            .get_mut(id)
            .ok_or_else(|| DirectoryError::UnknownId(id.to_string()))?;
        entry.record.manual_override = !healthy;
        if entry.record.connected {
            self.router.set_weight(id, entry.routing_weight())?;
            let health = entry.connected_health();
            let reason = if healthy {
                "manual override lifted"
            } else {
                MANUAL_OVERRIDE
            };
            self.transition(&mut entry.record, health, reason);
        }
        Ok(())
    }

    /// The analyzer's connection ended (`reason` says why). It leaves the
    /// router; dial-in analyzers are forgotten, static ones stay listed as
    /// unhealthy (keeping any manual override) until they are reached again.
    pub fn disconnected(&self, id: &str, reason: &str, end: Departure) {
        let mut entries = self.entries.lock();
        self.router.unregister(id);
        let Some(entry) = entries.get_mut(id) else {
            return;
        };
        if let Some((queues, _)) = entry.live.take() {
            entry.record.routed += queues.enqueued();
            entry.record.diverted_in += queues.diverted_in();
        }
        entry.record.connected = false;
        entry.record.handed_back += end.handed_back;
        if end.failure {
            entry.record.failures += 1;
        }
        entry.record.last_error = Some(reason.to_string());
        self.transition(&mut entry.record, Health::Unhealthy, reason);
        if entry.record.link == Link::DialIn {
            entries.remove(id);
        }
    }

    /// A static analyzer could not be reached.
    pub fn unreachable(&self, id: &str, reason: &str) {
        if let Some(entry) = self.entries.lock().get_mut(id) {
            entry.record.last_error = Some(reason.to_string());
        }
    }

    /// Whether a connected analyzer other than `id` has messages queued or
    /// unacknowledged: at shutdown they may still be handed back and need
    /// somewhere to go.
    pub fn holds_messages_elsewhere(&self, id: &str) -> bool {
        self.entries.lock().iter().any(|(other, entry)| {
            &**other != id
                && entry
                    .live
                    .as_ref()
                    .is_some_and(|(queues, state)| !queues.is_empty() || state.in_flight() > 0)
        })
    }

    /// One analyzer, if known.
    pub fn get(&self, id: &str) -> Option<AnalyzerRecord> {
        self.entries.lock().get(id).map(record)
    }

    /// Every known analyzer, by id.
    pub fn snapshot(&self) -> Vec<AnalyzerRecord> {
        self.entries.lock().values().map(record).collect()
    }

    fn transition(&self, record: &mut AnalyzerRecord, health: Health, reason: &str) {
        if record.health == health {
            return;
        }
        let from = record.health;
        record.health = health;
        record.since = SystemTime::now();
        self.stats.health_changes.add(1);
        if health == Health::Unhealthy {
            tracing::warn!(analyzer = %record.id, ?from, to = ?health, reason, "analyzer health changed");
        } else {
            tracing::info!(analyzer = %record.id, ?from, to = ?health, reason, "analyzer health changed");
        }
    }
}

/// The record with the live connection's counts added.
fn record(entry: &Entry) -> AnalyzerRecord {
    let mut record = AnalyzerRecord {
        delivered: entry.delivered.get(),
        ..entry.record.clone()
    };
    if let Some((queues, state)) = &entry.live {
        record.routed += queues.enqueued();
        record.diverted_in += queues.diverted_in();
        record.in_flight = state.in_flight();
        let mut fullest = 0;
        for level in 0..=u8::MAX {
            let depth = queues.depth(level);
            record.queued_by_class[class_of(level)] += depth as u64;
            fullest = fullest.max(depth);
        }
        record.queue_depth = record.queued_by_class.iter().sum();
        record.queue_util_percent = percent(fullest, queues.capacity_per_level());
    }
    record
}

/// `part` of `whole` in percent, rounded to 0.1.
pub fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(directory: &Directory, router: &Router, id: &Arc<str>, link: Link, weight: f64) {
        let queues = Arc::new(PriorityQueues::new(10, router.space().clone()));
        let state = Arc::new(AckState::new(true));
        directory
            .connect(id, link, "127.0.0.1:1", weight, queues, state)
            .unwrap();
    }

    fn router_weight(router: &Router, id: &str) -> Option<f64> {
        let table = router.load();
        table
            .analyzers()
            .iter()
            .find(|a| &*a.id == id)
            .map(|a| a.weight)
    }

    #[test]
    fn health_follows_connection_and_weight() {
        let stats = Arc::new(Stats::default());
        let router = Arc::new(Router::new());
        let directory = Directory::new(stats.clone(), router.clone());
        let id: Arc<str> = Arc::from("s1");
        directory.add_static(&id, "127.0.0.1:1", 2.0);
        assert_eq!(directory.snapshot()[0].health, Health::Unhealthy);

        connect(&directory, &router, &id, Link::Static, 2.0);
        directory.get("s1").unwrap();
        directory.set_weight("s1", 0.0, "test").unwrap();
        assert_eq!(directory.snapshot()[0].health, Health::Draining);
        let end = Departure {
            handed_back: 3,
            failure: true,
        };
        directory.disconnected("s1", "write failed", end);
        let record = &directory.snapshot()[0];
        assert_eq!(record.health, Health::Unhealthy);
        assert_eq!((record.handed_back, record.failures), (3, 1));
        assert_eq!(stats.health_changes.get(), 3);
        assert!(router.load().is_empty());

        let dial: Arc<str> = Arc::from("d1");
        connect(&directory, &router, &dial, Link::DialIn, 1.0);
        assert_eq!(directory.snapshot().len(), 2);
        directory.disconnected("d1", "closed", Departure::default());
        assert_eq!(
            directory.snapshot().len(),
            1,
            "dial-in analyzers are forgotten"
        );
    }

    #[test]
    fn manual_override_zeroes_the_router_weight_and_remembers_the_real_one() {
        let router = Arc::new(Router::new());
        let directory = Directory::new(Arc::default(), router.clone());
        let id: Arc<str> = Arc::from("s1");
        directory.add_static(&id, "127.0.0.1:1", 2.0);
        connect(&directory, &router, &id, Link::Static, 2.0);

        directory.set_manual_health("s1", false).unwrap();
        assert_eq!(router_weight(&router, "s1"), Some(0.0));
        assert_eq!(directory.get("s1").unwrap().health, Health::Unhealthy);
        // The analyzer's own update is remembered, not applied.
        directory.set_weight("s1", 5.0, "analyzer").unwrap();
        assert_eq!(router_weight(&router, "s1"), Some(0.0));

        // The override outlives a reconnect of a static analyzer.
        directory.disconnected("s1", "closed", Departure::default());
        connect(&directory, &router, &id, Link::Static, 2.0);
        assert_eq!(router_weight(&router, "s1"), Some(0.0));

        directory.set_manual_health("s1", true).unwrap();
        assert_eq!(router_weight(&router, "s1"), Some(5.0));
        assert_eq!(directory.get("s1").unwrap().health, Health::Healthy);
        assert!(matches!(
            directory.set_manual_health("nope", true),
            Err(DirectoryError::UnknownId(_))
        ));
    }

    #[test]
    fn static_ids_are_reserved_and_weights_bounded() {
        let router = Arc::new(Router::new());
        let directory = Directory::new(Arc::default(), router.clone());
        let id: Arc<str> = Arc::from("s1");
        directory.add_static(&id, "127.0.0.1:1", 2.0);
        let queues = Arc::new(PriorityQueues::new(10, router.space().clone()));
        let state = Arc::new(AckState::new(true));
        let hijack = directory.connect(&id, Link::DialIn, "127.0.0.1:2", 1.0, queues, state);
        assert!(matches!(hijack, Err(ConnectError::ReservedId(_))));
        assert!(router.load().is_empty());
        assert!(directory.is_reserved("s1"));

        directory.forget("s1");
        assert!(!directory.is_reserved("s1"));
        connect(&directory, &router, &id, Link::DialIn, 1.0);

        directory.set_max_weight(10.0);
        for weight in [10.5, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                directory.set_weight("s1", weight, "test"),
                Err(DirectoryError::WeightOutOfRange { .. })
            ));
        }
        directory.set_weight("s1", 10.0, "test").unwrap();
        let other: Arc<str> = Arc::from("d2");
        let queues = Arc::new(PriorityQueues::new(10, router.space().clone()));
        let state = Arc::new(AckState::new(true));
        let heavy = directory.connect(&other, Link::DialIn, "127.0.0.1:3", 11.0, queues, state);
        assert!(matches!(heavy, Err(ConnectError::WeightOutOfRange { .. })));
    }
}
