//! TLS for every program that dials a peer (`logdist-ship`, `logdist
//! dead-letter replay`, the load tester, the distributor's static analyzers):
//! the settings ([`TlsClientSettings`]), their validation with errors that name
//! the flag or config key at fault ([`TlsNames`], [`TlsError`]), the connector
//! they make ([`TlsClient`]), and [`connect`], which returns a [`ClientStream`]
//! that is plain TCP or TLS behind one `AsyncRead + AsyncWrite` type.
//!
//! rustls with the `ring` provider; TLS 1.2 and 1.3. The server's certificate
//! must chain to a CA of the settings' `ca` file (no system trust store) and
//! carry the server name: the explicit one, else the host part of the address
//! dialled (a DNS name, or an IP address, which must then be an IP SAN).
//!
//! The plaintext path stays what it was: [`ClientStream::Plain`] is the
//! `TcpStream`, and [`ClientStream::into_split`] splits it into tokio's owned
//! halves (no lock); only TLS streams share a lock between their halves.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The crypto provider of every TLS config in logdist (`ring`), set
/// explicitly so nothing depends on a process-wide default.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client TLS settings as a command line or a config table gives them. As a
/// config table: `tls = { ca = "...", server_name = "...", cert = "...", key = "..." }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientSettings {
    /// PEM file of the CA certificate(s) the server's certificate must chain
    /// to. Required.
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry (a DNS name or an IP
    /// address). Default: the host part of the address dialled.
    pub server_name: Option<String>,
    /// PEM file of the client certificate (and any intermediates), for
    /// servers that require one (mutual TLS). Needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM file of the private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl TlsClientSettings {
    /// No setting is given.
    pub fn is_empty(&self) -> bool {
        self == &TlsClientSettings::default()
    }
}

/// How a program names each TLS setting, for error messages: flags
/// (`--tls-ca`), flags and environment variables (`--tls-ca/TLS_CA`), or
/// config keys (`analyzers.static[0].tls.ca`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsNames {
    /// What turns TLS on (`--tls`, or the config table itself).
    pub enable: Cow<'static, str>,
    pub ca: Cow<'static, str>,
    pub server_name: Cow<'static, str>,
    pub cert: Cow<'static, str>,
    pub key: Cow<'static, str>,
}

impl TlsNames {
    /// The flags every client program uses.
    pub const FLAGS: TlsNames = TlsNames {
        enable: Cow::Borrowed("--tls"),
        ca: Cow::Borrowed("--tls-ca"),
        server_name: Cow::Borrowed("--tls-server-name"),
        cert: Cow::Borrowed("--tls-cert"),
        key: Cow::Borrowed("--tls-key"),
    };

    /// The keys of a config table, e.g. `config("analyzers.static[0].tls")`
    /// names the CA `analyzers.static[0].tls.ca`.
    pub fn config(table: &str) -> TlsNames {
        TlsNames {
            enable: Cow::Owned(table.to_string()),
            ca: Cow::Owned(format!("{table}.ca")),
            server_name: Cow::Owned(format!("{table}.server_name")),
            cert: Cow::Owned(format!("{table}.cert")),
            key: Cow::Owned(format!("{table}.key")),
        }
    }
}

