//! The accept loop every listener shares: it ends when shutdown stops
//! accepting, and an accept error never ends it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The next connection, or `None` once `stop_accepting` is cancelled. Accept
/// errors (out of file descriptors, mostly) pass: log, pause, go on.
pub async fn accept(
    listener: &TcpListener,
    stop_accepting: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(err) => {
                    tracing::error!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop_accepting.cancelled() => return None,
        }
    }
}
