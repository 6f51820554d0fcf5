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

/// Runs the binary on `config_text`; returns its exit code and stderr.
fn run_config(config_text: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn unusable_token_files_and_weights_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n  \n").unwrap();
    let missing = dir.path().join("missing");
    for (text, key) in [
        (
            format!("[admin]\ntoken_file = \"{}\"\n", missing.display()),
            "admin.token_file",
        ),
        (
            format!("[admin]\ntoken_file = \"{}\"\n", empty.display()),
            "admin.token_file",
        ),
        (
            format!("[analyzers]\ntokens_file = \"{}\"\n", missing.display()),
            "analyzers.tokens_file",
        ),
        (
            format!("[analyzers]\ntokens_file = \"{}\"\n", empty.display()),
            "analyzers.tokens_file",
        ),
        (
            "[analyzers]\nmax_weight = 0\n".to_string(),
            "analyzers.max_weight",
        ),
        (
            "[analyzers]\nmax_weight = -5.0\n".to_string(),
            "analyzers.max_weight",
        ),
        (
            "[analyzers]\nmax_weight = nan\n".to_string(),
            "analyzers.max_weight",
        ),
        (
            "[[analyzers.static]]\nid = \"s\"\naddress = \"127.0.0.1:1\"\nweight = 1000.5\n"
                .to_string(),
            "analyzers.static.weight",
        ),
    ] {
        let (code, err) = run_config(&text, &[]);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn token_values_never_appear_in_errors_or_help() {
    let (code, err) = run_config("[admin]\ntoken = \"not valid SECRETVALUE\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("admin.token"), "{err}");
    assert!(!err.contains("SECRETVALUE"), "{err}");

    let out = Command::new(BIN)
        .arg("--help")
        .env("LOGDIST_ADMIN_TOKEN", "SECRETVALUE")
        .env("LOGDIST_ANALYZER_TOKENS", "SECRETVALUE")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("LOGDIST_ADMIN_TOKEN"), "{help}");
    assert!(!help.contains("SECRETVALUE"), "{help}");
}

/// Starts the binary with `args` and `env`; returns it and its ready file's addresses.
fn start(
    args: &[&str],
    env: &[(&str, &str)],
    dir: &std::path::Path,
) -> (Running, serde_json::Value) {
    let ready = dir.join("ready.json");
    let child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--shutdown-grace", "1s"])
        .args(["--worker-threads", "1"])
        .args(args)
        .arg("--dead-letter-path")
        .arg(dir.join("dead.ndjson"))
        .arg("--ready-file")
        .arg(&ready)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let text = wait_for_file(&ready, &mut running.0);
    (running, serde_json::from_str(&text).unwrap())
}

/// Stops the child with SIGTERM and returns its stderr.
fn stop(mut running: Running) -> String {
    let pid = running.0.id() as i32;
    // SAFETY: kill(2) on the pid of the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "logdist did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(running.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    stderr
}

fn address(value: &serde_json::Value) -> std::net::SocketAddr {
    value.as_str().unwrap().parse().unwrap()
}

/// Sends a JSON hello; returns the reply line.
fn hello_reply(analyzers: std::net::SocketAddr, hello: &str) -> String {
    let mut stream = TcpStream::connect(analyzers).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(format!("{hello}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    line
}

/// The status code of a GET on the admin API.
fn admin_status(admin: std::net::SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn tokens_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("LOGDIST_ANALYZER_TOKENS", "env-one, env-two"),
        ("LOGDIST_ADMIN_TOKEN", "env-admin"),
    ];
    let (running, addresses) = start(
        &[
            "--analyzer-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &env,
        dir.path(),
    );
    let analyzers = address(&addresses["analyzers"]);
    let reply = hello_reply(analyzers, r#"{"id":"a","weight":1}"#);
    assert!(reply.contains("\"reason\":\"unauthorized\""), "{reply}");
    let reply = hello_reply(analyzers, r#"{"id":"a","weight":1,"token":"env-two"}"#);
    assert_eq!(reply, "{\"status\":\"ok\"}\n");

    let admin = address(&addresses["admin"]);
    assert_eq!(admin_status(admin, "/api/v1/stats", None), 401);
    assert_eq!(admin_status(admin, "/api/v1/stats", Some("env-one")), 401);
    assert_eq!(admin_status(admin, "/api/v1/stats", Some("env-admin")), 200);
    let stderr = stop(running);
    for token in ["env-one", "env-two", "env-admin"] {
        assert!(!stderr.contains(token), "{token} logged:\n{stderr}");
    }
}

#[test]
fn open_listeners_are_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    // Bound on every interface (no traffic leaves the host: nothing connects).
    let (running, _) = start(
        &[
            "--analyzer-listen",
            "0.0.0.0:0",
            "--admin-listen",
            "0.0.0.0:0",
        ],
        &[],
        dir.path(),
    );
    let stderr = stop(running);
    assert_eq!(
        stderr.matches("analyzers.tokens is empty").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("admin.token is not set").count(),
        1,
        "{stderr}"
    );

    let (running, _) = start(
        &[
            "--analyzer-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
        dir.path(),
    );
    let stderr = stop(running);
    assert!(!stderr.contains("analyzers.tokens"), "{stderr}");
    assert!(!stderr.contains("admin.token"), "{stderr}");
}
