//! A simulated analyzer: dials the distributor, says hello (seed weight word or
//! JSON hello), reads messages, checks each one, and acks every `ack_every`
//! messages or when the stream goes quiet.
//!
//! A message counts as processed only when it is acked: until then it sits in
//! `pending`. A kill (abrupt close) throws `pending` away, as a crashed analyzer
//! would, and the distributor must deliver those messages again. That keeps the
//! accounting exact under chaos: zero loss *and* zero duplicates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::borrow::Cow;

use bytes::{Buf, BytesMut};
use logdist_net::{ClientStream, TlsClient};
use logdist_wire::{AnalyzerFormat, Hello, seed_ack_word, seed_handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::partition::Island;
use crate::payload::{ChecksumKind, EmitterNaming, unix_nanos_now, verify};
use crate::priority::PriorityPlan;
use crate::profile::{AnalyzerGroup, Handshake};
use crate::recorder::{Received, Recorder};

/// What the runner and the chaos schedule can tell an analyzer to do.
#[derive(Clone, Copy, Debug)]
pub enum AnalyzerCommand {
    /// Close abruptly (RST) while holding unacked messages; reconnect after `downtime`.
    Kill { downtime: Duration },
    /// Stop reading and acking for this long.
    Stall { duration: Duration },
    /// Ack what was processed, close cleanly, reconnect at once.
    Restart,
    /// The analyzer behind the partition link: stop reading and acking, cut
    /// the link (no FIN, no RST) for `duration`, restore it, then drop the
    /// connection and what it holds unacked and reconnect (see `partition`).
    Partition { duration: Duration },
    /// End of run: ack what was processed, close, and return.
    Stop,
}

/// Everything an analyzer needs that is the same for all of them.
#[derive(Clone)]
pub struct AnalyzerContext {
    pub target: SocketAddr,
    pub recorder: Arc<Recorder>,
    pub checksum: ChecksumKind,
    pub naming: EmitterNaming,
    pub plan: PriorityPlan,
    /// `emitters.formats`: syslog emitters' messages get the priority of
    /// their severity ([`crate::syslog::delivered_priority`]).
    pub formats: Vec<crate::syslog::EmitterFormat>,
    pub max_frame_bytes: usize,
    /// Id prefix for JSON hellos (`<prefix><index>`).
    pub hello_id_prefix: String,
    /// How long to keep trying to (re)connect before giving up.
    pub connect_timeout: Duration,
    /// Connect over TLS.
    pub tls: Option<TlsClient>,
    /// `token` of JSON hellos.
    pub token: Option<String>,
    /// The partition fault's namespaces, when the schedule has one: its
    /// analyzer dials from behind the link.
    pub island: Option<Arc<Island>>,
}

/// Live state the runner looks at.
#[derive(Debug, Default)]
pub struct AnalyzerStatus {
    pub connected: AtomicBool,
}

pub struct AnalyzerHandle {
    pub index: usize,
    pub commands: mpsc::UnboundedSender<AnalyzerCommand>,
    pub status: Arc<AnalyzerStatus>,
    pub task: tokio::task::JoinHandle<()>,
}

impl AnalyzerHandle {
    pub fn send(&self, cmd: AnalyzerCommand) {
        // A finished analyzer has nothing left to do with commands.
        let _ = self.commands.send(cmd);
    }
}

/// Start analyzer `index` as a task.
pub fn spawn(index: usize, settings: AnalyzerGroup, ctx: AnalyzerContext) -> AnalyzerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(AnalyzerStatus::default());
    let analyzer = Analyzer {
        index,
        settings,
        ctx,
        status: status.clone(),
        commands: rx,
        total_received: 0,
    };
    let task = tokio::spawn(analyzer.run());
    AnalyzerHandle {
        index,
        commands: tx,
        status,
        task,
    }
}

/// How a connection ended.
enum SessionEnd {
    Stop,
    Killed { downtime: Duration },
    Restart,
    Lost(String),
}

