//! The memory budget (`limits.max_buffered_bytes`) against a real `logdist`
//! process, over real sockets: a stalled analyzer slows emitters instead of
//! growing memory, what it holds is counted by the read blocks it pins, and
//! everything accepted is delivered exactly once when it reads again.
//!
//! Memory is measured from `/proc/<pid>/status` of the binary; the budget
//! from `/api/v1/stats`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use logdist_wire::{FrameDecoder, encode_frame, encode_gzip_frame, seed_ack_word, seed_handshake};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_util::codec::FramedRead;

const BIN: &str = env!("CARGO_BIN_EXE_logdist");
const MIB: u64 = 1 << 20;

/// Memory of logdist outside the budget, on top of its resident size before
/// any traffic: the 64-byte envelope of every queued message, the analyzer
/// sessions' batches, socket and runtime buffers, and the allocator keeping
/// freed blocks. Measured under 2 MiB in the tests below.
const OVERHEAD: u64 = 8 * MIB;

/// A `logdist` process on ephemeral loopback ports, killed when dropped.
struct Logdist {
    child: Child,
    emitters: SocketAddr,
    analyzers: SocketAddr,
    admin: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Logdist {
    /// Starts logdist with `limits` and `analyzers` (TOML key lines) on top of
    /// a config with one plain emitter listener.
    fn start(limits: &str, analyzers: &str) -> Logdist {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("logdist.toml");
        let dead = dir.path().join("dead.ndjson");
        std::fs::write(
            &config,
            format!(
                "[[listeners]]\naddress = \"127.0.0.1:0\"\nack = \"none\"\n\n\
                 [analyzers]\nlisten = \"127.0.0.1:0\"\n{analyzers}\n\n\
                 [delivery]\ndead_letter_path = {dead:?}\nshutdown_grace = \"1s\"\n\n\
                 [limits]\n{limits}\n\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n\n\
                 [runtime]\nworker_threads = 2\n"
            ),
        )
        .unwrap();
        let ready = dir.path().join("ready.json");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .env("LOGDIST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut logdist = Logdist {
            child,
            emitters: "127.0.0.1:1".parse().unwrap(),
            analyzers: "127.0.0.1:1".parse().unwrap(),
            admin: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text;
            }
            if let Some(status) = logdist.child.try_wait().unwrap() {
                panic!("logdist exited early with {status}");
            }
            assert!(Instant::now() < deadline, "no ready file");
            std::thread::sleep(Duration::from_millis(10));
        };
        let addresses: Value = serde_json::from_str(&text).unwrap();
        let address = |v: &Value| v.as_str().unwrap().parse::<SocketAddr>().unwrap();
        logdist.emitters = address(&addresses["listeners"][0]["address"]);
        logdist.analyzers = address(&addresses["analyzers"]);
        logdist.admin = format!("http://{}", address(&addresses["admin"]));
        logdist
    }

    /// A `kB` field of the process's `/proc/<pid>/status`, in bytes.
    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {field} in /proc status"));
        line.split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    async fn stats(&self) -> Value {
        let url = format!("{}/api/v1/stats", self.admin);
        let response = self.http.get(url).send().await.unwrap();
        response.json().await.unwrap()
    }

    async fn totals(&self) -> Value {
        self.stats().await["totals"].clone()
    }

