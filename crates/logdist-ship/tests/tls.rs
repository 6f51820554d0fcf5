//! The shipper over TLS: against a TLS terminator (certificates made in a
//! temporary directory) in front of a real in-process logdist or a fake
//! server. Delivery, acks, reconnects and checkpoints as over plain TCP; a
//! server certificate that does not verify, or a missing client certificate,
//! is a connection failure retried and then given up with exit code 1.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use logdist_net::test_pki::{PkiFiles, TestPki, TlsTerminator};
use support::*;

struct Pki {
    dir: tempfile::TempDir,
    files: PkiFiles,
    /// A CA (and client certificate) the servers do not know.
    other: PkiFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let files = TestPki::generate(&[])
        .write_to(&dir.path().join("pki"))
        .unwrap();
    let other = TestPki::generate(&[])
        .write_to(&dir.path().join("other"))
        .unwrap();
    Pki { dir, files, other }
}

/// Shipper settings for `addr` over TLS, trusting `ca`.
fn tls_config(files: &[&Path], addr: SocketAddr, ca: &Path) -> logdist_ship::Config {
    let mut config = ship_config(files, addr);
    config.tls = true;
    config.tls_ca = Some(ca.to_path_buf());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_a_file_over_tls_to_logdist_and_gets_every_ack() {
    let pki = pki();
    let server = Logdist::start().await;
    let analyzer = Analyzer::connect(&server).await;
    let terminator =
        TlsTerminator::start(pki.files.server_config(false).unwrap(), server.shipper_addr)
            .await
            .unwrap();
    let file = pki.dir.path().join("app.log");
    let lines = log_lines("tls", 0, 2000);
    append(&file, &lines);
    let want = expected(&lines);
    for compress in [false, true] {
        let mut config = tls_config(&[&file], terminator.addr, &pki.files.ca);
        config.batch_size = 50;
        config.compress = compress;
        let before = analyzer.count();
        let summary = within("run", logdist_ship::run(config, std::future::pending()))
            .await
            .unwrap();
        assert_eq!(summary.exit_code(), 0, "{summary}");
        assert_eq!((summary.shipped, summary.rejected), (2000, 0), "{summary}");
        analyzer.wait_for(before + want.len()).await;
        assert_exactly_once(&analyzer.payloads()[before..], &want);
    }
    assert_eq!(terminator.accepted(), 2, "one TLS connection per run");
    assert_eq!(terminator.failed(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tls_connection_is_resent_on_a_new_one_and_checkpointed() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let lines = log_lines("drop", 0, 300);
    append(&file, &lines);
    let want = expected(&lines);
    // The first connection acks 37 lines and closes; later ones ack everything.
    let fake = FakeServer::start(Arc::new(|conn, n, _| {
        (conn > 0 || n < 37).then_some(Reply::Ok)
    }))
    .await;
    let terminator = TlsTerminator::start(pki.files.server_config(false).unwrap(), fake.addr)
        .await
        .unwrap();
    let cp = dir.path().join("cp");
    let mut config = tls_config(&[&file], terminator.addr, &pki.files.ca);
    config.batch_size = 10;
    config.checkpoint = Some(cp.clone());
    let summary = within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!(summary.shipped, 300);
    assert!(summary.resent > 0, "{summary}");
    assert!(terminator.accepted() >= 2, "reconnected over TLS");
    assert_exactly_once(&fake.acked_ok(), &want);
    let size = std::fs::metadata(&file).unwrap().len();
    let checkpoint = std::fs::read_to_string(&cp).unwrap();
    assert!(
        checkpoint.contains(&format!("\"offset\":{size}")),
        "{checkpoint}"
    );
}

/// A listener on 127.0.0.1 whose connections have a small receive buffer.
fn small_buffer_listener() -> tokio::net::TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(16).unwrap();
    socket.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(socket.into()).unwrap()
}

/// Backpressure over TLS: the server is slower than the shipper and its
/// buffers are small, so writes block and TLS holds records back; every line
/// still leaves (the shipper flushes what TLS holds) and is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_everything_over_tls_when_the_server_reads_slowly() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.log");
    let padding = "x".repeat(60_000);
    let lines: Vec<String> = (0..400)
        .map(|i| format!("2024-01-15 08:00:00 INFO line {i} {padding}"))
        .collect();
    append(&file, &lines);
    // The server takes a millisecond per line and its buffers are small:
    // every buffer between it and the shipper stays full.
    let fake = FakeServer::serve(
        small_buffer_listener(),
        Arc::new(|_, _, _| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            Some(Reply::Ok)
        }),
    );
    let terminator = TlsTerminator::serve(
        small_buffer_listener(),
        pki.files.server_config(false).unwrap(),
        fake.addr,
    )
    .unwrap();
    let mut config = tls_config(&[&file], terminator.addr, &pki.files.ca);
    config.batch_size = 100;
    let summary = within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!(summary.shipped, 400, "{summary}");
    assert_eq!(terminator.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_ships_with_the_client_certificate_and_gives_up_without() {
    let pki = pki();
    let fake = FakeServer::start(Arc::new(|_, _, _| Some(Reply::Ok))).await;
    let terminator = TlsTerminator::start(pki.files.server_config(true).unwrap(), fake.addr)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let lines = log_lines("mtls", 0, 100);
    append(&file, &lines);

    let mut config = tls_config(&[&file], terminator.addr, &pki.files.ca);
    config.tls_cert = Some(pki.files.client.clone());
    config.tls_key = Some(pki.files.client_key.clone());
    // Dial "localhost": the default server name is the host.
    config.servers = vec![logdist_ship::ServerAddress::new(
        "localhost",
        terminator.addr.port(),
    )];
    let summary = within("run", logdist_ship::run(config, std::future::pending()))
        .await
        .unwrap();
    assert_eq!(summary.exit_code(), 0, "{summary}");
    assert_eq!(summary.shipped, 100);
    assert_exactly_once(&fake.acked_ok(), &expected(&lines));
    assert_eq!((terminator.accepted(), terminator.failed()), (1, 0));

    // No client certificate, or one from another CA: refused by the server
    // each time, retried, given up.
    for (cert, key) in [
        (None, None),
        (
            Some(pki.other.client.clone()),
            Some(pki.other.client_key.clone()),
        ),
    ] {
        let failed_before = terminator.failed();
        let mut config = tls_config(&[&file], terminator.addr, &pki.files.ca);
        (config.tls_cert, config.tls_key) = (cert, key);
        config.max_retries = 2;
        let summary = within("run", logdist_ship::run(config, std::future::pending()))
            .await
            .unwrap();
        assert!(summary.gave_up, "{summary}");
        assert_eq!((summary.exit_code(), summary.shipped), (1, 0), "{summary}");
        assert_eq!(terminator.failed() - failed_before, 2);
    }
    assert_eq!(fake.acked_ok().len(), 100, "nothing more got through");
}

/// Runs the binary (clean environment plus `env`) off the async threads.
async fn ship_binary(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    within(
        "the binary",
        tokio::task::spawn_blocking(move || {
            Command::new(binary())
                .env_clear()
                .env("RUST_LOG", "warn")
                .envs(env)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_ships_over_tls_and_a_wrong_ca_exits_1_with_a_clear_error() {
    let pki = pki();
    let fake = FakeServer::start(Arc::new(|_, _, _| Some(Reply::Ok))).await;
    let terminator = TlsTerminator::start(pki.files.server_config(true).unwrap(), fake.addr)
        .await
        .unwrap();
    let file = pki.dir.path().join("app.log");
    append(&file, &log_lines("bin", 0, 20));
    let base = |ca: &Path| {
        vec![
            "--log-file".to_string(),
            file.display().to_string(),
            "--server-host".into(),
            "127.0.0.1".into(),
            "--server-port".into(),
            terminator.addr.port().to_string(),
            "--max-retries".into(),
            "2".into(),
            "--backoff-initial".into(),
            "0.01".into(),
            "--tls".into(),
            "--tls-ca".into(),
            ca.display().to_string(),
        ]
    };

    // Settings from the environment: the client certificate.
    let env = vec![
        ("TLS_CERT", pki.files.client.display().to_string()),
        ("TLS_KEY", pki.files.client_key.display().to_string()),
    ];
    let out = ship_binary(base(&pki.files.ca), env.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("shipped_ok=20 rejected=0"), "{stdout}");

    // A CA that did not sign the server's certificate.
    let out = ship_binary(base(&pki.other.ca), env).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("gave up connecting"), "{stdout}");
    assert!(
        stderr.contains("TLS handshake with 127.0.0.1:")
            && stderr.contains("not signed by a CA in --tls-ca/TLS_CA")
            && stderr.contains("giving up"),
        "{stderr}"
    );
    assert_eq!(
        fake.acked_ok().len(),
        20,
        "nothing sent to a server not trusted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_settings_are_usage_errors_naming_the_flag() {
    let pki = pki();
    let file = pki.dir.path().join("app.log");
    append(&file, &log_lines("x", 0, 1));
    let file = file.display().to_string();
    let missing = pki.dir.path().join("missing.pem").display().to_string();
    let client = pki.files.client.display().to_string();
    let server_key = pki.files.server_key.display().to_string();
    let ca = pki.files.ca.display().to_string();
    for (args, message) in [
        (
            vec!["--tls", "--tls-ca", &missing],
            "--tls-ca/TLS_CA: cannot read ",
        ),
        (
            vec!["--tls-ca", &ca],
            "--tls-ca/TLS_CA is set but TLS is off",
        ),
        (
            vec![
                "--tls",
                "--tls-ca",
                &ca,
                "--tls-cert",
                &client,
                "--tls-key",
                &server_key,
            ],
            "is not the private key of the certificate in --tls-cert/TLS_CERT",
        ),
    ] {
        let mut all: Vec<String> = vec!["--log-file".into(), file.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = ship_binary(all, Vec::new()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
