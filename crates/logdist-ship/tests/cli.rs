//! The `logdist-ship` binary: flags, environment, precedence, exit codes.

mod support;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use support::*;

/// Runs the binary with a clean environment plus `env`.
fn ship(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("RUST_LOG", "warn")
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn config_json(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let out = ship(&all, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn defaults_match_the_seed() {
    let c = config_json(&[], &[]);
    assert_eq!(c["log_files"], serde_json::json!(["/var/log/app.log"]));
    assert_eq!(c["servers"], serde_json::json!(["localhost:9000"]));
    assert_eq!(c["server_order"], "random");
    assert_eq!(c["mode"], "batch");
    assert_eq!(c["compress"], false);
    assert_eq!(c["batch_size"], 1);
    assert_eq!(c["resilient"], false);
    assert_eq!(c["buffer_size"], 50000);
    assert_eq!(c["metrics_interval"], 0.0);
    assert_eq!(c["poll_interval"], 0.5);
    assert_eq!(c["checkpoint"], serde_json::Value::Null);
    assert_eq!(c["tls"], false);
    for key in ["tls_ca", "tls_cert", "tls_key", "tls_server_name"] {
        assert_eq!(c[key], serde_json::Value::Null, "{key}");
    }
    // The library's defaults are the command's.
    let lib = logdist_ship::Config::new(vec!["/var/log/app.log".into()], "localhost", 9000);
    assert_eq!(c, serde_json::to_value(&lib).unwrap());
}

#[test]
fn environment_overrides_defaults_and_flags_override_environment() {
    let env = [
        ("LOG_FILE", "/tmp/a.log,/tmp/b.log"),
        ("SERVER_HOST", "logs.example"),
        ("SERVER_PORT", "9100"),
        ("SHIPPING_MODE", "continuous"),
        ("COMPRESS", "true"),
        ("BATCH_SIZE", "5"),
        ("RESILIENT", "true"),
        ("BUFFER_SIZE", "100"),
        ("METRICS_INTERVAL", "10"),
        ("POLL_INTERVAL", "0.25"),
        ("CHECKPOINT_FILE", "/tmp/cp"),
        ("PRIORITY", "4"),
        ("TLS", "true"),
        ("TLS_CA", "/env/ca.pem"),
        ("TLS_CERT", "/env/client.pem"),
        ("TLS_KEY", "/env/client-key.pem"),
        ("TLS_SERVER_NAME", "env.example"),
    ];
    let c = config_json(&[], &env);
    assert_eq!(
        c["log_files"],
        serde_json::json!(["/tmp/a.log", "/tmp/b.log"])
    );
    assert_eq!(c["servers"], serde_json::json!(["logs.example:9100"]));
    assert_eq!(c["mode"], "continuous");
    assert_eq!(
        (c["compress"].as_bool(), c["resilient"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        (c["batch_size"].as_u64(), c["buffer_size"].as_u64()),
        (Some(5), Some(100))
    );
    assert_eq!(
        (c["metrics_interval"].as_f64(), c["poll_interval"].as_f64()),
        (Some(10.0), Some(0.25))
    );
    assert_eq!(c["checkpoint"], "/tmp/cp");
    assert_eq!(c["priority"], 4);
    assert_eq!(c["max_retries"], 0, "resilient retries forever by default");
    assert_eq!(c["tls"], true);
    assert_eq!(c["tls_ca"], "/env/ca.pem");
    assert_eq!(c["tls_cert"], "/env/client.pem");
    assert_eq!(c["tls_key"], "/env/client-key.pem");
    assert_eq!(c["tls_server_name"], "env.example");

    let c = config_json(
        &[
            "--log-file",
            "/x.log",
            "--server-host",
            "cli",
            "--server-port",
            "1",
            "--mode",
            "batch",
            "--compress=false",
            "--batch-size",
            "2",
            "--resilient=false",
            "--buffer-size",
            "3",
            "--metrics-interval",
            "1",
            "--poll-interval",
            "2",
            "--priority",
            "0",
            "--tls=false",
            "--tls-ca",
            "/cli/ca.pem",
            "--tls-cert",
            "/cli/client.pem",
            "--tls-key",
            "/cli/client-key.pem",
            "--tls-server-name",
            "cli.example",
        ],
        &env,
    );
    assert_eq!(c["log_files"], serde_json::json!(["/x.log"]));
    assert_eq!(c["servers"], serde_json::json!(["cli:1"]));
    assert_eq!(c["mode"], "batch");
    assert_eq!(
        (c["compress"].as_bool(), c["resilient"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(
        (c["batch_size"].as_u64(), c["buffer_size"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        (c["metrics_interval"].as_f64(), c["poll_interval"].as_f64()),
        (Some(1.0), Some(2.0))
    );
    assert_eq!(c["priority"], 0);
    assert_eq!(c["max_retries"], 5);
    assert_eq!(c["tls"], false);
    assert_eq!(c["tls_ca"], "/cli/ca.pem");
    assert_eq!(c["tls_cert"], "/cli/client.pem");
    assert_eq!(c["tls_key"], "/cli/client-key.pem");
    assert_eq!(c["tls_server_name"], "cli.example");
}

#[test]
fn help_documents_every_flag_with_its_variable() {
    let out = ship(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--log-file", "LOG_FILE"),
        ("--server-host", "SERVER_HOST"),
        ("--server-port", "SERVER_PORT"),
        ("--server <HOST:PORT>", "SERVERS"),
        ("--server-order", "SERVER_ORDER"),
        ("--mode", "SHIPPING_MODE"),
        ("--compress", "COMPRESS"),
        ("--batch-size", "BATCH_SIZE"),
        ("--resilient", "RESILIENT"),
        ("--buffer-size", "BUFFER_SIZE"),
        ("--metrics-interval", "METRICS_INTERVAL"),
        ("--poll-interval", "POLL_INTERVAL"),
        ("--checkpoint", "CHECKPOINT_FILE"),
        ("--priority", "PRIORITY"),
        ("--level-map", "LEVEL_MAP"),
        ("--max-retries", "MAX_RETRIES"),
        ("--tls[=<BOOL>]", "TLS"),
        ("--tls-ca <PATH>", "TLS_CA"),
        ("--tls-cert <PATH>", "TLS_CERT"),
        ("--tls-key <PATH>", "TLS_KEY"),
        ("--tls-server-name <NAME>", "TLS_SERVER_NAME"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{env} missing from --help"
        );
    }
    assert!(help.contains("[default: /var/log/app.log]"));
    assert!(help.contains("Exit codes"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.log");
    let pattern = format!("{}/*.nothing", dir.path().display());
    for args in [
        vec!["--mode", "sometimes"],
        vec!["--batch-size", "0"],
        vec!["--log-file", missing.to_str().unwrap()],
        vec!["--log-file", &pattern, "--mode", "continuous"],
    ] {
        let out = ship(&args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn several_servers_from_flags_or_the_environment() {
    let c = config_json(
        &[
            "--server",
            "a.example:9000,10.0.0.2:9001",
            "--server",
            "[::1]:9002",
        ],
        &[],
    );
    assert_eq!(
        c["servers"],
        serde_json::json!(["a.example:9000", "10.0.0.2:9001", "[::1]:9002"])
    );
    let env = [("SERVERS", "env-a:1,env-b:2"), ("SERVER_ORDER", "listed")];
    let c = config_json(&[], &env);
    assert_eq!(c["servers"], serde_json::json!(["env-a:1", "env-b:2"]));
    assert_eq!(c["server_order"], "listed");
    // A flag wins over the variable, as everywhere.
    let c = config_json(&["--server", "cli:3", "--server-order", "random"], &env);
    assert_eq!(c["servers"], serde_json::json!(["cli:3"]));
    assert_eq!(c["server_order"], "random");
}

#[test]
fn both_server_forms_or_a_malformed_server_exit_2_naming_the_flag() {
    for (args, env, says) in [
        (
            &["--server", "a:1", "--server-host", "b"][..],
            &[][..],
            "--server/SERVERS cannot be combined with --server-host/SERVER_HOST",
        ),
        (
            &["--server", "a:1", "--server-port", "2"],
            &[],
            "--server/SERVERS cannot be combined with --server-port/SERVER_PORT",
        ),
        // From the environment too: the message names the variables.
        (
            &["--server", "a:1"],
            &[("SERVER_HOST", "b")],
            "--server/SERVERS cannot be combined with --server-host/SERVER_HOST",
        ),
        (
            &[],
            &[("SERVERS", "a:1"), ("SERVER_PORT", "2")],
            "--server/SERVERS cannot be combined with --server-port/SERVER_PORT",
        ),
        (
            &["--server", "localhost"],
            &[],
            "invalid value 'localhost' for '--server <HOST:PORT>': expected HOST:PORT",
        ),
        (
            &["--server", "a:1,b:port"],
            &[],
            "invalid value 'b:port' for '--server <HOST:PORT>'",
        ),
        (
            &[],
            &[("SERVERS", "::1:9000")],
            "for '--server <HOST:PORT>': expected HOST:PORT (an IPv6 address in brackets",
        ),
    ] {
        let out = ship(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} {env:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} {env:?}: nothing shipped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_skips_a_dead_server_and_names_the_servers_in_its_log() {
    let down = free_port().await;
    let up = FakeServer::start(Arc::new(|_, _, _| Some(Reply::Ok))).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    append(&file, &log_lines("bin", 0, 7));
    let servers = format!("{down},{}", up.addr);
    let file = file.display().to_string();
    let args = vec![
        "--log-file",
        &file,
        "--server",
        &servers,
        "--server-order",
        "listed",
        // One failed round would end the run, and would first wait: only
        // going on to the live server at once ships.
        "--max-retries",
        "1",
        "--backoff-initial",
        "60",
    ];
    let out = ship_async_env(&args, &[("RUST_LOG", "info")]).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("shipped_ok=7 rejected=0") && stdout.contains("failovers=0"),
        "{stdout}"
    );
    assert!(stderr.contains(&format!("servers={servers}")), "{stderr}");
    let skipped = stderr
        .lines()
        .find(|l| l.contains("trying the next one"))
        .unwrap_or_else(|| panic!("no line about the dead server: {stderr}"));
    assert!(
        skipped.contains(&format!("server={down}"))
            && skipped.contains(&format!("next={}", up.addr)),
        "{skipped}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("connected") && l.contains(&format!("server={}", up.addr))),
        "{stderr}"
    );
    assert_eq!(up.acked_ok().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_name_the_server_connected_to() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let down = free_port().await;
    let up = FakeServer::start(Arc::new(|_, _, _| Some(Reply::Ok))).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    append(&file, &log_lines("metrics", 0, 5));
    let mut child = tokio::process::Command::new(binary())
        .env_clear()
        .env("RUST_LOG", "info")
        .arg("--log-file")
        .arg(&file)
        .args(["--server", &format!("{down},{}", up.addr)])
        .args(["--server-order", "listed", "--mode", "continuous"])
        .args(["--metrics-interval", "0.05", "--health-interval", "0.05"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut unreachable, mut metrics) = (None, None);
    within(
        "the dead server's health and a metrics line with both verdicts",
        async {
            while unreachable.is_none() || metrics.is_none() {
                let Some(line) = stderr.next_line().await.unwrap() else {
                    panic!("the shipper ended early");
                };
                if line.contains("health: server unreachable") {
                    unreachable = Some(line);
                } else if line.contains("metrics:") && line.contains("reachable=1/2") {
                    metrics = Some(line);
                }
            }
        },
    )
    .await;
    let (unreachable, metrics) = (unreachable.unwrap(), metrics.unwrap());
    assert!(
        unreachable.contains(&format!("server={down}")),
        "{unreachable}"
    );
    assert!(
        metrics.contains(&format!("server={} reachable=1/2", up.addr)),
        "{metrics}"
    );
    assert!(metrics.contains("failovers=0"), "{metrics}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_lines_give_exit_code_1_and_a_summary() {
    let server = FakeServer::start(Arc::new(|_, _, line| {
        Some(if line.contains("json") {
            Reply::Error
        } else {
            Reply::Ok
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    append(&file, &log_lines("cli", 0, 50));
    let port = server.addr.port().to_string();
    let file = file.to_str().unwrap();
    let out = ship_async(&[
        "--log-file",
        file,
        "--server-host",
        "127.0.0.1",
        "--server-port",
        &port,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("lines_read=50 shipped_ok=45 rejected=5"),
        "{stdout}"
    );

    // Everything accepted (no JSON line among lines 0..7): exit code 0.
    let clean = dir.path().join("clean.log");
    append(&clean, &log_lines("clean", 0, 7));
    let clean = clean.to_str().unwrap();
    let out = ship_async(&[
        "--log-file",
        clean,
        "--server-host",
        "127.0.0.1",
        "--server-port",
        &port,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("lines_read=7 shipped_ok=7 rejected=0"),
        "{stdout}"
    );
}

/// [`ship`] off the async threads, bounded in time.
async fn ship_async(args: &[&str]) -> Output {
    ship_async_env(args, &[]).await
}

/// [`ship_async`] with `env` added to the clean environment.
async fn ship_async_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    within(
        "the binary",
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ship(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env)
        }),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_gives_exit_code_1_after_max_retries() {
    let addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    append(&file, &log_lines("x", 0, 3));
    let port = addr.port().to_string();
    let out = ship_async(&[
        "--log-file",
        file.to_str().unwrap(),
        "--server-host",
        "127.0.0.1",
        "--server-port",
        &port,
        "--max-retries",
        "3",
        "--backoff-initial",
        "0.01",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("gave up"), "{stdout}");
}
