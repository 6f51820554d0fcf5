//! End-to-end runs of the load test binary against a real logdist binary
//! (`target/<profile>/logdist`, started by the load test as in production).
//! Build it first: `cargo build -p logdist`.
//!
//! The runs are short (seconds) and serialized, so they do not compete for the
//! two cores; each is bounded by a hard timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One end-to-end run at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn loadtest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_logdist-loadtest"))
}

/// target/<profile>/logdist, next to the load test binary.
fn logdist_bin() -> PathBuf {
    let bin = loadtest_bin().parent().unwrap().join("logdist");
    assert!(
        bin.is_file(),
        "logdist binary not found at {}; build it first with `cargo build -p logdist`",
        bin.display()
    );
    bin
}

/// Run to completion, killing the child if it takes longer than `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logdist-loadtest");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "logdist-loadtest did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Run {
    output: Output,
    summary: Option<Value>,
    results_dir: Option<PathBuf>,
    /// The temporary parent of `results_dir`, kept until the run is dropped.
    _results_root: Option<tempfile::TempDir>,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr (tail):\n{}",
            self.output.status.code(),
            self.stdout(),
            self.stderr()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
    fn summary(&self) -> &Value {
        self.summary
            .as_ref()
            .unwrap_or_else(|| panic!("no summary.json written\n{}", self.describe()))
    }
    fn total(&self, key: &str) -> u64 {
        self.summary()["totals"][key].as_u64().unwrap()
    }
    /// The sum of `key` over all analyzers.
    fn analyzer_sum(&self, key: &str) -> u64 {
        self.summary()["analyzers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a[key].as_u64().unwrap())
            .sum()
    }
    /// Nothing lost, duplicated, corrupted or given the wrong priority.
    fn assert_exact(&self) {
        for key in [
            "lost",
            "duplicated",
            "checksum_failures",
            "priority_mismatches",
        ] {
            assert_eq!(self.total(key), 0, "{key}\n{}", self.describe());
        }
    }
}

fn loadtest(args: &[&str], results: &Path, limit: Duration) -> Run {
    let mut cmd = Command::new(loadtest_bin());
    cmd.args(args)
        .arg("--results-dir")
        .arg(results)
        .arg("--seed")
        .arg("42")
        .env_remove("LOGDIST_BIN");
    let output = run_bounded(&mut cmd, limit);
    let results_dir = std::fs::read_dir(results)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path());
    let summary = results_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("summary.json")).ok())
        .map(|t| serde_json::from_str(&t).expect("summary.json is JSON"));
    Run {
        output,
        summary,
        results_dir,
        _results_root: None,
    }
}

/// Take the lock that keeps end-to-end runs (and distributors) one at a time.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run with `--logdist-bin <bin>` while holding the serial lock, the results in
/// a fresh temporary directory that lives as long as the returned `Run`.
fn run_serialized(
    _serial: &MutexGuard<'static, ()>,
    args: &[&str],
    bin: &str,
    limit: Duration,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut args = args.to_vec();
    args.extend(["--logdist-bin", bin]);
    let mut run = loadtest(&args, dir.path(), limit);
    run._results_root = Some(dir);
    run
}

/// One end-to-end run against the logdist binary under target/.
fn serial_run(args: &[&str], limit: Duration) -> Run {
    let bin = logdist_bin();
    run_serialized(&serial(), args, bin.to_str().unwrap(), limit)
}

/// Runs the profile `tests/fixtures/<fixture>.toml` under `name`, quietly,
/// within 60 s.
fn fixture_run(name: &str, fixture: &str) -> Run {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{fixture}.toml"));
    let profile = profile.to_str().unwrap();
    serial_run(
        &[name, "--profile-file", profile, "--quiet"],
        Duration::from_secs(60),
    )
}

