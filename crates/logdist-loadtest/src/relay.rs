//! The bare relay of `max --baseline relay`: what logdist's job costs with
//! everything but moving the bytes taken away. It accepts emitters and
//! analyzers with logdist's handshakes (docs/protocol.md 2.3, 3.1), cuts the
//! emitters' binary frames apart and hands each whole frame to the next
//! analyzer in turn, as analyzers expect them (frames, byte for byte), and
//! reads and drops the analyzers' acks. No queues, weights, priorities or
//! accounting: a connection's frames are written to the analyzers before it
//! is read again, so a slow analyzer slows the emitters through TCP, as in
//! logdist. What it sustains is how much this machine (and the load tester
//! on it) can carry, the yardstick for logdist's maximum.
//!
//! It runs as a child process of the load tester (`logdist-loadtest relay`,
//! a hidden subcommand), so its CPU, context switches and system calls are
//! measured apart from the tester's, as logdist's are. One thread per
//! connection with blocking sockets: nothing between a read and the writes
//! but cutting frames, and on two cores no event loop to pay for.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use clap::Parser;
use logdist_wire::{AnalyzerFormat, ErrorCode, Handshake, HandshakeDecoder, error_reply, hello_ok};
use parking_lot::{Mutex, RwLock};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::distributor_process::{StopOutcome, log_tail, terminate};
use crate::proc_stats;

/// The hidden subcommand that runs the relay.
pub const RELAY_COMMAND: &str = "relay";

/// Frames larger than this close the emitter's connection (logdist's
/// protocol cap, docs/protocol.md 2.1).
const MAX_FRAME_BYTES: usize = 128 << 20;
/// How much one read takes (and the start size of an emitter's buffer).
const READ_BYTES: usize = 256 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "logdist-loadtest relay",
    about = "The bare relay the load tester's `--baseline relay` measures logdist against (started by it)."
)]
struct RelayArgs {
    /// Where emitters connect (binary frames).
    #[arg(long, default_value = "127.0.0.1:0")]
    emitters: SocketAddr,
    /// Where analyzers connect (seed handshake or JSON hello, format frame).
    #[arg(long, default_value = "127.0.0.1:0")]
    analyzers: SocketAddr,
    /// Written once listening: `{"pid":..,"emitters":"ip:port","analyzers":"ip:port"}`.
    #[arg(long)]
    ready_file: PathBuf,
}

/// What the relay writes to its ready file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Ready {
    pid: u32,
    emitters: SocketAddr,
    analyzers: SocketAddr,
}

/// `logdist-loadtest relay ...`: run until SIGTERM or SIGINT; the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let args = RelayArgs::parse_from(args);
    // Signals are taken by `sigwait` below: blocked here, before any thread
    // starts, so every thread inherits the mask.
    let signals = termination_signals();
    // SAFETY: a valid, initialised signal set; no old mask wanted.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut());
    }
    let relay = match Relay::bind(args.emitters, args.analyzers) {
        Ok(relay) => relay,
        Err(e) => {
            eprintln!("logdist-loadtest relay: {e}");
            return 2;
        }
    };
    let ready = Ready {
        pid: std::process::id(),
        emitters: relay.emitter_addr,
        analyzers: relay.analyzer_addr,
    };
    if let Err(e) = write_ready(&args.ready_file, &ready) {
        eprintln!("logdist-loadtest relay: {e}");
        return 2;
    }
    relay.start();
    let mut signal = 0;
    // SAFETY: waits for one of the blocked signals of a valid set.
    unsafe {
        libc::sigwait(&signals, &mut signal);
    }
    0
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before it is used.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Written to a temporary name and renamed, so a reader never sees half of it.
fn write_ready(path: &Path, ready: &Ready) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string(ready).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// An analyzer connection, written to by every emitter's thread in turn.
struct Outbound {
    stream: Mutex<TcpStream>,
}

/// The analyzers connected now, in the order they came.
#[derive(Default)]
struct Analyzers {
    connected: RwLock<Vec<Arc<Outbound>>>,
}

impl Analyzers {
    fn snapshot(&self) -> Vec<Arc<Outbound>> {
        self.connected.read().clone()
    }

    fn remove(&self, gone: &Arc<Outbound>) {
        self.connected.write().retain(|a| !Arc::ptr_eq(a, gone));
    }
}

struct Relay {
    emitters: TcpListener,
    analyzers: TcpListener,
    emitter_addr: SocketAddr,
    analyzer_addr: SocketAddr,
}

impl Relay {
    fn bind(emitters: SocketAddr, analyzers: SocketAddr) -> Result<Relay, String> {
        let bind = |addr| TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"));
        let (emitters, analyzers) = (bind(emitters)?, bind(analyzers)?);
        let addr = |l: &TcpListener| l.local_addr().map_err(|e| e.to_string());
        Ok(Relay {
            emitter_addr: addr(&emitters)?,
            analyzer_addr: addr(&analyzers)?,
            emitters,
            analyzers,
        })
    }

