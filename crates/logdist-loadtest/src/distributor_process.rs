//! Starting and stopping the `logdist` binary for a run.
//!
//! The run gets its own copy of the profile's distributor config (with the
//! dead-letter file moved into the results directory); logdist is started with
//! `--ready-file`, and its real (port 0) addresses are read from that file once
//! it appears. At the end it gets SIGTERM, some time to drain, and then SIGKILL.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use logdist_net::test_pki::{PkiFiles, TestPki};
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::proc_stats;
use crate::profile::workspace_root;

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

#[derive(Debug, Deserialize)]
struct ReadyListener {
    address: String,
    #[serde(default)]
    ack: String,
}

#[derive(Debug, Deserialize)]
struct ReadyFile {
    pid: u32,
    listeners: Vec<ReadyListener>,
    analyzers: String,
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

/// Write the run's copy of the config into `results_dir`; with `tls`, every
/// listener on mutual TLS with those certificates. With
/// `analyzers_everywhere`, the analyzer listener takes every address (port 0
/// still): an analyzer behind the partition link dials it over the link.
pub fn write_run_config(
    config_text: &str,
    results_dir: &Path,
    tls: Option<&PkiFiles>,
    analyzers_everywhere: bool,
) -> Result<RunConfig, String> {
    let mut table: toml::Table =
        toml::from_str(config_text).map_err(|e| format!("distributor config: {e}"))?;
    if let Some(pki) = tls {
        add_tls(&mut table, pki)?;
    }
    if analyzers_everywhere {
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
    })
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
        let log = std::fs::File::create(&log_path)
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
                    .find(|l| l.ack == "none")
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
                });
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "logdist did not write its ready file within {ready_timeout:?}; last lines of {}:\n{}",
                    log_path.display(),
                    log_tail(&log_path, 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
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

    /// SIGTERM, wait for the shutdown grace plus a margin, then SIGKILL.
    pub async fn stop(mut self) -> StopOutcome {
        let t0 = Instant::now();
        if let Ok(Some(status)) = self.child.try_wait() {
            return StopOutcome {
                exit_code: status.code(),
                killed: false,
                stop_secs: 0.0,
                description: format!("had already exited ({status}) before the end of the run"),
            };
        }
        // SAFETY: plain kill(2) on our own child's pid, which has not been reaped.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let wait = self.config.shutdown_grace + Duration::from_secs(5);
        match tokio::time::timeout(wait, self.child.wait()).await {
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
                let _ = self.child.kill().await;
                StopOutcome {
                    exit_code: None,
                    killed: true,
                    stop_secs: t0.elapsed().as_secs_f64(),
                    description: format!("did not exit within {wait:?} of SIGTERM; killed"),
                }
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
        let rc = write_run_config(&text, dir.path(), None, false).unwrap();
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
        let rc = write_run_config(&text, dir.path(), Some(&files), false).unwrap();
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