    /// Polls the stats until `done` holds (bounded); returns the last totals.
    async fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let totals = self.totals().await;
            if done(&totals) {
                return totals;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {totals}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_analyzers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stats().await["analyzers"].as_object().unwrap().len() != n {
            assert!(Instant::now() < deadline, "{n} analyzers never registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Logdist {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// A seed-protocol analyzer in its own task: it connects at once, reads only
/// once told to, acks everything it reads, and records the `(emitter, seq)`
/// tag at the front of every payload.
struct Analyzer {
    reading: Arc<Notify>,
    received: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl Analyzer {
    async fn connect(address: SocketAddr, weight: f32, reading: bool) -> Analyzer {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(&seed_handshake(weight)).await.unwrap();
        let go = Arc::new(Notify::new());
        if reading {
            go.notify_one();
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let (go, received) = (go.clone(), received.clone());
            async move {
                go.notified().await;
                let (reader, mut writer) = stream.into_split();
                let mut frames = FramedRead::new(reader, FrameDecoder::new(64 << 20));
                let mut count = 0u64;
                while let Some(Ok(message)) = frames.next().await {
                    let payload = message.payload();
                    let tag =
                        |at: usize| u64::from_be_bytes(payload[at..at + 8].try_into().unwrap());
                    received.lock().push((tag(0), tag(8)));
                    count += 1;
                    // Ack whenever the socket has nothing more buffered.
                    if frames.read_buffer().is_empty()
                        && writer.write_all(&seed_ack_word(count)).await.is_err()
                    {
                        return;
                    }
                }
            }
        });
        Analyzer {
            reading: go,
            received,
        }
    }

    fn resume(&self) {
        self.reading.notify_one();
    }

    fn count(&self) -> usize {
        self.received.lock().len()
    }
}

/// A payload starting with its `(emitter, seq)` tag, `len` bytes in all.
fn tagged(emitter: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&emitter.to_be_bytes());
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.resize(len, b'.');
    payload
}

/// An emitter sending tagged frames as fast as the socket takes them, in
/// batches, until it has offered `cap` bytes or `stop` is set between two
/// batches; then it closes. `written` counts the bytes of finished batches.
struct Emitter {
    written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<u64>,
}

impl Emitter {
    fn start(
        address: SocketAddr,
        emitter: u64,
        priority: u8,
        payload: usize,
        cap: u64,
        stop: Arc<AtomicBool>,
    ) -> Emitter {
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let written = written.clone();
            async move {
                let socket = TcpSocket::new_v4().unwrap();
                // A small send buffer, so a blocked write shows soon.
                socket.set_send_buffer_size(64 * 1024).unwrap();
                let mut stream = socket.connect(address).await.unwrap();
                let mut seq = 0u64;
                let mut batch = BytesMut::new();
                while !stop.load(Ordering::Relaxed) && written.load(Ordering::Relaxed) < cap {
                    batch.clear();
                    while batch.len() < 64 * 1024 {
                        encode_frame(priority, &tagged(emitter, seq, payload), &mut batch);
                        seq += 1;
                    }
                    stream.write_all(&batch).await.unwrap();
                    written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                stream.shutdown().await.unwrap();
                seq
            }
        });
        Emitter { written, task }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Every emitter's messages arrived once each, all of them: `sent[e]` is how
/// many emitter `e` sent.
fn assert_exactly_once(analyzers: &[&Analyzer], sent: &[u64]) {
    let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for analyzer in analyzers {
        for &(emitter, seq) in analyzer.received.lock().iter() {
            seen.entry(emitter).or_default().push(seq);
        }
    }
    for (emitter, &n) in sent.iter().enumerate() {
        let mut seqs = seen.remove(&(emitter as u64)).unwrap_or_default();
        seqs.sort_unstable();
        let dups = seqs.windows(2).filter(|w| w[0] == w[1]).count();
        seqs.dedup();
        assert_eq!(
            dups, 0,
            "emitter {emitter}: {dups} messages delivered twice"
        );
        assert_eq!(
            seqs.len() as u64,
            n,
            "emitter {emitter}: sent {n}, delivered {} distinct",
            seqs.len()
        );
        assert_eq!(seqs.last().copied(), n.checked_sub(1), "emitter {emitter}");
    }
    assert!(seen.is_empty(), "messages from nowhere: {:?}", seen.keys());
}

/// Samples the budget while `phase` lasts: the largest `buffered_bytes` seen.
async fn watch_budget(logdist: &Logdist, phase: Duration) -> u64 {
    let end = Instant::now() + phase;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(number(&logdist.totals().await["buffered_bytes"]));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_analyzer_slows_emitters_within_the_budget_and_loses_nothing() {
    const BUDGET: u64 = 16 * MIB;
    let logdist = Logdist::start(
        &format!("max_buffered_bytes = {BUDGET}"),
        // Queues and window far larger than the budget: memory must bind first.
        "queue_capacity = 1000000\nwindow = 100000\nack_timeout = \"60s\"",
    );
    let stalled = Analyzer::connect(logdist.analyzers, 1.0, false).await;
    logdist.wait_analyzers(1).await;
    let rss_before = logdist.memory("VmRSS");

    // Two emitters offer 48 MiB each, as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let emitters: Vec<Emitter> = (0..2)
        .map(|e| Emitter::start(logdist.emitters, e, 3, 4096, 48 * MIB, stop.clone()))
        .collect();
    let offered = || emitters.iter().map(Emitter::written).sum::<u64>();

    let peak = watch_budget(&logdist, Duration::from_millis(2500)).await;
    let before = offered();
    let peak = peak.max(watch_budget(&logdist, Duration::from_millis(1000)).await);
    let after = offered();
    let hwm = logdist.memory("VmHWM");
    let totals = logdist.totals().await;

    eprintln!(
        "stalled: offered {} MiB (last second {} KiB), buffered peak {} KiB of {} KiB, RSS {} MiB before, peak {} MiB",
        after / MIB,
        (after - before) / 1024,
        peak / 1024,
        BUDGET / 1024,
        rss_before / MIB,
        hwm / MIB
    );
    // Slowed: the emitters' writes block well short of what they offer.
    assert!(
        after < 96 * MIB,
        "emitters were never slowed: {after} bytes written"
    );
    assert!(
        after - before < 2 * MIB,
        "emitters still writing while logdist holds its budget: {} bytes in the last second",
        after - before
    );
    assert!(number(&totals["reads_waited_for_budget"]) > 0, "{totals}");
    // The budget holds (no overdraft: delivery will free what is held).
    assert!(peak <= BUDGET, "buffered_bytes reached {peak} of {BUDGET}");
    assert!(
        peak >= BUDGET / 2,
        "the budget was not what stopped reading: {peak}"
    );
    assert_eq!(number(&totals["buffered_bytes_overdrafts"]), 0, "{totals}");
    assert_eq!(number(&totals["buffered_bytes_limit"]), BUDGET);
    // And so does the process.
    assert!(
        hwm <= rss_before + BUDGET + OVERHEAD,
        "peak RSS {} MiB over {} MiB before traffic + {} MiB budget + {} MiB overhead",
        hwm / MIB,
        rss_before / MIB,
        BUDGET / MIB,
        OVERHEAD / MIB
    );

    // The analyzer reads again and another one arrives: everything accepted
    // is delivered, once.
    stalled.resume();
    let other = Analyzer::connect(logdist.analyzers, 1.0, true).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for emitter in emitters {
        sent.push(emitter.task.await.unwrap());
    }
    let total: u64 = sent.iter().sum();
    let totals = logdist
        .wait_for("every message delivered", |t| {
            number(&t["delivered"]) == total
        })
        .await;
    assert_eq!(number(&totals["accepted"]), total, "{totals}");
    assert_eq!(number(&totals["dead_lettered"]), 0, "{totals}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while (stalled.count() + other.count()) < total as usize {
        assert!(
            Instant::now() < deadline,
            "analyzers got fewer than delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_exactly_once(&[&stalled, &other], &sent);
    // Nothing is held any more, so nothing is charged.
    logdist
        .wait_for("the budget to empty", |t| number(&t["buffered_bytes"]) == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_stuck_behind_a_stalled_analyzer_are_charged_by_the_blocks_they_pin() {
    const BUDGET: u64 = 8 * MIB;
    let logdist = Logdist::start(
        &format!("max_buffered_bytes = {BUDGET}"),
        "queue_capacity = 1000000\nwindow = 100000\nack_timeout = \"60s\"",
    );
    // One analyzer in 64 stalls: every 64 KiB read block ends up with a few
    // of its (low-priority) messages stuck there, the rest are delivered.
    let stalled = Analyzer::connect(logdist.analyzers, 1.0, false).await;
    let healthy = Analyzer::connect(logdist.analyzers, 63.0, true).await;
    logdist.wait_analyzers(2).await;
    let rss_before = logdist.memory("VmRSS");

    let stop = Arc::new(AtomicBool::new(false));
    let emitter = Emitter::start(logdist.emitters, 0, 200, 100, 128 * MIB, stop.clone());
    let peak = watch_budget(&logdist, Duration::from_millis(2500)).await;
    let before = emitter.written();
    let peak = peak.max(watch_budget(&logdist, Duration::from_millis(1000)).await);
    let after = emitter.written();
    let hwm = logdist.memory("VmHWM");
    let stats = logdist.stats().await;
    let totals = &stats["totals"];

    // What is stuck is small; the blocks it pins are not, and they are what
    // stopped logdist reading.
    let stalled_id = stats["analyzers"]
        .as_object()
        .unwrap()
        .values()
        .find(|a| a["weight"].as_f64() == Some(1.0))
        .unwrap();
    let stuck = number(&stalled_id["queue_depth"]) + number(&stalled_id["in_flight"]);
    let stuck_bytes = stuck * 105;
    let buffered = number(&totals["buffered_bytes"]);
    eprintln!(
        "pinned: {stuck} messages stuck ({stuck_bytes} bytes), buffered {} KiB (peak {} KiB), offered {} MiB (last second {} KiB), RSS {} MiB before, peak {} MiB",
        buffered / 1024,
        peak / 1024,
        after / MIB,
        (after - before) / 1024,
        rss_before / MIB,
        hwm / MIB
    );
    assert!(stuck > 0, "{stats}");
    assert!(
        buffered >= BUDGET / 2 && buffered >= 10 * stuck_bytes,
        "buffered_bytes {buffered} does not count the blocks {stuck} stuck messages ({stuck_bytes} bytes) pin"
    );
    assert!(peak <= BUDGET, "buffered_bytes reached {peak} of {BUDGET}");
    assert!(
        after - before < MIB,
        "the emitter was not slowed: {} bytes in the last second",
        after - before
    );
    assert!(
        hwm <= rss_before + BUDGET + OVERHEAD,
        "peak RSS {} MiB over {} MiB before traffic + {} MiB budget + {} MiB overhead",
        hwm / MIB,
        rss_before / MIB,
        BUDGET / MIB,
        OVERHEAD / MIB
    );

    stalled.resume();
    stop.store(true, Ordering::Relaxed);
    let sent = emitter.task.await.unwrap();
    logdist
        .wait_for("every message delivered", |t| {
            number(&t["delivered"]) == sent
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (stalled.count() + healthy.count()) < sent as usize {
        assert!(
            Instant::now() < deadline,
            "analyzers got fewer than delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_exactly_once(&[&stalled, &healthy], &[sent]);
    logdist
        .wait_for("the budget to empty", |t| number(&t["buffered_bytes"]) == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frame_larger_than_the_budget_gets_through_past_idle_connections() {
    const BUDGET: u64 = MIB;
    let logdist = Logdist::start(
        &format!(
            "max_buffered_bytes = {BUDGET}\nmax_frame_bytes = {}",
            8 * MIB
        ),
        "",
    );
    let analyzer = Analyzer::connect(logdist.analyzers, 1.0, true).await;
    logdist.wait_analyzers(1).await;

    // Twenty emitters send a message each and stay connected, idle: their
    // read blocks (64 KiB each) add up to more than the budget, so the last
    // ones to read need the first ones to give theirs back.
    let mut idle = Vec::new();
    for e in 0..20u64 {
        let mut stream = TcpStream::connect(logdist.emitters).await.unwrap();
        let mut frame = BytesMut::new();
        encode_frame(1, &tagged(e, 0, 64), &mut frame);
        stream.write_all(&frame).await.unwrap();
        idle.push(stream);
    }
    logdist
        .wait_for("the idle emitters' messages", |t| {
            number(&t["delivered"]) == 20
        })
        .await;

    // A frame three times the budget, from one more emitter, while they
    // are still connected.
    let mut big = TcpStream::connect(logdist.emitters).await.unwrap();
    let mut frame = BytesMut::new();
    encode_frame(1, &tagged(20, 0, 3 * MIB as usize), &mut frame);
    big.write_all(&frame).await.unwrap();
    big.shutdown().await.unwrap();
    let totals = logdist
        .wait_for("the large frame", |t| number(&t["delivered"]) == 21)
        .await;
    assert!(
        number(&totals["buffered_bytes_overdrafts"]) >= 1,
        "{totals}"
    );

    drop(idle);
    drop(big);
    logdist
        .wait_for("the budget to empty", |t| number(&t["buffered_bytes"]) == 0)
        .await;
    assert_exactly_once(&[&analyzer], &[1; 21]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_frames_are_charged_before_they_inflate_and_while_their_lines_wait() {
    const BUDGET: u64 = 4 * MIB;
    let logdist = Logdist::start(
        &format!(
            "max_buffered_bytes = {BUDGET}\nmax_decompressed_bytes = {}",
            2 * MIB
        ),
        "queue_capacity = 1000000\nwindow = 100000\nack_timeout = \"60s\"",
    );
    let stalled = Analyzer::connect(logdist.analyzers, 1.0, false).await;
    logdist.wait_analyzers(1).await;

    // Three gzip frames of 10,000 lines (about 1.5 MiB) each: two fit the
    // budget with their reservation, the third must wait for delivery.
    let mut stream = TcpStream::connect(logdist.emitters).await.unwrap();
    let mut input = BytesMut::new();
    let pad = "x".repeat(120);
    for frame in 0..3 {
        let mut text = String::new();
        for line in 0..10_000 {
            text.push_str(&format!(
                "{{\"f\":{frame},\"l\":{line},\"pad\":\"{pad}\"}}\n"
            ));
        }
        encode_gzip_frame(text.as_bytes(), &mut input);
    }
    stream.write_all(&input).await.unwrap();
    stream.shutdown().await.unwrap();

    let totals = logdist
        .wait_for("two frames' lines", |t| number(&t["accepted"]) == 20_000)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let totals_later = logdist.totals().await;
    assert_eq!(number(&totals_later["accepted"]), 20_000, "{totals_later}");
    let buffered = number(&totals["buffered_bytes"]);
    assert!(
        (5 * MIB / 2..=BUDGET).contains(&buffered),
        "two inflated buffers pinned by their queued lines: {buffered}"
    );
    assert!(
        number(&totals_later["reads_waited_for_budget"]) >= 1,
        "{totals_later}"
    );

    stalled.resume();
    logdist
        .wait_for("every line delivered", |t| {
            number(&t["delivered"]) == 30_000
        })
        .await;
    logdist
        .wait_for("the budget to empty", |t| number(&t["buffered_bytes"]) == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_ingest_is_charged_until_its_messages_are_delivered() {
    let logdist = Logdist::start(&format!("max_buffered_bytes = {MIB}"), "");
    let stalled = Analyzer::connect(logdist.analyzers, 1.0, false).await;
    logdist.wait_analyzers(1).await;
    let pad = "p".repeat(500);
    let messages: Vec<Value> = (0..1000)
        .map(|i| serde_json::json!({"level": "INFO", "i": i, "pad": pad}))
        .collect();
    let body = serde_json::json!([{"id": "one", "messages": messages}]);
    let url = format!("{}/api/v1/logs", logdist.admin);
    let post = tokio::spawn({
        let http = logdist.http.clone();
        async move { http.post(url).json(&body).send().await.unwrap().status() }
    });
    let totals = logdist
        .wait_for("the request's messages queued", |t| {
            number(&t["accepted"]) == 1000
        })
        .await;
    let buffered = number(&totals["buffered_bytes"]);
    assert!(
        (500_000..=MIB).contains(&buffered),
        "1000 lines of about 530 bytes: {buffered}"
    );
    stalled.resume();
    assert!(post.await.unwrap().is_success());
    logdist
        .wait_for("every message delivered", |t| {
            number(&t["delivered"]) == 1000
        })
        .await;
    logdist
        .wait_for("the budget to empty", |t| number(&t["buffered_bytes"]) == 0)
        .await;
}
