//! The shipping loop: lines from the reader threads → batches on the
//! connection → acks back → checkpoint.
//!
//! Delivery rules:
//! * A line is done when its ack arrives. An ok ack counts it as shipped, an
//!   error ack as rejected (logged, never resent).
//! * Lines sent but not acknowledged when the connection is lost are sent
//!   again, first, on the next connection (at least once over a lost
//!   connection: the server may have taken a line whose ack never came back).
//!   With several servers the next connection is to the next server in the
//!   list ([`ServerRotation`]), dialled at once; the backoff waits only after
//!   a whole round of them failed.
//! * A reply announcing that the server closes the connection (`...; closing
//!   connection`, e.g. a frame over its `max_frame_bytes`) answers no line:
//!   everything outstanding is resent on the next connection. When the same
//!   line is at the front again, the lines are then sent one per frame,
//!   uncompressed; if even that keeps failing, the run gives up (exit 1).
//! * The checkpoint only moves over acknowledged lines, so a restart resumes
//!   right after the last acknowledged line. It is written at most every
//!   `CHECKPOINT_INTERVAL` while acks arrive, and written and synced to disk
//!   (file and directory) at every disconnect and at exit; a process killed
//!   (`kill -9`) between an ack's arrival and the next write resends those
//!   lines on restart.
//! * Writing never hides a shutdown or an ack timeout: a write blocked by
//!   backpressure is interrupted (cleanly, between two `write` calls, so the
//!   stream stays in step) when either comes.
//! * At most `window` lines are outstanding; the readers are at most the
//!   channel capacity (`BATCH_SIZE`, or `BUFFER_SIZE` in resilient mode)
//!   ahead: memory is bounded whatever the file size.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use logdist_net::{Backoff, TlsClient};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::checkpoint::{Checkpoint, Position};
use crate::config::{Config, Mode, StartAt};
use crate::connection::{Ack, Connection, encode_batch};
use crate::failover::ServerRotation;
use crate::health::{self, Health};
use crate::line_format::Formatter;
use crate::metrics::Metrics;
use crate::sources;
use crate::tailer::{self, Event, Line, Source, StopFlag, TailSettings};

/// Most outstanding (sent, unacknowledged) lines, at least twice a batch.
const WINDOW_LINES: usize = 1024;
/// Most outstanding bytes (before compression).
const WINDOW_BYTES: usize = 16 << 20;
/// Most bytes in one batch (before compression); logdist's default
/// `max_decompressed_bytes` is 16 MiB.
const MAX_BATCH_BYTES: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a lost connection may still deliver acks it had received.
const LAST_ACKS_GRACE: Duration = Duration::from_millis(200);
/// Rejections logged one by one; later ones only count.
const LOGGED_REJECTIONS: u64 = 100;
/// Least time between two checkpoint writes while acks arrive (disconnects
/// and exit always write, and sync).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Connections closed by the server with the same line first in line before
/// the lines are sent one per frame, uncompressed…
const CLOSING_REDUCE_AFTER: u32 = 2;
/// …and before giving up.
const CLOSING_GIVE_UP_AFTER: u32 = 4;

/// Bytes a message takes in a batch (before compression): the line and its `\n`.
fn wire_len(message: &Bytes) -> usize {
    message.len() + 1
}

/// What a run did; printed at the end, and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub lines_read: u64,
    pub shipped: u64,
    pub rejected: u64,
    pub resent: u64,
    /// Connections made to another server than the last one.
    pub failovers: u64,
    /// Lines read but neither acknowledged nor rejected at exit.
    pub undelivered: u64,
    pub read_errors: u64,
    /// Stopped by Ctrl-C / SIGTERM (or the caller's shutdown future).
    pub interrupted: bool,
    /// Stopped after `max_retries` failed connection attempts.
    pub gave_up: bool,
    /// Stopped because the server kept closing the connection on the same
    /// lines, even sent one per frame.
    pub stuck: bool,
    pub duration: Duration,
}