/// Reads messages in the analyzer's format, in place: a message is a slice
/// of the read buffer (its payload borrowed too, unless a JSON escape had
/// to be undone), so reading allocates nothing per message.
enum MessageReader {
    Frame { max_frame_bytes: usize },
    Ndjson,
}

/// One message at the start of the read buffer.
struct ReadMessage<'a> {
    priority: u8,
    /// The seed payload inside it.
    payload: Cow<'a, [u8]>,
    /// Its bytes in the buffer.
    len: usize,
}

#[derive(serde::Deserialize)]
struct NdjsonMessage<'a> {
    priority: u8,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

impl<'a> NdjsonMessage<'a> {
    fn parse(line: &'a [u8], what: &str) -> Result<(u8, Cow<'a, [u8]>), String> {
        let parsed: NdjsonMessage<'a> =
            serde_json::from_slice(line).map_err(|e| format!("bad {what}: {e}"))?;
        // Our payloads are ASCII, so they always arrive as "message".
        let message = parsed
            .message
            .ok_or_else(|| format!("{what} without a \"message\" field (payload_b64?)"))?;
        let payload = match message {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        };
        Ok((parsed.priority, payload))
    }
}

impl MessageReader {
    /// The first whole message of `data`, if it holds one.
    fn next<'a>(&self, data: &'a [u8]) -> Result<Option<ReadMessage<'a>>, String> {
        match self {
            MessageReader::Frame { .. } => {
                let Some(len) = self.frame_len(data)? else {
                    return Ok(None);
                };
                if data.len() < len {
                    return Ok(None);
                }
                let (priority, payload) = (data[4], &data[5..len]);
                // An NDJSON-born message (an `ndjson_ack` emitter's line)
                // arrives as the line itself; seed payloads never start with `{`.
                // A syslog-born one as the syslog message, the payload its MSG.
                let payload = match payload.first() {
                    Some(b'<') => Cow::Borrowed(crate::syslog::payload_of(payload)),
                    Some(b'{') => NdjsonMessage::parse(payload, "NDJSON-born frame payload")?.1,
                    _ => Cow::Borrowed(payload),
                };
                Ok(Some(ReadMessage {
                    priority,
                    payload,
                    len,
                }))
            }
            MessageReader::Ndjson => {
                let Some(end) = data.iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let (priority, payload) =
                    NdjsonMessage::parse(&data[..end], "ndjson message line")?;
                Ok(Some(ReadMessage {
                    priority,
                    payload,
                    len: end + 1,
                }))
            }
        }
    }

    /// The length of the frame that `data` starts with, once its length
    /// word is there (so the buffer can be made to hold it).
    fn frame_len(&self, data: &[u8]) -> Result<Option<usize>, String> {
        let MessageReader::Frame { max_frame_bytes } = self else {
            return Ok(None);
        };
        let Some(word) = data.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*word) as usize;
        if !(5..=*max_frame_bytes).contains(&len) {
            return Err(format!(
                "binary frame length {len} outside 5..={max_frame_bytes}"
            ));
        }
        Ok(Some(len))
    }
}

struct Analyzer {
    index: usize,
    settings: AnalyzerGroup,
    ctx: AnalyzerContext,
    status: Arc<AnalyzerStatus>,
    commands: mpsc::UnboundedReceiver<AnalyzerCommand>,
    /// Messages read over all connections (for the `drop_every` hook).
    total_received: u64,
}

