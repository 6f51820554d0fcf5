//! An emitter with acks (`emitters.kind = "ndjson_ack"`): writes NDJSON lines
//! to an `ack = "message"` listener and reads the reply logdist owes each of
//! them, in order (docs/protocol.md 2.7): the n-th reply answers the n-th
//! line. Which lines were answered `ok` goes to the [`AckLedger`], which at
//! the end checks that each of them reached an analyzer at least once.
//!
//! Closed loop: at most `window` lines are written and unanswered. Within
//! that it keeps the rate schedule of `emitter.rs` (due = rate × time); when
//! the window is full it waits, and its lag behind the schedule grows.
//!
//! Each line carries the seed payload as its `message`:
//! `{"priority":P,"message":"<emitter_id>:<unix_nanos>:<counter>:<padding><checksum>"}`.
//! An analyzer gets it back whatever its format (a frame-format analyzer gets
//! the line as the frame's payload, an ndjson one the line itself), and the
//! ledger knows it by (emitter, counter). The payload's characters need no
//! JSON escaping.
//!
//! When the connection is lost (logdist killed), every line without a reply
//! counts as not acked, and it is not sent again under its counter: the
//! emitter reconnects with backoff and goes on with fresh counters. (A real
//! shipper would resend that content; for the ledger, a resend is a new
//! message.) So each counter is answered at most once, and "acked `ok`" is
//! exact. The schedule restarts on a new connection: what fell due while
//! logdist was down is not made up.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use logdist_net::{ClientStream, TlsClient};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::emitter::{EmitterShared, SizeModel};
use crate::payload::{ChecksumKind, PayloadWriter, unix_nanos_now};
use crate::priority::PriorityPlan;
use crate::recorder::Recorder;

/// At the end: how long the emitter waits for its last write and for the
/// replies to what it wrote.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed write: how long it still reads replies already on the way.
const LOST_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect backoff: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(500));
/// A reply line longer than this is not logdist's.
const MAX_REPLY_BYTES: usize = 64 * 1024;

pub struct AckEmitterConfig {
    pub index: u32,
    pub id: String,
    pub checksum: ChecksumKind,
    pub plan: PriorityPlan,
    pub sizes: SizeModel,
    pub tick: Duration,
    pub seed: u64,
    /// At most this many lines written and not yet answered.
    pub window: usize,
    /// Where to reconnect.
    pub target: SocketAddr,
    pub tls: Option<TlsClient>,
    /// Time base of the [`AckStatus`] timestamps.
    pub clock: Instant,
}

/// What the crash controller watches: when the current connection was made
/// and when its first `ok` came.
#[derive(Debug, Default)]
pub struct AckStatus {
    /// µs since the clock, plus 1 (0: never), when the current connection was made.
    connected_at_us: AtomicU64,
    /// µs since the clock, plus 1, of the first `ok` on the current
    /// connection; 0 until then.
    first_ok_us: AtomicU64,
    /// Connections lost (each followed by a reconnect, unless the run ended).
    pub reconnects: AtomicU64,
}

impl AckStatus {
    /// The time of the first `ok` on a connection made after `since_us`, if
    /// there was one (µs since the clock, plus 1). Replies of the old
    /// connection read after `since_us` do not count.
    pub fn acked_since(&self, since_us: u64) -> Option<u64> {
        let connected = self.connected_at_us.load(Ordering::Acquire);
        let ok = self.first_ok_us.load(Ordering::Acquire);
        (connected > since_us && ok >= connected).then_some(ok)
    }

    fn connected(&self, at_us: u64) {
        self.first_ok_us.store(0, Ordering::Release);
        self.connected_at_us.store(at_us, Ordering::Release);
    }

