//! Health monitor: a TCP connect probe of every server each interval; a
//! server becoming reachable or unreachable is logged, naming it, and the
//! metrics show how many servers are reachable. Every server is probed, not
//! only the one connected to, so the log tells when a lost server is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::ServerAddress;

const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

/// The last probe's verdict on each server (in list order), shared with the
/// reporter.
#[derive(Clone, Debug)]
pub struct Health(Arc<[AtomicU8]>);

impl Health {
    /// No verdict yet on any of `servers` servers.
    pub fn new(servers: usize) -> Health {
        Health((0..servers).map(|_| AtomicU8::new(0)).collect())
    }

    /// How many servers answered their last probe, out of how many were
    /// probed; `None` before the first probe.
    pub fn reachable(&self) -> Option<(usize, usize)> {
        let verdicts = self.0.iter().map(|v| v.load(Ordering::Relaxed));
        let (reachable, probed) = verdicts.fold((0, 0), |(reachable, probed), v| match v {
            HEALTHY => (reachable + 1, probed + 1),
            UNHEALTHY => (reachable, probed + 1),
            _ => (reachable, probed),
        });
        (probed > 0).then_some((reachable, probed))
    }

    /// Records a verdict on server `index`; true if it changed.
    fn set(&self, index: usize, healthy: bool) -> bool {
        let new = if healthy { HEALTHY } else { UNHEALTHY };
        self.0[index].swap(new, Ordering::Relaxed) != new
    }
}

/// Whether a TCP connection to `host:port` opens within `timeout`.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

/// Probes `servers` (all at once, so one that does not answer delays no
/// other) forever every `interval` (the caller aborts the task).
pub async fn monitor(servers: Vec<ServerAddress>, interval: Duration, health: Health) {
    let timeout = interval.min(Duration::from_secs(5));
    loop {
        let probes = servers.iter().map(|s| probe(&s.host, s.port, timeout));
        let verdicts = futures_util::future::join_all(probes).await;
        for (index, (server, healthy)) in servers.iter().zip(verdicts).enumerate() {
            if health.set(index, healthy) {
                if healthy {
                    tracing::info!(%server, "health: server reachable");
                } else {
                    tracing::warn!(%server, "health: server unreachable");
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn healthy_then_unhealthy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(probe("127.0.0.1", port, Duration::from_secs(2)).await);
        drop(listener);
        assert!(!probe("127.0.0.1", port, Duration::from_secs(2)).await);

        let health = Health::new(2);
        assert_eq!(health.reachable(), None);
        assert!(health.set(0, true));
        assert!(!health.set(0, true));
        assert_eq!(health.reachable(), Some((1, 1)));
        assert!(health.set(1, true));
        assert!(health.set(0, false));
        assert_eq!(health.reachable(), Some((1, 2)));
    }
}
