//! Starting and stopping the `logdist` binary for a run.
//!
//! The run gets its own copy of the profile's distributor config (with the
//! dead-letter file moved into the results directory); logdist is started with
//! `--ready-file`, and its real (port 0) addresses are read from that file once
//! it appears. At the end it gets SIGTERM, some time to drain, and then SIGKILL.
//! The `crash` profile kills it with SIGKILL and starts it again on the same
//! copy, its addresses pinned to the ports the first start got.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use logdist_net::test_pki::{PkiFiles, TestPki};
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::proc_stats;
use crate::profile::{DurabilityMode, DurabilitySync, EmitterKind, workspace_root};

/// Compiled-in copies of the shipped configs, used when `configs/` is not around.
fn embedded_config(path: &str) -> Option<&'static str> {
    match path {
        "configs/basic.toml" => Some(include_str!("../../../configs/basic.toml")),
        "configs/throughput.toml" => Some(include_str!("../../../configs/throughput.toml")),
        "configs/chaos.toml" => Some(include_str!("../../../configs/chaos.toml")),
        "configs/max.toml" => Some(include_str!("../../../configs/max.toml")),
        _ => None,
    }
}

/// Read a distributor config named by a profile: relative to the working
/// directory, else to the source tree, else the compiled-in copy.
pub fn read_config(path: &str) -> Result<(String, String), String> {
    let p = Path::new(path);
    let candidates = if p.is_absolute() {
        vec![p.to_path_buf()]
    } else {
        vec![p.to_path_buf(), workspace_root().join(p)]
    };
    for c in candidates {
        if c.is_file() {
            let text = std::fs::read_to_string(&c)
                .map_err(|e| format!("cannot read distributor config {}: {e}", c.display()))?;
            return Ok((text, c.display().to_string()));
        }
    }
    embedded_config(path)
        .map(|t| (t.to_string(), format!("built-in {path}")))
        .ok_or_else(|| format!("distributor config {path} not found"))
}

/// Where the logdist binary is: the explicit path, else next to this binary
/// (or one level up when this is a test binary in `target/<profile>/deps`).
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "logdist binary not found at {}; build it with `cargo build --release -p logdist`",
                p.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate own binary: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join("logdist")];
    if dir.file_name().is_some_and(|n| n == "deps")
        && let Some(parent) = dir.parent()
    {
        candidates.push(parent.join("logdist"));
    }
    candidates.into_iter().find(|c| c.is_file()).ok_or_else(|| {
        format!(
            "logdist binary not found at {}; build it with `cargo build --release -p logdist` \
             (or pass --logdist-bin PATH / set LOGDIST_BIN)",
            dir.join("logdist").display()
        )
    })
}

#[derive(Clone, Debug, Deserialize)]
struct ReadyListener {
    address: String,
    #[serde(default)]
    ack: String,
}

/// What logdist writes to its `--ready-file`: the addresses it bound, in
/// config order.
#[derive(Clone, Debug, Deserialize)]
pub struct ReadyFile {
    pid: u32,
    listeners: Vec<ReadyListener>,
    analyzers: String,
    #[serde(default)]
    admin: Option<String>,
}

/// An address to dial for a bound address (0.0.0.0 becomes 127.0.0.1).
fn dialable(addr: &str) -> Result<SocketAddr, String> {
    let mut a: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?} in ready file: {e}"))?;
    if a.ip().is_unspecified() {
        a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Ok(a)
}

/// Settings of the per-run config that the load test itself needs to know.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub path: PathBuf,
    pub dead_letter_path: PathBuf,
    pub shutdown_grace: Duration,
    pub max_frame_bytes: usize,
    /// The `ack` of the listener the emitters use ("none" or "message").
    pub emitter_ack: &'static str,
    pub durability: Durability,
}

/// logdist's `[durability]` in the run's config, for the report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Durability {
    pub mode: DurabilityMode,
    /// Disk mode: when an `ok` is given, and the spool directory.
    pub sync: Option<DurabilitySync>,
    pub dir: Option<PathBuf>,
}

impl Durability {
    pub fn describe(&self) -> String {
        match (&self.sync, &self.dir) {
            (Some(sync), Some(dir)) => format!(
                "{} (sync {}, spool {})",
                self.mode.name(),
                sync.name(),
                dir.display()
            ),
            _ => self.mode.name().to_string(),
        }
    }
}

