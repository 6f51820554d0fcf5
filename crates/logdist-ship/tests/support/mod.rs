//! Test helpers: a real logdist in-process, a seed-protocol analyzer that
//! records what it receives, a scriptable fake server, log files.
#![allow(dead_code)] // each test binary uses a different part of this

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use logdist::config::{AckMode, ListenerConfig};
use logdist_ship::Config;
use logdist_ship::line_format::Formatter;
use logdist_wire::{FrameDecoder, seed_ack_word, seed_handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

/// Upper bound on any single wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// Polls `done` every 5 ms until it holds; panics after [`TIMEOUT`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A real distributor with one `ack = "message"` listener.
pub struct Logdist {
    pub shipper_addr: SocketAddr,
    pub analyzers: SocketAddr,
    pub stats: Arc<logdist::stats::Stats>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<logdist::ShutdownReport>>,
    _dir: tempfile::TempDir,
}

impl Logdist {
    pub async fn start() -> Logdist {
        Logdist::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Binds the shipper listener on `address` (retrying while the port is
    /// still held by a previous server).
    pub async fn start_on(address: SocketAddr) -> Logdist {
        Logdist::start_with(address, |_| {}).await
    }

    /// Like [`Logdist::start_on`], with the config adjusted first.
    pub async fn start_with(
        address: SocketAddr,
        adjust: impl FnOnce(&mut logdist::Config),
    ) -> Logdist {
        let dir = tempfile::tempdir().unwrap();
        let mut config = logdist::Config {
            listeners: vec![ListenerConfig::plain(address, AckMode::Message)],
            ..Default::default()
        };
        config.analyzers.listen = "127.0.0.1:0".parse().unwrap();
        // No admin API: these tests do not use it, and its fixed default
        // port would keep two distributors from running side by side.
        config.admin.listen = String::new();
        config.delivery.dead_letter_path = dir.path().join("dead.ndjson");
        config.delivery.shutdown_grace = Duration::from_secs(5);
        adjust(&mut config);
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let server = loop {
            match logdist::Server::bind(&config).await {
                Ok(server) => break server,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("bind {address} failed ({e}), retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {address}: {e}"),
            }
        };
        let addresses = server.addresses();
        let stats = server.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Logdist {
            shipper_addr: addresses.listeners[0].address,
            analyzers: addresses.analyzers,
            stats,
            stop: Some(stop),
            handle: Some(handle),
            _dir: dir,
        }
    }

    /// Stops the server and waits for it to finish; returns its final stats.
    pub async fn shutdown(mut self) -> logdist::stats::StatsSnapshot {
        let _ = self.stop.take().unwrap().send(());
        within("logdist shutdown", self.handle.take().unwrap())
            .await
            .unwrap()
            .stats
    }
}

/// A seed analyzer on a task: records every payload (with its priority) and
/// acks as it goes. It reads at most `limit` messages (a gate tests open
/// and close to stall the pipeline).
#[derive(Clone)]
pub struct Analyzer {
    pub received: Arc<Mutex<Vec<(u8, String)>>>,
    pub limit: Arc<AtomicU64>,
}

impl Analyzer {
    pub async fn connect(server: &Logdist) -> Analyzer {
        let analyzer = Analyzer {
            received: Arc::default(),
            limit: Arc::new(AtomicU64::new(u64::MAX)),
        };
        let stream = within("analyzer connect", TcpStream::connect(server.analyzers))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(&seed_handshake(1.0)).await.unwrap();
        let me = analyzer.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, FrameDecoder::new(4 << 20));
            let mut count: u64 = 0;
            let mut acked: u64 = 0;
            loop {
                while count >= me.limit.load(Ordering::SeqCst) {
                    if acked < count {
                        let _ = write.write_all(&seed_ack_word(count)).await;
                        acked = count;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let next = if acked < count {
                    match tokio::time::timeout(Duration::from_millis(10), frames.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            // Idle: ack what we have.
                            if write.write_all(&seed_ack_word(count)).await.is_err() {
                                return;
                            }
                            acked = count;
                            continue;
                        }
                    }
                } else {
                    frames.next().await
                };
                let Some(Ok(message)) = next else { return };
                let payload = String::from_utf8(message.payload().to_vec()).unwrap();
                me.received
                    .lock()
                    .unwrap()
                    .push((message.priority(), payload));
                count += 1;
                if count - acked >= 64 {
                    if write.write_all(&seed_ack_word(count)).await.is_err() {
                        return;
                    }
                    acked = count;
                }
            }
        });
        // The distributor registers it asynchronously; until then messages
        // simply wait (backpressure), so there is nothing to wait for here.
        analyzer
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn payloads(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }

    pub async fn wait_for(&self, n: usize) {
        wait_until(&format!("{n} messages at the analyzer"), || {
            self.count() >= n
        })
        .await;
    }

    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::SeqCst);
    }
}

