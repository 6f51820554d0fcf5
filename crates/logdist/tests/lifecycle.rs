//! Analyzer lifecycle and delivery guarantees over real sockets: static
//! analyzers that are down or restart, stalls, poison messages, the holding
//! queue, and dead-letter replay. Every test accounts for every message.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use logdist::delivery::directory::Health;
use support::{
    SeedAnalyzer, TestServer, accept_static, connect, emit, frames, free_port, rebind, within,
};
use tokio::io::AsyncWriteExt;

/// Static analyzers reconnect fast in tests.
fn fast_reconnect(c: &mut logdist::Config) {
    c.analyzers.reconnect_min = Duration::from_millis(10);
    c.analyzers.reconnect_max = Duration::from_millis(50);
}

fn static_analyzer(
    id: &str,
    address: std::net::SocketAddr,
) -> logdist::config::StaticAnalyzerConfig {
    logdist::config::StaticAnalyzerConfig {
        id: id.to_string(),
        address: address.to_string(),
        weight: 1.0,
        format: logdist_wire::AnalyzerFormat::Frame,
        acks: true,
        tls: None,
    }
}

fn health(server: &TestServer, id: &str) -> Option<Health> {
    server
        .directory
        .snapshot()
        .into_iter()
        .find(|r| &*r.id == id)
        .map(|r| r.health)
}

/// Reads `n` messages, acking every one; returns their payloads.
async fn take_acking(analyzer: &mut SeedAnalyzer, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let m = analyzer.next().await.expect("connection open");
        got.push(String::from_utf8(m.payload().to_vec()).unwrap());
        analyzer.ack().await;
    }
    got
}

#[tokio::test]
async fn static_analyzer_down_at_start_then_up_gets_everything() {
    let address = free_port();
    let server = TestServer::start_with(|c| {
        fast_reconnect(c);
        c.analyzers.statics = vec![static_analyzer("s1", address)];
    })
    .await;
    assert_eq!(health(&server, "s1"), Some(Health::Unhealthy));

    // Nothing to route to: accepted messages are held.
    emit(server.emitters, "m", 0..300, 4).await;
    server.wait_for("300 held", |s| s.held == 300).await;

    let listener = rebind(address).await;
    let mut analyzer = accept_static(&listener, "s1").await;
    let got = take_acking(&mut analyzer, 300).await;
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), 300);
    server
        .wait_for("all delivered", |s| s.delivered == 300)
        .await;
    assert_eq!(health(&server, "s1"), Some(Health::Healthy));
    let report = server.shutdown().await;
    assert_eq!(report.stats.dead_lettered, 0);
}

