//! `logdist dead-letter replay` to a TLS emitter listener: a TLS terminator
//! (certificates made in a temporary directory, client certificates
//! required) in front of an in-process distributor's acking listener.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use logdist::cli::ReplayTarget;
use logdist::delivery::replay::{ReplayError, ReplayReport, replay};
use logdist_net::test_pki::{PkiFiles, TestPki, TlsTerminator};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_logdist");

/// 20 frame-born records, one NDJSON-born, and one the distributor refuses
/// (priority 300).
fn dead_letters(file: &Path) {
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!(
            "{{\"message\":\"frame-{i}\",\"origin\":\"frame\",\"priority\":9,\"attempts\":4,\"analyzers\":[],\"final_error\":\"x\",\"failed_at\":\"t\"}}\n"
        ));
    }
    text.push_str("{\"message\":{\"level\":\"ERROR\",\"message\":\"line\"},\"origin\":\"ndjson\",\"priority\":1,\"attempts\":4,\"analyzers\":[],\"final_error\":\"x\",\"failed_at\":\"t\"}\n");
    text.push_str("{\"message\":{\"priority\":300,\"message\":\"refused\"},\"origin\":\"ndjson\",\"priority\":3,\"attempts\":4,\"analyzers\":[],\"final_error\":\"x\",\"failed_at\":\"t\"}\n");
    std::fs::write(file, text).unwrap();
}

fn tls_target(address: String, files: &PkiFiles) -> ReplayTarget {
    ReplayTarget {
        address,
        tls: true,
        tls_ca: Some(files.ca.clone()),
        tls_cert: Some(files.client.clone()),
        tls_key: Some(files.client_key.clone()),
        tls_server_name: None,
    }
}

struct Setup {
    dir: tempfile::TempDir,
    files: PkiFiles,
    other: PkiFiles,
    file: std::path::PathBuf,
    server: TestServer,
    analyzer: SeedAnalyzer,
    terminator: TlsTerminator,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let files = TestPki::generate(&[])
        .write_to(&dir.path().join("pki"))
        .unwrap();
    let other = TestPki::generate(&[])
        .write_to(&dir.path().join("other"))
        .unwrap();
    let file = dir.path().join("dead.ndjson");
    dead_letters(&file);
    let server = TestServer::start().await;
    let analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let terminator =
        TlsTerminator::start(files.server_config(true).unwrap(), server.acked_emitters)
            .await
            .unwrap();
    Setup {
        dir,
        files,
        other,
        file,
        server,
        analyzer,
        terminator,
    }
}

/// Receives `n` messages at the analyzer: (priority, payload).
async fn received(analyzer: &mut SeedAnalyzer, n: usize) -> Vec<(u8, String)> {
    let messages = analyzer.take_and_ack(n).await;
    messages
        .iter()
        .map(|m| {
            (
                m.priority(),
                String::from_utf8(m.payload().to_vec()).unwrap(),
            )
        })
        .collect()
}

fn check_replayed(got: &[(u8, String)]) {
    let frames = got
        .iter()
        .filter(|(p, s)| *p == 9 && s.starts_with("frame-"))
        .count();
    assert_eq!(frames, 20, "{got:?}");
    assert!(
        got.contains(&(
            1,
            r#"{"priority":1,"level":"ERROR","message":"line"}"#.to_string()
        )),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_over_mutual_tls_sends_everything_and_keeps_the_refused() {
    let mut s = setup().await;
    let target = tls_target(format!("localhost:{}", s.terminator.addr.port()), &s.files);
    let report = replay(&s.file, &target, Duration::from_secs(10), 3)
        .await
        .unwrap();
    assert_eq!(
        report,
        ReplayReport {
            replayed: 21,
            kept: 1
        }
    );
    check_replayed(&received(&mut s.analyzer, 21).await);
    let kept = std::fs::read_to_string(&s.file).unwrap();
    assert!(
        kept.lines().count() == 1 && kept.contains("refused"),
        "{kept}"
    );
    assert_eq!(s.terminator.accepted(), 1);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_keeps_everything_when_the_tls_handshake_fails() {
    let s = setup().await;
    let before = std::fs::read_to_string(&s.file).unwrap();
    let port = s.terminator.addr.port();
    // A CA that did not sign the listener's certificate; then no client
    // certificate for a listener that requires one.
    let mut no_cert = tls_target(format!("127.0.0.1:{port}"), &s.files);
    (no_cert.tls_cert, no_cert.tls_key) = (None, None);
    for target in [tls_target(format!("127.0.0.1:{port}"), &s.other), no_cert] {
        let report = replay(&s.file, &target, Duration::from_secs(10), 3)
            .await
            .unwrap();
        assert_eq!(
            report,
            ReplayReport {
                replayed: 0,
                kept: 22
            }
        );
        let after = std::fs::read_to_string(&s.file).unwrap();
        assert_eq!(after.lines().count(), 22);
        assert_eq!(
            sorted_lines(&after),
            sorted_lines(&before),
            "every record kept as it was"
        );
    }
    assert_eq!(s.terminator.accepted(), 0);
    assert_eq!(s.server.stats().accepted, 0, "nothing got through");

    // Settings that cannot be used: an error before the file is touched.
    let mut missing = tls_target(format!("127.0.0.1:{port}"), &s.files);
    missing.tls_ca = Some(s.dir.path().join("missing.pem"));
    let err = replay(&s.file, &missing, Duration::from_secs(10), 3)
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::Tls(_)), "{err}");
    assert!(
        err.to_string().starts_with("--tls-ca: cannot read "),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&s.file).unwrap().lines().count(),
        22
    );
    s.server.shutdown().await;
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_replays_over_tls() {
    let mut s = setup().await;
    let args: Vec<String> = [
        "dead-letter",
        "replay",
        "--file",
        s.file.to_str().unwrap(),
        "--target",
        &format!("127.0.0.1:{}", s.terminator.addr.port()),
        "--tls",
        "--tls-ca",
        s.files.ca.to_str().unwrap(),
        "--tls-cert",
        s.files.client.to_str().unwrap(),
        "--tls-key",
        s.files.client_key.to_str().unwrap(),
        "--tls-server-name",
        "localhost",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let out = within(
        "logdist dead-letter replay",
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(args)
                .env("LOGDIST_LOG", "warn")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exit 1: one record was refused and stays in the file.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("replayed 21 dead letters") && stdout.contains("1 kept in the file"),
        "{stdout}"
    );
    check_replayed(&received(&mut s.analyzer, 21).await);
    assert_eq!(s.terminator.accepted(), 1);

    // --tls-ca without --tls: refused before anything is read.
    let file = s.file.to_str().unwrap().to_string();
    let ca = s.files.ca.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "dead-letter",
                "replay",
                "--file",
                &file,
                "--target",
                "127.0.0.1:1",
                "--tls-ca",
                &ca,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--tls-ca is set but TLS is off: add --tls"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&s.file).unwrap().lines().count(), 1);
    s.server.shutdown().await;
}
