//! Errors as vllm-rs puts them on the wire: `{"error": {message, type, param, code}}`
//! with an HTTP status before the stream starts, or as an in-band SSE event after.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What vllm-rs says when its engine core dies: the engine's own words never
/// reach the client, so neither do a script's.
pub const ENGINE_DEAD_MESSAGE: &str = "engine-core error: engine core reported fatal failure";

/// Longest error message sent. Messages echo the request (a model name, a serde
/// message quoting a string, ids): past this, the middle is cut out, keeping the
/// start and the end, where serde puts the line and column.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// `message`, its middle replaced by a note of how much was cut if it is too long.
///
/// ```
/// use reference_server::error::{MAX_ERROR_MESSAGE_BYTES, capped};
/// assert_eq!(capped("short".into()), "short");
/// let long = format!("The model `{}` does not exist.", "m".repeat(20_000));
/// let cut = capped(long);
/// assert!(cut.len() <= MAX_ERROR_MESSAGE_BYTES);
/// assert!(cut.starts_with("The model `mmm") && cut.ends_with("mmm` does not exist."));
/// assert!(cut.contains(" bytes elided] "));
/// ```
pub fn capped(message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let head = floor_char_boundary(&message, MAX_ERROR_MESSAGE_BYTES / 2);
    // Room for the note, whose digits vary; 48 bytes is more than enough.
    let tail_len = MAX_ERROR_MESSAGE_BYTES - head - 48;
    let mut tail = message.len() - tail_len;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} [… {} bytes elided] {}",
        &message[..head],
        tail - head,
        &message[tail..]
    )
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// One error the API reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: &'static str,
}

/// The body of an error response and of an in-band stream error event.
#[derive(Debug, Serialize)]
pub struct ErrorResponse<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: &'a str,
}

impl ApiError {
    /// A 400 about the request's content, naming the field at fault when vllm-rs does.
    pub fn invalid_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: capped(message.into()),
            kind: "invalid_request_error",
            param,
            code: "invalid_request_error",
        }
    }

    /// A body that is not the JSON we want (or too large, or the wrong content type).
    pub fn json_parse(message: impl Into<String>) -> Self {
        Self {
            code: "json_parse_error",
            ..Self::invalid_request(message, None)
        }
    }

    /// A body over `--max-body-bytes`: vllm-rs's words, but 413 where it says 400.
    pub fn payload_too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::json_parse("Failed to buffer the request body: length limit exceeded")
        }
    }

    /// A body that did not arrive within `--body-read-timeout`.
    pub fn body_timeout(limit: Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "request_timeout",
            ..Self::invalid_request(
                format!(
                    "Failed to buffer the request body: not received within {} s",
                    limit.as_secs_f64()
                ),
                None,
            )
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "model_not_found",
            ..Self::invalid_request(
                format!("The model `{model}` does not exist."),
                Some("model"),
            )
        }
    }

    pub fn server_error(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: capped(message.into()),
            kind: "server_error",
            param: None,
            code: "server_error",
        }
    }

    pub fn body(&self) -> ErrorResponse<'_> {
        ErrorResponse {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        }
    }
}

impl From<JsonRejection> for ApiError {
    /// vllm-rs passes axum's own rejection text through, so we do too: it names the
    /// field, the line and the column.
    fn from(rejection: JsonRejection) -> Self {
        Self::json_parse(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// What the API-key check answers: not the usual error shape, a bare string.
#[derive(Debug, Clone, Copy)]
pub struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "Unauthorized" })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_vllm_key_order() {
        let e = ApiError::model_not_found("x");
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap(),
            r#"{"error":{"message":"The model `x` does not exist.","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#
        );
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
