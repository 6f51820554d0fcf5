//! Test clients speaking every protocol, and an in-process distributor on
//! ephemeral 127.0.0.1 ports. Every wait is bounded by [`TIMEOUT`].
#![allow(dead_code)] // each test binary uses a different part of this

pub mod pki;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use logdist::config::AckMode;
use logdist::stats::{Stats, StatsSnapshot};
use logdist::{Config, Server, ShutdownReport};
use logdist_router::Router;

use logdist_wire::{
    FrameDecoder, Message, encode_frame, seed_ack_word, seed_handshake, seed_weight_word,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

/// Upper bound on any single wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// A distributor running in this process.
pub struct TestServer {
    pub emitters: SocketAddr,
    pub acked_emitters: SocketAddr,
    pub analyzers: SocketAddr,
    /// The admin HTTP API, as a base URL (`http://127.0.0.1:port`).
    pub admin: String,
    /// The admin API's address.
    pub admin_address: Option<SocketAddr>,
    pub stats: Arc<Stats>,
    pub router: Arc<Router>,
    pub directory: Arc<logdist::delivery::directory::Directory>,
    pub reload: logdist::control::reload::ReloadHandle,
    /// The config it started with, for reload tests to edit.
    pub config: Config,
    pub dead_letter_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<ShutdownReport>>,
    _dir: tempfile::TempDir,
}

/// A config on ephemeral loopback ports: one plain and one acking emitter
/// listener, dead letters in a temporary directory.
pub fn test_config(dir: &tempfile::TempDir) -> Config {
    let mut config = Config::default();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.listeners = vec![
        logdist::config::ListenerConfig::plain(any, AckMode::None),
        logdist::config::ListenerConfig::plain(any, AckMode::Message),
    ];
    config.analyzers.listen = any;
    config.admin.listen = any.to_string();
    config.delivery.dead_letter_path = dir.path().join("dead.ndjson");
    config.delivery.shutdown_grace = Duration::from_secs(2);
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        adjust(&mut config);
        config.validate().unwrap();
        let server = Server::bind(&config).await.unwrap();
        let addresses = server.addresses();
        let stats = server.stats();
        let router = server.router();
        let directory = server.directory();
        let reload = server.reload_handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            emitters: addresses.listeners[0].address,
            acked_emitters: addresses.listeners[1].address,
            analyzers: addresses.analyzers,
            admin: addresses
                .admin
                .map_or_else(String::new, |a| format!("http://{a}")),
            admin_address: addresses.admin,
            stats,
            router,
            directory,
            reload,
            config: config.clone(),
            dead_letter_path: config.delivery.dead_letter_path.clone(),
            stop: Some(stop),
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Polls the stats until `done` holds (bounded); the distributor updates them
    /// per read batch, so this is how a test knows messages reached the queues.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&StatsSnapshot) -> bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; stats: {stats:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (bounded) until the routing table satisfies `done`, e.g. until
    /// analyzers that just connected are registered.
    pub async fn wait_for_analyzers(&self, what: &str, done: impl Fn(&[(String, f64)]) -> bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let table = self.router.load();
            let analyzers: Vec<(String, f64)> = table
                .analyzers()
                .iter()
                .map(|a| (a.id.to_string(), a.weight))
                .collect();
            if done(&analyzers) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; analyzers: {analyzers:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until exactly `n` analyzers are registered.
    pub async fn wait_analyzers(&self, n: usize) {
        self.wait_for_analyzers(&format!("{n} analyzers"), |a| a.len() == n)
            .await;
    }

    /// Signals shutdown and waits for it to finish.
    pub async fn shutdown(mut self) -> Stopped {
        let _ = self.stop.take().unwrap().send(());
        let report = within("shutdown", self.handle.take().unwrap())
            .await
            .unwrap();
        let dead_letters = match std::fs::read_to_string(&self.dead_letter_path) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        };
        Stopped {
            stats: report.stats,
            dead_letters,
        }
    }
}

/// What a stopped distributor left: its final stats and dead-letter records.
pub struct Stopped {
    pub stats: StatsSnapshot,
    pub dead_letters: Vec<serde_json::Value>,
}

/// A seed-protocol analyzer: f32 weight handshake, binary frames in, 4-byte
/// control words out. Acks only when told to.
pub struct SeedAnalyzer {
    /// The id the distributor gives it: `analyzer_<its address>`.
    pub id: String,
    frames: FramedRead<Reader, FrameDecoder>,
    writer: Writer,
    pub received: u64,
}

/// Either half of a test client's connection, plain TCP or TLS.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Boxed halves of any connection.
pub fn halves<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> (Reader, Writer) {
    let (reader, writer) = tokio::io::split(stream);
    (Box::new(reader), Box::new(writer))
}

/// Writes and flushes (TLS holds back what it is not told to flush).
pub async fn send(writer: &mut Writer, bytes: &[u8]) {
    writer.write_all(bytes).await.unwrap();
    writer.flush().await.unwrap();
}

impl SeedAnalyzer {
    pub async fn connect(server: &TestServer, weight: f32) -> SeedAnalyzer {
        let stream = TcpStream::connect(server.analyzers).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let id = format!("analyzer_{}", stream.local_addr().unwrap());
        let mut analyzer = SeedAnalyzer::from_stream(stream, id);
        analyzer.send_handshake(weight).await;
        analyzer
    }

    /// An analyzer on a connection the distributor opened (a static analyzer):
    /// no handshake, frames in, control words out.
    pub fn from_stream(stream: TcpStream, id: String) -> SeedAnalyzer {
        let (reader, writer) = stream.into_split();
        SeedAnalyzer::from_halves(Box::new(reader), Box::new(writer), id)
    }

    /// An analyzer on any connection (TLS ones too).
    pub fn from_halves(reader: Reader, writer: Writer, id: String) -> SeedAnalyzer {
        SeedAnalyzer {
            id,
            frames: FramedRead::new(reader, FrameDecoder::new(1 << 20)),
            writer,
            received: 0,
        }
    }

    /// The next message, or None if the distributor closed the connection.
    pub async fn next(&mut self) -> Option<Message> {
        let message = within("a message at a seed analyzer", self.frames.next())
            .await
            .map(|r| r.unwrap());
        if message.is_some() {
            self.received += 1;
        }
        message
    }

    /// The next message, or None if the connection ended, reset included
    /// (the distributor was killed).
    pub async fn next_or_closed(&mut self) -> Option<Message> {
        let message = within("a message at a seed analyzer", self.frames.next())
            .await
            .and_then(Result::ok);
        if message.is_some() {
            self.received += 1;
        }
        message
    }

    /// Receives `n` messages and acks them all.
    pub async fn take_and_ack(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await.expect("connection open"));
        }
        self.ack().await;
        out
    }

    pub async fn send_handshake(&mut self, weight: f32) {
        send(&mut self.writer, &seed_handshake(weight)).await;
    }

    pub async fn ack(&mut self) {
        send(&mut self.writer, &seed_ack_word(self.received)).await;
    }

    /// [`ack`](Self::ack) on a connection that may be gone.
    pub async fn try_ack(&mut self) -> std::io::Result<()> {
        self.writer.write_all(&seed_ack_word(self.received)).await?;
        self.writer.flush().await
    }

    pub async fn set_weight(&mut self, weight: f32) {
        send(&mut self.writer, &seed_weight_word(weight)).await;
    }

    /// Drops the connection without acking what it holds.
    pub fn kill(self) {}
}

