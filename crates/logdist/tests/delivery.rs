//! Delivery over real sockets: strict priority, the in-flight window, zero loss
//! when an analyzer dies holding unacked messages, and shutdown.

mod support;

use std::collections::HashSet;

use futures_util::FutureExt;
use support::{HelloAnalyzer, SeedAnalyzer, TestServer, connect, frames, within};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn paused_analyzer_gets_p0_before_p7_when_it_resumes() {
    // Window 1: the first message stays unacked and everything else queues.
    let server = TestServer::start_with(|c| c.analyzers.window = 1).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let mut stream = connect(server.emitters).await;
    stream.write_all(&frames(&[(5, b"first")])).await.unwrap();
    let first = analyzer.next().await.unwrap();
    assert_eq!(&first.payload()[..], b"first");

    // Paused (not acking): P7s arrive before P0s.
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.push((7u8, format!("p7-{i}").into_bytes()));
    }
    for i in 0..50 {
        batch.push((0u8, format!("p0-{i}").into_bytes()));
    }
    let refs: Vec<(u8, &[u8])> = batch.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    stream.write_all(&frames(&refs)).await.unwrap();
    server.wait_for("all routed", |s| s.routed == 101).await;

    // Resume: ack one at a time; every P0 must come before any P7, FIFO within each.
    let mut order = Vec::new();
    for _ in 0..100 {
        analyzer.ack().await;
        let m = analyzer.next().await.unwrap();
        order.push(String::from_utf8(m.payload().to_vec()).unwrap());
    }
    let want: Vec<String> = (0..50)
        .map(|i| format!("p0-{i}"))
        .chain((0..50).map(|i| format!("p7-{i}")))
        .collect();
    assert_eq!(order, want);
    analyzer.ack().await;
    let report = server.shutdown().await;
    assert_eq!(report.stats.delivered, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_analyzer_loses_nothing() {
    let server = TestServer::start().await;
    let mut doomed = SeedAnalyzer::connect(&server, 1.0).await;
    let mut survivor = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;

    let payloads: Vec<Vec<u8>> = (0..2_000).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<(u8, &[u8])> = payloads.iter().map(|p| (3u8, p.as_slice())).collect();
    let mut stream = connect(server.emitters).await;
    stream.write_all(&frames(&refs)).await.unwrap();
    stream.shutdown().await.unwrap();
    server.wait_for("all routed", |s| s.routed == 2_000).await;

    // The doomed analyzer reads some, acks part of them, and dies.
    let mut acked_at_doomed = HashSet::new();
    for _ in 0..300 {
        let m = doomed.next().await.unwrap();
        acked_at_doomed.insert(m.payload().to_vec());
    }
    doomed.ack().await;
    for _ in 0..200 {
        doomed.next().await.unwrap();
    }
    // Make sure the ack landed before the kill, so exactly 300 count as delivered there.
    server
        .wait_for("doomed acks applied", |s| s.delivered == 300)
        .await;
    doomed.kill();

    // Everything else reaches the survivor: its own share plus the 200
    // unacked and whatever was still queued for the doomed one.
    let mut at_survivor = HashSet::new();
    while at_survivor.len() < 2_000 - 300 {
        let m = survivor.next().await.unwrap();
        assert!(
            at_survivor.insert(m.payload().to_vec()),
            "duplicate at survivor"
        );
        if survivor.received % 100 == 0 {
            survivor.ack().await;
        }
    }
    survivor.ack().await;
    assert!(
        acked_at_doomed.is_disjoint(&at_survivor),
        "acked messages were redelivered"
    );
    let all: HashSet<Vec<u8>> = acked_at_doomed.union(&at_survivor).cloned().collect();
    assert_eq!(all.len(), 2_000);
    server
        .wait_for("all delivered", |s| s.delivered == 2_000)
        .await;
    let report = server.shutdown().await;
    assert!(report.stats.redelivered >= 200, "{:?}", report.stats);
    assert_eq!(report.stats.dead_lettered, 0);
}

#[tokio::test]
async fn shutdown_drains_queues_to_connected_analyzers() {
    let server = TestServer::start_with(|c| c.analyzers.window = 10).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let payloads: Vec<Vec<u8>> = (0..500).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<(u8, &[u8])> = payloads.iter().map(|p| (3u8, p.as_slice())).collect();
    let mut stream = connect(server.emitters).await;
    stream.write_all(&frames(&refs)).await.unwrap();
    server.wait_for("all routed", |s| s.routed == 500).await;

    // Shutdown starts while 490 messages still sit in the queue; the analyzer
    // keeps reading and acking, so the grace period is enough to deliver them all.
    let acking = tokio::spawn(async move {
        let mut n = 0;
        while analyzer.next().await.is_some() {
            n += 1;
            analyzer.ack().await;
        }
        n
    });
    let report = server.shutdown().await;
    assert_eq!(within("analyzer to finish", acking).await.unwrap(), 500);
    assert_eq!(report.stats.delivered, 500);
    assert!(report.dead_letters.is_empty());
}

#[tokio::test]
async fn shutdown_with_a_stalled_analyzer_dead_letters_the_rest() {
    let server = TestServer::start_with(|c| {
        c.analyzers.window = 5;
        c.delivery.shutdown_grace = std::time::Duration::from_millis(300);
    })
    .await;
    let mut stalled = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let payloads: Vec<Vec<u8>> = (0..100).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<(u8, &[u8])> = payloads.iter().map(|p| (2u8, p.as_slice())).collect();
    let mut stream = connect(server.emitters).await;
    stream.write_all(&frames(&refs)).await.unwrap();
    server.wait_for("all routed", |s| s.routed == 100).await;
    // It acks the first 5 and then stalls.
    stalled.take_and_ack(5).await;
    server.wait_for("5 delivered", |s| s.delivered == 5).await;

    let report = server.shutdown().await;
    assert_eq!(report.stats.delivered, 5);
    assert_eq!(report.stats.dead_lettered, 95);
    let letters = report.dead_letters;
    assert_eq!(letters.len(), 95);
    let mut seen = HashSet::new();
    for letter in &letters {
        assert_eq!(letter["priority"], 2);
        assert!(
            letter["final_error"].as_str().unwrap().contains("shutdown"),
            "{letter}"
        );
        assert!(letter["failed_at"].as_str().unwrap().ends_with('Z'));
        seen.insert(letter["message"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 95, "each held message exactly once");
    drop(stalled);
}

/// An analyzer that acks everything it read and closes at once (a clean
/// restart) while messages are still flowing to it: nothing it acked may be
/// handed back, even though the distributor's next write to it fails before
/// its control reader has seen that last ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_ack_then_close_under_traffic_hands_nothing_acked_back() {
    let server = TestServer::start().await;
    let mut leaving = SeedAnalyzer::connect(&server, 1.0).await;
    let mut staying = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;

    const TOTAL: usize = 20_000;
    let emitter = tokio::spawn(support::emit(server.emitters, "m", 0..TOTAL, 3));
    // The leaving one processes a while, acks all it read, and closes.
    let mut acked_by_leaving = HashSet::new();
    for _ in 0..2_000 {
        let m = leaving.next().await.unwrap();
        acked_by_leaving.insert(m.payload().to_vec());
    }
    leaving.ack().await;
    drop(leaving);

    let mut at_staying = HashSet::new();
    while acked_by_leaving.len() + at_staying.len() < TOTAL {
        let m = staying.next().await.unwrap();
        let payload = m.payload().to_vec();
        assert!(
            !acked_by_leaving.contains(&payload),
            "acked message redelivered"
        );
        assert!(
            at_staying.insert(payload),
            "duplicate at the staying analyzer"
        );
        if staying.received % 100 == 0 {
            staying.ack().await;
        }
    }
    staying.ack().await;
    within("emitter", emitter).await.unwrap();
    server
        .wait_for("all delivered", |s| s.delivered == TOTAL as u64)
        .await;
    server.shutdown().await;
}

/// An analyzer that said `acks: false` counts as delivered once written, and
/// any ack it sends anyway changes nothing.
#[tokio::test]
async fn analyzer_without_acks_counts_what_is_written() {
    let server = TestServer::start().await;
    let (reply, mut analyzer) =
        support::HelloAnalyzer::connect(&server, "fire-and-forget", 1.0, "ndjson", false).await;
    assert_eq!(reply, "{\"status\":\"ok\"}\n");
    server.wait_analyzers(1).await;
    support::emit(server.emitters, "m", 0..300, 3).await;
    for _ in 0..300 {
        analyzer.next_line().await.unwrap();
    }
    analyzer.ack().await;
    server
        .wait_for("all delivered", |s| s.delivered == 300)
        .await;
    drop(analyzer);
    server.wait_analyzers(0).await;
    let report = server.shutdown().await;
    assert_eq!(report.stats.delivered, 300);
    assert_eq!(report.stats.redelivered, 0);
}

/// Sends `hello` (as is) to the analyzer listener, closes the sending side
/// when `then_close`, and returns everything the distributor writes until it
/// closes.
async fn refused(server: &TestServer, hello: &[u8], then_close: bool) -> String {
    use tokio::io::AsyncReadExt;
    let mut stream = connect(server.analyzers).await;
    stream.write_all(hello).await.unwrap();
    if then_close {
        stream.shutdown().await.unwrap();
    }
    // A reset after the reply is as good as an end of stream here.
    let mut reply = Vec::new();
    let _ = within("the refusal and the close", stream.read_to_end(&mut reply)).await;
    String::from_utf8(reply).unwrap()
}

fn refusal(code: &str, message: &str) -> String {
    format!("{{\"status\":\"error\",\"reason\":\"{code}\",\"message\":\"{message}\"}}\n")
}

#[tokio::test]
async fn refused_hellos_carry_their_reason() {
    let server = TestServer::start().await;
    let too_long = format!("{{\"id\":\"{}\"", "a".repeat(5000));
    let cases: [(&[u8], bool, String); 6] = [
        (
            b"{\"id\":\"a\"}\n",
            false,
            refusal(
                "bad_handshake",
                "bad handshake: invalid hello: missing field `weight` at line 1 column 10",
            ),
        ),
        (
            b"{\"id\":\"a\",\"weight\":1,\"format\":\"xml\"}\n",
            false,
            refusal(
                "bad_handshake",
                "bad handshake: invalid hello: unknown variant `xml`, expected `frame` or `ndjson` at line 1 column 35",
            ),
        ),
        (
            b"{\"id\":\"a\",",
            true,
            refusal("bad_handshake", "bad handshake: bytes remaining on stream"),
        ),
        (
            too_long.as_bytes(),
            false,
            refusal(
                "hello_too_long",
                "bad handshake: hello line exceeds 4096 bytes",
            ),
        ),
        (
            b"{\"id\":\"\",\"weight\":1}\n",
            false,
            refusal(
                "bad_id",
                "bad handshake: analyzer id must be 1..=128 characters",
            ),
        ),
        (
            b"{\"id\":\"a\",\"weight\":-2.5}\r\n",
            false,
            refusal(
                "bad_weight",
                "bad handshake: weight must be a finite number >= 0, got -2.5",
            ),
        ),
    ];
    for (hello, then_close, want) in cases {
        assert_eq!(
            refused(&server, hello, then_close).await,
            want,
            "{}",
            String::from_utf8_lossy(&hello[..hello.len().min(60)])
        );
    }
    // A refused seed handshake is closed without a reply, as before.
    assert_eq!(refused(&server, &(-1.0f32).to_be_bytes(), false).await, "");
    server.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_id_is_refused_with_its_reason() {
    let server = TestServer::start().await;
    let (reply, _first) = HelloAnalyzer::connect(&server, "a1", 1.0, "frame", true).await;
    assert_eq!(reply, "{\"status\":\"ok\"}\n");
    server.wait_analyzers(1).await;
    let again = refused(&server, b"{\"id\":\"a1\",\"weight\":1}\n", false).await;
    assert_eq!(
        again,
        refusal(
            "duplicate_id",
            "an analyzer with this id is already registered"
        )
    );
    server.wait_analyzers(1).await;
    server.shutdown().await;
}

/// An analyzer that fails holding unacknowledged messages just after
/// shutdown began draining, while another one is still connected: its
/// messages are rerouted to that one and delivered, none dead-lettered as
/// `shutdown`. (The connected one, idle when draining began, must not leave
/// while messages held elsewhere or being rerouted could still come its way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyzer_failing_as_shutdown_starts_hands_its_messages_to_a_connected_one() {
    const TOTAL: u64 = 400;
    let server = TestServer::start_with(|c| {
        c.delivery.shutdown_grace = std::time::Duration::from_secs(5);
    })
    .await;
    let mut failing = SeedAnalyzer::connect(&server, 1.0).await;
    let mut staying = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;
    support::emit(server.emitters, "m", 0..TOTAL as usize, 3).await;
    server.wait_for("all routed", |s| s.routed == TOTAL).await;

    // The staying one acks everything it gets, until the distributor closes.
    let staying = tokio::spawn(async move {
        let mut got = HashSet::new();
        while let Some(m) = staying.next().await {
            assert!(got.insert(m.payload().to_vec()), "duplicate");
            staying.ack().await;
        }
        got
    });
    // The failing one reads its share and acks nothing.
    let mut held = 0u64;
    within("the failing analyzer to get its share", async {
        while server.stats().delivered + held < TOTAL {
            let read =
                tokio::time::timeout(std::time::Duration::from_millis(50), failing.next()).await;
            if let Ok(Some(_)) = read {
                held += 1;
            }
        }
    })
    .await;
    assert!(held > 0, "the failing analyzer holds messages");

    // Shutdown starts; the staying analyzer has nothing left to do. Then the
    // failing one dies holding its messages.
    let shutting_down = tokio::spawn(server.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    failing.kill();

    let report = within("shutdown", shutting_down).await.unwrap();
    let got = within("the staying analyzer", staying).await.unwrap();
    assert!(
        report.dead_letters.is_empty(),
        "{} dead-lettered, the first: {:?}",
        report.dead_letters.len(),
        report.dead_letters.first()
    );
    assert_eq!(report.stats.delivered, TOTAL, "{:?}", report.stats);
    assert_eq!(
        got.len() as u64,
        TOTAL,
        "{held} held by the failing analyzer"
    );
}

/// `analyzers.write_coalesce`: the writer holds a message that found the
/// queues empty for that long, and what arrives meanwhile goes out with it.
/// Lower bounds only: nothing here depends on the machine being fast.
#[tokio::test]
async fn write_coalesce_holds_a_write_and_gathers_what_arrives_meanwhile() {
    const COALESCE: std::time::Duration = logdist::config::MAX_WRITE_COALESCE;
    let server = TestServer::start_with(|c| c.analyzers.write_coalesce = COALESCE).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let mut emitter = connect(server.emitters).await;

    let sent = std::time::Instant::now();
    emitter.write_all(&frames(&[(3, b"first")])).await.unwrap();
    server.wait_for("first routed", |s| s.routed == 1).await;
    emitter.write_all(&frames(&[(3, b"second")])).await.unwrap();
    server.wait_for("second routed", |s| s.routed == 2).await;
    let routed_both = sent.elapsed();

    let first = within("first", analyzer.next()).await.unwrap();
    let first_at = sent.elapsed();
    assert_eq!(&first.payload()[..], b"first");
    assert!(
        first_at >= COALESCE,
        "the first message was written after {first_at:?}, before write_coalesce ({COALESCE:?}) was over"
    );
    if routed_both < COALESCE {
        // The second arrived inside the window: it went out in the same write.
        let second = analyzer.next().now_or_never();
        let second = second
            .expect("the second message came in a later write")
            .unwrap();
        assert_eq!(&second.payload()[..], b"second");
    }
    analyzer.ack().await;
    server.shutdown().await;
}
