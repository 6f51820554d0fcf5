//! `logdist-loadtest analyzer`: one analyzer as a process of its own. It
//! dials the analyzer listener (TLS with `--tls`), says hello (the seed
//! weight word or a JSON hello), reads what logdist sends (frames or NDJSON
//! lines), checks every payload and acknowledges cumulatively every
//! `--ack-every` messages or `--ack-idle` after the last one, and reconnects
//! when the connection is lost, until SIGTERM, SIGINT or `--duration`.
//!
//! A message counts only once acknowledged, as in a profile run: what a
//! lost connection held unacknowledged is logdist's to deliver again, so it
//! is dropped here, and nothing is counted twice. Loadtest payloads are
//! counted per emitter id (messages, priorities, the fingerprint of their
//! counters, duplicates); anything else (a shipped log line) is `other`; a
//! loadtest payload whose checksum does not match is a checksum failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use logdist_net::{Backoff, ClientStream, TlsClient};
use logdist_wire::{AnalyzerFormat, FrameDecoder, Hello, seed_ack_word, seed_handshake};
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::Decoder;

use super::{
    EXIT_ERROR, EXIT_FAILED, EXIT_OK, Stop, TlsArgs, counter_fingerprint, parse_target,
    priorities_json, priorities_text,
};
use crate::payload::{ChecksumKind, unix_nanos_now, verify};
use crate::profile::parse_duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HandshakeArg {
    /// The seed handshake: a 4-byte weight; acks as 4-byte words. Frames only.
    Seed,
    /// A JSON hello line with id, weight and format; acks as {"ack":N} lines.
    Hello,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Binary frames (length, priority, payload).
    Frame,
    /// NDJSON lines (JSON hello only).
    Ndjson,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChecksumArg {
    /// Either kind: a payload passes if its checksum is a valid FNV-1a or SHA-256 one.
    Auto,
    Sha256,
    Fnv,
}

#[derive(Clone, Debug, Args)]
#[command(
    after_help = "Example: logdist-loadtest analyzer --target logdist:8081 --weight 2\n\n\
Progress goes to stderr every --progress; the summary to stdout at the end: a line, then \
`summary: {json}` with role, id, weight, received (acknowledged loadtest messages), other \
(acknowledged messages that are not loadtest payloads, e.g. shipped log lines), \
checksum_failures, duplicates, by_priority, emitters (per emitter id: received, by_priority, \
fingerprint), latency_ms (p50, p99, max; send to receive, same clock on one host), \
connections, dropped_unacked. Summed over every analyzer, an emitter's received and \
fingerprint equal its own summary's sent and fingerprint when nothing was lost or \
duplicated.\n\n\
Exit status: 0 stopped as asked with nothing wrong seen; 1 checksum failures, duplicates or \
undecodable messages were seen; 2 no connection within --connect-timeout, refused by logdist \
(a token, a weight), or bad flags."
)]
pub struct AnalyzerArgs {
    /// Analyzer listener of logdist, HOST:PORT (a name, an address, [v6]).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,
    /// Routing weight: its share of messages is weight / sum of weights.
    #[arg(long, default_value_t = 1.0)]
    pub weight: f32,
    /// How it introduces itself.
    #[arg(long, value_enum, default_value_t = HandshakeArg::Hello)]
    pub handshake: HandshakeArg,
    /// What logdist sends it (ndjson needs --handshake hello).
    #[arg(long, value_enum, default_value_t = FormatArg::Frame)]
    pub format: FormatArg,
    /// Id in the JSON hello (unique among connected analyzers). Default:
    /// <hostname>-<pid>.
    #[arg(long)]
    pub id: Option<String>,
    /// Acknowledge after this many messages...
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub ack_every: u32,
    /// ...or this long after the last message, whichever comes first.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub ack_idle: Duration,
    /// `token` of the JSON hello, for an analyzer listener with `tokens`.
    #[arg(long, env = "LOADTEST_ANALYZER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Payload checksum the emitters use.
    #[arg(long, value_enum, default_value_t = ChecksumArg::Auto)]
    pub checksum: ChecksumArg,
    /// Stop after this long (default: until SIGTERM or SIGINT), e.g. "30s".
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Keep trying to make the first connection this long before giving up
    /// (exit 2); later ones are retried until it is stopped.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Largest frame accepted from logdist.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_frame_bytes: usize,
    /// A progress line this often on stderr; "0s": none.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub progress: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Reconnecting after a lost connection goes on until it is stopped.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Counters per emitter id.
struct EmitterTally {
    received: u64,
    fingerprint: u64,
    by_priority: Box<[u64; 256]>,
    /// One bit per counter received (for duplicates), up to [`MAX_TRACKED`].
    seen: Vec<u64>,
}

/// Counters above this are not checked for duplicates (512 MiB of bits).
const MAX_TRACKED: u64 = 1 << 32;

impl EmitterTally {
    fn new() -> Self {
        EmitterTally {
            received: 0,
            fingerprint: 0,
            by_priority: Box::new([0; 256]),
            seen: Vec::new(),
        }
    }

