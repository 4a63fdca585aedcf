//! A valid chat request becomes the rendered prompt, the engine request and
//! what the response side needs to know.

use model::Tokenizer;
use serde_json::{Value, json};

use super::types::ChatCompletionRequest;
use crate::error::ApiError;
use crate::routes::openai::run;
use crate::routes::openai::sampling::constrained;
use crate::routes::openai::usage::UsageOptions;
use crate::routes::sampling::EngineLimits;

/// What the response side needs to know of a request.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    pub usage: UsageOptions,
    /// `top_logprobs` when `logprobs` is true (0 when absent).
    pub top_logprobs: Option<i32>,
    pub return_token_ids: bool,
}

/// The messages as the chat template sees them: `{role, content}` with
/// content as one string.
pub fn template_messages(request: &ChatCompletionRequest) -> Value {
    Value::Array(
        request
            .messages
            .iter()
            .map(|m| {
                json!({
                    "role": m.role,
                    "content": m.content.as_ref().map(|c| c.text()).unwrap_or_default(),
                })
            })
            .collect(),
    )
}

pub fn prepare(
    request: &ChatCompletionRequest,
    tokenizer: &Tokenizer,
    limits: EngineLimits,
) -> Result<run::Prepared<ChatOptions>, ApiError> {
    let rendered = tokenizer
        .render_chat(&template_messages(request), request.add_generation_prompt)
        .map_err(|e| ApiError::invalid_request(e.to_string(), Some("messages")))?;
    let prompt = tokenizer
        .encode(&rendered, request.add_special_tokens)
        .map_err(|e| ApiError::invalid_request(e.to_string(), Some("messages")))?;
    let stop = request.sampling.stop_strings()?;
    // `max_completion_tokens` is the newer name; it wins when both are given.
    // (`validate` has turned 0 away.)
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    let top_logprobs = request.logprobs.then(|| request.top_logprobs.unwrap_or(0));
    request
        .sampling
        .check(&prompt, max_tokens, top_logprobs, limits)?;
    let params = constrained(
        request.sampling.params(max_tokens, top_logprobs),
        request.structured_outputs.as_ref(),
        request.response_format.as_ref(),
    )?;
    Ok(run::Prepared {
        params,
        text: request.sampling.text_options(stop),
        response: ChatOptions {
            usage: UsageOptions::new(request.stream, request.stream_options)?,
            top_logprobs,
            return_token_ids: request.return_token_ids.unwrap_or(false),
        },
        prompt,
    })
}
