//! The dead-letter file: one NDJSON object per message that could not be
//! delivered, a [`DeadLetterRecord`] per line (protocol.md §4).
//!
//! Writes happen on a dedicated thread so no async task ever blocks on the disk,
//! and so a burst of dead letters is batched into few writes.
//!
//! # Sharing the file with replay
//!
//! `logdist dead-letter replay` renames the file aside while distributors may
//! be writing it, reads the renamed file, and deletes it. Writers and replay
//! coordinate with an exclusive advisory lock on the file (`flock(2)`, through
//! [`File::lock`]):
//!
//! * A writer ([`append`]) opens the path for appending, takes the lock, and
//!   checks that the file it holds is still the one at the path (same device
//!   and inode). If the path is gone or is another file, the file it holds
//!   was moved aside: it closes it and starts over. Holding the lock on the
//!   file at the path, it appends whole lines, syncs, and closes the file,
//!   which releases the lock.
//! * Replay renames the file aside, then takes the lock on the renamed file
//!   once ([`read_aside`]). A writer that opened the file before the rename
//!   has by then either finished its append, or will find, when it gets the
//!   lock, that the file is no longer at the path. So nothing is ever
//!   appended to the renamed file after replay got its lock, and one read
//!   then sees all of it. Replay puts records back with [`append`] too.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::SystemTime;

use logdist_router::Envelope;
use logdist_wire::DeadLetterRecord;

use crate::custody::Custody;
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
    /// Sent and not yet written (or failed) by the writer thread.
    pending: Arc<AtomicU64>,
    /// Keeps messages for the next start instead of dead-lettering them at
    /// shutdown (disk mode).
    custody: Custody,
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
    /// A message leaves `custody` once its record is synced here.
    pub fn start(path: PathBuf, stats: Arc<Stats>, custody: Custody) -> DeadLetterFile {
        let (tx, rx) = channel();
        let pending = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("dead-letters".into())
            .spawn({
                let (stats, pending, custody) = (stats.clone(), pending.clone(), custody.clone());
                move || write_loop(path, rx, &stats, &pending, &custody)
            })
            .expect("spawn dead-letter thread");
        DeadLetterFile {
            handle: DeadLetters {
                tx,
                stats,
                pending,
                custody,
            },
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
    /// Dead-letters `envelope`; at shutdown (`final_error` is
    /// [`SHUTDOWN_ERROR`]) in disk mode, leaves it in the spool instead.
    pub fn send(&self, envelope: Envelope, final_error: Arc<str>) {
        if &*final_error == SHUTDOWN_ERROR && self.custody.keep_at_shutdown(&envelope) {
            return;
        }
        let letter = DeadLetter {
            envelope,
            final_error,
            failed_at: SystemTime::now(),
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Command::Write(letter)).is_err() {
            // Only after shutdown closed the file; nothing should still send then.
            self.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::error!("dead letter arrived after the dead-letter file was closed");
            self.stats.dead_letter_failures.add(1);
        }
    }

    /// Counts every dead letter not written yet as a failure, and returns
    /// how many: for shutdown, when it cannot wait for the disk any longer.
    /// (Those the writer still manages to write before the process ends are
    /// in the file all the same.)
    pub fn give_up_pending(&self) -> u64 {
        let lost = self.pending.swap(0, Ordering::AcqRel);
        self.stats.dead_letter_failures.add(lost);
        lost
    }
}

/// Most text encoded before it is written: bounds the copy the records are
/// (the letters themselves are charged to the memory budget until written).
const BATCH_TEXT: usize = 1 << 20;

fn write_loop(
    path: PathBuf,
    rx: Receiver<Command>,
    stats: &Stats,
    pending: &AtomicU64,
    custody: &Custody,
) {
    let mut text = Vec::with_capacity(4096);
    // Kept until their records are synced: a message leaves logdist's
    // custody, and gives its memory back to the budget, only then.
    let mut letters = Vec::new();
    let mut closing = false;
    while !closing {
        text.clear();
        letters.clear();
        let more = std::iter::once(rx.recv()).chain(rx.try_iter().map(Ok));
        for command in more {
            match command {
                Ok(Command::Write(letter)) => {
                    encode(&letter, &mut text);
                    letters.push(letter);
                    if text.len() >= BATCH_TEXT {
                        break;
                    }
                }
                Ok(Command::Close) | Err(_) => {
                    closing = true;
                    break;
                }
            }
        }
        let count = letters.len() as u64;
        if count == 0 {
            continue;
        }
        let written = append(&path, &text);
        // Not below zero: shutdown may have given up on these already.
        let _ = pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            Some(n.saturating_sub(count))
        });
        match written {
            Ok(()) => {
                stats.dead_lettered.add(count);
                custody.done(letters.iter().map(|letter| &letter.envelope));
            }
            Err(err) => {
                tracing::error!(path = %path.display(), %err, lost = count, "cannot write dead-letter file");
                stats.dead_letter_failures.add(count);
            }
        }
    }
}