impl Analyzer {
    async fn run(mut self) {
        loop {
            let Some((stream, buf)) = self.connect().await else {
                return;
            };
            self.status.connected.store(true, Ordering::Release);
            self.ctx
                .recorder
                .with_analyzer(self.index, |t| t.connections += 1);
            let end = self.session(stream, buf).await;
            self.status.connected.store(false, Ordering::Release);
            match end {
                SessionEnd::Stop => return,
                SessionEnd::Restart => continue,
                SessionEnd::Killed { downtime } => {
                    if !self.wait_or_stop(downtime).await {
                        return;
                    }
                }
                SessionEnd::Lost(why) => {
                    self.ctx.recorder.event(
                        Some(self.index),
                        "disconnected",
                        format!("connection lost: {why}"),
                    );
                    if !self.wait_or_stop(Duration::from_millis(100)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Wait, still obeying Stop. False if told to stop.
    async fn wait_or_stop(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                cmd = self.commands.recv() => match cmd {
                    None | Some(AnalyzerCommand::Stop) => return false,
                    // Already down: other chaos does not apply.
                    Some(_) => {}
                }
            }
        }
    }

    /// Connect and say hello, retrying until `connect_timeout`. None if told to
    /// stop or if it gave up (recorded as a protocol error).
    async fn connect(&mut self) -> Option<(ClientStream, BytesMut)> {
        let deadline = Instant::now() + self.ctx.connect_timeout;
        let mut last_error;
        loop {
            match self.try_connect().await {
                Ok(pair) => return Some(pair),
                Err(e) => last_error = e,
            }
            if Instant::now() >= deadline {
                self.ctx.recorder.protocol_error(
                    self.index,
                    format!(
                        "could not connect to {} within {:?}: {last_error}",
                        self.ctx.target, self.ctx.connect_timeout
                    ),
                );
                return None;
            }
            if !self.wait_or_stop(Duration::from_millis(50)).await {
                return None;
            }
        }
    }

    /// The island, if this analyzer dials from behind the partition link.
    fn island(&self) -> Option<&Arc<Island>> {
        self.ctx
            .island
            .as_ref()
            .filter(|island| island.analyzer == self.index)
    }

    async fn try_connect(&self) -> Result<(ClientStream, BytesMut), String> {
        let target = self.ctx.target;
        // Behind the partition link the analyzer dials over the link, in
        // plain TCP (the partition fault does not combine with TLS).
        let mut stream = match self.island() {
            Some(island) => island
                .connect(target.port())
                .await
                .map(ClientStream::Plain)
                .map_err(|e| format!("connect: {e}"))?,
            None => logdist_net::connect(
                &target.ip().to_string(),
                target.port(),
                self.ctx.tls.as_ref(),
                Duration::from_secs(5),
            )
            .await
            .map_err(|e| format!("connect: {e}"))?,
        };
        let mut buf = BytesMut::with_capacity(256 * 1024);
        match self.settings.handshake {
            Handshake::Seed => {
                stream
                    .write_all(&seed_handshake(self.settings.weight))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                stream
                    .flush()
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            }
            Handshake::Hello => {
                let hello = Hello {
                    id: format!("{}{}", self.ctx.hello_id_prefix, self.index),
                    weight: f64::from(self.settings.weight),
                    format: self.settings.format,
                    acks: true,
                    token: self.ctx.token.clone(),
                };
                let mut line = serde_json::to_vec(&hello).map_err(|e| e.to_string())?;
                line.push(b'\n');
                stream
                    .write_all(&line)
                    .await
                    .map_err(|e| format!("hello: {e}"))?;
                stream.flush().await.map_err(|e| format!("hello: {e}"))?;
                let reply = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                            return Ok(buf.split_to(end + 1));
                        }
                        if buf.len() > 64 * 1024 {
                            return Err("hello reply line too long".to_string());
                        }
                        match stream.read_buf(&mut buf).await {
                            Ok(0) => return Err("closed before replying to hello".to_string()),
                            Ok(_) => {}
                            Err(e) => {
                                let e = logdist_net::tls::explain_tls_error(&e, "--tls-cert")
                                    .unwrap_or_else(|| e.to_string());
                                return Err(format!("reading hello reply: {e}"));
                            }
                        }
                    }
                })
                .await
                .map_err(|_| "no reply to hello within 5s".to_string())??;
                let v: serde_json::Value = serde_json::from_slice(&reply)
                    .map_err(|e| format!("hello reply is not JSON: {e}"))?;
                if v.get("status").and_then(|s| s.as_str()) != Some("ok") {
                    return Err(format!(
                        "hello refused: {}",
                        String::from_utf8_lossy(reply.trim_ascii())
                    ));
                }
            }
        }
        Ok((stream, buf))
    }

    /// The priority the plan gave a message, as logdist delivers it.
    fn expected_priority(&self, emitter: u32, counter: u64) -> u8 {
        let planned = self.ctx.plan.priority_for(emitter, counter);
        match crate::syslog::format_of(&self.ctx.formats, emitter as usize) {
            format if format.is_syslog() => crate::syslog::delivered_priority(planned),
            _ => planned,
        }
    }

    fn classify(&self, priority: u8, payload: &[u8], now_nanos: u64) -> Received {
        match verify(payload, self.ctx.checksum) {
            Ok(v) => match self.ctx.naming.index_of(v.emitter_id) {
                Some(emitter) => Received::Valid {
                    emitter,
                    counter: v.counter,
                    priority,
                    priority_ok: self.expected_priority(emitter, v.counter) == priority,
                    latency_ns: now_nanos.saturating_sub(v.unix_nanos),
                    bytes: payload.len() as u32,
                },
                None => Received::Foreign,
            },
            Err(r) => Received::Rejected {
                emitter: r.emitter_id.and_then(|id| self.ctx.naming.index_of(id)),
                reason: r.reason,
            },
        }
    }

    async fn write_ack(&self, stream: &mut ClientStream, received: u64) -> std::io::Result<()> {
        match self.settings.handshake {
            Handshake::Seed => stream.write_all(&seed_ack_word(received)).await?,
            Handshake::Hello => {
                stream
                    .write_all(format!("{{\"ack\":{received}}}\n").as_bytes())
                    .await?
            }
        }
        // TLS may hold the record back; plain TCP has nothing to flush.
        stream.flush().await
    }

    /// Ack the `received` messages of this connection, then count what was
    /// pending as processed.
    async fn ack_and_commit(
        &self,
        stream: &mut ClientStream,
        received: u64,
        acked: &mut u64,
        pending: &mut Vec<Received>,
    ) -> std::io::Result<()> {
        self.write_ack(stream, received).await?;
        *acked = received;
        self.ctx.recorder.commit(self.index, pending);
        Ok(())
    }

    async fn session(&mut self, mut stream: ClientStream, mut buf: BytesMut) -> SessionEnd {
        let reader = match self.settings.format {
            AnalyzerFormat::Frame => MessageReader::Frame {
                max_frame_bytes: self.ctx.max_frame_bytes,
            },
            AnalyzerFormat::Ndjson => MessageReader::Ndjson,
        };
        let ack_every = u64::from(self.settings.ack_every);
        let mut pending: Vec<Received> = Vec::with_capacity(self.settings.ack_every as usize);
        // Messages received on this connection, and how many of them are acked.
        let mut received: u64 = 0;
        let mut acked: u64 = 0;
        let mut idle_deadline: Option<Instant> = None;
        let mut stall_until: Option<Instant> = None;
        // The stall is a partition: the link is cut until it ends.
        let mut partitioned = false;
        // A kill waits (briefly) until the analyzer holds unacked messages.
        let mut kill: Option<(Duration, Instant)> = None;

        loop {
            if let Some((downtime, by)) = kill
                && (!pending.is_empty() || Instant::now() >= by)
            {
                return self.kill(stream, &mut pending, downtime);
            }
            let stalled = stall_until.is_some();
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    None | Some(AnalyzerCommand::Stop) => {
                        if received > acked {
                            let _ = self.ack_and_commit(&mut stream, received, &mut acked, &mut pending).await;
                        }
                        let _ = stream.shutdown().await;
                        return SessionEnd::Stop;
                    }
                    Some(AnalyzerCommand::Kill { downtime }) => {
                        kill = Some((downtime, Instant::now() + Duration::from_secs(1)));
                    }
                    Some(AnalyzerCommand::Stall { duration }) => {
                        stall_until = Some(Instant::now() + duration);
                        self.ctx.recorder.with_analyzer(self.index, |t| t.stalls += 1);
                        self.ctx.recorder.event(
                            Some(self.index),
                            "stall",
                            format!("stops reading for {duration:?} holding {} unacked", pending.len()),
                        );
                    }
                    Some(AnalyzerCommand::Partition { duration }) => {
                        let Some(island) = self.island().cloned() else {
                            self.ctx.recorder.event(
                                Some(self.index),
                                "partition-skipped",
                                "this analyzer is not behind the partition link".to_string(),
                            );
                            continue;
                        };
                        // Stop reading and acking first, and let acks already
                        // written reach logdist: none is lost in the cut.
                        stall_until = Some(Instant::now() + duration);
                        partitioned = true;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let cut = tokio::task::spawn_blocking(move || island.cut()).await;
                        let detail = match cut {
                            Ok(Ok(())) => format!(
                                "link cut without FIN/RST for {duration:?} holding {} unacked",
                                pending.len()
                            ),
                            Ok(Err(e)) => format!("could not cut the link: {e}"),
                            Err(e) => format!("could not cut the link: {e}"),
                        };
                        self.ctx.recorder.with_analyzer(self.index, |t| t.partitions += 1);
                        self.ctx.recorder.event(Some(self.index), "partition", detail);
                    }
                    Some(AnalyzerCommand::Restart) => {
                        if received > acked
                            && let Err(e) = self.ack_and_commit(&mut stream, received, &mut acked, &mut pending).await
                        {
                            return SessionEnd::Lost(format!("writing ack: {e}"));
                        }
                        let _ = stream.shutdown().await;
                        self.ctx.recorder.with_analyzer(self.index, |t| t.restarts += 1);
                        self.ctx.recorder.event(
                            Some(self.index),
                            "restart",
                            "acked everything, closed cleanly, reconnecting".to_string(),
                        );
                        return SessionEnd::Restart;
                    }
                },
                // A pending kill must not wait for traffic to reach its deadline.
                _ = sleep_until(kill.map_or_else(Instant::now, |(_, by)| by)), if kill.is_some() => {}
                _ = sleep_until(stall_until.unwrap_or_else(Instant::now)), if stalled && partitioned => {
                    return self.end_partition(stream, &mut pending).await;
                }
                _ = sleep_until(stall_until.unwrap_or_else(Instant::now)), if stalled => {
                    stall_until = None;
                    self.ctx.recorder.event(Some(self.index), "stall-end", "reads again".to_string());
                }
                _ = sleep_until(idle_deadline.unwrap_or_else(Instant::now)), if idle_deadline.is_some() && !stalled => {
                    idle_deadline = None;
                    if received > acked
                        && let Err(e) = self.ack_and_commit(&mut stream, received, &mut acked, &mut pending).await
                    {
                        return SessionEnd::Lost(format!("writing ack: {e}"));
                    }
                }
                r = stream.read_buf(&mut buf), if !stalled => {
                    match r {
                        Ok(0) => return SessionEnd::Lost("closed by the distributor".to_string()),
                        Err(e) => return SessionEnd::Lost(e.to_string()),
                        Ok(_) => {}
                    }
                    let now_nanos = unix_nanos_now();
                    let mut consumed = 0;
                    loop {
                        let message = match reader.next(&buf[consumed..]) {
                            Ok(Some(m)) => m,
                            Ok(None) => break,
                            Err(e) => {
                                self.ctx.recorder.protocol_error(self.index, e.clone());
                                return SessionEnd::Lost(e);
                            }
                        };
                        consumed += message.len;
                        received += 1;
                        self.total_received += 1;
                        if let Some(n) = self.settings.drop_every
                            && self.total_received.is_multiple_of(n) {
                                self.ctx.recorder.with_analyzer(self.index, |t| t.hook_dropped += 1);
                                continue;
                            }
                        pending.push(self.classify(message.priority, &message.payload, now_nanos));
                    }
                    buf.advance(consumed);
                    // One ack for everything this read brought, however many
                    // `ack_every`s that is.
                    if received - acked >= ack_every
                        && let Err(e) = self.ack_and_commit(&mut stream, received, &mut acked, &mut pending).await
                    {
                        return SessionEnd::Lost(format!("writing ack: {e}"));
                    }
                    idle_deadline = (received > acked).then(|| Instant::now() + self.settings.ack_idle);
                    // Room for the next read, and for all of a frame larger than that.
                    let incomplete = reader.frame_len(&buf).ok().flatten().unwrap_or(0);
                    if buf.capacity() - buf.len() < 16 * 1024 || buf.capacity() < incomplete {
                        buf.reserve(incomplete.max(256 * 1024));
                    }
                }
            }
        }
    }

    /// Restores the link, then drops the connection (RST) and what is held
    /// unacked, and reconnects. Acks written into the cut could not be told
    /// from lost ones (nor a connection logdist gave up on from a live one),
    /// so the analyzer acts as one restarted after a network outage: what
    /// it held unacked is logdist's to deliver again.
    async fn end_partition(
        &mut self,
        stream: ClientStream,
        pending: &mut Vec<Received>,
    ) -> SessionEnd {
        if let Some(island) = self.island().cloned() {
            let restored = tokio::task::spawn_blocking(move || island.restore()).await;
            if !matches!(restored, Ok(Ok(()))) {
                self.ctx.recorder.protocol_error(
                    self.index,
                    format!("could not restore the partition link: {restored:?}"),
                );
            }
        }
        let _ = stream.tcp().set_zero_linger();
        drop(stream);
        let dropped = pending.len() as u64;
        pending.clear();
        self.ctx
            .recorder
            .with_analyzer(self.index, |t| t.dropped_unacked += dropped);
        self.ctx.recorder.event(
            Some(self.index),
            "partition-end",
            format!("link restored; reconnecting, {dropped} unacked messages dropped"),
        );
        SessionEnd::Restart
    }

    fn kill(
        &mut self,
        stream: ClientStream,
        pending: &mut Vec<Received>,
        downtime: Duration,
    ) -> SessionEnd {
        // Linger 0: close() sends RST at once, like a process that died.
        let _ = stream.tcp().set_zero_linger();
        drop(stream);
        let dropped = pending.len() as u64;
        pending.clear();
        self.ctx.recorder.with_analyzer(self.index, |t| {
            t.kills += 1;
            t.dropped_unacked += dropped;
        });
        self.ctx.recorder.event(
            Some(self.index),
            "kill",
            format!("abrupt close holding {dropped} unacked messages; down for {downtime:?}"),
        );
        SessionEnd::Killed { downtime }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadWriter;
    use crate::profile::{PriorityMode, PrioritySettings};
    use tokio::net::{TcpListener, TcpStream};

    fn frames(naming: &EmitterNaming, counters: std::ops::Range<u64>) -> BytesMut {
        let writer = PayloadWriter::new(&naming.id(0), ChecksumKind::Fnv);
        let mut out = BytesMut::new();
        let mut payload = Vec::new();
        for c in counters {
            writer.write(unix_nanos_now(), c, 200, &mut payload);
            logdist_wire::encode_frame(3, &payload, &mut out);
        }
        out
    }

    /// Wait (bounded) until `cond` holds: the analyzer commits on its own task,
    /// possibly after the test has already seen the ack on the wire.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn read_word(s: &mut TcpStream) -> u32 {
        let mut w = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut w))
            .await
            .expect("a control word within 5 s")
            .unwrap();
        u32::from_be_bytes(w)
    }

    /// The analyzer acks every N messages and when idle, counts messages only
    /// once acked, and a kill throws away what it holds unacked.
    #[tokio::test]
    async fn seed_analyzer_acks_commits_and_drops_unacked_on_kill() {
        seed_analyzer_scenario(false).await;
    }

    /// The same over TLS: a TLS terminator (test certificates, client
    /// certificate required) in front of the fake distributor.
    #[tokio::test]
    async fn seed_analyzer_over_mutual_tls() {
        seed_analyzer_scenario(true).await;
    }

    async fn seed_analyzer_scenario(tls: bool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pki = logdist_net::test_pki::TestPki::generate(&[]);
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write_to(dir.path()).unwrap();
        let terminator = logdist_net::test_pki::TlsTerminator::start(
            pki.server_config(true),
            listener.local_addr().unwrap(),
        )
        .await
        .unwrap();
        let (target, client) = if tls {
            let client =
                TlsClient::new(&files.client_settings(), &logdist_net::TlsNames::FLAGS).unwrap();
            (terminator.addr, Some(client))
        } else {
            (listener.local_addr().unwrap(), None)
        };
        let recorder = Arc::new(Recorder::new(1, 1));
        let naming = EmitterNaming::new(7, 1);
        let settings = AnalyzerGroup {
            count: 1,
            weight: 0.25,
            handshake: Handshake::Seed,
            format: AnalyzerFormat::Frame,
            ack_every: 3,
            ack_idle: Duration::from_millis(300),
            drop_every: None,
        };
        let ctx = AnalyzerContext {
            target,
            recorder: recorder.clone(),
            checksum: ChecksumKind::Fnv,
            naming: naming.clone(),
            plan: PriorityPlan::new(
                &PrioritySettings {
                    mode: PriorityMode::Single,
                    levels: vec![3],
                    weights: vec![],
                },
                1,
            ),
            formats: vec![crate::syslog::EmitterFormat::Frame],
            max_frame_bytes: 1 << 20,
            hello_id_prefix: "t-".into(),
            connect_timeout: Duration::from_secs(5),
            tls: client,
            token: None,
            island: None,
        };
        let handle = spawn(0, settings, ctx);
        let (mut conn, _) = listener.accept().await.unwrap();
        assert_eq!(f32::from_bits(read_word(&mut conn).await), 0.25);

        conn.write_all(&frames(&naming, 0..3)).await.unwrap();
        // Ack after 3 (sign bit set, cumulative count).
        assert_eq!(read_word(&mut conn).await, 0x8000_0003);
        // Below `ack_every`: the idle ack.
        conn.write_all(&frames(&naming, 3..5)).await.unwrap();
        assert_eq!(read_word(&mut conn).await, 0x8000_0005);
        eventually("0..5 are committed", || recorder.all_received(&[5])).await;

        // Two more arrive; kill before the idle ack: both must be dropped.
        // (A kill waits until the analyzer holds something unacked.)
        conn.write_all(&frames(&naming, 5..7)).await.unwrap();
        handle.send(AnalyzerCommand::Kill {
            downtime: Duration::ZERO,
        });
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "no ack for the held messages: {rest:?}");
        eventually("the kill is recorded", || {
            recorder.lock().analyzers[0].kills == 1
        })
        .await;
        {
            let s = recorder.lock();
            assert!(s.analyzers[0].dropped_unacked >= 1);
            // Only 0..5 count as processed: the two held ones are missing.
            let a = s.ledger.account(0, 7);
            assert_eq!((a.received, a.lost), (5, 2));
        }

        // It comes back, and the redelivered messages count once.
        let (mut conn, _) = listener.accept().await.unwrap();
        assert_eq!(f32::from_bits(read_word(&mut conn).await), 0.25);
        conn.write_all(&frames(&naming, 5..7)).await.unwrap();
        assert_eq!(read_word(&mut conn).await, 0x8000_0002);
        eventually("5..7 are committed", || recorder.all_received(&[7])).await;
        let a = recorder.lock().ledger.account(0, 7);
        assert_eq!((a.received, a.lost, a.duplicated), (7, 0, 0));

        // A kill while idle (nothing unacked, no traffic) still happens, once
        // its wait for unacked messages runs out (1 s).
        handle.send(AnalyzerCommand::Kill {
            downtime: Duration::ZERO,
        });
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "an idle analyzer was not killed within 3 s");
        eventually("the idle kill is recorded", || {
            recorder.lock().analyzers[0].kills == 2
        })
        .await;
        handle.send(AnalyzerCommand::Stop);
        tokio::time::timeout(Duration::from_secs(5), handle.task)
            .await
            .unwrap()
            .unwrap();
        // Both connections it was served on went through TLS when asked for
        // (a third, after the idle kill, may be under way at the stop).
        if tls {
            assert!(terminator.accepted() >= 2, "{}", terminator.accepted());
        } else {
            assert_eq!(terminator.accepted(), 0);
        }
        assert_eq!(terminator.failed(), 0);
    }
}