    fn ok_received(&self, at_us: u64) {
        let _ = self
            .first_ok_us
            .compare_exchange(0, at_us, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// µs since `clock`, plus 1 (so that 0 can mean "never").
pub fn clock_us(clock: Instant) -> u64 {
    Instant::now().saturating_duration_since(clock).as_micros() as u64 + 1
}

/// Counters of the lines written and not yet answered, oldest first.
type Outstanding = Mutex<VecDeque<u64>>;

/// Send until `stop` on `first`, then on new connections whenever one is
/// lost. `start` is when this emitter's schedule begins.
pub async fn run(
    cfg: AckEmitterConfig,
    shared: Arc<EmitterShared>,
    status: Arc<AckStatus>,
    recorder: Arc<Recorder>,
    first: ClientStream,
    start: Instant,
    stop: CancellationToken,
) {
    let mut lines = LineWriter {
        payloads: PayloadWriter::new(&cfg.id, cfg.checksum),
        rng: SmallRng::seed_from_u64(cfg.seed ^ (u64::from(cfg.index) << 32)),
        counter: 0,
        scratch: Vec::with_capacity(4096),
        buf: BytesMut::with_capacity(64 * 1024),
    };
    let mut stream = Some(first);
    let mut session_start = start;
    loop {
        let conn = match stream.take() {
            Some(s) => s,
            None => match reconnect(&cfg, &stop).await {
                Some(s) => s,
                None => return,
            },
        };
        status.connected(clock_us(cfg.clock));
        let end = session(
            &cfg,
            &mut lines,
            &shared,
            &status,
            &recorder,
            conn,
            session_start,
            &stop,
        )
        .await;
        shared.lag_us.store(0, Ordering::Relaxed);
        match end {
            SessionEnd::Stopped => return,
            // logdist closing after the emitter's FIN at the end is no loss.
            SessionEnd::Lost(_) if stop.is_cancelled() => return,
            SessionEnd::Lost(why) => {
                status.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("emitter {}: connection lost ({why}); reconnecting", cfg.id);
            }
            SessionEnd::Failed(why) => {
                *shared.error.lock() = Some(format!("emitter {}: {why}", cfg.id));
                return;
            }
        }
        session_start = Instant::now();
    }
}

/// Connect again, with backoff, until it works or `stop`.
async fn reconnect(cfg: &AckEmitterConfig, stop: &CancellationToken) -> Option<ClientStream> {
    let host = cfg.target.ip().to_string();
    let mut backoff = BACKOFF.0;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            r = logdist_net::connect(&host, cfg.target.port(), cfg.tls.as_ref(), Duration::from_secs(5)) => {
                if let Ok(s) = r {
                    return Some(s);
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

enum SessionEnd {
    /// The run ended (lines written by then had their chance to be answered).
    Stopped,
    /// The connection broke: reconnect.
    Lost(String),
    /// logdist broke the protocol: give up (an emitter error of the run).
    Failed(String),
}

/// One connection: write lines on schedule within the window, read replies.
#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &AckEmitterConfig,
    lines: &mut LineWriter,
    shared: &EmitterShared,
    status: &AckStatus,
    recorder: &Recorder,
    conn: ClientStream,
    start: Instant,
    stop: &CancellationToken,
) -> SessionEnd {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let outstanding: Outstanding = Mutex::new(VecDeque::with_capacity(cfg.window));
    let window = Semaphore::new(cfg.window);
    let writing_done = AtomicBool::new(false);
    let replies = Replies {
        emitter: cfg.index as usize,
        clock: cfg.clock,
        outstanding: &outstanding,
        window: &window,
        writing_done: &writing_done,
        status,
        recorder,
    };
    let reading = replies.read(&mut rd);
    let writing = lines.write(cfg, shared, &mut wr, &outstanding, &window, start, stop);
    tokio::pin!(reading, writing);
    tokio::select! {
        end = &mut reading => match end {
            ReadEnd::Closed(why) => SessionEnd::Lost(why),
            ReadEnd::Protocol(why) => SessionEnd::Failed(why),
            // Only after writing is done.
            ReadEnd::AllAnswered => SessionEnd::Stopped,
        },
        end = &mut writing => {
            writing_done.store(true, Ordering::Release);
            let (result, read_for) = match end {
                WriteEnd::Stopped => (SessionEnd::Stopped, CLOSE_TIMEOUT),
                WriteEnd::Failed(e) => (SessionEnd::Lost(format!("write failed: {e}")), LOST_READ_TIMEOUT),
            };
            // Collect the replies to what was written (at the end: logdist
            // answers everything before the emitter's FIN, then closes).
            let unanswered = !outstanding.lock().is_empty();
            if unanswered
                && let Ok(ReadEnd::Protocol(why)) =
                    tokio::time::timeout(read_for, &mut reading).await
            {
                return SessionEnd::Failed(why);
            }
            result
        }
    }
}

enum ReadEnd {
    /// Writing is over and every line written has its reply.
    AllAnswered,
    Closed(String),
    Protocol(String),
}

#[derive(serde::Deserialize)]
struct Reply {
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

/// The reply side of a session.
struct Replies<'a> {
    emitter: usize,
    clock: Instant,
    outstanding: &'a Outstanding,
    window: &'a Semaphore,
    writing_done: &'a AtomicBool,
    status: &'a AckStatus,
    recorder: &'a Recorder,
}

impl Replies<'_> {
    /// Read replies, match each with the oldest unanswered line, and record
    /// them (once per read, not per reply).
    async fn read<R: AsyncRead + Unpin>(&self, rd: &mut R) -> ReadEnd {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut ok = Vec::new();
        let mut rejected = Vec::new();
        loop {
            match rd.read_buf(&mut buf).await {
                Ok(0) => return ReadEnd::Closed("closed by logdist".into()),
                Err(e) => return ReadEnd::Closed(e.to_string()),
                Ok(_) => {}
            }
            let result = self.parse(&mut buf, &mut ok, &mut rejected);
            self.recorder.record_replies(self.emitter, &ok, &rejected);
            if !ok.is_empty() {
                self.status.ok_received(clock_us(self.clock));
            }
            self.window.add_permits(ok.len() + rejected.len());
            ok.clear();
            rejected.clear();
            if let Err(e) = result {
                return ReadEnd::Protocol(e);
            }
            if buf.len() > MAX_REPLY_BYTES {
                return ReadEnd::Protocol(format!(
                    "a reply line longer than {MAX_REPLY_BYTES} bytes"
                ));
            }
            if self.writing_done.load(Ordering::Acquire) && self.outstanding.lock().is_empty() {
                return ReadEnd::AllAnswered;
            }
        }
    }

    /// Take the complete reply lines out of `buf`.
    fn parse(
        &self,
        buf: &mut BytesMut,
        ok: &mut Vec<u64>,
        rejected: &mut Vec<String>,
    ) -> Result<(), String> {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(end + 1);
            let text = line[..end].trim_ascii();
            if text.is_empty() {
                continue;
            }
            let reply: Reply = serde_json::from_slice(text).map_err(|e| {
                format!(
                    "unreadable reply {:?}: {e}",
                    String::from_utf8_lossy(&text[..text.len().min(200)])
                )
            })?;
            let rejection = match (reply.status.as_str(), reply.reason) {
                ("ok", _) => None,
                // Answers no line (docs/protocol.md 2.6); our lines never cause it.
                ("error", Some(r)) if r == "bad_frame_length" => {
                    return Err("logdist closed the connection: bad_frame_length".into());
                }
                ("error", reason) => Some(reason.unwrap_or_else(|| "error".into())),
                (other, _) => return Err(format!("reply with status {other:?}")),
            };
            let Some(counter) = self.outstanding.lock().pop_front() else {
                return Err("a reply for a line it was not sent".into());
            };
            match rejection {
                None => ok.push(counter),
                Some(reason) => rejected.push(reason),
            }
        }
        Ok(())
    }
}

enum WriteEnd {
    Stopped,
    Failed(std::io::Error),
}

/// The sending side: the schedule and the lines.
struct LineWriter {
    payloads: PayloadWriter,
    rng: SmallRng,
    /// The next line's counter (lines 0..counter were handed to a connection).
    counter: u64,
    scratch: Vec<u8>,
    buf: BytesMut,
}

impl LineWriter {
    /// Write lines on schedule from `start` until `stop` or a failed write.
    #[allow(clippy::too_many_arguments)]
    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        cfg: &AckEmitterConfig,
        shared: &EmitterShared,
        wr: &mut W,
        outstanding: &Outstanding,
        window: &Semaphore,
        start: Instant,
        stop: &CancellationToken,
    ) -> WriteEnd {
        let mut ticker = tokio::time::interval_at(start, cfg.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        // Lines due since this connection began, as a real number.
        let mut due = self.counter as f64;
        let mut last = start;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            let rate = shared.rate();
            due += rate * now.saturating_duration_since(last).as_secs_f64();
            last = now;
            let batch = (due as u64)
                .saturating_sub(self.counter)
                .min(((rate * 0.25) as u64).max(64))
                .min(window.available_permits() as u64);
            if batch > 0 {
                // The reader only adds permits, so these are there.
                if let Ok(permits) = window.try_acquire_many(batch as u32) {
                    permits.forget();
                }
                self.build(cfg, batch, outstanding);
                // Every line built is handed to the connection: "sent" means
                // written or tried (a line cut off by a lost connection
                // counts too: logdist may have taken it).
                shared.sent.store(self.counter, Ordering::Release);
                let t0 = Instant::now();
                let result = write_bounded(wr, &self.buf, stop).await;
                shared
                    .write_wait_us
                    .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                if let Err(e) = result {
                    return WriteEnd::Failed(e);
                }
            }
            if rate > 0.0 {
                let behind = (due - self.counter as f64).max(0.0);
                let lag_us = (behind / rate * 1e6) as u64;
                shared.lag_us.store(lag_us, Ordering::Relaxed);
                shared.max_lag_us.fetch_max(lag_us, Ordering::Relaxed);
            } else {
                due = self.counter as f64;
            }
        }
        // Our FIN: logdist answers what it read, then closes.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, wr.shutdown()).await;
        WriteEnd::Stopped
    }

    /// Put the next `batch` lines in `buf` and their counters in `outstanding`
    /// (before they are written: a reply cannot come earlier).
    fn build(&mut self, cfg: &AckEmitterConfig, batch: u64, outstanding: &Outstanding) {
        self.buf.clear();
        let nanos = unix_nanos_now();
        let mut queue = outstanding.lock();
        for c in self.counter..self.counter + batch {
            let size = cfg.sizes.sample(&mut self.rng);
            self.payloads.write(nanos, c, size, &mut self.scratch);
            let priority = cfg.plan.priority_for(cfg.index, c);
            self.buf.extend_from_slice(b"{\"priority\":");
            self.buf.extend_from_slice(priority.to_string().as_bytes());
            self.buf.extend_from_slice(b",\"message\":\"");
            self.buf.extend_from_slice(&self.scratch);
            self.buf.extend_from_slice(b"\"}\n");
            queue.push_back(c);
        }
        self.counter += batch;
    }
}

/// Write all of `data`. A batch is not cut short by `stop` (a line cut in
/// two would be answered as a rejection), but after `stop` it gets at most
/// `CLOSE_TIMEOUT` (logdist may have stopped reading).
async fn write_bounded<W: AsyncWrite + Unpin>(
    wr: &mut W,
    data: &[u8],
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let write = async {
        wr.write_all(data).await?;
        wr.flush().await
    };
    tokio::select! {
        r = write => r,
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(CLOSE_TIMEOUT).await;
        } => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the last write did not complete within {CLOSE_TIMEOUT:?} of the end"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::profile::{PriorityMode, PrioritySettings, SizeSettings};
    use tokio::io::AsyncBufReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// What the fake listener does on one connection.
    #[derive(Clone, Copy, Debug)]
    enum Script {
        /// `ok` to every line, until the emitter's FIN.
        AckAll,
        /// `ok` to the first `n` lines, read `more` lines without replying,
        /// then drop the connection abruptly (RST), as a killed logdist would.
        AckThenDrop { n: usize, more: usize },
        /// An `invalid_json` error to every third line, `ok` to the others.
        RejectEveryThird,
        /// Read everything, answer nothing; close on the emitter's FIN.
        Silent,
    }

    /// Per connection: the counters of the lines answered `ok`, with an
    /// error, and all lines read, in order.
    #[derive(Debug, Default)]
    struct Served {
        ok: Vec<u64>,
        rejected: Vec<u64>,
        read: Vec<u64>,
    }

    /// A tiny stand-in for an `ack = "message"` listener: one connection per
    /// script, in turn.
    async fn serve(listener: TcpListener, scripts: Vec<Script>) -> Vec<Served> {
        let mut all = Vec::new();
        for script in scripts {
            let (conn, _) = listener.accept().await.unwrap();
            all.push(serve_one(conn, script).await);
        }
        all
    }

    async fn serve_one(conn: TcpStream, script: Script) -> Served {
        let mut served = Served::default();
        let (rd, mut wr) = conn.into_split();
        let mut lines = tokio::io::BufReader::new(rd).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let payload = v["message"].as_str().unwrap();
            let counter = crate::payload::verify(payload.as_bytes(), ChecksumKind::Fnv)
                .unwrap()
                .counter;
            assert_eq!(v["priority"], 3, "{line}");
            served.read.push(counter);
            let n = served.read.len();
            let reply: &[u8] = match script {
                Script::AckAll => b"{\"status\":\"ok\",\"message\":\"received\"}\n",
                Script::AckThenDrop { n: acked, more } => {
                    if n > acked + more {
                        let conn = lines.into_inner().into_inner().reunite(wr).unwrap();
                        conn.set_zero_linger().unwrap();
                        return served;
                    }
                    if n > acked {
                        continue;
                    }
                    b"{\"status\":\"ok\",\"message\":\"received\"}\n"
                }
                Script::RejectEveryThird if n % 3 == 0 => {
                    b"{\"status\":\"error\",\"reason\":\"invalid_json\",\"message\":\"no\"}\n"
                }
                Script::RejectEveryThird => b"{\"status\":\"ok\",\"message\":\"received\"}\n",
                Script::Silent => continue,
            };
            if reply.starts_with(b"{\"status\":\"ok\"") {
                served.ok.push(counter);
            } else {
                served.rejected.push(counter);
            }
            wr.write_all(reply).await.unwrap();
        }
        served
    }

    struct Emitter {
        clock: Instant,
        shared: Arc<EmitterShared>,
        status: Arc<AckStatus>,
        recorder: Arc<Recorder>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(target: SocketAddr, rate: f64, window: usize) -> Emitter {
        let clock = Instant::now();
        let cfg = AckEmitterConfig {
            index: 0,
            id: "e0".into(),
            checksum: ChecksumKind::Fnv,
            plan: PriorityPlan::new(
                &PrioritySettings {
                    mode: PriorityMode::Single,
                    levels: vec![3],
                    weights: vec![],
                },
                1,
            ),
            sizes: SizeModel::new(&SizeSettings {
                mean: 200.0,
                ..SizeSettings::default()
            })
            .unwrap(),
            tick: Duration::from_millis(5),
            seed: 1,
            window,
            target,
            tls: None,
            clock,
        };
        let first = logdist_net::connect("127.0.0.1", target.port(), None, Duration::from_secs(5))
            .await
            .unwrap();
        let shared = Arc::new(EmitterShared::with_rate(rate));
        let status = Arc::new(AckStatus::default());
        let recorder = Arc::new(Recorder::new(1, 1));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            cfg,
            shared.clone(),
            status.clone(),
            recorder.clone(),
            first,
            Instant::now(),
            stop.clone(),
        ));
        Emitter {
            clock,
            shared,
            status,
            recorder,
            stop,
            task,
        }
    }

