//! The CSV metrics export: with `[metrics] csv_path` set, one row per
//! `interval` (and a last one at shutdown) appended to that file.
//!
//! Counters are cumulative since start (the same numbers `/api/v1/stats`
//! shows), so a row never depends on a previous one having been written and
//! rates are differences between rows. Gauges (queue depths, in flight) are
//! the value at the row's time.
//!
//! Columns are fixed for the life of the file, because a CSV cannot grow
//! columns: one group per static analyzer configured at startup, then one
//! `other_*` group for every other analyzer (dial-in ones, and statics added by
//! a reload). When the file already exists with a different header (the
//! static analyzers changed across a restart), it is renamed to
//! `<csv_path>.<unix seconds>` and a new file begins. docs/operations.md
//! lists every column.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::observed::Observed;
use crate::config::MetricsConfig;
use crate::delivery::directory::{AnalyzerRecord, Health, Link};
use crate::stats::CLASSES;

/// The running export; [`CsvExport::finish`] writes the last row.
pub struct CsvExport {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl CsvExport {
    /// Writes a final row (after shutdown settled every message) and stops.
    pub async fn finish(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(%err, "CSV metrics export failed");
        }
    }
}

/// Starts the export if `config.csv_path` is set.
pub fn start(config: &MetricsConfig, observed: Observed) -> Option<CsvExport> {
    if config.csv_path.is_empty() {
        return None;
    }
    let path = PathBuf::from(&config.csv_path);
    let statics: Vec<Arc<str>> = observed
        .directory
        .snapshot()
        .into_iter()
        .filter(|a| a.link == Link::Static)
        .map(|a| a.id)
        .collect();
    let stop = CancellationToken::new();
    let interval = config.interval;
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let header = header(&statics);
            let mut file = None;
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let last = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = stop.cancelled() => true,
                };
                let row = row(&observed, &statics);
                let (target, header) = (path.clone(), header.clone());
                let written = tokio::task::spawn_blocking(move || {
                    let mut file = match file {
                        Some(file) => file,
                        None => open(&target, &header)?,
                    };
                    write_record(&mut file, &row)?;
                    Ok::<_, std::io::Error>(file)
                })
                .await;
                file = match written {
                    Ok(Ok(file)) => Some(file),
                    Ok(Err(err)) => {
                        tracing::error!(path = %path.display(), %err, "cannot write CSV metrics row");
                        None
                    }
                    Err(err) => {
                        tracing::error!(%err, "CSV metrics writer failed");
                        None
                    }
                };
                if last {
                    return;
                }
            }
        }
    });
    Some(CsvExport { stop, task })
}

const TOTALS: [&str; 16] = [
    "timestamp",
    "uptime_seconds",
    "accepted",
    "rejected",
    "routed",
    "held",
    "diverted",
    "delivered",
    "rerouted",
    "dead_lettered",
    "dead_letter_failures",
    "queued",
    "in_flight",
    "holding",
    "analyzers_total",
    "analyzers_healthy",
];

/// Per static analyzer, each prefixed with `<id>_`.
const ANALYZER: [&str; 6] = [
    "routed",
    "delivered",
    "queue_depth",
    "in_flight",
    "weight",
    "healthy",
];

/// For every analyzer that is not a startup static one, summed.
const OTHER: [&str; 4] = [
    "other_routed",
    "other_delivered",
    "other_queue_depth",
    "other_in_flight",
];

fn header(statics: &[Arc<str>]) -> Vec<String> {
    let mut columns: Vec<String> = TOTALS.iter().map(|c| c.to_string()).collect();
    for what in ["accepted", "delivered", "queued"] {
        for class in CLASSES {
            columns.push(format!("{what}_p{}", class.replace('-', "_")));
        }
    }
    for id in statics {
        for what in ANALYZER {
            columns.push(format!("{id}_{what}"));
        }
    }
    columns.extend(OTHER.iter().map(|c| c.to_string()));
    columns
}

