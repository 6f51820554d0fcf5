//! Baselines for the spool's hot paths: `try_append` of 256-byte records
//! (the writer running alongside, as in production), append + `durable`
//! batches (group commit, fsync and write modes), and reading a backlog
//! back in id order.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logdist_spool::{Record, RecordId, Spool, SpoolConfig, SyncMode};

const PAYLOAD_BYTES: usize = 256;

fn record() -> Record {
    Record {
        priority: 3,
        kind: 1,
        payload: Bytes::from(vec![b'x'; PAYLOAD_BYTES]),
    }
}

fn open(dir: &std::path::Path, sync: SyncMode, max_batch_delay: Duration) -> Arc<Spool> {
    let (spool, _) = Spool::open(SpoolConfig {
        dir: dir.to_path_buf(),
        sync,
        max_batch_delay,
        segment_bytes: 64 << 20,
        max_bytes: 8 << 30,
    })
    .expect("the spool opens");
    spool
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
}

/// `try_append` alone; between samples everything is acknowledged (and the
/// writer catches up) so the files stay small.
fn bench_try_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spool = open(dir.path(), SyncMode::Write, Duration::from_millis(2));
    let runtime = runtime();
    let record = record();
    let mut group = c.benchmark_group("try_append");
    group.throughput(Throughput::Elements(1));
    group.bench_function("256B", |b| {
        b.iter_custom(|iters| {
            let mut ids = Vec::with_capacity(iters as usize);
            let start = Instant::now();
            for _ in 0..iters {
                ids.push(black_box(spool.try_append(&record).expect("room")));
            }
            let elapsed = start.elapsed();
            if let Some(&last) = ids.last() {
                runtime.block_on(spool.durable(last));
            }
            spool.ack(&ids);
            elapsed
        });
    });
    group.finish();
}

/// A batch appended, then awaited: what one connection's burst costs.
fn bench_append_durable(c: &mut Criterion) {
    let runtime = runtime();
    let record = record();
    let mut group = c.benchmark_group("append_durable");
    for (sync, name) in [(SyncMode::Fsync, "fsync"), (SyncMode::Write, "write")] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let spool = open(dir.path(), sync, Duration::ZERO);
        for batch in [64usize, 1024] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(format!("{name}/{batch}x256B"), |b| {
                let mut ids: Vec<RecordId> = Vec::with_capacity(batch);
                b.iter(|| {
                    ids.clear();
                    for _ in 0..batch {
                        ids.push(spool.try_append(&record).expect("room"));
                    }
                    runtime.block_on(spool.durable(*ids.last().expect("a batch")));
                    spool.ack(&ids);
                });
            });
        }
    }
    group.finish();
}

/// Reading a backlog back in id order (what the feeder does after a
/// restart), from the page cache.
fn bench_read(c: &mut Criterion) {
    const BACKLOG: usize = 100_000;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spool = open(dir.path(), SyncMode::Write, Duration::ZERO);
    let record = record();
    let ids: Vec<RecordId> = (0..BACKLOG)
        .map(|_| spool.try_append(&record).expect("room"))
        .collect();
    runtime().block_on(spool.durable(*ids.last().expect("a backlog")));
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sequential/256B", |b| {
        let mut next = 0;
        b.iter(|| {
            let read = spool.read(ids[next]).expect("readable");
            next = (next + 1) % BACKLOG;
            black_box(read)
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench_try_append, bench_append_durable, bench_read
}
criterion_main!(benches);
