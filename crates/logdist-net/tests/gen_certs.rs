//! `scripts/gen-certs.sh` makes certificates that logdist-net's TLS settings
//! load and that work together: a mutual-TLS handshake on 127.0.0.1 with the
//! server certificate and key it made, by every name it was asked for.
//! Skipped (saying so) where openssl is not installed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use logdist_net::test_pki::{PkiFiles, TlsTerminator};
use logdist_net::{TlsClient, TlsClientSettings, TlsNames, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gen-certs.sh")
}

fn gen_certs(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs")
}

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "SKIPPED: openssl is not installed, so scripts/gen-certs.sh cannot run \
             (apt-get install -y openssl)"
        );
    }
    found
}

#[tokio::test]
async fn gen_certs_makes_certificates_that_load_and_verify() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = gen_certs(&[certs.to_str().unwrap(), "logdist.test", "10.1.2.3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = PkiFiles::in_dir(&certs);
    assert!(files.exist(), "{files:?}");
    for key in [&files.ca_key, &files.server_key, &files.client_key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }

    // The server side: its certificate and key, client certificates required.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let server = TlsTerminator::start(files.server_config(true).unwrap(), echo_addr)
        .await
        .unwrap();
    let port = server.addr.port();

    // The client side: the files load with the client settings (the flags'
    // names), and verify by every name the certificate was made for.
    for (host, name) in [
        ("127.0.0.1", None),
        ("localhost", None),
        ("127.0.0.1", Some("logdist.test")),
        ("127.0.0.1", Some("10.1.2.3")),
    ] {
        let settings = TlsClientSettings {
            server_name: name.map(str::to_string),
            ..files.client_settings()
        };
        let client = TlsClient::new(&settings, &TlsNames::FLAGS).unwrap_or_else(|e| panic!("{e}"));
        let mut stream = connect(host, port, Some(&client), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{host} as {name:?}: {e}"));
        stream.write_all(b"hello\n").await.unwrap();
        stream.flush().await.unwrap();
        let mut back = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"hello\n");
    }
    // A name it was not made for.
    let other = TlsClientSettings {
        server_name: Some("elsewhere.test".into()),
        ..files.client_settings()
    };
    let client = TlsClient::new(&other, &TlsNames::FLAGS).unwrap();
    let err = connect("127.0.0.1", port, Some(&client), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not carry the name"), "{err}");
    assert_eq!(server.accepted(), 4);

    // It never overwrites: the same directory again is a clear failure.
    let again = gen_certs(&[certs.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("ca.pem exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn gen_certs_usage_and_bad_names() {
    let out = gen_certs(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: "));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("certs");
    let out = gen_certs(&[target.to_str().unwrap(), "not a name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is neither a DNS name nor an IP address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists(), "nothing made on a usage error");
}
