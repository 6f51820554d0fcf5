//! Which files to ship: the `--log-file` entries, glob patterns expanded
//! (once, at start), duplicates removed, as absolute paths (the checkpoint's
//! keys).

use std::collections::HashSet;
use std::path::PathBuf;

use crate::config::Mode;

fn is_pattern(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

/// The files to ship, in the order given (a pattern's matches sorted).
/// Errors are usage errors: a pattern matching nothing, an invalid pattern,
/// or (batch mode) a file that does not exist. Following, a missing plain
/// path is waited for.
pub fn resolve(entries: &[String], mode: Mode) -> Result<Vec<PathBuf>, String> {
    if entries.is_empty() {
        return Err("no log file given (--log-file / LOG_FILE)".into());
    }
    let mut files = Vec::new();
    for entry in entries {
        if is_pattern(entry) {
            let paths =
                glob::glob(entry).map_err(|e| format!("bad glob pattern {entry:?}: {e}"))?;
            let mut matched: Vec<PathBuf> = paths.flatten().filter(|p| p.is_file()).collect();
            if matched.is_empty() {
                return Err(format!("no file matches {entry:?}"));
            }
            matched.sort();
            files.extend(matched);
        } else {
            let path = PathBuf::from(entry);
            if mode == Mode::Batch && !path.is_file() {
                return Err(format!(
                    "log file {entry:?} does not exist or is not a file"
                ));
            }
            files.push(path);
        }
    }
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    for file in files {
        let absolute =
            std::path::absolute(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let identity = absolute.canonicalize().unwrap_or_else(|_| absolute.clone());
        if seen.insert(identity) {
            unique.push(absolute);
        }
    }
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_lists_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.log", "a.log", "c.txt"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let d = dir.path().display();
        let got = resolve(
            &[
                format!("{d}/*.log"),
                format!("{d}/c.txt"),
                format!("{d}/a.log"),
            ],
            Mode::Batch,
        )
        .unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.log", "b.log", "c.txt"]);
        assert!(got.iter().all(|p| p.is_absolute()));

        assert!(resolve(&[format!("{d}/*.nothing")], Mode::Continuous).is_err());
        assert!(resolve(&[format!("{d}/missing.log")], Mode::Batch).is_err());
        assert_eq!(
            resolve(&[format!("{d}/missing.log")], Mode::Continuous)
                .unwrap()
                .len(),
            1
        );
        assert!(resolve(&[], Mode::Batch).is_err());
    }
}
