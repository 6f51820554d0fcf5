//! The trust boundary over real sockets and real TLS: TLS and mutual TLS on
//! emitter, analyzer and admin listeners, TLS static analyzers, source
//! network allow lists, connection limits, refusal counting (and its
//! rate-limited log), and certificates reloaded without dropping anyone.
//! Certificates come from rcgen CAs made per test, in a temporary directory.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use logdist::config::{ClientTlsConfig, StaticAnalyzerConfig};
use logdist::delivery::directory::Health;
use logdist::refusal::{Listener, RefusalReason};
use logdist_wire::AnalyzerFormat;
use support::pki::{self, Ca, Logs, server_tls, write};
use support::{
    HelloAnalyzer, SeedAnalyzer, TestServer, connect, emit, frames, halves, send, within,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const ACK_OK: &str = "{\"status\":\"ok\",\"message\":\"received\"}\n";

/// Reads whatever comes back until the connection ends (an error ends it too).
async fn read_until_closed<R: tokio::io::AsyncRead + Unpin>(mut reader: R) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within("the connection to close", reader.read(&mut buf)).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends one NDJSON line over `stream` and returns the reply line ("" when
/// the connection failed or closed instead).
async fn line_and_reply<S>(stream: S, line: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = halves(stream);
    if writer.write_all(line.as_bytes()).await.is_err() || writer.flush().await.is_err() {
        return String::new();
    }
    let mut reader = BufReader::new(reader);
    let mut reply = String::new();
    match within("a reply or a close", reader.read_line(&mut reply)).await {
        Ok(_) => reply,
        Err(_) => String::new(),
    }
}

fn refused(server: &TestServer, listener: Listener, reason: RefusalReason) -> u64 {
    server.stats().refused(listener, reason)
}

#[tokio::test]
async fn tls_emitter_listener_refuses_plaintext_and_acks_clients_that_trust_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let tls = server_tls(dir.path(), "server", &leaf, None);
    let server = TestServer::start_with(|c| c.listeners[1].tls = Some(tls)).await;

    // A plaintext client: its line is not routed, its connection is closed,
    // and the refusal is counted.
    let mut plain = connect(server.acked_emitters).await;
    plain
        .write_all(b"{\"message\":\"in the clear\"}\n")
        .await
        .unwrap();
    let answer = read_until_closed(plain).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("status"),
        "a plaintext client got an answer: {answer:?}"
    );
    server
        .wait_for("the plaintext client's refusal", |s| {
            s.refused(Listener::Emitter, RefusalReason::TlsHandshake) == 1
        })
        .await;
    assert_eq!(server.stats().accepted, 0);

    // A client that trusts the CA: accepted and acknowledged.
    let client = pki::client(&ca, None);
    let stream = pki::connect(&client, server.acked_emitters, "localhost")
        .await
        .unwrap();
    let reply = line_and_reply(stream, "{\"message\":\"over tls\"}\n").await;
    assert_eq!(reply, ACK_OK);
    assert_eq!(server.stats().accepted, 1);

    // A client that trusts another CA gives up on the handshake: refused too.
    let stranger = pki::client(&Ca::new("another CA"), None);
    assert!(
        pki::connect(&stranger, server.acked_emitters, "localhost")
            .await
            .is_err()
    );
    server
        .wait_for("the distrustful client's refusal", |s| {
            s.refused(Listener::Emitter, RefusalReason::TlsHandshake) == 2
        })
        .await;

    // The plain listener next to it is still plain.
    let mut plain = connect(server.emitters).await;
    plain.write_all(&frames(&[(1, b"plain")])).await.unwrap();
    plain.shutdown().await.unwrap();
    server
        .wait_for("the plain message", |s| s.accepted == 2)
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn silent_clients_do_not_hold_up_a_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let tls = server_tls(dir.path(), "server", &ca.issue(&["localhost"]), None);
    let server = TestServer::start_with(|c| c.listeners[1].tls = Some(tls)).await;

    // Two clients that connect and never say a word: their handshakes wait
    // (up to 10 s each) in their own tasks, not in the accept loop...
    let _silent = [
        connect(server.acked_emitters).await,
        connect(server.acked_emitters).await,
    ];
    // ...so the next client is served at once (were the handshakes done in
    // the accept loop, it would wait 20 s).
    let client = pki::client(&ca, None);
    let stream = pki::connect(&client, server.acked_emitters, "localhost")
        .await
        .unwrap();
    let reply = line_and_reply(stream, "{\"message\":\"not held up\"}\n").await;
    assert_eq!(reply, ACK_OK);
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let leaf = ca.issue(&["localhost"]);
    let tls = server_tls(dir.path(), "server", &leaf, Some(&ca));
    let server = TestServer::start_with(|c| c.listeners[1].tls = Some(tls)).await;
    let address = server.acked_emitters;

    // No certificate: under TLS 1.3 the client may think it is connected;
    // the distributor refuses it before reading anything.
    let anonymous = pki::client(&ca, None);
    if let Ok(stream) = pki::connect(&anonymous, address, "localhost").await {
        let reply = line_and_reply(stream, "{\"message\":\"anonymous\"}\n").await;
        assert_eq!(reply, "", "a client without a certificate was answered");
    }
    // A certificate from another CA.
    let other = Ca::new("another CA");
    let forged = pki::client(&ca, Some(&other.issue(&["emitter-1"])));
    if let Ok(stream) = pki::connect(&forged, address, "localhost").await {
        let reply = line_and_reply(stream, "{\"message\":\"forged\"}\n").await;
        assert_eq!(
            reply, "",
            "a client with a foreign certificate was answered"
        );
    }
    server
        .wait_for("both refusals", |s| {
            s.refused(Listener::Emitter, RefusalReason::TlsHandshake) == 2
        })
        .await;
    assert_eq!(server.stats().accepted, 0);

    // A certificate from the CA: accepted.
    let member = pki::client(&ca, Some(&ca.issue(&["emitter-1"])));
    let stream = pki::connect(&member, address, "localhost").await.unwrap();
    let reply = line_and_reply(stream, "{\"message\":\"member\"}\n").await;
    assert_eq!(reply, ACK_OK);
    assert_eq!(server.stats().accepted, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn tls_analyzers_receive_messages_and_plaintext_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let leaf = ca.issue(&["localhost"]);
    let tls = server_tls(dir.path(), "analyzers", &leaf, None);
    let server = TestServer::start_with(|c| c.analyzers.tls = Some(tls)).await;

    // A plaintext seed analyzer: closed, never registered.
    let mut plain = connect(server.analyzers).await;
    plain
        .write_all(&logdist_wire::seed_handshake(1.0))
        .await
        .unwrap();
    read_until_closed(plain).await;
    server
        .wait_for("the plaintext analyzer's refusal", |s| {
            s.refused(Listener::Analyzer, RefusalReason::TlsHandshake) == 1
        })
        .await;
    assert!(server.directory.snapshot().is_empty());

    // A seed analyzer inside TLS: handshake, frames, acks, as in the clear.
    let client = pki::client(&ca, None);
    let stream = pki::connect(&client, server.analyzers, "localhost")
        .await
        .unwrap();
    let (reader, writer) = halves(stream);
    let mut seed = SeedAnalyzer::from_halves(reader, writer, "seed".to_string());
    seed.send_handshake(1.0).await;
    server.wait_analyzers(1).await;
    emit(server.emitters, "seed-", 0..5, 1).await;
    let got = seed.take_and_ack(5).await;
    assert_eq!(got.len(), 5);
    server
        .wait_for("the seed analyzer's acks", |s| s.delivered == 5)
        .await;
    drop(seed);
    server.wait_analyzers(0).await;

    // A JSON-hello analyzer inside TLS.
    let stream = pki::connect(&client, server.analyzers, "localhost")
        .await
        .unwrap();
    let (reader, writer) = halves(stream);
    let (reply, mut hello) = HelloAnalyzer::hello(reader, writer, "h1", 1.0, "ndjson", true).await;
    assert_eq!(reply, "{\"status\":\"ok\"}\n");
    server.wait_analyzers(1).await;
    let mut stream = connect(server.emitters).await;
    stream
        .write_all(b"{\"message\":\"to hello\"}\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let line = hello.next_line().await.unwrap();
    assert!(line.contains("to hello"), "{line}");
    hello.ack().await;
    server.wait_for("the hello ack", |s| s.delivered == 6).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_analyzer_takes_a_burst_larger_than_the_socket_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let tls = server_tls(dir.path(), "analyzers", &ca.issue(&["localhost"]), None);
    let server = TestServer::start_with(|c| {
        c.analyzers.tls = Some(tls);
        c.analyzers.window = 100_000;
        c.analyzers.queue_capacity = 100_000;
    })
    .await;
    let client = pki::client(&ca, None);
    let stream = pki::connect(&client, server.analyzers, "localhost")
        .await
        .unwrap();
    let (reader, writer) = halves(stream);
    let mut seed = SeedAnalyzer::from_halves(reader, writer, "seed".to_string());
    seed.send_handshake(1.0).await;
    server.wait_analyzers(1).await;

    // 16 MB queued at once, read while it is written: batches of many TLS
    // records, writes the socket takes only in part, acks read meanwhile.
    const N: usize = 8_000;
    let padding = "x".repeat(2_000);
    let payloads: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("{i}:{padding}").into_bytes())
        .collect();
    let messages: Vec<(u8, &[u8])> = payloads.iter().map(|p| (1, p.as_slice())).collect();
    let mut emitter = connect(server.emitters).await;
    emitter.write_all(&frames(&messages)).await.unwrap();
    emitter.shutdown().await.unwrap();
    server
        .wait_for("the burst queued", |s| s.routed == N as u64)
        .await;
    let got = seed.take_and_ack(N).await;
    assert_eq!(got.len(), N);
    server
        .wait_for("every message acknowledged", |s| s.delivered == N as u64)
        .await;
    server.shutdown().await;
}

fn fast_reconnect(c: &mut logdist::Config) {
    c.analyzers.reconnect_min = Duration::from_millis(10);
    c.analyzers.reconnect_max = Duration::from_millis(50);
    c.analyzers.probe_interval = Duration::ZERO;
}

#[tokio::test]
async fn tls_static_analyzer_with_a_wrong_name_retries_until_a_reload_fixes_it() {
    let (logs, _capture) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let acceptor = pki::server(&ca.issue(&["analyzer-1"]), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let analyzer = StaticAnalyzerConfig {
        id: "s1".to_string(),
        address: address.to_string(),
        weight: 1.0,
        format: AnalyzerFormat::Frame,
        acks: true,
        tls: Some(ClientTlsConfig {
            ca: write(dir.path(), "ca.pem", &ca.pem()),
            server_name: Some("wrong-name".to_string()),
            cert: None,
            key: None,
        }),
    };
    let server = TestServer::start_with(|c| {
        fast_reconnect(c);
        c.analyzers.statics = vec![analyzer];
    })
    .await;
    emit(server.emitters, "held-", 0..3, 1).await;
    server.wait_for("the messages held", |s| s.held == 3).await;

    // Every attempt ends in a failed handshake (the distributor refuses the
    // name): the analyzer never gets a byte of application data.
    for attempt in 0..3 {
        let (tcp, _) = within("a connection attempt", listener.accept())
            .await
            .unwrap();
        let handshake = within("the handshake", acceptor.accept(tcp)).await;
        assert!(
            handshake.is_err(),
            "attempt {attempt}: the distributor took a certificate for another name"
        );
    }
    let record = server
        .directory
        .snapshot()
        .into_iter()
        .find(|r| &*r.id == "s1")
        .unwrap();
    assert_eq!(record.health, Health::Unhealthy);
    let error = record.last_error.unwrap_or_default();
    assert!(error.contains("TLS handshake failed"), "{error}");
    // Logged once at warn, then at debug, as for any unreachable analyzer.
    assert_eq!(
        logs.count("WARN", "static analyzer unreachable"),
        1,
        "{}",
        logs.text()
    );
    assert!(
        logs.count("DEBUG", "still unreachable") >= 1,
        "{}",
        logs.text()
    );
    assert_eq!(server.stats().delivered, 0);

    // The right name, by reload: the link restarts and connects.
    let mut config = server.config.clone();
    config.analyzers.statics[0]
        .tls
        .as_mut()
        .unwrap()
        .server_name = Some("analyzer-1".to_string());
    let summary = server.reload.reload(config).await.unwrap();
    assert_eq!(summary.restarted, ["s1"]);
    let stream = within("a verified connection", async {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            // An attempt of the old link may still have been on its way.
            if let Ok(stream) = acceptor.accept(tcp).await {
                break stream;
            }
        }
    })
    .await;
    let (reader, writer) = halves(stream);
    let mut analyzer = SeedAnalyzer::from_halves(reader, writer, "s1".to_string());
    let mut got: Vec<String> = analyzer
        .take_and_ack(3)
        .await
        .iter()
        .map(|m| String::from_utf8(m.payload().to_vec()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["held-0", "held-1", "held-2"]);
    server.wait_for("the acks", |s| s.delivered == 3).await;
    server.shutdown().await;
}

#[tokio::test]
async fn allow_lists_refuse_other_sources_without_reading_and_reload_live() {
    let (logs, _capture) = Logs::capture();
    let elsewhere = Some(vec!["10.0.0.0/8".to_string()]);
    let server = TestServer::start_with(|c| {
        c.listeners[0].allow = elsewhere.clone();
        c.analyzers.allow = elsewhere.clone();
    })
    .await;

    for _ in 0..3 {
        let mut emitter = connect(server.emitters).await;
        let _ = emitter.write_all(&frames(&[(1, b"from 127.0.0.1")])).await;
        read_until_closed(emitter).await;
    }
    let analyzer = connect(server.analyzers).await;
    read_until_closed(analyzer).await;
    server
        .wait_for("the refusals", |s| {
            s.refused(Listener::Emitter, RefusalReason::NotAllowed) == 3
                && s.refused(Listener::Analyzer, RefusalReason::NotAllowed) == 1
        })
        .await;
    assert_eq!(server.stats().accepted, 0);
    assert!(server.directory.snapshot().is_empty());
    // One warning per listener and reason; the other refusals only counted.
    assert_eq!(
        logs.count("WARN", "not_allowed"),
        2,
        "refusals flood the log:\n{}",
        logs.text()
    );

    // The counts, in the stats JSON and in /metrics.
    let stats: serde_json::Value = reqwest::get(format!("{}/api/v1/stats", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let totals = &stats["totals"];
    assert_eq!(totals["connections_refused"], 4);
    assert_eq!(
        totals["connections_refused_by"]["emitter"]["not_allowed"],
        3
    );
    assert_eq!(
        totals["connections_refused_by"]["analyzer"]["not_allowed"],
        1
    );
    assert_eq!(
        totals["connections_refused_by"]["admin"]["tls_handshake"],
        0
    );
    let metrics = reqwest::get(format!("{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for sample in [
        "logdist_connections_refused_total{listener=\"emitter\",reason=\"not_allowed\"} 3",
        "logdist_connections_refused_total{listener=\"analyzer\",reason=\"not_allowed\"} 1",
        "logdist_connections_refused_total{listener=\"admin\",reason=\"max_connections\"} 0",
        "logdist_emitter_connections_refused_total 0",
    ] {
        assert!(metrics.contains(sample), "no {sample} in\n{metrics}");
    }

    // 127.0.0.1/32 lets this host in, from the next connection on.
    let mut config = server.config.clone();
    config.listeners[0].allow = Some(vec!["127.0.0.1/32".to_string()]);
    let summary = server.reload.reload(config).await.unwrap();
    assert!(summary.needs_restart.is_empty(), "{summary:?}");
    emit(server.emitters, "allowed-", 0..1, 1).await;
    server
        .wait_for("the allowed message", |s| s.accepted == 1)
        .await;
    assert_eq!(
        refused(&server, Listener::Emitter, RefusalReason::NotAllowed),
        3
    );
    server.shutdown().await;
}

#[tokio::test]
async fn analyzer_connections_over_the_limit_are_refused_and_counted() {
    let server = TestServer::start_with(|c| c.analyzers.max_connections = 1).await;
    let mut first = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let second = connect(server.analyzers).await;
    read_until_closed(second).await;
    server
        .wait_for("the refusal", |s| {
            s.refused(Listener::Analyzer, RefusalReason::MaxConnections) == 1
        })
        .await;
    assert_eq!(connected_analyzers(&server), 1);

    // The first one is unaffected.
    emit(server.emitters, "m", 0..2, 1).await;
    first.take_and_ack(2).await;
    server.shutdown().await;
}

fn connected_analyzers(server: &TestServer) -> usize {
    server
        .directory
        .snapshot()
        .iter()
        .filter(|r| r.connected)
        .count()
}

/// `GET path` over TLS, HTTP/1.1 by hand; the whole response.
async fn https_get(ca: &Ca, address: SocketAddr, path: &str) -> String {
    let client = pki::client(ca, None);
    let stream = pki::connect(&client, address, "localhost").await.unwrap();
    let (reader, mut writer) = halves(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    send(&mut writer, request.as_bytes()).await;
    String::from_utf8(read_until_closed(reader).await).unwrap()
}

#[tokio::test]
async fn admin_api_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let tls = server_tls(dir.path(), "admin", &ca.issue(&["localhost"]), None);
    let server = TestServer::start_with(|c| c.admin.tls = Some(tls)).await;
    let address = server.admin_address.unwrap();

    let response = https_get(&ca, address, "/api/v1/health").await;
    // No analyzer: unhealthy, 503, in the seed's shape.
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("\"status\":\"unhealthy\""), "{response}");

    // Plain HTTP on the HTTPS port: no answer, counted.
    let mut plain = connect(address).await;
    let request = format!("GET /api/v1/health HTTP/1.1\r\nHost: {address}\r\n\r\n");
    plain.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(plain).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "{answer:?}"
    );
    server
        .wait_for("the plain HTTP refusal", |s| {
            s.refused(Listener::Admin, RefusalReason::TlsHandshake) == 1
        })
        .await;
    let metrics = https_get(&ca, address, "/metrics").await;
    let sample = "logdist_connections_refused_total{listener=\"admin\",reason=\"tls_handshake\"} 1";
    assert!(metrics.contains(sample), "{metrics}");
    server.shutdown().await;
}

#[tokio::test]
async fn reloaded_certificates_serve_new_clients_while_established_ones_flow() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = Ca::new("first CA");
    let tls = server_tls(dir.path(), "server", &first_ca.issue(&["localhost"]), None);
    let server = TestServer::start_with(|c| c.listeners[1].tls = Some(tls)).await;
    let address = server.acked_emitters;
    let trusts_first = pki::client(&first_ca, None);

    // An established connection.
    let stream = pki::connect(&trusts_first, address, "localhost")
        .await
        .unwrap();
    let (reader, mut established) = halves(stream);
    let mut replies = BufReader::new(reader);
    let mut ack = String::new();
    send(&mut established, b"{\"message\":\"before\"}\n").await;
    within("an ack", replies.read_line(&mut ack)).await.unwrap();
    assert_eq!(ack, ACK_OK);

    // The files now hold a certificate from another CA; until a reload,
    // nothing changes.
    let second_ca = Ca::new("second CA");
    let second = second_ca.issue(&["localhost"]);
    write(dir.path(), "server.pem", &second.cert);
    write(dir.path(), "server-key.pem", &second.key);
    let trusts_second = pki::client(&second_ca, None);
    assert!(
        pki::connect(&trusts_second, address, "localhost")
            .await
            .is_err()
    );

    let summary = server.reload.reload(server.config.clone()).await.unwrap();
    assert!(summary.needs_restart.is_empty(), "{summary:?}");
    let stream = pki::connect(&trusts_second, address, "localhost")
        .await
        .unwrap();
    assert_eq!(
        line_and_reply(stream, "{\"message\":\"new\"}\n").await,
        ACK_OK
    );
    assert!(
        pki::connect(&trusts_first, address, "localhost")
            .await
            .is_err(),
        "new clients still get the old certificate"
    );

    // The established connection goes on with its session.
    ack.clear();
    send(&mut established, b"{\"message\":\"after\"}\n").await;
    within("an ack", replies.read_line(&mut ack)).await.unwrap();
    assert_eq!(ack, ACK_OK);

    // A key that is not the certificate's: the reload is refused, naming
    // the key, and the running certificate stays.
    write(dir.path(), "server-key.pem", &first_ca.issue(&["x"]).key);
    let err = server
        .reload
        .reload(server.config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("listeners[1].tls.key"), "{err}");
    let stream = pki::connect(&trusts_second, address, "localhost")
        .await
        .unwrap();
    assert_eq!(
        line_and_reply(stream, "{\"message\":\"still\"}\n").await,
        ACK_OK
    );

    // TLS switched on for the plain listener: only a restart does that, and
    // the reload says so.
    write(dir.path(), "server-key.pem", &second.key);
    let mut config = server.config.clone();
    config.listeners[0].tls = config.listeners[1].tls.clone();
    let summary = server.reload.reload(config).await.unwrap();
    assert_eq!(summary.needs_restart, ["listeners"]);
    emit(server.emitters, "plain-", 0..1, 1).await;
    server
        .wait_for("the plain listener still plain", |s| s.accepted == 5)
        .await;
    server.shutdown().await;
}