/// What the run changes in its copy of the distributor config.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overlay<'a> {
    /// Every listener on mutual TLS with these certificates.
    pub tls: Option<&'a PkiFiles>,
    /// The analyzer listener takes every address (port 0 still): an analyzer
    /// behind the partition link dials it over the link.
    pub analyzers_everywhere: bool,
    /// How the emitters talk: `ndjson_ack` ones need an `ack = "message"`
    /// listener (one on 127.0.0.1:0 is added if the config has none).
    pub emitters: EmitterKind,
    /// `[durability] mode` (None: as the config says). Disk mode gets a
    /// `spool` directory in the results directory.
    pub durability: Option<DurabilityMode>,
    /// `[durability] sync` (None: as the config says, else fsync).
    pub sync: Option<DurabilitySync>,
}

/// The certificates of `--tls-dir`: the files of `scripts/gen-certs.sh` when
/// `dir` has a `ca.pem`, else a fresh test CA and certificates (rcgen)
/// written there.
pub fn prepare_tls_dir(dir: &Path) -> Result<PkiFiles, String> {
    let files = PkiFiles::in_dir(
        &std::path::absolute(dir).map_err(|e| format!("--tls-dir {}: {e}", dir.display()))?,
    );
    if files.ca.exists() {
        if !files.exist() {
            return Err(format!(
                "--tls-dir {}: has ca.pem but not all of ca-key.pem, server.pem, server-key.pem, \
                 client.pem, client-key.pem (make them with scripts/gen-certs.sh, or use an empty \
                 directory for fresh test certificates)",
                dir.display()
            ));
        }
        return Ok(files);
    }
    TestPki::generate(&[])
        .write_to(files.ca.parent().unwrap_or(dir))
        .map_err(|e| {
            format!(
                "--tls-dir {}: cannot write certificates: {e}",
                dir.display()
            )
        })
}

/// Puts every emitter listener and the analyzer listener on mutual TLS:
/// `tls = { cert, key, client_ca }` with the files of `pki`.
fn add_tls(table: &mut toml::Table, pki: &PkiFiles) -> Result<(), String> {
    let mut tls = toml::Table::new();
    for (key, path) in [
        ("cert", &pki.server),
        ("key", &pki.server_key),
        ("client_ca", &pki.ca),
    ] {
        tls.insert(key.into(), toml::Value::String(path.display().to_string()));
    }
    let listeners = table
        .get_mut("listeners")
        .and_then(|l| l.as_array_mut())
        .ok_or("distributor config: no [[listeners]] to put on TLS")?;
    for listener in listeners {
        listener
            .as_table_mut()
            .ok_or("distributor config: a [[listeners]] entry is not a table")?
            .insert("tls".into(), toml::Value::Table(tls.clone()));
    }
    table
        .entry("analyzers")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or("distributor config: [analyzers] is not a table")?
        .insert("tls".into(), toml::Value::Table(tls));
    Ok(())
}

/// Makes sure the config has an `ack = "message"` listener.
fn add_ack_listener(table: &mut toml::Table) -> Result<(), String> {
    let listeners = table
        .entry("listeners")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or("distributor config: [[listeners]] is not an array of tables")?;
    let acking = listeners
        .iter()
        .any(|l| l.get("ack").and_then(|a| a.as_str()) == Some("message"));
    if !acking {
        let mut listener = toml::Table::new();
        listener.insert("address".into(), "127.0.0.1:0".into());
        listener.insert("ack".into(), "message".into());
        listeners.push(toml::Value::Table(listener));
    }
    Ok(())
}

/// Applies `mode` and `sync` to `[durability]`, puts a disk-mode spool in
/// `results_dir/spool`, and says what the config ends up with.
fn set_durability(
    table: &mut toml::Table,
    results_dir: &Path,
    mode: Option<DurabilityMode>,
    sync: Option<DurabilitySync>,
) -> Result<Durability, String> {
    let section = table
        .entry("durability")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or("distributor config: [durability] is not a table")?;
    if let Some(mode) = mode {
        section.insert("mode".into(), mode.name().into());
    }
    if let Some(sync) = sync {
        section.insert("sync".into(), sync.name().into());
    }
    let value = |key: &str| {
        section
            .get(key)
            .map(|v| v.as_str().unwrap_or("?").to_string())
    };
    let mode = match value("mode").as_deref() {
        None | Some("memory") => DurabilityMode::Memory,
        Some("disk") => DurabilityMode::Disk,
        Some(other) => return Err(format!("distributor config: durability.mode {other:?}")),
    };
    if mode == DurabilityMode::Memory {
        return Ok(Durability {
            mode,
            sync: None,
            dir: None,
        });
    }
    let sync = match value("sync").as_deref() {
        None | Some("fsync") => DurabilitySync::Fsync,
        Some("write") => DurabilitySync::Write,
        Some(other) => return Err(format!("distributor config: durability.sync {other:?}")),
    };
    let dir = std::path::absolute(results_dir.join("spool")).map_err(|e| e.to_string())?;
    section.insert("sync".into(), sync.name().into());
    section.insert("dir".into(), dir.display().to_string().into());
    Ok(Durability {
        mode,
        sync: Some(sync),
        dir: Some(dir),
    })
}

