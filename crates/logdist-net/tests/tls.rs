//! The TLS client against real TLS servers on 127.0.0.1 (certificates made
//! by `test_pki` in a temporary directory): settings checked with errors that
//! name the setting, handshakes that verify, and ones that must not.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use logdist_net::test_pki::{PkiFiles, TestPki, TlsTerminator};
use logdist_net::tls::explain_tls_error;
use logdist_net::{ClientStream, TlsClient, TlsClientSettings, TlsError, TlsNames, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A plain TCP echo server.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

struct Setup {
    _dir: tempfile::TempDir,
    files: PkiFiles,
    /// Another CA's files, which the servers do not know.
    other: PkiFiles,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let files = TestPki::generate(&["logdist.test"])
        .write_to(&dir.path().join("pki"))
        .unwrap();
    let other = TestPki::generate(&[])
        .write_to(&dir.path().join("other"))
        .unwrap();
    Setup {
        _dir: dir,
        files,
        other,
    }
}

fn settings(ca: &Path) -> TlsClientSettings {
    TlsClientSettings {
        ca: Some(ca.to_path_buf()),
        ..Default::default()
    }
}

fn client(settings: &TlsClientSettings) -> TlsClient {
    TlsClient::new(settings, &TlsNames::FLAGS).unwrap_or_else(|e| panic!("{e}"))
}

fn error(settings: &TlsClientSettings) -> String {
    TlsClient::new(settings, &TlsNames::FLAGS)
        .unwrap_err()
        .to_string()
}

async fn roundtrip(stream: &mut ClientStream, text: &[u8]) {
    stream.write_all(text).await.unwrap();
    stream.flush().await.unwrap();
    let mut back = vec![0u8; text.len()];
    within("the echo", stream.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back, text);
}

#[test]
fn settings_errors_name_the_setting_and_the_file() {
    let s = setup();
    let missing = s.files.ca.with_file_name("nope.pem");

    // TLS off, a TLS setting given: refused, not ignored.
    let err = TlsClient::from_flags(false, &settings(&s.files.ca), &TlsNames::FLAGS).unwrap_err();
    assert!(matches!(err, TlsError::NotEnabled { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("--tls-ca is set but TLS is off: add --tls")
    );
    assert!(
        TlsClient::from_flags(false, &TlsClientSettings::default(), &TlsNames::FLAGS)
            .unwrap()
            .is_none()
    );

    let err = error(&TlsClientSettings::default());
    assert!(err.starts_with("--tls needs --tls-ca"), "{err}");

    let err = error(&settings(&missing));
    assert!(
        err.starts_with("--tls-ca: cannot read ") && err.contains("nope.pem"),
        "{err}"
    );

    // A key where the CA should be: no certificate in it.
    let err = error(&settings(&s.files.ca_key));
    assert!(
        err.starts_with("--tls-ca: ") && err.contains("no certificate in it"),
        "{err}"
    );

    let mut with_cert = settings(&s.files.ca);
    with_cert.cert = Some(s.files.client.clone());
    let err = error(&with_cert);
    assert!(err.starts_with("--tls-cert needs --tls-key"), "{err}");
    let mut with_key = settings(&s.files.ca);
    with_key.key = Some(s.files.client_key.clone());
    assert!(error(&with_key).starts_with("--tls-key needs --tls-cert"));

    // The key of another certificate.
    let mut mismatch = s.files.client_settings();
    mismatch.key = Some(s.files.server_key.clone());
    let err = TlsClient::new(&mismatch, &TlsNames::FLAGS).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string().starts_with("--tls-key: ")
            && err
                .to_string()
                .contains("server-key.pem is not the private key of the certificate in --tls-cert"),
        "{err}"
    );
    // A certificate where the key should be.
    let mut not_a_key = s.files.client_settings();
    not_a_key.key = Some(s.files.client.clone());
    let err = error(&not_a_key);
    assert!(
        err.starts_with("--tls-key: ") && err.contains("no private key in it"),
        "{err}"
    );
    let mut missing_key = s.files.client_settings();
    missing_key.key = Some(missing.clone());
    assert!(error(&missing_key).starts_with("--tls-key: cannot read "));

    let mut bad_name = settings(&s.files.ca);
    bad_name.server_name = Some("not a name!".into());
    let err = error(&bad_name);
    assert!(
        err.starts_with("--tls-server-name: \"not a name!\""),
        "{err}"
    );

    // Config keys are named as keys.
    let names = TlsNames::config("analyzers.static[0].tls");
    let err = TlsClient::new(&settings(&missing), &names)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("analyzers.static[0].tls.ca: cannot read"),
        "{err}"
    );

    // Good settings, with and without a client certificate.
    client(&s.files.client_settings());
    client(&settings(&s.files.ca));
}

#[tokio::test]
async fn plain_connect_is_plain_tcp() {
    let addr = echo_server().await;
    let mut stream = connect("127.0.0.1", addr.port(), None, TIMEOUT)
        .await
        .unwrap();
    assert!(!stream.is_tls() && matches!(stream, ClientStream::Plain(_)));
    assert!(stream.tcp().nodelay().unwrap());
    roundtrip(&mut stream, b"plain\n").await;
}

#[tokio::test]
async fn tls_connect_verifies_the_server_by_ip_or_name() {
    let s = setup();
    let pki_server = s.files.server_config(false).unwrap();
    let terminator = TlsTerminator::start(pki_server, echo_server().await)
        .await
        .unwrap();
    let port = terminator.addr.port();
    let tls = client(&settings(&s.files.ca));
    // By IP address (an IP SAN) and by name (the default server name is the host).
    for host in ["127.0.0.1", "localhost"] {
        let mut stream = within("connect", connect(host, port, Some(&tls), TIMEOUT))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(stream.is_tls());
        roundtrip(&mut stream, format!("over TLS to {host}\n").as_bytes()).await;
        // The halves work from two tasks.
        let (mut r, mut w) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.map(|_| got)
        });
        w.write_all(b"split halves").await.unwrap();
        w.shutdown().await.unwrap();
        let got = within("the echo", reader).await.unwrap().unwrap();
        assert_eq!(got, b"split halves");
    }
    // An explicit server name the certificate carries, dialling an address.
    let mut named = settings(&s.files.ca);
    named.server_name = Some("logdist.test".into());
    let mut stream = connect("127.0.0.1", port, Some(&client(&named)), TIMEOUT)
        .await
        .unwrap();
    roundtrip(&mut stream, b"named\n").await;
    assert_eq!(terminator.accepted(), 3);
}

