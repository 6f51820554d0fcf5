//! `POST /api/v1/logs`: the seed's HTTP ingest. The body is a JSON array of
//! packets `{"id"?: ..., "messages": [{...}, ...]}`; each message becomes one
//! compact NDJSON line (serde_json's key order and spacing, not the body's)
//! and is then treated like an emitter's: same priority rules (`priority`,
//! else `level`/`severity` through `[priorities]`), same routing, same
//! counters, same backpressure (the request waits while every analyzer is full).
//!
//! Routing runs in a task that shutdown waits for, not in the request
//! handler: a client that gives up while its request waits for room loses
//! only the reply, never the messages it sent.
//!
//! A packet is all or nothing: if it has no messages or one of them is not
//! valid (not an object, bad priority, too long), none of its messages is
//! routed, it counts as failed, and the invalid message is counted as rejected.
//!
//! The request's lines are charged to the memory budget before routing
//! (waiting, like an emitter's read, while it is spent) and kept in one
//! buffer that holds the charge until its last message is delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use logdist_router::{Cursor, Envelope};
use logdist_wire::{Message, Rejection, ndjson_priority};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio_util::task::TaskTracker;

use super::context::IngestContext;
use crate::api_error::{ApiError, parse_json};
use crate::budget::Charge;
use crate::delivery::dead_letter::SHUTDOWN_ERROR;
use crate::stats::class_of;

/// What the handler shares between requests.
struct HttpIngest {
    ctx: Arc<IngestContext>,
    /// Numbers the packets that come without an id.
    packet_ids: AtomicU64,
    /// One low-discrepancy sequence for all HTTP ingest, so its shares are as
    /// exact as an emitter connection's however small each request is.
    cursor: Mutex<Cursor>,
    /// Where routing runs, so shutdown waits for it (see the module docs).
    tasks: TaskTracker,
}

impl HttpIngest {
    /// A cursor at the next `n` points of the shared sequence, which moves past them.
    fn reserve_points(&self, n: usize) -> Cursor {
        let mut shared = self.cursor.lock();
        let mine = shared.clone();
        for _ in 0..n {
            shared.next_point();
        }
        mine
    }
}

/// The `POST /api/v1/logs` route, ready to merge into the admin API; routing
/// runs on `tasks`.
pub fn routes(ctx: Arc<IngestContext>, tasks: TaskTracker) -> axum::Router {
    let state = Arc::new(HttpIngest {
        ctx,
        packet_ids: AtomicU64::new(0),
        cursor: Mutex::new(Cursor::new(0)),
        tasks,
    });
    axum::Router::new()
        .route("/api/v1/logs", post(submit))
        .with_state(state)
}

#[derive(Serialize)]
struct SubmitResponse {
    total_packets: usize,
    successful: usize,
    failed: usize,
    processed_packets: Vec<String>,
    /// Why each failed packet failed (not in the seed's answer; extra keys
    /// leave seed clients unaffected).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<PacketError>,
}

#[derive(Serialize)]
struct PacketError {
    /// Position of the packet in the request.
    index: usize,
    id: Option<String>,
    error: String,
}

async fn submit(
    State(http): State<Arc<HttpIngest>>,
    body: Bytes,
) -> Result<Json<SubmitResponse>, ApiError> {
    let packets: Vec<Value> = parse_json(&body)?;
    let mut response = SubmitResponse {
        total_packets: packets.len(),
        successful: 0,
        failed: 0,
        processed_packets: Vec::new(),
        errors: Vec::new(),
    };
    let arrived = Instant::now();
    let mut accepted = Vec::new();
    for (index, packet) in packets.iter().enumerate() {
        let id = packet_id(packet);
        match prepare(&http, packet) {
            Ok(lines) => {
                accepted.extend(lines);
                response.successful += 1;
                let id = id.unwrap_or_else(|| generated_id(&http));
                response.processed_packets.push(id);
            }
            Err(error) => {
                response.failed += 1;
                response.errors.push(PacketError { index, id, error });
            }
        }
    }
    let mut cursor = http.reserve_points(accepted.len());
    let routing = http.tasks.spawn({
        let http = http.clone();
        async move { route(&http, &mut cursor, accepted, arrived).await }
    });
    if routing.await.is_err() {
        return Err(ApiError::internal("routing the messages failed"));
    }
    Ok(Json(response))
}

fn packet_id(packet: &Value) -> Option<String> {
    match packet.get("id")? {
        Value::String(id) => Some(id.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn generated_id(http: &HttpIngest) -> String {
    let n = http.packet_ids.fetch_add(1, Ordering::Relaxed);
    format!("packet-{:08x}-{n}", rand::random::<u32>())
}

/// The packet's messages as NDJSON lines with their priority, or why the
/// packet fails.
fn prepare(http: &HttpIngest, packet: &Value) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let messages = match packet.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => return Err("packet has no messages".to_string()),
        Some(_) => return Err("\"messages\" must be an array".to_string()),
        None if packet.is_object() => return Err("packet has no \"messages\"".to_string()),
        None => return Err("packet must be a JSON object".to_string()),
    };
    let ctx = &http.ctx;
    let mut lines = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let line = serde_json::to_vec(message).expect("a JSON value serializes");
        let checked = if line.len() > ctx.limits.max_line_bytes {
            Err(Rejection::line_too_long(ctx.limits.max_line_bytes))
        } else {
            ndjson_priority(&line, &ctx.priorities)
        };
        match checked {
            Ok(priority) => lines.push((priority, line)),
            Err(rejection) => {
                ctx.stats.reject(rejection.reason, 1);
                return Err(format!("message {i}: {rejection}"));
            }
        }
    }
    Ok(lines)
}

/// Routes like an emitter connection: charged to the budget, counted as
/// accepted, then placed, waiting out backpressure; dead-lettered if
/// shutdown's grace runs out first.
async fn route(
    http: &HttpIngest,
    cursor: &mut Cursor,
    lines: Vec<(u8, Vec<u8>)>,
    arrived: Instant,
) {
    let ctx = &http.ctx;
    let total = lines.iter().map(|(_, line)| line.len()).sum();
    let charge = ctx
        .budget
        .charge(total, ctx.shutdown.hard_stop.cancelled())
        .await;
    // Only the messages hold it: delivery frees it.
    charge.retire();
    let mut data = Vec::with_capacity(total);
    let mut spans = Vec::with_capacity(lines.len());
    for (priority, line) in lines {
        spans.push((priority, data.len()..data.len() + line.len()));
        data.extend_from_slice(&line);
    }
    let data = axum::body::Bytes::from_owner(Charged {
        data,
        _charge: charge,
    });
    let envelopes: Vec<Envelope> = spans
        .into_iter()
        .map(|(priority, span)| {
            let message = Message::from_ndjson_line(priority, data.slice(span));
            Envelope::arrived_at(message, arrived)
        })
        .collect();
    for env in &envelopes {
        ctx.stats.accepted_by_class[class_of(env.priority())].add(1);
    }
    for env in envelopes {
        let give_up = ctx.shutdown.hard_stop.cancelled();
        match ctx.router.route_or_wait(cursor, env, give_up).await {
            Ok(placed) => ctx.stats.count(placed),
            Err(env) => ctx.dead_letters.send(env, Arc::from(SHUTDOWN_ERROR)),
        }
    }
}

/// A request's lines, holding their charge on the budget.
struct Charged {
    data: Vec<u8>,
    _charge: Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}
