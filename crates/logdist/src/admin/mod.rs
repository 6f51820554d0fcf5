//! The admin HTTP API on `[admin] listen`: the seed HTTP distributor's
//! endpoints (same paths and JSON shapes), weight control, and `/metrics`.
//! docs/operations.md describes every endpoint.
//!
//! Handlers only read what the distributor counts anyway and make the same
//! control changes its other inputs make (through the analyzer directory), so
//! the API costs the data path nothing.

mod analyzers;
mod dead_letter;
mod health;
mod logs;
mod stats;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use logdist_router::Cursor;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::server::Shared;

/// What every handler gets.
struct Admin {
    shared: Arc<Shared>,
    registry: Registry,
    /// Numbers the packets of `POST /api/v1/logs` that come without an id.
    packet_ids: AtomicU64,
    /// One low-discrepancy sequence for all HTTP ingest, so its shares are as
    /// exact as an emitter connection's however small each request is.
    cursor: Mutex<Cursor>,
    /// Where HTTP ingest routes, so shutdown waits for it (see `logs.rs`).
    tasks: TaskTracker,
}

impl Admin {
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

type AppState = State<Arc<Admin>>;

/// Serves the admin API on `listener` until shutdown stops accepting; work
/// that must outlive a request (routing HTTP ingest) goes on `tasks`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, tasks: TaskTracker) {
    let address = listener.local_addr().ok();
    let stop = shared.shutdown.stop_accepting.clone();
    let app = router(shared, tasks);
    tracing::info!(?address, "admin API listening");
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(%err, "admin API failed");
    }
}

fn router(shared: Arc<Shared>, tasks: TaskTracker) -> Router {
    let body_limit = shared.limits.max_decompressed_bytes;
    let admin = Arc::new(Admin {
        registry: metrics::registry(shared.clone()),
        shared,
        packet_ids: AtomicU64::new(0),
        cursor: Mutex::new(Cursor::new(0)),
        tasks,
    });
    Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/stats", get(stats::stats))
        .route("/api/v1/analyzers", get(analyzers::list))
        .route("/api/v1/analyzers/{id}", get(analyzers::one))
        .route("/api/v1/analyzers/{id}/health", post(analyzers::set_health))
        .route("/api/v1/analyzers/{id}/weight", put(analyzers::set_weight))
        .route("/api/v1/dead-letter", get(dead_letter::list))
        .route("/api/v1/logs", post(logs::submit))
        .route("/metrics", get(prometheus))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(admin)
}

async fn prometheus(State(admin): AppState) -> Response {
    let text = metrics::render(&admin.registry);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// An error answered as `{"error": "..."}` with its status.
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, message.into())
    }

    fn internal(message: impl Into<String>) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 });
        (self.0, axum::Json(body)).into_response()
    }
}

/// The body as JSON of type `T`, or a 400 that says what is wrong with it
/// (axum's own `Json` rejection answers in plain text).
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
}

/// "Now" as RFC 3339 UTC, like the seed's timestamps.
fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A duration the way the seed (Go's `Duration.String`) printed it: "5m23s",
/// "1h2m3s", or with milliseconds "5m23.891s".
fn uptime(elapsed: Duration, millis: bool) -> String {
    let secs = elapsed.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let ms = elapsed.subsec_millis();
    if millis && ms > 0 {
        let fraction = format!("{ms:03}");
        out.push_str(&format!("{s}.{}s", fraction.trim_end_matches('0')));
    } else {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_like_the_seed() {
        let d = Duration::from_millis(5 * 60_000 + 23_891);
        assert_eq!(uptime(d, false), "5m23s");
        assert_eq!(uptime(d, true), "5m23.891s");
        assert_eq!(uptime(Duration::from_millis(1_500), true), "1.5s");
        assert_eq!(uptime(Duration::from_secs(3_723), false), "1h2m3s");
        assert_eq!(uptime(Duration::from_secs(3_600), false), "1h0m0s");
        assert_eq!(uptime(Duration::ZERO, true), "0s");
    }
}
