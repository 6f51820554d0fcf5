//! The admin HTTP API on `[admin] listen`: the seed HTTP distributor's
//! endpoints (same paths and JSON shapes), weight control, and `/metrics`.
//! docs/operations.md describes every endpoint.
//!
//! Handlers only read what the distributor counts anyway and make the same
//! control changes its other inputs make (through the analyzer directory), so
//! the API costs the data path nothing.

mod analyzers;
mod dead_letter;
pub mod guard;
mod health;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use self::guard::{AdminAuth, Guard};
use super::metrics;
use super::observed::Observed;
use crate::transport::http::GatedListener;

/// What every handler gets.
struct Admin {
    observed: Observed,
    registry: Registry,
    /// Where dead letters are written, read back by `GET /api/v1/dead-letter`.
    dead_letter_path: PathBuf,
    /// `analyzers.window`, for the stats' result-channel utilisation.
    window: usize,
}

type AppState = State<Arc<Admin>>;

/// What the admin API serves besides its own endpoints.
pub struct AdminSettings {
    pub dead_letter_path: PathBuf,
    pub window: usize,
    /// The largest request body accepted (`admin.max_body_bytes`).
    pub body_limit: usize,
    /// The token requests need (reloadable).
    pub auth: Arc<AdminAuth>,
    /// The admin API listens on a loopback address: requests must name a loopback host.
    pub loopback_only: bool,
    /// How long a client may take to send a request's headers
    /// (`admin.header_read_timeout`); a slower one is disconnected.
    pub header_read_timeout: Duration,
}

/// Serves the admin API on `listener` (plain HTTP or HTTPS, as its gate
/// says), with `ingest` (HTTP ingest's routes) merged in, until
/// `stop_accepting` is cancelled.
pub async fn serve(
    listener: GatedListener,
    tls: bool,
    observed: Observed,
    settings: AdminSettings,
    ingest: Router,
    stop_accepting: CancellationToken,
) {
    let mut listener = listener;
    let address = listener.local_addr();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    let app = router(observed, settings, ingest);
    tracing::info!(%address, tls, "admin API listening");
    // Every connection's task, so shutdown waits for requests in progress
    // (HTTP ingest ones included) while idle connections close at once.
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer, permit) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_accepting.cancelled() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let stop = stop_accepting.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = served {
                // A client too slow with its headers ends here too.
                tracing::debug!(%peer, %err, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn router(observed: Observed, settings: AdminSettings, ingest: Router) -> Router {
    let admin = Arc::new(Admin {
        registry: metrics::registry(observed.clone()),
        observed,
        dead_letter_path: settings.dead_letter_path,
        window: settings.window,
    });
    Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/stats", get(stats::stats))
        .route("/api/v1/analyzers", get(analyzers::list))
        .route("/api/v1/analyzers/{id}", get(analyzers::one))
        .route("/api/v1/analyzers/{id}/health", post(analyzers::set_health))
        .route("/api/v1/analyzers/{id}/weight", put(analyzers::set_weight))
        .route("/api/v1/dead-letter", get(dead_letter::list))
        .route("/metrics", get(prometheus))
        .with_state(admin)
        .merge(ingest)
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::new(Guard {
                auth: settings.auth,
                loopback_only: settings.loopback_only,
                max_body_bytes: settings.body_limit,
            }),
            guard::guard,
        ))
}

async fn prometheus(State(admin): AppState) -> Response {
    let text = metrics::render(&admin.registry);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
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
