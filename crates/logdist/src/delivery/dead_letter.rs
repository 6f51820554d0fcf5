//! The dead-letter file: one NDJSON object per message that could not be delivered.
//!
//! Writes happen on a dedicated thread so no async task ever blocks on the disk,
//! and so a burst of dead letters is batched into few writes.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::SystemTime;

use base64::Engine;
use logdist_router::Envelope;
use logdist_wire::Origin;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::stats::Stats;

/// Final error recorded for messages still held when the grace period ends.
pub const SHUTDOWN_ERROR: &str = "shutdown";

/// A message that could not be delivered, and why.
struct DeadLetter {
    envelope: Envelope,
    final_error: Arc<str>,
    failed_at: SystemTime,
}

enum Command {
    Write(DeadLetter),
    /// Flush and stop; sent once by [`DeadLetterFile::close`].
    Close,
}

/// Handle for sending messages to the dead-letter file. Cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    tx: Sender<Command>,
    stats: Arc<Stats>,
}

/// Owns the writer thread; [`DeadLetterFile::close`] flushes and joins it.
pub struct DeadLetterFile {
    handle: DeadLetters,
    thread: JoinHandle<()>,
}

impl DeadLetterFile {
    /// Starts the writer. The file is opened (appending) for each batch of dead
    /// letters: a distributor that never dead-letters leaves no file behind,
    /// and `logdist dead-letter replay` can move the file aside safely.
    pub fn start(path: PathBuf, stats: Arc<Stats>) -> DeadLetterFile {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("dead-letters".into())
            .spawn({
                let stats = stats.clone();
                move || write_loop(path, rx, &stats)
            })
            .expect("spawn dead-letter thread");
        DeadLetterFile {
            handle: DeadLetters { tx, stats },
            thread,
        }
    }

    pub fn handle(&self) -> DeadLetters {
        self.handle.clone()
    }

    /// Waits until every dead letter sent so far is on disk. Blocks: call it
    /// from a blocking context.
    pub fn close(self) {
        let _ = self.handle.tx.send(Command::Close);
        if self.thread.join().is_err() {
            tracing::error!("dead-letter writer thread panicked");
        }
    }
}

impl DeadLetters {
    pub fn send(&self, envelope: Envelope, final_error: Arc<str>) {
        let letter = DeadLetter {
            envelope,
            final_error,
            failed_at: SystemTime::now(),
        };
        if self.tx.send(Command::Write(letter)).is_err() {
            // Only after shutdown closed the file; nothing should still send then.
            tracing::error!("dead letter arrived after the dead-letter file was closed");
            self.stats.dead_letter_failures.add(1);
        }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<MessageField<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
    origin: &'static str,
    priority: u8,
    attempts: usize,
    /// The analyzers whose connections failed holding it, oldest first.
    analyzers: Vec<&'a str>,
    final_error: &'a str,
    failed_at: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum MessageField<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

fn write_loop(path: PathBuf, rx: Receiver<Command>, stats: &Stats) {
    let mut text = Vec::with_capacity(4096);
    let mut closing = false;
    while !closing {
        let mut count = 0u64;
        text.clear();
        for command in std::iter::once(rx.recv()).chain(rx.try_iter().map(Ok)) {
            match command {
                Ok(Command::Write(letter)) => {
                    encode(&letter, &mut text);
                    count += 1;
                }
                Ok(Command::Close) | Err(_) => {
                    closing = true;
                    break;
                }
            }
        }
        if count == 0 {
            continue;
        }
        match append(&path, &text) {
            Ok(()) => stats.dead_lettered.add(count),
            Err(err) => {
                tracing::error!(path = %path.display(), %err, lost = count, "cannot write dead-letter file");
                stats.dead_letter_failures.add(count);
            }
        }
    }
}

/// Appends and syncs: a dead letter is the last copy of a message.
fn append(path: &PathBuf, text: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(text)?;
    file.sync_data()
}

fn encode(letter: &DeadLetter, out: &mut Vec<u8>) {
    let message = &letter.envelope.message;
    let payload = message.payload();
    let (origin, field, payload_b64) = match message.origin() {
        Origin::Ndjson => {
            // Accepted NDJSON lines were validated as JSON objects on the way in.
            let json = std::str::from_utf8(&payload)
                .ok()
                .and_then(|s| serde_json::from_str::<&RawValue>(s).ok());
            match json {
                Some(raw) => ("ndjson", Some(MessageField::Json(raw)), None),
                None => ("ndjson", None, Some(b64(&payload))),
            }
        }
        Origin::Frame => match std::str::from_utf8(&payload) {
            Ok(text) => ("frame", Some(MessageField::Text(text)), None),
            Err(_) => ("frame", None, Some(b64(&payload))),
        },
    };
    let record = Record {
        message: field,
        payload_b64,
        origin,
        priority: message.priority(),
        attempts: letter.envelope.attempts(),
        analyzers: letter.envelope.tried().iter().map(|id| &**id).collect(),
        final_error: &letter.final_error,
        failed_at: humantime::format_rfc3339_millis(letter.failed_at).to_string(),
    };
    serde_json::to_writer(&mut *out, &record).expect("serializing to a Vec cannot fail");
    out.push(b'\n');
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
