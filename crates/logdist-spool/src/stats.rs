//! The counters behind [`SpoolStats`]: kept by the writer thread in
//! atomics, so reading them never waits for the disk or the append lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::SpoolStats;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    pub live_records: AtomicU64,
    pub appended: AtomicU64,
    pub written_bytes: AtomicU64,
    pub syncs: AtomicU64,
    /// `appended_ms` of the oldest segment holding a live record; 0: none.
    pub oldest_live_ms: AtomicU64,
    pub write_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SpoolStats {
        let oldest = self.oldest_live_ms.load(Relaxed);
        SpoolStats {
            bytes: self.bytes.load(Relaxed),
            segments: self.segments.load(Relaxed),
            live_records: self.live_records.load(Relaxed),
            appended: self.appended.load(Relaxed),
            written_bytes: self.written_bytes.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            oldest_unacked_ms: if oldest == 0 {
                0
            } else {
                unix_ms().saturating_sub(oldest)
            },
            write_errors: self.write_errors.load(Relaxed),
        }
    }
}

/// Milliseconds since the unix epoch (0 for a clock before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
