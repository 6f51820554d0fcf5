//! Syslog ingest over real sockets: both RFC 6587 framings on every listener,
//! severity → priority, what frame and ndjson analyzers get, acknowledgement,
//! a pinned listener format, dead letters and replay. The tests with real
//! syslog daemons (logger, rsyslog, syslog-ng) are in `daemons`.

mod support;

use std::time::Duration;

use logdist::config::{AckMode, ListenerConfig};
use logdist_wire::{IngestFormat, RejectReason};
use support::{HelloAnalyzer, SeedAnalyzer, TestServer, connect, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const RFC5424: &str =
    "<11>1 2025-01-25T20:30:45.123Z web-1 nginx 4711 ID47 [origin@1 ip=\"10.0.0.1\"] disk full";
const RFC3164: &str = "<8>Jan 25 20:30:45 web-2 kernel: panic";

/// Both messages, LF-framed then octet-counted (the 3164 one with a counted
/// trailing `\n`, as some senders do).
fn both_framings() -> Vec<u8> {
    let mut wire = format!("{RFC5424}\n").into_bytes();
    let counted = format!("{RFC3164}\n");
    wire.extend_from_slice(format!("{} {counted}", counted.len()).as_bytes());
    wire
}

#[tokio::test]
async fn frame_analyzers_get_the_bytes_and_ndjson_analyzers_the_parsed_fields() {
    let server = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let mut stream = connect(server.emitters).await;
    stream.write_all(&both_framings()).await.unwrap();
    let mut got = [
        analyzer.next().await.unwrap(),
        analyzer.next().await.unwrap(),
    ];
    // (Strict priority may put the emerg one first.)
    got.sort_by_key(|m| m.priority());
    // emerg → 0, err → 1; the bytes as received, no framing, no newline.
    assert_eq!(got[0].priority(), 0);
    assert_eq!(&got[0].payload()[..], RFC3164.as_bytes());
    assert_eq!(got[1].priority(), 1);
    assert_eq!(&got[1].payload()[..], RFC5424.as_bytes());
    analyzer.ack().await;
    server
        .wait_for("delivered to the frame analyzer", |s| s.delivered == 2)
        .await;
    drop(analyzer);
    server.wait_analyzers(0).await;

    let (reply, mut analyzer) = HelloAnalyzer::connect(&server, "j1", 1.0, "ndjson", true).await;
    assert!(reply.contains("ok"), "{reply}");
    server.wait_analyzers(1).await;
    stream.write_all(&both_framings()).await.unwrap();
    let mut lines = Vec::new();
    for _ in 0..2 {
        let line = analyzer.next_line().await.unwrap();
        lines.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    lines.sort_by_key(|line| std::cmp::Reverse(line["priority"].as_u64()));
    let [first, second] = &lines[..] else {
        unreachable!()
    };
    assert_eq!(
        *first,
        serde_json::json!({
            "facility": "user",
            "severity": "err",
            "timestamp": "2025-01-25T20:30:45.123Z",
            "hostname": "web-1",
            "app_name": "nginx",
            "procid": 4711,
            "msgid": "ID47",
            "structured_data": {"origin@1": {"ip": "10.0.0.1"}},
            "message": "disk full",
            "priority": 1
        })
    );
    assert_eq!(second["facility"], "user");
    assert_eq!(second["severity"], "emerg");
    assert_eq!(second["hostname"], "web-2");
    assert_eq!(second["app_name"], "kernel");
    assert_eq!(second["message"], "panic");
    assert_eq!(second["priority"], 0);
    assert!(
        second["timestamp"]
            .as_str()
            .unwrap()
            .ends_with("-01-25T20:30:45Z"),
        "{second}"
    );
    analyzer.ack().await;
    let stopped = server.shutdown().await;
    assert_eq!(stopped.stats.delivered, 4);
}

/// Reads `n` reply lines.
async fn replies(reader: &mut (impl AsyncBufReadExt + Unpin), n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        within("a reply", reader.read_line(&mut line))
            .await
            .unwrap();
        out.push(serde_json::from_str(&line).unwrap());
    }
    out
}

fn status(reply: &serde_json::Value) -> String {
    match reply["reason"].as_str() {
        Some(reason) => reason.to_owned(),
        None => reply["status"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn acking_listeners_answer_syslog_messages_like_lines() {
    let server = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let stream = connect(server.acked_emitters).await;
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut wire = both_framings();
    wire.extend_from_slice(b"<x>no pri\n{\"level\":\"WARN\"}\n6 <14>ok20 <14>cut short");
    writer.write_all(&wire).await.unwrap();
    writer.shutdown().await.unwrap();
    let got: Vec<String> = replies(&mut reader, 6).await.iter().map(status).collect();
    assert_eq!(got, ["ok", "ok", "bad_syslog", "ok", "ok", "truncated"]);
    let mut rest = String::new();
    within("the close", reader.read_line(&mut rest))
        .await
        .unwrap();
    assert_eq!(rest, "", "nothing more");
    let mut priorities: Vec<u8> = analyzer
        .take_and_ack(4)
        .await
        .iter()
        .map(|m| m.priority())
        .collect();
    priorities.sort();
    assert_eq!(priorities, [0, 1, 2, 3]);
    let stopped = server.shutdown().await;
    assert_eq!(stopped.stats.rejected(RejectReason::BadSyslog), 1);
    assert_eq!(stopped.stats.rejected(RejectReason::Truncated), 1);
}

#[tokio::test]
async fn a_syslog_listener_takes_nothing_else_and_its_table_is_configurable() {
    let any = "127.0.0.1:0".parse().unwrap();
    let server = TestServer::start_with(|c| {
        let mut syslog = ListenerConfig::plain(any, AckMode::Message);
        syslog.format = IngestFormat::Syslog;
        c.listeners[1] = syslog;
        c.priorities.syslog = [10, 11, 12, 13, 14, 15, 16, 17];
    })
    .await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let stream = connect(server.acked_emitters).await;
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut wire = b"{\"level\":\"ERROR\"}\n".to_vec();
    wire.extend_from_slice(&support::frames(&[(0, b"binary")]));
    wire.extend_from_slice(b"<15>debug\n");
    writer.write_all(&wire).await.unwrap();
    let got: Vec<String> = replies(&mut reader, 3).await.iter().map(status).collect();
    assert_eq!(got, ["wrong_format", "wrong_format", "ok"]);
    let message = analyzer.next().await.unwrap();
    assert_eq!(message.priority(), 17);
    assert_eq!(&message.payload()[..], b"<15>debug");
    analyzer.ack().await;
    server.shutdown().await;
}

#[tokio::test]
async fn dead_letters_keep_syslog_and_replay_sends_it_back_octet_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dead.ndjson");
    let first = TestServer::start_with(|c| {
        c.delivery.hold_timeout = Some(Duration::from_millis(50));
        c.delivery.dead_letter_path = file.clone();
    })
    .await;
    let mut stream = connect(first.emitters).await;
    // A multi-line message survives only in octet counting.
    let multiline = "<13>1 - host app - - - line one\nline two";
    let mut wire = both_framings();
    wire.extend_from_slice(format!("{} {multiline}", multiline.len()).as_bytes());
    stream.write_all(&wire).await.unwrap();
    stream.shutdown().await.unwrap();
    first.wait_for("expired", |s| s.dead_lettered == 3).await;
    let stopped = first.shutdown().await;
    let mut records: Vec<(u64, String)> = stopped
        .dead_letters
        .iter()
        .map(|record| {
            assert_eq!(record["origin"], "syslog", "{record}");
            let message = record["message"].as_str().unwrap().to_owned();
            (record["priority"].as_u64().unwrap(), message)
        })
        .collect();
    records.sort();
    let expected = [
        (0, RFC3164.to_owned()),
        (1, RFC5424.to_owned()),
        (3, multiline.to_owned()),
    ];
    assert_eq!(records, expected.clone().map(|(p, m)| (u64::from(p), m)));

    let second = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&second, 1.0).await;
    second.wait_analyzers(1).await;
    let target = second.acked_emitters.to_string();
    let report = logdist::delivery::replay::replay(&file, &target, Duration::from_secs(10), 3)
        .await
        .unwrap();
    assert_eq!(
        report,
        logdist::delivery::replay::ReplayReport {
            replayed: 3,
            kept: 0
        }
    );
    let mut got: Vec<(u8, String)> = analyzer
        .take_and_ack(3)
        .await
        .iter()
        .map(|m| {
            (
                m.priority(),
                String::from_utf8(m.payload().to_vec()).unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, expected);
    second.shutdown().await;
}