/// Write the run's copy of the config into `results_dir`, changed as
/// `overlay` says.
pub fn write_run_config(
    config_text: &str,
    results_dir: &Path,
    overlay: Overlay<'_>,
) -> Result<RunConfig, String> {
    let mut table: toml::Table =
        toml::from_str(config_text).map_err(|e| format!("distributor config: {e}"))?;
    let emitter_ack = match overlay.emitters {
        EmitterKind::Frames => "none",
        EmitterKind::NdjsonAck => {
            add_ack_listener(&mut table)?;
            "message"
        }
    };
    if let Some(pki) = overlay.tls {
        add_tls(&mut table, pki)?;
    }
    let durability = set_durability(&mut table, results_dir, overlay.durability, overlay.sync)?;
    if overlay.analyzers_everywhere {
        table
            .entry("analyzers")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or("distributor config: [analyzers] is not a table")?
            .insert("listen".into(), toml::Value::String("0.0.0.0:0".into()));
    }
    let dead_letter_path =
        std::path::absolute(results_dir.join("dead_letters.ndjson")).map_err(|e| e.to_string())?;
    let delivery = table
        .entry("delivery")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or("distributor config: [delivery] is not a table")?;
    delivery.insert(
        "dead_letter_path".into(),
        toml::Value::String(dead_letter_path.display().to_string()),
    );
    let shutdown_grace = match delivery.get("shutdown_grace").and_then(|v| v.as_str()) {
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| format!("distributor config: delivery.shutdown_grace {s:?}: {e}"))?,
        None => Duration::from_secs(5),
    };
    let max_frame_bytes = table
        .get("limits")
        .and_then(|l| l.get("max_frame_bytes"))
        .and_then(|v| v.as_integer())
        .map(|v| v as usize)
        .unwrap_or(1024 * 1024);
    let path = results_dir.join("logdist.toml");
    let text = toml::to_string_pretty(&table).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(RunConfig {
        path,
        dead_letter_path,
        shutdown_grace,
        max_frame_bytes,
        emitter_ack,
        durability,
    })
}

impl RunConfig {
    /// Rewrite the config with the addresses of `ready` (listeners in config
    /// order, analyzers, admin), so that a restart binds the same ports and
    /// emitters and analyzers find it where they were.
    pub fn pin_addresses(&self, ready: &ReadyFile) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
        let listeners = table
            .get_mut("listeners")
            .and_then(|l| l.as_array_mut())
            .ok_or("run config: no [[listeners]]")?;
        if listeners.len() != ready.listeners.len() {
            return Err(format!(
                "the ready file lists {} emitter listeners, the config {}",
                ready.listeners.len(),
                listeners.len()
            ));
        }
        for (l, bound) in listeners.iter_mut().zip(&ready.listeners) {
            l.as_table_mut()
                .ok_or("run config: a [[listeners]] entry is not a table")?
                .insert("address".into(), bound.address.clone().into());
        }
        let mut set = |section: &str, key: &str, value: &str| -> Result<(), String> {
            table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or(format!("run config: [{section}] is not a table"))?
                .insert(key.into(), value.into());
            Ok(())
        };
        set("analyzers", "listen", &ready.analyzers)?;
        if let Some(admin) = &ready.admin {
            set("admin", "listen", admin)?;
        }
        let text = toml::to_string_pretty(&table).map_err(|e| e.to_string())?;
        std::fs::write(&self.path, text)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// How logdist ended.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StopOutcome {
    /// Exit code, or None if it was killed by a signal.
    pub exit_code: Option<i32>,
    /// It did not exit within the grace period and got SIGKILL.
    pub killed: bool,
    pub stop_secs: f64,
    pub description: String,
}

impl StopOutcome {
    pub fn clean(&self) -> bool {
        !self.killed && self.exit_code == Some(0)
    }
}

