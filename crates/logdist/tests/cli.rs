//! The `logdist` binary as a user runs it: help, config errors, ready file,
//! SIGTERM shutdown with a clean exit.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "support/pki.rs"]
mod pki;

const BIN: &str = env!("CARGO_BIN_EXE_logdist");

/// Kills the child if a test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_file(path: &std::path::Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("logdist exited early with {status}");
        }
        assert!(Instant::now() < deadline, "no ready file");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn help_documents_flags_and_env_vars() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--config",
        "--listen",
        "--analyzer-listen",
        "LOGDIST_CONFIG",
        "--ready-file",
        "--shutdown-grace",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn bad_config_names_the_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (text, key) in [
        ("[limits]\nmax_frame_bytes = 3\n", "limits.max_frame_bytes"),
        ("[analyzers]\nwindoww = 3\n", "windoww"),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(key), "{err}");
    }
}

/// Runs the binary until it exits (killing it after 10 s: a config that
/// should have been refused must not leave a server running).
fn exit_of(command: &mut Command) -> (Option<i32>, String) {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "logdist kept running");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(running.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn unusable_tls_files_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("test CA");
    let (one, two) = (ca.issue(&["localhost"]), ca.issue(&["localhost"]));
    let cert = pki::write(dir.path(), "server.pem", &one.cert);
    let other_key = pki::write(dir.path(), "other-key.pem", &two.key);
    let missing = dir.path().join("missing.pem");
    let path = dir.path().join("tls.toml");
    let config = |listener_tls: &str| {
        format!(
            r#"
[[listeners]]
address = "127.0.0.1:0"

[[listeners]]
address = "127.0.0.1:0"
{listener_tls}

[analyzers]
listen = "127.0.0.1:0"

[admin]
listen = ""

[delivery]
dead_letter_path = "{}"
"#,
            dir.path().join("dead.ndjson").display()
        )
    };
    for (tls, key, problem) in [
        (
            format!("tls = {{ cert = {cert:?}, key = {other_key:?} }}"),
            "listeners[1].tls.key",
            "does not match",
        ),
        (
            format!("tls = {{ cert = {missing:?}, key = {other_key:?} }}"),
            "listeners[1].tls.cert",
            "missing.pem",
        ),
        (
            "allow = [\"10.0.0.0/8\", \"10.0.0.0/99\"]".to_string(),
            "listeners[1].allow",
            "10.0.0.0/99",
        ),
    ] {
        std::fs::write(&path, config(&tls)).unwrap();
        let (code, stderr) = exit_of(Command::new(BIN).arg("--config").arg(&path));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
        assert!(stderr.contains(problem), "{problem} not said: {stderr}");
    }
}

#[test]
fn ready_file_then_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--ack-listen", "127.0.0.1:0"])
        .args(["--analyzer-listen", "127.0.0.1:0", "--shutdown-grace", "1s"])
        .args(["--worker-threads", "1"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--dead-letter-path")
        .arg(dir.path().join("dead.ndjson"))
        .arg("--ready-file")
        .arg(&ready)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let text = wait_for_file(&ready, &mut running.0);
    let addresses: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(addresses["pid"], running.0.id());
    let acked: std::net::SocketAddr = addresses["listeners"][1]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(addresses["listeners"][1]["ack"], "message");

    // The shipper listener answers; with no analyzer the message waits (backpressure),
    // so send a bad line, which is answered at once.
    let mut shipper = TcpStream::connect(acked).unwrap();
    shipper
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    shipper.write_all(b"not json\n").unwrap();
    let mut line = String::new();
    BufReader::new(&shipper).read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"status\":\"error\""), "{line}");

    let pid = running.0.id() as i32;
    // SAFETY: kill(2) on the pid of the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "logdist did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(running.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}