/// A TLS setting that cannot be used; the message names the setting.
#[derive(Debug)]
pub enum TlsError {
    /// A TLS setting is given but TLS is off.
    NotEnabled { setting: String, enable: String },
    /// TLS is on but no CA file is given.
    NoCa { setting: String, enable: String },
    /// A client certificate without its key, or a key without a certificate.
    Unpaired { given: String, missing: String },
    /// A file that cannot be read.
    Read {
        setting: String,
        path: PathBuf,
        source: io::Error,
    },
    /// A file that does not hold what the setting needs.
    Content {
        setting: String,
        path: PathBuf,
        detail: String,
    },
    /// The private key is not the key of the certificate.
    KeyMismatch {
        cert_setting: String,
        cert: PathBuf,
        key_setting: String,
        key: PathBuf,
    },
    /// The explicit server name is neither a DNS name nor an IP address.
    BadServerName { setting: String, name: String },
    /// No server name is given and the host dialled is not usable as one.
    BadHost { setting: String, host: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NotEnabled { setting, enable } => write!(
                f,
                "{setting} is set but TLS is off: add {enable} to connect over TLS, or drop {setting}"
            ),
            TlsError::NoCa { setting, enable } => write!(
                f,
                "{enable} needs {setting}: the PEM file of the CA certificate(s) that signed \
                 the server's certificate"
            ),
            TlsError::Unpaired { given, missing } => write!(
                f,
                "{given} needs {missing}: a client certificate and its private key go together"
            ),
            TlsError::Read {
                setting,
                path,
                source,
            } => write!(f, "{setting}: cannot read {}: {source}", path.display()),
            TlsError::Content {
                setting,
                path,
                detail,
            } => write!(f, "{setting}: {}: {detail}", path.display()),
            TlsError::KeyMismatch {
                cert_setting,
                cert,
                key_setting,
                key,
            } => write!(
                f,
                "{key_setting}: {} is not the private key of the certificate in {cert_setting} ({})",
                key.display(),
                cert.display()
            ),
            TlsError::BadServerName { setting, name } => write!(
                f,
                "{setting}: {name:?} is neither a DNS name nor an IP address"
            ),
            TlsError::BadHost { setting, host } => write!(
                f,
                "TLS needs a server name, and the host {host:?} is neither a DNS name nor an \
                 IP address: set {setting}"
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A validated TLS client: the connector, the server name (if explicit) and
/// what to name in connection errors. Cheap to clone (the config is shared).
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// `--tls-ca (ca.pem)`, for handshake errors.
    ca_hint: String,
    server_name_setting: String,
    cert_setting: String,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("ca", &self.ca_hint)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// `None` when `enabled` is false (then no setting may be given: it would
    /// be ignored, and the connection would not be what was asked for), else
    /// the client the settings make.
    pub fn from_flags(
        enabled: bool,
        settings: &TlsClientSettings,
        names: &TlsNames,
    ) -> Result<Option<TlsClient>, TlsError> {
        if enabled {
            return TlsClient::new(settings, names).map(Some);
        }
        let given = [
            (settings.ca.is_some(), &names.ca),
            (settings.server_name.is_some(), &names.server_name),
            (settings.cert.is_some(), &names.cert),
            (settings.key.is_some(), &names.key),
        ];
        match given.iter().find(|(set, _)| *set) {
            Some((_, setting)) => Err(TlsError::NotEnabled {
                setting: setting.to_string(),
                enable: names.enable.to_string(),
            }),
            None => Ok(None),
        }
    }

    /// Reads and checks every file of `settings` and builds the client.
    pub fn new(settings: &TlsClientSettings, names: &TlsNames) -> Result<TlsClient, TlsError> {
        let ca = settings.ca.as_deref().ok_or_else(|| TlsError::NoCa {
            setting: names.ca.to_string(),
            enable: names.enable.to_string(),
        })?;
        let roots = load_roots(ca, &names.ca)?;
        let server_name =
            match &settings.server_name {
                Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                    TlsError::BadServerName {
                        setting: names.server_name.to_string(),
                        name: name.clone(),
                    }
                })?),
                None => None,
            };
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots);
        let config = match (&settings.cert, &settings.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(TlsError::Unpaired {
                    given: names.cert.to_string(),
                    missing: names.key.to_string(),
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::Unpaired {
                    given: names.key.to_string(),
                    missing: names.cert.to_string(),
                });
            }
            (Some(cert), Some(key)) => {
                let (chain, key_der) = load_cert_and_key(cert, &names.cert, key, &names.key)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                            cert_setting: names.cert.to_string(),
                            cert: cert.clone(),
                            key_setting: names.key.to_string(),
                            key: key.clone(),
                        },
                        other => TlsError::Content {
                            setting: names.key.to_string(),
                            path: key.clone(),
                            detail: format!("unusable private key: {other}"),
                        },
                    })?
            }
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            ca_hint: format!("{} ({})", names.ca, ca.display()),
            server_name_setting: names.server_name.to_string(),
            cert_setting: names.cert.to_string(),
        })
    }

    /// The connector, for callers that do their own handshakes.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// The name the server's certificate must carry when `host` is dialled:
    /// the explicit one, else `host` itself (brackets of an IPv6 literal
    /// removed).
    pub fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadHost {
            setting: self.server_name_setting.clone(),
            host: host.to_string(),
        })
    }

    /// The TLS handshake over `tcp`, dialled as `host` (for the server name)
    /// at `peer` (for messages). A certificate that does not verify, or a
    /// peer that does not speak TLS, is an error that says so.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        peer: &str,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self
            .server_name_for(host)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|err| {
                let hint = self.hint(&err, &name).unwrap_or_default();
                io::Error::new(
                    err.kind(),
                    format!(
                        "TLS handshake with {peer} (server name {}) failed: {err}{hint}",
                        name.to_str()
                    ),
                )
            })
    }

    /// What a TLS error most likely means, given these settings.
    fn hint(&self, err: &io::Error, name: &ServerName<'_>) -> Option<String> {
        use rustls::CertificateError as C;
        let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(match tls {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
                "; the server's certificate is not signed by a CA in {}",
                self.ca_hint
            ),
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => {
                format!(
                    "; the server's certificate does not carry the name {}: connect by a name \
                     it carries, or set {}",
                    name.to_str(),
                    self.server_name_setting
                )
            }
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => "; the server's certificate is expired or not valid yet (or the clock is wrong)"
                .to_string(),
            rustls::Error::InvalidMessage(_) => {
                "; the server did not answer in TLS: is its listener set up with `tls`?".to_string()
            }
            rustls::Error::AlertReceived(_) => alert_hint(&self.cert_setting),
            _ => return None,
        })
    }
}

