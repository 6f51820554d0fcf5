//! `GET /api/v1/health`: healthy when every known analyzer is, degraded when
//! only some are, unhealthy (HTTP 503, so load balancers and probes notice)
//! when none is, including when there is none.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::{AppState, timestamp, uptime};
use crate::delivery::directory::Health;

#[derive(Serialize)]
struct HealthResponse {
    status: &'static str,
    uptime: String,
    active_analyzers: usize,
    total_analyzers: usize,
    timestamp: String,
}

pub(super) async fn health(State(admin): AppState) -> (StatusCode, Json<impl Serialize>) {
    let analyzers = admin.observed.directory.snapshot();
    let total = analyzers.len();
    let active = analyzers
        .iter()
        .filter(|a| a.health == Health::Healthy)
        .count();
    let (status, code) = if active == 0 {
        ("unhealthy", StatusCode::SERVICE_UNAVAILABLE)
    } else if active < total {
        ("degraded", StatusCode::OK)
    } else {
        ("healthy", StatusCode::OK)
    };
    let body = HealthResponse {
        status,
        uptime: uptime(admin.observed.started.elapsed(), false),
        active_analyzers: active,
        total_analyzers: total,
        timestamp: timestamp(),
    };
    (code, Json(body))
}
