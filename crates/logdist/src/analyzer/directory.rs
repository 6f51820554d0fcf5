//! Every analyzer the distributor knows of, and its health.
//!
//! The routing table only holds analyzers that can take messages; this
//! directory also remembers static analyzers that are down, so operators see
//! them, and it is where health changes are logged and counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;

use crate::stats::{Counter, Stats};

/// What an analyzer can do for routing right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Connected with a positive weight: gets its share.
    Healthy,
    /// Not connected (or failed): gets nothing.
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
    pub weight: f64,
    pub health: Health,
    /// When `health` last changed.
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
    /// Messages it acknowledged (or, without acks, was written), all connections.
    pub delivered: u64,
    /// Connections to it that ended in a failure.
    pub failures: u64,
    pub last_error: Option<String>,
}

struct Entry {
    record: AnalyzerRecord,
    delivered: Arc<Counter>,
}

/// The analyzers and their health.
pub struct Directory {
    entries: Mutex<BTreeMap<Arc<str>, Entry>>,
    stats: Arc<Stats>,
}

impl Directory {
    pub fn new(stats: Arc<Stats>) -> Self {
        Directory {
            entries: Mutex::new(BTreeMap::new()),
            stats,
        }
    }

    /// Lists a static analyzer, unhealthy until its first connection.
    pub fn add_static(&self, id: &Arc<str>, address: &str, weight: f64) {
        self.entries.lock().insert(
            id.clone(),
            Entry {
                record: AnalyzerRecord {
                    id: id.clone(),
                    link: Link::Static,
                    address: address.to_string(),
                    weight,
                    health: Health::Unhealthy,
                    since: SystemTime::now(),
                    delivered: 0,
                    failures: 0,
                    last_error: Some("not connected yet".to_string()),
                },
                delivered: Arc::default(),
            },
        );
    }

    /// An analyzer connected and joined the routing table; returns the
    /// counter its session adds deliveries to.
    pub fn connected(&self, id: &Arc<str>, link: Link, address: &str, weight: f64) -> Arc<Counter> {
        let mut entries = self.entries.lock();
        let entry = entries.entry(id.clone()).or_insert_with(|| Entry {
            record: AnalyzerRecord {
                id: id.clone(),
                link,
                address: address.to_string(),
                weight,
                health: Health::Unhealthy,
                since: SystemTime::now(),
                delivered: 0,
                failures: 0,
                last_error: None,
            },
            delivered: Arc::default(),
        });
        entry.record.weight = weight;
        entry.record.address = address.to_string();
        let health = if weight > 0.0 {
            Health::Healthy
        } else {
            Health::Draining
        };
        self.transition(&mut entry.record, health, "connected");
        entry.delivered.clone()
    }

    /// The analyzer changed its weight; 0 means draining.
    pub fn weight_changed(&self, id: &str, weight: f64) {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get_mut(id) {
            entry.record.weight = weight;
            let health = if weight > 0.0 {
                Health::Healthy
            } else {
                Health::Draining
            };
            if entry.record.health != Health::Unhealthy {
                self.transition(&mut entry.record, health, "weight changed");
            }
        }
    }

    /// The analyzer's connection ended (`failure` says why, if it was not a
    /// clean goodbye). Dial-in analyzers are forgotten; static ones stay
    /// listed as unhealthy until they are reached again.
    pub fn disconnected(&self, id: &str, reason: &str, failure: bool) {
        let mut entries = self.entries.lock();
        let Some(entry) = entries.get_mut(id) else {
            return;
        };
        if failure {
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

    /// Every known analyzer, by id.
    pub fn snapshot(&self) -> Vec<AnalyzerRecord> {
        self.entries
            .lock()
            .values()
            .map(|entry| AnalyzerRecord {
                delivered: entry.delivered.get(),
                ..entry.record.clone()
            })
            .collect()
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

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_connection_and_weight() {
        let stats = Arc::new(Stats::default());
        let directory = Directory::new(stats.clone());
        let id: Arc<str> = Arc::from("s1");
        directory.add_static(&id, "127.0.0.1:1", 2.0);
        assert_eq!(directory.snapshot()[0].health, Health::Unhealthy);

        let delivered = directory.connected(&id, Link::Static, "127.0.0.1:1", 2.0);
        delivered.add(5);
        directory.weight_changed("s1", 0.0);
        assert_eq!(directory.snapshot()[0].health, Health::Draining);
        directory.disconnected("s1", "write failed", true);
        let record = &directory.snapshot()[0];
        assert_eq!(record.health, Health::Unhealthy);
        assert_eq!((record.delivered, record.failures), (5, 1));
        assert_eq!(stats.health_changes.get(), 3);

        let dial: Arc<str> = Arc::from("d1");
        directory.connected(&dial, Link::DialIn, "127.0.0.1:2", 1.0);
        assert_eq!(directory.snapshot().len(), 2);
        directory.disconnected("d1", "closed", false);
        assert_eq!(
            directory.snapshot().len(),
            1,
            "dial-in analyzers are forgotten"
        );
    }
}