impl Summary {
    /// 0 when every line read was acknowledged ok, else 1.
    pub fn exit_code(&self) -> u8 {
        let clean = self.rejected == 0
            && self.undelivered == 0
            && self.read_errors == 0
            && !self.gave_up
            && !self.stuck;
        if clean { 0 } else { 1 }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "logdist-ship summary: files={} lines_read={} shipped_ok={} rejected={} resent={} undelivered={} \
             read_errors={} failovers={} duration={:.3}s",
            self.files,
            self.lines_read,
            self.shipped,
            self.rejected,
            self.resent,
            self.undelivered,
            self.read_errors,
            self.failovers,
            self.duration.as_secs_f64()
        )?;
        if self.interrupted {
            write!(f, " (interrupted)")?;
        }
        if self.gave_up {
            write!(f, " (gave up connecting)")?;
        }
        if self.stuck {
            write!(f, " (gave up: the server kept closing the connection)")?;
        }
        Ok(())
    }
}

/// Why a run could not start.
#[derive(Debug)]
pub enum ShipError {
    /// Bad settings or files (exit code 2).
    Usage(String),
    /// Anything else (exit code 1).
    Fatal(String),
}

impl ShipError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ShipError::Usage(_) => 2,
            ShipError::Fatal(_) => 1,
        }
    }
}

impl fmt::Display for ShipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShipError::Usage(m) | ShipError::Fatal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ShipError {}

/// Ships until the files end (batch mode) or `shutdown` completes, then
/// waits (up to `shutdown_timeout`) for outstanding acks, writes the
/// checkpoint and returns the summary.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<Summary, ShipError> {
    let started = Instant::now();
    if config.servers.is_empty() {
        return Err(ShipError::Usage("no server to ship to".into()));
    }
    let files = sources::resolve(&config.log_files, config.mode).map_err(ShipError::Usage)?;
    let tls = config
        .tls_client()
        .map_err(|e| ShipError::Usage(e.to_string()))?;
    let checkpoint = match &config.checkpoint {
        Some(path) => {
            let (checkpoint, aside) =
                Checkpoint::load_or_set_aside(path).map_err(|e| ShipError::Usage(e.to_string()))?;
            if let Some(aside) = aside {
                tracing::error!(
                    path = %path.display(),
                    kept_as = %aside.display(),
                    "CHECKPOINT UNREADABLE (empty or torn, e.g. after a power loss): it was \
                     moved aside and shipping starts over as if there were none; lines \
                     already shipped will be sent again"
                );
            }
            Some((path.clone(), checkpoint))
        }
        None => None,
    };
    let keys: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();

    let (tx, rx) = mpsc::channel(config.channel_capacity().max(1));
    let stop = Arc::new(StopFlag::default());
    let formatter = Arc::new(Formatter::new(config.priority, &config.level_map));
    let settings = TailSettings {
        follow: config.mode == Mode::Continuous,
        poll_interval: config.poll_interval,
        max_line_bytes: config.max_line_bytes,
        start_at_end: config.start_at == StartAt::End,
    };
    let mut readers = Vec::new();
    for (index, path) in files.iter().enumerate() {
        let resume = checkpoint.as_ref().and_then(|(_, c)| c.get(&keys[index]));
        let source = Source {
            index,
            path: path.clone(),
            resume,
        };
        let handle = tailer::spawn(
            source,
            settings.clone(),
            formatter.clone(),
            tx.clone(),
            stop.clone(),
        )
        .map_err(|e| ShipError::Fatal(format!("cannot start a reader thread: {e}")))?;
        readers.push(handle);
    }
    drop(tx);
    let server_list: Vec<String> = config.servers.iter().map(|s| s.to_string()).collect();
    tracing::info!(
        files = files.len(),
        servers = %server_list.join(","),
        server_order = ?config.server_order,
        mode = ?config.mode,
        compress = config.compress,
        batch_size = config.batch_size,
        resilient = config.resilient,
        tls = tls.is_some(),
        "shipping"
    );

    let health = Health::new(config.servers.len());
    let monitor = (config.health_interval > Duration::ZERO).then(|| {
        tokio::spawn(health::monitor(
            config.servers.clone(),
            config.health_interval,
            health.clone(),
        ))
    });

    let mut shipper = Shipper::new(config, tls, keys, checkpoint, health);
    let outcome = shipper.ship(rx, shutdown, &stop).await;
    stop.stop();
    if let Some(monitor) = monitor {
        monitor.abort();
    }
    // Readers notice the stop flag or the closed channel at once.
    let _ = tokio::task::spawn_blocking(move || {
        for reader in readers {
            let _ = reader.join();
        }
    })
    .await;
    shipper.save_checkpoint(true);

    let total = &shipper.metrics.total;
    Ok(Summary {
        files: files.len(),
        lines_read: total.read,
        shipped: total.sent,
        rejected: total.failed,
        resent: total.resent,
        failovers: total.failovers,
        undelivered: (shipper.unsent.len() + shipper.inflight.len()) as u64,
        read_errors: shipper.read_errors,
        interrupted: outcome.interrupted,
        gave_up: shipper.gave_up && !shipper.stuck,
        stuck: shipper.stuck,
        duration: started.elapsed(),
    })
}

