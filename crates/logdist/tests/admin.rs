//! The admin HTTP API with a real HTTP client against a running distributor:
//! the seed's endpoints and curl examples, operator controls changing routing,
//! Prometheus metrics and the CSV export matching the traffic sent.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{SeedAnalyzer, TIMEOUT, TestServer, connect, emit, frames, within};
use tokio::io::AsyncWriteExt;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(TIMEOUT).build().unwrap()
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = client()
        .get(format!("{}{path}", server.admin))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The analyzer's entry in `GET /api/v1/analyzers`.
async fn analyzer(server: &TestServer, id: &str) -> Value {
    let (_, list) = get(server, "/api/v1/analyzers").await;
    list["analyzers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stats_and_analyzers_have_the_seed_shapes_and_status_codes() {
    let server = TestServer::start().await;

    let (status, health) = get(&server, "/api/v1/health").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no analyzer: {health}"
    );
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["total_analyzers"], 0);
    for key in ["uptime", "timestamp"] {
        assert!(health[key].is_string(), "{key} in {health}");
    }
    humantime::parse_rfc3339(health["timestamp"].as_str().unwrap()).unwrap();

    let a = SeedAnalyzer::connect(&server, 1.0).await;
    let b = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;
    let (status, health) = get(&server, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert_eq!(
        (
            health["active_analyzers"].as_u64(),
            health["total_analyzers"].as_u64()
        ),
        (Some(2), Some(2))
    );

    // One taken out by hand: degraded, still 200.
    let url = format!("{}/api/v1/analyzers/{}/health", server.admin, a.id);
    let (status, record) = send(client().post(&url).json(&json!({"healthy": false}))).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["health"], "unhealthy");
    assert_eq!(record["manual_override"], true);
    assert_eq!(record["connected"], true);
    let (status, health) = get(&server, "/api/v1/health").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("degraded"))
    );

    emit(server.emitters, "m", 0..10, 2).await;
    server.wait_for("10 routed", |s| s.routed == 10).await;
    let (status, stats) = get(&server, "/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    for key in [
        "total_packets_received",
        "total_messages_routed",
        "active_analyzers",
        "packet_channel_util_percent",
        "result_channel_util_percent",
        "retry_channel_util_percent",
        "uptime",
        "timestamp",
    ] {
        assert!(!stats[key].is_null(), "stats lack {key}: {stats}");
    }
    assert_eq!(stats["total_packets_received"], 10);
    assert_eq!(stats["total_messages_routed"], 10);
    assert_eq!(stats["active_analyzers"], 1);
    let entry = &stats["analyzers"][&b.id];
    assert_eq!(entry["name"], b.id.as_str());
    assert_eq!(entry["is_healthy"], true);
    for key in [
        "processed_count",
        "error_count",
        "queue_util_percent",
        "in_flight",
    ] {
        assert!(entry[key].is_number(), "{key} in {entry}");
    }
    assert_eq!(stats["analyzers"][&a.id]["is_healthy"], false);
    assert_eq!(stats["totals"]["accepted"], 10);
    assert_eq!(stats["priorities"]["2"]["accepted"], 10);
    assert_eq!(stats["priorities"]["6-255"]["accepted"], 0);
    // b holds all 10, unread and unacked: queued or in flight, nowhere else.
    let held = |v: &Value| v.as_u64().unwrap();
    assert_eq!(
        held(&entry["queue_depth"]) + held(&entry["in_flight"]),
        10,
        "{entry}"
    );
    assert_eq!(
        held(&stats["totals"]["queued"]) + held(&stats["totals"]["in_flight"]),
        10
    );
    assert_eq!(stats["totals"]["queued"], entry["queue_depth"]);
    assert_eq!(stats["priorities"]["2"]["queued"], entry["queue_depth"]);
    assert_eq!(
        entry["in_flight"], 10,
        "a connected analyzer gets its window's worth: {entry}"
    );

    let (status, list) = get(&server, "/api/v1/analyzers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["analyzers"].as_array().unwrap().len(), 2);
    let (status, one) = get(&server, &format!("/api/v1/analyzers/{}", b.id)).await;
    assert_eq!(
        (status, one["link"].as_str()),
        (StatusCode::OK, Some("dial_in"))
    );

    // Errors: unknown ids are 404, bad bodies 400, always as {"error": ...}.
    let nobody = format!("{}/api/v1/analyzers/nobody", server.admin);
    let (status, err) = send(
        client()
            .post(format!("{nobody}/health"))
            .json(&json!({"healthy": true})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].is_string(), "{err}");
    let (status, _) = send(
        client()
            .put(format!("{nobody}/weight"))
            .json(&json!({"weight": 1.0})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&server, "/api/v1/analyzers/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let weight_url = format!("{}/api/v1/analyzers/{}/weight", server.admin, b.id);
    for bad in [
        json!({"weight": -1.0}),
        json!({"weight": "heavy"}),
        json!({}),
    ] {
        let (status, err) = send(client().put(&weight_url).json(&bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} gave {err}");
        assert!(err["error"].is_string(), "{err}");
    }
    for bad in [
        json!({"healthy": "yes"}),
        json!({"status": "sleepy"}),
        json!([]),
    ] {
        let (status, _) = send(client().post(&url).json(&bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (status, _) = send(
        client()
            .post(&url)
            .header("Content-Type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The seed-style body works too.
    let (status, record) = send(client().post(&url).json(&json!({"status": "healthy"}))).await;
    assert_eq!(
        (status, record["health"].as_str()),
        (StatusCode::OK, Some("healthy"))
    );
    drop((a, b));
}

/// The seed README's curl examples, as written (ports aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_curl_examples_work() {
    let server = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    // curl http://localhost:8080/api/v1/health
    let (status, _) = get(&server, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    // curl http://localhost:8080/api/v1/stats
    let (status, _) = get(&server, "/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK);

    // curl -X POST http://localhost:8080/api/v1/logs -H "Content-Type: application/json" -d '[...]'
    let body = r#"[{
    "messages": [
      {
        "level": "ERROR",
        "message": "Database connection failed",
        "source": "api-service"
      }
    ]
  }]"#;
    let (status, answer) = send(
        client()
            .post(format!("{}/api/v1/logs", server.admin))
            .header("Content-Type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["total_packets"], 1);
    assert_eq!(answer["successful"], 1);
    assert_eq!(answer["failed"], 0);
    assert_eq!(answer["processed_packets"].as_array().unwrap().len(), 1);

    // The analyzer gets it like an NDJSON emitter's message: the JSON object
    // as the payload, at the priority its level maps to (ERROR = 1).
    let message = analyzer.next().await.unwrap();
    assert_eq!(message.priority(), 1);
    let sent: Value = serde_json::from_slice(&message.payload()).unwrap();
    assert_eq!(sent["message"], "Database connection failed");
    assert_eq!(sent["source"], "api-service");
    analyzer.ack().await;

    // The JMeter sample body (three messages with metadata), plus packets
    // that fail: all or nothing per packet, reasons reported.
    let packets = json!([
        {"id": "jmeter-1", "messages": [
            {"level": "INFO", "message": "User login successful", "source": "auth-service",
             "metadata": {"user_id": "user_12345", "ip_address": "192.168.1.100"}},
            {"level": "DEBUG", "message": "Session token generated", "source": "auth-service"},
            {"level": "ERROR", "message": "Multiple login attempts detected",
             "source": "security-monitor", "metadata": {"attempt_count": 5}}
        ]},
        {"id": "empty", "messages": []},
        {"id": "bad", "messages": [{"message": "ok"}, {"message": "x", "priority": 300}]},
        {"messages": [{"message": "explicit", "priority": 7}]},
        "not a packet"
    ]);
    let (status, answer) = send(
        client()
            .post(format!("{}/api/v1/logs", server.admin))
            .json(&packets),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["total_packets"], 5);
    assert_eq!(answer["successful"], 2);
    assert_eq!(answer["failed"], 3);
    let processed = answer["processed_packets"].as_array().unwrap();
    assert_eq!(processed[0], "jmeter-1");
    assert!(
        processed[1].as_str().unwrap().starts_with("packet-"),
        "{answer}"
    );
    assert_eq!(answer["errors"].as_array().unwrap().len(), 3);

    let mut priorities: Vec<u8> = Vec::new();
    for _ in 0..4 {
        priorities.push(analyzer.next().await.unwrap().priority());
    }
    priorities.sort_unstable();
    assert_eq!(priorities, [1, 3, 4, 7]);
    analyzer.ack().await;
    server.wait_for("5 delivered", |s| s.delivered == 5).await;
    let stats = server.stats();
    assert_eq!(stats.accepted, 5);
    assert_eq!(stats.rejected(logdist_wire::RejectReason::BadPriority), 1);

    // Bad JSON is a 400 with a reason.
    let (status, err) = send(
        client()
            .post(format!("{}/api/v1/logs", server.admin))
            .header("Content-Type", "application/json")
            .body("[{\"messages\": [}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"].as_str().unwrap().contains("invalid JSON"),
        "{err}"
    );

    // curl http://localhost:8080/api/v1/dead-letter
    let (status, dead) = get(&server, "/api/v1/dead-letter").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dead["total"], 0);
    assert_eq!(dead["dead_letters"], json!([]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_newest_first_with_pages() {
    let server = TestServer::start_with(|c| c.delivery.max_attempts = 1).await;
    let analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    emit(server.emitters, "lost-", 0..5, 3).await;
    server.wait_for("5 routed", |s| s.routed == 5).await;
    let mut analyzer = analyzer;
    for _ in 0..5 {
        analyzer.next().await.unwrap();
    }
    // Dies holding them unacked: one attempt each, so all are dead letters.
    analyzer.kill();
    server
        .wait_for("5 dead letters", |s| s.dead_lettered == 5)
        .await;

    let (status, page) = get(&server, "/api/v1/dead-letter?limit=2&offset=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            page["total"].as_u64(),
            page["limit"].as_u64(),
            page["offset"].as_u64()
        ),
        (Some(5), Some(2), Some(1))
    );
    let messages: Vec<&str> = page["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["lost-3", "lost-2"]);
    let (status, _) = get(&server, "/api/v1/dead-letter?limit=100000").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A query that does not parse is answered in JSON too.
    let (status, error) = get(&server, "/api/v1/dead-letter?limit=abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"].as_str().unwrap().contains("limit"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_health_override_takes_an_analyzer_out_of_routing_and_back() {
    let server = TestServer::start_with(|c| c.analyzers.queue_capacity = 10_000).await;
    let a = SeedAnalyzer::connect(&server, 1.0).await;
    let b = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;
    let url = format!("{}/api/v1/analyzers/{}/health", server.admin, a.id);

    let (status, _) = send(client().post(&url).json(&json!({"healthy": false}))).await;
    assert_eq!(status, StatusCode::OK);
    // While overridden, the analyzer's own weight update is remembered, not applied.
    let mut a = a;
    a.set_weight(2.0).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while analyzer(&server, &a.id).await["weight"] != 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "weight update not seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    emit(server.emitters, "x", 0..200, 3).await;
    server.wait_for("200 routed", |s| s.routed == 200).await;
    let record = analyzer(&server, &a.id).await;
    assert_eq!(
        record["routed"], 0,
        "overridden analyzer got messages: {record}"
    );
    assert_eq!(
        record["connected"], true,
        "the override must not disconnect it"
    );
    assert_eq!(analyzer(&server, &b.id).await["routed"], 200);

    let (status, record) = send(client().post(&url).json(&json!({"healthy": true}))).await;
    assert_eq!(
        (status, record["health"].as_str()),
        (StatusCode::OK, Some("healthy"))
    );
    emit(server.emitters, "y", 0..300, 3).await;
    server.wait_for("500 routed", |s| s.routed == 500).await;
    // Back with its remembered weight 2 against b's 1: two thirds of 300.
    let routed_a = analyzer(&server, &a.id).await["routed"].as_u64().unwrap();
    let routed_b = analyzer(&server, &b.id).await["routed"].as_u64().unwrap();
    assert_eq!(routed_a + routed_b, 500);
    assert!(
        routed_a.abs_diff(200) <= 2,
        "2:1 after the override gave {routed_a} of 300"
    );
    assert_eq!(server.stats().diverted, 0);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_set_over_http_changes_the_measured_shares() {
    let server = TestServer::start_with(|c| c.analyzers.queue_capacity = 10_000).await;
    let a = SeedAnalyzer::connect(&server, 1.0).await;
    let b = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(2).await;

    let url = format!("{}/api/v1/analyzers/{}/weight", server.admin, a.id);
    let (status, record) = send(client().put(&url).json(&json!({"weight": 3.0}))).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["weight"], 3.0);
    server
        .wait_for_analyzers("weight 3", |t| t.iter().any(|(_, w)| *w == 3.0))
        .await;

    emit(server.emitters, "w", 0..10_000, 3).await;
    server
        .wait_for("10000 routed", |s| s.routed == 10_000)
        .await;
    let (_, stats) = get(&server, "/api/v1/stats").await;
    let routed_a = stats["analyzers"][&a.id]["routed"].as_u64().unwrap();
    let routed_b = stats["analyzers"][&b.id]["routed"].as_u64().unwrap();
    assert_eq!(routed_a + routed_b, 10_000);
    assert_eq!(stats["totals"]["diverted"], 0);
    let share = routed_a as f64 / 10_000.0;
    assert!(
        (share - 0.75).abs() <= 0.005,
        "3:1 over HTTP gave {routed_a}:{routed_b}"
    );
    drop((a, b));
}

/// The value of one sample in a parsed scrape (counters end in `_total`).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    match found.map(|s| &s.value) {
        Some(
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v),
        ) => *v,
        other => panic!("no sample {name}{labels:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_the_traffic() {
    let server = TestServer::start().await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;

    let mut stream = connect(server.emitters).await;
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| format!("p{i}").into_bytes()).collect();
    let mut batch: Vec<(u8, &[u8])> = payloads.iter().map(|p| (0u8, p.as_slice())).collect();
    batch.extend(payloads[..20].iter().map(|p| (200u8, p.as_slice())));
    stream.write_all(&frames(&batch)).await.unwrap();
    for i in 0..30 {
        let line = format!("{{\"level\":\"error\",\"n\":{i}}}\n");
        stream.write_all(line.as_bytes()).await.unwrap();
    }
    stream
        .write_all(b"not json\n{\"priority\":999}\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    // Read but not acked yet: all 100 are in flight.
    for _ in 0..100 {
        analyzer.next().await.unwrap();
    }
    let text = client()
        .get(format!("{}/metrics", server.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unacked = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let id = analyzer.id.as_str();
    assert_eq!(
        sample(&unacked, "logdist_in_flight", &[("analyzer", id)]),
        100.0
    );
    analyzer.ack().await;
    server
        .wait_for("100 delivered", |s| s.delivered == 100)
        .await;

    let response = client()
        .get(format!("{}/metrics", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();

    let accepted = "logdist_messages_accepted_total";
    assert_eq!(sample(&scrape, accepted, &[("class", "0")]), 50.0);
    assert_eq!(sample(&scrape, accepted, &[("class", "1")]), 30.0);
    assert_eq!(sample(&scrape, accepted, &[("class", "6-255")]), 20.0);
    assert_eq!(sample(&scrape, accepted, &[("class", "3")]), 0.0);
    let rejected = "logdist_messages_rejected_total";
    assert_eq!(
        sample(&scrape, rejected, &[("reason", "invalid_json")]),
        1.0
    );
    assert_eq!(
        sample(&scrape, rejected, &[("reason", "bad_priority")]),
        1.0
    );
    assert_eq!(sample(&scrape, "logdist_messages_routed_total", &[]), 100.0);
    assert_eq!(sample(&scrape, "logdist_messages_diverted_total", &[]), 0.0);
    let delivered = "logdist_messages_delivered_total";
    assert_eq!(sample(&scrape, delivered, &[("class", "0")]), 50.0);
    assert_eq!(sample(&scrape, delivered, &[("class", "1")]), 30.0);
    assert_eq!(sample(&scrape, delivered, &[("class", "6-255")]), 20.0);
    let id = analyzer.id.as_str();
    assert_eq!(
        sample(
            &scrape,
            "logdist_analyzer_delivered_total",
            &[("analyzer", id)]
        ),
        100.0
    );
    assert_eq!(
        sample(
            &scrape,
            "logdist_analyzer_routed_total",
            &[("analyzer", id)]
        ),
        100.0
    );
    assert_eq!(
        sample(&scrape, "logdist_analyzer_up", &[("analyzer", id)]),
        1.0
    );
    assert_eq!(
        sample(&scrape, "logdist_in_flight", &[("analyzer", id)]),
        0.0
    );
    assert_eq!(
        sample(
            &scrape,
            "logdist_queue_depth",
            &[("analyzer", id), ("class", "0")]
        ),
        0.0
    );
    assert_eq!(
        sample(&scrape, "logdist_messages_dead_lettered_total", &[]),
        0.0
    );
    assert_eq!(
        sample(&scrape, "logdist_analyzers", &[("health", "healthy")]),
        1.0
    );
    let latency = "logdist_delivery_latency_seconds";
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == latency && s.labels.get("class") == Some("0"))
        .unwrap_or_else(|| panic!("no {latency} in\n{text}"));
    let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
        panic!("{latency} is not a histogram: {histogram:?}");
    };
    assert_eq!(
        buckets.last().unwrap().count,
        50.0,
        "+Inf bucket counts every delivery"
    );
    assert_eq!(
        sample(&scrape, &format!("{latency}_count"), &[("class", "1")]),
        30.0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_gains_rows_with_consistent_totals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let csv_path = path.to_str().unwrap().to_string();
    let server = TestServer::start_with(|c| {
        c.metrics.csv_path = csv_path;
        c.metrics.interval = Duration::from_millis(50);
    })
    .await;
    let mut analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    emit(server.emitters, "c", 0..40, 1).await;
    emit(server.emitters, "d", 0..60, 9).await;
    analyzer.take_and_ack(100).await;
    server
        .wait_for("100 delivered", |s| s.delivered == 100)
        .await;

    let read = |path: &std::path::Path| -> (Vec<String>, Vec<Vec<String>>) {
        let mut reader = csv::Reader::from_path(path).unwrap();
        let header = reader.headers().unwrap().iter().map(String::from).collect();
        let rows = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        (header, rows)
    };
    let column = |header: &[String], name: &str| header.iter().position(|c| c == name).unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if path.exists() {
            let (header, rows) = read(&path);
            let delivered = column(&header, "delivered");
            if rows.iter().any(|r| r[delivered] == "100") {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no CSV row with the deliveries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(analyzer);
    let stats = server.shutdown().await.stats;

    let (header, rows) = read(&path);
    assert!(rows.len() >= 2, "one row per interval: {rows:?}");
    let at = |row: &Vec<String>, name: &str| -> u64 { row[column(&header, name)].parse().unwrap() };
    let mut previous = 0;
    for row in &rows {
        assert_eq!(row.len(), header.len());
        humantime::parse_rfc3339(&row[0]).unwrap();
        let accepted = at(row, "accepted");
        assert!(accepted >= previous, "counters are cumulative");
        previous = accepted;
        let by_class: u64 = ["0", "1", "2", "3", "4", "5", "6_255"]
            .iter()
            .map(|c| at(row, &format!("accepted_p{c}")))
            .sum();
        assert_eq!(by_class, accepted, "classes add up to the total");
    }
    // The last row is written after shutdown settled: it equals the final stats.
    let last = rows.last().unwrap();
    assert_eq!(at(last, "accepted"), stats.accepted);
    assert_eq!(at(last, "delivered"), stats.delivered);
    assert_eq!(at(last, "accepted_p1"), 40);
    assert_eq!(at(last, "delivered_p6_255"), 60);
    assert_eq!(
        at(last, "other_delivered"),
        100,
        "dial-in analyzers count under other_*"
    );
}

/// `[admin] listen = ""` means no admin API at all.
#[tokio::test]
async fn admin_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.admin.listen = String::new()).await;
    assert!(server.admin.is_empty());
    within("shutdown", server.shutdown()).await;
}

/// A client that gives up while its request waits for room loses only the
/// reply: every message it sent is still routed once room appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_survives_a_client_that_gives_up() {
    let server = TestServer::start_with(|c| c.delivery.hold_capacity = 2).await;
    let messages: Vec<Value> = (0..10)
        .map(|i| json!({"level": "INFO", "message": format!("m{i}")}))
        .collect();
    // No analyzer and room to hold 2: the request has to wait, and the
    // client stops waiting first.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let sent = impatient
        .post(format!("{}/api/v1/logs", server.admin))
        .json(&json!([{"id": "p1", "messages": messages}]))
        .send()
        .await;
    assert!(
        sent.is_err(),
        "the request should still be waiting: {sent:?}"
    );
    server.wait_for("held", |s| s.held == 2).await;

    let mut a = SeedAnalyzer::connect(&server, 1.0).await;
    let got = a.take_and_ack(10).await;
    let mut payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload().to_vec()).unwrap())
        .collect();
    payloads.sort();
    assert_eq!(payloads.len(), 10);
    assert!(payloads.iter().all(|p| p.contains("\"level\":\"INFO\"")));
    server
        .wait_for("all delivered", |s| s.delivered == 10)
        .await;
    let report = server.shutdown().await;
    assert_eq!(report.stats.accepted, 10);
    assert_eq!(report.stats.dead_lettered, 0);
}

/// The admin listener takes at most `admin.max_connections` connections at
/// once: the next one is refused (counted) and closed unread; once one
/// closes, requests are served again.
#[tokio::test]
async fn admin_connections_beyond_the_limit_are_refused_and_counted() {
    use logdist::refusal::{Listener, RefusalReason};
    use tokio::io::AsyncReadExt;
    const LIMIT: usize = 4;
    let server = TestServer::start_with(|c| c.admin.max_connections = LIMIT).await;
    let address = server.admin_address.unwrap();
    let mut idle = Vec::new();
    for _ in 0..LIMIT {
        idle.push(connect(address).await);
    }
    // The acceptor takes them in order; the one past the limit is closed.
    let mut extra = connect(address).await;
    let mut buf = [0u8; 16];
    let read = within("the extra connection to be closed", extra.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the connection past the limit was served: {read:?}"
    );
    assert_eq!(
        server
            .stats()
            .refused(Listener::Admin, RefusalReason::MaxConnections),
        1
    );
    // The idle ones are still there, and one leaving makes room.
    drop(idle.pop());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let attempt = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
            .get(format!("{}/api/v1/health", server.admin))
            .send()
            .await;
        if let Ok(response) = attempt {
            // 503: healthy needs an analyzer; what matters is the answer.
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(idle);
    server.shutdown().await;
}

/// A client that sends its request headers a byte at a time, slower than
/// `admin.header_read_timeout` allows in all, is disconnected before it
/// finishes them, and gets no response.
#[tokio::test]
async fn a_slowloris_admin_client_is_disconnected() {
    use tokio::io::AsyncReadExt;
    let timeout = Duration::from_millis(500);
    let server = TestServer::start_with(|c| c.admin.header_read_timeout = timeout).await;
    let stream = connect(server.admin_address.unwrap()).await;
    let (mut reader, mut writer) = stream.into_split();
    let request = b"GET /api/v1/health HTTP/1.1\r\nHost: logdist\r\nUser-Agent: slow\r\n\r\n";
    let started = tokio::time::Instant::now();
    // One byte every 100 ms: the whole header would take 6.4 s.
    let slow_writer = tokio::spawn(async move {
        for byte in request {
            if writer.write_all(&[*byte]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    });
    let mut response = Vec::new();
    let read = within(
        "the slow client to be disconnected",
        reader.read_to_end(&mut response),
    )
    .await;
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}; response: {:?}",
        String::from_utf8_lossy(&response)
    );
    assert!(
        !String::from_utf8_lossy(&response).contains("200 OK"),
        "the slow client was served: {read:?} {:?}",
        String::from_utf8_lossy(&response)
    );
    slow_writer.abort();
    // A normal client is still served.
    let (status, _) = get(&server, "/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await;
}
