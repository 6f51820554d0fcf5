//! The shipping loop: lines from the reader threads → batches on the
//! connection → acks back → checkpoint.
//!
//! Delivery rules:
//! * A line is done when its ack arrives. An ok ack counts it as shipped, an
//!   error ack as rejected (logged, never resent).
//! * Lines sent but not acknowledged when the connection is lost are sent
//!   again, first, on the next connection (at least once over a lost
//!   connection: the server may have taken a line whose ack never came back).
//! * The checkpoint only moves over acknowledged lines, so a restart resumes
//!   right after the last acknowledged line. It is written after each burst of
//!   acks; a process killed (`kill -9`) between an ack's arrival and that write
//!   resends those lines on restart.
//! * At most `window` lines are outstanding; the readers are at most the
//!   channel capacity (`BATCH_SIZE`, or `BUFFER_SIZE` in resilient mode)
//!   ahead: memory is bounded whatever the file size.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::checkpoint::{Checkpoint, Position};
use crate::config::{Config, Mode, StartAt};
use crate::connection::{Ack, Connection, encode_batch};
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

/// What a run did; printed at the end, and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub lines_read: u64,
    pub shipped: u64,
    pub rejected: u64,
    pub resent: u64,
    /// Lines read but neither acknowledged nor rejected at exit.
    pub undelivered: u64,
    pub read_errors: u64,
    /// Stopped by Ctrl-C / SIGTERM (or the caller's shutdown future).
    pub interrupted: bool,
    /// Stopped after `max_retries` failed connection attempts.
    pub gave_up: bool,
    pub duration: Duration,
}

