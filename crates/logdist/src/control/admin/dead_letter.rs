//! `GET /api/v1/dead-letter?limit=N&offset=M`: the most recent dead letters
//! first, read from the dead-letter file at request time.
//!
//! The file is streamed twice (count the records, then keep the requested
//! page), so memory stays bounded by `limit` however large the file grows.
//! A missing file means no dead letters; a last line still being written
//! (no newline yet) is left for the next request. Each line is parsed as a
//! [`DeadLetterRecord`] and served as such; a line that is not one is served
//! as `{"unparsable": "<the line>"}`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use logdist_wire::DeadLetterRecord;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::api_error::ApiError;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
pub(super) struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

#[derive(Serialize)]
pub(super) struct DeadLetterPage {
    /// Records in the file.
    total: usize,
    offset: usize,
    limit: usize,
    /// Newest first: `dead_letters[0]` is record number `total - 1 - offset`.
    dead_letters: Vec<Entry>,
}

/// One line of the file, as served.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Entry {
    Record(Box<DeadLetterRecord>),
    Unparsable { unparsable: String },
}

impl Entry {
    fn parse(line: &[u8]) -> Entry {
        match DeadLetterRecord::parse(line) {
            Ok(record) => Entry::Record(Box::new(record)),
            Err(_) => Entry::Unparsable {
                unparsable: String::from_utf8_lossy(line).into_owned(),
            },
        }
    }
}

pub(super) async fn list(
    State(admin): AppState,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    // axum's own rejection is plain text; this API answers errors in JSON.
    let Query(page) = page.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be at most {MAX_LIMIT}"
        )));
    }
    let offset = page.offset.unwrap_or(0);
    let path = admin.dead_letter_path.clone();
    let read = tokio::task::spawn_blocking(move || read_page(&path, offset, limit)).await;
    match read {
        Ok(Ok(page)) => Ok(Json(page)),
        Ok(Err(err)) => Err(ApiError::internal(format!(
            "cannot read the dead-letter file: {err}"
        ))),
        Err(err) => Err(ApiError::internal(format!(
            "dead-letter reader failed: {err}"
        ))),
    }
}

fn read_page(path: &Path, offset: usize, limit: usize) -> std::io::Result<DeadLetterPage> {
    let empty = DeadLetterPage {
        total: 0,
        offset,
        limit,
        dead_letters: Vec::new(),
    };
    let total = match File::open(path) {
        Ok(file) => complete_lines(file, |_, _| {})?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(empty),
        Err(err) => return Err(err),
    };
    // Records [first, end) in file order are the page, newest last.
    let end = total.saturating_sub(offset);
    let first = end.saturating_sub(limit);
    let mut dead_letters = Vec::with_capacity(end - first);
    if end > first {
        complete_lines(File::open(path)?, |index, line| {
            if (first..end).contains(&index) {
                dead_letters.push(Entry::parse(line));
            }
        })?;
    }
    dead_letters.reverse();
    Ok(DeadLetterPage {
        total,
        dead_letters,
        ..empty
    })
}

/// Calls `each(index, line)` for every newline-terminated, non-blank line;
/// returns how many there were.
fn complete_lines(file: File, mut each: impl FnMut(usize, &[u8])) -> std::io::Result<usize> {
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut index = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            return Ok(index);
        }
        let text = line.trim_ascii();
        if !text.is_empty() {
            each(index, text);
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_run_newest_first_and_skip_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.ndjson");
        assert_eq!(read_page(&path, 0, 10).unwrap().total, 0);
        let mut text = String::new();
        for i in 0..5 {
            text.push_str(&format!(
                "{{\"message\":\"m{i}\",\"origin\":\"frame\",\"priority\":3,\"attempts\":{i}}}\n"
            ));
        }
        text.push_str("{\"message\":"); // being written
        std::fs::write(&path, text).unwrap();
        let page = read_page(&path, 1, 2).unwrap();
        assert_eq!(page.total, 5);
        let page = serde_json::to_value(&page.dead_letters).unwrap();
        let ns: Vec<i64> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["attempts"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [3, 2]);
        assert!(read_page(&path, 9, 2).unwrap().dead_letters.is_empty());
    }

    #[test]
    fn records_are_served_typed_and_other_lines_as_unparsable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.ndjson");
        std::fs::write(
            &path,
            "{\"payload_b64\":\"/wCA\",\"origin\":\"frame\",\"priority\":255,\"extra\":1}\n\
             {\"n\":1}\n\
             not json\n",
        )
        .unwrap();
        let page = read_page(&path, 0, 10).unwrap();
        assert_eq!(
            serde_json::to_value(&page.dead_letters).unwrap(),
            serde_json::json!([
                {"unparsable": "not json"},
                {"unparsable": "{\"n\":1}"},
                {"payload_b64": "/wCA", "origin": "frame", "priority": 255, "attempts": 0,
                 "analyzers": [], "final_error": "", "failed_at": ""},
            ])
        );
    }
}