#[tokio::test]
async fn a_server_certificate_that_does_not_verify_is_a_clear_error() {
    let s = setup();
    let terminator =
        TlsTerminator::start(s.files.server_config(false).unwrap(), echo_server().await)
            .await
            .unwrap();
    let port = terminator.addr.port();

    // Another CA.
    let err = connect(
        "127.0.0.1",
        port,
        Some(&client(&settings(&s.other.ca))),
        TIMEOUT,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "TLS handshake with 127.0.0.1:{port} (server name 127.0.0.1) failed"
        )) && err.contains("not signed by a CA in --tls-ca")
            && err.contains(&s.other.ca.display().to_string()),
        "{err}"
    );

    // A name the certificate does not carry.
    let mut wrong_name = settings(&s.files.ca);
    wrong_name.server_name = Some("elsewhere.test".into());
    let err = connect("127.0.0.1", port, Some(&client(&wrong_name)), TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not carry the name elsewhere.test") && err.contains("--tls-server-name"),
        "{err}"
    );
    assert_eq!(terminator.accepted(), 0);

    // A server that does not speak TLS answers the ClientHello with a line.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"{\"status\":\"error\",\"reason\":\"bad_frame_length\"}\n")
            .await;
    });
    let err = connect(
        "127.0.0.1",
        plain.port(),
        Some(&client(&settings(&s.files.ca))),
        TIMEOUT,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("did not answer in TLS"), "{err}");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let s = setup();
    let terminator =
        TlsTerminator::start(s.files.server_config(true).unwrap(), echo_server().await)
            .await
            .unwrap();
    let port = terminator.addr.port();

    let with_cert = client(&s.files.client_settings());
    let mut stream = connect("localhost", port, Some(&with_cert), TIMEOUT)
        .await
        .unwrap();
    roundtrip(&mut stream, b"mutual\n").await;
    assert_eq!(terminator.accepted(), 1);

    // Without a certificate (or with one of another CA) the server refuses:
    // with TLS 1.3 the client learns it at its first read.
    let mut foreign = s.other.client_settings();
    foreign.ca = Some(s.files.ca.clone());
    for settings in [settings(&s.files.ca), foreign] {
        let before = terminator.failed();
        let refused = match connect("localhost", port, Some(&client(&settings)), TIMEOUT).await {
            Err(e) => e,
            Ok(mut stream) => {
                let _ = stream.write_all(b"let me in\n").await;
                let _ = stream.flush().await;
                let mut buf = [0u8; 64];
                within("the refusal", stream.read(&mut buf))
                    .await
                    .expect_err("the server must refuse")
            }
        };
        let explained = explain_tls_error(&refused, "--tls-cert").unwrap_or_default();
        assert!(
            refused.to_string().contains("--tls-cert") || explained.contains("--tls-cert"),
            "{refused} / {explained}"
        );
        let failed = within("the server's verdict", async {
            while terminator.failed() == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        failed.await;
    }
    assert_eq!(terminator.accepted(), 1);
}