fn alert_hint(cert_setting: &str) -> String {
    format!(
        "; the server refused the connection: if it requires client certificates \
         (mutual TLS), set {cert_setting} to one signed by its client CA"
    )
}

/// A hint for an error read from a TLS stream after the handshake: with TLS
/// 1.3 a server that refuses the client's certificate says so only then.
/// `None` for errors that are not TLS errors.
pub fn explain_tls_error(err: &io::Error, cert_setting: &str) -> Option<String> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(format!(
            "TLS alert from the server: {alert:?}{}",
            alert_hint(cert_setting)
        )),
        other => Some(format!("TLS error: {other}")),
    }
}

fn read_file(path: &Path, setting: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting: setting.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(setting: &str, path: &Path, err: pem::Error) -> TlsError {
    TlsError::Content {
        setting: setting.to_string(),
        path: path.to_path_buf(),
        detail: format!("unreadable PEM: {err}"),
    }
}

/// Every certificate of a PEM file; at least one.
fn load_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path, setting)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(setting, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Content {
            setting: setting.to_string(),
            path: path.to_path_buf(),
            detail: "no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\")".into(),
        });
    }
    Ok(certs)
}

fn load_roots(path: &Path, setting: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, setting)? {
        roots.add(cert).map_err(|e| TlsError::Content {
            setting: setting.to_string(),
            path: path.to_path_buf(),
            detail: format!("not usable as a CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// A certificate chain and its private key.
pub fn load_cert_and_key(
    cert: &Path,
    cert_setting: &str,
    key: &Path,
    key_setting: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = load_certs(cert, cert_setting)?;
    let bytes = read_file(key, key_setting)?;
    let key_der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Content {
            setting: key_setting.to_string(),
            path: key.to_path_buf(),
            detail: "no private key in it (expected PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" \
                     or \"EC PRIVATE KEY\")"
                .into(),
        },
        other => pem_error(key_setting, key, other),
    })?;
    Ok((chain, key_der))
}

/// `host:port` (`[v6]:port` too) split in two; the host keeps no brackets.
pub fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None => host,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Opens a TCP connection to `host:port` (every resolved address in turn)
/// with `TCP_NODELAY`, then, with `tls`, the TLS handshake; all of it within
/// `timeout`. TLS errors say what went wrong (see [`TlsClient::handshake`]).
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<&TlsClient>,
    timeout: Duration,
) -> io::Result<ClientStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = tokio::time::timeout_at(deadline, TcpStream::connect((host, port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(ClientStream::Plain(tcp));
    };
    let peer = match tcp.peer_addr() {
        Ok(addr) => addr.to_string(),
        Err(_) => format!("{host}:{port}"),
    };
    let stream = tokio::time::timeout_at(deadline, tls.handshake(tcp, host, &peer))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake with {peer} timed out"),
            )
        })??;
    Ok(ClientStream::Tls(Box::new(stream)))
}