#[test]
fn basic_short_run_passes_with_zero_loss() {
    let run = serial_run(&["basic", "--duration", "4s"], Duration::from_secs(60));
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    assert!(run.stdout().contains("RESULT: PASS"), "{}", run.describe());
    assert!(run.total("sent") > 3000, "{}", run.describe());
    run.assert_exact();
    let s = run.summary();
    assert_eq!(s["analyzers"].as_array().unwrap().len(), 3);
    assert_eq!(s["emitters"].as_array().unwrap().len(), 3);
    assert!(s["distributor"]["peak_rss_mib"].as_f64().unwrap() > 0.0);
    assert_eq!(s["distributor"]["stop"]["exit_code"], 0);
    let dir = run.results_dir.as_ref().unwrap();
    for f in [
        "summary.txt",
        "summary.json",
        "timeline.csv",
        "weights.csv",
        "chart.svg",
        "logdist.log",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    let timeline = std::fs::read_to_string(dir.join("timeline.csv")).unwrap();
    assert!(timeline.lines().count() >= 4, "{timeline}");
    let svg = std::fs::read_to_string(dir.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("throughput"));
    // The progress line went to stderr, once a second.
    assert!(run.stderr().contains("offered") && run.stderr().contains("delivered"));
}

#[test]
fn chaos_short_run_passes_with_zero_loss() {
    let run = serial_run(
        &["chaos", "--duration", "6s", "--quiet"],
        Duration::from_secs(90),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    run.assert_exact();
    let sum = |k: &str| run.analyzer_sum(k);
    assert!(sum("kills") >= 1, "no kill happened\n{}", run.describe());
    assert!(sum("stalls") >= 1, "no stall happened\n{}", run.describe());
    assert!(
        sum("restarts") >= 1,
        "no restart happened\n{}",
        run.describe()
    );
    // The partition fault ran (as root with iproute2, as in CI): the last
    // analyzer's link was cut and restored, and nothing was lost. Elsewhere
    // the run says why it was skipped.
    match logdist_netns::unavailable() {
        None => {
            assert!(sum("partitions") >= 1, "no partition\n{}", run.describe());
            let kinds: Vec<&str> = run.summary()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap())
                .collect();
            assert!(
                kinds.contains(&"partition") && kinds.contains(&"partition-end"),
                "{kinds:?}"
            );
        }
        Some(reason) => {
            println!("partition fault skipped: {reason}");
            let warnings = run.summary()["warnings"].to_string();
            assert!(warnings.contains("partition"), "{warnings}");
        }
    }
    // The kill threw away unacked messages, and yet nothing was lost: the
    // distributor redelivered them.
    assert!(sum("dropped_unacked") >= 1, "{}", run.describe());
    // The analyzers themselves recorded the chaos: a kill, and a stall that
    // began and ended.
    let kinds: Vec<&str> = run.summary()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["kill", "stall", "stall-end"] {
        assert!(
            kinds.contains(&kind),
            "no {kind} event in {kinds:?}\n{}",
            run.describe()
        );
    }
}

#[test]
fn analyzer_that_drops_messages_fails_the_run_with_loss() {
    let run = fixture_run("broken", "broken_analyzer");
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    assert!(run.stdout().contains("RESULT: FAIL"), "{}", run.describe());
    assert!(run.stderr().contains("LOSS:"), "{}", run.describe());
    assert!(
        run.stderr().contains("drop_every test hook"),
        "the reason names the cause\n{}",
        run.describe()
    );
    // Exactly the messages the hook dropped are lost, and (no kills in this
    // run) nothing is processed twice.
    let hooked = run.analyzer_sum("hook_dropped");
    assert!(hooked > 0, "the hook dropped nothing\n{}", run.describe());
    assert_eq!(run.total("lost"), hooked, "{}", run.describe());
    assert_eq!(run.total("duplicated"), 0, "{}", run.describe());
}

/// Syslog emitters (both framings) beside a frame emitter: every message
/// arrives exactly once, at the priority of its severity, at a frame and an
/// ndjson analyzer.
#[test]
fn mixed_frame_and_syslog_emitters_deliver_exactly_once() {
    let run = fixture_run("mixed-syslog", "mixed_syslog");
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    run.assert_exact();
    assert!(run.total("sent") > 3000, "{}", run.describe());
}

/// `ndjson_ack` emitters against memory mode, nothing killed: every line is
/// answered `ok` and arrives exactly once.
#[test]
fn ndjson_ack_emitters_lose_nothing_acked() {
    let run = fixture_run("ndjson-ack", "ndjson_ack");
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    run.assert_exact();
    let s = run.summary();
    assert_eq!(s["emitter_kind"], "ndjson_ack");
    assert_eq!(s["durability"]["mode"], "memory");
    let acked = s["acks"]["acked_ok"].as_u64().unwrap();
    assert!(acked > 3000, "{}", run.describe());
    // No connection was lost: every line was answered, and `ok`.
    assert_eq!(acked, run.total("sent"), "{}", run.describe());
    assert_eq!(run.total("received"), acked);
    for key in ["rejected", "unanswered", "unacked_received", "reconnects"] {
        assert_eq!(s["acks"][key], 0, "{key}\n{}", run.describe());
    }
    assert!(run.stdout().contains("acked ok"), "{}", run.describe());
}

/// `--durability memory --durability-sync write` reach the run's config and
/// the report. (Disk mode itself runs in `crash_in_disk_mode_loses_nothing_acked`.)
#[test]
fn durability_flags_set_the_run_config() {
    let run = serial_run(
        &[
            "basic",
            "--duration",
            "2s",
            "--quiet",
            "--durability",
            "memory",
            "--durability-sync",
            "write",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    run.assert_exact();
    let dir = run.results_dir.as_ref().unwrap();
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("logdist.toml")).unwrap()).unwrap();
    assert_eq!(config["durability"]["mode"].as_str(), Some("memory"));
    assert_eq!(config["durability"]["sync"].as_str(), Some("write"));
    assert_eq!(run.summary()["durability"]["mode"], "memory");
    assert!(
        run.stdout().contains("logdist durability: memory"),
        "{}",
        run.describe()
    );
}

/// The shipped `crash` profile with a shorter kill interval, quiet tail and
/// drain, for a run of seconds; written into `dir`.
fn short_crash_profile(dir: &Path, interval: &str, quiet_tail: &str, drain: &str) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtest/profiles/crash.toml");
    let text = std::fs::read_to_string(shipped).unwrap();
    let mut profile: toml::Table = toml::from_str(&text).unwrap();
    let set = |t: &mut toml::Table, section: &str, key: &str, value: &str| {
        t[section]
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value.into());
    };
    set(&mut profile, "crash", "interval", interval);
    set(&mut profile, "crash", "quiet_tail", quiet_tail);
    set(&mut profile, "checks", "drain_timeout", drain);
    let path = dir.join("crash.toml");
    std::fs::write(&path, toml::to_string(&profile).unwrap()).unwrap();
    path
}

