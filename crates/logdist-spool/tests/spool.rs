//! The spool's contract on real files: append, durable, read, ack, reopen,
//! the budget, the lock, group commit, and errors.

mod common;

use std::collections::HashSet;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use logdist_spool::{Full, OpenError, Record, RecordId, Spool, SyncMode};

#[tokio::test]
async fn unacknowledged_records_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 2048;
    let (spool, recovered) = open(&config);
    assert!(recovered.records.is_empty());
    assert_eq!((recovered.torn_tails, recovered.skipped_segments), (0, 0));

    let mut written: Vec<(RecordId, Record)> = (0..300)
        .map(|i| {
            let record = record(i, 300);
            (spool.try_append(&record).unwrap(), record)
        })
        .collect();
    // Bigger than a segment: one of its own.
    let big = Record {
        priority: 2,
        kind: 200,
        payload: Bytes::from(vec![0xab; 5000]),
    };
    written.push((spool.try_append(&big).unwrap(), big));
    written.push((spool.try_append(&record(1, 10)).unwrap(), record(1, 10)));
    assert!(written.windows(2).all(|w| w[0].0 < w[1].0), "ids grow");
    let segments: HashSet<u32> = written.iter().map(|(id, _)| id.segment()).collect();
    assert!(segments.len() > 5, "{} segments", segments.len());

    let last = written.last().unwrap().0;
    bounded("durable", spool.durable(last)).await;
    assert!(written.iter().all(|(id, _)| spool.is_durable(*id)));
    assert_reads(&spool, &written);

    // Every record of the first segment, and every third one after.
    let first = written[0].0.segment();
    let (acked, live): (Vec<_>, Vec<_>) = written
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, (id, _))| id.segment() == first || i % 3 == 0);
    let acked: Vec<RecordId> = acked.into_iter().map(|(_, (id, _))| id).collect();
    let live: Vec<(RecordId, Record)> = live.into_iter().map(|(_, r)| r).collect();
    spool.ack(&acked);
    spool.ack(&acked[..10]); // twice: no-op
    spool.ack(&[RecordId((u64::from(first) + 1) << 32 | 17)]); // not a record: no-op
    spool.close();
    assert_eq!(spool.stats().live_records, live.len() as u64);
    assert_eq!(spool.stats().appended, written.len() as u64);
    drop(spool);

    // The first segment was deleted as soon as it was all acknowledged.
    let names = files(dir.path());
    assert!(
        !names.iter().any(|n| n.starts_with(&format!("{first:020}"))),
        "{names:?}"
    );
    // A segment file per segment with a live record, and the last one.
    let expected_segments: HashSet<u32> = live.iter().map(|(id, _)| id.segment()).collect();
    let on_disk: HashSet<u32> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".seg")?.parse().ok())
        .collect();
    assert!(on_disk.is_superset(&expected_segments));

    let (spool, recovered) = open(&config);
    assert_eq!(recovered.records, index(&live));
    assert_eq!((recovered.torn_tails, recovered.torn_bytes), (0, 0));
    assert_reads(&spool, &live);
    let stats = spool.stats();
    assert_eq!(stats.live_records, live.len() as u64);
    assert_eq!(stats.segments, expected_segments.len() as u64);
    let sizes: u64 = files(dir.path())
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len())
        .sum();
    assert_eq!(stats.bytes, sizes);
    assert!(stats.oldest_unacked_ms < 60_000);

    // New appends go to a new segment; everything acknowledged, then
    // nothing is left after a reopen.
    let id = spool.try_append(&record(5, 50)).unwrap();
    assert!(id.segment() > *on_disk.iter().max().unwrap());
    let all: Vec<RecordId> = live.iter().map(|(id, _)| *id).chain([id]).collect();
    spool.ack(&all);
    drop(spool);
    let (spool, recovered) = open(&config);
    assert!(recovered.records.is_empty());
    assert_eq!(files(dir.path()), ["LOCK"]);
    assert_eq!(spool.stats().segments, 0);
}

#[tokio::test]
async fn a_segment_acknowledged_while_current_keeps_what_came_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 200;
    let (spool, _) = open(&config);
    let first = spool.try_append(&record(1, 30)).unwrap();
    bounded("durable", spool.durable(first)).await;
    spool.ack(&[first]);
    // The writer saw it all acknowledged; more records go to it, then the
    // next segment begins.
    let later: Vec<_> = (2..12)
        .map(|i| (spool.try_append(&record(i, 30)).unwrap(), record(i, 30)))
        .collect();
    assert_eq!(later[0].0.segment(), first.segment());
    assert!(later.last().unwrap().0.segment() > first.segment());
    bounded("durable", spool.durable(later.last().unwrap().0)).await;
    spool.close();
    assert_reads(&spool, &later);
    drop(spool);
    let (_, recovered) = open(&config);
    assert_eq!(recovered.records, index(&later));
}