/// A line waiting to be (re)sent.
struct Unsent {
    line: Line,
    sent_before: bool,
}

/// A line sent and waiting for its ack.
struct Pending {
    line: Line,
    /// Batch (gzip frame) it went out in.
    batch: u64,
    sent_at: Instant,
}

struct Outcome {
    interrupted: bool,
}

/// A batch being written: its lines are already in flight.
struct Outgoing {
    data: BytesMut,
    written: usize,
}

/// How a bounded write ended.
enum Write {
    Done(io::Result<()>),
    /// The shutdown future completed first.
    Shutdown,
    /// The stop or ack deadline passed first.
    Blocked,
}

struct Shipper {
    config: Config,
    /// `Some` with `--tls`: every connection is TLS.
    tls: Option<TlsClient>,
    servers: ServerRotation,
    keys: Vec<String>,
    checkpoint: Option<(PathBuf, Checkpoint)>,
    /// Changed since last written.
    checkpoint_dirty: bool,
    /// Written since last synced to disk.
    checkpoint_unsynced: bool,
    checkpoint_written: Option<Instant>,
    health: Health,
    metrics: Metrics,
    unsent: VecDeque<Unsent>,
    inflight: VecDeque<Pending>,
    inflight_bytes: usize,
    out: Option<Outgoing>,
    window: usize,
    conn: Option<Connection>,
    connected_before: bool,
    acked_since_connect: bool,
    backoff: Backoff,
    next_attempt: Instant,
    gave_up: bool,
    /// Gave up because the server kept closing the connection.
    stuck: bool,
    /// Connections the server closed in a row with the same line (file,
    /// end offset) first among the outstanding ones.
    closing_streak: u32,
    closing_front: Option<(usize, u64)>,
    /// Lines still to be sent one per frame, uncompressed.
    reduced: usize,
    batch_seq: u64,
    last_progress: Instant,
    read_errors: u64,
}

impl Shipper {
    fn new(
        config: Config,
        tls: Option<TlsClient>,
        keys: Vec<String>,
        checkpoint: Option<(PathBuf, Checkpoint)>,
        health: Health,
    ) -> Shipper {
        let now = Instant::now();
        Shipper {
            window: WINDOW_LINES.max(2 * config.batch_size),
            backoff: Backoff::new(config.backoff_initial, config.backoff_max),
            servers: ServerRotation::new(config.servers.clone(), config.server_order),
            config,
            tls,
            keys,
            checkpoint,
            checkpoint_dirty: false,
            checkpoint_unsynced: false,
            checkpoint_written: None,
            health,
            metrics: Metrics::default(),
            unsent: VecDeque::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            out: None,
            conn: None,
            connected_before: false,
            acked_since_connect: false,
            next_attempt: now,
            gave_up: false,
            stuck: false,
            closing_streak: 0,
            closing_front: None,
            reduced: 0,
            batch_seq: 0,
            last_progress: now,
            read_errors: 0,
        }
    }

    /// Whether another line may be taken from the readers now.
    fn can_take(&self) -> bool {
        self.unsent.len() < self.config.batch_size
            && self.unsent.len() + self.inflight.len() < self.window
    }

    fn has_work(&self) -> bool {
        !self.unsent.is_empty() || !self.inflight.is_empty()
    }

