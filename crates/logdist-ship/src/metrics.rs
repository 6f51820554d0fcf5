//! Counters of the shipper, reported every `METRICS_INTERVAL` as one log line
//! (interval figures, then totals), like the seed's snapshot-and-reset reporter.

use std::time::Duration;

use crate::config::ServerAddress;

/// Counters over one interval (reset at each report) and since start.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub interval: Counters,
    pub total: Counters,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Lines taken from the readers.
    pub read: u64,
    /// Lines acknowledged ok.
    pub sent: u64,
    /// Lines rejected (error ack).
    pub failed: u64,
    /// Lines written again after a connection was lost.
    pub resent: u64,
    /// Sum and max of send → ack latencies, over `sent + failed` acks.
    pub latency_sum: Duration,
    pub latency_max: Duration,
    pub reconnects: u64,
    /// Connections made to another server than the last one.
    pub failovers: u64,
}

impl Counters {
    pub fn acked(&self) -> u64 {
        self.sent + self.failed
    }

    pub fn latency_avg(&self) -> Duration {
        match self.acked() {
            0 => Duration::ZERO,
            n => self.latency_sum / u32::try_from(n).unwrap_or(u32::MAX),
        }
    }
}

impl Metrics {
    fn both(&mut self, f: impl Fn(&mut Counters)) {
        f(&mut self.interval);
        f(&mut self.total);
    }

    pub fn read(&mut self) {
        self.both(|c| c.read += 1);
    }

    pub fn acked(&mut self, ok: bool, latency: Duration) {
        self.both(|c| {
            if ok {
                c.sent += 1;
            } else {
                c.failed += 1;
            }
            c.latency_sum += latency;
            c.latency_max = c.latency_max.max(latency);
        });
    }

    pub fn resent(&mut self, n: u64) {
        self.both(|c| c.resent += n);
    }

    pub fn reconnected(&mut self) {
        self.both(|c| c.reconnects += 1);
    }

    pub fn failed_over(&mut self) {
        self.both(|c| c.failovers += 1);
    }

    /// The report line for the interval just ended; resets the interval.
    /// `server` is the one connected to (`None`: not connected), `reachable`
    /// the health probe's count of reachable servers out of those probed.
    pub fn report(
        &mut self,
        buffer_used: usize,
        buffer_capacity: usize,
        server: Option<&ServerAddress>,
        reachable: Option<(usize, usize)>,
    ) -> String {
        let i = std::mem::take(&mut self.interval);
        let t = &self.total;
        let server = match server {
            Some(server) => server.to_string(),
            None => "none".into(),
        };
        let reachable = match reachable {
            Some((reachable, probed)) => format!(" reachable={reachable}/{probed}"),
            None => String::new(),
        };
        format!(
            "metrics: sent={} failed={} resent={} read={} reconnects={} failovers={} latency_avg={:.1}ms \
             latency_max={:.1}ms buffer={}/{} ({:.0}%) server={server}{reachable} | total sent={} failed={} \
             resent={} read={} failovers={}",
            i.sent,
            i.failed,
            i.resent,
            i.read,
            i.reconnects,
            i.failovers,
            i.latency_avg().as_secs_f64() * 1e3,
            i.latency_max.as_secs_f64() * 1e3,
            buffer_used,
            buffer_capacity,
            100.0 * buffer_used as f64 / buffer_capacity.max(1) as f64,
            t.sent,
            t.failed,
            t.resent,
            t.read,
            t.failovers,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_reset() {
        let mut m = Metrics::default();
        m.read();
        m.read();
        m.acked(true, Duration::from_millis(2));
        m.acked(false, Duration::from_millis(4));
        m.resent(3);
        m.reconnected();
        m.failed_over();
        assert_eq!(m.interval.latency_avg(), Duration::from_millis(3));
        let server = ServerAddress::new("::1", 9000);
        let line = m.report(5, 10, Some(&server), Some((1, 2)));
        assert!(
            line.contains("sent=1 failed=1 resent=3 read=2 reconnects=1 failovers=1"),
            "{line}"
        );
        assert!(
            line.contains("latency_avg=3.0ms latency_max=4.0ms"),
            "{line}"
        );
        assert!(
            line.contains("buffer=5/10 (50%) server=[::1]:9000 reachable=1/2 |"),
            "{line}"
        );
        assert!(line.ends_with("read=2 failovers=1"), "{line}");
        assert_eq!(m.interval, Counters::default());
        assert_eq!((m.total.sent, m.total.failed, m.total.resent), (1, 1, 3));
        m.acked(true, Duration::from_millis(1));
        let line = m.report(0, 10, None, None);
        assert!(
            line.contains("sent=1 failed=0 resent=0 read=0 reconnects=0 failovers=0"),
            "{line}"
        );
        assert!(line.contains("(0%) server=none |"), "{line}");
    }
}
