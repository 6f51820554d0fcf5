//! The admin API's listener: hands over connections past their [`Gate`]
//! (the allow list checked at accept, the TLS handshake done in a task of
//! its own, so a slow client holds up no one; plain HTTP goes the same way
//! without the handshake), at most `max_connections` at once: each comes
//! with a permit the server holds until the connection closes, and one
//! beyond the limit is refused (counted as `max_connections`) and closed
//! unread. Every connection gets TCP keepalive.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::gate::Gate;
use super::stream::Stream;

/// Connections that finished their handshake and wait for the server.
const READY: usize = 64;

/// A connection ready to be served, and its place under the limit.
pub type Accepted = (Stream, SocketAddr, OwnedSemaphorePermit);

pub struct GatedListener {
    local: SocketAddr,
    ready: mpsc::Receiver<Accepted>,
    acceptor: JoinHandle<()>,
    /// Cancelled when this listener is dropped: pending handshakes give up.
    dropped: CancellationToken,
}

impl GatedListener {
    /// Accepts on `listener`, at most `max_connections` open at once (the
    /// limit's key is `limit_key`, for the refusal's log line).
    pub fn new(
        listener: TcpListener,
        gate: Arc<Gate>,
        max_connections: usize,
        limit_key: &'static str,
    ) -> io::Result<GatedListener> {
        let local = listener.local_addr()?;
        let (send, ready) = mpsc::channel(READY);
        let dropped = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(max_connections));
        let acceptor = tokio::spawn(accept(
            listener,
            gate,
            permits,
            limit_key,
            send,
            dropped.clone(),
        ));
        Ok(GatedListener {
            local,
            ready,
            acceptor,
            dropped,
        })
    }

    /// The next connection ready to be served, with its permit.
    pub async fn accept(&mut self) -> Accepted {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor only stops once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for GatedListener {
    fn drop(&mut self) {
        self.dropped.cancel();
        self.acceptor.abort();
    }
}

async fn accept(
    listener: TcpListener,
    gate: Arc<Gate>,
    permits: Arc<Semaphore>,
    limit_key: &'static str,
    ready: mpsc::Sender<Accepted>,
    dropped: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::error!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = dropped.cancelled() => return,
        };
        let Some((admission, permit)) = gate.admit_within(peer, &permits, limit_key) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        super::socket::keepalive(&tcp);
        let (ready, dropped) = (ready.clone(), dropped.clone());
        tokio::spawn(async move {
            if let Some(stream) = admission.establish(tcp, &dropped).await {
                let _ = ready.send((stream, peer, permit)).await;
            }
        });
    }
}