    fn take(&mut self, event: Event) {
        match event {
            Event::Line(line) => {
                self.metrics.read();
                self.unsent.push_back(Unsent {
                    line,
                    sent_before: false,
                });
            }
            Event::Failed { source, error } => {
                self.read_errors += 1;
                tracing::error!(file = %self.keys[source], %error, "stopped reading this file");
            }
        }
    }

    async fn ship(
        &mut self,
        mut rx: mpsc::Receiver<Event>,
        shutdown: impl Future<Output = ()>,
        stop: &StopFlag,
    ) -> Outcome {
        tokio::pin!(shutdown);
        let mut reading = true;
        let mut stop_deadline: Option<Instant> = None;
        let metrics_on = self.config.metrics_interval > Duration::ZERO;
        let mut metrics_tick = tokio::time::interval(if metrics_on {
            self.config.metrics_interval
        } else {
            Duration::from_secs(3600)
        });
        metrics_tick.tick().await;
        let ack_timeout = self.config.ack_timeout;

        loop {
            while reading && self.can_take() {
                match rx.try_recv() {
                    Ok(event) => self.take(event),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => reading = false,
                }
            }
            if self.conn.is_none()
                && self.has_work()
                && !self.gave_up
                && Instant::now() >= self.next_attempt
            {
                self.try_connect().await;
            }
            if self.gave_up {
                break;
            }
            if self.conn.is_some() {
                // Bounded: a write blocked by backpressure must not hide the
                // shutdown, the shutdown timeout or the ack timeout.
                let now = Instant::now();
                let ack_deadline = (ack_timeout > Duration::ZERO).then(|| {
                    if self.inflight.is_empty() {
                        now + ack_timeout
                    } else {
                        self.last_progress + ack_timeout
                    }
                });
                let deadline = stop_deadline.into_iter().chain(ack_deadline).min();
                let write = tokio::select! {
                    biased;
                    _ = &mut shutdown, if stop_deadline.is_none() => Write::Shutdown,
                    _ = sleep_until_opt(deadline) => Write::Blocked,
                    result = self.send_batches() => Write::Done(result),
                };
                match write {
                    Write::Done(Ok(())) => {}
                    Write::Done(Err(error)) => {
                        self.disconnect(&format!("write failed: {error}"), true)
                            .await;
                        continue;
                    }
                    Write::Shutdown => {
                        stop_deadline = Some(self.begin_stop(stop, &mut rx));
                        reading = false;
                        continue;
                    }
                    Write::Blocked => {
                        if stop_deadline.is_some_and(|d| Instant::now() >= d) {
                            tracing::warn!(
                                outstanding = self.unsent.len() + self.inflight.len(),
                                "shutdown timeout (while writing): exiting with lines not acknowledged"
                            );
                            break;
                        }
                        // Acks may have come while the write was blocked.
                        let before = self.last_progress;
                        self.take_acks().await;
                        if self.conn.is_some() && self.last_progress == before {
                            self.disconnect(
                                &format!("no ack for {ack_timeout:?} (write blocked)"),
                                false,
                            )
                            .await;
                        }
                        continue;
                    }
                }
            }
            if !self.has_work() && (!reading || stop_deadline.is_some()) {
                break;
            }
            let reconnect_at = self.next_attempt;
            let ack_deadline = self.last_progress + ack_timeout;
            let checkpoint_due = self.checkpoint_due();
            tokio::select! {
                biased;
                _ = &mut shutdown, if stop_deadline.is_none() => {
                    stop_deadline = Some(self.begin_stop(stop, &mut rx));
                    reading = false;
                }
                _ = sleep_until_opt(stop_deadline) => {
                    tracing::warn!(outstanding = self.unsent.len() + self.inflight.len(),
                        "shutdown timeout: exiting with lines not acknowledged");
                    break;
                }
                ack = next_ack(&mut self.conn) => match ack {
                    Some(ack) => {
                        if let Some(message) = self.on_ack(ack) {
                            self.server_closing(&message).await;
                        } else {
                            self.take_acks().await;
                        }
                    }
                    None => self.disconnect("connection closed by the server", false).await,
                },
                event = rx.recv(), if reading && self.can_take() => match event {
                    Some(event) => self.take(event),
                    None => reading = false,
                },
                _ = tokio::time::sleep_until(reconnect_at),
                    if self.conn.is_none() && self.has_work() => {}
                _ = tokio::time::sleep_until(ack_deadline),
                    if ack_timeout > Duration::ZERO && self.conn.is_some() && !self.inflight.is_empty() => {
                    self.disconnect(&format!("no ack for {ack_timeout:?}"), false).await;
                }
                _ = sleep_until_opt(checkpoint_due) => self.save_checkpoint(false),
                _ = metrics_tick.tick(), if metrics_on => {
                    let server = self.conn.is_some().then(|| self.servers.current());
                    let line = self.metrics.report(rx.len(), rx.max_capacity(), server, self.health.reachable());
                    tracing::info!("{line}");
                }
            }
        }
        Outcome {
            interrupted: stop_deadline.is_some(),
        }
    }

