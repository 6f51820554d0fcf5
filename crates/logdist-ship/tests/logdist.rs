//! The shipper against a real logdist (in-process, `ack = "message"`
//! listener) with a seed analyzer receiving what it distributes.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::*;
use tokio::process::{Child, Command};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_plain_ships_every_line_exactly_once() {
    let server = Logdist::start().await;
    let analyzer = Analyzer::connect(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let lines = log_lines("plain", 0, 3000);
    append(&file, &lines);
    // Blank lines are not messages: logdist would not answer them.
    append(&file, &["".into(), "   ".into()]);

    let config = ship_config(&[&file], server.shipper_addr);
    let summary = within(
        "batch run",
        logdist_ship::run(config, std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!(
        (summary.lines_read, summary.shipped, summary.rejected),
        (3000, 3000, 0)
    );
    assert_eq!((summary.undelivered, summary.resent), (0, 0));

    let want = expected(&lines);
    analyzer.wait_for(want.len()).await;
    assert_exactly_once(&analyzer.payloads(), &want);
    assert_eq!(server.stats.snapshot().accepted, 3000);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_compressed_ships_every_line_exactly_once_from_a_glob() {
    let server = Logdist::start().await;
    let analyzer = Analyzer::connect(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (la, lb) = (log_lines("fileA", 0, 2000), log_lines("fileB", 0, 1234));
    append(&a, &la);
    append(&b, &lb);
    std::fs::write(dir.path().join("ignored.txt"), "not shipped\n").unwrap();

    let mut config = ship_config(&[], server.shipper_addr);
    config.log_files = vec![format!("{}/*.log", dir.path().display())];
    config.compress = true;
    config.batch_size = 50;
    let summary = within(
        "batch run",
        logdist_ship::run(config, std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!((summary.files, summary.shipped), (2, 3234));

    let mut want = expected(&la);
    want.extend(expected(&lb));
    analyzer.wait_for(want.len()).await;
    assert_exactly_once(&analyzer.payloads(), &want);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_and_level_map_reach_logdist() {
    let server = Logdist::start().await;
    let analyzer = Analyzer::connect(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    append(
        &file,
        &[
            "2024-01-15 08:00:00 WARNING low disk".into(),
            "2024-01-15 08:00:01 AUDIT login".into(),
            "2024-01-15 08:00:02 ERROR boom".into(),
        ],
    );
    let mut config = ship_config(&[&file], server.shipper_addr);
    config.level_map = vec![
        logdist_ship::config::LevelMapping {
            from: "WARNING".into(),
            to: logdist_ship::config::LevelTarget::Level("WARN".into()),
        },
        logdist_ship::config::LevelMapping {
            from: "AUDIT".into(),
            to: logdist_ship::config::LevelTarget::Priority(0),
        },
    ];
    let summary = within(
        "run",
        logdist_ship::run(config.clone(), std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(summary.exit_code(), 0);
    analyzer.wait_for(3).await;
    let mut got = analyzer.received.lock().unwrap().clone();
    got.sort();
    // logdist computed the priorities: AUDIT → 0 (set), ERROR → 1, WARN → 2.
    assert_eq!(got.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(got[2].1.contains(r#""level":"WARN""#), "{got:?}");

    config.priority = Some(7);
    config.level_map.clear();
    within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    analyzer.wait_for(6).await;
    let got = analyzer.received.lock().unwrap().clone();
    assert!(
        got[3..]
            .iter()
            .all(|(p, m)| *p == 7 && m.contains(r#""priority":7"#)),
        "{got:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_follows_appends_rotation_and_truncation() {
    let server = Logdist::start().await;
    let analyzer = Analyzer::connect(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let mut want = Vec::new();

    let first = log_lines("start", 0, 100);
    append(&file, &first);
    want.extend(expected(&first));
    let mut config = ship_config(&[&file], server.shipper_addr);
    config.mode = logdist_ship::Mode::Continuous;
    config.batch_size = 10;
    let (stop, shipper) = spawn_shipper(config);
    analyzer.wait_for(want.len()).await;

    // Appended lines.
    let appended = log_lines("appended", 0, 50);
    append(&file, &appended);
    want.extend(expected(&appended));
    analyzer.wait_for(want.len()).await;
    assert_exactly_once(&analyzer.payloads(), &want);

    // Rotation: rename, a few late lines into the old file, then a new file.
    let rotated = dir.path().join("app.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    let late = log_lines("late-in-old-file", 0, 5);
    append(&rotated, &late);
    want.extend(expected(&late));
    let fresh = log_lines("new-file", 0, 40);
    append(&file, &fresh);
    want.extend(expected(&fresh));
    analyzer.wait_for(want.len()).await;
    assert_exactly_once(&analyzer.payloads(), &want);

    // Truncation: the same file emptied, then fewer lines written.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    let after = log_lines("after-truncate", 0, 20);
    append(&file, &after);
    want.extend(expected(&after));
    analyzer.wait_for(want.len()).await;
    assert_exactly_once(&analyzer.payloads(), &want);

    stop.send(()).unwrap();
    let summary = within("shipper stop", shipper).await.unwrap().unwrap();
    assert!(summary.interrupted);
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!(summary.shipped, want.len() as u64);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_makes_a_second_batch_run_ship_only_new_lines() {
    let server = Logdist::start().await;
    let analyzer = Analyzer::connect(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let first = log_lines("one", 0, 300);
    append(&file, &first);
    let mut config = ship_config(&[&file], server.shipper_addr);
    config.checkpoint = Some(dir.path().join("ship.checkpoint"));

    let s1 = within(
        "run 1",
        logdist_ship::run(config.clone(), std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!((s1.shipped, s1.exit_code()), (300, 0));
    let s2 = within(
        "run 2",
        logdist_ship::run(config.clone(), std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!((s2.lines_read, s2.exit_code()), (0, 0), "{s2}");
    let second = log_lines("two", 0, 25);
    append(&file, &second);
    let s3 = within("run 3", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert_eq!((s3.shipped, s3.exit_code()), (25, 0));

    let mut want = expected(&first);
    want.extend(expected(&second));
    analyzer.wait_for(want.len()).await;
    assert_exactly_once(&analyzer.payloads(), &want);
    server.shutdown().await;
}

fn ship_command(
    file: &Path,
    checkpoint: &Path,
    server: std::net::SocketAddr,
    extra: &[&str],
) -> Child {
    Command::new(binary())
        .env_clear()
        .env("RUST_LOG", "warn")
        .arg("--log-file")
        .arg(file)
        .arg("--checkpoint")
        .arg(checkpoint)
        .args([
            "--server-host",
            "127.0.0.1",
            "--server-port",
            &server.port().to_string(),
        ])
        .args([
            "--poll-interval",
            "0.02",
            "--backoff-initial",
            "0.01",
            "--backoff-max",
            "0.2",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The checkpointed offset of `file`, if any.
fn checkpointed(checkpoint: &Path, file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(checkpoint).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["files"][file.to_str().unwrap()]["offset"].as_u64()
}

async fn exit_and_stdout(child: Child) -> (i32, String) {
    let out = within("shipper exit", child.wait_with_output())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_kill_9_resumes_from_the_checkpoint_without_duplicates() {
    let server = Logdist::start().await;
    let analyzer = Analyzer::connect(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let checkpoint = dir.path().join("ship.checkpoint");
    let first = log_lines("before-kill", 0, 1000);
    append(&file, &first);

    let mut child = ship_command(
        &file,
        &checkpoint,
        server.shipper_addr,
        &["--mode", "continuous", "--batch-size", "20"],
    );
    let size = std::fs::metadata(&file).unwrap().len();
    analyzer.wait_for(1000).await;
    wait_until("checkpoint at end of file", || {
        checkpointed(&checkpoint, &file) == Some(size)
    })
    .await;
    // Lines written while the shipper is dead are picked up by the next one.
    let second = log_lines("while-dead", 0, 500);
    child.kill().await.unwrap(); // SIGKILL: no chance to flush anything
    append(&file, &second);

    let child = ship_command(
        &file,
        &checkpoint,
        server.shipper_addr,
        &["--mode", "continuous", "--batch-size", "20"],
    );
    let mut want = expected(&first);
    want.extend(expected(&second));
    analyzer.wait_for(want.len()).await;
    let size = std::fs::metadata(&file).unwrap().len();
    wait_until("checkpoint at the new end", || {
        checkpointed(&checkpoint, &file) == Some(size)
    })
    .await;
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let (code, stdout) = exit_and_stdout(child).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("shipped_ok=500") && stdout.contains("(interrupted)"),
        "{stdout}"
    );
    assert_exactly_once(&analyzer.payloads(), &want);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_flushes_and_a_restart_finishes_exactly() {
    let server = Logdist::start().await;
    let analyzer = Analyzer::connect(&server).await;
    // Stall the pipeline after 500 messages: logdist stops acking (backpressure).
    analyzer.set_limit(500);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let checkpoint = dir.path().join("ship.checkpoint");
    let lines = log_lines("big", 0, 20_000);
    append(&file, &lines);

    let child = ship_command(
        &file,
        &checkpoint,
        server.shipper_addr,
        &["--batch-size", "10", "--compress"],
    );
    analyzer.wait_for(500).await;
    // Ctrl-C equivalent while lines are outstanding, then let acks flow.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(100)).await; // let the signal land first
    analyzer.set_limit(u64::MAX);
    let (code, stdout) = exit_and_stdout(child).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("(interrupted)") && stdout.contains("undelivered=0"),
        "{stdout}"
    );
    let first_count = analyzer.count();
    assert!(
        first_count < 20_000,
        "the first run was stopped mid-way ({first_count})"
    );

    let child = ship_command(
        &file,
        &checkpoint,
        server.shipper_addr,
        &["--batch-size", "10", "--compress"],
    );
    let (code, stdout) = exit_and_stdout(child).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("interrupted"), "{stdout}");
    let want = expected(&lines);
    analyzer.wait_for(want.len()).await;
    assert_exactly_once(&analyzer.payloads(), &want);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_the_server_restarts_delivers_everything() {
    let server = Logdist::start().await;
    let port = server.shipper_addr;
    let first = Analyzer::connect(&server).await;
    first.set_limit(1000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let lines = log_lines("restart", 0, 20_000);
    append(&file, &lines);

    let mut config = ship_config(&[&file], port);
    config.resilient = true;
    config.max_retries = 0; // retry until the new server is up
    config.batch_size = 20;
    let (_stop, shipper) = spawn_shipper(config);
    first.wait_for(1000).await;
    // The pipeline is stalled: the server holds at most its analyzer window
    // (4096) plus its queues (1000 per priority, 4 levels used) — far fewer
    // than the file's lines. Stop it; the analyzer takes everything the
    // server accepted (and acked) before it goes.
    first.set_limit(u64::MAX);
    server.shutdown().await;

    let server = Logdist::start_on(port).await;
    let second = Analyzer::connect(&server).await;
    let summary = within("shipper", shipper).await.unwrap().unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!(summary.shipped, 20_000);

    let want = expected(&lines);
    let expected_total = want.len();
    wait_until("every line delivered", || {
        let mut all = first.payloads();
        all.extend(second.payloads());
        multiset(all).len() == expected_total
    })
    .await;
    let mut all = first.payloads();
    all.extend(second.payloads());
    // Everything arrived; a line the old server took but could not ack
    // before closing may arrive twice (at least once across a crash), never
    // more than what was outstanding.
    let got = multiset(all.clone());
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        multiset(want).keys().cloned().collect::<Vec<_>>()
    );
    assert!(second.count() > 0, "the new server got the rest");
    let duplicates = all.len() - got.len();
    assert!(
        duplicates as u64 <= summary.resent,
        "{duplicates} duplicates, {summary}"
    );
    eprintln!("server restart: {duplicates} duplicates, {summary}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_frame_over_max_frame_bytes_is_resent_one_line_per_frame() {
    // logdist answers a frame longer than its max_frame_bytes with a
    // `bad_frame_length` reply and closes; the shipper resends, then sends
    // those lines one per frame, uncompressed.
    let server = Logdist::start_with("127.0.0.1:0".parse().unwrap(), |c| {
        c.limits.max_frame_bytes = 1024;
    })
    .await;
    let analyzer = Analyzer::connect(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let mut lines = log_lines("big", 0, 40);
    // Hex noise does not compress below 1024 bytes.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: String = (0..4000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from_digit((state % 16) as u32, 16).unwrap()
        })
        .collect();
    lines[15] = format!("2024-01-15 08:00:00 INFO noise {noise}");
    append(&file, &lines);

    let mut config = ship_config(&[&file], server.shipper_addr);
    config.compress = true;
    config.batch_size = 10;
    let summary = within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!((summary.shipped, summary.rejected), (40, 0), "{summary}");
    assert!(summary.resent > 0, "{summary}");

    let want = expected(&lines);
    analyzer.wait_for(want.len()).await;
    assert_exactly_once(&analyzer.payloads(), &want);
    let stats = server.shutdown().await;
    // Twice or more on the same lines, then they went one per frame (how
    // often depends on where batches fell before).
    assert!(stats.bad_length_closes >= 2, "{stats:?}");
}