impl Summary {
    /// 0 when every line read was acknowledged ok, else 1.
    pub fn exit_code(&self) -> u8 {
        let clean =
            self.rejected == 0 && self.undelivered == 0 && self.read_errors == 0 && !self.gave_up;
        if clean { 0 } else { 1 }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "logdist-ship summary: files={} lines_read={} shipped_ok={} rejected={} resent={} undelivered={} \
             read_errors={} duration={:.3}s",
            self.files,
            self.lines_read,
            self.shipped,
            self.rejected,
            self.resent,
            self.undelivered,
            self.read_errors,
            self.duration.as_secs_f64()
        )?;
        if self.interrupted {
            write!(f, " (interrupted)")?;
        }
        if self.gave_up {
            write!(f, " (gave up connecting)")?;
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
    let files = sources::resolve(&config.log_files, config.mode).map_err(ShipError::Usage)?;
    let checkpoint = match &config.checkpoint {
        Some(path) => Some((
            path.clone(),
            Checkpoint::load(path).map_err(|e| ShipError::Usage(e.to_string()))?,
        )),
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
    tracing::info!(
        files = files.len(),
        server = %format!("{}:{}", config.server_host, config.server_port),
        mode = ?config.mode,
        compress = config.compress,
        batch_size = config.batch_size,
        resilient = config.resilient,
        "shipping"
    );

    let health = Health::default();
    let monitor = (config.health_interval > Duration::ZERO).then(|| {
        tokio::spawn(health::monitor(
            config.server_host.clone(),
            config.server_port,
            config.health_interval,
            health.clone(),
        ))
    });

    let mut shipper = Shipper::new(config, keys, checkpoint, health);
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
        undelivered: (shipper.unsent.len() + shipper.inflight.len()) as u64,
        read_errors: shipper.read_errors,
        interrupted: outcome.interrupted,
        gave_up: shipper.gave_up,
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

struct Shipper {
    config: Config,
    keys: Vec<String>,
    checkpoint: Option<(PathBuf, Checkpoint)>,
    checkpoint_dirty: bool,
    health: Health,
    metrics: Metrics,
    unsent: VecDeque<Unsent>,
    inflight: VecDeque<Pending>,
    inflight_bytes: usize,
    window: usize,
    conn: Option<Connection>,
    connected_before: bool,
    acked_since_connect: bool,
    backoff: Backoff,
    next_attempt: Instant,
    gave_up: bool,
    batch_seq: u64,
    last_progress: Instant,
    read_errors: u64,
}

impl Shipper {
    fn new(
        config: Config,
        keys: Vec<String>,
        checkpoint: Option<(PathBuf, Checkpoint)>,
        health: Health,
    ) -> Shipper {
        let now = Instant::now();
        Shipper {
            window: WINDOW_LINES.max(2 * config.batch_size),
            backoff: Backoff::new(config.backoff_initial, config.backoff_max),
            config,
            keys,
            checkpoint,
            checkpoint_dirty: false,
            health,
            metrics: Metrics::default(),
            unsent: VecDeque::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            conn: None,
            connected_before: false,
            acked_since_connect: false,
            next_attempt: now,
            gave_up: false,
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
            if self.conn.is_some()
                && let Err(error) = self.send_batches().await
            {
                self.disconnect(&format!("write failed: {error}"), true)
                    .await;
                continue;
            }
            if !self.has_work() && (!reading || stop_deadline.is_some()) {
                break;
            }
            let reconnect_at = self.next_attempt;
            let ack_deadline = self.last_progress + ack_timeout;
            tokio::select! {
                biased;
                _ = &mut shutdown, if stop_deadline.is_none() => {
                    tracing::info!(outstanding = self.unsent.len() + self.inflight.len(),
                        "stopping: no more reading, waiting for outstanding acks");
                    stop_deadline = Some(Instant::now() + self.config.shutdown_timeout);
                    stop.stop();
                    rx.close();
                    reading = false;
                }
                _ = sleep_until_opt(stop_deadline) => {
                    tracing::warn!(outstanding = self.unsent.len() + self.inflight.len(),
                        "shutdown timeout: exiting with lines not acknowledged");
                    break;
                }
                ack = next_ack(&mut self.conn) => match ack {
                    Some(ack) => {
                        self.on_ack(ack);
                        while let Some(ack) = self.conn.as_mut().and_then(Connection::try_ack) {
                            self.on_ack(ack);
                        }
                        self.save_checkpoint(false);
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
                _ = metrics_tick.tick(), if metrics_on => {
                    let line = self.metrics.report(rx.len(), rx.max_capacity(), self.health.get());
                    tracing::info!("{line}");
                }
            }
        }
        Outcome {
            interrupted: stop_deadline.is_some(),
        }
    }

    async fn try_connect(&mut self) {
        let (host, port) = (&self.config.server_host, self.config.server_port);
        match Connection::connect(host, port, CONNECT_TIMEOUT).await {
            Ok(conn) => {
                if self.connected_before {
                    self.metrics.reconnected();
                    tracing::info!(peer = %conn.peer, resending = self.unsent.iter().filter(|u| u.sent_before).count(),
                        "reconnected");
                } else {
                    tracing::info!(peer = %conn.peer, "connected");
                }
                self.connected_before = true;
                self.acked_since_connect = false;
                self.last_progress = Instant::now();
                self.conn = Some(conn);
            }
            Err(error) => self.connect_failed(&error.to_string()),
        }
    }

    /// Schedules the next attempt, or gives up after `max_retries`.
    fn connect_failed(&mut self, error: &str) {
        let wait = self.backoff.fail();
        let failures = self.backoff.failures();
        let max = self.config.max_retries;
        if max > 0 && failures >= max {
            tracing::error!(%error, failures, "cannot reach the server: giving up");
            self.gave_up = true;
            return;
        }
        tracing::warn!(%error, failures, retry_in = ?wait, server = %format!("{}:{}", self.config.server_host, self.config.server_port),
            "cannot reach the server");
        self.next_attempt = Instant::now() + wait;
    }

    /// Writes batches while there are lines to send and the window allows.
    async fn send_batches(&mut self) -> std::io::Result<()> {
        while !self.unsent.is_empty()
            && self.inflight.len() < self.window
            && self.inflight_bytes < WINDOW_BYTES
        {
            let room = (self.window - self.inflight.len()).min(self.config.batch_size);
            let mut count = 0;
            let mut bytes = 0;
            for u in self.unsent.iter().take(room) {
                if count > 0 && bytes + u.line.message.len() + 1 > MAX_BATCH_BYTES {
                    break;
                }
                bytes += u.line.message.len() + 1;
                count += 1;
            }
            let encoded = encode_batch(
                self.unsent.iter().take(count).map(|u| &u.line.message),
                self.config.compress,
            );
            let conn = self.conn.as_mut().expect("connected");
            conn.send(&encoded).await?;
            let now = Instant::now();
            self.batch_seq += 1;
            let mut resent = 0;
            for u in self.unsent.drain(..count) {
                resent += u64::from(u.sent_before);
                self.inflight_bytes += u.line.message.len() + 1;
                self.inflight.push_back(Pending {
                    line: u.line,
                    batch: self.batch_seq,
                    sent_at: now,
                });
            }
            if resent > 0 {
                self.metrics.resent(resent);
            }
            if self.inflight.len() == count {
                // Nothing was outstanding: the ack clock starts now.
                self.last_progress = now;
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, ack: Ack) {
        let Some(first) = self.inflight.pop_front() else {
            tracing::warn!(?ack, "reply with no message outstanding: ignored");
            return;
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
        for pending in done {
            self.inflight_bytes -= pending.line.message.len() + 1;
            let ok = ack == Ack::Ok;
            self.metrics.acked(ok, now - pending.sent_at);
            if let Ack::Error(reason) = &ack {
                let rejected = self.metrics.total.failed;
                let file = &self.keys[pending.line.source];
                if rejected <= LOGGED_REJECTIONS {
                    tracing::warn!(%file, end_offset = pending.line.end, %reason, "line rejected by the server");
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
    }

    /// Drops the connection: acks it already delivered are taken (briefly
    /// waiting for the reader when `drain`), the rest of what was sent goes
    /// back to the front of the queue, to be sent again.
    async fn disconnect(&mut self, reason: &str, drain: bool) {
        if let Some(mut conn) = self.conn.take() {
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
        self.save_checkpoint(false);
        let outstanding = self.inflight.len();
        tracing::warn!(
            reason,
            outstanding,
            "connection lost: will resend what was not acknowledged"
        );
        while let Some(p) = self.inflight.pop_back() {
            self.inflight_bytes -= p.line.message.len() + 1;
            self.unsent.push_front(Unsent {
                line: p.line,
                sent_before: true,
            });
        }
        if self.acked_since_connect {
            self.next_attempt = Instant::now();
        } else {
            // Accepted then lost without a single ack: back off as for a refusal.
            self.connect_failed(reason);
        }
    }

    fn save_checkpoint(&mut self, sync: bool) {
        if !self.checkpoint_dirty && !sync {
            return;
        }
        if let Some((path, checkpoint)) = &self.checkpoint {
            if !self.checkpoint_dirty {
                return;
            }
            match checkpoint.save(path, sync) {
                Ok(()) => self.checkpoint_dirty = false,
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot write the checkpoint")
                }
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
