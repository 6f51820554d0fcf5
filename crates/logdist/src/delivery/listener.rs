//! The analyzer listener: every connection is an analyzer that introduces
//! itself with a handshake, up to `analyzers.max_connections` at once.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::attach::serve_dial_in;
use super::context::DeliveryContext;
use crate::accept::accept;
use crate::transport::Gate;

/// Accepts analyzers until shutdown stops accepting; their sessions run on
/// `tasks`, each holding one of `max_connections` permits while it lives
/// (TLS and analyzer handshakes included). `gate` decides who gets in.
pub async fn accept_analyzers(
    listener: TcpListener,
    gate: Arc<Gate>,
    max_connections: usize,
    ctx: Arc<DeliveryContext>,
    tasks: TaskTracker,
) {
    let address = listener.local_addr().ok();
    let tls = gate.is_tls();
    tracing::info!(?address, tls, "listening for analyzers");
    let permits = Arc::new(Semaphore::new(max_connections));
    let stop = ctx.shutdown.stop_accepting.clone();
    while let Some((stream, peer)) = accept(&listener, &stop).await {
        let Some((admission, permit)) =
            gate.admit_within(peer, &permits, "analyzers.max_connections")
        else {
            continue;
        };
        tracing::debug!(%peer, "analyzer connection");
        let _ = stream.set_nodelay(true);
        crate::transport::socket::analyzer(&stream, ctx.settings.user_timeout);
        let (ctx, stop) = (ctx.clone(), stop.clone());
        tasks.spawn(async move {
            if let Some(stream) = admission.establish(stream, &stop).await {
                serve_dial_in(stream, peer, ctx).await;
            }
            drop(permit);
        });
    }
}