/// A running logdist.
pub struct DistributorProcess {
    child: Child,
    pub pid: u32,
    pub emitter_addr: SocketAddr,
    pub analyzer_addr: SocketAddr,
    pub log_path: PathBuf,
    pub config: RunConfig,
    /// Everything it bound, as its ready file said.
    pub ready: ReadyFile,
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        "(empty)".to_string()
    } else {
        tail
    }
}

impl DistributorProcess {
    /// Start `bin` with `config` and wait (up to `ready_timeout`) until it is listening.
    pub async fn start(
        bin: &Path,
        config: RunConfig,
        results_dir: &Path,
        ready_timeout: Duration,
    ) -> Result<Self, String> {
        let log_path = results_dir.join("logdist.log");
        let ready_path = results_dir.join("logdist.ready.json");
        let _ = std::fs::remove_file(&ready_path);
        // Appended to: a restarted logdist (crash profile) logs after the
        // killed one.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        // Its own process group, so a Ctrl-C meant for the load test does not
        // reach logdist directly: the load test stops it in order and reports.
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; this only asks the kernel to send
        // SIGTERM to logdist if the load test dies without stopping it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .arg("--config")
            .arg(&config.path)
            .arg("--ready-file")
            .arg(&ready_path)
            .current_dir(results_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("logdist exited at once")?;

        let deadline = Instant::now() + ready_timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "logdist exited ({status}) before it was ready; last lines of {}:\n{}",
                    log_path.display(),
                    log_tail(&log_path, 20)
                ));
            }
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                let ready: ReadyFile = serde_json::from_str(&text)
                    .map_err(|e| format!("bad ready file {}: {e}", ready_path.display()))?;
                if ready.pid != pid {
                    tracing::warn!("ready file names pid {} but the child is {pid}", ready.pid);
                }
                let listener = ready
                    .listeners
                    .iter()
                    .find(|l| l.ack == config.emitter_ack)
                    .or(ready.listeners.first())
                    .ok_or("ready file lists no emitter listener")?;
                let emitter_addr = dialable(&listener.address)?;
                let analyzer_addr = dialable(&ready.analyzers)?;
                return Ok(DistributorProcess {
                    child,
                    pid,
                    emitter_addr,
                    analyzer_addr,
                    log_path,
                    config,
                    ready,
                });
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "logdist did not write its ready file within {ready_timeout:?}; last lines of {}:\n{}",
                    log_path.display(),
                    log_tail(&log_path, 20)
                ));
            }
            // Often: a crash run measures the time to ready with this.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        proc_stats::status_bytes(self.pid, "VmHWM")
    }

    /// Has it exited on its own?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, as a crash: nothing is flushed, nothing drained. Returns
    /// once it is gone (reaped).
    pub async fn kill(mut self) -> Result<(RunConfig, ReadyFile), String> {
        self.child
            .kill()
            .await
            .map_err(|e| format!("cannot kill logdist (pid {}): {e}", self.pid))?;
        Ok((self.config, self.ready))
    }

    /// SIGTERM, wait for the shutdown grace plus a margin, then SIGKILL.
    pub async fn stop(mut self) -> StopOutcome {
        if let Ok(Some(status)) = self.child.try_wait() {
            return StopOutcome {
                exit_code: status.code(),
                killed: false,
                stop_secs: 0.0,
                description: format!("had already exited ({status}) before the end of the run"),
            };
        }
        let wait = self.config.shutdown_grace + Duration::from_secs(5);
        terminate(&mut self.child, self.pid, wait).await
    }
}

