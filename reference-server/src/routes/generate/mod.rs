//! `POST /inference/v1/generate`: token ids in, token ids out, streamed or
//! not, as vllm-rs 0.32.0 serves it. No tokenizer is involved: the prompt
//! is ids, and so is the answer, with integer-keyed logprobs
//! ([`logprobs`]) and the weight versions that sampled each token
//! ([`weight_versions`]).

pub mod collect;
pub mod convert;
pub mod logprobs;
pub mod stream;
pub mod types;
pub mod validate;
pub mod weight_versions;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use self::stream::ChunkStream;
use self::types::GenerateRequest;
use super::{Shared, sse};
use crate::error::ApiError;
use crate::request_id;

pub(super) async fn generate(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Json<GenerateRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let limits = state.limits();
    validate::validate(&body, |m| state.config.serves(m), limits)?;
    let request_id = request_id::resolve(&headers, body.request_id.as_deref());
    let options = convert::options(&body);
    let engine_request = convert::engine_request(
        &body,
        request_id::engine_id(&request_id),
        &request_id,
        limits,
    );
    let events = state.metrics.meter(state.engine.submit(engine_request));
    if options.stream {
        let chunks = ChunkStream::new(
            events,
            request_id,
            options,
            state.config.enable_prompt_tokens_details,
        );
        return Ok(sse::respond(chunks.into_chunks(), state.cut_off.clone()));
    }
    let response = state
        .unless_cut_off(collect::generate_response(
            events,
            request_id,
            &body.token_ids,
            options,
        ))
        .await?;
    Ok(Json(response).into_response())
}
