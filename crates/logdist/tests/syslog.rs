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

/// RFC 5425: syslog over TLS is a listener with `tls` (here mutual TLS, on a
/// syslog-only listener): octet-counted messages from a client with a
/// certificate arrive; one without is refused.
#[tokio::test]
async fn syslog_over_mutual_tls() {
    use support::pki::{self, Ca, server_tls};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let tls = server_tls(dir.path(), "server", &leaf, Some(&ca));
    let server = TestServer::start_with(|c| {
        c.listeners[0].tls = Some(tls);
        c.listeners[0].format = IngestFormat::Syslog;
    })
    .await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let anonymous = pki::client(&ca, None);
    if let Ok(mut stream) = pki::connect(&anonymous, server.emitters, "localhost").await {
        // TLS 1.3: the refusal may come after the handshake; nothing is taken.
        let _ = stream.write_all(b"13 <11>anonymous").await;
        let _ = stream.flush().await;
    }
    let client = pki::client(&ca, Some(&ca.issue(&["emitter-1"])));
    let mut stream = pki::connect(&client, server.emitters, "localhost")
        .await
        .unwrap();
    stream.write_all(&both_framings()).await.unwrap();
    stream.flush().await.unwrap();
    let mut got: Vec<Vec<u8>> = analyzer
        .take_and_ack(2)
        .await
        .iter()
        .map(|m| m.payload().to_vec())
        .collect();
    got.sort();
    let mut want = vec![RFC3164.as_bytes().to_vec(), RFC5424.as_bytes().to_vec()];
    want.sort();
    assert_eq!(got, want);
    stream.shutdown().await.unwrap();
    let stopped = server.shutdown().await;
    assert_eq!(
        stopped.stats.accepted, 2,
        "the anonymous client's message was not taken"
    );
}

// ---- Real syslog clients -----------------------------------------------------
//
// logger (util-linux), rsyslogd and syslog-ng, found on PATH (syslog-ng also
// unpacked under `LOGDIST_SYSLOG_NG_ROOT`, as `.ci/run` does: it conflicts
// with rsyslog as a Debian package). A test whose program is missing says so
// and passes, unless `LOGDIST_REQUIRE_SYSLOG_DAEMONS=1` (set by `.ci/run`
// once it installed them all). Daemons run on private configs, ports, pid
// and state files in a temporary directory, and are killed by pid.

mod daemons {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use logdist_wire::{syslog_pri, write_syslog_json};

    use crate::support::{HelloAnalyzer, SeedAnalyzer, TestServer, free_port, within};

    fn required() -> bool {
        std::env::var("LOGDIST_REQUIRE_SYSLOG_DAEMONS").is_ok_and(|v| v == "1")
    }