#[tokio::test]
async fn static_analyzer_killed_and_restarted_mid_stream_loses_nothing() {
    let address = free_port();
    let listener = rebind(address).await;
    let server = TestServer::start_with(|c| {
        fast_reconnect(c);
        c.analyzers.statics = vec![static_analyzer("s1", address)];
    })
    .await;
    let mut first = accept_static(&listener, "s1").await;
    server.wait_analyzers(1).await;

    emit(server.emitters, "m", 0..1_000, 3).await;
    server.wait_for("all routed", |s| s.routed == 1_000).await;
    // It processes (acks) 400, reads 100 more, and crashes.
    let mut acked: Vec<String> = take_acking(&mut first, 400).await;
    for _ in 0..100 {
        first.next().await.unwrap();
    }
    server
        .wait_for("400 delivered", |s| s.delivered == 400)
        .await;
    first.kill();

    let mut second = accept_static(&listener, "s1").await;
    acked.extend(take_acking(&mut second, 600).await);
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), 1_000, "every message acked exactly once");
    server
        .wait_for("all delivered", |s| s.delivered == 1_000)
        .await;
    let record = server.directory.snapshot().remove(0);
    assert_eq!(
        (record.health, record.failures, record.delivered),
        (Health::Healthy, 1, 1_000)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_analyzer_times_out_and_its_messages_go_elsewhere() {
    let server =
        TestServer::start_with(|c| c.analyzers.ack_timeout = Duration::from_millis(300)).await;
    let mut silent = SeedAnalyzer::connect(&server, 1.0).await;
    let mut healthy = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;

    emit(server.emitters, "m", 0..200, 3).await;
    // The silent one reads what it gets but never acks; the distributor gives
    // up on it after ack_timeout and sends its share to the healthy one.
    let reader = tokio::spawn(async move { while silent.next().await.is_some() {} });
    let got = take_acking(&mut healthy, 200).await;
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 200);
    within("the silent analyzer to be dropped", reader)
        .await
        .unwrap();
    server
        .wait_for("all delivered", |s| s.delivered == 200)
        .await;
    let stats = server.stats();
    assert!(stats.redelivered >= 50, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn quiet_tail_of_a_seed_analyzer_is_not_a_stall() {
    let server =
        TestServer::start_with(|c| c.analyzers.ack_timeout = Duration::from_millis(100)).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    // It acks every 10 messages, like a seed analyzer; 25 leave a tail of 5.
    emit(server.emitters, "m", 0..25, 3).await;
    for _ in 0..25 {
        analyzer.next().await.unwrap();
        if analyzer.received % 10 == 0 {
            analyzer.ack().await;
        }
    }
    server.wait_for("20 delivered", |s| s.delivered == 20).await;
    // Several ack timeouts pass with the tail unacked: still healthy, nothing resent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.wait_analyzers(1).await;
    assert_eq!(server.stats().redelivered, 0);

    emit(server.emitters, "m", 25..30, 3).await;
    for _ in 0..5 {
        analyzer.next().await.unwrap();
    }
    analyzer.ack().await;
    server.wait_for("30 delivered", |s| s.delivered == 30).await;
    let report = server.shutdown().await;
    assert_eq!(report.stats.redelivered, 0);
}

/// The stall clock starts when the messages beyond the analyzer's usual ack
/// stride went out, not when the session last looked: a slow analyzer that
/// acks within `ack_timeout` of getting them is not declared stalled, even
/// right after a quiet tail was let be.
#[tokio::test]
async fn a_slow_ack_within_the_timeout_after_a_quiet_tail_is_not_a_stall() {
    let timeout = Duration::from_secs(2);
    let server = TestServer::start_with(|c| c.analyzers.ack_timeout = timeout).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    // Ten acked at once: its stride is 10. Then a tail of 5, left unacked.
    emit(server.emitters, "m", 0..10, 3).await;
    analyzer.take_and_ack(10).await;
    emit(server.emitters, "m", 10..15, 3).await;
    for _ in 0..5 {
        analyzer.next().await.unwrap();
    }
    // The session looks at the tail once (after ack_timeout) and lets it be.
    tokio::time::sleep(timeout + timeout / 2).await;
    // Ten more go out; the analyzer acks them (and the tail) 70 % of
    // ack_timeout later: slow, but in time.
    emit(server.emitters, "m", 15..25, 3).await;
    for _ in 0..10 {
        analyzer.next().await.unwrap();
    }
    tokio::time::sleep(timeout.mul_f64(0.7)).await;
    analyzer.ack().await;
    server.wait_for("25 delivered", |s| s.delivered == 25).await;
    server.wait_analyzers(1).await;
    let report = server.shutdown().await;
    assert_eq!(report.stats.redelivered, 0, "declared stalled too early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_after_max_attempts() {
    let server = TestServer::start_with(|c| c.delivery.max_attempts = 3).await;
    // Analyzers that crash on "POISON" and come straight back, as a
    // supervisor would restart them. They ack every message they survive.
    let analyzers = server.analyzers;
    let crashes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let crashes = crashes.clone();
        tasks.push(tokio::spawn(async move {
            let mut survived = Vec::new();
            loop {
                let Ok(stream) = tokio::net::TcpStream::connect(analyzers).await else {
                    return survived;
                };
                let mut analyzer = SeedAnalyzer::from_stream(stream, String::new());
                analyzer.send_handshake(1.0).await;
                loop {
                    match analyzer.next().await {
                        None => return survived,
                        Some(m) if &m.payload()[..] == b"POISON" => {
                            crashes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            break;
                        }
                        Some(m) => {
                            survived.push(m.payload().to_vec());
                            analyzer.ack().await;
                        }
                    }
                }
            }
        }));
    }
    server.wait_analyzers(2).await;
    emit(server.emitters, "ok-", 0..100, 3).await;
    server
        .wait_for("innocents delivered", |s| s.delivered == 100)
        .await;

    let mut stream = connect(server.emitters).await;
    stream.write_all(&frames(&[(0, b"POISON")])).await.unwrap();
    server
        .wait_for("poison dead-lettered", |s| s.dead_lettered == 1)
        .await;
    assert_eq!(crashes.load(std::sync::atomic::Ordering::SeqCst), 3);

    let report = server.shutdown().await;
    let mut survived = Vec::new();
    for task in tasks {
        survived.extend(within("analyzer task", task).await.unwrap());
    }
    assert_eq!(survived.len(), 100);
    assert_eq!(survived.iter().collect::<HashSet<_>>().len(), 100);
    assert_eq!(report.stats.delivered, 100);
    let letter = &report.dead_letters[0];
    assert_eq!(report.dead_letters.len(), 1);
    assert_eq!(letter["message"], "POISON");
    assert_eq!(letter["priority"], 0);
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["analyzers"].as_array().unwrap().len(), 3);
    assert!(
        letter["final_error"].as_str().unwrap().contains("closed"),
        "{letter}"
    );
}

#[tokio::test]
async fn no_analyzers_then_one_arrives_and_everything_flows() {
    let server = TestServer::start().await;
    emit(server.emitters, "m", 0..500, 2).await;
    server.wait_for("held", |s| s.held == 500).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    let got = take_acking(&mut analyzer, 500).await;
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 500);
    let report = server.shutdown().await;
    assert_eq!(report.stats.delivered, 500);
}

