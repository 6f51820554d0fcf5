//! `/api/v1/analyzers`: the list, and the two operator controls: manual
//! health (take an analyzer out of routing without disconnecting it, or put
//! it back) and weight.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::{AppState, timestamp};
use axum::extract::rejection::BytesRejection;

use crate::api_error::{ApiError, body as read_body, parse_json};
use crate::delivery::directory::{AnalyzerRecord, DirectoryError};

#[derive(Serialize)]
pub(super) struct AnalyzerList {
    analyzers: Vec<AnalyzerRecord>,
    timestamp: String,
}

pub(super) async fn list(State(admin): AppState) -> Json<AnalyzerList> {
    Json(AnalyzerList {
        analyzers: admin.observed.directory.snapshot(),
        timestamp: timestamp(),
    })
}

pub(super) async fn one(
    State(admin): AppState,
    Path(id): Path<String>,
) -> Result<Json<AnalyzerRecord>, ApiError> {
    record(&admin.observed.directory, &id).map(Json)
}

/// `{"healthy": bool}`, or the seed-style `{"status": "healthy"|"unhealthy"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthBody {
    healthy: Option<bool>,
    status: Option<String>,
}

impl HealthBody {
    fn healthy(&self) -> Result<bool, ApiError> {
        match (self.healthy, self.status.as_deref()) {
            (Some(healthy), None) => Ok(healthy),
            (None, Some(status)) if status.eq_ignore_ascii_case("healthy") => Ok(true),
            (None, Some(status)) if status.eq_ignore_ascii_case("unhealthy") => Ok(false),
            _ => Err(ApiError::bad_request(
                "expected {\"healthy\": true|false} or {\"status\": \"healthy\"|\"unhealthy\"}",
            )),
        }
    }
}

pub(super) async fn set_health(
    State(admin): AppState,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AnalyzerRecord>, ApiError> {
    let healthy = parse_json::<HealthBody>(&read_body(body)?)?.healthy()?;
    let directory = &admin.observed.directory;
    directory
        .set_manual_health(&id, healthy)
        .map_err(directory_error)?;
    tracing::info!(analyzer = %id, healthy, "manual health override set over the admin API");
    record(directory, &id).map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: f64,
}

pub(super) async fn set_weight(
    State(admin): AppState,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AnalyzerRecord>, ApiError> {
    let weight = parse_json::<WeightBody>(&read_body(body)?)?.weight;
    let directory = &admin.observed.directory;
    directory
        .set_weight(&id, weight, "weight set over the admin API")
        .map_err(directory_error)?;
    tracing::info!(analyzer = %id, weight, "weight set over the admin API");
    record(directory, &id).map(Json)
}

fn record(
    directory: &crate::delivery::directory::Directory,
    id: &str,
) -> Result<AnalyzerRecord, ApiError> {
    directory
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no analyzer with id {id:?}")))
}

fn directory_error(err: DirectoryError) -> ApiError {
    match err {
        DirectoryError::UnknownId(_) => ApiError::not_found(err.to_string()),
        DirectoryError::WeightOutOfRange { .. } | DirectoryError::Router(_) => {
            ApiError::bad_request(err.to_string())
        }
    }
}