/// `count` of each distinct item.
pub fn multiset(items: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// Asserts `got` holds exactly the `expected` messages, each once.
pub fn assert_exactly_once(got: &[String], expected: &[String]) {
    let got_set = multiset(got.iter().cloned());
    let dups: Vec<_> = got_set.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates (first 5): {dups:?}");
    let want = multiset(expected.iter().cloned());
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got_set.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "missing (first 5 of some): {missing:?}");
    let extra: Vec<_> = got_set
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(extra.is_empty(), "unexpected (first 5): {extra:?}");
    assert_eq!(got.len(), expected.len());
}

/// Log lines `tag` `from..to`, in the seed form with varied levels, plus
/// a JSON line and a free-form line every so often.
pub fn log_lines(tag: &str, from: usize, to: usize) -> Vec<String> {
    const LEVELS: [&str; 5] = ["INFO", "WARN", "ERROR", "DEBUG", "INFO"];
    (from..to)
        .map(|i| match i % 10 {
            7 => format!(r#"{{"level":"INFO","message":"{tag} json {i}","n":{i}}}"#),
            9 => format!("{tag} free-form line {i} with \"quotes\" and \\ backslash"),
            _ => format!(
                "2024-01-15 08:{:02}:{:02} {} {tag} message {i}",
                (i / 60) % 60,
                i % 60,
                LEVELS[i % 5]
            ),
        })
        .collect()
}

/// The NDJSON messages the shipper makes of `lines` (default options).
pub fn expected(lines: &[String]) -> Vec<String> {
    let f = Formatter::default();
    lines
        .iter()
        .filter_map(|l| f.format(l.as_bytes()))
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect()
}

pub fn append(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    f.write_all(text.as_bytes()).unwrap();
}

/// Shipper settings for tests: fast polling and retries.
pub fn ship_config(files: &[&Path], addr: SocketAddr) -> Config {
    let mut c = Config::new(
        files.iter().map(|p| p.display().to_string()).collect(),
        &addr.ip().to_string(),
        addr.port(),
    );
    c.poll_interval = Duration::from_millis(20);
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(200);
    c.shutdown_timeout = Duration::from_secs(10);
    c
}

/// [`ship_config`] for several servers, dialled in the order given (so a
/// test knows which one is first).
pub fn failover_config(files: &[&Path], servers: &[SocketAddr]) -> Config {
    let mut c = ship_config(files, servers[0]);
    c.servers = servers
        .iter()
        .map(|a| logdist_ship::ServerAddress::new(&a.ip().to_string(), a.port()))
        .collect();
    c.server_order = logdist_ship::ServerOrder::Listed;
    c
}

/// Runs the shipper on a task; the returned sender stops it.
pub fn spawn_shipper(
    config: Config,
) -> (
    oneshot::Sender<()>,
    JoinHandle<Result<logdist_ship::Summary, logdist_ship::ShipError>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(logdist_ship::run(config, async {
        let _ = rx.await;
    }));
    (tx, handle)
}

/// What a fake server does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok,
    /// Reject the line as logdist rejects one that is not JSON (reason
    /// `invalid_json`).
    Error,
    /// Answer as logdist does before dropping a connection (a frame over
    /// its `max_frame_bytes`): one error reply with reason
    /// `bad_frame_length`, then close. The line is not recorded as seen.
    Closing,
    /// Answer with this reply line (no `\n`), as a rejection of the line.
    Raw(&'static str),
    /// Answer with this reply line (no `\n`), then close; the line is not
    /// recorded as seen.
    RawThenClose(&'static str),
    /// Answer nothing and keep reading, as a node that hangs; the line is
    /// recorded as seen, not acked.
    Silent,
}

/// logdist's reply to a line that is not JSON.
pub const REJECTED_REPLY: &str =
    r#"{"status":"error","reason":"invalid_json","message":"invalid JSON: rejected by test"}"#;
/// logdist's reply before it closes a connection over an impossible length.
pub const CLOSING_REPLY: &str = r#"{"status":"error","reason":"bad_frame_length","message":"binary frame length 99999999 outside 5..=1048576; closing connection"}"#;
/// logdist's reply to a gzip frame that does not decompress.
pub const CORRUPT_GZIP_REPLY: &str =
    r#"{"status":"error","reason":"corrupt_gzip","message":"corrupt gzip frame: test"}"#;

/// One message as the fake server saw it: the NDJSON line, which
/// connection (0-based), and whether it came in a gzip frame.
#[derive(Clone, Debug)]
pub struct Seen {
    pub line: String,
    pub connection: usize,
    pub acked_ok: bool,
}

/// A fake logdist: decodes NDJSON lines and gzip frames, answers as
/// `script(connection, line_number_on_connection, line)` says; `None` closes the
/// connection (after flushing earlier replies) without answering.
/// A gzip frame holding a line containing "BADFRAME" gets one error reply for
/// the whole frame (as logdist does for corrupt gzip). Replies carry the
/// `reason` logdist would send.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
    /// Every connection's task, for [`FakeServer::kill`].
    connection_tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

pub type Script = Arc<dyn Fn(usize, usize, &str) -> Option<Reply> + Send + Sync>;

impl FakeServer {
    pub async fn start(script: Script) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        FakeServer::serve(listener, script)
    }

    pub fn serve(listener: TcpListener, script: Script) -> FakeServer {
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections = Arc::new(AtomicU64::new(0));
        let connection_tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (s, c, t) = (seen.clone(), connections.clone(), connection_tasks.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let n = c.fetch_add(1, Ordering::SeqCst) as usize;
                let connection =
                    tokio::spawn(fake_connection(stream, n, script.clone(), s.clone()));
                t.lock().unwrap().push(connection.abort_handle());
            }
        });
        FakeServer {
            addr,
            seen,
            connections,
            task,
            connection_tasks,
        }
    }

    /// Dies as a crashed node does: the listener and every connection are
    /// closed at once, whatever they were doing; lines it did not answer
    /// stay unanswered. Returns once the listener is closed.
    pub async fn kill(mut self) {
        self.task.abort();
        for connection in self.connection_tasks.lock().unwrap().drain(..) {
            connection.abort();
        }
        // The listener goes with the accept task: once it has ended.
        let _ = (&mut self.task).await;
    }

    pub fn acked_ok(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.acked_ok)
            .map(|s| s.line.clone())
            .collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_connection(
    stream: TcpStream,
    connection: usize,
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let (mut read, mut write) = stream.into_split();
    let mut buf: Vec<u8> = Vec::new();
    let mut number = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Decode every complete message in buf.
        while let Some(&first) = buf.first() {
            let lines: Vec<String>;
            let in_frame;
            if first == b'\n' || first == b'\r' || first == b'\t' || (0x20..=0x7e).contains(&first)
            {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line = String::from_utf8_lossy(&buf[..end])
                    .trim_end_matches('\r')
                    .to_string();
                buf.drain(..=end);
                lines = vec![line];
                in_frame = false;
            } else {
                if buf.len() < 4 {
                    break;
                }
                let n = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() < 4 + n {
                    break;
                }
                let mut text = String::new();
                flate2::read::MultiGzDecoder::new(&buf[4..4 + n]).read_to_string_sync(&mut text);
                buf.drain(..4 + n);
                lines = text.lines().map(str::to_string).collect();
                in_frame = true;
            }
            let mut replies = String::new();
            if in_frame && lines.iter().any(|l| l.contains("BADFRAME")) {
                replies.push_str(CORRUPT_GZIP_REPLY);
                replies.push('\n');
                for line in lines {
                    seen.lock().unwrap().push(Seen {
                        line,
                        connection,
                        acked_ok: false,
                    });
                }
            } else {
                for line in lines {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match script(connection, number, &line) {
                        Some(Reply::Ok) => {
                            replies.push_str("{\"status\": \"ok\", \"message\": \"received\"}\n");
                            seen.lock().unwrap().push(Seen {
                                line,
                                connection,
                                acked_ok: true,
                            });
                        }
                        Some(reply @ (Reply::Error | Reply::Raw(_))) => {
                            let text = match reply {
                                Reply::Raw(text) => text,
                                _ => REJECTED_REPLY,
                            };
                            replies.push_str(text);
                            replies.push('\n');
                            seen.lock().unwrap().push(Seen {
                                line,
                                connection,
                                acked_ok: false,
                            });
                        }
                        Some(Reply::Silent) => {
                            seen.lock().unwrap().push(Seen {
                                line,
                                connection,
                                acked_ok: false,
                            });
                        }
                        Some(reply @ (Reply::Closing | Reply::RawThenClose(_))) => {
                            let text = match reply {
                                Reply::RawThenClose(text) => text,
                                _ => CLOSING_REPLY,
                            };
                            replies.push_str(text);
                            replies.push('\n');
                            let _ = write.write_all(replies.as_bytes()).await;
                            let _ = write.shutdown().await;
                            while matches!(read.read(&mut chunk).await, Ok(n) if n > 0) {}
                            return;
                        }
                        None => {
                            let _ = write.write_all(replies.as_bytes()).await;
                            let _ = write.shutdown().await;
                            // Read (and ignore) until the client closes, so the
                            // close is a clean FIN, not a reset.
                            while matches!(read.read(&mut chunk).await, Ok(n) if n > 0) {}
                            return;
                        }
                    }
                    number += 1;
                }
            }
            if write.write_all(replies.as_bytes()).await.is_err() {
                return;
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

trait ReadToStringSync {
    fn read_to_string_sync(self, out: &mut String);
}

impl<R: std::io::Read> ReadToStringSync for R {
    fn read_to_string_sync(mut self, out: &mut String) {
        self.read_to_string(out)
            .expect("valid gzip from the shipper");
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// The built binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_logdist-ship"))
}
