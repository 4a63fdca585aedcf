//! The flow both OpenAI handlers share once a request is checked and
//! converted: submit it to the engine, then answer with an SSE stream or one
//! collected body. What differs per route (id prefix, chunk shapes, the
//! collected body, the failure wording) comes in as arguments.

use std::future::Future;

use axum::Json;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use model::Tokenizer;
use serde::Serialize;

use super::envelope::Envelope;
use super::events::TextEvents;
use super::text::{TextOptions, TextPipeline};
use crate::error::ApiError;
use crate::request_id;
use crate::routes::sampling::SamplingParams;
use crate::routes::sse;
use crate::routes::{AppState, unix_now};

/// A checked request as the engine and the response side need it; `R` is the
/// route's own response options.
#[derive(Debug)]
pub struct Prepared<R> {
    pub prompt: Vec<u32>,
    /// The checked sampling fields: `max_tokens` before clamping to the
    /// context, `logprobs` the candidates per token asked of the engine
    /// (none: no logprobs).
    pub params: SamplingParams,
    pub text: TextOptions,
    pub response: R,
}

/// A submitted request: its events, the envelope its messages repeat, and
/// what the route needs to shape them.
pub struct Submitted<R> {
    pub events: TextEvents,
    pub envelope: Envelope,
    pub options: R,
    pub tokenizer: &'static Tokenizer,
}

/// Submits `prepared` under `request_id` (already carrying the route's
/// prefix: vllm-rs's `external_req_id`) and starts reading its text.
pub(in crate::routes) fn submit<R>(
    state: &AppState,
    request_id: String,
    model: Option<&str>,
    prepared: Prepared<R>,
) -> Result<Submitted<R>, ApiError> {
    let tokenizer = state.config.tokenizer.get();
    let engine_request = super::sampling::engine_request(
        &request_id::engine_id(&request_id),
        &request_id,
        prepared.prompt.clone(),
        &prepared.params,
        state.limits(),
    );
    let text = TextPipeline::new(tokenizer, &prepared.prompt, prepared.text)?;
    let events = TextEvents::new(
        state.metrics.meter(state.engine.submit(engine_request)),
        text,
        prepared.prompt.clone(),
    );
    Ok(Submitted {
        events,
        envelope: Envelope {
            id: request_id,
            created: unix_now(),
            model: state.model_name(model),
            enable_prompt_tokens_details: state.config.enable_prompt_tokens_details,
        },
        options: prepared.response,
        tokenizer,
    })
}

/// The answer: an SSE stream of the route's `chunks` when `stream`, else
/// its `collect`ed body, an engine failure there reported after
/// `failure_prefix` (vllm-rs names what it was collecting); a shutdown past
/// its grace ends either.
pub(in crate::routes) async fn respond<R, C, B, S, F>(
    state: &AppState,
    stream: bool,
    submitted: Submitted<R>,
    failure_prefix: &'static str,
    chunks: impl FnOnce(TextEvents, Envelope, R, &'static Tokenizer) -> S,
    collect: impl FnOnce(TextEvents, Envelope, R, &'static Tokenizer) -> F,
) -> Result<Response, ApiError>
where
    C: Serialize + Send + 'static,
    B: Serialize,
    S: Stream<Item = Result<C, ApiError>> + Send + 'static,
    F: Future<Output = Result<B, ApiError>>,
{
    let Submitted {
        events,
        envelope,
        options,
        tokenizer,
    } = submitted;
    if stream {
        let chunks = chunks(events, envelope, options, tokenizer);
        return Ok(sse::respond(chunks, state.cut_off.clone()));
    }
    let events = events.with_failure_prefix(failure_prefix);
    let response = state
        .unless_cut_off(collect(events, envelope, options, tokenizer))
        .await?;
    Ok(Json(response).into_response())
}
