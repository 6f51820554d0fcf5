//! What a listener checks before a stage sees a connection: the source
//! network at accept (cheap, nothing read), then the TLS handshake in the
//! connection's own task (so a slow or silent client never holds up
//! accepting), bounded by [`HANDSHAKE_TIMEOUT`].
//!
//! The policy (allow list, TLS acceptor) sits behind an [`ArcSwap`]: a
//! reload replaces it for the connections that come next, and established
//! connections keep the TLS session they have.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::allow::AllowList;
use super::stream::Stream;
use super::tls;
use crate::config::{ConfigError, ServerTlsConfig};
use crate::refusal::{Listener, RefusalReason};
use crate::stats::Stats;

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may connect to a listener, and how.
pub struct Policy {
    pub allow: AllowList,
    /// `None`: plain TCP.
    pub tls: Option<TlsAcceptor>,
    /// Clients must present a certificate (`tls.client_ca`).
    pub mutual: bool,
}

impl Policy {
    /// Plain TCP from anywhere.
    pub fn open() -> Self {
        Policy {
            allow: AllowList::any(),
            tls: None,
            mutual: false,
        }
    }

    /// Reads the `allow` and `tls` of the listener at `at` (`listeners[0]`,
    /// `analyzers`, `admin`), certificate files included.
    pub fn load(
        at: &str,
        allow: Option<&[String]>,
        tls: Option<&ServerTlsConfig>,
        alpn: &[&[u8]],
    ) -> Result<Policy, ConfigError> {
        let allow = AllowList::from_config(&format!("{at}.allow"), allow)?;
        let acceptor = match tls {
            Some(tls) => Some(tls::acceptor(&format!("{at}.tls"), tls, alpn)?),
            None => None,
        };
        Ok(Policy {
            allow,
            tls: acceptor,
            mutual: tls.is_some_and(|t| t.client_ca.is_some()),
        })
    }
}

/// One listener's checks, shared by its accept loop, its connections and
/// the reloader.
pub struct Gate {
    listener: Listener,
    /// Where the listener's settings are in the config (`listeners[0]`).
    at: String,
    /// The configured address it was bound with, as written in the config.
    address: String,
    policy: ArcSwap<Policy>,
    stats: Arc<Stats>,
}

impl Gate {
    pub fn new(
        listener: Listener,
        at: impl Into<String>,
        address: impl Into<String>,
        policy: Policy,
        stats: Arc<Stats>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            listener,
            at: at.into(),
            address: address.into(),
            policy: ArcSwap::from_pointee(policy),
            stats,
        })
    }

    pub fn listener(&self) -> Listener {
        self.listener
    }

    pub fn at(&self) -> &str {
        &self.at
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts `policy` in force for the connections that come next.
    pub fn replace(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Whether the listener serves TLS.
    pub fn is_tls(&self) -> bool {
        self.policy.load().tls.is_some()
    }

    /// The first check of a new connection from `peer`: its source network.
    /// `None` means refused (counted and logged): close it without reading.
    pub fn admit(&self, peer: SocketAddr) -> Option<Admission> {
        let policy = self.policy.load_full();
        if !policy.allow.allows(peer.ip()) {
            self.refuse(
                peer,
                RefusalReason::NotAllowed,
                &format_args!("source address not in {}.allow", self.at),
            );
            return None;
        }
        Some(Admission {
            policy,
            listener: self.listener,
            peer,
            stats: self.stats.clone(),
        })
    }

    /// Counts and logs (rate-limited) a connection refused on this listener.
    /// [`Gate::admit`], then one of `permits` for the connection's lifetime;
    /// with none free the connection is refused (counted, `limit_key` named
    /// in the log) and closed unread.
    pub fn admit_within(
        &self,
        peer: SocketAddr,
        permits: &Arc<Semaphore>,
        limit_key: &str,
    ) -> Option<(Admission, OwnedSemaphorePermit)> {
        let admission = self.admit(peer)?;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            self.refuse(
                peer,
                RefusalReason::MaxConnections,
                &format_args!("{limit_key} reached"),
            );
            return None;
        };
        Some((admission, permit))
    }

    pub fn refuse(&self, peer: SocketAddr, reason: RefusalReason, detail: &dyn std::fmt::Display) {
        self.stats.refuse(self.listener, reason, &peer, detail);
    }
}

/// A connection past the allow list, with the policy it was admitted under.
pub struct Admission {
    policy: Arc<Policy>,
    listener: Listener,
    peer: SocketAddr,
    stats: Arc<Stats>,
}

impl Admission {
    /// The connection as its stage will use it: a TLS session once the
    /// handshake succeeded (within [`HANDSHAKE_TIMEOUT`], or before `stop`
    /// is cancelled), else the plain stream. `None`: refused (counted and
    /// logged) and closed.
    pub async fn establish(self, tcp: TcpStream, stop: &CancellationToken) -> Option<Stream> {
        let Some(acceptor) = &self.policy.tls else {
            return Some(Stream::Plain(tcp));
        };
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
        let failure = tokio::select! {
            done = handshake => match done {
                Ok(Ok(tls)) => return Some(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)))),
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
            },
            _ = stop.cancelled() => return None,
        };
        self.stats.refuse(
            self.listener,
            RefusalReason::TlsHandshake,
            &self.peer,
            &format_args!("TLS handshake failed: {failure}"),
        );
        None
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}
