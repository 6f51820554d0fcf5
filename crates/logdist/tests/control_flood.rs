//! A hostile analyzer floods weight control words: the routing table is
//! rebuilt at most once per 100 ms per connection, the log stays small, the
//! last weight wins, and another emitter→analyzer pair does not notice.
//!
//! Its own test binary: it installs a global log subscriber that counts lines.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use logdist_wire::{seed_handshake, seed_weight_word};
use support::{SeedAnalyzer, TestServer, connect, frames, within};
use tokio::io::AsyncWriteExt;

/// Weight words in the burst.
const WORDS: usize = 1_000_000;
/// Messages of the reference pair sent during or after the burst may take at
/// most this long, send to receive, at the 99th percentile...
const P99_BOUND: Duration = Duration::from_millis(100);
/// ...and at most this long, any of them.
const MAX_BOUND: Duration = Duration::from_millis(500);
/// The last word is in force at most this long after the burst is written.
const FINAL_WEIGHT_BOUND: Duration = Duration::from_secs(2);
/// Log lines at info and above over the whole test.
const LOG_LINES_BOUND: usize = 60;

/// Counts the lines the subscriber writes (and keeps the first ones).
#[derive(Clone, Default)]
struct LineCounter {
    lines: Arc<AtomicUsize>,
    weight_lines: Arc<AtomicUsize>,
    sample: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Write for LineCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let lines = text.matches('\n').count();
        self.lines.fetch_add(lines, Ordering::Relaxed);
        if text.contains("changed its weight") {
            self.weight_lines.fetch_add(lines, Ordering::Relaxed);
        }
        let mut sample = self.sample.lock();
        if sample.len() < 40 {
            sample.push(text.trim_end().to_string());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_flood_costs_one_rebuild_per_window_and_a_few_log_lines() {
    let counter = LineCounter::default();
    let writer = counter.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let server = TestServer::start().await;
    // The reference pair: one emitter, one analyzer of weight 1.
    let mut reference = SeedAnalyzer::connect(&server, 1.0).await;
    // The flooder starts draining (weight 0): it gets nothing.
    let mut flooder = connect(server.analyzers).await;
    flooder.write_all(&seed_handshake(0.0)).await.unwrap();
    server.wait_analyzers(2).await;
    let flooder_id = server
        .router
        .load()
        .analyzers()
        .iter()
        .map(|a| a.id.to_string())
        .find(|id| *id != reference.id)
        .unwrap();

    // The reference emitter sends a timestamped message every millisecond.
    let epoch = Instant::now();
    let sending = Arc::new(AtomicBool::new(true));
    let emitter = tokio::spawn({
        let (address, sending) = (server.emitters, sending.clone());
        async move {
            let mut stream = connect(address).await;
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while sending.load(Ordering::Relaxed) {
                tick.tick().await;
                let payload = epoch.elapsed().as_nanos().to_string();
                stream
                    .write_all(&frames(&[(3, payload.as_bytes())]))
                    .await
                    .unwrap();
                sent += 1;
            }
            stream.shutdown().await.unwrap();
            sent
        }
    });
    // The reference analyzer records each message's send time and latency.
    let receiving = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(m) = reference.next().await {
            let sent_at: u64 = std::str::from_utf8(&m.payload()).unwrap().parse().unwrap();
            let sent_at = Duration::from_nanos(sent_at);
            seen.push((sent_at, epoch.elapsed().saturating_sub(sent_at)));
            reference.ack().await;
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The burst: a million weight words, the last one a weight no other has.
    let mut burst = Vec::with_capacity(WORDS * 4);
    for i in 0..WORDS - 1 {
        burst.extend_from_slice(&seed_weight_word(1e-9 * (1 + i % 2) as f32));
    }
    let last = 3e-9f32;
    burst.extend_from_slice(&seed_weight_word(last));
    let burst_start = epoch.elapsed();
    within("the burst to be written", flooder.write_all(&burst))
        .await
        .unwrap();
    let written = Instant::now();
    server
        .wait_for_analyzers("the last weight word in force", |a| {
            a.iter()
                .any(|(id, w)| *id == flooder_id && *w == f64::from(last))
        })
        .await;
    let in_force_after = written.elapsed();
    // A bit of quiet after the burst, then stop the reference traffic.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sending.store(false, Ordering::Relaxed);
    let sent = within("the emitter", emitter).await.unwrap();
    server
        .wait_for("every reference message delivered", |s| s.delivered == sent)
        .await;
    assert_eq!(
        server.directory.get(&flooder_id).unwrap().weight,
        f64::from(last),
        "the directory holds the last weight sent"
    );
    drop(flooder);
    let report = server.shutdown().await;
    let seen = within("the reference analyzer", receiving).await.unwrap();
    assert_eq!(
        seen.len() as u64,
        sent,
        "the reference analyzer got everything"
    );
    assert_eq!(report.stats.delivered, sent);

    let mut during: Vec<Duration> = seen
        .iter()
        .filter(|(sent_at, _)| *sent_at >= burst_start)
        .map(|(_, latency)| *latency)
        .collect();
    during.sort();
    assert!(
        during.len() > 200,
        "{} messages during the burst",
        during.len()
    );
    let (p99, max) = (percentile(&during, 0.99), *during.last().unwrap());
    let lines = counter.lines.load(Ordering::Relaxed);
    let weight_lines = counter.weight_lines.load(Ordering::Relaxed);
    println!(
        "burst of {WORDS} words: last weight in force {in_force_after:?} after writing; \
         reference pair over {} messages: p99 {p99:?}, max {max:?}; log: {lines} lines, \
         {weight_lines} about weights",
        during.len()
    );
    assert!(
        in_force_after <= FINAL_WEIGHT_BOUND,
        "the last weight took {in_force_after:?} to take effect"
    );
    assert!(
        lines <= LOG_LINES_BOUND && weight_lines <= 3,
        "{lines} log lines ({weight_lines} about weights); first ones:\n{}",
        counter.sample.lock().join("\n")
    );
    assert!(
        p99 <= P99_BOUND && max <= MAX_BOUND,
        "the reference pair slowed down: p99 {p99:?}, max {max:?}"
    );
}
