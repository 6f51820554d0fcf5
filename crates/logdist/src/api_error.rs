//! Errors of the HTTP API, answered as JSON (axum's own rejections answer in
//! plain text), for the admin endpoints and HTTP ingest alike.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered as `{"error": "..."}` with its status.
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn status(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
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
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
}

/// The request body, or the JSON error for why it could not be read (413 when
/// it is larger than `admin.max_body_bytes`).
pub fn body(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|rejection| ApiError(rejection.status(), rejection.body_text()))
}
