//! Ingest over real sockets: every emitter format, mixed on one connection,
//! per-message acks, and each kind of bad input with its outcome.

mod support;

use std::io::Write;

use bytes::BytesMut;
use logdist_wire::{RejectReason, encode_gzip_frame};
use support::{HelloAnalyzer, SeedAnalyzer, TestServer, connect, frames, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test]
async fn ndjson_priority_comes_from_priority_then_level_then_default() {
    let server = TestServer::start().await;
    let (reply, mut analyzer) = HelloAnalyzer::connect(&server, "nd", 1.0, "frame", true).await;
    assert_eq!(reply, "{\"status\":\"ok\"}\n");
    server.wait_analyzers(1).await;

    let lines = [
        r#"{"level":"ERROR","message":"a"}"#,
        r#"{"level":"warning","message":"b"}"#,
        r#"{"severity":"Debug","message":"c"}"#,
        r#"{"priority":200,"level":"ERROR","message":"d"}"#,
        r#"{"message":"e"}"#,
        r#"{"level":"NOTICE","message":"f"}"#,
    ];
    let mut stream = connect(server.emitters).await;
    let mut text = lines.join("\n");
    text.push_str("\r\n\n   \n");
    stream.write_all(text.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();

    let mut got = Vec::new();
    for _ in 0..lines.len() {
        let m = analyzer.next_frame().await.unwrap();
        got.push((
            m.priority(),
            String::from_utf8(m.payload().to_vec()).unwrap(),
        ));
    }
    // One connection, one analyzer: arrival order may be reordered by priority
    // only if messages queue up; compare as sets keyed by payload.
    got.sort_by(|a, b| a.1.cmp(&b.1));
    let mut want: Vec<(u8, String)> = [1, 2, 4, 200, 3, 3]
        .into_iter()
        .zip(lines.iter().map(|l| l.to_string()))
        .collect();
    want.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(got, want);
    analyzer.ack().await;
    let report = server.shutdown().await;
    assert_eq!(report.stats.accepted, 6);
    assert_eq!(report.stats.delivered, 6);
}

#[tokio::test]
async fn ndjson_analyzer_gets_lines_unchanged_and_frames_as_json() {
    let server = TestServer::start().await;
    let (_, mut analyzer) = HelloAnalyzer::connect(&server, "lines", 1.0, "ndjson", true).await;
    server.wait_analyzers(1).await;

    let mut stream = connect(server.emitters).await;
    stream
        .write_all(b"{\"level\":\"INFO\",\"message\":\"plain \\\"quoted\\\"\"}\n")
        .await
        .unwrap();
    stream
        .write_all(&frames(&[(7, b"text payload"), (9, &[0xff, 0x00, 0x80])]))
        .await
        .unwrap();
    stream.shutdown().await.unwrap();

    let mut lines = Vec::new();
    for _ in 0..3 {
        lines.push(analyzer.next_line().await.unwrap());
    }
    lines.sort();
    assert!(
        lines.contains(&r#"{"level":"INFO","message":"plain \"quoted\""}"#.to_string()),
        "{lines:?}"
    );
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        objects.contains(&serde_json::json!({"priority": 7, "message": "text payload"})),
        "{lines:?}"
    );
    assert!(
        objects.contains(&serde_json::json!({"priority": 9, "payload_b64": "/wCA"})),
        "{lines:?}"
    );
    analyzer.ack().await;
    server.shutdown().await;
}

#[tokio::test]
async fn gzip_frames_and_mixed_formats_on_one_connection() {
    let server = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let mut stream = BytesMut::new();
    stream.extend_from_slice(b"{\"level\":\"INFO\",\"message\":\"line-1\"}\n");
    logdist_wire::encode_frame(0, b"frame-1", &mut stream);
    encode_gzip_frame(
        b"{\"level\":\"ERROR\",\"message\":\"gz-1\"}\n{\"level\":\"DEBUG\",\"message\":\"gz-2\"}\n",
        &mut stream,
    );
    stream.extend_from_slice(b"{\"message\":\"line-2\"}\n");
    logdist_wire::encode_frame(255, b"frame-2", &mut stream);

    // Byte by byte: boundaries must not matter.
    let mut socket = connect(server.emitters).await;
    for chunk in stream.chunks(7) {
        socket.write_all(chunk).await.unwrap();
    }
    socket.shutdown().await.unwrap();

    let got = analyzer.take_and_ack(6).await;
    let mut payloads: Vec<(u8, String)> = got
        .iter()
        .map(|m| {
            (
                m.priority(),
                String::from_utf8_lossy(&m.payload()).into_owned(),
            )
        })
        .collect();
    payloads.sort();
    let names: Vec<String> = payloads
        .iter()
        .map(|(p, s)| format!("{p}:{}", short(s)))
        .collect();
    assert_eq!(
        names,
        [
            "0:frame-1",
            "1:gz-1",
            "3:line-1",
            "3:line-2",
            "4:gz-2",
            "255:frame-2"
        ]
    );
    let report = server.shutdown().await;
    assert_eq!(report.stats.accepted, 6);
    assert_eq!(report.stats.rejected_total(), 0);
}

/// A well-formed gzip frame whose CRC no longer matches its content.
fn corrupt_gzip_frame() -> BytesMut {
    let mut frame = BytesMut::new();
    encode_gzip_frame(b"{\"message\":\"lost\"}\n", &mut frame);
    let crc = frame.len() - 8;
    frame[crc] ^= 0xff;
    frame
}

/// "frame-1" stays as is; JSON lines shrink to their message field.
fn short(s: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) => v["message"].as_str().unwrap().to_string(),
        Err(_) => s.to_string(),
    }
}