    /// Marks `counter` seen; false if it already was.
    fn first_time(&mut self, counter: u64) -> bool {
        if counter >= MAX_TRACKED {
            return true;
        }
        let (word, bit) = ((counter / 64) as usize, counter % 64);
        if self.seen.len() <= word {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        let fresh = self.seen[word] & (1 << bit) == 0;
        self.seen[word] |= 1 << bit;
        fresh
    }
}

/// Everything counted, once acknowledged.
struct Tally {
    emitters: HashMap<Bytes, EmitterTally>,
    received: u64,
    other: u64,
    checksum_failures: u64,
    duplicates: u64,
    by_priority: [u64; 256],
    latency_us: Histogram<u64>,
    connections: u64,
    dropped_unacked: u64,
    protocol_errors: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            emitters: HashMap::new(),
            received: 0,
            other: 0,
            checksum_failures: 0,
            duplicates: 0,
            by_priority: [0; 256],
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            connections: 0,
            dropped_unacked: 0,
            protocol_errors: Vec::new(),
        }
    }

    fn commit(&mut self, pending: &mut Vec<Item>) {
        for item in pending.drain(..) {
            match item {
                Item::Valid {
                    emitter,
                    counter,
                    priority,
                    latency_us,
                } => {
                    let tally = self
                        .emitters
                        .entry(emitter)
                        .or_insert_with(EmitterTally::new);
                    if !tally.first_time(counter) {
                        self.duplicates += 1;
                        continue;
                    }
                    tally.received += 1;
                    tally.fingerprint =
                        tally.fingerprint.wrapping_add(counter_fingerprint(counter));
                    self.received += 1;
                    if let Some(p) = priority {
                        tally.by_priority[usize::from(p)] += 1;
                        self.by_priority[usize::from(p)] += 1;
                    }
                    let _ = self.latency_us.record(latency_us.clamp(1, 3_600_000_000));
                }
                Item::ChecksumFailure => self.checksum_failures += 1,
                Item::Other => self.other += 1,
            }
        }
    }

    fn protocol_error(&mut self, error: String) {
        if self.protocol_errors.len() < 10 {
            self.protocol_errors.push(error);
        }
    }
}

/// One message read, until it is acknowledged.
enum Item {
    Valid {
        emitter: Bytes,
        counter: u64,
        priority: Option<u8>,
        latency_us: u64,
    },
    ChecksumFailure,
    Other,
}

fn classify(payload: &Bytes, priority: Option<u8>, mode: ChecksumArg, now_nanos: u64) -> Item {
    let kinds: &[ChecksumKind] = match mode {
        ChecksumArg::Auto => &[ChecksumKind::Fnv, ChecksumKind::Sha256],
        ChecksumArg::Sha256 => &[ChecksumKind::Sha256],
        ChecksumArg::Fnv => &[ChecksumKind::Fnv],
    };
    let mut loadtest_shaped = false;
    for &kind in kinds {
        match verify(payload, kind) {
            Ok(v) => {
                return Item::Valid {
                    emitter: payload.slice_ref(v.emitter_id),
                    counter: v.counter,
                    priority,
                    latency_us: now_nanos.saturating_sub(v.unix_nanos) / 1000,
                };
            }
            // Not `<id>:<nanos>:<counter>:...`: not a loadtest payload.
            Err(r) if r.reason.starts_with("malformed payload: no emitter id") => {}
            Err(r) if r.reason.starts_with("malformed payload: bad timestamp") => {}
            Err(_) => loadtest_shaped = true,
        }
    }
    if loadtest_shaped {
        Item::ChecksumFailure
    } else {
        Item::Other
    }
}