/// Checks a crash run's restarts: each one ready, and every emitter acked
/// `ok` again by the new logdist on the same ports; `kills` of them.
fn assert_restarts(run: &Run, kills: usize) {
    let s = run.summary();
    let restarts = s["crash"]["restarts"].as_array().unwrap();
    assert_eq!(restarts.len(), kills, "{}", run.describe());
    for r in restarts {
        assert!(r["ready_secs"].as_f64().unwrap() < 30.0, "{r}");
        assert_ne!(r["old_pid"], r["new_pid"]);
        assert!(
            r["all_acked_secs"].as_f64().is_some(),
            "{r}\n{}",
            run.describe()
        );
    }
    // Every emitter reconnected after every kill.
    assert!(
        s["acks"]["reconnects"].as_u64().unwrap()
            >= (s["emitters"].as_array().unwrap().len() * kills) as u64,
        "{}",
        run.describe()
    );
    let log =
        std::fs::read_to_string(run.results_dir.as_ref().unwrap().join("logdist.log")).unwrap();
    assert_eq!(
        log.matches("logdist-loadtest: SIGKILL to pid").count(),
        kills
    );
    assert!(run.stdout().contains("all acked s"), "{}", run.describe());
}

/// The crash fault against memory mode: logdist is SIGKILLed twice and
/// restarted on the same ports; emitters and analyzers reconnect, and the
/// messages it had acked but not delivered are gone, which the run must
/// report as LOSS.
#[test]
fn crash_in_memory_mode_loses_acked_messages() {
    let dir = tempfile::tempdir().unwrap();
    let profile = short_crash_profile(dir.path(), "3s", "2s", "3s");
    let run = serial_run(
        &[
            "crash",
            "--profile-file",
            profile.to_str().unwrap(),
            "--duration",
            "8s",
            "--durability",
            "memory",
            "--quiet",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    assert!(
        run.stderr().contains("LOSS:") && run.stderr().contains("acked ok by logdist"),
        "{}",
        run.describe()
    );
    assert!(run.total("lost") > 0);
    assert_eq!(run.summary()["durability"]["mode"], "memory");
    assert_restarts(&run, 2);
}

/// The crash profile as it is meant: disk mode, two SIGKILLs, and every
/// message logdist acked `ok` reaches an analyzer.
#[test]
fn crash_in_disk_mode_loses_nothing_acked() {
    let dir = tempfile::tempdir().unwrap();
    let profile = short_crash_profile(dir.path(), "8s", "5s", "30s");
    let run = serial_run(
        &[
            "crash",
            "--profile-file",
            profile.to_str().unwrap(),
            "--duration",
            "25s",
            "--quiet",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    assert_eq!(run.total("lost"), 0, "{}", run.describe());
    let s = run.summary();
    assert_eq!(s["durability"]["mode"], "disk");
    assert_eq!(s["durability"]["sync"], "fsync");
    assert!(s["acks"]["acked_ok"].as_u64().unwrap() > 10_000);
    let spool = run.results_dir.as_ref().unwrap().join("spool");
    assert!(spool.is_dir(), "no spool at {}", spool.display());
    assert_restarts(&run, 2);
}

/// A logdist started by the test, killed when dropped.
struct Distributor(Child);

impl Drop for Distributor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the logdist binary on 127.0.0.1 ephemeral ports (one emitter
/// listener without acks); returns it and its ready file.
fn start_distributor(dir: &Path) -> (Distributor, Value) {
    let bin = logdist_bin();
    let config = dir.join("logdist.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nack = \"none\"\n\
             [analyzers]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [delivery]\ndead_letter_path = \"{}\"\n",
            dir.join("dead.ndjson").display()
        ),
    )
    .unwrap();
    let ready = dir.join("ready.json");
    let distributor = Distributor(
        Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let info: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break serde_json::from_str(&text).unwrap();
        }
        assert!(Instant::now() < deadline, "logdist did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    };
    (distributor, info)
}

#[test]
fn target_mode_uses_a_running_distributor() {
    let serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_d, info) = start_distributor(dir.path());
    let target = info["listeners"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let analyzers = info["analyzers"].as_str().unwrap().to_string();
    // The binary is not needed with --target.
    let run = run_serialized(
        &serial,
        &[
            "basic",
            "--duration",
            "2s",
            "--quiet",
            "--target",
            &target,
            "--analyzer-target",
            &analyzers,
        ],
        "/nonexistent/not-needed",
        Duration::from_secs(60),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    run.assert_exact();
    assert!(run.total("sent") > 1000);
    assert_eq!(run.summary()["target"], target.as_str());
    assert!(run.summary()["distributor"].is_null());
}

/// Emitters and analyzers over mutual TLS: TLS terminators (test
/// certificates, client certificates required) in front of a running
/// logdist's emitter and analyzer listeners.
#[test]
fn emitters_and_analyzers_over_mutual_tls() {
    use logdist_net::test_pki::{TestPki, TlsTerminator};
    let serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_d, info) = start_distributor(dir.path());
    let address = |v: &Value| v.as_str().unwrap().parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pki = TestPki::generate(&[]);
    let files = pki.write_to(&dir.path().join("certs")).unwrap();
    let (emitters, analyzers) = runtime.block_on(async {
        let config = pki.server_config(true);
        (
            TlsTerminator::start(config.clone(), address(&info["listeners"][0]["address"]))
                .await
                .unwrap(),
            TlsTerminator::start(config, address(&info["analyzers"]))
                .await
                .unwrap(),
        )
    });
    let (e, a) = (emitters.addr.to_string(), analyzers.addr.to_string());
    let run = run_serialized(
        &serial,
        &[
            "basic",
            "--duration",
            "2s",
            "--quiet",
            "--target",
            &e,
            "--analyzer-target",
            &a,
            "--tls",
            "--analyzer-tls",
            "--tls-ca",
            files.ca.to_str().unwrap(),
            "--tls-cert",
            files.client.to_str().unwrap(),
            "--tls-key",
            files.client_key.to_str().unwrap(),
        ],
        "/nonexistent/not-needed",
        Duration::from_secs(60),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    run.assert_exact();
    assert!(run.total("sent") > 1000, "{}", run.describe());
    // Every emitter and analyzer connection was TLS, none refused.
    assert_eq!(emitters.accepted(), 3);
    assert!(analyzers.accepted() >= 3, "{}", analyzers.accepted());
    assert_eq!(emitters.failed() + analyzers.failed(), 0);

    // Without the client certificate the listeners refuse: the run cannot
    // be carried out (exit 2) and says why.
    let run = run_serialized(
        &serial,
        &[
            "basic",
            "--duration",
            "1s",
            "--quiet",
            "--target",
            &e,
            "--analyzer-target",
            &a,
            "--tls",
            "--analyzer-tls",
            "--tls-ca",
            files.ca.to_str().unwrap(),
        ],
        "/nonexistent/not-needed",
        Duration::from_secs(60),
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", run.describe());
    assert!(analyzers.failed() > 0, "{}", run.describe());
    drop(runtime);
}

/// `--tls-dir`: logdist started with every listener on mutual TLS.
#[test]
fn tls_dir_runs_logdist_on_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let run = serial_run(
        &[
            "basic",
            "--duration",
            "2s",
            "--quiet",
            "--tls-dir",
            certs.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        assert!(certs.join(f).is_file(), "{f} not made\n{}", run.describe());
    }
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    run.assert_exact();
    let config =
        std::fs::read_to_string(run.results_dir.as_ref().unwrap().join("logdist.toml")).unwrap();
    assert!(config.contains("client_ca"), "{config}");
}

#[test]
fn missing_logdist_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = loadtest(
        &[
            "basic",
            "--duration",
            "1s",
            "--logdist-bin",
            "/nonexistent/logdist",
        ],
        dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", run.describe());
    assert!(
        run.stderr()
            .contains("logdist binary not found at /nonexistent/logdist")
            && run.stderr().contains("cargo build --release -p logdist"),
        "{}",
        run.describe()
    );
}

/// A short `max --baseline relay`: the relay's ramp and logdist's both
/// have a maximum, the report compares them, and every report carries what
/// logdist and the tester cost per message (user and system CPU apart,
/// context switches, system calls or why not), in summary.json, summary.txt
/// and per second in timeline.csv. The steps are slow and the latency bound
/// generous, so every step passes on a loaded machine too.
#[test]
fn max_with_relay_baseline_reports_both_maxima_and_costs() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("short-max.toml");
    std::fs::write(
        &profile,
        r#"
        name = "short-max"
        duration = "3s"
        distributor_config = "configs/max.toml"
        checksum = "fnv"
        [emitters]
        count = 4
        rate = 0
        tick = "5ms"
        [[analyzers]]
        count = 2
        weight = 1.0
        ack_every = 200
        ack_idle = "5ms"
        [checks]
        check_shares = false
        [ramp]
        start_rate = 20000
        factor = 1.5
        step = "1s"
        max_p99 = "2s"
        drain_timeout = "5s"
        min_offered = 0.5
        "#,
    )
    .unwrap();
    let run = serial_run(
        &[
            "max",
            "--profile-file",
            profile.to_str().unwrap(),
            "--baseline",
            "relay",
            "--quiet",
        ],
        Duration::from_secs(120),
    );
    let s = run.summary();
    let relay_best = &s["baseline"]["ramp"]["best"];
    assert!(
        relay_best["offered_rate"].as_f64().unwrap() > 10_000.0,
        "{}",
        run.describe()
    );
    assert_eq!(relay_best["lost"], 0);
    assert!(s["ramp"]["best"]["offered_rate"].as_f64().unwrap() > 10_000.0);
    let ratio = s["baseline"]["ratio_msgs"].as_f64().unwrap();
    assert!(ratio > 0.0, "{}", run.describe());
    assert_eq!(s["baseline"]["stop"]["exit_code"], 0);
    // The relay's own CPU at its best step, measured apart from the tester's.
    let relay_cost = &relay_best["costs"]["distributor"];
    assert!(relay_cost["messages"].as_u64().unwrap() > 0, "{relay_cost}");

    let costs = &s["costs"]["distributor"];
    assert!(costs["user_us_per_msg"].as_f64().unwrap() > 0.0, "{costs}");
    assert!(costs["sys_us_per_msg"].as_f64().unwrap() > 0.0, "{costs}");
    assert!(costs["ctx_switches_per_msg"].as_f64().unwrap() >= 0.0);
    // System calls: counted, or the report says why not.
    assert!(
        costs["syscalls_per_msg"].as_f64().is_some_and(|n| n > 0.0)
            || s["syscalls_unavailable"].is_string(),
        "{}",
        run.describe()
    );
    assert!(s["costs"]["loadtest"]["cpu_pct"].as_f64().unwrap() > 0.0);

    let text = run.stdout();
    assert!(text.contains("\nMAX SUSTAINED: "), "{text}");
    assert!(text.contains("RELAY MAX SUSTAINED: "), "{text}");
    assert!(text.contains("LOGDIST / RELAY: "), "{text}");
    assert!(text.contains("context switches"), "{text}");
    let dir = run.results_dir.as_ref().unwrap();
    for f in ["timeline.csv", "relay-timeline.csv"] {
        let timeline = std::fs::read_to_string(dir.join(f)).unwrap();
        let header = timeline.lines().next().unwrap();
        for column in [
            "distributor_user_us_per_msg",
            "distributor_sys_us_per_msg",
            "distributor_ctx_switches_per_msg",
            "distributor_syscalls_per_msg",
            "loadtest_cpu_pct",
        ] {
            assert!(header.contains(column), "{f} lacks {column}: {header}");
        }
    }
}

#[test]
fn baseline_needs_a_ramp_profile() {
    let dir = tempfile::tempdir().unwrap();
    let run = loadtest(
        &["basic", "--baseline", "relay"],
        dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", run.describe());
    assert!(
        run.stderr().contains("--baseline relay needs"),
        "{}",
        run.describe()
    );
}

#[test]
fn help_explains_the_options() {
    let out = Command::new(loadtest_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--duration",
        "--profile-file",
        "--target",
        "--analyzer-target",
        "--logdist-bin",
        "--results-dir",
        "--checksum",
        "--seed",
        "--tls",
        "--analyzer-tls",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "--tls-server-name",
        "--tls-dir",
        "--analyzer-token",
        "--durability",
        "--durability-sync",
        "--baseline",
        "basic, throughput, chaos, max, crash",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