#[tokio::test]
async fn full_holding_queue_pushes_back_and_loses_nothing() {
    let server = TestServer::start_with(|c| c.delivery.hold_capacity = 100).await;
    // 2,000 messages against a holding queue of 100: the distributor stops
    // reading the emitter (the bytes wait in socket buffers), accepting only
    // the 100 it holds plus the one waiting for room.
    let emitter = tokio::spawn(emit(server.emitters, "m", 0..2_000, 3));
    server
        .wait_for("holding full", |s| s.held == 100 && s.accepted == 101)
        .await;

    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    let got = take_acking(&mut analyzer, 2_000).await;
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 2_000);
    within("emitter to finish", emitter).await.unwrap();
    let report = server.shutdown().await;
    assert_eq!(report.stats.delivered, 2_000);
    assert_eq!(report.stats.dead_lettered, 0);
}

#[tokio::test]
async fn hold_timeout_dead_letters_what_waited_too_long() {
    let server =
        TestServer::start_with(|c| c.delivery.hold_timeout = Some(Duration::from_millis(100)))
            .await;
    emit(server.emitters, "m", 0..10, 6).await;
    server.wait_for("expired", |s| s.dead_lettered == 10).await;
    let report = server.shutdown().await;
    assert_eq!(report.dead_letters.len(), 10);
    for letter in &report.dead_letters {
        assert_eq!(letter["priority"], 6);
        assert_eq!(letter["attempts"], 0);
        assert!(
            letter["final_error"]
                .as_str()
                .unwrap()
                .starts_with("hold_timeout"),
            "{letter}"
        );
    }
}

