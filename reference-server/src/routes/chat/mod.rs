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
use axum::response::{IntoResponse, Response};

use self::types::ChatCompletionRequest;
use super::openai::envelope::Envelope;
use super::openai::events::TextEvents;
use super::openai::sse;
use super::openai::text::TextPipeline;
use super::{SHUTTING_DOWN, Shared, unix_now};
use crate::error::ApiError;
use crate::request_id;

pub const CHAT_PATH: &str = "/v1/chat/completions";

pub(super) async fn chat_completions(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    validate::validate(&body, |m| state.config.serves(m))?;
    let limits = state.limits();
    let tokenizer = state.config.tokenizer.get();
    let prepared = convert::prepare(&body, tokenizer, limits)?;
    let request_id = format!(
        "chatcmpl-{}",
        request_id::resolve(&headers, body.request_id.as_deref())
    );
    let engine_request =
        convert::engine_request(&prepared, request_id::engine_id(&request_id), limits);
    let text = TextPipeline::new(tokenizer, &prepared.prompt, prepared.text)?;
    let events = TextEvents::new(
        state.metrics.meter(state.engine.submit(engine_request)),
        text,
    );
    let envelope = Envelope {
        id: request_id,
        created: unix_now(),
        model: state.model_name(body.model.as_deref()),
        enable_prompt_tokens_details: state.config.enable_prompt_tokens_details,
    };
    if body.stream {
        let chunks = stream::chunks(events, envelope, prepared.response, tokenizer);
        return Ok(sse::respond(chunks, state.cut_off.clone(), SHUTTING_DOWN));
    }
    let response = tokio::select! {
        response = stream::collect(events.with_failure_prefix("failed to collect chat completion response: "), envelope, prepared.response, tokenizer) => response?,
        () = state.cut_off.cancelled() => return Err(ApiError::server_error(SHUTTING_DOWN)),
    };
    Ok(Json(response).into_response())
}
