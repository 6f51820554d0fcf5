//! An emitter listener: every connection is an emitter, up to
//! `limits.max_connections` across all emitter listeners.

use std::sync::Arc;

use logdist_wire::IngestFormat;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::connection::EmitterConnection;
use super::context::IngestContext;
use crate::accept::accept;
use crate::config::AckMode;
use crate::transport::Gate;

/// What a listener does with its emitters' messages.
#[derive(Clone, Copy, Debug)]
pub struct ListenerMode {
    pub ack: AckMode,
    pub format: IngestFormat,
}

/// Accepts emitters until shutdown stops accepting; their connections run
/// on `tasks`, each holding one of `permits` while it lives (TLS handshake
/// included). `gate` decides who gets in.
pub async fn accept_emitters(
    listener: TcpListener,
    mode: ListenerMode,
    gate: Arc<Gate>,
    ctx: Arc<IngestContext>,
    tasks: TaskTracker,
    permits: Arc<Semaphore>,
) {
    let address = listener.local_addr().ok();
    let tls = gate.is_tls();
    let ListenerMode { ack, format } = mode;
    tracing::info!(?address, ?ack, ?format, tls, "listening for emitters");
    while let Some((stream, peer)) = accept(&listener, &ctx.shutdown.stop_accepting).await {
        let Some((admission, permit)) = gate.admit_within(peer, &permits, "limits.max_connections")
        else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        crate::transport::socket::keepalive(&stream);
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let Some(stream) = admission
                .establish(stream, &ctx.shutdown.stop_accepting)
                .await
            else {
                return;
            };
            let connection = EmitterConnection::new(stream, peer, mode, &ctx);
            connection.run(&ctx).await;
            drop(permit);
        });
    }
}
