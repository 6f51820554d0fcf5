//! Disk mode (`[durability] mode = "disk"`) against real `logdist`
//! processes: what logdist acknowledged `ok` survives SIGKILL, a full spool
//! slows emitters without losing anything, shutdown leaves what it holds in
//! the spool, and one spool directory serves one process.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::SeedAnalyzer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_logdist");

/// Ports a logdist got on its first start, kept for its restarts.
#[derive(Clone, Copy)]
struct Ports {
    /// `ack = "message"` NDJSON listener.
    acked: SocketAddr,
    /// `ack = "none"` listener (frames).
    plain: SocketAddr,
    analyzers: SocketAddr,
    admin: SocketAddr,
}

/// A disk-mode `logdist` process; killed (SIGKILL) when dropped.
struct Logdist {
    child: Child,
    ports: Ports,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Logdist {
    /// Starts logdist with its spool in `dir/spool`, on ephemeral ports (or
    /// `ports`, for a restart); `extra` adds `durability.*` keys.
    fn start(dir: &Path, ports: Option<Ports>, extra: &str) -> Logdist {
        Logdist::start_with(dir, ports, extra, "")
    }

    /// [`start`](Self::start), with `delivery` adding `delivery.*` keys.
    fn start_with(dir: &Path, ports: Option<Ports>, extra: &str, delivery: &str) -> Logdist {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut child = spawn(dir, ports, extra, delivery);
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready: Value = loop {
            // Parsed whole, or it is still being written.
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(ready) = serde_json::from_str(&text)
            {
                break ready;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("logdist exited early with {status}");
            }
            assert!(Instant::now() < deadline, "no ready file");
            std::thread::sleep(Duration::from_millis(10));
        };
        let address = |v: &Value| v.as_str().unwrap().parse::<SocketAddr>().unwrap();
        let ports = Ports {
            acked: address(&ready["listeners"][0]["address"]),
            plain: address(&ready["listeners"][1]["address"]),
            analyzers: address(&ready["analyzers"]),
            admin: address(&ready["admin"]),
        };
        Logdist {
            child,
            ports,
            dir: dir.to_path_buf(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    /// SIGKILL, then a new process on the same ports and spool.
    fn crash_and_restart(mut self, extra: &str) -> Logdist {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        Logdist::start(&self.dir, Some(self.ports), extra)
    }

    /// SIGTERM and wait for the exit (bounded).
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "logdist did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn stats(&self) -> Value {
        let url = format!("http://{}/api/v1/stats", self.ports.admin);
        let response = self.http.get(url).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// Polls the stats until `done` holds (bounded); returns them.
    async fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                stats["durability"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Logdist {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, ports: Option<Ports>, extra: &str, delivery: &str) -> Child {
    let port = |pick: fn(&Ports) -> SocketAddr| {
        ports
            .as_ref()
            .map_or("127.0.0.1:0".to_string(), |p| pick(p).to_string())
    };
    let config = dir.join("logdist.toml");
    let spool = dir.join("spool");
    let dead = dir.join("dead.ndjson");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"{acked}\"\nack = \"message\"\n\n\
             [[listeners]]\naddress = \"{plain}\"\nack = \"none\"\n\n\
             [analyzers]\nlisten = \"{analyzers}\"\n\n\
             [delivery]\ndead_letter_path = {dead:?}\nshutdown_grace = \"1s\"\n{delivery}\n\n\
             [admin]\nlisten = \"{admin}\"\n\n\
             [durability]\nmode = \"disk\"\ndir = {spool:?}\n{extra}\n",
            acked = port(|p| p.acked),
            plain = port(|p| p.plain),
            analyzers = port(|p| p.analyzers),
            admin = port(|p| p.admin),
        ),
    )
    .unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--ready-file")
        .arg(dir.join("ready.json"))
        .env("LOGDIST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// An NDJSON emitter on an ack listener: sends `{"seq":N,...}` lines and
/// counts the `ok` replies (the n-th reply answers the n-th line).
struct AckedEmitter {
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<u64>,
}

impl AckedEmitter {
    /// Sends seqs `from..to` at `priority` (or until the connection fails).
    fn start(addr: SocketAddr, from: u64, to: u64, priority: u8) -> AckedEmitter {
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let acked = acked.clone();
            async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (reader, mut writer) = stream.into_split();
                let sender = tokio::spawn(async move {
                    let mut batch = Vec::new();
                    for seq in from..to {
                        batch.extend_from_slice(
                            format!("{{\"seq\":{seq},\"priority\":{priority},\"pad\":\"xxxxxxxxxxxxxxxx\"}}\n")
                                .as_bytes(),
                        );
                        if batch.len() > 16 * 1024 || seq + 1 == to {
                            if writer.write_all(&batch).await.is_err() {
                                return;
                            }
                            batch.clear();
                        }
                    }
                });
                let mut lines = BufReader::new(reader).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    assert!(line.contains("\"ok\""), "not ok: {line}");
                    if acked.fetch_add(1, Ordering::Relaxed) + 1 == to - from {
                        break;
                    }
                }
                sender.abort();
                acked.load(Ordering::Relaxed)
            }
        });
        AckedEmitter { acked, task }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
}

/// The `seq` of an NDJSON message a seed analyzer received.
fn seq_of(message: &logdist_wire::Message) -> u64 {
    let line: Value = serde_json::from_slice(&message.payload()).unwrap();
    number(&line["seq"])
}

/// Reads messages at `analyzer` (acking every 500) until `want` is all
/// covered; returns every seq received, duplicates included.
async fn receive_all(analyzer: &mut SeedAnalyzer, want: &BTreeSet<u64>) -> Vec<u64> {
    let mut got = Vec::new();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&seen) {
        assert!(
            Instant::now() < deadline,
            "{} of {} acked messages received",
            want.intersection(&seen).count(),
            want.len()
        );
        let message = analyzer.next().await.expect("connection open");
        let seq = seq_of(&message);
        got.push(seq);
        seen.insert(seq);
        if analyzer.received.is_multiple_of(500) {
            analyzer.ack().await;
        }
    }
    analyzer.ack().await;
    got
}

async fn seed_analyzer(addr: SocketAddr) -> SeedAnalyzer {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let id = format!("analyzer_{}", stream.local_addr().unwrap());
    let mut analyzer = SeedAnalyzer::from_stream(stream, id);
    analyzer.send_handshake(1.0).await;
    analyzer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_acked_ok_survive_sigkill_with_no_analyzer() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let logdist = Logdist::start(dir.path(), None, "");
    let emitter = AckedEmitter::start(logdist.ports.acked, 0, N, 3);
    let acked = tokio::time::timeout(Duration::from_secs(30), emitter.task)
        .await
        .expect("every message acked in time")
        .unwrap();
    assert_eq!(acked, N);

    let logdist = logdist.crash_and_restart("");
    let stats = logdist.stats().await;
    assert_eq!(number(&stats["durability"]["recovered"]), N, "{stats}");
    let mut analyzer = seed_analyzer(logdist.ports.analyzers).await;
    let want: BTreeSet<u64> = (0..N).collect();
    let got = receive_all(&mut analyzer, &want).await;
    assert_eq!(
        got.len() as u64,
        N,
        "each exactly once: nothing was delivered before"
    );
    logdist
        .wait_for("the spool to empty", |s| {
            number(&s["durability"]["spool_messages"]) == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_acked_ok_survive_sigkill_while_analyzers_consume() {
    let dir = tempfile::tempdir().unwrap();
    let logdist = Logdist::start(dir.path(), None, "");
    let consumed = Arc::new(AtomicBool::new(false));
    let mut before = seed_analyzer(logdist.ports.analyzers).await;
    let reading = tokio::spawn({
        let consumed = consumed.clone();
        async move {
            let mut got = Vec::new();
            while let Some(message) = before.next_or_closed().await {
                got.push(seq_of(&message));
                if before.received.is_multiple_of(100) {
                    if before.try_ack().await.is_err() {
                        break;
                    }
                    consumed.store(true, Ordering::Relaxed);
                }
            }
            got
        }
    });
    let emitter = AckedEmitter::start(logdist.ports.acked, 0, u64::MAX, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while emitter.acked() < 5_000 || !consumed.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "the stream never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let logdist = logdist.crash_and_restart("");
    let acked = tokio::time::timeout(Duration::from_secs(10), emitter.task)
        .await
        .expect("the emitter sees its connection end")
        .unwrap();
    let mut received: Vec<u64> = reading.await.unwrap();
    let want: BTreeSet<u64> = (0..acked).collect();
    let first: BTreeSet<u64> = received.iter().copied().collect();
    let missing: BTreeSet<u64> = want.difference(&first).copied().collect();
    let mut after = seed_analyzer(logdist.ports.analyzers).await;
    received.extend(receive_all(&mut after, &missing).await);
    let all: BTreeSet<u64> = received.iter().copied().collect();
    assert!(want.is_subset(&all), "every message acked ok arrived");
    eprintln!(
        "acked {acked}, received {} before the kill, {} recovered, {} duplicates",
        first.len(),
        missing.len(),
        received.len() - all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_slows_emitters_and_drains_when_an_analyzer_comes() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    // A spool of 4 MiB in 1 MiB segments, a tiny holding queue: the spool
    // is what fills.
    let durability = "segment_bytes = 1048576\nmax_bytes = 4194304";
    let logdist = Logdist::start_with(dir.path(), None, durability, "hold_capacity = 100");
    let written = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let (addr, written) = (logdist.ports.plain, written.clone());
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let payload = vec![b'p'; 1000];
            let mut seq = 0u64;
            // 16 MiB offered: four times the spool.
            while written.load(Ordering::Relaxed) < 16 * MIB {
                let mut batch = bytes::BytesMut::new();
                for _ in 0..64 {
                    let mut body = seq.to_be_bytes().to_vec();
                    body.extend_from_slice(&payload);
                    logdist_wire::encode_frame(2, &body, &mut batch);
                    seq += 1;
                }
                if stream.write_all(&batch).await.is_err() {
                    break;
                }
                written.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            let _ = stream.shutdown().await;
            seq
        }
    });
    // Slowed: the writes stop well short of what is offered.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = written.load(Ordering::Relaxed);
        if now == last && now > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the emitter was never slowed");
        last = now;
    }
    assert!(last < 12 * MIB, "{last} bytes taken with a 4 MiB spool");
    let stats = logdist.stats().await;
    let spool_bytes = number(&stats["durability"]["spool_bytes"]);
    assert!(spool_bytes <= 4 * MIB + MIB, "spool at {spool_bytes} bytes");
    assert!(number(&stats["durability"]["backlog"]) > 0, "{stats}");

    // An analyzer arrives: everything is delivered, once, and the spool empties.
    let mut analyzer = seed_analyzer(logdist.ports.analyzers).await;
    let draining = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let mut duplicates = 0;
        loop {
            // Acks every 200, and whatever it has whenever the stream pauses.
            let next = tokio::time::timeout(Duration::from_millis(50), analyzer.next_or_closed());
            let message = match next.await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                // (Nothing to ack before the first message: a seed analyzer
                // that sends a word first is not one.)
                Err(_) if analyzer.received == 0 => continue,
                Err(_) => {
                    if analyzer.try_ack().await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let seq = u64::from_be_bytes(message.payload()[..8].try_into().unwrap());
            if !seen.insert(seq) {
                duplicates += 1;
            }
            if analyzer.received.is_multiple_of(200) && analyzer.try_ack().await.is_err() {
                break;
            }
        }
        (seen, duplicates)
    });
    let sent = tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("the emitter finished once the spool drained")
        .unwrap();
    let stats = logdist
        .wait_for("everything delivered", |s| {
            number(&s["totals"]["delivered"]) == sent
        })
        .await;
    assert_eq!(number(&stats["totals"]["accepted"]), sent);
    assert_eq!(number(&stats["totals"]["dead_lettered"]), 0);
    logdist
        .wait_for("the spool to empty", |s| {
            number(&s["durability"]["spool_messages"]) == 0
        })
        .await;
    drop(logdist);
    let (seen, duplicates) = draining.await.unwrap();
    assert_eq!(seen.len() as u64, sent);
    assert_eq!(duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_held_messages_in_the_spool_and_recovery_drains_by_priority() {
    let dir = tempfile::tempdir().unwrap();
    let logdist = Logdist::start(dir.path(), None, "");
    // Priority 5 first, then priority 0; no analyzer.
    let low = AckedEmitter::start(logdist.ports.acked, 0, 3_000, 5);
    assert_eq!(low.task.await.unwrap(), 3_000);
    let high = AckedEmitter::start(logdist.ports.acked, 3_000, 4_000, 0);
    assert_eq!(high.task.await.unwrap(), 1_000);
    let status = logdist.terminate();
    assert!(status.success(), "{status}");
    assert!(
        std::fs::metadata(dir.path().join("dead.ndjson")).is_err(),
        "disk mode dead-letters nothing at shutdown"
    );

    let logdist = Logdist::start(dir.path(), None, "");
    let stats = logdist.stats().await;
    assert_eq!(number(&stats["durability"]["recovered"]), 4_000);
    let mut analyzer = seed_analyzer(logdist.ports.analyzers).await;
    let want: BTreeSet<u64> = (0..4_000).collect();
    let got = receive_all(&mut analyzer, &want).await;
    assert_eq!(got.len(), 4_000);
    assert!(
        got[..1_000].iter().all(|&seq| seq >= 3_000),
        "the backlog drains most urgent first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_logdist_on_the_same_spool_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Logdist::start(dir.path(), None, "");
    let other = tempfile::tempdir().unwrap();
    // Same spool, other ports and files.
    let config = other.path().join("logdist.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[analyzers]\nlisten = \"127.0.0.1:0\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n[durability]\nmode = \"disk\"\ndir = {:?}\n",
            dir.path().join("spool")
        ),
    )
    .unwrap();
    let second = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(|| second.wait_with_output()),
    )
    .await
    .expect("the second logdist exits at once")
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("durability.dir") && stderr.contains("in use by another logdist"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.child.id())),
        "names the holder: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_gzip_messages_are_spooled_too() {
    let dir = tempfile::tempdir().unwrap();
    let logdist = Logdist::start(dir.path(), None, "");
    // 100 messages over HTTP: the reply comes once they are stored.
    let messages: Vec<Value> = (0..100)
        .map(|seq| serde_json::json!({"seq": seq, "level": "info"}))
        .collect();
    let url = format!("http://{}/api/v1/logs", logdist.ports.admin);
    let reply: Value = logdist
        .http
        .post(url)
        .json(&serde_json::json!([{"id": "p1", "messages": messages}]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["successful"], 1, "{reply}");
    // 100 more in one gzip frame: each line gets its `ok` once stored.
    let lines: String = (100..200)
        .map(|seq| format!("{{\"seq\":{seq}}}\n"))
        .collect();
    let mut frame = bytes::BytesMut::new();
    logdist_wire::encode_gzip_frame(lines.as_bytes(), &mut frame);
    let stream = TcpStream::connect(logdist.ports.acked).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    writer.write_all(&frame).await.unwrap();
    let mut replies = BufReader::new(reader).lines();
    for _ in 0..100 {
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.next_line())
            .await
            .expect("a reply in time")
            .unwrap()
            .expect("connection open");
        assert!(reply.contains("\"ok\""), "{reply}");
    }

    let logdist = logdist.crash_and_restart("");
    let mut analyzer = seed_analyzer(logdist.ports.analyzers).await;
    let want: BTreeSet<u64> = (0..200).collect();
    let got = receive_all(&mut analyzer, &want).await;
    assert_eq!(got.len(), 200);
}
