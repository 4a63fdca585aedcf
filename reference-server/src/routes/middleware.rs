//! What runs before a protected route's handler: the API key check, then
//! reading the whole body within its size and time limits.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::Shared;
use crate::error::{ApiError, Unauthorized};

/// `--api-key`: `Authorization: Bearer <key>`, scheme case-insensitive, like vllm-rs.
pub(super) async fn require_api_key(
    State(state): Shared,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        if given != Some(key.as_str()) {
            return Unauthorized.into_response();
        }
    }
    next.run(request).await
}

/// Reads the whole request body before the handler sees it, within
/// `max_body_bytes` (413 beyond, refused unread when `Content-Length` says so)
/// and `body_read_timeout` (408: a stalled or dripping body cannot hold a
/// connection). The handlers then parse bytes that are already here.
pub(super) async fn read_body(State(state): Shared, request: Request, next: Next) -> Response {
    let config = &state.config;
    let too_large = || ApiError::payload_too_large().into_response();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, config.max_body_bytes);
    let bytes = match tokio::time::timeout(config.body_read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return ApiError::json_parse(format!("Failed to buffer the request body: {e}"))
                .into_response();
        }
        Err(_) => return ApiError::body_timeout(config.body_read_timeout).into_response(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