fn encode(letter: &DeadLetter, out: &mut Vec<u8>) {
    let envelope = &letter.envelope;
    DeadLetterRecord::new(
        &envelope.message,
        envelope.tried().iter().map(|id| id.to_string()).collect(),
        letter.final_error.to_string(),
        letter.failed_at,
    )
    .write_line(out);
}

/// Appends `text`, whole lines, to the dead-letter file at `path` (creating
/// it), under the lock protocol of the module docs, and syncs it: a dead
/// letter is the last copy of a message. Blocks while another process holds
/// the file's lock.
pub fn append(path: &Path, text: &[u8]) -> io::Result<()> {
    let mut file = open_locked(path, || {})?;
    file.write_all(text)?;
    file.sync_data()
    // Dropping `file` closes it, which releases the lock.
}

/// Opens the file at `path` for appending and locks it, making sure the file
/// locked is the one at `path` (not one moved aside meanwhile).
/// `before_lock` runs between opening and locking, for tests.
fn open_locked(path: &Path, mut before_lock: impl FnMut()) -> io::Result<File> {
    loop {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        before_lock();
        if let Err(err) = file.lock() {
            // A file system without locks: appending unlocked beats losing
            // the last copy of a message (only a concurrent replay is at risk).
            tracing::warn!(path = %path.display(), %err, "cannot lock the dead-letter file; appending without the lock");
        }
        if is_at(&file, path)? {
            return Ok(file);
        }
        // Renamed aside between our open and our lock: whoever did it reads
        // the renamed file; our lines belong in a new one at `path`.
    }
}