/// Reads messages in the analyzer's format: (priority if known, payload).
enum Reader {
    Frame(FrameDecoder),
    Ndjson,
}

#[derive(serde::Deserialize)]
struct NdjsonMessage {
    priority: Option<u8>,
    message: Option<serde_json::Value>,
}

impl Reader {
    fn next(&mut self, buf: &mut BytesMut) -> Result<Option<(Option<u8>, Bytes)>, String> {
        match self {
            Reader::Frame(decoder) => match decoder.decode(buf) {
                Ok(Some(m)) => Ok(Some((Some(m.priority()), m.payload()))),
                Ok(None) => Ok(None),
                Err(e) => Err(format!("undecodable frame: {e}")),
            },
            Reader::Ndjson => {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let line = buf.split_to(end + 1).freeze();
                let body = line.slice(..end);
                // Binary-born messages: {"priority":P,"message":"<payload>"};
                // NDJSON-born ones arrive as sent (a shipped line: "other").
                match serde_json::from_slice::<NdjsonMessage>(&body) {
                    Ok(NdjsonMessage {
                        priority: Some(p),
                        message: Some(serde_json::Value::String(text)),
                    }) => Ok(Some((Some(p), Bytes::from(text.into_bytes())))),
                    _ => Ok(Some((None, body))),
                }
            }
        }
    }
}

/// How a connection ended.
enum SessionEnd {
    Stopped,
    Lost(String),
}

struct Analyzer {
    args: AnalyzerArgs,
    id: String,
    host: String,
    port: u16,
    tls: Option<TlsClient>,
    tally: Arc<Mutex<Tally>>,
    /// Messages read on every connection, acknowledged or not (progress).
    read: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    name: String,
}

pub async fn run(args: AnalyzerArgs, stop: Stop) -> i32 {
    let started = Instant::now();
    let analyzer = match Analyzer::new(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("logdist-loadtest analyzer: {e}");
            return EXIT_ERROR;
        }
    };
    stop.after(analyzer.args.duration);
    let progress = analyzer.spawn_progress(started);
    let result = analyzer.serve(&stop).await;
    if let Some(progress) = progress {
        progress.abort();
    }
    match result {
        Ok(()) => analyzer.summary(&stop, started),
        Err(e) => {
            eprintln!("{}: {e}", analyzer.name);
            analyzer.summary(&stop, started);
            EXIT_ERROR
        }
    }
}

impl Analyzer {
    fn new(args: AnalyzerArgs) -> Result<Analyzer, String> {
        let (host, port) = parse_target(&args.target)?;
        if !(args.weight.is_finite() && args.weight >= 0.0) {
            return Err(format!(
                "--weight must be finite and >= 0, got {}",
                args.weight
            ));
        }
        if args.handshake == HandshakeArg::Seed && args.format == FormatArg::Ndjson {
            return Err(
                "--format ndjson needs --handshake hello (seed analyzers get frames)".into(),
            );
        }
        if args.handshake == HandshakeArg::Seed && args.token.is_some() {
            return Err(
                "a token goes in the JSON hello: --token needs --handshake hello".to_string(),
            );
        }
        let id = args
            .id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", super::hostname(), std::process::id()));
        let tls = args.tls.client()?;
        Ok(Analyzer {
            name: format!("analyzer {id} (weight {})", args.weight),
            id,
            host,
            port,
            tls,
            tally: Arc::new(Mutex::new(Tally::new())),
            read: Arc::default(),
            connected: Arc::default(),
            args,
        })
    }

