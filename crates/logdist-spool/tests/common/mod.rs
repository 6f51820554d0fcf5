//! Helpers shared by the spool's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use logdist_spool::{Record, RecordId, Recovered, Spool, SpoolConfig, SyncMode};

/// Bound on anything a test waits for: generous, so it only trips on a hang.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        sync: SyncMode::Write,
        max_batch_delay: Duration::ZERO,
        segment_bytes: 4096,
        max_bytes: 1 << 30,
    }
}

pub fn open(config: &SpoolConfig) -> (Arc<Spool>, Recovered) {
    Spool::open(config.clone()).expect("spool opens")
}

/// Record `i`: priorities, kinds and sizes vary (empty payloads included),
/// content derived from `i` so that a mix-up shows.
pub fn record(i: usize, max_len: usize) -> Record {
    let len = (i * 37) % (max_len + 1);
    Record {
        priority: (i % 8) as u8,
        kind: (i % 3) as u8,
        payload: Bytes::from(
            (0..len)
                .map(|j| (i * 31 + j * 7) as u8)
                .collect::<Vec<u8>>(),
        ),
    }
}

/// Bytes a record takes in its segment.
pub fn record_len(record: &Record) -> u64 {
    20 + record.payload.len() as u64
}

/// The directory's file names, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the spool")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

pub fn segment_file(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

pub fn ack_file(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:020}.ack"))
}

/// The highest-numbered segment file.
pub fn newest_segment(dir: &Path) -> u32 {
    files(dir)
        .iter()
        .filter_map(|name| name.strip_suffix(".seg")?.parse().ok())
        .max()
        .expect("a segment file")
}

/// Copies the spool's files (not the lock) into `to`.
pub fn copy_spool(from: &Path, to: &Path) {
    for name in files(from) {
        if name != "LOCK" {
            std::fs::copy(from.join(&name), to.join(&name)).expect("copy a spool file");
        }
    }
}

/// Ids and priorities as [`Recovered::records`] lists them.
pub fn index(records: &[(RecordId, Record)]) -> Vec<(RecordId, u8)> {
    records.iter().map(|(id, r)| (*id, r.priority)).collect()
}

/// Every record reads back as written.
pub fn assert_reads(spool: &Spool, records: &[(RecordId, Record)]) {
    for (id, record) in records {
        assert_eq!(
            &spool
                .read(*id)
                .unwrap_or_else(|err| panic!("read {id:?}: {err}")),
            record,
            "{id:?}"
        );
    }
}

pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete within {PATIENCE:?}"))
}

/// Whether `future` is ready at its first poll.
pub async fn ready_now(future: impl Future<Output = ()>) -> bool {
    tokio::select! {
        biased;
        () = future => true,
        () = std::future::ready(()) => false,
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}
