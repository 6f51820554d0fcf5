//! `logdist dead-letter replay`: sends dead-lettered messages back into a
//! distributor, each with its original priority, and takes out of the file
//! only what the distributor accepted.
//!
//! The file may belong to a running distributor, so it is first renamed
//! aside (the distributor opens it afresh for every batch it writes, so its
//! next dead letters start a new file). Then the renamed file's lock is taken
//! once: a distributor that opened the file before the rename has finished
//! appending by then, and will not append to it again (see the lock protocol
//! in [`super::dead_letter`]), so one read gets every record. Every record not
//! accepted is appended back to the live file, under the same protocol.
//! Nothing is removed unless it was sent.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use logdist_net::TlsClient;
use logdist_net::tls::split_host_port;
use logdist_wire::{DeadLetterRecord, MessageField, Origin, encode_frame, encode_octet_counted};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::dead_letter;
use crate::cli::ReplayTarget;

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records sent and accepted (removed from the file).
    pub replayed: usize,
    /// Records kept in the file: not sent, refused, or unreadable.
    pub kept: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The TLS settings cannot be used (nothing was read or sent).
    #[error("{0}")]
    Tls(#[from] logdist_net::TlsError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot put unsent records back into {path}: {source}; they are in {aside}")]
    Restore {
        path: PathBuf,
        aside: PathBuf,
        source: io::Error,
    },
}

/// One record, encoded for the emitter protocol.
struct Outgoing {
    /// The record's line in the file, to write back if it is not accepted.
    line: String,
    bytes: Vec<u8>,
    /// NDJSON messages get an ack line on acking listeners; frames do not.
    acked: bool,
}

/// Replays `file` into the emitter listener at `target`: an address
/// (`"host:port"`, plain TCP), or a [`ReplayTarget`] with its TLS settings.
/// Records with no priority (`null` or missing) that are sent as binary
/// frames get `default_priority`; NDJSON ones go as their original line, for
/// the target to give them a priority as it does any new line. TLS settings
/// that cannot be used are an error before the file is touched.
pub async fn replay(
    file: &Path,
    target: impl Into<ReplayTarget>,
    timeout: Duration,
    default_priority: u8,
) -> Result<ReplayReport, ReplayError> {
    let target = target.into();
    let tls = target.tls_client()?;
    let aside = aside_path(file);
    let read = {
        let (file, aside) = (file.to_owned(), aside.clone());
        blocking(move || take_aside(&file, &aside)).await?
    };
    let Some(text) = read else {
        return Ok(ReplayReport::default());
    };

    let mut keep: Vec<String> = Vec::new();
    let mut outgoing: Vec<Outgoing> = Vec::new();
    // All of it, an unterminated last line too: no writer will finish it.
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match encode(line, default_priority) {
            Ok((bytes, acked)) => outgoing.push(Outgoing {
                line: line.to_string(),
                bytes,
                acked,
            }),
            Err(reason) => {
                tracing::warn!(line = number + 1, %reason, "dead-letter record cannot be replayed; kept");
                keep.push(line.to_string());
            }
        }
    }

    let address = target.address.as_str();
    let sending = send(address, tls.as_ref(), timeout, &outgoing);
    let accepted = match tokio::time::timeout(timeout, sending).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(err)) => {
            tracing::error!(target = address, %err, "replay failed; nothing sent is taken out of the file");
            vec![false; outgoing.len()]
        }
        Err(_) => {
            tracing::error!(
                target = address,
                ?timeout,
                "replay timed out; nothing sent is taken out of the file"
            );
            vec![false; outgoing.len()]
        }
    };
    let mut report = ReplayReport::default();
    for (record, ok) in outgoing.into_iter().zip(accepted) {
        if ok {
            report.replayed += 1;
        } else {
            keep.push(record.line);
        }
    }

    report.kept = keep.len();
    let (file, aside) = (file.to_owned(), aside);
    blocking(move || restore(&file, &aside, &keep)).await?;
    Ok(report)
}

