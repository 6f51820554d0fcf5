//! Socket options that let a silent network failure surface: a peer that
//! vanished without FIN or RST (power loss, a cut link, a firewall dropping
//! the flow) otherwise leaves a connection that looks open for as long as the
//! distributor has nothing to send on it, and for up to about 15 minutes of
//! kernel retransmissions when it has.
//!
//! - Every connection (emitters, analyzers, admin) gets TCP keepalive:
//!   probes after [`KEEPALIVE_IDLE`] of silence, every
//!   [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] unanswered ones end it
//!   (about a minute in all).
//! - Analyzer connections (dial-in and static) also get `TCP_USER_TIMEOUT`
//!   (`analyzers.user_timeout`): data written and not acknowledged by the
//!   peer's kernel for that long ends the connection, so what the analyzer
//!   held is rerouted within that time. It also bounds keepalive there.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Silence before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes that end the connection.
pub const KEEPALIVE_PROBES: u32 = 3;

/// Turns TCP keepalive on (see the module docs). Failing to is logged, never fatal.
pub fn keepalive(tcp: &TcpStream) {
    let params = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(err) = SockRef::from(tcp).set_tcp_keepalive(&params) {
        tracing::debug!(%err, "cannot turn TCP keepalive on");
    }
}

/// Keepalive and `TCP_USER_TIMEOUT` for an analyzer connection; a zero
/// `user_timeout` leaves the kernel's default (retransmissions for many minutes).
pub fn analyzer(tcp: &TcpStream, user_timeout: Duration) {
    keepalive(tcp);
    if user_timeout.is_zero() {
        return;
    }
    if let Err(err) = SockRef::from(tcp).set_tcp_user_timeout(Some(user_timeout)) {
        tracing::debug!(%err, "cannot set TCP_USER_TIMEOUT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_are_set() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        analyzer(&tcp, Duration::from_millis(2500));
        let socket = SockRef::from(&tcp);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(2500))
        );
        let (accepted, _) = listener.accept().await.unwrap();
        analyzer(&accepted, Duration::ZERO);
        assert_eq!(SockRef::from(&accepted).tcp_user_timeout().unwrap(), None);
    }
}
