//! `POST /v1/chat/completions`: messages in, rendered by the model"s chat
//! template, an assistant message out, streamed or not, as vllm-rs 0.32.0
//! serves it.
//!
//! Deliberate differences from vllm-rs: only text content parts are
//! accepted (the tiny model has no other modality), and there are no tools
//! or reasoning (the template has none), so `tool_calls` is always empty.

pub mod convert;
pub mod stream;
pub mod types;
pub mod validate;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::Response;

use self::types::ChatCompletionRequest;
use super::Shared;
use super::openai::run;
use crate::error::ApiError;
use crate::request_id;

pub(super) async fn chat_completions(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    validate::validate(&body, |m| state.config.serves(m))?;
    let prepared = convert::prepare(&body, state.config.tokenizer.get(), state.limits())?;
    let request_id = format!(
        "chatcmpl-{}",
        request_id::resolve(&headers, body.request_id.as_deref())
    );
    let submitted = run::submit(&state, request_id, body.model.as_deref(), prepared)?;
    run::respond(
        &state,
        body.stream,
        submitted,
        "failed to collect chat completion response: ",
        stream::chunks,
        stream::collect,
    )
    .await
}
