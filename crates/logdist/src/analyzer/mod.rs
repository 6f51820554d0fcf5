//! Analyzers: the ones that dial in (handshake first) and the static ones the
//! distributor dials out to share one path from registration to hand-back.

pub mod directory;
mod handshake;
mod session;
mod static_link;

use std::sync::Arc;

use logdist_router::{Envelope, PriorityQueues};
use logdist_wire::{AnalyzerFormat, JsonControlDecoder, SeedControlDecoder, error_reply, hello_ok};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;
use directory::{Departure, Link};
use handshake::read_handshake;
use session::{AckState, AnalyzerSession, read_control};
pub use static_link::run_static;

/// Why the session of a static analyzer removed from the config ended.
const RETIRED: &str = "removed from the config";

/// Who an analyzer is and how it wants to be spoken to.
#[derive(Debug)]
pub struct Introduction {
    pub id: Arc<str>,
    pub weight: f64,
    pub format: AnalyzerFormat,
    pub acks: bool,
    /// JSON-hello analyzers wait for a status line before messages flow.
    pub replies: bool,
    /// Seed-style 4-byte control words back (else JSON lines).
    pub seed_control: bool,
    pub link: Link,
    pub address: String,
}

/// Serves one analyzer that connected to the analyzer listener.
pub async fn serve_dial_in(stream: TcpStream, shared: Arc<Shared>) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let _ = stream.set_nodelay(true);
    let (intro, framed, writer) = match read_handshake(stream, peer).await {
        Ok(found) => found,
        Err(refusal) => {
            tracing::warn!(%peer, reason = %refusal.reason, "analyzer connection refused");
            if let Some(mut stream) = refusal.reply {
                let _ = stream.write_all(&error_reply(&refusal.reason)).await;
            }
            return;
        }
    };
    // Dial-in analyzers leave when they want to (or at shutdown).
    attach(intro, framed, writer, &shared, &CancellationToken::new()).await;
}

/// Runs a connected analyzer: joins the routing table, streams until the
/// connection ends (or `removed` is cancelled: the analyzer was removed from the
/// config), leaves the table, and hands back what it held. `reader` may hold
/// bytes that followed a handshake; they are the start of the control stream.
/// Returns whether the analyzer was accepted at all.
pub async fn attach<D>(
    intro: Introduction,
    reader: FramedRead<OwnedReadHalf, D>,
    mut writer: OwnedWriteHalf,
    shared: &Arc<Shared>,
    removed: &CancellationToken,
) -> bool {
    let id = intro.id.clone();
    let queues = Arc::new(PriorityQueues::new(
        shared.queue_capacity,
        shared.router.space().clone(),
    ));
    let state = Arc::new(AckState::new(intro.acks));
    let connected = shared.directory.connect(
        &id,
        intro.link,
        &intro.address,
        intro.weight,
        queues.clone(),
        state.clone(),
    );
    let delivered = match connected {
        Ok(delivered) => delivered,
        Err(err) => {
            tracing::warn!(address = %intro.address, analyzer = %id, %err, "analyzer refused");
            if intro.replies {
                let _ = writer.write_all(&error_reply(&err.to_string())).await;
            }
            return false;
        }
    };
    if intro.replies
        && let Err(err) = writer.write_all(hello_ok()).await
    {
        tracing::warn!(address = %intro.address, analyzer = %id, %err, "analyzer left during handshake");
        // Messages may have been routed to it already.
        let queued = queues.close_and_drain();
        leave(
            shared,
            &id,
            "left during handshake",
            true,
            Vec::new(),
            queued,
        );
        return false;
    }
    tracing::info!(
        address = %intro.address, analyzer = %id, weight = intro.weight,
        format = ?intro.format, acks = intro.acks, link = ?intro.link,
        "analyzer connected"
    );

    let control = if intro.seed_control {
        let reader = reader.map_decoder(|_| SeedControlDecoder);
        tokio::spawn(read_control(
            reader,
            id.clone(),
            state.clone(),
            shared.clone(),
        ))
    } else {
        let reader = reader.map_decoder(|_| JsonControlDecoder::new());
        tokio::spawn(read_control(
            reader,
            id.clone(),
            state.clone(),
            shared.clone(),
        ))
    };
    let probe = match (intro.link, shared.probe_interval.is_zero()) {
        (Link::Static, false) => Some(tokio::spawn(static_link::probe(
            intro.address.clone(),
            shared.probe_interval,
            state.clone(),
        ))),
        _ => None,
    };
    // Removal from the config drains first: no new messages, and the session
    // ends once what it holds is acknowledged, or at the end of the grace period.
    let retiring = CancellationToken::new();
    let retire = tokio::spawn({
        let (removed, retiring, state) = (removed.clone(), retiring.clone(), state.clone());
        let (shared, id) = (shared.clone(), id.clone());
        async move {
            removed.cancelled().await;
            let _ = shared.directory.set_weight(&id, 0.0, RETIRED);
            retiring.cancel();
            tokio::time::sleep(shared.shutdown_grace).await;
            state.close(format!("{RETIRED}: grace period over"));
        }
    });
    let session = AnalyzerSession {
        format: intro.format,
        acks: intro.acks,
        queues,
        window_capacity: shared.window,
        ack_timeout: shared.ack_timeout,
        state,
        delivered,
        retiring,
    };
    let end = session.run(writer, shared).await;
    control.abort();
    retire.abort();
    if let Some(probe) = probe {
        probe.abort();
    }
    if end.unacked.is_empty() && end.queued.is_empty() {
        tracing::info!(analyzer = %id, delivered = end.delivered, reason = %end.reason, "analyzer disconnected");
    } else {
        tracing::warn!(
            analyzer = %id, delivered = end.delivered, unacked = end.unacked.len(),
            queued = end.queued.len(), reason = %end.reason,
            "analyzer disconnected holding messages; rerouting them"
        );
    }
    // Removal from the config is an operator's decision, not a failure.
    let failure = end.failure && !removed.is_cancelled();
    leave(shared, &id, &end.reason, failure, end.unacked, end.queued);
    true
}

/// Records that an analyzer left and gives what it still held another chance.
fn leave(
    shared: &Shared,
    id: &Arc<str>,
    reason: &str,
    failure: bool,
    unacked: Vec<Envelope>,
    queued: Vec<Envelope>,
) {
    let handed_back = (unacked.len() + queued.len()) as u64;
    let departure = Departure {
        handed_back,
        failure,
    };
    shared.directory.disconnected(id, reason, departure);
    if handed_back > 0 {
        shared
            .redelivery
            .hand_back(id, unacked, queued, Arc::from(reason));
    }
}
