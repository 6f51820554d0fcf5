//! The analyzer listener: every connection is an analyzer that introduces
//! itself with a handshake.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::attach::serve_dial_in;
use super::context::DeliveryContext;
use crate::accept::accept;

/// Accepts analyzers until shutdown stops accepting; their sessions run on `tasks`.
pub async fn accept_analyzers(
    listener: TcpListener,
    ctx: Arc<DeliveryContext>,
    tasks: TaskTracker,
) {
    let address = listener.local_addr().ok();
    tracing::info!(?address, "listening for analyzers");
    let stop = ctx.shutdown.stop_accepting.clone();
    while let Some((stream, peer)) = accept(&listener, &stop).await {
        tracing::debug!(%peer, "analyzer connection");
        tasks.spawn(serve_dial_in(stream, ctx.clone()));
    }
}
