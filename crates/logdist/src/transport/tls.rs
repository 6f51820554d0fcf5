//! rustls configurations built from the config's `tls` tables, with every
//! file read and checked here: a missing or unreadable file, a file without
//! the PEM item it should hold, or a key that is not its certificate's is an
//! error naming the key (`listeners[2].tls.key: ...`).
//!
//! The crypto provider is *ring*, chosen explicitly (never the process
//! default), so another crate enabling another provider changes nothing.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{ClientTlsConfig, ConfigError, ServerTlsConfig};

/// The ALPN protocols the admin API offers over TLS: HTTP/1.1 only, the one
/// its server speaks (so a client never picks an HTTP/2 it would not get).
pub const HTTP_ALPN: &[&[u8]] = &[b"http/1.1"];

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// A TLS server for the listener whose `tls` table is at `at`
/// (`listeners[0].tls`, `analyzers.tls`, `admin.tls`).
pub fn acceptor(
    at: &str,
    tls: &ServerTlsConfig,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, ConfigError> {
    let certs = certificates(&format!("{at}.cert"), &tls.cert)?;
    let key = private_key(&format!("{at}.key"), &tls.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| ConfigError::invalid(at, err.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let key = format!("{at}.client_ca");
            let roots = roots(&key, ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|err| ConfigError::invalid(key, err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|err| key_error(at, &tls.cert, err))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What dialing a TLS server needs: a client config and the name the
/// server's certificate must carry.
#[derive(Clone)]
pub struct ClientTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// The client side for `address` (host:port) from the `tls` table at `at`
    /// (`analyzers.static[0].tls`).
    pub fn load(at: &str, address: &str, tls: &ClientTlsConfig) -> Result<ClientTls, ConfigError> {
        let roots = roots(&format!("{at}.ca"), &tls.ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| ConfigError::invalid(at, err.to_string()))?
            .with_root_certificates(roots);
        let config = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let certs = certificates(&format!("{at}.cert"), cert)?;
                let key = private_key(&format!("{at}.key"), key)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|err| key_error(at, cert, err))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ConfigError::invalid(
                    format!("{at}.cert"),
                    "and key must be set together",
                ));
            }
        };
        let (name, key) = match &tls.server_name {
            Some(name) => (name.clone(), format!("{at}.server_name")),
            None => (host_of(address).to_string(), format!("{at}.server_name")),
        };
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            ConfigError::invalid(
                key,
                format!("{name:?} is not a DNS name or IP address (set it to the name in the analyzer's certificate)"),
            )
        })?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// The host part of `host:port` (`[v6]:port` too).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn key_error(at: &str, cert: &Path, err: rustls::Error) -> ConfigError {
    match err {
        rustls::Error::InconsistentKeys(_) => ConfigError::invalid(
            format!("{at}.key"),
            format!("does not match the certificate in {}", cert.display()),
        ),
        err => ConfigError::invalid(format!("{at}.key"), format!("unusable: {err}")),
    }
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            ConfigError::invalid(key, format!("cannot read {}: {err}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| {
        ConfigError::invalid(
            key,
            format!("cannot read a private key from {}: {err}", path.display()),
        )
    })
}

fn roots(key: &str, path: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(key, path)? {
        roots.add(cert).map_err(|err| {
            ConfigError::invalid(
                key,
                format!("{}: not a usable CA certificate: {err}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("analyzer-1:9501"), "analyzer-1");
        assert_eq!(host_of("10.0.0.1:9501"), "10.0.0.1");
        assert_eq!(host_of("[::1]:9501"), "::1");
        assert_eq!(host_of("bare"), "bare");
    }

    #[test]
    fn missing_files_name_the_key() {
        let tls = ServerTlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        };
        let err = acceptor("listeners[2].tls", &tls, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("listeners[2].tls.cert"), "{err}");
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
