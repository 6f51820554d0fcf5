//! Analyzers that dial in: handshake, registration in the routing tree, the
//! session, and handing back what a failed session held.

mod handshake;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use logdist_router::PriorityQueues;
use logdist_wire::{JsonControlDecoder, SeedControlDecoder, error_reply, hello_ok};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::server::Shared;
use handshake::read_handshake;
use session::{AckState, AnalyzerSession, read_control};

/// Serves one analyzer connection from handshake to hand-back.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (intro, framed, mut writer) = match read_handshake(stream, peer).await {
        Ok(found) => found,
        Err(refusal) => {
            tracing::warn!(%peer, reason = %refusal.reason, "analyzer connection refused");
            if let Some(mut stream) = refusal.reply {
                let _ = stream.write_all(&error_reply(&refusal.reason)).await;
            }
            return;
        }
    };
    let id: Arc<str> = Arc::from(intro.id.as_str());
    let queues = Arc::new(PriorityQueues::new(
        shared.queue_capacity,
        shared.router.space().clone(),
    ));
    if let Err(err) = shared
        .router
        .register(id.clone(), intro.weight, queues.clone())
    {
        tracing::warn!(%peer, analyzer = %id, %err, "analyzer refused");
        if intro.replies {
            let _ = writer.write_all(&error_reply(&err.to_string())).await;
        }
        return;
    }
    if intro.replies
        && let Err(err) = writer.write_all(hello_ok()).await
    {
        tracing::warn!(%peer, analyzer = %id, %err, "analyzer left during handshake");
        shared.router.unregister(&id);
        return;
    }
    tracing::info!(
        %peer, analyzer = %id, weight = intro.weight, format = ?intro.format, acks = intro.acks,
        "analyzer connected"
    );

    let state = Arc::new(AckState::default());
    let control = if intro.seed_control {
        let framed = framed.map_decoder(|_| SeedControlDecoder);
        tokio::spawn(read_control(
            framed,
            id.clone(),
            state.clone(),
            shared.clone(),
        ))
    } else {
        let framed = framed.map_decoder(|_| JsonControlDecoder::default());
        tokio::spawn(read_control(
            framed,
            id.clone(),
            state.clone(),
            shared.clone(),
        ))
    };
    let session = AnalyzerSession {
        format: intro.format,
        acks: intro.acks,
        queues,
        window_capacity: shared.window,
        state,
    };
    // Out of the tree first, so no new message is routed to a closing session;
    // the session's own close of its queues catches any push already under way.
    let end = {
        let end = session.run(writer, &shared).await;
        shared.router.unregister(&id);
        end
    };
    control.abort();
    let held = end.held.len();
    if held == 0 {
        tracing::info!(analyzer = %id, delivered = end.delivered, reason = %end.reason, "analyzer disconnected");
    } else {
        tracing::warn!(
            analyzer = %id, delivered = end.delivered, handed_back = held, reason = %end.reason,
            "analyzer disconnected holding messages; rerouting them"
        );
        shared
            .redelivery
            .hand_back(end.held, Arc::from(end.reason.as_str()));
    }
}
