//! Errors as vllm-rs puts them on the wire: `{"error": {message, type, param, code}}`
//! with an HTTP status before the stream starts, or as an in-band SSE event after.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
            message: message.into(),
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
            message: message.into(),
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