#[tokio::test]
async fn probe_failure_marks_a_static_analyzer_unhealthy() {
    let address = free_port();
    let listener = rebind(address).await;
    let server = TestServer::start_with(|c| {
        fast_reconnect(c);
        c.analyzers.probe_interval = Duration::from_millis(50);
        c.analyzers.statics = vec![static_analyzer("s1", address)];
    })
    .await;
    let mut analyzer = accept_static(&listener, "s1").await;
    server.wait_analyzers(1).await;
    // The host stops accepting connections; the open one stays up.
    drop(listener);
    assert!(
        analyzer.next().await.is_none(),
        "the distributor should close it"
    );
    server.wait_analyzers(0).await;
    assert_eq!(health(&server, "s1"), Some(Health::Unhealthy));
    let record = server.directory.snapshot().remove(0);
    assert!(record.last_error.unwrap().contains("probe"));
    server.shutdown().await;
}

#[tokio::test]
async fn replay_sends_dead_letters_back_with_their_priorities() {
    // Make dead letters: no analyzer, hold_timeout.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dead.ndjson");
    let first = TestServer::start_with(|c| {
        c.delivery.hold_timeout = Some(Duration::from_millis(50));
        c.delivery.dead_letter_path = file.clone();
    })
    .await;
    emit(first.emitters, "frame-", 0..20, 9).await;
    let mut stream = connect(first.emitters).await;
    stream
        .write_all(
            b"{\"level\":\"ERROR\",\"message\":\"line\"}\n{\"priority\":200,\"message\":\"p\"}\n",
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    first.wait_for("expired", |s| s.dead_lettered == 22).await;
    first.shutdown().await;

    // Replay into a distributor with an analyzer.
    let second = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&second, 1.0).await;
    second.wait_analyzers(1).await;
    let target = second.acked_emitters.to_string();
    let report = logdist::delivery::replay::replay(&file, &target, Duration::from_secs(10), 3)
        .await
        .unwrap();
    assert_eq!(
        report,
        logdist::delivery::replay::ReplayReport {
            replayed: 22,
            kept: 0
        }
    );

    let mut got = Vec::new();
    for _ in 0..22 {
        let m = analyzer.next().await.unwrap();
        got.push((
            m.priority(),
            String::from_utf8(m.payload().to_vec()).unwrap(),
        ));
    }
    analyzer.ack().await;
    assert_eq!(
        got.iter()
            .filter(|(p, s)| *p == 9 && s.starts_with("frame-"))
            .count(),
        20
    );
    assert!(
        got.contains(&(
            1,
            r#"{"priority":1,"level":"ERROR","message":"line"}"#.to_string()
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(200, r#"{"priority":200,"message":"p"}"#.to_string())),
        "{got:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), "");
    second.shutdown().await;
}

#[tokio::test]
async fn replay_keeps_what_it_could_not_send() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dead.ndjson");
    let records = "{\"message\":\"a\",\"origin\":\"frame\",\"priority\":1,\"attempts\":4,\"final_error\":\"x\",\"failed_at\":\"t\"}\nnot a record\n";
    std::fs::write(&file, records).unwrap();
    // Nothing listens there.
    let report = logdist::delivery::replay::replay(
        &file,
        &free_port().to_string(),
        Duration::from_secs(5),
        3,
    )
    .await
    .unwrap();
    assert_eq!(
        report,
        logdist::delivery::replay::ReplayReport {
            replayed: 0,
            kept: 2
        }
    );
    let kept = std::fs::read_to_string(&file).unwrap();
    assert_eq!(kept.lines().count(), 2);
    assert!(kept.contains("not a record"));
}

#[tokio::test]
async fn a_static_analyzer_removed_by_reload_drains_before_it_goes() {
    let address = free_port();
    let listener = rebind(address).await;
    let server = TestServer::start_with(|c| {
        fast_reconnect(c);
        c.analyzers.statics = vec![static_analyzer("s1", address)];
    })
    .await;
    let mut analyzer = accept_static(&listener, "s1").await;
    server.wait_analyzers(1).await;
    emit(server.emitters, "m", 0..50, 3).await;
    server.wait_for("routed", |s| s.routed == 50).await;
    // Everything is written to it, nothing acked yet, when it is removed.
    for _ in 0..50 {
        analyzer.next().await.unwrap();
    }
    let mut config = server.config.clone();
    config.analyzers.statics.clear();
    let reload = server.reload.clone();
    let removing = tokio::spawn(async move { reload.reload(config).await });

    // It gets nothing new, and closes once it has acked what it holds.
    server
        .wait_for_analyzers("weight 0 while draining", |a| {
            a.iter().all(|(_, w)| *w == 0.0)
        })
        .await;
    analyzer.ack().await;
    assert!(analyzer.next().await.is_none(), "closed after draining");
    within("reload to finish", removing).await.unwrap().unwrap();
    server.wait_for("delivered", |s| s.delivered == 50).await;
    let report = server.shutdown().await;
    assert_eq!(
        report.stats.redelivered, 0,
        "a drained analyzer hands nothing back"
    );
    assert_eq!(report.stats.dead_lettered, 0);
}

#[tokio::test]
async fn replay_leaves_a_half_written_last_record_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dead.ndjson");
    let whole = "{\"message\":\"a\",\"origin\":\"frame\",\"priority\":1,\"attempts\":4,\"final_error\":\"x\",\"failed_at\":\"t\"}\n";
    let half = "{\"message\":\"b\",\"origin\":\"fr";
    std::fs::write(&file, format!("{whole}{half}")).unwrap();
    let server = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let report = logdist::delivery::replay::replay(
        &file,
        &server.emitters.to_string(),
        Duration::from_secs(10),
        3,
    )
    .await
    .unwrap();
    assert_eq!(
        report,
        logdist::delivery::replay::ReplayReport {
            replayed: 1,
            kept: 1
        }
    );
    assert_eq!(&analyzer.take_and_ack(1).await[0].payload()[..], b"a");
    // The unfinished record is kept as it was, as one line, for the writer to finish.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{half}\n"));
    server.shutdown().await;
}

#[tokio::test]
async fn replay_gives_records_without_a_priority_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dead.ndjson");
    let records = [
        r#"{"message":{"level":"WARN","message":"w"},"origin":"ndjson","priority":null,"attempts":4,"analyzers":["a","b","a","b"],"final_error":"x","failed_at":"2025-01-25T20:30:45.123Z"}"#,
        r#"{"message":"f","origin":"frame","priority":null,"attempts":4,"analyzers":["a","b","a","b"],"final_error":"x","failed_at":"2025-01-25T20:30:45.123Z"}"#,
        r#"{"payload_b64":"/wCA","origin":"frame","attempts":0,"analyzers":[],"final_error":"shutdown","failed_at":"2025-01-25T20:30:45.124Z"}"#,
    ];
    std::fs::write(&file, records.join("\n") + "\n").unwrap();
    let server = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let report = logdist::delivery::replay::replay(
        &file,
        &server.acked_emitters.to_string(),
        Duration::from_secs(10),
        7,
    )
    .await
    .unwrap();
    assert_eq!(
        report,
        logdist::delivery::replay::ReplayReport {
            replayed: 3,
            kept: 0
        }
    );
    let got: HashSet<(u8, Vec<u8>)> = analyzer
        .take_and_ack(3)
        .await
        .iter()
        .map(|m| (m.priority(), m.payload().to_vec()))
        .collect();
    let expected: HashSet<(u8, Vec<u8>)> = [
        // The original line, its priority from its level as for a new line.
        (2, br#"{"level":"WARN","message":"w"}"#.to_vec()),
        // Frames at --default-priority.
        (7, b"f".to_vec()),
        (7, b"\xff\x00\x80".to_vec()),
    ]
    .into();
    assert_eq!(got, expected);
    assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), "");
    server.shutdown().await;
}

