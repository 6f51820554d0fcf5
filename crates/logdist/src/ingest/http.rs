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
//! Memory stays bounded by the body (at most `admin.max_body_bytes`, checked
//! before the handler runs): the body is checked to be JSON without building
//! anything, then read one packet at a time, and one message at a time within
//! a packet (each message is borrowed from the body). A packet is checked
//! whole first; its envelopes are then built and routed [`CHUNK`] at a time.
//! So beyond the body a request holds one message's parse tree, one chunk of
//! envelopes and its reply (at most [`MAX_REPORTED_ERRORS`] error entries).
//!
//! Each chunk's lines are charged to the memory budget before they are
//! routed (waiting, like an emitter's read, while it is spent) and kept in
//! one buffer that holds the charge until its last message is delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::routing::post;
use logdist_router::{Cursor, Envelope, Wakes};
use logdist_wire::{Message, Rejection, ndjson_priority};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_util::task::TaskTracker;

use super::context::IngestContext;
use super::spooling::GaveUp;
use crate::api_error::{ApiError, body as read_body};
use crate::budget::charged_copy;
use crate::delivery::dead_letter::SHUTDOWN_ERROR;
use crate::stats::class_of;

/// Envelopes built and routed at a time.
const CHUNK: usize = 1024;

/// Failed packets whose reason the reply lists; the others are only counted.
pub const MAX_REPORTED_ERRORS: usize = 100;

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
    /// leave seed clients unaffected); the first [`MAX_REPORTED_ERRORS`].
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SubmitResponse>, ApiError> {
    let body = read_body(body)?;
    // A body that is not a JSON array is refused whole, before anything is routed.
    if std::str::from_utf8(&body).is_err() {
        return Err(ApiError::bad_request("invalid JSON body: not UTF-8"));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))?;
    if Elements::of(&body).is_none() {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected an array of packets",
        ));
    }
    let routing = http.tasks.spawn({
        let http = http.clone();
        async move { ingest(&http, &body).await }
    });
    match routing.await {
        Ok(response) => Ok(Json(response)),
        Err(_) => Err(ApiError::internal("routing the messages failed")),
    }
}

/// Checks and routes every packet of `body` (a JSON array), one at a time.
async fn ingest(http: &HttpIngest, body: &[u8]) -> SubmitResponse {
    let mut response = SubmitResponse {
        total_packets: 0,
        successful: 0,
        failed: 0,
        processed_packets: Vec::new(),
        errors: Vec::new(),
    };
    for (index, packet) in Elements::of(body).into_iter().flatten().enumerate() {
        response.total_packets += 1;
        let (id, messages) = parse_packet(packet);
        let checked = messages.and_then(|messages| check(http, messages).map(|()| messages));
        let routed = match checked {
            Ok(messages) => route_packet(http, messages).await,
            Err(error) => Err(error),
        };
        match routed {
            Ok(()) => {
                response.successful += 1;
                let id = id.unwrap_or_else(|| generated_id(http));
                response.processed_packets.push(id);
            }
            Err(error) => {
                response.failed += 1;
                if response.errors.len() < MAX_REPORTED_ERRORS {
                    response.errors.push(PacketError { index, id, error });
                }
            }
        }
    }
    response
}

/// The fields of a packet object that matter; others are ignored.
#[derive(Deserialize)]
struct RawPacket<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
}

/// A packet's id, and its raw `messages` array (non-empty) or why it fails.
fn parse_packet(packet: &[u8]) -> (Option<String>, Result<&[u8], String>) {
    if packet.first() != Some(&b'{') {
        return (None, Err("packet must be a JSON object".to_string()));
    }
    let raw: RawPacket = match serde_json::from_slice(packet) {
        Ok(raw) => raw,
        Err(err) => return (None, Err(format!("packet: {err}"))),
    };
    let id = raw
        .id
        .and_then(|id| match serde_json::from_str::<Value>(id.get()).ok()? {
            Value::String(id) => Some(id),
            Value::Null => None,
            other => Some(other.to_string()),
        });
    let Some(messages) = raw.messages.map(|m| m.get().as_bytes()) else {
        return (id, Err("packet has no \"messages\"".to_string()));
    };
    let messages = match Elements::of(messages).map(|mut elements| elements.next().is_some()) {
        None => Err("\"messages\" must be an array".to_string()),
        Some(false) => Err("packet has no messages".to_string()),
        Some(true) => Ok(messages),
    };
    (id, messages)
}

fn generated_id(http: &HttpIngest) -> String {
    let n = http.packet_ids.fetch_add(1, Ordering::Relaxed);
    format!("packet-{:08x}-{n}", rand::random::<u32>())
}

/// One message as an NDJSON line and its priority, or why it is rejected.
fn prepare(http: &HttpIngest, message: &[u8]) -> Result<(u8, Vec<u8>), Rejection> {
    let ctx = &http.ctx;
    // Re-serialized compactly (serde_json's key order and spacing).
    let value: Value = serde_json::from_slice(message).expect("checked as JSON before");
    let line = serde_json::to_vec(&value).expect("a JSON value serializes");
    drop(value);
    if line.len() > ctx.limits.max_line_bytes {
        return Err(Rejection::line_too_long(ctx.limits.max_line_bytes));
    }
    let priority = ndjson_priority(&line, &ctx.priorities)?;
    Ok((priority, line))
}

/// Checks every message of a packet, building nothing that outlives one
/// message; the first invalid one fails the packet and is counted as rejected.
fn check(http: &HttpIngest, messages: &[u8]) -> Result<(), String> {
    for (i, message) in Elements::of(messages).into_iter().flatten().enumerate() {
        if let Err(rejection) = prepare(http, message) {
            http.ctx.stats.reject(rejection.reason, 1);
            return Err(format!("message {i}: {rejection}"));
        }
    }
    Ok(())
}

