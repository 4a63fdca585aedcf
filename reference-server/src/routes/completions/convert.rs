//! A valid completions request becomes the prompt ids, the engine request
//! and what the response side needs to know.

use model::Tokenizer;

use super::types::{CompletionRequest, DEFAULT_MAX_TOKENS, Prompt};
use crate::error::ApiError;
use crate::routes::openai::run;
use crate::routes::openai::sampling::constrained;
use crate::routes::openai::usage::UsageOptions;
use crate::routes::sampling::EngineLimits;

/// What the response side needs to know of a request.
#[derive(Debug, Clone, Default)]
pub struct CompletionOptions {
    pub usage: UsageOptions,
    /// The prompt's text, to put before the output (`echo`).
    pub echo: Option<String>,
    /// `echo` was asked for, with or without a text to put first: vllm-rs
    /// then has the prompt's logprobs, so a request that generates no token
    /// still has logprobs to answer with.
    pub echo_asked: bool,
    /// `logprobs`: candidates per token besides the sampled one (-1: all).
    pub logprobs: Option<i32>,
    pub return_token_ids: bool,
}

/// The prompt's token ids: as sent, or the text encoded.
pub fn prompt_ids(
    request: &CompletionRequest,
    tokenizer: &Tokenizer,
) -> Result<Vec<u32>, ApiError> {
    match &request.prompt {
        Prompt::Ids(ids) => Ok(ids.clone()),
        Prompt::Text(text) => tokenizer
            .encode(text, request.add_special_tokens)
            .map_err(|e| ApiError::invalid_request(e.to_string(), Some("prompt"))),
    }
}

/// `prompt`: [`prompt_ids`], already found not to be empty.
pub fn prepare(
    request: &CompletionRequest,
    prompt: Vec<u32>,
    tokenizer: &Tokenizer,
    limits: EngineLimits,
) -> Result<run::Prepared<CompletionOptions>, ApiError> {
    let stop = request.sampling.stop_strings()?;
    let max_tokens = Some(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS));
    request
        .sampling
        .check(&prompt, max_tokens, request.logprobs, limits)?;
    let return_token_ids = request.return_token_ids.unwrap_or(false);
    let echo = match (&request.prompt, request.echo) {
        (_, false) => None,
        (Prompt::Text(text), true) => Some(text.clone()),
        // vllm-rs 0.32 echoes no text for a prompt of ids whose ids it
        // returns (Python echoes no text whenever it returns the ids).
        (Prompt::Ids(_), true) if return_token_ids => None,
        (Prompt::Ids(_), true) => Some(
            tokenizer
                .decode(&prompt, request.sampling.skip_special_tokens)
                .map_err(|e| ApiError::invalid_request(e.to_string(), Some("prompt")))?,
        ),
    };
    let mut params = constrained(
        request.sampling.params(max_tokens, request.logprobs),
        request.structured_outputs.as_ref(),
        request.response_format.as_ref(),
    )?;
    // vllm-rs 0.32 asks the engine for the prompt's logprobs, as many
    // candidates as for the output, to echo them in a collected answer
    // (not in a stream).
    if request.echo && !request.stream {
        params.prompt_logprobs = request.logprobs;
    }
    Ok(run::Prepared {
        params,
        text: request.sampling.text_options(stop),
        response: CompletionOptions {
            usage: UsageOptions::new(request.stream, request.stream_options)?,
            echo,
            echo_asked: request.echo,
            logprobs: request.logprobs,
            return_token_ids,
        },
        prompt,
    })
}
