//! A listener for `axum::serve` that hands over connections past their
//! [`Gate`]: the allow list checked at accept, the TLS handshake done in a
//! task of its own, so a slow client holds up no one. Plain HTTP goes the
//! same way without the handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::gate::Gate;
use super::stream::Stream;

/// Connections that finished their handshake and wait for the server.
const READY: usize = 64;

pub struct GatedListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(Stream, SocketAddr)>,
    acceptor: JoinHandle<()>,
    /// Cancelled when this listener is dropped: pending handshakes give up.
    dropped: CancellationToken,
}

impl GatedListener {
    pub fn new(listener: TcpListener, gate: Arc<Gate>) -> io::Result<GatedListener> {
        let local = listener.local_addr()?;
        let (send, ready) = mpsc::channel(READY);
        let dropped = CancellationToken::new();
        let acceptor = tokio::spawn(accept(listener, gate, send, dropped.clone()));
        Ok(GatedListener {
            local,
            ready,
            acceptor,
            dropped,
        })
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
    ready: mpsc::Sender<(Stream, SocketAddr)>,
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
        let Some(admission) = gate.admit(peer) else {
            continue;
        };
        let (ready, dropped) = (ready.clone(), dropped.clone());
        tokio::spawn(async move {
            if let Some(stream) = admission.establish(tcp, &dropped).await {
                let _ = ready.send((stream, peer)).await;
            }
        });
    }
}

impl axum::serve::Listener for GatedListener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor only stops once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