#[tokio::test]
async fn reads_of_gone_or_bogus_records_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 100;
    let (spool, _) = open(&config);
    let a = spool.try_append(&record(3, 40)).unwrap();
    let b = spool.try_append(&record(4, 40)).unwrap();
    let c = spool.try_append(&record(5, 40)).unwrap();
    assert_ne!(a.segment(), c.segment());
    bounded("durable", spool.durable(c)).await;
    assert_eq!(spool.read(a).unwrap(), record(3, 40));
    // Not a record's offset.
    let bogus = RecordId(b.0 + 1);
    assert_eq!(
        spool.read(bogus).unwrap_err().kind(),
        ErrorKind::InvalidData
    );
    // Acknowledged, segment deleted (at the latest with the next batch).
    let same_segment: Vec<RecordId> = [a, b]
        .into_iter()
        .filter(|id| id.segment() == a.segment())
        .collect();
    spool.ack(&same_segment);
    let d = spool.try_append(&record(6, 10)).unwrap();
    bounded("durable", spool.durable(d)).await;
    spool.close();
    assert!(!segment_file(dir.path(), a.segment()).exists());
    assert_eq!(spool.read(a).unwrap_err().kind(), ErrorKind::NotFound);
    // A segment never written.
    let never = RecordId(u64::from(d.segment() + 5) << 32 | 16);
    assert_eq!(spool.read(never).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(spool.read(c).unwrap(), record(5, 40));
}

#[test]
fn a_second_open_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (first, _) = open(&config);
    match Spool::open(config.clone()) {
        Err(OpenError::Locked {
            dir: locked,
            holder,
        }) => {
            assert_eq!(locked, dir.path());
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = Spool::open(config.clone()).unwrap_err().to_string();
    assert!(message.contains("in use"), "{message}");
    first.close();
    drop(first);
    let (again, _) = open(&config);
    drop(again);
}

#[tokio::test]
async fn full_at_max_bytes_and_room_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 1000;
    config.max_bytes = 3000;
    let (spool, _) = open(&config);
    let record = Record {
        priority: 1,
        kind: 0,
        payload: Bytes::from(vec![1; 100]),
    };
    let mut ids = Vec::new();
    while let Ok(id) = spool.try_append(&record) {
        ids.push(id);
        assert!(ids.len() < 100, "never full");
    }
    // 120-byte records and 16-byte headers: 3 segments of 8 make 2928
    // bytes, a fourth would pass 3000.
    assert_eq!(ids.len(), 3 * 8);
    assert!(!ready_now(spool.room()).await);

    let waiting = tokio::spawn({
        let spool = Arc::clone(&spool);
        async move { spool.room().await }
    });
    // Acknowledging part of a segment frees nothing.
    spool.ack(&ids[..4]);
    bounded("durable", spool.durable(*ids.last().unwrap())).await;
    assert_eq!(spool.try_append(&record), Err(Full));
    // The rest of the first segment: it is deleted, room for 8 more.
    spool.ack(&ids[4..8]);
    bounded("room", waiting).await.unwrap();
    for _ in 0..8 {
        spool.try_append(&record).unwrap();
    }
    assert_eq!(spool.try_append(&record), Err(Full));
    spool.close();
    assert_eq!(spool.try_append(&record), Err(Full), "closed");
    assert!(!ready_now(spool.room()).await, "no room after close");
}

#[tokio::test]
async fn a_record_bigger_than_max_bytes_fits_an_empty_spool() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 1000;
    config.max_bytes = 3000;
    let (spool, _) = open(&config);
    let huge = Record {
        priority: 0,
        kind: 1,
        payload: Bytes::from(vec![9; 10_000]),
    };
    let small = record(1, 10);
    let id = spool.try_append(&huge).unwrap();
    assert_eq!(spool.try_append(&small), Err(Full));
    assert!(!ready_now(spool.room()).await);
    bounded("durable", spool.durable(id)).await;
    assert_eq!(spool.read(id).unwrap(), huge);
    spool.ack(&[id]);
    bounded("room", spool.room()).await;
    // Its segment is still the one appended to; the next append begins a
    // new one, so it can go.
    let next = spool.try_append(&small).unwrap();
    assert!(next.segment() > id.segment());
    bounded("durable", spool.durable(next)).await;
    spool.ack(&[next]);
    spool.close();
    assert!(!segment_file(dir.path(), id.segment()).exists());
    assert_eq!(spool.stats().live_records, 0);

    // And after a reopen, with nothing live.
    drop(spool);
    let (spool, _) = open(&config);
    spool.try_append(&huge).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_syncs_between_appenders() {
    const TASKS: usize = 50;
    const EACH: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.sync = SyncMode::Fsync;
    config.max_batch_delay = Duration::from_millis(2);
    config.segment_bytes = 1 << 20;
    let (spool, _) = open(&config);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    let record = record(task * EACH + i, 200);
                    let id = spool.try_append(&record).unwrap();
                    spool.durable(id).await;
                    assert!(spool.is_durable(id));
                    ids.push((id, record));
                }
                ids
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in tasks {
        written.extend(bounded("appenders", task).await.unwrap());
    }
    let stats = spool.stats();
    let appends = (TASKS * EACH) as u64;
    eprintln!("{} syncs for {appends} appends", stats.syncs);
    assert_eq!(stats.appended, appends);
    assert!(
        stats.syncs < appends / 10,
        "{} syncs for {appends} appends",
        stats.syncs
    );
    assert!(stats.syncs > 0);
    assert_eq!(stats.write_errors, 0);
    written.sort_by_key(|(id, _)| *id);
    let ids: HashSet<RecordId> = written.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), written.len(), "ids are unique");
    assert_reads(&spool, &written);
    drop(spool);
    let (_, recovered) = open(&config);
    assert_eq!(recovered.records, index(&written));
}

