//! Weighted routing over real sockets: shares, weight updates, reconnects.

mod support;

use support::{SeedAnalyzer, TestServer, connect, frames, within};
use tokio::io::AsyncWriteExt;

/// Sends `n` binary frames on one connection, payload = sequence number.
async fn emit_numbered(server: &TestServer, n: usize) {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| i.to_string().into_bytes()).collect();
    let messages: Vec<(u8, &[u8])> = payloads.iter().map(|p| (3u8, p.as_slice())).collect();
    let mut stream = connect(server.emitters).await;
    stream.write_all(&frames(&messages)).await.unwrap();
    stream.shutdown().await.unwrap();
}

/// Drains every analyzer concurrently (acking as they go) until `total` have
/// arrived in all; returns per-analyzer counts and the analyzers.
async fn collect(mut analyzers: Vec<SeedAnalyzer>, total: u64) -> (Vec<u64>, Vec<SeedAnalyzer>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handles = Vec::new();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (i, mut analyzer) in analyzers.drain(..).enumerate() {
        let tx = tx.clone();
        let done = done.clone();
        handles.push(tokio::spawn(async move {
            while done.load(std::sync::atomic::Ordering::SeqCst) < total {
                let next =
                    tokio::time::timeout(std::time::Duration::from_millis(50), analyzer.next())
                        .await;
                match next {
                    Ok(Some(_)) => {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tx.send(i).unwrap();
                        if analyzer.received % 64 == 0 {
                            analyzer.ack().await;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => analyzer.ack().await,
                }
            }
            analyzer.ack().await;
            analyzer
        }));
    }
    drop(tx);
    let mut counts = vec![0u64; handles.len()];
    let mut seen = 0;
    while seen < total {
        let i = within("all messages to arrive", rx.recv()).await.unwrap();
        counts[i] += 1;
        seen += 1;
    }
    let mut back = Vec::new();
    for h in handles {
        back.push(within("analyzer task", h).await.unwrap());
    }
    (counts, back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_three_to_one_give_75_25_within_half_a_percent() {
    // The burst must fit the queues: shares are exact while analyzers keep up,
    // and a full queue diverts (tested in delivery.rs).
    let server = TestServer::start_with(|c| c.analyzers.queue_capacity = 10_000).await;
    let a = SeedAnalyzer::connect(&server, 3.0).await;
    let b = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;

    emit_numbered(&server, 10_000).await;
    let (counts, _) = collect(vec![a, b], 10_000).await;
    assert_eq!(server.stats().diverted, 0);
    let share_a = counts[0] as f64 / 10_000.0;
    assert!(
        (share_a - 0.75).abs() <= 0.005,
        "3:1 weights gave {counts:?} (share {share_a})"
    );
    let report = server.shutdown().await;
    assert_eq!(report.stats.delivered, 10_000);
    assert_eq!(report.stats.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_update_by_control_word_changes_shares() {
    let server = TestServer::start_with(|c| c.analyzers.queue_capacity = 10_000).await;
    let mut a = SeedAnalyzer::connect(&server, 1.0).await;
    let b = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;

    // 1:1 becomes 1:3.
    a.set_weight(3.0).await;
    let id = a.id.clone();
    server
        .wait_for_analyzers("weight 3 applied", |list| {
            list.iter().any(|(i, w)| *i == id && *w == 3.0)
        })
        .await;
    emit_numbered(&server, 4_000).await;
    let (counts, mut back) = collect(vec![a, b], 4_000).await;
    assert_eq!(server.stats().diverted, 0);
    assert!(
        counts[0].abs_diff(3_000) <= 20,
        "1:3 weights gave {counts:?}"
    );

    // Weight 0 drains: no new messages for a.
    back[0].set_weight(0.0).await;
    server
        .wait_for_analyzers("weight 0 applied", |list| {
            list.iter().any(|(i, w)| *i == id && *w == 0.0)
        })
        .await;
    emit_numbered(&server, 1_000).await;
    let (counts, _) = collect(back, 1_000).await;
    assert_eq!(counts, vec![0, 1_000]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_analyzer_gets_traffic_again() {
    let server = TestServer::start().await;
    let a = SeedAnalyzer::connect(&server, 1.0).await;
    let b = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;
    emit_numbered(&server, 1_000).await;
    let (counts, mut back) = collect(vec![a, b], 1_000).await;
    assert_eq!(counts.iter().sum::<u64>(), 1_000);
    assert!(counts.iter().all(|&c| c.abs_diff(500) <= 5), "{counts:?}");

    // a leaves with everything acked, then comes back.
    back.remove(0).kill();
    server.wait_analyzers(1).await;
    let a = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;
    let b = back.remove(0);
    emit_numbered(&server, 1_000).await;
    let (counts, _) = collect(vec![a, b], 1_000).await;
    assert!(
        counts.iter().all(|&c| c.abs_diff(500) <= 5),
        "reconnected analyzer must get its share: {counts:?}"
    );
    let report = server.shutdown().await;
    assert_eq!(report.stats.delivered, 2_000);
    assert_eq!(report.stats.redelivered, 0);
}
