//! Who may become an analyzer and who may use the admin API, over real
//! sockets: programs that are not analyzers never get messages, weights stay
//! in bounds on every path, tokens and seed networks are checked (and
//! reloaded), static ids cannot be hijacked, and the admin API checks its
//! token, content type, Host header and body size.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use logdist::config::{Secret, StaticAnalyzerConfig};
use logdist::refusal::RefusalReason;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    SeedAnalyzer, TIMEOUT, TestServer, accept_static, connect, emit, free_port, rebind, within,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A TLS 1.3 ClientHello as `openssl s_client -servername analyzer.example` sent it.
const CLIENT_HELLO_HEX: [&str; 11] = [
    "160301013d010001390303d9492ccc664dfdead95997a57751e7acafa9ba061f",
    "070de3639946e7edc54244202b60a58c0d830a80e2bbbd022b2482e17cfbb868",
    "d800532d95ceceb58d058f58003e130213031301c02cc030009fcca9cca8ccaa",
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d",
    "009c003d003c0035002f00ff010000b2000000150013000010616e616c797a65",
    "722e6578616d706c65000b000403000102000a00160014001d0017001e001900",
    "1801000101010201030104002300000016000000170000000d002a0028040305",
    "030603080708080809080a080b08040805080604010501060103030301030204",
    "0205020602002b0009080304030303020301002d00020101003300260024001d",
    "002074eb1881d5499140bd80f9d3896e04e54c75f4fa43afe6a9561c2b6ba002",
    "df5c",
];