/// Routes a checked packet's messages, [`CHUNK`] envelopes at a time. Fails
/// only in disk mode, when shutdown came before they were all stored.
async fn route_packet(http: &HttpIngest, messages: &[u8]) -> Result<(), String> {
    let arrived = Instant::now();
    let mut elements = Elements::of(messages).into_iter().flatten().peekable();
    while elements.peek().is_some() {
        let lines: Vec<(u8, Vec<u8>)> = elements
            .by_ref()
            .take(CHUNK)
            .filter_map(|message| prepare(http, message).ok())
            .collect();
        let envelopes = charged(http, lines, arrived).await;
        let mut cursor = http.reserve_points(envelopes.len());
        if !route(http, &mut cursor, envelopes).await {
            return Err("logdist shut down before the packet was stored on disk".to_string());
        }
    }
    Ok(())
}

/// The lines as envelopes sharing one buffer, charged to the memory budget
/// (waiting while it is spent) until their last message is delivered.
async fn charged(http: &HttpIngest, lines: Vec<(u8, Vec<u8>)>, arrived: Instant) -> Vec<Envelope> {
    let ctx = &http.ctx;
    let give_up = ctx.shutdown.hard_stop.cancelled();
    let data = charged_copy(
        &ctx.budget,
        lines.iter().map(|(_, line)| &line[..]),
        give_up,
    )
    .await;
    lines
        .iter()
        .zip(data)
        .map(|((priority, _), line)| {
            Envelope::arrived_at(Message::from_ndjson_line(*priority, line), arrived)
        })
        .collect()
}

/// The elements of a JSON array, as raw slices of it, one at a time. Only
/// for text already known to be valid JSON.
struct Elements<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Elements<'a> {
    /// `None` when `text` is not an array.
    fn of(text: &'a [u8]) -> Option<Self> {
        let start = skip_whitespace(text, 0);
        (text.get(start) == Some(&b'[')).then_some(Elements {
            text,
            pos: start + 1,
        })
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = skip_whitespace(self.text, self.pos);
        if matches!(self.text.get(start), None | Some(b']')) {
            self.pos = self.text.len();
            return None;
        }
        let rest = &self.text[start..];
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<&RawValue>();
        let Some(Ok(value)) = values.next() else {
            self.pos = self.text.len();
            return None;
        };
        let end = start + values.byte_offset();
        let after = skip_whitespace(self.text, end);
        self.pos = if self.text.get(after) == Some(&b',') {
            after + 1
        } else {
            after
        };
        Some(value.get().as_bytes())
    }
}

fn skip_whitespace(text: &[u8], mut pos: usize) -> usize {
    while text.get(pos).is_some_and(|b| b.is_ascii_whitespace()) {
        pos += 1;
    }
    pos
}

/// Routes like an emitter connection: counted as accepted, then placed,
/// waiting out backpressure; dead-lettered if shutdown's grace runs out first
/// (in disk mode: appended to the spool first, and left there). Returns
/// whether the messages are stored as the reply will say: always in memory
/// mode; in disk mode, not when shutdown came before they were durable.
async fn route(http: &HttpIngest, cursor: &mut Cursor, envelopes: Vec<Envelope>) -> bool {
    let ctx = &http.ctx;
    let hard_stop = &ctx.shutdown.hard_stop;
    let mut last_spooled = None;
    for mut env in envelopes {
        if let Some(spooling) = &ctx.spooling {
            match spooling.append(&mut env, hard_stop.cancelled()).await {
                Ok(id) => last_spooled = Some(id),
                // Never accepted.
                Err(GaveUp) => return false,
            }
        }
        ctx.stats.accepted_by_class[class_of(env.priority())].add(1);
        let env = match ctx
            .router
            .place(&ctx.router.load(), cursor, env, &mut Wakes::default())
        {
            Ok(placed) => {
                ctx.stats.count(placed);
                continue;
            }
            Err(env) => env,
        };
        if let Some(spooling) = &ctx.spooling {
            match spooling
                .wait_or_spill(&ctx.router, cursor, env, hard_stop)
                .await
            {
                Some(placed) => ctx.stats.count(placed),
                None => ctx.stats.backlogged.add(1),
            }
            continue;
        }
        match ctx
            .router
            .route_or_wait(cursor, env, hard_stop.cancelled())
            .await
        {
            Ok(placed) => ctx.stats.count(placed),
            Err(env) => ctx.dead_letters.send(env, Arc::from(SHUTDOWN_ERROR)),
        }
    }
    if let (Some(spooling), Some(id)) = (&ctx.spooling, last_spooled) {
        // The reply promises the messages are stored.
        return tokio::select! {
            _ = spooling.durable(id) => true,
            _ = hard_stop.cancelled() => spooling.spool.is_durable(id),
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &str) -> Option<Vec<&str>> {
        Elements::of(text.as_bytes()).map(|e| e.map(|v| std::str::from_utf8(v).unwrap()).collect())
    }

    #[test]
    fn array_elements_one_at_a_time() {
        assert_eq!(
            elements(" [ 1 , \"a,]\" ,{\"x\":[1,2]} ,[],null,-2.5e3 ] "),
            Some(vec![
                "1",
                "\"a,]\"",
                "{\"x\":[1,2]}",
                "[]",
                "null",
                "-2.5e3"
            ])
        );
        assert_eq!(elements("[]"), Some(vec![]));
        assert_eq!(elements(" [\n] "), Some(vec![]));
        assert_eq!(elements("{\"a\":1}"), None);
        assert_eq!(elements("\"[\""), None);
    }
}
