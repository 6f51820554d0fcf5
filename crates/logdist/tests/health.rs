//! `logdist health` (the image's HEALTHCHECK) against a real distributor over
//! real sockets: its exit status follows the admin API's health as analyzers
//! come and go; it finds the admin API from the config; it speaks HTTPS to an
//! admin API with `tls` (trusting the config's certificate, or a CA) and
//! presents a client certificate under mutual TLS; and unreachable, silent,
//! non-HTTP or wrongly set-up peers are exit 1 with a message that says why.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::pki::{Ca, server_tls, write};
use support::{SeedAnalyzer, TestServer, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_logdist");

/// What one run of the command gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `logdist health ARGS` with `env` (and no LOGDIST_* from the test's
/// own environment), bounded in time.
async fn health(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command.arg("health").args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("LOGDIST_") {
            command.env_remove(name);
        }
    }
    command
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("logdist health finished within 20 s")
        .unwrap();
    Run {
        code: out.status.code().expect("an exit status"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls until the command exits with `code` (the distributor registers an
/// analyzer on its own task), bounded.
async fn health_until(args: &[&str], code: i32) -> Run {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let run = health(args, &[]).await;
        if run.code == code || tokio::time::Instant::now() > deadline {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn exit_status_follows_the_analyzers() {
    let server = TestServer::start().await;
    let admin = server.admin_address.unwrap().to_string();

    // No analyzer: unhealthy (503), exit 1; --live only asks that it serves.
    let run = health(&["--admin", &admin], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .starts_with("unhealthy: 0 of 0 analyzers active, up "),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains(&format!("(http://{admin}/api/v1/health)")),
        "{run:?}"
    );
    let run = health(&["--admin", &admin, "--live"], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");

    // One analyzer: healthy, exit 0; but not the two a compose file may want.
    let analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let run = health_until(&["--admin", &admin], 0).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("healthy: 1 of 1 analyzers active"),
        "{run:?}"
    );
    let run = health(&["--admin", &admin, "--min-analyzers", "2"], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("fewer than the 2 active analyzers required"),
        "{run:?}"
    );

    // The address from a config, as in the image: 0.0.0.0 is asked on
    // loopback; --config, LOGDIST_CONFIG and LOGDIST_ADMIN_LISTEN all work.
    let dir = tempfile::tempdir().unwrap();
    let port = server.admin_address.unwrap().port();
    let config = write(
        dir.path(),
        "logdist.toml",
        &format!("[admin]\nlisten = \"0.0.0.0:{port}\"\n"),
    );
    let config = config.to_str().unwrap();
    let run = health(&["--config", config], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("(http://127.0.0.1:{port}/api/v1/health)")),
        "{run:?}"
    );
    assert_eq!(health(&[], &[("LOGDIST_CONFIG", config)]).await.code, 0);
    assert_eq!(
        health(&[], &[("LOGDIST_ADMIN_LISTEN", &admin)]).await.code,
        0
    );

    // The analyzer leaves: unhealthy again.
    analyzer.kill();
    server.wait_analyzers(0).await;
    let run = health_until(&["--admin", &admin], 1).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("unhealthy: "), "{run:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_silent_and_foreign_peers_fail_with_a_reason() {
    // Nothing listens.
    let nobody = free_port().to_string();
    let run = health(&["--admin", &nobody], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "logdist health: cannot reach the admin API at {nobody}: "
        )) && run.stderr.contains("is logdist running"),
        "{run:?}"
    );

    // A peer that accepts and never answers: bounded by --timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let started = std::time::Instant::now();
    let run = health(&["--admin", &silent_addr, "--timeout", "300ms"], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no answer from"), "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    holder.abort();

    // Something that is not HTTP.
    let foreign = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign_addr = foreign.local_addr().unwrap().to_string();
    let speaker = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut conn, _)) = foreign.accept().await {
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        }
    });
    let run = health(&["--admin", &foreign_addr], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("did not answer in HTTP"), "{run:?}");
    speaker.abort();

    // The admin API turned off in the config: nothing to ask.
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "off.toml", "[admin]\nlisten = \"\"\n");
    let run = health(&["--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("the admin API is off"), "{run:?}");
}

/// A config for `logdist health` naming the server's admin address and TLS.
fn tls_config(dir: &Path, name: &str, port: u16, tls: &logdist::config::ServerTlsConfig) -> String {
    let mut table = format!(
        "cert = \"{}\", key = \"{}\"",
        tls.cert.display(),
        tls.key.display()
    );
    if let Some(ca) = &tls.client_ca {
        table.push_str(&format!(", client_ca = \"{}\"", ca.display()));
    }
    write(
        dir,
        name,
        &format!("[admin]\nlisten = \"0.0.0.0:{port}\"\ntls = {{ {table} }}\n"),
    )
    .to_str()
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn https_with_the_configs_certificate_or_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("health test CA");
    let tls = server_tls(
        dir.path(),
        "admin",
        &ca.issue(&["localhost", "127.0.0.1"]),
        None,
    );
    let server = TestServer::start_with(|c| c.admin.tls = Some(tls.clone())).await;
    let address = server.admin_address.unwrap();
    let admin = address.to_string();
    let config = tls_config(dir.path(), "logdist.toml", address.port(), &tls);

    // With the distributor's config: HTTPS, its own certificate trusted.
    let run = health(&["--config", &config, "--live"], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "(https://127.0.0.1:{}/api/v1/health)",
            address.port()
        )),
        "{run:?}"
    );
    let _analyzer = SeedAnalyzer::connect(&server, 1.0).await;
    server.wait_analyzers(1).await;
    let run = health_until(&["--config", &config], 0).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("healthy: 1 of 1"), "{run:?}");

    // Or a CA (the certificate carries 127.0.0.1).
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let run = health(
        &[
            "--admin",
            &admin,
            "--tls",
            "--tls-ca",
            ca_file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");

    // Plain HTTP to an HTTPS admin API says what to do.
    let run = health(&["--admin", &admin], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("HTTPS") && run.stderr.contains("--config"),
        "{run:?}"
    );

    // A config whose certificate is not the one served is refused.
    let other = server_tls(dir.path(), "other", &ca.issue(&["localhost"]), None);
    let wrong = tls_config(dir.path(), "wrong.toml", address.port(), &other);
    let run = health(&["--config", &wrong], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("not the certificate in"), "{run:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_needs_and_uses_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("health mTLS CA");
    let tls = server_tls(
        dir.path(),
        "admin",
        &ca.issue(&["localhost", "127.0.0.1"]),
        Some(&ca),
    );
    let server = TestServer::start_with(|c| c.admin.tls = Some(tls.clone())).await;
    let address = server.admin_address.unwrap();
    let config = tls_config(dir.path(), "logdist.toml", address.port(), &tls);

    let run = health(&["--config", &config], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("requires a client certificate") && run.stderr.contains("--tls-cert"),
        "{run:?}"
    );

    let client = ca.issue(&["health-client"]);
    let cert = write(dir.path(), "client.pem", &client.cert);
    let key = write(dir.path(), "client-key.pem", &client.key);
    let run = health(
        &[
            "--config",
            &config,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--live",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("unhealthy: 0 of 0"), "{run:?}");

    // A client certificate from another CA: the server refuses it.
    let stranger = Ca::new("stranger").issue(&["intruder"]);
    let cert = write(dir.path(), "stranger.pem", &stranger.cert);
    let key = write(dir.path(), "stranger-key.pem", &stranger.key);
    let run = health(
        &[
            "--config",
            &config,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("logdist health: ")
            && run.stderr.contains("refused")
            && run.stderr.contains("--tls-cert"),
        "{run:?}"
    );
    server.shutdown().await;
}