fn client_hello() -> Vec<u8> {
    let hex: String = CLIENT_HELLO_HEX.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Reads until the distributor closes the connection (a reset counts as a
/// close); returns what it wrote.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    within("the distributor to close the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    got
}

/// Sends `bytes` to the analyzer port and waits for the close.
async fn refused(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect(server.analyzers).await;
    stream.write_all(bytes).await.unwrap();
    until_closed(&mut stream).await
}

/// The ids in the routing table.
fn routed_ids(server: &TestServer) -> Vec<String> {
    server
        .router
        .load()
        .analyzers()
        .iter()
        .map(|a| a.id.to_string())
        .collect()
}

async fn wait_refused(server: &TestServer, reason: RefusalReason, n: u64) {
    server
        .wait_for(&format!("{n} refusals for {reason}"), |s| {
            s.analyzer_refused(reason) == n
        })
        .await;
}

/// A JSON-hello analyzer: sends `hello` and returns the reply line and the reader.
async fn hello(server: &TestServer, hello: Value) -> (Value, BufReader<TcpStream>) {
    let mut stream = connect(server.analyzers).await;
    stream
        .write_all(format!("{hello}\n").as_bytes())
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    within("the hello reply", reader.read_line(&mut line))
        .await
        .unwrap();
    let reply = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (reply, reader)
}

/// A hello that must be refused with `reason`; the connection is then closed.
async fn hello_refused(server: &TestServer, body: Value, reason: &str) {
    let (reply, mut reader) = hello(server, body.clone()).await;
    assert_eq!(reply["status"], "error", "{body}: {reply}");
    assert_eq!(reply["reason"], reason, "{body}: {reply}");
    assert!(until_closed(reader.get_mut()).await.is_empty());
}

/// Next line at an ndjson-format hello analyzer.
async fn next_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let n = within("a message", reader.read_line(&mut line))
        .await
        .unwrap();
    assert!(n > 0, "connection closed");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_that_are_not_analyzers_never_become_one() {
    let server = TestServer::start().await;
    let mut real = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let mut plausible_then_more = 1.0f32.to_be_bytes().to_vec();
    plausible_then_more.extend_from_slice(b"and then some");
    let probes: Vec<(&str, Vec<u8>, RefusalReason)> = vec![
        // "GET " is the weight 50516, "SSH-" about 9e11: above max_weight.
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\n\r\n".to_vec(),
            RefusalReason::BadWeight,
        ),
        (
            "SSH banner",
            b"SSH-2.0-x\r\n".to_vec(),
            RefusalReason::BadWeight,
        ),
        // 16 03 01 01 is about 2.5e-25: a tiny positive float.
        ("TLS ClientHello", client_hello(), RefusalReason::BadWeight),
        // Sign bit set (negative), and a subnormal.
        (
            "random bytes",
            vec![0x9a, 0x3c, 0x11, 0x07],
            RefusalReason::BadWeight,
        ),
        (
            "random bytes",
            vec![0x00, 0x01, 0xe2, 0x40],
            RefusalReason::BadWeight,
        ),
        // A plausible weight, but bytes follow before any message was sent.
        (
            "weight and more",
            plausible_then_more,
            RefusalReason::BadHandshake,
        ),
    ];
    let mut expected = std::collections::HashMap::new();
    for (what, bytes, reason) in probes {
        let reply = refused(&server, &bytes).await;
        assert!(
            reply.is_empty(),
            "{what}: no reply to a refused seed handshake"
        );
        let n = expected.entry(reason).or_insert(0);
        *n += 1;
        wait_refused(&server, reason, *n).await;
        assert_eq!(routed_ids(&server), [real.id.clone()], "{what}");
    }

    // Bytes that arrive in the quiet period after a plausible handshake.
    let mut stream = connect(server.analyzers).await;
    stream.write_all(&2.0f32.to_be_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(b"\r\n").await.unwrap();
    until_closed(&mut stream).await;
    wait_refused(&server, RefusalReason::BadHandshake, 2).await;

    assert_eq!(routed_ids(&server), [real.id.clone()]);
    assert_eq!(server.directory.snapshot().len(), 1);
    emit(server.emitters, "m", 0..50, 3).await;
    let got = real.take_and_ack(50).await;
    assert_eq!(got.len(), 50);
    server
        .wait_for("all delivered", |s| s.delivered == 50)
        .await;
    let stats = server.stats();
    assert_eq!(stats.routed, 50, "nothing routed anywhere else");
    assert_eq!(stats.analyzer_refused(RefusalReason::BadWeight), 5);

    // Each refusal shows in the stats JSON and in /metrics.
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap();
    let body: Value = client
        .get(format!("{}/api/v1/stats", server.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["totals"]["connections_refused_by"]["analyzer"],
        json!({"bad_weight": 5, "bad_handshake": 2, "unauthorized": 0, "reserved_id": 0,
               "max_connections": 0, "not_allowed": 0, "tls_handshake": 0})
    );
    let metrics = client
        .get(format!("{}/metrics", server.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "logdist_connections_refused_total{listener=\"analyzer\",reason=\"bad_weight\"} 5",
        "logdist_connections_refused_total{listener=\"analyzer\",reason=\"bad_handshake\"} 2",
        "logdist_connections_refused_total{listener=\"analyzer\",reason=\"unauthorized\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_stay_in_bounds_on_every_path() {
    let server = TestServer::start_with(|c| c.analyzers.max_weight = 10.0).await;

    // Handshakes: too large, NaN, negative; seed and JSON.
    for weight in [10.5f32, f32::NAN, -1.0, f32::INFINITY] {
        assert!(refused(&server, &weight.to_be_bytes()).await.is_empty());
    }
    wait_refused(&server, RefusalReason::BadWeight, 4).await;
    hello_refused(&server, json!({"id": "h1", "weight": 11}), "bad_weight").await;
    hello_refused(&server, json!({"id": "h1", "weight": -1}), "bad_weight").await;
    hello_refused(&server, json!({"id": "h1", "weight": 1e300}), "bad_weight").await;
    wait_refused(&server, RefusalReason::BadWeight, 7).await;
    assert!(routed_ids(&server).is_empty());

    // The largest allowed weight is fine.
    let mut seed = SeedAnalyzer::connect(&server, 10.0).await;
    server.wait_analyzers(1).await;

    // Control word: refused, counted, the connection closed, the weight never applied.
    seed.set_weight(10.5).await;
    server.wait_analyzers(0).await;
    wait_refused(&server, RefusalReason::BadWeight, 8).await;
    assert!(seed.next().await.is_none(), "closed by the distributor");
    let (reply, mut json_analyzer) = hello(
        &server,
        json!({"id": "j1", "weight": 1, "format": "ndjson"}),
    )
    .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    server.wait_analyzers(1).await;
    json_analyzer
        .get_mut()
        .write_all(b"{\"weight\":1e6}\n")
        .await
        .unwrap();
    server.wait_analyzers(0).await;
    wait_refused(&server, RefusalReason::BadWeight, 9).await;

    // Admin API: 400 with a JSON error; the weight stays.
    let seed = SeedAnalyzer::connect(&server, 2.0).await;
    server.wait_analyzers(1).await;
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap();
    let url = format!("{}/api/v1/analyzers/{}/weight", server.admin, seed.id);
    for bad in [
        json!({"weight": 10.5}),
        json!({"weight": -0.5}),
        json!({"weight": 1e300}),
    ] {
        let response = client.put(&url).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let err: Value = response.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("weight"), "{err}");
    }
    assert_eq!(
        server.router.load().analyzers()[0].weight,
        2.0,
        "refused weights are not applied"
    );
    let response = client
        .put(&url)
        .json(&json!({"weight": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server
        .wait_for_analyzers("weight 10", |a| a == [(seed.id.clone(), 10.0)])
        .await;

    // Config: a static weight above max_weight is refused by a reload, naming the key.
    let mut config = server.config.clone();
    config.analyzers.statics = vec![StaticAnalyzerConfig {
        id: "s1".to_string(),
        address: free_port().to_string(),
        weight: 11.0,
        format: logdist_wire::AnalyzerFormat::Frame,
        acks: true,
        tls: None,
    }];
    let err = server.reload.reload(config).await.unwrap_err().to_string();
    assert!(err.contains("analyzers.static.weight"), "{err}");
    assert!(!server.directory.is_reserved("s1"), "nothing applied");
    drop(seed);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_hellos_need_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "\n  from-file  \n").unwrap();
    let server = TestServer::start_with(|c| {
        c.analyzers.tokens = vec![Secret::new("alpha"), Secret::new("beta")];
        c.analyzers.tokens_file = Some(file.clone());
    })
    .await;
    hello_refused(&server, json!({"id": "a", "weight": 1}), "unauthorized").await;
    hello_refused(
        &server,
        json!({"id": "a", "weight": 1, "token": "alphax"}),
        "unauthorized",
    )
    .await;
    hello_refused(
        &server,
        json!({"id": "a", "weight": 1, "token": "from-file "}),
        "unauthorized",
    )
    .await;
    wait_refused(&server, RefusalReason::Unauthorized, 3).await;
    assert!(routed_ids(&server).is_empty());

    let (reply, mut a) = hello(
        &server,
        json!({"id": "a", "weight": 1, "format": "ndjson", "token": "beta"}),
    )
    .await;
    assert_eq!(reply, json!({"status": "ok"}));
    let (reply, _b) = hello(
        &server,
        json!({"id": "b", "weight": 0, "format": "ndjson", "token": "from-file"}),
    )
    .await;
    assert_eq!(reply, json!({"status": "ok"}), "a token from tokens_file");
    server.wait_analyzers(2).await;
    emit(server.emitters, "m", 0..3, 3).await;
    for _ in 0..3 {
        assert!(next_line(&mut a).await.contains("\"message\":\"m"));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_handshakes_only_from_allowed_networks() {
    // 127.0.0.1 is not in 10.0.0.0/8: the seed handshake is refused, unanswered.
    let server = TestServer::start_with(|c| {
        c.analyzers.seed_handshake_from = Some(vec!["10.0.0.0/8".to_string()]);
    })
    .await;
    let reply = refused(&server, &logdist_wire::seed_handshake(1.0)).await;
    assert!(reply.is_empty(), "closed without a reply");
    wait_refused(&server, RefusalReason::Unauthorized, 1).await;
    assert!(routed_ids(&server).is_empty());
    // JSON hellos are not seed handshakes.
    let (reply, _a) = hello(&server, json!({"id": "a", "weight": 1})).await;
    assert_eq!(reply["status"], "ok");
    server.wait_analyzers(1).await;
    server.shutdown().await;

    let server = TestServer::start_with(|c| {
        c.analyzers.seed_handshake_from =
            Some(vec!["10.0.0.0/8".to_string(), "127.0.0.1".to_string()]);
    })
    .await;
    let mut seed = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    emit(server.emitters, "m", 0..5, 3).await;
    assert_eq!(seed.take_and_ack(5).await.len(), 5);
    assert_eq!(
        server.stats().analyzer_refused(RefusalReason::Unauthorized),
        0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_tokens_for_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "old-token\n").unwrap();
    let server = TestServer::start_with(|c| c.analyzers.tokens_file = Some(file.clone())).await;
    let (reply, mut established) = hello(
        &server,
        json!({"id": "old", "weight": 1, "format": "ndjson", "token": "old-token"}),
    )
    .await;
    assert_eq!(reply["status"], "ok");
    server.wait_analyzers(1).await;

    // The file changes; the reload reads it again.
    std::fs::write(&file, "new-token\n").unwrap();
    server.reload.reload(server.config.clone()).await.unwrap();
    hello_refused(
        &server,
        json!({"id": "late", "weight": 1, "token": "old-token"}),
        "unauthorized",
    )
    .await;

    // The established analyzer keeps flowing.
    emit(server.emitters, "m", 0..10, 3).await;
    for _ in 0..10 {
        next_line(&mut established).await;
    }
    established
        .get_mut()
        .write_all(b"{\"ack\":10}\n")
        .await
        .unwrap();
    server.wait_for("10 delivered", |s| s.delivered == 10).await;

    let (reply, _new) = hello(
        &server,
        json!({"id": "new", "weight": 1, "token": "new-token"}),
    )
    .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    server.wait_analyzers(2).await;

    // Inline tokens replace the file's on the next reload; an unreadable file changes nothing.
    let mut config = server.config.clone();
    config.analyzers.tokens_file = Some(dir.path().join("missing"));
    let err = server.reload.reload(config).await.unwrap_err().to_string();
    assert!(err.contains("analyzers.tokens_file"), "{err}");
    let (reply, _newer) = hello(
        &server,
        json!({"id": "newer", "weight": 1, "token": "new-token"}),
    )
    .await;
    assert_eq!(reply["status"], "ok", "the running tokens stay: {reply}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_ids_cannot_be_hijacked() {
    let address = free_port();
    let server = TestServer::start_with(|c| {
        c.analyzers.reconnect_min = Duration::from_millis(10);
        c.analyzers.reconnect_max = Duration::from_millis(50);
        c.analyzers.statics = vec![StaticAnalyzerConfig {
            id: "s1".to_string(),
            address: address.to_string(),
            weight: 1.0,
            format: logdist_wire::AnalyzerFormat::Frame,
            acks: true,
            tls: None,
        }];
    })
    .await;
    // The static analyzer is down: a dial-in hello may not take its id.
    hello_refused(&server, json!({"id": "s1", "weight": 5}), "reserved_id").await;
    wait_refused(&server, RefusalReason::ReservedId, 1).await;
    assert!(routed_ids(&server).is_empty());

    emit(server.emitters, "m", 0..20, 3).await;
    server.wait_for("20 held", |s| s.held == 20).await;
    let listener = rebind(address).await;
    let mut real = accept_static(&listener, "s1").await;
    let got = real.take_and_ack(20).await;
    assert_eq!(got.len(), 20, "the real one gets every message");
    server.wait_for("20 delivered", |s| s.delivered == 20).await;
    // Connected, the id is still reserved (not just a duplicate).
    hello_refused(&server, json!({"id": "s1", "weight": 5}), "reserved_id").await;
    wait_refused(&server, RefusalReason::ReservedId, 2).await;

    // A reload that removes the static analyzer frees its id.
    let mut config = server.config.clone();
    config.analyzers.statics.clear();
    server.reload.reload(config).await.unwrap();
    let (reply, _dial_in) = hello(&server, json!({"id": "s1", "weight": 1})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    // And one that adds it reserves it again.
    server.reload.reload(server.config.clone()).await.unwrap();
    hello_refused(&server, json!({"id": "s1", "weight": 5}), "reserved_id").await;
    drop(real);
    server.shutdown().await;
}

/// A raw HTTP/1.1 request to the admin API; returns the status and the body.
async fn raw_http(server: &TestServer, request: &str) -> (u16, String) {
    let address: SocketAddr = server.admin.trim_start_matches("http://").parse().unwrap();
    let mut stream = connect(address).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_checks_token_content_type_host_and_size() {
    let server = TestServer::start_with(|c| {
        c.admin.token = Some(Secret::new("s3cret"));
        c.admin.max_body_bytes = 4096;
    })
    .await;
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap();
    let url = |path: &str| format!("{}{path}", server.admin);

    // 401 without a token or with a wrong one, on every route but two.
    for (method, path) in [
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/analyzers"),
        ("GET", "/api/v1/dead-letter"),
        ("PUT", "/api/v1/analyzers/x/weight"),
        ("POST", "/api/v1/analyzers/x/health"),
        ("POST", "/api/v1/logs"),
        ("GET", "/no/such/route"),
    ] {
        for token in [None, Some("wrong"), Some("S3CRET"), Some("s3cretx")] {
            let mut request = client
                .request(method.parse().unwrap(), url(path))
                .header("Content-Type", "application/json")
                .body("[]");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer realm=\"logdist\""
            );
            let err: Value = response.json().await.unwrap();
            assert!(err["error"].is_string(), "{err}");
        }
    }
    // Health and metrics stay open.
    let health = client.get(url("/api/v1/health")).send().await.unwrap();
    assert_eq!(
        health.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "open, no analyzer"
    );
    let metrics = client.get(url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    // 200 with the token.
    let stats = client
        .get(url("/api/v1/stats"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::OK);
    let logs = client
        .post(url("/api/v1/logs"))
        .bearer_auth("s3cret")
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), StatusCode::OK);

    // 415: bodies that an HTML form could send.
    for (method, path) in [
        ("POST", "/api/v1/logs"),
        ("PUT", "/api/v1/analyzers/x/weight"),
        ("POST", "/api/v1/analyzers/x/health"),
    ] {
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let mut request = client
                .request(method.parse().unwrap(), url(path))
                .bearer_auth("s3cret")
                .body("{\"weight\":1}");
            if let Some(content_type) = content_type {
                request = request.header("Content-Type", content_type);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{method} {path} {content_type:?}"
            );
        }
    }
    let with_charset = client
        .post(url("/api/v1/logs"))
        .bearer_auth("s3cret")
        .header("Content-Type", "application/json; charset=utf-8")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(with_charset.status(), StatusCode::OK);

    // 421 for a Host that is not loopback (DNS rebinding), even on open routes.
    let (status, body) = raw_http(
        &server,
        "GET /api/v1/health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 421, "{body}");
    let (status, _) = raw_http(
        &server,
        "GET /api/v1/stats HTTP/1.1\r\nHost: evil.example:8082\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 421);
    for host in ["localhost:8082", "127.0.0.1", "[::1]:1"] {
        let (status, _) = raw_http(
            &server,
            &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200, "{host}");
    }

    // 413 over admin.max_body_bytes: announced, refused before the body is
    // read (the 100 MiB never come); or cut off while read.
    let (status, body) = raw_http(
        &server,
        "POST /api/v1/logs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\n[",
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let big = format!("[{{\"messages\":[{{\"m\":\"{}\"}}]}}]", "x".repeat(5000));
    let chunked = format!(
        "POST /api/v1/logs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let (status, body) = raw_http(&server, &chunked).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(server.stats().accepted, 0);
    server.shutdown().await;
}