/// Whether `file` is the file at `path` now.
fn is_at(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(held.dev() == now.dev() && held.ino() == now.ino()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Reads a dead-letter file that was renamed away from the path writers use,
/// all of it: takes the file's lock first, so any append that started before
/// the rename is complete, and no writer appends to it any more.
pub fn read_aside(aside: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(aside)?;
    file.lock()?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use logdist_wire::Message;

    /// The bytes the writer produced before the record type moved to
    /// logdist-wire; existing tools read them.
    #[test]
    fn records_are_written_byte_for_byte_as_before() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_737_837_045_123);
        let letter = |message: Message, tried: &[&str]| {
            let mut envelope = Envelope::new(message);
            for id in tried {
                envelope.record_attempt(&Arc::from(*id));
            }
            DeadLetter {
                envelope,
                final_error: Arc::from("write failed: \"x\"\n"),
                failed_at: at,
            }
        };
        let letters = [
            letter(
                Message::from_ndjson_line(
                    1,
                    Bytes::from_static(
                        b" \t{\"level\":\"ERROR\", \"msg\" : \"disk \\\"full\\\" \\u00e9\",\"\xc3\xa9\":[1,2.50,null]}  ",
                    ),
                ),
                &["a1", "a2"],
            ),
            letter(Message::from_ndjson_line(7, Bytes::from_static(b"{}")), &[]),
            letter(
                Message::from_ndjson_line(4, Bytes::from_static(b"not json")),
                &["x"],
            ),
            letter(
                Message::from_frame(Bytes::from_static(
                    b"\0\0\0\x14\x03hi \"x\"\n\t \xc3\xa9 \x01\x7f",
                )),
                &["a\"1"],
            ),
            letter(
                Message::from_frame(Bytes::from_static(b"\0\0\0\x08\xff\xff\x00\x80")),
                &[],
            ),
            letter(Message::from_frame(Bytes::from_static(b"\0\0\0\x05\x00")), &["z"]),
        ];
        let mut out = Vec::new();
        for letter in &letters {
            encode(letter, &mut out);
        }
        assert_eq!(String::from_utf8(out).unwrap(), GOLDEN);
    }

    const GOLDEN: &str = concat!(
        "{\"message\":{\"level\":\"ERROR\", \"msg\" : \"disk \\\"full\\\" \\u00e9\",\"\u{e9}\":[1,2.50,null]},\"origin\":\"ndjson\",\"priority\":1,\"attempts\":2,\"analyzers\":[\"a1\",\"a2\"],\"final_error\":\"write failed: \\\"x\\\"\\n\",\"failed_at\":\"2025-01-25T20:30:45.123Z\"}\n",
        "{\"message\":{},\"origin\":\"ndjson\",\"priority\":7,\"attempts\":0,\"analyzers\":[],\"final_error\":\"write failed: \\\"x\\\"\\n\",\"failed_at\":\"2025-01-25T20:30:45.123Z\"}\n",
        "{\"payload_b64\":\"bm90IGpzb24=\",\"origin\":\"ndjson\",\"priority\":4,\"attempts\":1,\"analyzers\":[\"x\"],\"final_error\":\"write failed: \\\"x\\\"\\n\",\"failed_at\":\"2025-01-25T20:30:45.123Z\"}\n",
        "{\"message\":\"hi \\\"x\\\"\\n\\t \u{e9} \\u0001\u{7f}\",\"origin\":\"frame\",\"priority\":3,\"attempts\":1,\"analyzers\":[\"a\\\"1\"],\"final_error\":\"write failed: \\\"x\\\"\\n\",\"failed_at\":\"2025-01-25T20:30:45.123Z\"}\n",
        "{\"payload_b64\":\"/wCA\",\"origin\":\"frame\",\"priority\":255,\"attempts\":0,\"analyzers\":[],\"final_error\":\"write failed: \\\"x\\\"\\n\",\"failed_at\":\"2025-01-25T20:30:45.123Z\"}\n",
        "{\"message\":\"\",\"origin\":\"frame\",\"priority\":0,\"attempts\":1,\"analyzers\":[\"z\"],\"final_error\":\"write failed: \\\"x\\\"\\n\",\"failed_at\":\"2025-01-25T20:30:45.123Z\"}\n",
    );

    #[test]
    fn a_writer_whose_file_was_moved_aside_before_it_locked_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.ndjson");
        let aside = dir.path().join("dead.ndjson.replaying");
        std::fs::write(&path, "old\n").unwrap();
        // Replay renames the file right after this writer opened it.
        let mut renamed = false;
        let mut file = open_locked(&path, || {
            if !renamed {
                std::fs::rename(&path, &aside).unwrap();
                renamed = true;
            }
        })
        .unwrap();
        assert!(renamed);
        file.write_all(b"new\n").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "old\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");

        // Replaced by another file: the same.
        std::fs::rename(&path, &aside).unwrap();
        let mut replaced = false;
        let mut file = open_locked(&path, || {
            if !replaced {
                std::fs::rename(&path, dir.path().join("elsewhere")).unwrap();
                std::fs::write(&path, "other\n").unwrap();
                replaced = true;
            }
        })
        .unwrap();
        file.write_all(b"more\n").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "other\nmore\n");
    }
}