/// A distributor that opened the dead-letter file before replay renamed it
/// may still be appending to the renamed file. Replay must wait for it
/// (the file lock), and so get every line: none is deleted unread.
#[tokio::test]
async fn replay_gets_every_line_a_writer_appends_while_it_runs() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dead.ndjson");
    let record = |name: &str| {
        format!(
            "{{\"message\":\"{name}\",\"origin\":\"frame\",\"priority\":4,\"attempts\":1,\"analyzers\":[\"a\"],\"final_error\":\"x\",\"failed_at\":\"2025-01-25T20:30:45.123Z\"}}\n"
        )
    };
    std::fs::write(&file, record("before")).unwrap();
    let server = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    // The writer opens the file, locks it and starts appending a batch.
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    writer.lock().unwrap();
    writer.write_all(record("batch-1").as_bytes()).unwrap();

    let mut replaying = tokio::spawn({
        let (file, target) = (file.clone(), server.emitters.to_string());
        async move {
            logdist::delivery::replay::replay(&file, &target, Duration::from_secs(10), 3).await
        }
    });
    within("replay to rename the file", async {
        while file.exists() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    // The file is renamed; the writer has it open and keeps appending. Replay
    // must not finish while it does, whatever time it is given.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut replaying).await;
    writer.write_all(record("batch-2").as_bytes()).unwrap();
    writer.write_all(record("batch-3").as_bytes()).unwrap();
    writer.sync_data().unwrap();
    writer.unlock().unwrap();
    drop(writer);
    let finished_early = early.is_ok();
    let report = match early {
        Ok(done) => done,
        Err(_) => within("replay to finish", replaying).await,
    }
    .unwrap()
    .unwrap();

    // Every line is either replayed or back in the live file.
    let mut accounted: Vec<String> = analyzer
        .take_and_ack(report.replayed)
        .await
        .iter()
        .map(|m| String::from_utf8(m.payload().to_vec()).unwrap())
        .collect();
    let live = std::fs::read_to_string(&file).unwrap_or_default();
    accounted.extend(live.lines().map(|line| {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        record["message"].as_str().unwrap().to_string()
    }));
    accounted.sort();
    assert_eq!(
        accounted,
        ["batch-1", "batch-2", "batch-3", "before"],
        "lines lost (replay finished while the writer held the lock: {finished_early})"
    );
    assert!(
        !finished_early,
        "replay finished while the writer held the lock"
    );
    assert_eq!(
        report,
        logdist::delivery::replay::ReplayReport {
            replayed: 4,
            kept: 0
        }
    );
    server.shutdown().await;
}

#[tokio::test]
async fn reload_reweights_adds_and_moves_static_analyzers() {
    let (first, second, moved) = (free_port(), free_port(), free_port());
    let first_host = rebind(first).await;
    let server = TestServer::start_with(|c| {
        fast_reconnect(c);
        c.analyzers.statics = vec![static_analyzer("s1", first)];
    })
    .await;
    let _s1 = accept_static(&first_host, "s1").await;
    server.wait_analyzers(1).await;

    // A new weight reaches the routing table.
    let mut config = server.config.clone();
    config.analyzers.statics[0].weight = 3.0;
    server.reload.reload(config.clone()).await.unwrap();
    server
        .wait_for_analyzers("s1 at weight 3", |a| a == [("s1".to_string(), 3.0)])
        .await;

    // An added analyzer is dialled.
    let second_host = rebind(second).await;
    config.analyzers.statics.push(static_analyzer("s2", second));
    server.reload.reload(config.clone()).await.unwrap();
    let mut s2 = accept_static(&second_host, "s2").await;
    server.wait_analyzers(2).await;

    // A moved analyzer is drained off its old address and dialled at the new one.
    let moved_host = rebind(moved).await;
    config.analyzers.statics[1].address = moved.to_string();
    let reload = server.reload.clone();
    let moving = tokio::spawn(async move { reload.reload(config).await });
    assert!(s2.next().await.is_none(), "the old connection is closed");
    let _s2_moved = accept_static(&moved_host, "s2").await;
    within("reload to finish", moving).await.unwrap().unwrap();
    server
        .wait_for_analyzers("s1 and s2", |a| {
            a.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>() == ["s1", "s2"]
        })
        .await;
    server.shutdown().await;
}