    /// The progress line's task.
    fn spawn_progress(&self, started: Instant) -> Option<tokio::task::JoinHandle<()>> {
        if self.args.progress.is_zero() {
            return None;
        }
        let every = self.args.progress;
        let (tally, connected, name) = (
            self.tally.clone(),
            self.connected.clone(),
            self.name.clone(),
        );
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last = (Instant::now(), 0u64);
            loop {
                ticker.tick().await;
                let (received, other, emitters, failures) = {
                    let t = tally.lock();
                    (t.received, t.other, t.emitters.len(), t.checksum_failures)
                };
                let now = Instant::now();
                let total = received + other;
                let rate = (total - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, total);
                eprintln!(
                    "{name}: {:.0}s received {received} ({rate:.0} msg/s) from {emitters} \
                     emitters, other {other}, checksum failures {failures}{}",
                    started.elapsed().as_secs_f64(),
                    if connected.load(Ordering::Relaxed) {
                        ""
                    } else {
                        ", not connected"
                    }
                );
            }
        }))
    }

    /// Connections, one after the other, until stopped. An error only when
    /// the first one could not be made.
    async fn serve(&self, stop: &Stop) -> Result<(), String> {
        let mut first = true;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let timeout = if first {
                self.args.connect_timeout
            } else {
                FOREVER
            };
            let Some((stream, buf)) = self.connect(timeout, stop).await? else {
                return Ok(());
            };
            if first {
                eprintln!(
                    "{}: connected to {}{} ({} handshake, {} format)",
                    self.name,
                    self.args.target,
                    if self.tls.is_some() { " over TLS" } else { "" },
                    value_name(self.args.handshake),
                    value_name(self.args.format)
                );
            } else {
                eprintln!("{}: connected again", self.name);
            }
            first = false;
            backoff.reset();
            self.connected.store(true, Ordering::Relaxed);
            self.tally.lock().connections += 1;
            let end = self.session(stream, buf, stop).await;
            self.connected.store(false, Ordering::Relaxed);
            match end {
                SessionEnd::Stopped => return Ok(()),
                SessionEnd::Lost(why) => {
                    eprintln!("{}: connection lost: {why}; reconnecting", self.name);
                    tokio::select! {
                        _ = stop.token.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff.fail()) => {}
                    }
                }
            }
        }
    }

    /// Connects and says hello, trying again until `timeout`; `None` when
    /// stopped first. A refusal for a reason that will not change (a token,
    /// a weight, a reserved id) is an error at once.
    async fn connect(
        &self,
        timeout: Duration,
        stop: &Stop,
    ) -> Result<Option<(ClientStream, BytesMut)>, String> {
        let deadline = Instant::now().checked_add(timeout);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let left = deadline.map_or(FOREVER, |d| d.saturating_duration_since(Instant::now()));
            let Some(mut stream) = super::connect_until(
                &self.host,
                self.port,
                self.tls.as_ref(),
                left,
                stop,
                &self.name,
            )
            .await
            .map_err(|e| {
                format!(
                    "could not connect to {} within {timeout:?}: {e}",
                    self.args.target
                )
            })?
            else {
                return Ok(None);
            };
            let greeted = tokio::select! {
                _ = stop.token.cancelled() => return Ok(None),
                r = self.greet(&mut stream) => r,
            };
            match greeted {
                Ok(buf) => return Ok(Some((stream, buf))),
                Err(Greeting::Fatal(e)) => return Err(e),
                Err(Greeting::Retry(e)) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(format!(
                            "no usable connection to {} within {timeout:?}: {e}",
                            self.args.target
                        ));
                    }
                    eprintln!("{}: {e}; retrying", self.name);
                    tokio::select! {
                        _ = stop.token.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(backoff.fail()) => {}
                    }
                }
            }
        }
    }

    /// The handshake; what arrived after the hello reply stays in the buffer.
    async fn greet(&self, stream: &mut ClientStream) -> Result<BytesMut, Greeting> {
        let mut buf = BytesMut::with_capacity(256 * 1024);
        let io = |what: &str, e: std::io::Error| {
            let e = logdist_net::tls::explain_tls_error(&e, "--tls-cert")
                .unwrap_or_else(|| e.to_string());
            Greeting::Retry(format!("{what}: {e}"))
        };
        match self.args.handshake {
            HandshakeArg::Seed => {
                stream
                    .write_all(&seed_handshake(self.args.weight))
                    .await
                    .map_err(|e| io("handshake", e))?;
                stream.flush().await.map_err(|e| io("handshake", e))?;
            }
            HandshakeArg::Hello => {
                let hello = Hello {
                    id: self.id.clone(),
                    weight: f64::from(self.args.weight),
                    format: match self.args.format {
                        FormatArg::Frame => AnalyzerFormat::Frame,
                        FormatArg::Ndjson => AnalyzerFormat::Ndjson,
                    },
                    acks: true,
                    token: self.args.token.clone(),
                };
                let mut line = serde_json::to_vec(&hello).expect("a hello serializes");
                line.push(b'\n');
                stream
                    .write_all(&line)
                    .await
                    .map_err(|e| io("sending the hello", e))?;
                stream
                    .flush()
                    .await
                    .map_err(|e| io("sending the hello", e))?;
                let reply = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                            return Ok(buf.split_to(end + 1));
                        }
                        if buf.len() > 64 * 1024 {
                            return Err(Greeting::Retry("hello reply too long".into()));
                        }
                        match stream.read_buf(&mut buf).await {
                            Ok(0) => {
                                return Err(Greeting::Retry(
                                    "logdist closed the connection before replying to the hello"
                                        .into(),
                                ));
                            }
                            Ok(_) => {}
                            Err(e) => return Err(io("reading the hello reply", e)),
                        }
                    }
                })
                .await
                .map_err(|_| Greeting::Retry("no reply to the hello within 5 s".into()))??;
                let v: serde_json::Value = serde_json::from_slice(&reply)
                    .map_err(|e| Greeting::Retry(format!("the hello reply is not JSON: {e}")))?;
                if v.get("status").and_then(|s| s.as_str()) != Some("ok") {
                    let text = String::from_utf8_lossy(reply.trim_ascii()).into_owned();
                    let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("");
                    let message = format!("logdist refused the hello: {text}");
                    return Err(
                        if matches!(reason, "unauthorized" | "bad_weight" | "reserved_id") {
                            Greeting::Fatal(message)
                        } else {
                            Greeting::Retry(message)
                        },
                    );
                }
            }
        }
        Ok(buf)
    }

    async fn write_ack(&self, stream: &mut ClientStream, received: u64) -> std::io::Result<()> {
        match self.args.handshake {
            HandshakeArg::Seed => stream.write_all(&seed_ack_word(received)).await?,
            HandshakeArg::Hello => {
                stream
                    .write_all(format!("{{\"ack\":{received}}}\n").as_bytes())
                    .await?
            }
        }
        stream.flush().await
    }

    /// Reads, checks and acknowledges until the connection is lost or it is
    /// stopped (then it acknowledges what it holds and closes).
    async fn session(
        &self,
        mut stream: ClientStream,
        mut buf: BytesMut,
        stop: &Stop,
    ) -> SessionEnd {
        let mut reader = match self.args.format {
            FormatArg::Frame => Reader::Frame(FrameDecoder::new(self.args.max_frame_bytes)),
            FormatArg::Ndjson => Reader::Ndjson,
        };
        let ack_every = u64::from(self.args.ack_every);
        let mut pending: Vec<Item> = Vec::with_capacity(self.args.ack_every as usize);
        // Messages read on this connection, and how many of them are acknowledged.
        let (mut received, mut acked) = (0u64, 0u64);
        let mut idle_deadline: Option<Instant> = None;
        let lost = |pending: &mut Vec<Item>, why: String| {
            let dropped = pending.len() as u64;
            pending.clear();
            self.tally.lock().dropped_unacked += dropped;
            SessionEnd::Lost(if dropped > 0 {
                format!(
                    "{why} ({dropped} unacknowledged messages dropped: logdist delivers them again)"
                )
            } else {
                why
            })
        };
        loop {
            // Decode what is buffered (the hello reply may have brought some).
            let now_nanos = unix_nanos_now();
            loop {
                let (priority, payload) = match reader.next(&mut buf) {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        self.tally.lock().protocol_error(e.clone());
                        return lost(&mut pending, e);
                    }
                };
                received += 1;
                self.read.fetch_add(1, Ordering::Relaxed);
                pending.push(classify(&payload, priority, self.args.checksum, now_nanos));
                if received - acked >= ack_every {
                    if let Err(e) = self.write_ack(&mut stream, received).await {
                        return lost(&mut pending, format!("writing an ack: {e}"));
                    }
                    acked = received;
                    self.tally.lock().commit(&mut pending);
                }
            }
            idle_deadline = if received > acked {
                idle_deadline.or_else(|| Some(Instant::now() + self.args.ack_idle))
            } else {
                None
            };
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(256 * 1024);
            }
            tokio::select! {
                biased;
                _ = stop.token.cancelled() => {
                    if received > acked {
                        if let Err(e) = self.write_ack(&mut stream, received).await {
                            return lost(&mut pending, format!("writing the last ack: {e}"));
                        }
                        self.tally.lock().commit(&mut pending);
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
                    return SessionEnd::Stopped;
                }
                _ = sleep_until(idle_deadline.unwrap_or_else(Instant::now)), if idle_deadline.is_some() => {
                    if let Err(e) = self.write_ack(&mut stream, received).await {
                        return lost(&mut pending, format!("writing an ack: {e}"));
                    }
                    acked = received;
                    idle_deadline = None;
                    self.tally.lock().commit(&mut pending);
                }
                r = stream.read_buf(&mut buf) => match r {
                    Ok(0) => return lost(&mut pending, "closed by logdist".to_string()),
                    Ok(_) => {
                        // New data: the idle ack waits for the next quiet spell.
                        idle_deadline = None;
                    }
                    Err(e) => {
                        let e = logdist_net::tls::explain_tls_error(&e, "--tls-cert")
                            .unwrap_or_else(|| e.to_string());
                        return lost(&mut pending, e);
                    }
                },
            }
        }
    }

    /// Prints the summary; the exit status.
    fn summary(&self, stop: &Stop, started: Instant) -> i32 {
        let t = self.tally.lock();
        let elapsed = started.elapsed().as_secs_f64();
        let why = match stop.reason() {
            Some(reason) => reason.describe(),
            None => "gave up".to_string(),
        };
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        let (p50, p99, max) = if t.latency_us.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (
                ms(t.latency_us.value_at_quantile(0.5)),
                ms(t.latency_us.value_at_quantile(0.99)),
                ms(t.latency_us.max()),
            )
        };
        println!(
            "{}: {why}; received {} messages from {} emitters in {elapsed:.1} s, {} other \
             messages, {} checksum failures, {} duplicates; priorities {}; latency p50 {p50} ms, \
             p99 {p99} ms, max {max} ms; {} connections",
            self.name,
            t.received,
            t.emitters.len(),
            t.other,
            t.checksum_failures,
            t.duplicates,
            priorities_text(&t.by_priority),
            t.connections
        );
        let mut emitters: Vec<(&Bytes, &EmitterTally)> = t.emitters.iter().collect();
        emitters.sort_by(|a, b| a.0.cmp(b.0));
        let emitters: serde_json::Map<String, serde_json::Value> = emitters
            .into_iter()
            .map(|(id, e)| {
                (
                    String::from_utf8_lossy(id).into_owned(),
                    json!({
                        "received": e.received,
                        "fingerprint": e.fingerprint.to_string(),
                        "by_priority": priorities_json(&e.by_priority),
                    }),
                )
            })
            .collect();
        let summary = json!({
            "role": "analyzer",
            "id": self.id,
            "target": self.args.target,
            "weight": self.args.weight,
            "received": t.received,
            "other": t.other,
            "checksum_failures": t.checksum_failures,
            "duplicates": t.duplicates,
            "by_priority": priorities_json(&t.by_priority),
            "emitters": emitters,
            "latency_ms": {"p50": p50, "p99": p99, "max": max},
            "connections": t.connections,
            "dropped_unacked": t.dropped_unacked,
            "read": self.read.load(Ordering::Relaxed),
            "protocol_errors": t.protocol_errors,
            "seconds": (elapsed * 1000.0).round() / 1000.0,
            "stopped": stop.reason().map(|r| match r {
                super::StopReason::Signal(name) => name.to_string(),
                super::StopReason::Duration => "duration".to_string(),
            }),
        });
        println!("summary: {summary}");
        if t.checksum_failures > 0 || t.duplicates > 0 || !t.protocol_errors.is_empty() {
            EXIT_FAILED
        } else {
            EXIT_OK
        }
    }
}

