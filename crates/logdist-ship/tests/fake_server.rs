//! The shipper against fake servers that drop the connection, refuse it, or
//! answer errors.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::net::TcpListener;

fn lines_file(dir: &tempfile::TempDir, n: usize) -> (std::path::PathBuf, Vec<String>) {
    let file = dir.path().join("app.log");
    let lines = log_lines("fake", 0, n);
    append(&file, &lines);
    (file, expected(&lines))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_mid_batch_is_resent_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 400);
    for compress in [false, true] {
        // First connection: ack 37 lines, then close; later ones ack everything.
        let server = FakeServer::start(Arc::new(|conn, n, _| {
            (conn > 0 || n < 37).then_some(Reply::Ok)
        }))
        .await;
        let mut config = ship_config(&[&file], server.addr);
        config.batch_size = 10;
        config.compress = compress;
        let summary = within("run", logdist_ship::run(config, std::future::pending()))
            .await
            .unwrap();
        assert_eq!(summary.exit_code(), 0, "{summary}");
        assert_eq!(summary.shipped, 400);
        assert!(summary.resent > 0, "{summary}");
        assert!(
            server.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "reconnected"
        );
        // Every line acked exactly once: nothing acked was sent again.
        assert_exactly_once(&server.acked_ok(), &want);
        let on_first = server.seen().iter().filter(|s| s.connection == 0).count();
        assert_eq!(on_first, 37);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_after_acks_still_delivers_every_line() {
    // A hard drop: the fake reads a batch, acks part, and vanishes with a
    // reset (unread input). At least once: every line acked, maybe twice.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 200);
    let mut config = ship_config(&[&file], addr);
    config.batch_size = 25;
    let (_stop, shipper) = spawn_shipper(config);
    let (mut stream, _) = within("accept", listener.accept()).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while got.iter().filter(|b| **b == b'\n').count() < 20 {
            let n = within("read", stream.read(&mut buf)).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        let ok = "{\"status\":\"ok\",\"message\":\"received\"}\n".repeat(5);
        stream.write_all(ok.as_bytes()).await.unwrap();
        stream.set_zero_linger().unwrap();
    }
    drop(stream);
    // The same port now serves a fake that acks everything.
    drop(listener);
    let rest = FakeServer::serve(
        TcpListener::bind(addr).await.unwrap(),
        Arc::new(|_, _, _| Some(Reply::Ok)),
    );
    let summary = within("shipper", shipper).await.unwrap().unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!(summary.shipped, want.len() as u64);
    assert!(summary.resent >= 15, "{summary}");
    // Everything past the 5 acked on the reset connection was acked by the
    // second server, once.
    let acked = rest.acked_ok();
    assert!(want[5..].iter().all(|l| acked.contains(l)));
    assert_eq!(
        multiset(acked.clone()).len(),
        acked.len(),
        "no duplicate acks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_backs_off_until_the_server_appears() {
    let addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 100);
    let mut config = ship_config(&[&file], addr);
    config.resilient = true;
    config.max_retries = 0; // retry forever
    config.batch_size = 7;
    let (_stop, shipper) = spawn_shipper(config);
    // Let it fail a few times on purpose (nothing listens yet).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!shipper.is_finished());
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = FakeServer::serve(listener, Arc::new(|_, _, _| Some(Reply::Ok)));
    let summary = within("shipper", shipper).await.unwrap().unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_exactly_once(&server.acked_ok(), &want);
    assert_eq!(summary.resent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_gives_up_after_max_retries() {
    let addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = lines_file(&dir, 10);
    let mut config = ship_config(&[&file], addr);
    config.max_retries = 3;
    config.checkpoint = Some(dir.path().join("cp"));
    let summary = within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert!(summary.gave_up, "{summary}");
    assert_eq!(summary.exit_code(), 1);
    assert_eq!(summary.shipped, 0);
    assert!(summary.undelivered > 0);
    assert!(
        !dir.path().join("cp").exists(),
        "nothing acked, nothing checkpointed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_count_as_rejected_and_are_not_resent() {
    let server = FakeServer::start(Arc::new(|_, _, line| {
        Some(if line.contains("free-form") {
            Reply::Error
        } else {
            Reply::Ok
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 300);
    let bad = want.iter().filter(|l| l.contains("free-form")).count();
    assert_eq!(bad, 30);
    for compress in [false, true] {
        server.seen.lock().unwrap().clear();
        let mut config = ship_config(&[&file], server.addr);
        config.batch_size = 8;
        config.compress = compress;
        let summary = within("run", logdist_ship::run(config, std::future::pending()))
            .await
            .unwrap();
        assert_eq!((summary.rejected, summary.shipped), (30, 270), "{summary}");
        assert_eq!(summary.exit_code(), 1);
        // Each line seen once: rejected ones were not sent again.
        let seen: Vec<String> = server.seen().into_iter().map(|s| s.line).collect();
        assert_exactly_once(&seen, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_error_reply_for_a_gzip_frame_rejects_the_whole_frame() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let mut lines = log_lines("frame", 0, 20);
    lines[12] = "2024-01-15 08:00:00 ERROR BADFRAME".into();
    append(&file, &lines);
    // Nothing listens at first: the reader has queued the whole file by the
    // time the server accepts, so the frames are exactly lines 0-4, 5-9,
    // 10-14 and 15-19.
    let addr = free_port().await;
    let mut config = ship_config(&[&file], addr);
    config.compress = true;
    config.batch_size = 5;
    config.resilient = true;
    config.max_retries = 0;
    let (_stop, shipper) = spawn_shipper(config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = FakeServer::serve(
        TcpListener::bind(addr).await.unwrap(),
        Arc::new(|_, _, _| Some(Reply::Ok)),
    );
    let summary = within("shipper", shipper).await.unwrap().unwrap();
    // The frame holding line 12 is rejected as a whole: one reply, five lines;
    // the shipper stays in step and the other frames are acked.
    assert_eq!(summary.rejected + summary.shipped, 20, "{summary}");
    assert!(summary.rejected >= 2, "{summary}");
    assert_eq!(summary.rejected, 5, "{summary}");
    let rejected: Vec<_> = server.seen().into_iter().filter(|s| !s.acked_ok).collect();
    assert_eq!(rejected.len() as u64, summary.rejected, "{rejected:?}");
    assert!(rejected.iter().any(|s| s.line.contains("BADFRAME")));
    assert_eq!(summary.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_reply_takes_no_line_and_everything_is_resent() {
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 100);
    for compress in [false, true] {
        // The first connection acks 3 lines, then announces it closes.
        let server = FakeServer::start(Arc::new(|conn, n, _| {
            Some(if conn == 0 && n == 3 {
                Reply::Closing
            } else {
                Reply::Ok
            })
        }))
        .await;
        let cp = dir.path().join(format!("cp-{compress}"));
        let mut config = ship_config(&[&file], server.addr);
        config.batch_size = 10;
        config.compress = compress;
        config.checkpoint = Some(cp.clone());
        let summary = within("run", logdist_ship::run(config, std::future::pending()))
            .await
            .unwrap();
        // Nothing counted as rejected, nothing lost: every line acked once.
        assert_eq!((summary.rejected, summary.shipped), (0, 100), "{summary}");
        assert_eq!(summary.exit_code(), 0, "{summary}");
        assert!(summary.resent > 0, "{summary}");
        assert_exactly_once(&server.acked_ok(), &want);
        let size = std::fs::metadata(&file).unwrap().len();
        let checkpoint = std::fs::read_to_string(&cp).unwrap();
        assert!(
            checkpoint.contains(&format!("\"offset\":{size}")),
            "{checkpoint}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_closing_replies_reduce_the_batch_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 60);
    // Twice in a row the server closes on the first line; the third connection
    // (lines now one per frame, uncompressed) is served.
    let server = FakeServer::start(Arc::new(|conn, n, _| {
        Some(if conn < 2 && n == 0 {
            Reply::Closing
        } else {
            Reply::Ok
        })
    }))
    .await;
    let mut config = ship_config(&[&file], server.addr);
    config.batch_size = 10;
    config.compress = true;
    let summary = within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!((summary.rejected, summary.shipped), (0, 60), "{summary}");
    assert_exactly_once(&server.acked_ok(), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_closing_on_the_same_line_makes_the_run_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let mut lines = log_lines("stuck", 0, 30);
    lines[5] = "POISON".into();
    append(&file, &lines);
    let server = FakeServer::start(Arc::new(|_, _, line| {
        Some(if line.contains("POISON") {
            Reply::Closing
        } else {
            Reply::Ok
        })
    }))
    .await;
    let mut config = ship_config(&[&file], server.addr);
    config.batch_size = 10;
    config.compress = true;
    config.resilient = true;
    config.max_retries = 0; // would retry connecting forever
    let summary = within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert!(summary.stuck, "{summary}");
    assert_eq!(summary.exit_code(), 1);
    assert_eq!(summary.rejected, 0, "{summary}");
    assert!(summary.undelivered >= 1, "{summary}");
    assert!(summary.to_string().contains("kept closing"), "{summary}");
    // The lines before it were delivered; the poisoned one never counted.
    assert_eq!(summary.shipped, 5, "{summary}");
    assert!(server.acked_ok().iter().all(|l| !l.contains("POISON")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_that_says_closing_connection_is_still_one_rejected_line() {
    // Only the reply's `reason` says the server closes; these all reject one
    // line, whatever their message says.
    const SAID_CLOSING: [&str; 3] = [
        // logdist's reason for a bad line, with a message in the close's words.
        r#"{"status":"error","reason":"invalid_json","message":"frame length 9 outside 5..=4; closing connection"}"#,
        // The seed server sends no reason at all.
        r#"{"status":"error","message":"rejected; closing connection"}"#,
        // A reason this shipper does not know.
        r#"{"status":"error","reason":"not_yet_invented","message":"closing connection"}"#,
    ];
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 100);
    let bad = want.iter().filter(|l| l.contains("free-form")).count();
    assert_eq!(bad, 10);
    for reply in SAID_CLOSING {
        for compress in [false, true] {
            let server = FakeServer::start(Arc::new(move |_, _, line| {
                Some(if line.contains("free-form") {
                    Reply::Raw(reply)
                } else {
                    Reply::Ok
                })
            }))
            .await;
            let mut config = ship_config(&[&file], server.addr);
            config.batch_size = 8;
            config.compress = compress;
            let summary = within("run", logdist_ship::run(config, std::future::pending()))
                .await
                .unwrap();
            let context = format!("{reply} compress={compress}: {summary}");
            assert_eq!((summary.rejected, summary.shipped), (10, 90), "{context}");
            assert_eq!((summary.resent, summary.exit_code()), (0, 1), "{context}");
            assert!(!summary.stuck, "{context}");
            // One connection, each line seen once: nothing was resent.
            assert_eq!(
                server.connections.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{context}"
            );
            let seen: Vec<String> = server.seen().into_iter().map(|s| s.line).collect();
            assert_exactly_once(&seen, &want);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_is_known_by_its_reason_whatever_its_message_says() {
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 100);
    for compress in [false, true] {
        // The first connection acks 3 lines, then closes with the close's
        // reason but none of its usual words.
        let server = FakeServer::start(Arc::new(|conn, n, _| {
            Some(if conn == 0 && n == 3 {
                Reply::RawThenClose(
                    r#"{"status":"error","reason":"bad_frame_length","message":"too big, bye"}"#,
                )
            } else {
                Reply::Ok
            })
        }))
        .await;
        let mut config = ship_config(&[&file], server.addr);
        config.batch_size = 10;
        config.compress = compress;
        let summary = within("run", logdist_ship::run(config, std::future::pending()))
            .await
            .unwrap();
        // The reply took no line: nothing rejected, the rest resent and acked.
        assert_eq!((summary.rejected, summary.shipped), (0, 100), "{summary}");
        assert_eq!(summary.exit_code(), 0, "{summary}");
        assert!(summary.resent > 0, "{summary}");
        assert_exactly_once(&server.acked_ok(), &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_seen_while_a_write_is_blocked() {
    // A server that accepts and never reads: the shipper's writes block.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.log");
    // 25 MB: more than the window (16 MiB) and far more than socket buffers.
    let line = format!("2024-01-15 08:00:00 INFO {}", "x".repeat(100_000));
    append(&file, &vec![line; 250]);
    let mut config = ship_config(&[&file], addr);
    config.batch_size = 200;
    config.shutdown_timeout = Duration::from_millis(300);
    let (stop, shipper) = spawn_shipper(config);
    let (_stream, _) = within("accept", listener.accept()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!shipper.is_finished());
    let asked = tokio::time::Instant::now();
    stop.send(()).unwrap();
    let summary = within("shipper", shipper).await.unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(summary.interrupted, "{summary}");
    assert_eq!(summary.shipped, 0);
    assert!(summary.undelivered > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_fires_while_a_write_is_blocked() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.log");
    let line = format!("2024-01-15 08:00:00 INFO {}", "y".repeat(100_000));
    append(&file, &vec![line; 250]);
    let mut config = ship_config(&[&file], addr);
    config.batch_size = 200;
    config.ack_timeout = Duration::from_millis(300);
    let (_stop, shipper) = spawn_shipper(config);
    // The first connection never reads; the shipper must give it up and
    // connect again.
    let (_first, _) = within("accept", listener.accept()).await.unwrap();
    let (_second, _) = within("second connection", listener.accept())
        .await
        .unwrap();
    shipper.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_checkpoint_is_set_aside_and_shipping_starts_over() {
    let server = FakeServer::start(Arc::new(|_, _, _| Some(Reply::Ok))).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = lines_file(&dir, 50);
    let cp = dir.path().join("cp");
    std::fs::write(&cp, "").unwrap(); // e.g. what a power loss left
    let mut config = ship_config(&[&file], server.addr);
    config.checkpoint = Some(cp.clone());
    let summary = within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_exactly_once(&server.acked_ok(), &want);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cp.corrupt")).unwrap(),
        ""
    );
    let size = std::fs::metadata(&file).unwrap().len();
    let checkpoint = std::fs::read_to_string(&cp).unwrap();
    assert!(
        checkpoint.contains(&format!("\"offset\":{size}")),
        "{checkpoint}"
    );
}