#[tokio::test]
async fn write_mode_is_durable_once_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    assert_eq!(config.sync, SyncMode::Write);
    let (spool, _) = open(&config);
    let written: Vec<_> = (0..50)
        .map(|i| (spool.try_append(&record(i, 100)).unwrap(), record(i, 100)))
        .collect();
    bounded("durable", spool.durable(written.last().unwrap().0)).await;
    assert_reads(&spool, &written);
    assert_eq!(spool.stats().syncs, 0);
    drop(spool);
    let (spool, recovered) = open(&config);
    assert_eq!(recovered.records, index(&written));
    assert_reads(&spool, &written);
}

#[tokio::test]
async fn not_durable_until_the_batch_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_batch_delay = Duration::from_secs(3600);
    let (spool, _) = open(&config);
    let id = spool.try_append(&record(7, 100)).unwrap();
    assert!(!spool.is_durable(id));
    assert_eq!(spool.read(id).unwrap_err().kind(), ErrorKind::WouldBlock);
    let waiting = tokio::spawn({
        let spool = Arc::clone(&spool);
        async move { spool.durable(id).await }
    });
    assert!(!ready_now(spool.durable(id)).await);
    // Close writes what is queued at once.
    spool.close();
    assert!(spool.is_durable(id));
    bounded("durable", waiting).await.unwrap();
    assert_eq!(spool.read(id).unwrap(), record(7, 100));
}

#[tokio::test]
async fn a_full_batch_does_not_wait_for_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_batch_delay = Duration::from_secs(3600);
    config.segment_bytes = 8 << 20;
    let (spool, _) = open(&config);
    let payload = Bytes::from(vec![5; 64 * 1024]);
    let ids: Vec<_> = (0..20)
        .map(|_| {
            spool
                .try_append(&Record {
                    priority: 0,
                    kind: 0,
                    payload: payload.clone(),
                })
                .unwrap()
        })
        .collect();
    // 1.25 MiB appended: the writer takes a batch once 1 MiB is pending,
    // and that batch holds the first record. (The last one may fall into
    // a second, partial batch, which does wait for the delay.)
    bounded("durable", spool.durable(ids[0])).await;
}

#[tokio::test]
async fn write_errors_are_counted_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let config = config(&spool_dir);
    let (spool, _) = open(&config);
    // The directory vanishes under the spool: creating the segment fails.
    std::fs::remove_dir_all(&spool_dir).unwrap();
    let id = spool.try_append(&record(9, 100)).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while spool.stats().write_errors == 0 {
        assert!(std::time::Instant::now() < deadline, "no write error seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!spool.is_durable(id));
    std::fs::create_dir(&spool_dir).unwrap();
    bounded("durable after the retry", spool.durable(id)).await;
    assert_eq!(spool.read(id).unwrap(), record(9, 100));
}

#[tokio::test]
async fn stats_follow_appends_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 500;
    let (spool, _) = open(&config);
    assert_eq!(spool.stats(), Default::default());
    let ids: Vec<RecordId> = (0..30)
        .map(|i| spool.try_append(&record(i, 60)).unwrap())
        .collect();
    bounded("durable", spool.durable(*ids.last().unwrap())).await;
    spool.ack(&ids[..ids.len() - 1]);
    spool.close();
    let stats = spool.stats();
    assert_eq!(stats.appended, 30);
    assert_eq!(stats.live_records, 1);
    assert_eq!(stats.segments, 1, "only the last segment is left");
    assert_eq!(
        stats.bytes,
        std::fs::metadata(segment_file(dir.path(), ids[29].segment()))
            .unwrap()
            .len()
    );
    let record_bytes: u64 = (0..30).map(|i| record_len(&record(i, 60))).sum();
    assert_eq!(stats.written_bytes, record_bytes);
    assert!(stats.oldest_unacked_ms < 60_000);
    assert_eq!(stats.syncs, 0, "write mode");
}

#[test]
fn futures_are_send() {
    fn send<T: Send>(_: T) {}
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(&config(dir.path()));
    send(spool.durable(RecordId(1)));
    send(spool.room());
    fn shared<T: Send + Sync>() {}
    shared::<Spool>();
}
