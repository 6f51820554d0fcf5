//! Attaching a connected analyzer: the ones that dial in (handshake first)
//! and the static ones the distributor dials out to share one path from
//! registration to hand-back.

use std::net::SocketAddr;
use std::sync::Arc;

use logdist_router::{Envelope, PriorityQueues, RegisterError};
use logdist_wire::{ErrorCode, JsonControlDecoder, SeedControlDecoder, error_reply, hello_ok};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::ack_state::AckState;
use super::context::DeliveryContext;
use super::directory::{ConnectError, Departure, Link};
use super::handshake::{Introduction, read_handshake};
use super::probe::probe;
use super::session::{AnalyzerSession, read_control};
use crate::refusal::RefusalReason;
use crate::transport::stream::write_all_flushed;
use crate::transport::{ReadHalf, Stream, WriteHalf};

/// Why the session of a static analyzer removed from the config ended.
const RETIRED: &str = "removed from the config";

/// Serves one analyzer that connected to the analyzer listener (past its
/// allow list and TLS handshake) from `peer`.
pub async fn serve_dial_in(stream: Stream, peer: SocketAddr, ctx: Arc<DeliveryContext>) {
    let access = ctx.access.load();
    let max_weight = ctx.directory.max_weight();
    let (intro, framed, writer) = match read_handshake(stream, peer, &access, max_weight).await {
        Ok(found) => found,
        Err(refusal) => {
            ctx.stats
                .refuse_analyzer(refusal.counted, &peer.to_string(), &refusal.reason);
            if let Some(mut stream) = refusal.reply {
                let reply = error_reply(refusal.code, &refusal.reason);
                let _ = write_all_flushed(&mut stream, &reply).await;
            }
            return;
        }
    };
    // Dial-in analyzers leave when they want to (or at shutdown).
    attach(intro, framed, writer, &ctx, &CancellationToken::new()).await;
}