/// Runs blocking file work (it may wait for a writer's lock) off the runtime.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// Renames `file` to `aside` and reads all of it (None: there is no file).
fn take_aside(file: &Path, aside: &Path) -> Result<Option<String>, ReplayError> {
    match std::fs::rename(file, aside) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReplayError::Read {
                path: file.to_owned(),
                source,
            });
        }
    }
    dead_letter::read_aside(aside)
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
        })
        .map(Some)
        .map_err(|source| ReplayError::Read {
            path: aside.to_owned(),
            source,
        })
}

fn aside_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".replaying-{}", std::process::id()));
    file.with_file_name(name)
}

/// Appends `keep` to the live file and removes the renamed one.
fn restore(file: &Path, aside: &Path, keep: &[String]) -> Result<(), ReplayError> {
    let failed = |source| ReplayError::Restore {
        path: file.to_owned(),
        aside: aside.to_owned(),
        source,
    };
    if !keep.is_empty() {
        let mut text = keep.join("\n");
        text.push('\n');
        dead_letter::append(file, text.as_bytes()).map_err(failed)?;
    }
    std::fs::remove_file(aside).map_err(failed)
}

/// Encodes one record: NDJSON-born messages as their original line (with
/// `"priority"` added when the line has none, so the priority survives
/// whatever level table the target uses; unchanged if the record has no
/// priority either), syslog messages as received with octet counting (the
/// target gives them the priority of their severity; they are acknowledged
/// like lines), everything else as a binary frame, at `default_priority` if
/// the record has none.
fn encode(line: &str, default_priority: u8) -> Result<(Vec<u8>, bool), String> {
    let record = DeadLetterRecord::parse(line.as_bytes())
        .map_err(|err| format!("not a dead-letter record: {err}"))?;
    if record.origin == Origin::Ndjson
        && let Some(MessageField::Json(raw)) = &record.message
        && raw.get().starts_with('{')
    {
        let mut bytes = match record.priority {
            Some(priority) => with_priority(raw.get(), priority),
            None => raw.get().to_string(),
        }
        .into_bytes();
        bytes.push(b'\n');
        return Ok((bytes, true));
    }
    let payload = record.payload().map_err(|err| err.to_string())?;
    if record.origin == Origin::Syslog {
        // As received, octet-counted; the target maps its severity again.
        let mut framed = BytesMut::new();
        encode_octet_counted(&payload, &mut framed);
        return Ok((framed.to_vec(), true));
    }
    let mut frame = BytesMut::new();
    encode_frame(
        record.priority.unwrap_or(default_priority),
        &payload,
        &mut frame,
    );
    Ok((frame.to_vec(), false))
}

