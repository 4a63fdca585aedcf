//! `POST /v1/completions`: a prompt (ids or text) in, text out, streamed or
//! not, as vllm-rs 0.32.0 serves it.
//!
//! Deliberate difference from vllm-rs: `echo` with `logprobs` lists the
//! generated tokens only (vllm-rs puts the prompt's tokens and prompt logprobs
//! first); the mock engine's synthetic prompt logprobs are not worth copying.

pub mod convert;
pub mod stream;
pub mod types;
pub mod validate;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::Response;

use self::types::{CompletionRequest, Prompt};
use super::Shared;
use super::openai::run;
use crate::error::ApiError;
use crate::request_id;

pub(super) async fn completions(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Json<CompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    validate::validate(&body, |m| state.config.serves(m))?;
    let tokenizer = state.config.tokenizer.get();
    let prompt = convert::prompt_ids(&body, tokenizer)?;
    let request_id = format!(
        "cmpl-{}",
        request_id::resolve(&headers, body.request_id.as_deref())
    );
    // vllm-rs refuses an empty prompt of ids before it checks the sampling
    // fields against the engine's limits (logprobs over 20, say), and an
    // empty text after them.
    let ids = matches!(body.prompt, Prompt::Ids(_));
    if ids && prompt.is_empty() {
        return Err(validate::empty_prompt(&body.prompt, &request_id));
    }
    let prepared = convert::prepare(&body, prompt, tokenizer, state.limits())?;
    if prepared.prompt.is_empty() {
        return Err(validate::empty_prompt(&body.prompt, &request_id));
    }
    let submitted = run::submit(&state, request_id, body.model.as_deref(), prepared)?;
    run::respond(
        &state,
        body.stream,
        submitted,
        "completion stream failed: ",
        stream::chunks,
        stream::collect,
    )
    .await
}
