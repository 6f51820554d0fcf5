//! `limits.idle_timeout` and `limits.frame_timeout`: emitters that send
//! nothing, or begin a message and never complete it, are closed and counted
//! (stats, `/api/v1/stats`, `/metrics`); emitters that make progress are not.

mod support;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use logdist::closes::CloseReason;
use logdist_wire::{encode_frame, encode_gzip_frame};
use support::{SeedAnalyzer, TestServer, connect, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Reads until the server closes the connection; returns how long it took.
async fn closed_after(stream: &mut (impl AsyncRead + Unpin)) -> Duration {
    let started = Instant::now();
    let mut sink = vec![0u8; 64 * 1024];
    within("the server to close the connection", async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    started.elapsed()
}

/// `/metrics` and `/api/v1/stats` agree with the counters.
async fn assert_exported(server: &TestServer, idle: u64, frame: u64) {
    let stats: serde_json::Value = reqwest::get(format!("{}/api/v1/stats", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let closes = &stats["totals"]["emitter_closes"];
    assert_eq!(closes["idle_timeout"], idle, "{closes}");
    assert_eq!(closes["frame_timeout"], frame, "{closes}");
    let metrics = reqwest::get(format!("{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, n) in [("idle_timeout", idle), ("frame_timeout", frame)] {
        let sample = format!("logdist_emitter_closes_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&sample), "no {sample:?} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_silent_emitters_and_spares_busy_ones() {
    // Eight times the busy emitter's 100 ms cadence: a loaded machine that
    // delays a send (or logdist's read of it) by a few hundred ms is no idler.
    const IDLE: Duration = Duration::from_millis(800);
    let server = TestServer::start_with(|c| {
        c.limits.idle_timeout = IDLE;
        c.limits.frame_timeout = Duration::from_secs(60);
    })
    .await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    // One sends a message every 100 ms for two idle timeouts; the other nothing.
    let mut busy = connect(server.emitters).await;
    let mut silent = connect(server.acked_emitters).await;
    let silent_closed = tokio::spawn(async move { closed_after(&mut silent).await });
    for i in 0..16u8 {
        busy.write_all(&support::frames(&[(1, &[i])]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = silent_closed.await.unwrap();
    assert!(
        took >= IDLE - Duration::from_millis(50),
        "closed after {took:?}"
    );
    // The busy one is still served.
    busy.write_all(&support::frames(&[(1, b"last")]))
        .await
        .unwrap();
    let got = analyzer.take_and_ack(17).await;
    assert_eq!(&got[16].payload()[..], b"last");
    server
        .wait_for("one idle close", |s| {
            s.emitter_closes(CloseReason::IdleTimeout) == 1
        })
        .await;
    assert_exported(&server, 1, 0).await;

    // Silent again for longer than the timeout: closed too.
    let took = closed_after(&mut busy).await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    server
        .wait_for("two idle closes", |s| {
            s.emitter_closes(CloseReason::IdleTimeout) == 2
        })
        .await;
    let stopped = server.shutdown().await;
    assert_eq!(stopped.stats.accepted, 17);
    assert_eq!(stopped.stats.emitter_closes(CloseReason::FrameTimeout), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_timeout_closes_a_message_that_never_completes() {
    const FRAME: Duration = Duration::from_millis(300);
    let server = TestServer::start_with(|c| {
        c.limits.idle_timeout = Duration::from_secs(60);
        c.limits.frame_timeout = FRAME;
    })
    .await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    // A binary frame, a gzip frame and a line, each trickled a byte every
    // 50 ms (so the idle timeout alone would never fire), never completed.
    let mut binary = BytesMut::new();
    encode_frame(1, &[b'x'; 1000], &mut binary);
    let mut gzip = BytesMut::new();
    encode_gzip_frame(b"{\"a\":1}\n", &mut gzip);
    let line = format!("{{\"pad\":\"{}\"}}\n", "y".repeat(1000));
    let mut trickles = Vec::new();
    for partial in [&binary[..], &gzip[..], line.as_bytes()] {
        let (mut reader, mut writer) = connect(server.emitters).await.into_split();
        let bytes = partial[..partial.len() - 1].to_vec();
        tokio::spawn(async move {
            for byte in bytes {
                if writer.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        trickles.push(tokio::spawn(async move { closed_after(&mut reader).await }));
    }
    // A frame in pieces that completes within the timeout is taken, and the
    // connection goes on after it.
    let mut slow_but_fine = connect(server.emitters).await;
    let mut frame = BytesMut::new();
    encode_frame(2, b"in pieces", &mut frame);
    for piece in frame.chunks(4) {
        slow_but_fine.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for trickle in trickles {
        let took = trickle.await.unwrap();
        assert!(
            took >= FRAME - Duration::from_millis(50) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
    }
    slow_but_fine
        .write_all(&support::frames(&[(2, b"after")]))
        .await
        .unwrap();
    let got = analyzer.take_and_ack(2).await;
    assert_eq!(&got[0].payload()[..], b"in pieces");
    assert_eq!(&got[1].payload()[..], b"after");
    server
        .wait_for("three frame closes", |s| {
            s.emitter_closes(CloseReason::FrameTimeout) == 3
        })
        .await;
    assert_exported(&server, 0, 3).await;
    let stopped = server.shutdown().await;
    assert_eq!(stopped.stats.accepted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_never_read_count_as_idle() {
    const IDLE: Duration = Duration::from_millis(500);
    let server = TestServer::start_with(|c| c.limits.idle_timeout = IDLE).await;
    // 1 M one-byte lines, all rejected: ~95 MB of error replies, never read.
    let mut stream = connect(server.acked_emitters).await;
    let mut bomb = BytesMut::new();
    encode_gzip_frame(&b"1\n".repeat(1 << 20), &mut bomb);
    stream.write_all(&bomb).await.unwrap();
    server
        .wait_for("the unread replies to count as idle", |s| {
            s.emitter_closes(CloseReason::IdleTimeout) == 1
        })
        .await;
    let stopped = server.shutdown().await;
    let rejected = stopped.stats.rejected_total();
    assert!(
        rejected > 0 && rejected < 1 << 20,
        "{rejected} lines rejected: the connection should have stopped in between"
    );
}
