//! The standalone roles against a real logdist binary over real sockets:
//! an emitter and an analyzer over mutual TLS (the profile run's TLS flags)
//! reconcile exactly and stop cleanly; an analyzer with no distributor to
//! reach, or refused by it, and bad flags exit 2 with a message that says why.
//! Needs `target/<profile>/logdist` (`cargo build -p logdist`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn loadtest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_logdist-loadtest"))
}

fn logdist_bin() -> PathBuf {
    let bin = loadtest_bin().parent().unwrap().join("logdist");
    assert!(
        bin.is_file(),
        "logdist binary not found at {}; build it first with `cargo build -p logdist`",
        bin.display()
    );
    bin
}

/// A child killed if the test fails before it ends.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    fn start(command: &mut Command) -> Running {
        Running(Some(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }

    /// SIGTERM (unless it is ending by itself), then its output, within `limit`.
    fn finish(mut self, signal: bool, limit: Duration) -> Output {
        let mut child = self.0.take().unwrap();
        if signal {
            // SAFETY: signalling a child this test started and has not reaped.
            assert_eq!(
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
                0
            );
        }
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "did not end within {limit:?}\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

fn summary(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap_or_else(|| {
            panic!(
                "no summary\nstdout:\n{text}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

/// logdist on 127.0.0.1 with `extra` TOML for its emitter and analyzer
/// listeners; its ready file.
fn start_logdist(dir: &Path, listener_extra: &str, analyzers_extra: &str) -> (Running, Value) {
    let config = dir.join("logdist.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nack = \"none\"\n{listener_extra}\n\
             [analyzers]\nlisten = \"127.0.0.1:0\"\n{analyzers_extra}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [delivery]\ndead_letter_path = \"{}\"\nshutdown_grace = \"2s\"\n",
            dir.join("dead.ndjson").display()
        ),
    )
    .unwrap();
    let ready = dir.join("ready.json");
    let logdist = Running::start(
        Command::new(logdist_bin())
            .arg("--config")
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let info = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break serde_json::from_str(&text).unwrap();
        }
        assert!(Instant::now() < deadline, "logdist did not become ready");
        std::thread::sleep(Duration::from_millis(10));
    };
    (logdist, info)
}

#[test]
fn emitter_and_analyzer_over_mutual_tls_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let pki = logdist_net::test_pki::TestPki::generate(&[])
        .write_to(dir.path())
        .unwrap();
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}",
        pki.server.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let (logdist, info) = start_logdist(dir.path(), &tls, &tls);
    let emitters = info["listeners"][0]["address"].as_str().unwrap();
    let analyzers = info["analyzers"].as_str().unwrap();
    let tls_flags = [
        "--tls".to_string(),
        "--tls-ca".to_string(),
        pki.ca.display().to_string(),
        "--tls-cert".to_string(),
        pki.client.display().to_string(),
        "--tls-key".to_string(),
        pki.client_key.display().to_string(),
    ];

    let analyzer = Running::start(
        Command::new(loadtest_bin())
            .args(["analyzer", "--target", analyzers, "--weight", "1"])
            .args(["--handshake", "seed", "--checksum", "fnv"])
            .args(&tls_flags),
    );
    // The emitter sends for a second and stops by itself.
    let emitter = Running::start(
        Command::new(loadtest_bin())
            .args(["emitter", "--target", emitters, "--rate", "500"])
            .args(["--checksum", "fnv", "--duration", "1s"])
            .args(["--priority-mode", "random", "--priority-levels", "0,7"])
            .args(&tls_flags),
    );
    let out = emitter.finish(false, Duration::from_secs(20));
    assert!(out.status.success(), "{out:?}");
    let sent = summary(&out);
    assert_eq!(sent["stopped"], "duration");
    let count = sent["sent"].as_u64().unwrap();
    assert!(count > 100, "{sent}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("over TLS"), "{stderr}");

    // Everything arrives over TLS; then SIGTERM: it acks what it holds and stops.
    let admin = info["admin"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    while delivered(&admin) < count {
        assert!(Instant::now() < deadline, "not everything was delivered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = analyzer.finish(true, Duration::from_secs(10));
    assert!(out.status.success(), "{out:?}");
    let got = summary(&out);
    assert_eq!(got["stopped"], "SIGTERM");
    let id = sent["id"].as_str().unwrap();
    assert_eq!(got["emitters"][id]["received"], sent["sent"], "{got}");
    assert_eq!(got["emitters"][id]["fingerprint"], sent["fingerprint"]);
    assert_eq!(got["emitters"][id]["by_priority"], sent["by_priority"]);
    assert_eq!(got["checksum_failures"], 0);
    assert_eq!(got["duplicates"], 0);
    let out = logdist.finish(true, Duration::from_secs(10));
    assert!(out.status.success(), "{out:?}");
}

/// `totals.delivered` from the admin API.
fn delivered(admin: &str) -> u64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    write!(
        stream,
        "GET /api/v1/stats HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let stats: Value = serde_json::from_str(body).unwrap();
    stats["totals"]["delivered"].as_u64().unwrap()
}

#[test]
fn roles_that_cannot_run_say_why_and_exit_2() {
    // Nothing listens: the analyzer gives up after --connect-timeout.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = Running::start(Command::new(loadtest_bin()).args([
        "analyzer",
        "--target",
        &nobody,
        "--connect-timeout",
        "500ms",
        "--progress",
        "0s",
    ]))
    .finish(false, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("could not connect to {nobody} within 500ms")),
        "{stderr}"
    );

    // Refused for good: a token is required and none is given.
    let dir = tempfile::tempdir().unwrap();
    let (logdist, info) = start_logdist(dir.path(), "", "tokens = [\"s3cret\"]");
    let out = Running::start(Command::new(loadtest_bin()).args([
        "analyzer",
        "--target",
        info["analyzers"].as_str().unwrap(),
        "--progress",
        "0s",
    ]))
    .finish(false, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("logdist refused the hello") && stderr.contains("unauthorized"),
        "{stderr}"
    );
    drop(logdist);

    // Bad flags name themselves.
    for (args, says) in [
        (
            &["emitter", "--target", "h:1", "--priority-weights", "1"][..],
            "--priority-weights is only for --priority-mode weighted",
        ),
        (&["emitter", "--target", "nowhere"][..], "is not HOST:PORT"),
        (
            &[
                "analyzer",
                "--target",
                "h:1",
                "--handshake",
                "seed",
                "--format",
                "ndjson",
            ][..],
            "--format ndjson needs --handshake hello",
        ),
        (
            &["analyzer", "--target", "h:1", "--tls"][..],
            "--tls needs --tls-ca",
        ),
    ] {
        let out = Command::new(loadtest_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // --help explains.
    for role in ["emitter", "analyzer"] {
        let out = Command::new(loadtest_bin())
            .args([role, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        for needle in ["--target", "--tls-ca", "summary: {json}", "Exit status"] {
            assert!(
                help.contains(needle),
                "{role} --help lacks {needle}:\n{help}"
            );
        }
    }
}
