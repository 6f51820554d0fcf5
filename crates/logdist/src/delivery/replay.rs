//! `logdist dead-letter replay`: sends dead-lettered messages back into a
//! distributor, each with its original priority, and takes out of the file
//! only what the distributor accepted.
//!
//! The file may belong to a running distributor, so it is first renamed
//! aside (the distributor opens it afresh for every batch it writes, so its
//! next dead letters start a new file), and every record not accepted is
//! appended back to the live file. Nothing is removed unless it was sent.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use bytes::BytesMut;
use logdist_wire::encode_frame;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot put unsent records back into {path}: {source}; they are in {aside}")]
    Restore {
        path: PathBuf,
        aside: PathBuf,
        source: io::Error,
    },
}

/// The fields of a dead-letter record that replay needs.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    payload_b64: Option<String>,
    origin: String,
    priority: u8,
}

/// One record, encoded for the emitter protocol.
struct Outgoing {
    /// The record's line in the file, to write back if it is not accepted.
    line: String,
    bytes: Vec<u8>,
    /// NDJSON messages get an ack line on acking listeners; frames do not.
    acked: bool,
}

/// Replays `file` into the emitter listener at `target`.
pub async fn replay(
    file: &Path,
    target: &str,
    timeout: Duration,
) -> Result<ReplayReport, ReplayError> {
    let aside = aside_path(file);
    match std::fs::rename(file, &aside) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(ReplayReport::default()),
        Err(source) => {
            return Err(ReplayError::Read {
                path: file.to_owned(),
                source,
            });
        }
    }
    let read = std::fs::read_to_string(&aside).map_err(|source| ReplayError::Read {
        path: aside.clone(),
        source,
    })?;
    // Only whole lines: a distributor may still be appending a batch, and its
    // unfinished last line is picked up below with whatever follows it.
    let text = &read[..read.rfind('\n').map_or(0, |end| end + 1)];

    let mut keep: Vec<String> = Vec::new();
    let mut outgoing: Vec<Outgoing> = Vec::new();
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match encode(line) {
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

    let accepted = match tokio::time::timeout(timeout, send(target, &outgoing)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(err)) => {
            tracing::error!(target, %err, "replay failed; nothing sent is taken out of the file");
            vec![false; outgoing.len()]
        }
        Err(_) => {
            tracing::error!(
                target,
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

    // Lines a distributor appended to the old file after it was read.
    if let Ok(now) = std::fs::read_to_string(&aside)
        && let Some(late) = now.get(text.len()..)
    {
        keep.extend(
            late.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    report.kept = keep.len();
    restore(file, &aside, &keep)?;
    Ok(report)
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
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(failed)?;
        let mut text = keep.join("\n");
        text.push('\n');
        out.write_all(text.as_bytes()).map_err(failed)?;
        out.sync_all().map_err(failed)?;
    }
    std::fs::remove_file(aside).map_err(failed)
}

/// Encodes one record: NDJSON-born messages as their original line (with
/// `"priority"` added when the line has none, so the priority survives
/// whatever level table the target uses), binary-born ones as binary frames.
fn encode(line: &str) -> Result<(Vec<u8>, bool), String> {
    let record: Record =
        serde_json::from_str(line).map_err(|err| format!("not a dead-letter record: {err}"))?;
    let payload = |record: &Record| -> Result<Vec<u8>, String> {
        if let Some(b64) = &record.payload_b64 {
            return base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|err| format!("bad payload_b64: {err}"));
        }
        let raw = record
            .message
            .ok_or("record has neither message nor payload_b64")?;
        // A string message is the payload itself; anything else, its JSON text.
        Ok(match serde_json::from_str::<String>(raw.get()) {
            Ok(text) => text.into_bytes(),
            Err(_) => raw.get().as_bytes().to_vec(),
        })
    };
    match (record.origin.as_str(), record.message) {
        ("ndjson", Some(raw)) if raw.get().starts_with('{') => {
            let mut bytes = with_priority(raw.get(), record.priority).into_bytes();
            bytes.push(b'\n');
            Ok((bytes, true))
        }
        ("ndjson" | "frame", _) => {
            let mut frame = BytesMut::new();
            encode_frame(record.priority, &payload(&record)?, &mut frame);
            Ok((frame.to_vec(), false))
        }
        (origin, _) => Err(format!("unknown origin {origin:?}")),
    }
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

/// Sends every record, closes the write side, and reads until the distributor
/// closes: it does so only after taking in everything it read. Returns, per
/// record, whether it was accepted (an error ack means refused).
async fn send(target: &str, outgoing: &[Outgoing]) -> io::Result<Vec<bool>> {
    let stream = TcpStream::connect(target).await?;
    let (reader, mut writer) = stream.into_split();
    let acks = tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        let mut statuses = Vec::new();
        while let Some(line) = lines.next_line().await? {
            statuses.push(line.contains("\"status\":\"ok\""));
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
            encode(r#"{"message":{"level":"WARN","msg":"x"},"origin":"ndjson","priority":2,"attempts":4,"final_error":"e","failed_at":"t"}"#).unwrap();
        assert!(acked);
        assert_eq!(
            bytes,
            b"{\"priority\":2,\"level\":\"WARN\",\"msg\":\"x\"}\n"
        );

        let (bytes, acked) =
            encode(r#"{"message":"hello","origin":"frame","priority":9,"attempts":1,"final_error":"e","failed_at":"t"}"#).unwrap();
        assert!(!acked);
        assert_eq!(bytes, b"\x00\x00\x00\x0a\x09hello");

        let (bytes, _) =
            encode(r#"{"payload_b64":"/wA=","origin":"frame","priority":0,"attempts":1,"final_error":"e","failed_at":"t"}"#).unwrap();
        assert_eq!(bytes, b"\x00\x00\x00\x07\x00\xff\x00");

        assert!(encode("not json").is_err());
        assert!(encode(r#"{"origin":"frame","priority":0}"#).is_err());
    }
}