/// SIGTERM to a child, then SIGKILL if it has not exited within `wait`:
/// how the load tester stops every process it started (logdist, the relay).
pub async fn terminate(child: &mut Child, pid: u32, wait: Duration) -> StopOutcome {
    let t0 = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid, which has not been reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    match tokio::time::timeout(wait, child.wait()).await {
        Ok(Ok(status)) => StopOutcome {
            exit_code: status.code(),
            killed: false,
            stop_secs: t0.elapsed().as_secs_f64(),
            description: format!("exited after SIGTERM ({status})"),
        },
        Ok(Err(e)) => StopOutcome {
            exit_code: None,
            killed: false,
            stop_secs: t0.elapsed().as_secs_f64(),
            description: format!("could not wait for it: {e}"),
        },
        Err(_) => {
            let _ = child.kill().await;
            StopOutcome {
                exit_code: None,
                killed: true,
                stop_secs: t0.elapsed().as_secs_f64(),
                description: format!("did not exit within {wait:?} of SIGTERM; killed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_config_moves_dead_letters_into_results() {
        let dir = tempfile::tempdir().unwrap();
        let (text, _) = read_config("configs/basic.toml").unwrap();
        let rc = write_run_config(&text, dir.path(), Overlay::default()).unwrap();
        let written: toml::Table =
            toml::from_str(&std::fs::read_to_string(&rc.path).unwrap()).unwrap();
        let dl = written["delivery"]["dead_letter_path"].as_str().unwrap();
        assert!(dl.ends_with("dead_letters.ndjson") && Path::new(dl).is_absolute());
        assert!(
            rc.dead_letter_path
                .starts_with(std::path::absolute(dir.path()).unwrap())
        );
        assert_eq!(rc.max_frame_bytes, 1048576);
        assert_eq!(written["listeners"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn tls_dir_puts_every_listener_on_mutual_tls() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let files = prepare_tls_dir(&certs).unwrap();
        assert!(files.exist());
        // Made once, then reused (as gen-certs.sh's files would be).
        let ca = std::fs::read_to_string(&files.ca).unwrap();
        assert_eq!(prepare_tls_dir(&certs).unwrap(), files);
        assert_eq!(std::fs::read_to_string(&files.ca).unwrap(), ca);
        // They make a working client.
        logdist_net::TlsClient::new(&files.client_settings(), &logdist_net::TlsNames::FLAGS)
            .unwrap();

        let (text, _) = read_config("configs/chaos.toml").unwrap();
        let overlay = Overlay {
            tls: Some(&files),
            ..Overlay::default()
        };
        let rc = write_run_config(&text, dir.path(), overlay).unwrap();
        let written: toml::Table =
            toml::from_str(&std::fs::read_to_string(&rc.path).unwrap()).unwrap();
        let expected = |t: &toml::Value| {
            assert_eq!(t["cert"].as_str().unwrap(), files.server.to_str().unwrap());
            assert_eq!(
                t["key"].as_str().unwrap(),
                files.server_key.to_str().unwrap()
            );
            assert_eq!(t["client_ca"].as_str().unwrap(), files.ca.to_str().unwrap());
            assert!(Path::new(t["cert"].as_str().unwrap()).is_absolute());
        };
        let listeners = written["listeners"].as_array().unwrap();
        assert!(!listeners.is_empty());
        for l in listeners {
            expected(&l["tls"]);
        }
        expected(&written["analyzers"]["tls"]);

        // A directory with a CA but not the rest is an error that says what is missing.
        let partial = dir.path().join("partial");
        std::fs::create_dir(&partial).unwrap();
        std::fs::copy(&files.ca, partial.join("ca.pem")).unwrap();
        let err = prepare_tls_dir(&partial).unwrap_err();
        assert!(
            err.contains("server-key.pem") && err.contains("gen-certs.sh"),
            "{err}"
        );
    }

    /// `ndjson_ack` emitters get an `ack = "message"` listener; disk mode
    /// spools into the results directory, fsync unless told otherwise.
    #[test]
    fn overlay_adds_an_acking_listener_and_durability() {
        let dir = tempfile::tempdir().unwrap();
        let (text, _) = read_config("configs/basic.toml").unwrap();
        let written = |rc: &RunConfig| -> toml::Table {
            toml::from_str(&std::fs::read_to_string(&rc.path).unwrap()).unwrap()
        };

        let rc = write_run_config(&text, dir.path(), Overlay::default()).unwrap();
        assert_eq!(rc.emitter_ack, "none");
        assert_eq!(rc.durability.describe(), "memory");
        assert_eq!(written(&rc)["listeners"].as_array().unwrap().len(), 1);

        let overlay = Overlay {
            emitters: EmitterKind::NdjsonAck,
            durability: Some(DurabilityMode::Disk),
            ..Overlay::default()
        };
        let rc = write_run_config(&text, dir.path(), overlay).unwrap();
        let t = written(&rc);
        assert_eq!(rc.emitter_ack, "message");
        let listeners = t["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[1]["ack"].as_str(), Some("message"));
        assert_eq!(listeners[1]["address"].as_str(), Some("127.0.0.1:0"));
        let spool = std::path::absolute(dir.path().join("spool")).unwrap();
        assert_eq!(t["durability"]["mode"].as_str(), Some("disk"));
        assert_eq!(t["durability"]["sync"].as_str(), Some("fsync"));
        assert_eq!(t["durability"]["dir"].as_str(), spool.to_str());
        assert_eq!(
            rc.durability,
            Durability {
                mode: DurabilityMode::Disk,
                sync: Some(DurabilitySync::Fsync),
                dir: Some(spool),
            }
        );

        // A config that has an acking listener keeps it as it is; sync write.
        let with_ack =
            format!("{text}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nack = \"message\"\n");
        let overlay = Overlay {
            emitters: EmitterKind::NdjsonAck,
            durability: Some(DurabilityMode::Disk),
            sync: Some(DurabilitySync::Write),
            ..Overlay::default()
        };
        let rc = write_run_config(&with_ack, dir.path(), overlay).unwrap();
        let t = written(&rc);
        assert_eq!(t["listeners"].as_array().unwrap().len(), 2);
        assert_eq!(t["durability"]["sync"].as_str(), Some("write"));
        assert!(
            rc.durability
                .describe()
                .starts_with("disk (sync write, spool ")
        );

        // The config's own mode counts when the run sets none.
        let disk = format!("{text}\n[durability]\nmode = \"disk\"\n");
        let rc = write_run_config(&disk, dir.path(), Overlay::default()).unwrap();
        assert_eq!(rc.durability.mode, DurabilityMode::Disk);
        let overlay = Overlay {
            durability: Some(DurabilityMode::Memory),
            ..Overlay::default()
        };
        let rc = write_run_config(&disk, dir.path(), overlay).unwrap();
        assert_eq!(written(&rc)["durability"]["mode"].as_str(), Some("memory"));
        assert_eq!(rc.durability.dir, None);
    }

    /// A restart binds what the first start got.
    #[test]
    fn addresses_are_pinned_from_the_ready_file() {
        let dir = tempfile::tempdir().unwrap();
        let (text, _) = read_config("configs/basic.toml").unwrap();
        let overlay = Overlay {
            emitters: EmitterKind::NdjsonAck,
            ..Overlay::default()
        };
        let rc = write_run_config(&text, dir.path(), overlay).unwrap();
        let ready: ReadyFile = serde_json::from_str(
            r#"{"pid":7,"listeners":[{"address":"127.0.0.1:4001","ack":"none"},
                {"address":"127.0.0.1:4002","ack":"message"}],
                "analyzers":"127.0.0.1:4003","admin":"127.0.0.1:4004"}"#,
        )
        .unwrap();
        rc.pin_addresses(&ready).unwrap();
        let t: toml::Table = toml::from_str(&std::fs::read_to_string(&rc.path).unwrap()).unwrap();
        let listeners = t["listeners"].as_array().unwrap();
        assert_eq!(listeners[0]["address"].as_str(), Some("127.0.0.1:4001"));
        assert_eq!(listeners[1]["address"].as_str(), Some("127.0.0.1:4002"));
        assert_eq!(listeners[1]["ack"].as_str(), Some("message"));
        assert_eq!(t["analyzers"]["listen"].as_str(), Some("127.0.0.1:4003"));
        assert_eq!(t["admin"]["listen"].as_str(), Some("127.0.0.1:4004"));
        // The rest of the config is untouched.
        assert_eq!(t["analyzers"]["window"].as_integer(), Some(4096));

        let mismatched: ReadyFile =
            serde_json::from_str(r#"{"pid":7,"listeners":[],"analyzers":"127.0.0.1:4003"}"#)
                .unwrap();
        assert!(rc.pin_addresses(&mismatched).is_err());
    }

    #[test]
    fn shipped_configs_use_free_ports() {
        for name in ["basic", "throughput", "chaos", "max"] {
            let (text, _) = read_config(&format!("configs/{name}.toml")).unwrap();
            let t: toml::Table = toml::from_str(&text).unwrap();
            assert!(
                t["analyzers"]["listen"].as_str().unwrap().ends_with(":0"),
                "{name}"
            );
            for l in t["listeners"].as_array().unwrap() {
                assert!(l["address"].as_str().unwrap().ends_with(":0"), "{name}");
            }
        }
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let err = find_binary(Some(Path::new("/nonexistent/logdist"))).unwrap_err();
        assert!(err.contains("cargo build --release -p logdist"), "{err}");
    }

    #[test]
    fn unspecified_addresses_are_dialed_on_loopback() {
        assert_eq!(
            dialable("0.0.0.0:8081").unwrap(),
            "127.0.0.1:8081".parse().unwrap()
        );
        assert_eq!(
            dialable("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
    }
}