/// A JSON-hello analyzer.
pub struct HelloAnalyzer {
    reader: BufReader<Reader>,
    writer: Writer,
    pub received: u64,
    pub format: &'static str,
}

impl HelloAnalyzer {
    /// Connects and returns the distributor's reply line with the analyzer.
    pub async fn connect(
        server: &TestServer,
        id: &str,
        weight: f64,
        format: &'static str,
        acks: bool,
    ) -> (String, HelloAnalyzer) {
        let stream = TcpStream::connect(server.analyzers).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        HelloAnalyzer::hello(Box::new(reader), Box::new(writer), id, weight, format, acks).await
    }

    /// Says hello on any connection (TLS ones too) and returns the reply line.
    pub async fn hello(
        reader: Reader,
        mut writer: Writer,
        id: &str,
        weight: f64,
        format: &'static str,
        acks: bool,
    ) -> (String, HelloAnalyzer) {
        let hello = serde_json::json!({"id": id, "weight": weight, "format": format, "acks": acks});
        send(&mut writer, format!("{hello}\n").as_bytes()).await;
        let mut reader = BufReader::new(reader);
        let mut reply = String::new();
        within("hello reply", reader.read_line(&mut reply))
            .await
            .unwrap();
        (
            reply,
            HelloAnalyzer {
                reader,
                writer,
                received: 0,
                format,
            },
        )
    }

    /// Next NDJSON line (format "ndjson" only).
    pub async fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = within(
            "a line at a hello analyzer",
            self.reader.read_line(&mut line),
        )
        .await
        .unwrap();
        if n == 0 {
            return None;
        }
        self.received += 1;
        Some(line.trim_end_matches('\n').to_string())
    }

    /// Next binary frame (format "frame" only).
    pub async fn next_frame(&mut self) -> Option<Message> {
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        loop {
            use tokio_util::codec::Decoder;
            if let Some(m) = decoder.decode(&mut buf).unwrap() {
                self.received += 1;
                return Some(m);
            }
            // Byte at a time keeps the BufReader as the only buffer.
            let mut byte = [0u8; 1];
            use tokio::io::AsyncReadExt;
            let n = within("a frame at a hello analyzer", self.reader.read(&mut byte))
                .await
                .unwrap();
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&byte);
        }
    }

    pub async fn ack(&mut self) {
        let line = format!("{{\"ack\":{}}}\n", self.received);
        send(&mut self.writer, line.as_bytes()).await;
    }
}

/// Encodes seed binary frames.
pub fn frames(messages: &[(u8, &[u8])]) -> Bytes {
    let mut buf = BytesMut::new();
    for (priority, payload) in messages {
        encode_frame(*priority, payload, &mut buf);
    }
    buf.freeze()
}

pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A port on 127.0.0.1 with nothing listening (bound once, then released).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Accepts the distributor's next connection to a static analyzer address.
pub async fn accept_static(listener: &tokio::net::TcpListener, id: &str) -> SeedAnalyzer {
    let (stream, _) = within("the distributor to connect", listener.accept())
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    SeedAnalyzer::from_stream(stream, id.to_string())
}

/// Binds `addr` again, retrying briefly while the previous socket lets go.
pub async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) if tokio::time::Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("cannot bind {addr}: {err}"),
        }
    }
}

/// Sends numbered binary frames (`<prefix><i>`) at `priority` on a new connection.
pub async fn emit(addr: SocketAddr, prefix: &str, range: std::ops::Range<usize>, priority: u8) {
    let payloads: Vec<Vec<u8>> = range.map(|i| format!("{prefix}{i}").into_bytes()).collect();
    let messages: Vec<(u8, &[u8])> = payloads.iter().map(|p| (priority, p.as_slice())).collect();
    let mut stream = connect(addr).await;
    stream.write_all(&frames(&messages)).await.unwrap();
    stream.shutdown().await.unwrap();
}