    /// Stops reading on a shutdown request; returns the shutdown deadline.
    fn begin_stop(&self, stop: &StopFlag, rx: &mut mpsc::Receiver<Event>) -> Instant {
        tracing::info!(
            outstanding = self.unsent.len() + self.inflight.len(),
            "stopping: no more reading, waiting for outstanding acks"
        );
        stop.stop();
        rx.close();
        Instant::now() + self.config.shutdown_timeout
    }

    /// Takes every ack already received, then writes the checkpoint (when due).
    async fn take_acks(&mut self) {
        while let Some(ack) = self.conn.as_mut().and_then(Connection::try_ack) {
            if let Some(message) = self.on_ack(ack) {
                self.server_closing(&message).await;
                return;
            }
        }
        self.save_checkpoint(false);
    }

    /// Dials the current server (TLS names it by its host, unless
    /// `--tls-server-name` says otherwise).
    async fn try_connect(&mut self) {
        let server = self.servers.current().clone();
        match Connection::connect(
            &server.host,
            server.port,
            self.tls.as_ref(),
            CONNECT_TIMEOUT,
        )
        .await
        {
            Ok(conn) => {
                let resending = self.unsent.iter().filter(|u| u.sent_before).count();
                if self.servers.connected() {
                    self.metrics.failed_over();
                    self.metrics.reconnected();
                    tracing::info!(%server, peer = %conn.peer, resending, "failed over to another server");
                } else if self.connected_before {
                    self.metrics.reconnected();
                    tracing::info!(%server, peer = %conn.peer, resending, "reconnected");
                } else {
                    tracing::info!(%server, peer = %conn.peer, "connected");
                }
                self.connected_before = true;
                self.acked_since_connect = false;
                self.last_progress = Instant::now();
                self.conn = Some(conn);
            }
            Err(error) => self.connect_failed(&error.to_string()),
        }
    }

    /// The current server failed: dials the next one at once, or, when
    /// every server failed in a row, schedules the next round after the
    /// backoff, or gives up after `max_retries` such rounds.
    fn connect_failed(&mut self, error: &str) {
        let server = self.servers.current().clone();
        if !self.servers.failed() {
            tracing::warn!(%error, %server, next = %self.servers.current(),
                "cannot reach the server: trying the next one");
            self.next_attempt = Instant::now();
            return;
        }
        let wait = self.backoff.fail();
        let failed_rounds = self.backoff.failures();
        let max = self.config.max_retries;
        if max > 0 && failed_rounds >= max {
            tracing::error!(%error, %server, failed_rounds, "cannot reach any server: giving up");
            self.gave_up = true;
            return;
        }
        tracing::warn!(%error, %server, failed_rounds, retry_in = ?wait, next = %self.servers.current(),
            "cannot reach any server: waiting before the next round");
        self.next_attempt = Instant::now() + wait;
    }