    impl Emitter {
        fn acked_ok(&self) -> u64 {
            let s = self.recorder.lock();
            s.acks.account(0, self.shared.sent(), &s.ledger).acked_ok
        }

        async fn stop(self) -> Self {
            self.stop.cancel();
            let Emitter {
                clock,
                shared,
                status,
                recorder,
                stop,
                task,
            } = self;
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the emitter ends within 15 s of the stop")
                .unwrap();
            Emitter {
                clock,
                shared,
                status,
                recorder,
                stop,
                task: tokio::spawn(async {}),
            }
        }

        /// Its account, with `received` standing for what analyzers committed.
        fn account(&self, received: &Ledger) -> crate::durability_ledger::AckAccount {
            let s = self.recorder.lock();
            s.acks.account(0, self.shared.sent(), received)
        }
    }

    /// A ledger in which exactly `counters` were received.
    fn received(counters: impl IntoIterator<Item = u64>) -> Ledger {
        let mut l = Ledger::new(1);
        for c in counters {
            l.record(0, c);
        }
        l
    }

    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every line gets `ok`: all of them count as acked, and at the end the
    /// emitter waits for the replies to its last lines.
    #[tokio::test]
    async fn every_line_acked_counts_as_acked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, vec![Script::AckAll]));
        let e = start(target, 4000.0, 100).await;
        eventually("1000 lines are acked", || e.acked_ok() >= 1000).await;
        let e = e.stop().await;
        let served = server.await.unwrap();
        let sent = e.shared.sent();
        assert_eq!(served[0].read, (0..sent).collect::<Vec<_>>());
        let a = e.account(&received(served[0].ok.iter().copied()));
        assert_eq!((a.written, a.acked_ok, a.unanswered), (sent, sent, 0));
        assert_eq!((a.lost, a.unacked_received), (0, 0));
        assert_eq!(e.status.reconnects.load(Ordering::Relaxed), 0);
        assert!(e.status.acked_since(0).is_some());
        assert!(e.shared.error.lock().is_none());
    }

    /// The listener acks 300 lines, reads 80 more without replying and drops
    /// the connection; the emitter reconnects and goes on with fresh
    /// counters. Exactly the lines answered `ok` count as acked: none of the
    /// unanswered ones, none twice.
    #[tokio::test]
    async fn a_dropped_connection_leaves_exactly_the_acked_lines_acked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(
            listener,
            vec![Script::AckThenDrop { n: 300, more: 80 }, Script::AckAll],
        ));
        let e = start(target, 4000.0, 200).await;
        eventually("300 lines are acked", || e.acked_ok() >= 300).await;
        // No `ok` yet on a connection made after this (unless it is already made).
        let before_drop = clock_us(e.clock);
        if e.status.reconnects.load(Ordering::Relaxed) == 0 {
            assert_eq!(e.status.acked_since(before_drop), None);
        }
        eventually("300 more lines are acked", || e.acked_ok() >= 600).await;
        assert!(e.status.acked_since(before_drop).is_some());
        let e = e.stop().await;
        let served = server.await.unwrap();
        let (first, second) = (&served[0], &served[1]);
        assert_eq!(first.ok, (0..300).collect::<Vec<_>>());
        assert_eq!(first.read.len(), 381);
        // Fresh counters on the new connection: nothing resent under an old one.
        let sent = e.shared.sent();
        let resumed = second.read[0];
        assert!(resumed > *first.read.last().unwrap(), "{resumed}");
        assert_eq!(second.read, (resumed..sent).collect::<Vec<_>>());

        let acked: Vec<u64> = first.ok.iter().chain(&second.ok).copied().collect();
        let a = e.account(&received(acked.iter().copied()));
        // "received" = exactly what the listener acked: nothing acked is
        // missing from it, nothing in it is unacked.
        assert_eq!(
            (a.acked_ok, a.lost, a.unacked_received),
            (acked.len() as u64, 0, 0)
        );
        assert_eq!(a.unanswered, sent - acked.len() as u64);
        assert!(a.unanswered >= 81, "{a:?}");
        // And what the listener read but did not ack is not acked.
        let a = e.account(&received(first.read.iter().copied()));
        assert_eq!(a.unacked_received, 81);
        assert_eq!(e.status.reconnects.load(Ordering::Relaxed), 1);
        assert!(e.shared.error.lock().is_none());
    }

    /// Error replies answer their line: it is rejected, not acked, and the
    /// lines after it are matched with the right replies.
    #[tokio::test]
    async fn error_replies_are_rejections_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, vec![Script::RejectEveryThird]));
        let e = start(target, 3000.0, 50).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = e.stop().await;
        let served = server.await.unwrap();
        let a = e.account(&received(served[0].ok.iter().copied()));
        assert!(a.written > 300, "{a:?}");
        assert_eq!(a.acked_ok, served[0].ok.len() as u64);
        assert_eq!(a.rejected, served[0].rejected.len() as u64);
        assert_eq!((a.lost, a.unacked_received, a.unanswered), (0, 0, 0));
        assert_eq!(
            e.recorder.lock().acks.rejection_reasons["invalid_json"],
            a.rejected
        );
    }

    /// Closed loop: with no replies, the emitter stops at `window` lines
    /// and falls behind its schedule.
    #[tokio::test]
    async fn no_more_than_the_window_goes_unanswered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, vec![Script::Silent]));
        let e = start(target, 5000.0, 64).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(e.shared.sent(), 64);
        assert!(e.shared.lag_us.load(Ordering::Relaxed) > 100_000);
        let e = e.stop().await;
        let served = server.await.unwrap();
        assert_eq!(served[0].read.len(), 64);
        let a = e.account(&Ledger::new(1));
        assert_eq!((a.written, a.acked_ok, a.unanswered), (64, 0, 64));
    }
}