#[tokio::test]
async fn acks_come_back_in_order_including_errors() {
    let server = TestServer::start_with(|c| {
        c.limits.max_line_bytes = 200;
        c.limits.max_decompressed_bytes = 1000;
    })
    .await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let long = format!("{{\"message\":\"{}\"}}", "x".repeat(300));
    let mut bomb = BytesMut::new();
    encode_gzip_frame(&[b' '; 2000], &mut bomb); // expands past 1000 bytes
    let mut input = Vec::new();
    input.extend_from_slice(b"{\"level\":\"INFO\",\"message\":\"ok-1\"}\n");
    input.extend_from_slice(b"{not json}\n");
    input.extend_from_slice(b"[1,2,3]\n");
    input.extend_from_slice(b"{\"priority\":256}\n");
    input.extend_from_slice(long.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(&corrupt_gzip_frame());
    input.extend_from_slice(&bomb);
    input.extend_from_slice(b"{\"message\":\"ok-2\"}\n");
    // A 16-byte binary frame cut short by the end of input.
    input.extend_from_slice(&[0, 0, 0, 16, 3, b'c', b'u', b't']);

    let stream = connect(server.acked_emitters).await;
    let (reader, mut writer) = stream.into_split();
    writer.write_all(&input).await.unwrap();
    writer.shutdown().await.unwrap();
    let mut reader = BufReader::new(reader);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = within("an ack line or the end", reader.read_line(&mut line))
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        lines.push(line);
    }
    // Every error reply names its reason, the rejection's stats label, and
    // then (as before) its sentence.
    let ok = "{\"status\":\"ok\",\"message\":\"received\"}\n";
    let error = |code: RejectReason, message: &str| {
        format!("{{\"status\":\"error\",\"reason\":\"{code}\",\"message\":\"{message}\"}}\n")
    };
    let expected = [
        ok.to_string(),
        error(
            RejectReason::InvalidJson,
            "invalid JSON: key must be a string at line 1 column 2",
        ),
        error(
            RejectReason::NotAnObject,
            "expected a JSON object, found an array",
        ),
        error(
            RejectReason::BadPriority,
            "priority must be an integer 0..=255",
        ),
        error(RejectReason::LineTooLong, "line exceeds 200 bytes"),
        // The decoder's sentence after the colon is informative only.
        lines.get(5).cloned().unwrap_or_default(),
        error(
            RejectReason::GzipTooLarge,
            "gzip frame decompresses to more than 1000 bytes",
        ),
        ok.to_string(),
        error(
            RejectReason::Truncated,
            "connection closed in the middle of a frame",
        ),
    ];
    assert_eq!(lines, expected);
    assert!(
        lines[5].starts_with(
            "{\"status\":\"error\",\"reason\":\"corrupt_gzip\",\"message\":\"corrupt gzip frame: "
        ),
        "{}",
        lines[5]
    );

    let got = analyzer.take_and_ack(2).await;
    assert_eq!(got.len(), 2);
    let stats = server.stats();
    assert_eq!(stats.accepted, 2);
    // One of each reason but the syslog-only ones (tests/syslog.rs).
    for reason in RejectReason::ALL {
        let syslog = matches!(reason, RejectReason::BadSyslog | RejectReason::WrongFormat);
        assert_eq!(stats.rejected(reason), u64::from(!syslog), "{reason}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_length_on_an_acking_listener_replies_with_its_reason_then_closes() {
    let server = TestServer::start_with(|c| c.limits.max_frame_bytes = 1024).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    // Over max_frame_bytes, then under 5: both end their connection.
    for (length, tail) in [(2048u32, vec![0u8; 16]), (3, vec![0u8; 8])] {
        let mut stream = connect(server.acked_emitters).await;
        let mut input = b"{\"message\":\"before\"}\n".to_vec();
        input.extend_from_slice(&length.to_be_bytes());
        input.extend_from_slice(&tail);
        stream.write_all(&input).await.unwrap();
        // The distributor closes it; the bound on the wait is the assertion.
        let mut replies = Vec::new();
        let _ = within("bad connection to close", stream.read_to_end(&mut replies)).await;
        assert_eq!(
            String::from_utf8(replies).unwrap(),
            format!(
                "{{\"status\":\"ok\",\"message\":\"received\"}}\n\
                 {{\"status\":\"error\",\"reason\":\"bad_frame_length\",\
                 \"message\":\"binary frame length {length} outside 5..=1024; closing connection\"}}\n"
            )
        );
    }
    analyzer.take_and_ack(2).await;
    server
        .wait_for("bad-length closes counted", |s| s.bad_length_closes == 2)
        .await;
    assert_eq!(server.stats().rejected_total(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_length_closes_only_that_connection() {
    let server = TestServer::start_with(|c| c.limits.max_frame_bytes = 1024).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let mut good = connect(server.emitters).await;
    good.write_all(&frames(&[(1, b"before")])).await.unwrap();

    // A length word over max_frame_bytes: unrecoverable for that stream.
    let mut bad = connect(server.emitters).await;
    bad.write_all(&frames(&[(1, b"valid first")]))
        .await
        .unwrap();
    bad.write_all(&2048u32.to_be_bytes()).await.unwrap();
    bad.write_all(&[0u8; 16]).await.unwrap();
    // The distributor closes it (a reset is as good as an EOF here); the bound
    // on the wait is the assertion.
    let mut rest = Vec::new();
    let _ = within("bad connection to close", bad.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "no-ack listener must not write");

    // A length under 5 is just as fatal.
    let mut tiny = connect(server.emitters).await;
    tiny.write_all(&3u32.to_be_bytes()).await.unwrap();
    tiny.write_all(&[0u8; 8]).await.unwrap();
    let _ = within("tiny connection to close", tiny.read_to_end(&mut rest)).await;

    good.write_all(&frames(&[(1, b"after")])).await.unwrap();
    good.shutdown().await.unwrap();

    let got = analyzer.take_and_ack(3).await;
    let mut payloads: Vec<Vec<u8>> = got.iter().map(|m| m.payload().to_vec()).collect();
    payloads.sort();
    assert_eq!(
        payloads,
        [
            b"after".to_vec(),
            b"before".to_vec(),
            b"valid first".to_vec()
        ]
    );
    server
        .wait_for("bad-length closes counted", |s| s.bad_length_closes == 2)
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn corrupt_and_oversized_gzip_are_rejected_and_the_connection_goes_on() {
    let server = TestServer::start_with(|c| c.limits.max_decompressed_bytes = 1000).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let mut bomb_lines = Vec::new();
    for i in 0..100 {
        writeln!(bomb_lines, "{{\"message\":\"{i:0>40}\"}}").unwrap();
    }
    let mut input = BytesMut::new();
    encode_gzip_frame(&bomb_lines, &mut input); // expands past 1000 bytes
    input.extend_from_slice(&corrupt_gzip_frame());
    encode_gzip_frame(b"{\"message\":\"fine\"}\n", &mut input);

    let mut stream = connect(server.emitters).await;
    stream.write_all(&input).await.unwrap();
    stream.shutdown().await.unwrap();

    let got = analyzer.take_and_ack(1).await;
    assert!(String::from_utf8_lossy(&got[0].payload()).contains("fine"));
    server
        .wait_for("gzip rejections counted", |s| {
            s.rejected(RejectReason::GzipTooLarge) == 1
                && s.rejected(RejectReason::CorruptGzip) == 1
        })
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_and_counted() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 1).await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let mut first = connect(server.emitters).await;
    first.write_all(&frames(&[(1, b"one")])).await.unwrap();
    analyzer.take_and_ack(1).await;

    // The second connection is accepted and closed at once, without reading.
    let mut second = connect(server.emitters).await;
    let mut rest = Vec::new();
    let _ = within("refused connection to close", second.read_to_end(&mut rest)).await;
    server
        .wait_for("refusal counted", |s| s.connections_refused == 1)
        .await;

    // The first one is unaffected, and its slot frees when it closes.
    first.write_all(&frames(&[(1, b"two")])).await.unwrap();
    first.shutdown().await.unwrap();
    analyzer.take_and_ack(1).await;
    drop(first);
    let deadline = tokio::time::Instant::now() + support::TIMEOUT;
    loop {
        let mut third = connect(server.emitters).await;
        third.write_all(&frames(&[(1, b"three")])).await.unwrap();
        third.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = third.read_to_end(&mut rest).await;
        if server.stats().accepted == 3 {
            break;
        }
        // The old connection's task may not have released its slot yet.
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    analyzer.take_and_ack(1).await;
    server.shutdown().await;
}
