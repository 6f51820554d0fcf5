//! `logdist-net`: what every logdist program that dials a peer shares: the
//! reconnect delay, [`Backoff`] (the distributor dials its static analyzers
//! with it and `logdist-ship` dials the distributor with it), and TLS on the
//! client side, [`tls`]: settings, their validation, the connector, and
//! [`connect`], which gives a plain or TLS [`ClientStream`].
//!
//! With the feature `test-pki`, [`test_pki`] makes throwaway certificates and
//! TLS test servers.

mod backoff;
pub mod tls;

#[cfg(feature = "test-pki")]
pub mod test_pki;

pub use backoff::Backoff;
pub use tls::{
    ClientReadHalf, ClientStream, ClientWriteHalf, TlsClient, TlsClientSettings, TlsError,
    TlsNames, connect,
};