    /// Writes batches while there are lines to send and the window allows.
    ///
    /// Cancel safe: a batch's lines go in flight when its encoding is made,
    /// and what is left of it to write is kept, so dropping this future
    /// between (or during) `write` calls loses nothing and leaves the stream
    /// in step; the next call goes on where this one stopped.
    async fn send_batches(&mut self) -> io::Result<()> {
        loop {
            if let Some(out) = &mut self.out {
                let conn = self.conn.as_mut().expect("connected");
                while out.written < out.data.len() {
                    out.written += conn.write(&out.data[out.written..]).await?;
                }
                // TLS may still hold the batch's last records.
                conn.flush().await?;
                self.out = None;
            }
            if !self.next_batch() {
                return Ok(());
            }
        }
    }

    /// Encodes the next batch into `out` and puts its lines in flight;
    /// `false` when there is nothing to send or the window is full.
    fn next_batch(&mut self) -> bool {
        if self.unsent.is_empty()
            || self.inflight.len() >= self.window
            || self.inflight_bytes >= WINDOW_BYTES
        {
            return false;
        }
        let reduced = self.reduced > 0;
        let room = if reduced {
            1
        } else {
            (self.window - self.inflight.len()).min(self.config.batch_size)
        };
        let mut count = 0;
        let mut bytes = 0;
        for u in self.unsent.iter().take(room) {
            let len = wire_len(&u.line.message);
            if count > 0 && bytes + len > MAX_BATCH_BYTES {
                break;
            }
            bytes += len;
            count += 1;
        }
        let data = encode_batch(
            self.unsent.iter().take(count).map(|u| &u.line.message),
            self.config.compress && !reduced,
        );
        let now = Instant::now();
        if self.inflight.is_empty() {
            // Nothing was outstanding: the ack clock starts now.
            self.last_progress = now;
        }
        self.batch_seq += 1;
        let mut resent = 0;
        for u in self.unsent.drain(..count) {
            resent += u64::from(u.sent_before);
            self.inflight_bytes += wire_len(&u.line.message);
            self.inflight.push_back(Pending {
                line: u.line,
                batch: self.batch_seq,
                sent_at: now,
            });
        }
        if resent > 0 {
            self.metrics.resent(resent);
        }
        self.out = Some(Outgoing { data, written: 0 });
        true
    }

    /// Takes one reply off the outstanding lines. Returns the server's
    /// message when it announces closing the connection: then no line was
    /// taken (the caller disconnects, and they are all resent).
    fn on_ack(&mut self, ack: Ack) -> Option<String> {
        if let Ack::Closing(message) = ack {
            return Some(message);
        }
        let Some(first) = self.inflight.pop_front() else {
            tracing::warn!(?ack, "reply with no message outstanding: ignored");
            return None;
        };
        let mut done = vec![first];
        if self.config.compress && ack.rejects_whole_frame() {
            let batch = done[0].batch;
            while self.inflight.front().is_some_and(|p| p.batch == batch) {
                done.extend(self.inflight.pop_front());
            }
        }
        let now = Instant::now();
        self.last_progress = now;
        self.acked_since_connect = true;
        self.backoff.reset();
        self.servers.acked();
        self.reduced = self.reduced.saturating_sub(done.len());
        for pending in done {
            self.inflight_bytes -= wire_len(&pending.line.message);
            let ok = ack == Ack::Ok;
            self.metrics.acked(ok, now - pending.sent_at);
            if let Ack::Error { code, message } = &ack {
                let rejected = self.metrics.total.failed;
                let file = &self.keys[pending.line.source];
                if rejected <= LOGGED_REJECTIONS {
                    let code = code.map_or("none", |code| code.as_str());
                    tracing::warn!(%file, end_offset = pending.line.end, code, reason = %message, "line rejected by the server");
                    if rejected == LOGGED_REJECTIONS {
                        tracing::warn!("further rejections are counted, not logged");
                    }
                }
            }
            if let Some((_, checkpoint)) = &mut self.checkpoint {
                let position = Position {
                    id: pending.line.id,
                    offset: pending.line.end,
                };
                checkpoint.set(&self.keys[pending.line.source], position);
                self.checkpoint_dirty = true;
            }
        }
        None
    }