/// A connection to a peer, plain TCP or TLS.
#[derive(Debug)]
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The TCP socket underneath (for socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => s.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// A read half and a write half that can be used from different tasks.
    /// Plain TCP splits without a lock (tokio's owned halves).
    pub fn into_split(self) -> (ClientReadHalf, ClientWriteHalf) {
        match self {
            ClientStream::Plain(s) => {
                let (r, w) = s.into_split();
                (ClientReadHalf::Plain(r), ClientWriteHalf::Plain(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ClientReadHalf::Tls(r), ClientWriteHalf::Tls(w))
            }
        }
    }
}

/// The read half of a [`ClientStream`].
#[derive(Debug)]
pub enum ClientReadHalf {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of a [`ClientStream`]. Shutting it down sends TLS's
/// close_notify (with TLS) and closes the sending side.
#[derive(Debug)]
pub enum ClientWriteHalf {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncRead for ClientReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientReadHalf::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientReadHalf::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// `AsyncWrite` by delegation to each variant's stream.
macro_rules! delegate_write {
    ($ty:ident, $plain:ident => $p:expr, $tls:ident => $t:expr) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain($plain) => Pin::new($p).poll_write(cx, data),
                    $ty::Tls($tls) => Pin::new($t).poll_write(cx, data),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain($plain) => Pin::new($p).poll_write_vectored(cx, bufs),
                    $ty::Tls($tls) => Pin::new($t).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $ty::Plain($plain) => $plain.is_write_vectored(),
                    $ty::Tls($tls) => $tls.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain($plain) => Pin::new($p).poll_flush(cx),
                    $ty::Tls($tls) => Pin::new($t).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain($plain) => Pin::new($p).poll_shutdown(cx),
                    $ty::Tls($tls) => Pin::new($t).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_write!(ClientStream, s => s, s => s.as_mut());
delegate_write!(ClientWriteHalf, s => s, s => s);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(split_host_port("logs:9000"), Some(("logs", 9000)));
        assert_eq!(split_host_port("127.0.0.1:1"), Some(("127.0.0.1", 1)));
        assert_eq!(split_host_port("[::1]:8080"), Some(("::1", 8080)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:port"), None);
        assert_eq!(split_host_port("[::1:80"), None);
    }

    #[test]
    fn config_names_name_the_keys() {
        let n = TlsNames::config("analyzers.static[0].tls");
        assert_eq!(n.ca, "analyzers.static[0].tls.ca");
        assert_eq!(n.server_name, "analyzers.static[0].tls.server_name");
        assert_eq!(n.enable, "analyzers.static[0].tls");
    }

    #[test]
    fn settings_parse_from_a_config_table() {
        let s: TlsClientSettings =
            toml::from_str("ca = \"certs/ca.pem\"\nserver_name = \"analyzer-1\"\n").unwrap();
        assert_eq!(s.ca.as_deref(), Some(Path::new("certs/ca.pem")));
        assert_eq!(s.server_name.as_deref(), Some("analyzer-1"));
        assert!(s.cert.is_none() && s.key.is_none() && !s.is_empty());
        assert!(toml::from_str::<TlsClientSettings>("cafile = \"x\"").is_err());
        assert!(TlsClientSettings::default().is_empty());
    }
}