    /// `name` on PATH or in /usr/sbin; `None` (after saying so) when absent.
    fn program(name: &str, package: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file());
        if found.is_none() {
            missing(&format!("{name} (Debian package {package})"));
        }
        found
    }

    fn missing(what: &str) {
        assert!(
            !required(),
            "LOGDIST_REQUIRE_SYSLOG_DAEMONS=1 but {what} is not installed"
        );
        eprintln!("skipped: {what} is not installed (.ci/run installs it as root)");
    }

    /// A daemon process, killed by its pid when dropped.
    struct Daemon {
        name: &'static str,
        child: Child,
        log: PathBuf,
    }

    impl Daemon {
        fn spawn(name: &'static str, command: &mut Command, dir: &Path) -> Daemon {
            let log = dir.join(format!("{name}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = command
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
            Daemon { name, child, log }
        }

        /// Waits (bounded) until the daemon accepts TCP connections on `port`.
        async fn listening(&mut self, port: SocketAddr) {
            let deadline = tokio::time::Instant::now() + crate::support::TIMEOUT;
            loop {
                if tokio::net::TcpStream::connect(port).await.is_ok() {
                    return;
                }
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("{} exited ({status}): {}", self.name, self.output());
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} does not listen on {port}: {}",
                    self.name,
                    self.output()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        fn output(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Runs logger to its end (bounded): one message per line of `lines`, at
    /// `priority` (`facility.severity`), tagged `lt`, over TCP to `port`.
    async fn logger(logger: &Path, port: SocketAddr, priority: &str, args: &[&str], lines: &str) {
        let mut command = tokio::process::Command::new(logger);
        command
            .args(["--tcp", "--server", "127.0.0.1", "--port"])
            .arg(port.port().to_string())
            .args(["-p", priority, "-t", "lt"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start logger");
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, lines.as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let output = within("logger", child.wait_with_output()).await.unwrap();
        assert!(
            output.status.success(),
            "logger {priority} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    const SEVERITIES: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    /// The default table, written out independently of the crate's.
    const PRIORITY_OF: [u8; 8] = [0, 0, 0, 1, 2, 3, 3, 4];

    #[tokio::test]
    async fn logger_rfc5424_octet_counted_and_rfc3164_each_severity_once() {
        let Some(logger_path) = program("logger", "bsdutils") else {
            return;
        };
        let server = TestServer::start().await;
        let (_, mut analyzer) = HelloAnalyzer::connect(&server, "j", 1.0, "ndjson", true).await;
        server.wait_analyzers(1).await;
        let rfc5424 = [
            "--octet-count",
            "--rfc5424",
            "--id=4242",
            "--msgid",
            "M1",
            "--sd-id",
            "test@1",
            "--sd-param",
            "k=\"v\"",
        ];
        for (severity, name) in SEVERITIES.iter().enumerate() {
            let at = format!("local0.{name}");
            let line = format!("rfc5424 {severity}\n");
            logger(&logger_path, server.emitters, &at, &rfc5424, &line).await;
            let at = format!("local1.{name}");
            let line = format!("rfc3164 {severity}\n");
            logger(
                &logger_path,
                server.emitters,
                &at,
                &["--rfc3164", "--id=4242"],
                &line,
            )
            .await;
        }
        let mut seen = BTreeMap::new();
        for _ in 0..16 {
            let line = analyzer.next_line().await.unwrap();
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            let message = value["message"].as_str().unwrap().to_owned();
            let severity: usize = message.split(' ').nth(1).unwrap().parse().unwrap();
            assert_eq!(value["severity"], SEVERITIES[severity], "{line}");
            assert_eq!(value["priority"], PRIORITY_OF[severity], "{line}");
            assert_eq!(value["app_name"], "lt", "{line}");
            assert_eq!(value["procid"], 4242, "{line}");
            assert!(value["hostname"].is_string(), "{line}");
            assert!(value["timestamp"].is_string(), "{line}");
            if message.starts_with("rfc5424") {
                assert_eq!(value["facility"], "local0", "{line}");
                assert_eq!(value["msgid"], "M1", "{line}");
                assert_eq!(value["structured_data"]["test@1"]["k"], "v", "{line}");
            } else {
                assert_eq!(value["facility"], "local1", "{line}");
            }
            assert!(seen.insert(message, line).is_none(), "a message came twice");
        }
        analyzer.ack().await;
        let stopped = server.shutdown().await;
        assert_eq!(stopped.stats.accepted, 16);
        assert_eq!(stopped.stats.rejected_total(), 0);
    }

    /// What a test daemon forwards: the severity and facility of the PRI, and
    /// the text after the tag.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Forwarded {
        facility: u8,
        severity: u8,
        body: String,
    }

    /// Collects `n` messages at a frame analyzer and checks each: priority
    /// from its severity, parsed fields; returns them sorted.
    async fn collect(analyzer: &mut SeedAnalyzer, n: usize) -> Vec<Forwarded> {
        let mut got = Vec::new();
        for _ in 0..n {
            let message = analyzer.next().await.expect("a forwarded message");
            let bytes = message.payload();
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            assert!(!text.ends_with('\n') && !text.contains('\n'), "{text:?}");
            let pri = syslog_pri(&bytes).unwrap_or_else(|| panic!("no PRI: {text:?}"));
            let severity = pri & 7;
            assert_eq!(
                message.priority(),
                PRIORITY_OF[usize::from(severity)],
                "{text}"
            );
            let mut json = Vec::new();
            write_syslog_json(message.priority(), &bytes, &mut json);
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(value["app_name"], "lt", "{text} parsed as {value}");
            assert!(value["timestamp"].is_string(), "{text} parsed as {value}");
            got.push(Forwarded {
                facility: pri >> 3,
                severity,
                body: value["message"].as_str().unwrap().to_owned(),
            });
        }
        analyzer.ack().await;
        got.sort();
        got
    }

    /// One message per facility and severity, body `m<facility>-<severity>`.
    fn expected(facilities: std::ops::Range<u8>) -> Vec<Forwarded> {
        let mut all = Vec::new();
        for facility in facilities {
            for severity in 0..8 {
                all.push(Forwarded {
                    facility: 16 + facility,
                    severity,
                    body: format!("m{facility}-{severity}"),
                });
            }
        }
        all.sort();
        all
    }

    /// Sends `expected(0..facilities)` through logger to `port`.
    async fn feed(logger_path: &Path, port: SocketAddr, facilities: u8) {
        for facility in 0..facilities {
            for (severity, name) in SEVERITIES.iter().enumerate() {
                let at = format!("local{facility}.{name}");
                let line = format!("m{facility}-{severity}\n");
                logger(logger_path, port, &at, &["--octet-count"], &line).await;
            }
        }
    }

    fn rsyslog_config(dir: &Path, input: SocketAddr, actions: &str) -> PathBuf {
        let config = format!(
            "global(workDirectory=\"{dir}\")\n\
             module(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             if $programname == 'lt' then {{\n{actions}}}\n\
             stop\n",
            dir = dir.display(),
            port = input.port(),
        );
        let path = dir.join("rsyslog.conf");
        std::fs::write(&path, config).unwrap();
        path
    }

    fn omfwd(filter: &str, to: SocketAddr, framing: &str, template: &str) -> String {
        format!(
            "  if $syslogfacility-text == '{filter}' then action(type=\"omfwd\" target=\"127.0.0.1\" \
             port=\"{port}\" protocol=\"tcp\" TCP_Framing=\"{framing}\" template=\"{template}\")\n",
            port = to.port()
        )
    }

    async fn rsyslogd(rsyslogd: &Path, dir: &Path, input: SocketAddr, actions: &str) -> Daemon {
        let config = rsyslog_config(dir, input, actions);
        let mut command = Command::new(rsyslogd);
        command
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"));
        let mut daemon = Daemon::spawn("rsyslogd", &mut command, dir);
        daemon.listening(input).await;
        daemon
    }

    #[tokio::test]
    async fn rsyslog_omfwd_in_both_framings_and_both_templates() {
        let (Some(logger_path), Some(rsyslogd_path)) = (
            program("logger", "bsdutils"),
            program("rsyslogd", "rsyslog"),
        ) else {
            return;
        };
        let server = TestServer::start().await;
        let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
        server.wait_analyzers(1).await;
        let dir = tempfile::tempdir().unwrap();
        let input = free_port();
        let to = server.emitters;
        let actions = [
            omfwd(
                "local0",
                to,
                "octet-counted",
                "RSYSLOG_SyslogProtocol23Format",
            ),
            omfwd(
                "local1",
                to,
                "traditional",
                "RSYSLOG_SyslogProtocol23Format",
            ),
            omfwd(
                "local2",
                to,
                "octet-counted",
                "RSYSLOG_TraditionalForwardFormat",
            ),
            omfwd(
                "local3",
                to,
                "traditional",
                "RSYSLOG_TraditionalForwardFormat",
            ),
        ]
        .concat();
        let daemon = rsyslogd(&rsyslogd_path, dir.path(), input, &actions).await;
        feed(&logger_path, input, 4).await;
        let got = collect(&mut analyzer, 32).await;
        assert_eq!(got, expected(0..4), "rsyslog log:\n{}", daemon.output());
        drop(daemon);
        let stopped = server.shutdown().await;
        assert_eq!(stopped.stats.accepted, 32, "none split, merged or repeated");
        assert_eq!(stopped.stats.rejected_total(), 0);
    }

    #[tokio::test]
    async fn rsyslog_burst_is_delivered_emerg_first_to_a_resumed_analyzer() {
        let (Some(logger_path), Some(rsyslogd_path)) = (
            program("logger", "bsdutils"),
            program("rsyslogd", "rsyslog"),
        ) else {
            return;
        };
        // Window 1: the analyzer holds one unacked message; the rest queue.
        let server = TestServer::start_with(|c| c.analyzers.window = 1).await;
        let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
        server.wait_analyzers(1).await;
        let dir = tempfile::tempdir().unwrap();
        let input = free_port();
        let actions = omfwd(
            "local0",
            server.emitters,
            "octet-counted",
            "RSYSLOG_SyslogProtocol23Format",
        );
        let daemon = rsyslogd(&rsyslogd_path, dir.path(), input, &actions).await;
        logger(&logger_path, input, "local0.info", &[], "first\n").await;
        let first = analyzer.next().await.unwrap();
        assert!(first.payload().ends_with(b"first"));

        // Paused (not acking): a burst of debug, then emerg.
        let debug: String = (0..50).map(|i| format!("debug-{i}\n")).collect();
        let emerg: String = (0..50).map(|i| format!("emerg-{i}\n")).collect();
        logger(
            &logger_path,
            input,
            "local0.debug",
            &["--octet-count"],
            &debug,
        )
        .await;
        logger(
            &logger_path,
            input,
            "local0.emerg",
            &["--octet-count"],
            &emerg,
        )
        .await;
        server
            .wait_for("the burst queued", |s| s.routed == 101)
            .await;

        let mut order = Vec::new();
        for _ in 0..100 {
            analyzer.ack().await;
            let message = analyzer.next().await.unwrap();
            let text = String::from_utf8(message.payload().to_vec()).unwrap();
            order.push(text.rsplit(' ').next().unwrap().to_owned());
        }
        analyzer.ack().await;
        let want: Vec<String> = (0..50)
            .map(|i| format!("emerg-{i}"))
            .chain((0..50).map(|i| format!("debug-{i}")))
            .collect();
        assert_eq!(order, want, "rsyslog log:\n{}", daemon.output());
        drop(daemon);
        server.shutdown().await;
    }

    /// syslog-ng: on PATH, or unpacked under `LOGDIST_SYSLOG_NG_ROOT` (then
    /// with its libraries and modules from there).
    fn syslog_ng() -> Option<Command> {
        if let Some(root) = std::env::var_os("LOGDIST_SYSLOG_NG_ROOT").map(PathBuf::from) {
            let binary = root.join("usr/sbin/syslog-ng");
            let libs = root.join("usr/lib/syslog-ng");
            let modules = std::fs::read_dir(&libs)
                .ok()?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .find(|path| path.join("libafsocket.so").is_file())?;
            let mut command = Command::new(binary);
            command
                .env("LD_LIBRARY_PATH", &libs)
                .arg(format!("--module-path={}", modules.display()));
            return Some(command);
        }
        program("syslog-ng", "syslog-ng-core").map(Command::new)
    }

    /// "3.38" from `syslog-ng --version`, for the config's `@version`.
    fn syslog_ng_version(command: &Command) -> String {
        let mut version = Command::new(command.get_program());
        version.envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let output = version
            .arg("--version")
            .output()
            .expect("syslog-ng --version");
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().next().unwrap_or_default();
        // "syslog-ng 3 (3.38.1)"
        let full = line
            .rsplit('(')
            .next()
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or_else(|| panic!("unexpected syslog-ng --version: {text}"));
        full.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
    }

    #[tokio::test]
    async fn syslog_ng_network_syslog_protocol_legacy_tcp_and_syslog_drivers() {
        let Some(logger_path) = program("logger", "bsdutils") else {
            return;
        };
        let Some(mut command) = syslog_ng() else {
            return;
        };
        let server = TestServer::start().await;
        let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
        server.wait_analyzers(1).await;
        let dir = tempfile::tempdir().unwrap();
        let input = free_port();
        let to = server.emitters.port();
        let version = syslog_ng_version(&command);
        let config = format!(
            "@version: {version}\n\
             options {{ stats_freq(0); }};\n\
             source s_in {{ syslog(ip(\"127.0.0.1\") port({input}) transport(\"tcp\")); }};\n\
             filter f_lt {{ program(\"lt\"); }};\n\
             destination d_protocol {{ network(\"127.0.0.1\" port({to}) transport(\"tcp\") flags(syslog-protocol) persist-name(\"protocol\")); }};\n\
             destination d_legacy {{ tcp(\"127.0.0.1\" port({to}) persist-name(\"legacy\")); }};\n\
             destination d_ietf {{ syslog(\"127.0.0.1\" port({to}) transport(\"tcp\") persist-name(\"ietf\")); }};\n\
             log {{ source(s_in); filter(f_lt); filter {{ facility(local0); }}; destination(d_protocol); }};\n\
             log {{ source(s_in); filter(f_lt); filter {{ facility(local1); }}; destination(d_legacy); }};\n\
             log {{ source(s_in); filter(f_lt); filter {{ facility(local2); }}; destination(d_ietf); }};\n",
            input = input.port(),
        );
        let path = dir.path().join("syslog-ng.conf");
        std::fs::write(&path, config).unwrap();
        let d = dir.path();
        command
            .args(["-F", "--no-caps", "-f"])
            .arg(&path)
            .arg("-p")
            .arg(d.join("syslog-ng.pid"))
            .arg("-R")
            .arg(d.join("syslog-ng.persist"))
            .arg("-c")
            .arg(d.join("syslog-ng.ctl"));
        let mut daemon = Daemon::spawn("syslog-ng", &mut command, d);
        daemon.listening(input).await;
        feed(&logger_path, input, 3).await;
        let got = collect(&mut analyzer, 24).await;
        assert_eq!(got, expected(0..3), "syslog-ng log:\n{}", daemon.output());
        drop(daemon);
        let stopped = server.shutdown().await;
        assert_eq!(stopped.stats.accepted, 24, "none split, merged or repeated");
        assert_eq!(stopped.stats.rejected_total(), 0);
    }
}