    /// The server said it closes the connection: nothing outstanding was
    /// answered. Reconnect and resend; when the same line keeps being first
    /// in line, send one line per frame uncompressed, then give up.
    async fn server_closing(&mut self, message: &str) {
        let front = self.inflight.front().map(|p| (p.line.source, p.line.end));
        if front.is_some() && front == self.closing_front {
            self.closing_streak += 1;
        } else {
            self.closing_streak = 1;
        }
        self.closing_front = front;
        // The server is there and answering: reconnect at once (the streak,
        // not max_retries, bounds this).
        self.acked_since_connect = true;
        self.disconnect(
            &format!("the server is closing the connection: {message}"),
            false,
        )
        .await;
        if self.closing_streak >= CLOSING_GIVE_UP_AFTER {
            tracing::error!(
                message,
                attempts = self.closing_streak,
                "the server keeps closing the connection on the same lines, even sent one \
                 per frame uncompressed: giving up"
            );
            self.gave_up = true;
            self.stuck = true;
        } else if self.closing_streak >= CLOSING_REDUCE_AFTER {
            self.reduced = self
                .unsent
                .iter()
                .take_while(|u| u.sent_before)
                .count()
                .max(1);
            tracing::warn!(
                lines = self.reduced,
                "the server closed the connection again on the same lines: sending them one \
                 per frame, uncompressed"
            );
        }
    }

    /// Drops the connection: acks it already delivered are taken (briefly
    /// waiting for the reader when `drain`), the rest of what was sent goes
    /// back to the front of the queue, to be sent again.
    async fn disconnect(&mut self, reason: &str, drain: bool) {
        if let Some(mut conn) = self.conn.take() {
            // A reply announcing the close takes no line: ignored here.
            while let Some(ack) = conn.try_ack() {
                self.on_ack(ack);
            }
            if drain {
                let deadline = Instant::now() + LAST_ACKS_GRACE;
                while let Ok(Some(ack)) = tokio::time::timeout_at(deadline, conn.next_ack()).await {
                    self.on_ack(ack);
                }
            }
        }
        // The rest of a batch being written is dropped: its lines are in
        // flight and go back to the queue below.
        self.out = None;
        self.save_checkpoint(true);
        let outstanding = self.inflight.len();
        tracing::warn!(
            reason,
            server = %self.servers.current(),
            outstanding,
            "connection lost: will resend what was not acknowledged"
        );
        while let Some(p) = self.inflight.pop_back() {
            self.inflight_bytes -= wire_len(&p.line.message);
            self.unsent.push_front(Unsent {
                line: p.line,
                sent_before: true,
            });
        }
        if self.acked_since_connect {
            // The server did its job and is gone (or hangs): the next one
            // takes over at once.
            self.servers.move_on();
            self.next_attempt = Instant::now();
        } else {
            // Accepted then lost without a single ack: a failure of this
            // server, as a refusal is.
            self.connect_failed(reason);
        }
    }

    /// When the debounced checkpoint write is due (`None`: nothing to write).
    fn checkpoint_due(&self) -> Option<Instant> {
        if self.checkpoint.is_none() || !self.checkpoint_dirty {
            return None;
        }
        Some(
            self.checkpoint_written
                .map_or_else(Instant::now, |at| at + CHECKPOINT_INTERVAL),
        )
    }

    /// Writes the checkpoint: without `sync`, only when it changed and the
    /// last write is `CHECKPOINT_INTERVAL` old; with `sync`, whenever it
    /// changed or was written without a sync since, then syncs the file and
    /// its directory.
    fn save_checkpoint(&mut self, sync: bool) {
        let Some((path, checkpoint)) = &self.checkpoint else {
            return;
        };
        let now = Instant::now();
        let due = if sync {
            self.checkpoint_dirty || self.checkpoint_unsynced
        } else {
            self.checkpoint_dirty
                && self
                    .checkpoint_written
                    .is_none_or(|at| now >= at + CHECKPOINT_INTERVAL)
        };
        if !due {
            return;
        }
        match checkpoint.save(path, sync) {
            Ok(()) => {
                self.checkpoint_dirty = false;
                self.checkpoint_unsynced = !sync;
                self.checkpoint_written = Some(now);
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot write the checkpoint")
            }
        }
    }
}

async fn next_ack(conn: &mut Option<Connection>) -> Option<Ack> {
    match conn {
        Some(conn) => conn.next_ack().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