/// Runs a connected analyzer: joins the routing table, streams until the
/// connection ends (or `removed` is cancelled: the analyzer was removed from the
/// config), leaves the table, and hands back what it held. `reader` may hold
/// bytes that followed a handshake; they are the start of the control stream.
/// Returns whether the analyzer was accepted at all.
pub async fn attach<D>(
    intro: Introduction,
    reader: FramedRead<ReadHalf, D>,
    mut writer: WriteHalf,
    ctx: &Arc<DeliveryContext>,
    removed: &CancellationToken,
) -> bool {
    let id = intro.id.clone();
    let queues = Arc::new(PriorityQueues::new(
        ctx.settings.queue_capacity,
        ctx.router.space().clone(),
    ));
    let state = Arc::new(AckState::new(intro.acks));
    let connected = ctx.directory.connect(
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
            let detail = format!("analyzer {id}: {err}");
            match &err {
                ConnectError::ReservedId(_) => {
                    ctx.stats
                        .refuse_analyzer(RefusalReason::ReservedId, &intro.address, &detail);
                }
                ConnectError::WeightOutOfRange { .. } => {
                    ctx.stats
                        .refuse_analyzer(RefusalReason::BadWeight, &intro.address, &detail);
                }
                ConnectError::Router(_) => {
                    tracing::warn!(address = %intro.address, analyzer = %id, %err, "analyzer refused");
                }
            }
            if intro.replies {
                let reply = error_reply(refusal_code(&err), &err.to_string());
                let _ = write_all_flushed(&mut writer, &reply).await;
            }
            return false;
        }
    };
    if intro.replies
        && let Err(err) = write_all_flushed(&mut writer, hello_ok()).await
    {
        tracing::warn!(address = %intro.address, analyzer = %id, %err, "analyzer left during handshake");
        // Messages may have been routed to it already.
        let queued = queues.close_and_drain();
        leave(ctx, &id, "left during handshake", true, Vec::new(), queued);
        return false;
    }
    tracing::info!(
        address = %intro.address, analyzer = %id, weight = intro.weight,
        format = ?intro.format, acks = intro.acks, link = ?intro.link,
        "analyzer connected"
    );

    // Cancelled when the session is over: the reader applies a weight
    // update it still holds back (coalescing) and stops.
    let control_done = CancellationToken::new();
    let control = if intro.seed_control {
        let reader = reader.map_decoder(|_| SeedControlDecoder);
        tokio::spawn(read_control(
            reader,
            id.clone(),
            state.clone(),
            ctx.directory.clone(),
            ctx.stats.clone(),
            ctx.shutdown.hard_stop.clone(),
            control_done.clone(),
        ))
    } else {
        let reader = reader.map_decoder(|_| JsonControlDecoder::new());
        tokio::spawn(read_control(
            reader,
            id.clone(),
            state.clone(),
            ctx.directory.clone(),
            ctx.stats.clone(),
            ctx.shutdown.hard_stop.clone(),
            control_done.clone(),
        ))
    };
    let probe = match (intro.link, ctx.settings.probe_interval.is_zero()) {
        (Link::Static, false) => Some(tokio::spawn(probe(
            intro.address.clone(),
            ctx.settings.probe_interval,
            state.clone(),
        ))),
        _ => None,
    };
    // Removal from the config drains first: no new messages, and the session
    // ends once what it holds is acknowledged, or at the end of the grace period.
    let retiring = CancellationToken::new();
    let retire = tokio::spawn({
        let (removed, retiring, state) = (removed.clone(), retiring.clone(), state.clone());
        let (directory, grace, id) = (ctx.directory.clone(), ctx.settings.drain_grace, id.clone());
        async move {
            removed.cancelled().await;
            let _ = directory.set_weight(&id, 0.0, RETIRED);
            retiring.cancel();
            tokio::time::sleep(grace).await;
            state.close(format!("{RETIRED}: grace period over"));
        }
    });
    let session = AnalyzerSession {
        id: id.clone(),
        directory: ctx.directory.clone(),
        drain: ctx.drain.clone(),
        format: intro.format,
        acks: intro.acks,
        queues,
        window_capacity: ctx.settings.window,
        ack_timeout: ctx.settings.ack_timeout,
        write_coalesce: ctx.settings.write_coalesce,
        state,
        delivered,
        retiring,
        custody: ctx.custody.clone(),
    };
    let holding = ctx.router.holding().map(|h| &**h);
    let end = session
        .run(writer, &ctx.stats, &ctx.shutdown, holding)
        .await;
    control_done.cancel();
    let _ = control.await;
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
    leave(ctx, &id, &end.reason, failure, end.unacked, end.queued);
    true
}

/// The `reason` of the reply refusing an analyzer the directory would not register.
fn refusal_code(err: &ConnectError) -> ErrorCode {
    match err {
        ConnectError::ReservedId(_) => ErrorCode::ReservedId,
        ConnectError::WeightOutOfRange { .. } => ErrorCode::BadWeight,
        ConnectError::Router(RegisterError::DuplicateId) => ErrorCode::DuplicateId,
        ConnectError::Router(RegisterError::InvalidWeight) => ErrorCode::BadWeight,
        // Only weight changes report this, never a registration; were it ever
        // to happen, the hello named an analyzer that cannot be registered.
        ConnectError::Router(RegisterError::UnknownId) => ErrorCode::BadHandshake,
    }
}

/// Records that an analyzer left and gives what it still held another chance.
/// The hand-back comes first: until the directory lets the analyzer go, its
/// messages count as held by it, and from then on as being rerouted, so a
/// draining session never sees them nowhere. Then draining sessions are told.
fn leave(
    ctx: &DeliveryContext,
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
    if handed_back > 0 {
        ctx.redelivery
            .hand_back(id, unacked, queued, Arc::from(reason));
    }
    ctx.directory.disconnected(id, reason, departure);
    ctx.drain.notify();
}