/// A flag value as written on the command line.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Why a handshake did not work out.
enum Greeting {
    /// Try again (the distributor may not be ready, or a stale id lingers).
    Retry(String),
    /// It will not work however often it is tried.
    Fatal(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadWriter;

    fn payload(id: &str, counter: u64, kind: ChecksumKind) -> Bytes {
        let mut out = Vec::new();
        PayloadWriter::new(id, kind).write(unix_nanos_now(), counter, 120, &mut out);
        Bytes::from(out)
    }

    #[test]
    fn payloads_are_classified_and_tallied_exactly() {
        let now = unix_nanos_now();
        let mut pending = vec![
            classify(
                &payload("e1", 0, ChecksumKind::Fnv),
                Some(3),
                ChecksumArg::Auto,
                now,
            ),
            classify(
                &payload("e1", 1, ChecksumKind::Sha256),
                Some(1),
                ChecksumArg::Auto,
                now,
            ),
            classify(
                &payload("e2", 0, ChecksumKind::Sha256),
                Some(3),
                ChecksumArg::Sha256,
                now,
            ),
            // The same message again: a duplicate, not counted twice.
            classify(
                &payload("e1", 1, ChecksumKind::Sha256),
                Some(1),
                ChecksumArg::Auto,
                now,
            ),
            // An FNV payload where only SHA-256 is expected fails its checksum.
            classify(
                &payload("e2", 1, ChecksumKind::Fnv),
                Some(3),
                ChecksumArg::Sha256,
                now,
            ),
            classify(
                &Bytes::from_static(br#"{"level":"INFO","message":"shipped: a line"}"#),
                None,
                ChecksumArg::Auto,
                now,
            ),
        ];
        let mut corrupt = payload("e2", 2, ChecksumKind::Sha256).to_vec();
        corrupt[20] ^= 1;
        pending.push(classify(
            &Bytes::from(corrupt),
            Some(3),
            ChecksumArg::Auto,
            now,
        ));
        let mut tally = Tally::new();
        tally.commit(&mut pending);
        assert!(pending.is_empty());
        assert_eq!(
            (
                tally.received,
                tally.duplicates,
                tally.checksum_failures,
                tally.other
            ),
            (3, 1, 2, 1)
        );
        let e1 = &tally.emitters[&Bytes::from_static(b"e1")];
        assert_eq!(e1.received, 2);
        assert_eq!(
            e1.fingerprint,
            counter_fingerprint(0).wrapping_add(counter_fingerprint(1))
        );
        assert_eq!((e1.by_priority[3], e1.by_priority[1]), (1, 1));
        assert_eq!(tally.by_priority[3], 2);
    }

    #[test]
    fn ndjson_lines_give_binary_born_payloads_and_keep_the_rest_whole() {
        let mut reader = Reader::Ndjson;
        let mut buf = BytesMut::from(
            &b"{\"priority\":4,\"message\":\"e1:1:2:xx\"}\n{\"level\":\"WARN\",\"message\":\"m\"}\n{\"priority\":2,\"pay"[..],
        );
        let (p, m) = reader.next(&mut buf).unwrap().unwrap();
        assert_eq!((p, &m[..]), (Some(4), &b"e1:1:2:xx"[..]));
        let (p, m) = reader.next(&mut buf).unwrap().unwrap();
        assert_eq!(
            (p, &m[..]),
            (None, &br#"{"level":"WARN","message":"m"}"#[..])
        );
        assert!(reader.next(&mut buf).unwrap().is_none());
    }

    #[test]
    fn duplicates_are_found_across_a_sparse_range() {
        let mut e = EmitterTally::new();
        for c in [5u64, 70, 1 << 20, 3] {
            assert!(e.first_time(c));
        }
        assert!(!e.first_time(70));
        assert!(!e.first_time(1 << 20));
        assert!(e.first_time(MAX_TRACKED + 5) && e.first_time(MAX_TRACKED + 5));
    }
}
