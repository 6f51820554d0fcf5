//! End-to-end runs of the load test binary against a real logdist binary
//! (`target/<profile>/logdist`, started by the load test as in production).
//! Build it first: `cargo build -p logdist`.
//!
//! The runs are short (seconds) and serialized, so they do not compete for the
//! two cores; each is bounded by a hard timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
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
    }
}

#[test]
fn basic_short_run_passes_with_zero_loss() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = logdist_bin();
    let dir = tempfile::tempdir().unwrap();
    let run = loadtest(
        &[
            "basic",
            "--duration",
            "4s",
            "--logdist-bin",
            bin.to_str().unwrap(),
        ],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    assert!(run.stdout().contains("RESULT: PASS"), "{}", run.describe());
    assert!(run.total("sent") > 3000, "{}", run.describe());
    assert_eq!(run.total("sent"), run.total("received"));
    for key in [
        "lost",
        "duplicated",
        "checksum_failures",
        "priority_mismatches",
    ] {
        assert_eq!(run.total(key), 0, "{key}\n{}", run.describe());
    }
    let s = run.summary();
    assert_eq!(s["passed"], true);
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
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = logdist_bin();
    let dir = tempfile::tempdir().unwrap();
    let run = loadtest(
        &[
            "chaos",
            "--duration",
            "6s",
            "--quiet",
            "--logdist-bin",
            bin.to_str().unwrap(),
        ],
        dir.path(),
        Duration::from_secs(90),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    for key in [
        "lost",
        "duplicated",
        "checksum_failures",
        "priority_mismatches",
    ] {
        assert_eq!(run.total(key), 0, "{key}\n{}", run.describe());
    }
    let analyzers = run.summary()["analyzers"].as_array().unwrap();
    let sum = |k: &str| {
        analyzers
            .iter()
            .map(|a| a[k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(sum("kills") >= 1, "no kill happened\n{}", run.describe());
    assert!(sum("stalls") >= 1, "no stall happened\n{}", run.describe());
    assert!(
        sum("restarts") >= 1,
        "no restart happened\n{}",
        run.describe()
    );
    // The kill threw away unacked messages, and yet nothing was lost: the
    // distributor redelivered them.
    assert!(sum("dropped_unacked") >= 1, "{}", run.describe());
}

#[test]
fn analyzer_that_drops_messages_fails_the_run_with_loss() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = logdist_bin();
    let dir = tempfile::tempdir().unwrap();
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken_analyzer.toml");
    let run = loadtest(
        &[
            "broken",
            "--profile-file",
            profile.to_str().unwrap(),
            "--quiet",
            "--logdist-bin",
            bin.to_str().unwrap(),
        ],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    assert!(run.stdout().contains("RESULT: FAIL"), "{}", run.describe());
    assert!(run.stderr().contains("LOSS:"), "{}", run.describe());
    assert!(
        run.stderr().contains("drop_every test hook"),
        "the reason names the cause\n{}",
        run.describe()
    );
    let lost = run.total("lost");
    let sent = run.total("sent");
    // a1 gets half the messages and drops a tenth of them.
    assert!(
        lost > sent / 40 && lost < sent / 10,
        "lost {lost} of {sent}"
    );
    let failures = run.summary()["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().starts_with("LOSS"))
    );
}

/// A logdist started by the test, killed when dropped.
struct Distributor(Child);

impl Drop for Distributor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn target_mode_uses_a_running_distributor() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = logdist_bin();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logdist.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nack = \"none\"\n\
             [analyzers]\nlisten = \"127.0.0.1:0\"\n\
             [delivery]\ndead_letter_path = \"{}\"\n",
            dir.path().join("dead.ndjson").display()
        ),
    )
    .unwrap();
    let ready = dir.path().join("ready.json");
    let _d = Distributor(
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
    let target = info["listeners"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let analyzers = info["analyzers"].as_str().unwrap().to_string();
    let results = dir.path().join("results");
    let run = loadtest(
        &[
            "basic",
            "--duration",
            "2s",
            "--quiet",
            "--target",
            &target,
            "--analyzer-target",
            &analyzers,
            "--logdist-bin",
            "/nonexistent/not-needed",
        ],
        &results,
        Duration::from_secs(60),
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.describe());
    assert_eq!(run.total("lost"), 0);
    assert!(run.total("sent") > 1000);
    assert_eq!(run.summary()["target"], target.as_str());
    assert!(run.summary()["distributor"].is_null());
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
        "basic, throughput, chaos, max",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
