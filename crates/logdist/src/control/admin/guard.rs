//! What every request to the admin listener passes before a handler sees it
//! (HTTP ingest included), in this order:
//!
//! 1. **Host** (only when the admin API listens on a loopback address): the
//!    `Host` header must name a loopback host (`localhost`, `127.0.0.0/8`,
//!    `[::1]`, any port), else 421. A web page whose DNS name was rebound to
//!    127.0.0.1 sends its own name, so it cannot reach the API.
//! 2. **Token** (when `[admin] token` is set): `Authorization: Bearer <token>`
//!    on every request but `GET /api/v1/health` and `GET /metrics`, else 401
//!    with `WWW-Authenticate: Bearer`.
//! 3. **Content type**: POST, PUT and PATCH need `Content-Type:
//!    application/json` (parameters such as `charset` allowed), else 415. An
//!    HTML form can only send `application/x-www-form-urlencoded`,
//!    `multipart/form-data` or `text/plain`, so a page in a browser on the
//!    host cannot post to the API.
//! 4. **Size**: a `Content-Length` above `[admin] max_body_bytes` gets 413
//!    before anything is read; a body without one is cut off at the same size
//!    (`DefaultBodyLimit`), so one request never buffers more.
//!
//! Every refusal is a JSON `{"error": "..."}` like the API's other errors.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api_error::ApiError;
use crate::config::Secret;
use crate::delivery::access::TokenSet;

/// The admin token, swapped by a reload; empty: no token required.
#[derive(Default)]
pub struct AdminAuth(ArcSwap<TokenSet>);

impl AdminAuth {
    pub fn new(token: Option<&Secret>) -> Self {
        let auth = AdminAuth::default();
        auth.set(token);
        auth
    }

    pub fn set(&self, token: Option<&Secret>) {
        let tokens: Vec<Secret> = token.into_iter().cloned().collect();
        self.0.store(Arc::new(TokenSet::new(&tokens)));
    }

    pub fn required(&self) -> bool {
        !self.0.load().is_empty()
    }
}

/// The settings the guard checks requests against.
pub struct Guard {
    pub auth: Arc<AdminAuth>,
    /// The admin API listens on a loopback address: check `Host`.
    pub loopback_only: bool,
    pub max_body_bytes: usize,
}

/// The middleware; see the module docs.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let method = request.method();
    if guard.loopback_only && !loopback_host(headers) {
        return ApiError::status(
            StatusCode::MISDIRECTED_REQUEST,
            "the admin API listens on a loopback address and answers only requests for a loopback host (localhost, 127.0.0.1, [::1])",
        )
        .into_response();
    }
    let open = matches!(*method, Method::GET | Method::HEAD)
        && matches!(request.uri().path(), "/api/v1/health" | "/metrics");
    if !open && guard.auth.required() && !authorized(&guard.auth, headers) {
        let mut response = ApiError::status(
            StatusCode::UNAUTHORIZED,
            "missing or invalid token: send \"Authorization: Bearer <token>\"",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"logdist\""),
        );
        return response;
    }
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) && !json_body(headers) {
        return ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON, sent with \"Content-Type: application/json\"",
        )
        .into_response();
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n > guard.max_body_bytes as u64) {
        return ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {} bytes (admin.max_body_bytes)",
                guard.max_body_bytes
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// `Authorization: Bearer <token>` with a valid token (scheme case-insensitive).
fn authorized(auth: &AdminAuth, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, token)) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|i| (&value[..i], value[i + 1..].trim_ascii()))
    else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer") && auth.0.load().contains(token)
}

/// `Content-Type: application/json`, with or without parameters.
fn json_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `Host` names a loopback host. A request without one (HTTP/1.0)
/// cannot come from a browser, and passes.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    is_loopback_host(host)
}

/// `localhost`, an address in 127.0.0.0/8, or `[::1]`, each with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || valid_port(after)) {
            return false;
        }
        return inside.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(&format!(":{port}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_ipv4() && ip.is_loopback())
}

/// `:` followed by a port number.
fn valid_port(text: &str) -> bool {
    text.strip_prefix(':')
        .is_some_and(|port| !port.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LocalHost:8082",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8082",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8082",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8082",
            "localhost.evil.example",
            "10.0.0.1:8082",
            "[::2]:8082",
            "[::1]x",
            "127.0.0.1:port",
            "::1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(!json_body(&headers));
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
            ("application/jsonx", false),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(json_body(&headers), ok, "{value}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let auth = AdminAuth::new(Some(&Secret::new("s3cret")));
        let mut headers = HeaderMap::new();
        assert!(!authorized(&auth, &headers));
        for (value, ok) in [
            ("Bearer s3cret", true),
            ("bearer s3cret", true),
            ("Bearer wrong", false),
            ("Basic s3cret", false),
            ("Bearer", false),
            ("s3cret", false),
        ] {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(authorized(&auth, &headers), ok, "{value}");
        }
        assert!(auth.required());
        auth.set(None);
        assert!(!auth.required());
    }
}
