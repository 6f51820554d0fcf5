//! Health monitor: a TCP connect probe of the server every interval; changes
//! between healthy and unhealthy are logged, the state is shown in metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

/// The last probe's verdict, shared with the reporter.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<AtomicU8>);

impl Health {
    /// `None` before the first probe (the initial 0).
    pub fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            HEALTHY => Some(true),
            UNHEALTHY => Some(false),
            _ => None,
        }
    }

    /// Records a verdict; true if it changed.
    fn set(&self, healthy: bool) -> bool {
        let new = if healthy { HEALTHY } else { UNHEALTHY };
        self.0.swap(new, Ordering::Relaxed) != new
    }
}

/// Whether a TCP connection to `host:port` opens within `timeout`.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

/// Probes forever every `interval` (the caller aborts the task).
pub async fn monitor(host: String, port: u16, interval: Duration, health: Health) {
    let timeout = interval.min(Duration::from_secs(5));
    loop {
        let healthy = probe(&host, port, timeout).await;
        if health.set(healthy) {
            if healthy {
                tracing::info!(%host, port, "health: server reachable");
            } else {
                tracing::warn!(%host, port, "health: server unreachable");
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

        let health = Health::default();
        assert_eq!(health.get(), None);
        assert!(health.set(true));
        assert!(!health.set(true));
        assert!(health.set(false));
        assert_eq!(health.get(), Some(false));
    }
}