fn with_priority(object: &str, priority: u8) -> String {
    #[derive(Deserialize)]
    struct Probe {
        priority: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Probe>(object) {
        Ok(Probe { priority: Some(_) }) => object.to_string(),
        _ => {
            let rest = object[1..].trim_start();
            let separator = if rest.starts_with('}') { "" } else { "," };
            format!("{{\"priority\":{priority}{separator}{rest}")
        }
    }
}

/// Sends every record (over TLS with `tls`), closes the write side, and
/// reads until the distributor closes: it does so only after taking in
/// everything it read. Returns, per record, whether it was accepted (an error
/// ack means refused).
async fn send(
    target: &str,
    tls: Option<&TlsClient>,
    timeout: Duration,
    outgoing: &[Outgoing],
) -> io::Result<Vec<bool>> {
    let (host, port) = split_host_port(target).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--target {target:?} is not HOST:PORT"),
        )
    })?;
    let stream = logdist_net::connect(host, port, tls, timeout).await?;
    let (reader, mut writer) = stream.into_split();
    let acks = tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        let mut statuses = Vec::new();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => statuses.push(line.contains("\"status\":\"ok\"")),
                Ok(None) => break,
                // A TLS peer that closes without close_notify: the end, as a
                // FIN is over plain TCP (the ack count is checked below).
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(err) => return Err(err),
            }
        }
        io::Result::Ok(statuses)
    });
    let mut buffer = Vec::with_capacity(64 * 1024);
    for record in outgoing {
        buffer.extend_from_slice(&record.bytes);
        if buffer.len() >= 64 * 1024 {
            writer.write_all(&buffer).await?;
            buffer.clear();
        }
    }
    writer.write_all(&buffer).await?;
    writer.shutdown().await?;
    let statuses = acks.await.map_err(io::Error::other)??;

    // On an acking listener every NDJSON record has a status line, in order;
    // on a plain one there are none and a clean close means all were taken.
    let ndjson = outgoing.iter().filter(|r| r.acked).count();
    if !statuses.is_empty() && statuses.len() != ndjson {
        return Err(io::Error::other(format!(
            "expected {ndjson} ack lines, got {}",
            statuses.len()
        )));
    }
    let mut statuses = statuses.into_iter();
    Ok(outgoing
        .iter()
        .map(|r| !r.acked || statuses.next().unwrap_or(true))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_is_added_only_when_missing() {
        assert_eq!(
            with_priority(r#"{"level":"ERROR"}"#, 1),
            r#"{"priority":1,"level":"ERROR"}"#
        );
        assert_eq!(with_priority("{}", 7), r#"{"priority":7}"#);
        assert_eq!(
            with_priority(r#"{"priority":9,"m":1}"#, 3),
            r#"{"priority":9,"m":1}"#
        );
    }

    #[test]
    fn records_encode_back_to_their_wire_form() {
        let (bytes, acked) =
            encode(r#"{"message":{"level":"WARN","msg":"x"},"origin":"ndjson","priority":2,"attempts":4,"final_error":"e","failed_at":"t"}"#, 3).unwrap();
        assert!(acked);
        assert_eq!(
            bytes,
            b"{\"priority\":2,\"level\":\"WARN\",\"msg\":\"x\"}\n"
        );

        let (bytes, acked) =
            encode(r#"{"message":"hello","origin":"frame","priority":9,"attempts":1,"final_error":"e","failed_at":"t"}"#, 3).unwrap();
        assert!(!acked);
        assert_eq!(bytes, b"\x00\x00\x00\x0a\x09hello");

        let (bytes, _) =
            encode(r#"{"payload_b64":"/wA=","origin":"frame","priority":0,"attempts":1,"final_error":"e","failed_at":"t"}"#, 3).unwrap();
        assert_eq!(bytes, b"\x00\x00\x00\x07\x00\xff\x00");

        let (bytes, acked) = encode(
            r#"{"message":"<11>1 - h app - - - disk full","origin":"syslog","priority":1}"#,
            3,
        )
        .unwrap();
        assert!(acked, "syslog messages are acknowledged like lines");
        assert_eq!(bytes, b"29 <11>1 - h app - - - disk full");

        assert!(encode("not json", 3).is_err());
        assert!(encode(r#"{"origin":"frame","priority":0}"#, 3).is_err());
    }

    #[test]
    fn records_without_a_priority_go_as_new_lines_or_at_the_default() {
        let (bytes, acked) = encode(
            r#"{"message":{"level":"WARN","m":1},"origin":"ndjson","priority":null}"#,
            6,
        )
        .unwrap();
        assert!(acked);
        assert_eq!(bytes, b"{\"level\":\"WARN\",\"m\":1}\n");
        let (bytes, acked) =
            encode(r#"{"message":"hi","origin":"frame","priority":null}"#, 6).unwrap();
        assert!(!acked);
        assert_eq!(bytes, b"\x00\x00\x00\x07\x06hi");
        let (bytes, _) = encode(r#"{"payload_b64":"/w==","origin":"frame"}"#, 6).unwrap();
        assert_eq!(bytes, b"\x00\x00\x00\x06\x06\xff");
    }
}
