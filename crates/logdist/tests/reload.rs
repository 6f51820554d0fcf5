//! SIGHUP reloads static analyzers from the config file, on the real binary:
//! weights change, removed analyzers go, a bad file changes nothing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_logdist");
const TIMEOUT: Duration = Duration::from_secs(10);

/// Kills the child if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(statics: &[(&str, std::net::SocketAddr, f64)], dir: &Path) -> String {
    let mut text = format!(
        r#"
[[listeners]]
address = "127.0.0.1:0"

[analyzers]
listen = "127.0.0.1:0"

[delivery]
dead_letter_path = "{}"
shutdown_grace = "1s"

[admin]
listen = "127.0.0.1:0"
"#,
        dir.join("dead.ndjson").display()
    );
    for (id, address, weight) in statics {
        text.push_str(&format!(
            "\n[[analyzers.static]]\nid = \"{id}\"\naddress = \"{address}\"\nweight = {weight}\n"
        ));
    }
    text
}

/// `id → (weight, connected)` from `GET /api/v1/analyzers`.
fn analyzers(admin: &str) -> Vec<(String, f64, bool)> {
    let list = get_analyzers(admin);
    list["analyzers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["weight"].as_f64().unwrap(),
                a["connected"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// `GET /api/v1/analyzers`, blocking: a one-shot runtime per call is plenty
/// for a test that polls a few times a second.
fn get_analyzers(admin: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{admin}/api/v1/analyzers"))
            .timeout(TIMEOUT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hangup(child: &Child) {
    // SAFETY: kill(2) on the pid of the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
}

#[test]
fn sighup_reloads_static_analyzers_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The static analyzers: listeners the distributor dials; accepting keeps them connected.
    let one = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let two = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (one.local_addr().unwrap(), two.local_addr().unwrap());
    let path = dir.path().join("logdist.toml");
    std::fs::write(
        &path,
        config(&[("a1", a1, 1.0), ("a2", a2, 1.0)], dir.path()),
    )
    .unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--ready-file")
        .arg(&ready)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log, line by line, so the test can wait for what the reload said.
    let (log_tx, log) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let running = Running(child);
    wait_until("the ready file", || ready.exists());
    let addresses: Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let admin = format!("http://{}", addresses["admin"].as_str().unwrap());
    let _conn1 = one.accept().unwrap();
    let conn2 = two.accept().unwrap().0;
    wait_until("both connected", || {
        analyzers(&admin)
            .iter()
            .filter(|(_, _, connected)| *connected)
            .count()
            == 2
    });

    // New weight for a1, a2 removed: applied without a restart.
    std::fs::write(&path, config(&[("a1", a1, 3.0)], dir.path())).unwrap();
    hangup(&running.0);
    wait_until("the reloaded config", || {
        analyzers(&admin) == [("a1".to_string(), 3.0, true)]
    });
    // a2's session ended: its connection is closed.
    conn2.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(std::io::Read::read(&mut &conn2, &mut buf).unwrap(), 0);

    // A file that does not validate: rejected with a reason, and nothing in it
    // applies, not even the weight change it also carries.
    let mut bad = config(&[("a1", a1, 5.0)], dir.path());
    bad.push_str("\n[limits]\nmax_connections = 0\n");
    std::fs::write(&path, bad).unwrap();
    hangup(&running.0);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no log line saying the reload was rejected");
        if line.contains("config reload rejected") {
            assert!(line.contains("limits.max_connections"), "{line}");
            break;
        }
    }
    assert_eq!(analyzers(&admin), [("a1".to_string(), 3.0, true)]);
    drop(running);
}