fn row(observed: &Observed, statics: &[Arc<str>]) -> Vec<String> {
    let s = observed.stats.snapshot();
    let analyzers = observed.directory.snapshot();
    let sum = |f: fn(&AnalyzerRecord) -> u64| analyzers.iter().map(f).sum::<u64>();
    let holding = observed.router.holding().map_or(0, |h| h.len());
    let healthy = analyzers
        .iter()
        .filter(|a| a.health == Health::Healthy)
        .count();
    let mut row: Vec<String> = vec![
        humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        format!("{:.3}", observed.started.elapsed().as_secs_f64()),
    ];
    let totals = [
        s.accepted,
        s.rejected_total(),
        s.routed,
        s.held,
        s.diverted,
        s.delivered,
        s.redelivered,
        s.dead_lettered,
        s.dead_letter_failures,
        sum(|a| a.queue_depth),
        sum(|a| a.in_flight),
        holding as u64,
        analyzers.len() as u64,
        healthy as u64,
    ];
    row.extend(totals.iter().map(u64::to_string));
    row.extend(s.accepted_by_class.iter().map(u64::to_string));
    row.extend(s.delivered_by_class.iter().map(u64::to_string));
    for class in 0..CLASSES.len() {
        let queued: u64 = analyzers.iter().map(|a| a.queued_by_class[class]).sum();
        row.push(queued.to_string());
    }
    // Counters of analyzers that are not startup statics: the total minus
    // those, so they stay cumulative when dial-in analyzers come and go.
    let (mut static_routed, mut static_delivered) = (0, 0);
    let (mut static_depth, mut static_in_flight) = (0, 0);
    for id in statics {
        match analyzers.iter().find(|a| &a.id == id) {
            Some(a) => {
                static_routed += a.routed;
                static_delivered += a.delivered;
                static_depth += a.queue_depth;
                static_in_flight += a.in_flight;
                row.extend([
                    a.routed.to_string(),
                    a.delivered.to_string(),
                    a.queue_depth.to_string(),
                    a.in_flight.to_string(),
                    a.weight.to_string(),
                    u8::from(a.health == Health::Healthy).to_string(),
                ]);
            }
            // Removed by a reload: its counts now show under other_*.
            None => row.extend(std::iter::repeat_n(String::new(), ANALYZER.len())),
        }
    }
    row.extend([
        s.routed.saturating_sub(static_routed).to_string(),
        s.delivered.saturating_sub(static_delivered).to_string(),
        (sum(|a| a.queue_depth) - static_depth).to_string(),
        (sum(|a| a.in_flight) - static_in_flight).to_string(),
    ]);
    row
}

/// Opens `path` for appending; writes the header if the file is new or
/// empty, and moves an existing file with another header aside first.
fn open(path: &Path, header: &[String]) -> std::io::Result<File> {
    let mut expected = Vec::new();
    {
        let mut writer = csv::Writer::from_writer(&mut expected);
        writer.write_record(header).map_err(std::io::Error::other)?;
        writer.flush()?;
    }
    match File::open(path) {
        Ok(existing) => {
            let mut first = Vec::new();
            BufReader::new(existing).read_until(b'\n', &mut first)?;
            if !first.is_empty() && first != expected {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = PathBuf::from(format!("{}.{secs}", path.display()));
                std::fs::rename(path, &aside)?;
                tracing::warn!(
                    path = %path.display(), moved_to = %aside.display(),
                    "CSV metrics file had other columns; starting a new one"
                );
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    if file.metadata()?.len() == 0 {
        std::io::Write::write_all(&mut file, &expected)?;
    }
    Ok(file)
}

/// Appends one row with a single write, so a reader never sees half of it.
fn write_record(file: &mut File, row: &[String]) -> std::io::Result<()> {
    let mut line = Vec::new();
    {
        let mut writer = csv::Writer::from_writer(&mut line);
        writer.write_record(row).map_err(std::io::Error::other)?;
        writer.flush()?;
    }
    std::io::Write::write_all(file, &line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_class_and_static_columns() {
        let header = header(&[Arc::from("a1")]);
        assert_eq!(header[0], "timestamp");
        assert!(header.contains(&"accepted_p6_255".to_string()));
        assert!(header.contains(&"a1_delivered".to_string()));
        assert_eq!(header.last().unwrap(), "other_in_flight");
        assert_eq!(
            header.len(),
            TOTALS.len() + 3 * CLASSES.len() + ANALYZER.len() + OTHER.len()
        );
    }

    #[test]
    fn an_existing_file_with_other_columns_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let header = header(&[]);
        let mut file = open(&path, &header).unwrap();
        write_record(&mut file, &vec!["1".to_string(); header.len()]).unwrap();
        drop(file);
        // Same columns: appended, header kept once.
        drop(open(&path, &header).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        // Other columns: a fresh file.
        drop(open(&path, &super::header(&[Arc::from("x")])).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