    /// Accept on both listeners, a thread per connection, until the process
    /// ends. Returns the analyzers connected, as they come and go.
    fn start(self) -> Arc<Analyzers> {
        let connected = Arc::new(Analyzers::default());
        let analyzers = connected.clone();
        let to_analyzers = connected.clone();
        std::thread::spawn(move || {
            for stream in self.analyzers.incoming().flatten() {
                let connected = to_analyzers.clone();
                std::thread::spawn(move || serve_analyzer(stream, &connected));
            }
        });
        std::thread::spawn(move || {
            for stream in self.emitters.incoming().flatten() {
                let connected = connected.clone();
                std::thread::spawn(move || serve_emitter(stream, &connected));
            }
        });
        analyzers
    }
}

/// The handshake (seed weight word, or JSON hello answered `ok`), then the
/// acks are read and dropped until the analyzer goes.
fn serve_analyzer(mut stream: TcpStream, connected: &Analyzers) {
    let _ = stream.set_nodelay(true);
    if let Err(why) = handshake(&mut stream) {
        tracing::warn!("relay: analyzer handshake failed: {why}");
        return;
    }
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let outbound = Arc::new(Outbound {
        stream: Mutex::new(writer),
    });
    connected.connected.write().push(outbound.clone());
    let mut acks = [0u8; 4096];
    while matches!(stream.read(&mut acks), Ok(n) if n > 0) {}
    connected.remove(&outbound);
}

/// Takes the analyzer's handshake with logdist's own decoder, so the relay
/// accepts exactly what logdist accepts. Bytes read past it can only be acks
/// (an analyzer sends nothing else before its first message): dropped, as
/// every ack is.
fn handshake(stream: &mut TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut decoder = HandshakeDecoder::new();
    let mut buf = BytesMut::with_capacity(512);
    let handshake = loop {
        if let Some(handshake) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            break handshake;
        }
        let mut chunk = [0u8; 512];
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed during the handshake".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    };
    if let Handshake::Hello(hello) = handshake {
        if hello.format != AnalyzerFormat::Frame {
            let _ = stream.write_all(&error_reply(
                ErrorCode::BadHandshake,
                "the load tester's relay sends frames only",
            ));
            return Err(format!("analyzer asked for format {:?}", hello.format));
        }
        stream.write_all(hello_ok()).map_err(|e| e.to_string())?;
    }
    stream.set_read_timeout(None).map_err(|e| e.to_string())
}

/// Read frames and hand each whole frame to the next analyzer in turn.
/// Everything one read brought is written out before the next read.
fn serve_emitter(mut stream: TcpStream, connected: &Analyzers) {
    let mut buf = vec![0u8; READ_BYTES];
    let mut filled = 0;
    let mut next = 0usize;
    let mut outgoing: Vec<Vec<u8>> = Vec::new();
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let analyzers = wait_for_analyzers(connected);
        outgoing.resize_with(analyzers.len(), Vec::new);
        let mut pos = 0;
        while let Some(word) = buf[pos..filled].first_chunk::<4>() {
            let len = u32::from_be_bytes(*word) as usize;
            if !(5..=MAX_FRAME_BYTES).contains(&len) {
                tracing::warn!("relay: emitter sent a frame length of {len}; closing it");
                return;
            }
            if filled - pos < len {
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                break;
            }
            let to = next % analyzers.len();
            next = to + 1;
            outgoing[to].extend_from_slice(&buf[pos..pos + len]);
            pos += len;
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        for (analyzer, frames) in analyzers.iter().zip(&mut outgoing) {
            if frames.is_empty() {
                continue;
            }
            if analyzer.stream.lock().write_all(frames).is_err() {
                connected.remove(analyzer);
            }
            frames.clear();
        }
    }
}

