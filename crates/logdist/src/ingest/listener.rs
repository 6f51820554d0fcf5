//! An emitter listener: every connection is an emitter, up to
//! `limits.max_connections` across all emitter listeners.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::connection::EmitterConnection;
use super::context::IngestContext;
use crate::accept::accept;
use crate::config::AckMode;

/// Accepts emitters until shutdown stops accepting; their connections run
/// on `tasks`, each holding one of `permits` while it lives.
pub async fn accept_emitters(
    listener: TcpListener,
    ack: AckMode,
    ctx: Arc<IngestContext>,
    tasks: TaskTracker,
    permits: Arc<Semaphore>,
) {
    let address = listener.local_addr().ok();
    tracing::info!(?address, ?ack, "listening for emitters");
    while let Some((stream, peer)) = accept(&listener, &ctx.shutdown.stop_accepting).await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            ctx.stats.connections_refused.add(1);
            tracing::warn!(%peer, "emitter connection refused: limits.max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = EmitterConnection::new(stream, peer, ack, &ctx);
        let ctx = ctx.clone();
        tasks.spawn(async move {
            connection.run(&ctx).await;
            drop(permit);
        });
    }
}
