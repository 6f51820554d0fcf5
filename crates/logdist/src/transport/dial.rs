//! Dialing out (static analyzers): TCP, then TLS when configured, verifying
//! the server's certificate against the configured CA and name.
//!
//! The TLS client sits behind an [`ArcSwapOption`]: a reload that re-read
//! the certificate files replaces it for the next connection attempt, and a
//! live session keeps the one it was made with.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::net::TcpStream;

use super::stream::Stream;
use super::tls::ClientTls;
use crate::config::{ConfigError, StaticAnalyzerConfig};

/// How one static analyzer is dialed.
pub struct Dialer {
    tls: ArcSwapOption<ClientTls>,
}

impl Dialer {
    /// Plain TCP (`None`) or TLS.
    pub fn new(tls: Option<ClientTls>) -> Arc<Dialer> {
        Arc::new(Dialer {
            tls: ArcSwapOption::from(tls.map(Arc::new)),
        })
    }

    /// Reads the TLS settings of the static analyzer at `analyzers.static[index]`.
    pub fn load_tls(
        index: usize,
        analyzer: &StaticAnalyzerConfig,
    ) -> Result<Option<ClientTls>, ConfigError> {
        analyzer
            .tls
            .as_ref()
            .map(|tls| {
                ClientTls::load(
                    &format!("analyzers.static[{index}].tls"),
                    &analyzer.address,
                    tls,
                )
            })
            .transpose()
    }

    /// Uses `tls` for the connections that come next.
    pub fn replace(&self, tls: Option<ClientTls>) {
        self.tls.store(tls.map(Arc::new));
    }

    /// Connects to `address`, with `TCP_NODELAY`, keepalive and
    /// `TCP_USER_TIMEOUT` (`user_timeout`, zero: the kernel's), and completes
    /// the TLS handshake if TLS is on. A failed handshake (wrong name,
    /// unknown CA, refused client certificate) is an error like a refused
    /// connection.
    pub async fn connect(&self, address: &str, user_timeout: Duration) -> io::Result<Stream> {
        let tcp = TcpStream::connect(address).await?;
        let _ = tcp.set_nodelay(true);
        super::socket::analyzer(&tcp, user_timeout);
        let Some(tls) = self.tls.load_full() else {
            return Ok(Stream::Plain(tcp));
        };
        let session = tls
            .connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|err| io::Error::new(err.kind(), format!("TLS handshake failed: {err}")))?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(
            session,
        ))))
    }
}
