//! A throwaway public key infrastructure for tests and load tests (feature
//! `test-pki`): a CA, a server certificate and a client certificate signed by
//! it (rcgen, ECDSA P-256), written with the file names
//! `scripts/gen-certs.sh` uses; TLS server configs; and a TLS terminator that
//! puts a TLS listener in front of a plain one.
//!
//! These certificates are for tests: the keys are made in memory and written
//! unencrypted. Production certificates come from your own CA.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::tls::{TlsClientSettings, crypto_provider};

/// The names every test server certificate carries.
pub const DEFAULT_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A CA and the certificates it signed, all PEM.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca_pem: String,
    pub ca_key_pem: String,
    /// Names: [`DEFAULT_SERVER_NAMES`] and those given to [`TestPki::generate`].
    pub server_pem: String,
    pub server_key_pem: String,
    /// For client authentication (mutual TLS).
    pub client_pem: String,
    pub client_key_pem: String,
}

impl TestPki {
    /// A new CA, a server certificate for `localhost`, `127.0.0.1`, `::1` and
    /// `extra_names` (DNS names or IP addresses), and a client certificate.
    pub fn generate(extra_names: &[&str]) -> TestPki {
        TestPki::try_generate(extra_names).expect("rcgen makes the test certificates")
    }

    fn try_generate(extra_names: &[&str]) -> Result<TestPki, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "logdist test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        let names: Vec<String> = DEFAULT_SERVER_NAMES
            .iter()
            .chain(extra_names)
            .map(|n| n.to_string())
            .collect();
        let (server_pem, server_key_pem) = leaf(
            &ca,
            names,
            "logdist server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_pem, client_key_pem) = leaf(
            &ca,
            Vec::new(),
            "logdist client",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(TestPki {
            ca_pem: ca.pem(),
            ca_key_pem,
            server_pem,
            server_key_pem,
            client_pem,
            client_key_pem,
        })
    }

    /// Writes the six files into `dir` (created if needed), keys readable by
    /// the owner only.
    pub fn write_to(&self, dir: &Path) -> io::Result<PkiFiles> {
        std::fs::create_dir_all(dir)?;
        let files = PkiFiles::in_dir(dir);
        for (path, text, secret) in [
            (&files.ca, &self.ca_pem, false),
            (&files.ca_key, &self.ca_key_pem, true),
            (&files.server, &self.server_pem, false),
            (&files.server_key, &self.server_key_pem, true),
            (&files.client, &self.client_pem, false),
            (&files.client_key, &self.client_key_pem, true),
        ] {
            write_file(path, text.as_bytes(), secret)?;
        }
        Ok(files)
    }

    /// A server config with the server certificate; with `client_auth`,
    /// clients must present a certificate signed by this CA.
    pub fn server_config(&self, client_auth: bool) -> Arc<ServerConfig> {
        let client_ca = client_auth.then_some(self.ca_pem.as_bytes());
        server_config(
            self.server_pem.as_bytes(),
            self.server_key_pem.as_bytes(),
            client_ca,
        )
        .expect("the test certificates make a server config")
    }
}

fn leaf(
    ca: &CertifiedIssuer<'_, KeyPair>,
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// Where the files of a [`TestPki`] are (the names `scripts/gen-certs.sh`
/// writes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiFiles {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server: PathBuf,
    pub server_key: PathBuf,
    pub client: PathBuf,
    pub client_key: PathBuf,
}

impl PkiFiles {
    /// `dir/ca.pem`, `dir/ca-key.pem`, `dir/server.pem`, `dir/server-key.pem`,
    /// `dir/client.pem`, `dir/client-key.pem`.
    pub fn in_dir(dir: &Path) -> PkiFiles {
        PkiFiles {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }

    /// Whether every file is there.
    pub fn exist(&self) -> bool {
        [
            &self.ca,
            &self.ca_key,
            &self.server,
            &self.server_key,
            &self.client,
            &self.client_key,
        ]
        .iter()
        .all(|p| p.is_file())
    }

    /// Client settings that trust this CA and present the client certificate.
    pub fn client_settings(&self) -> TlsClientSettings {
        TlsClientSettings {
            ca: Some(self.ca.clone()),
            server_name: None,
            cert: Some(self.client.clone()),
            key: Some(self.client_key.clone()),
        }
    }

    /// A server config from the server certificate and key; with
    /// `client_auth`, clients must present a certificate signed by the CA.
    pub fn server_config(&self, client_auth: bool) -> Result<Arc<ServerConfig>, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let client_ca = if client_auth {
            Some(read(&self.ca)?)
        } else {
            None
        };
        server_config(
            &read(&self.server)?,
            &read(&self.server_key)?,
            client_ca.as_deref(),
        )
    }
}

/// A TLS server config from PEM: certificate chain, its key, and (for mutual
/// TLS) the CA that client certificates must chain to.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("server key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(cert.map_err(|e| format!("client CA: {e}"))?)
                    .map_err(|e| format!("client CA: {e}"))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                    .build()
                    .map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map(Arc::new)
        .map_err(|e| format!("server certificate and key: {e}"))
}

/// A TLS listener on 127.0.0.1 in front of a plain TCP one: every TLS
/// connection it accepts is relayed, both ways, to a new connection to
/// `upstream`; a close on one side is passed on to the other. Stops (and
/// drops every relayed connection) when dropped.
pub struct TlsTerminator {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl TlsTerminator {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub async fn start(config: Arc<ServerConfig>, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        TlsTerminator::serve(listener, config, upstream)
    }

    pub fn serve(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        upstream: SocketAddr,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let accepted = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(Mutex::new(None));
        let (ok, bad, last) = (accepted.clone(), failed.clone(), last_error.clone());
        let task = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            loop {
                tokio::select! {
                    accept = listener.accept() => {
                        let Ok((tcp, _)) = accept else { return };
                        let (acceptor, ok, bad, last) =
                            (acceptor.clone(), ok.clone(), bad.clone(), last.clone());
                        relays.spawn(async move {
                            let mut tls = match acceptor.accept(tcp).await {
                                Ok(tls) => tls,
                                Err(e) => {
                                    bad.fetch_add(1, Ordering::SeqCst);
                                    *last.lock().unwrap() = Some(e.to_string());
                                    return;
                                }
                            };
                            ok.fetch_add(1, Ordering::SeqCst);
                            let Ok(mut plain) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            let _ = plain.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        });
                    }
                    Some(_) = relays.join_next(), if !relays.is_empty() => {}
                }
            }
        });
        Ok(TlsTerminator {
            addr,
            accepted,
            failed,
            last_error,
            task,
        })
    }

    /// TLS handshakes that succeeded (the client's certificate verified,
    /// when one is required).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// The error of the last failed handshake.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().clone()
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