/// The analyzers to send to; while there are none, the emitter waits.
fn wait_for_analyzers(connected: &Analyzers) -> Vec<Arc<Outbound>> {
    loop {
        let analyzers = connected.snapshot();
        if !analyzers.is_empty() {
            return analyzers;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The relay as the load tester's child process.
pub struct RelayProcess {
    child: Child,
    pub pid: u32,
    pub emitter_addr: SocketAddr,
    pub analyzer_addr: SocketAddr,
    pub log_path: PathBuf,
}

impl RelayProcess {
    /// Start `<this binary> relay` with its log in `results_dir/relay.log`,
    /// and wait until it listens.
    pub async fn start(results_dir: &Path, ready_timeout: Duration) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot locate own binary: {e}"))?;
        let log_path = results_dir.join("relay.log");
        let ready_path = results_dir.join("relay.ready.json");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        // As logdist: its own process group (Ctrl-C reaches the tester only),
        // and SIGTERM if the tester dies.
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .arg(RELAY_COMMAND)
            .arg("--ready-file")
            .arg(&ready_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the relay: {e}"))?;
        let pid = child.id().ok_or("the relay exited at once")?;
        let deadline = Instant::now() + ready_timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "the relay exited ({status}) before it was ready:\n{}",
                    log_tail(&log_path, 20)
                ));
            }
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                let ready: Ready = serde_json::from_str(&text)
                    .map_err(|e| format!("bad ready file {}: {e}", ready_path.display()))?;
                return Ok(RelayProcess {
                    child,
                    pid,
                    emitter_addr: ready.emitters,
                    analyzer_addr: ready.analyzers,
                    log_path,
                });
            }
            if Instant::now() >= deadline {
                return Err(format!("the relay was not ready within {ready_timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        proc_stats::status_bytes(self.pid, "VmHWM").map(|b| b as f64 / (1024.0 * 1024.0))
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    pub async fn stop(mut self) -> StopOutcome {
        terminate(&mut self.child, self.pid, Duration::from_secs(5)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(priority: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = ((5 + payload.len()) as u32).to_be_bytes().to_vec();
        f.push(priority);
        f.extend_from_slice(payload);
        f
    }

    /// Wait (bounded) until `n` analyzers are registered.
    fn wait_registered(connected: &Analyzers, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while connected.snapshot().len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} analyzers not registered"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Over real sockets: a seed analyzer and a JSON-hello one (answered
    /// `ok`) get an emitter's frames in turn, whole and unchanged, frames
    /// cut across reads included; acks are swallowed.
    #[test]
    fn frames_go_round_robin_to_the_analyzers() {
        let relay = Relay::bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let (emitter_addr, analyzer_addr) = (relay.emitter_addr, relay.analyzer_addr);
        let connected = relay.start();
        let timeout = Some(Duration::from_secs(10));

        let mut seed = TcpStream::connect(analyzer_addr).unwrap();
        seed.set_read_timeout(timeout).unwrap();
        seed.write_all(&1.0f32.to_be_bytes()).unwrap();
        wait_registered(&connected, 1);
        let mut hello = TcpStream::connect(analyzer_addr).unwrap();
        hello.set_read_timeout(timeout).unwrap();
        hello
            .write_all(b"{\"id\":\"a1\",\"weight\":1.0,\"format\":\"frame\"}\n")
            .unwrap();
        let mut reply = [0u8; 16];
        hello.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"{\"status\":\"ok\"}\n");
        wait_registered(&connected, 2);

        let frames: Vec<Vec<u8>> = (0..6u8)
            .map(|i| {
                frame(
                    i,
                    format!("payload-{i}").repeat(usize::from(i) + 1).as_bytes(),
                )
            })
            .collect();
        let mut emitter = TcpStream::connect(emitter_addr).unwrap();
        let wire: Vec<u8> = frames.concat();
        // Cut inside a frame: the relay must keep the piece for the next read.
        emitter.write_all(&wire[..7]).unwrap();
        emitter.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        emitter.write_all(&wire[7..]).unwrap();

        let expect = |stream: &mut TcpStream, indexes: [usize; 3]| {
            for i in indexes {
                let mut got = vec![0u8; frames[i].len()];
                stream.read_exact(&mut got).unwrap();
                assert_eq!(got, frames[i], "frame {i}");
            }
        };
        expect(&mut seed, [0, 2, 4]);
        expect(&mut hello, [1, 3, 5]);
        // Acks are read and dropped; the analyzer stays registered.
        seed.write_all(&0x8000_0003u32.to_be_bytes()).unwrap();
        hello.write_all(b"{\"ack\":3}\n").unwrap();
        emitter.write_all(&frame(9, b"after acks")).unwrap();
        let mut got = vec![0u8; frame(9, b"after acks").len()];
        seed.read_exact(&mut got).unwrap();
        assert_eq!(got, frame(9, b"after acks"));
    }

    /// An analyzer that wants NDJSON is refused: the relay sends frames only.
    #[test]
    fn ndjson_analyzers_are_refused() {
        let relay = Relay::bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let analyzer_addr = relay.analyzer_addr;
        let _connected = relay.start();
        let mut a = TcpStream::connect(analyzer_addr).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        a.write_all(b"{\"id\":\"n\",\"weight\":1,\"format\":\"ndjson\"}\n")
            .unwrap();
        let mut reply = String::new();
        let _ = a.read_to_string(&mut reply);
        assert!(reply.contains("\"status\":\"error\""), "{reply}");
    }
}
