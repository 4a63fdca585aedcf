//! The sampling fields both OpenAI requests carry at their top level, their
//! checks (the shared ones of [`crate::routes::sampling`], after the stop
//! strings), and what they become: the engine request and the text options.

use serde::Deserialize;

use super::text::TextOptions;
use crate::error::ApiError;
use crate::routes::engine_view::Asked;
use crate::routes::sampling::{
    EngineLimits, SamplingParams, VOCAB_SIZE, check_context_length, check_logprob_count,
    check_sampling, check_vocabulary,
};
use crate::routes::structured_outputs::{ResponseFormat, StructuredOutputs, resolve};

/// `stop`: one string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StopStrings {
    One(String),
    Many(Vec<String>),
}

impl StopStrings {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(list) => list.clone(),
        }
    }
}

/// The most stop strings a request may give (OpenAI's limit, kept by vllm-rs).
pub const MAX_STOP_STRINGS: usize = 4;

fn default_true() -> bool {
    true
}

/// Flattened into each route's request type.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenAiSampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub min_tokens: Option<u32>,
    pub stop: Option<StopStrings>,
    pub stop_token_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub include_stop_str_in_output: bool,
    #[serde(default)]
    pub ignore_eos: bool,
    #[serde(default = "default_true")]
    pub skip_special_tokens: bool,
}

impl OpenAiSampling {
    /// The stop strings, checked: at most 4, none empty. The messages are
    /// vllm-rs's (the `validator` crate's, which print the value as Rust's
    /// `Debug` shows a JSON value).
    pub fn stop_strings(&self) -> Result<Vec<String>, ApiError> {
        let Some(stop) = &self.stop else {
            return Ok(Vec::new());
        };
        let value = match stop {
            StopStrings::One(s) => serde_json::Value::from(s.as_str()),
            StopStrings::Many(list) => serde_json::Value::from(list.clone()),
        };
        let invalid = |why: &str| {
            ApiError::invalid_request(
                format!("stop: Validation error: {why} [{{\"value\": {value:?}}}]"),
                None,
            )
        };
        let list = stop.to_vec();
        if list.len() > MAX_STOP_STRINGS {
            return Err(invalid("stop strings must contain at most 4 items"));
        }
        if list.iter().any(String::is_empty) {
            return Err(invalid("stop strings cannot be empty"));
        }
        Ok(list)
    }

    /// These fields as the sampling parameters every endpoint checks (the
    /// route adds its structured outputs: [`constrained`]).
    pub fn params(&self, max_tokens: Option<u32>, logprobs: Option<i32>) -> SamplingParams {
        SamplingParams {
            max_tokens,
            min_tokens: self.min_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            // vllm-rs passes a positive top_k on; -1 (disabled) it leaves
            // at the engine's default, 0, which disables it too.
            top_k: self.top_k.and_then(|k| u32::try_from(k).ok()),
            min_p: self.min_p,
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            logprobs,
            prompt_logprobs: None,
            stop_token_ids: self.stop_token_ids.clone(),
            ignore_eos: Some(self.ignore_eos),
            structured_outputs: None,
        }
    }

    /// The checks of a prompt and its sampling fields, in vllm-rs 0.32.0's
    /// order (the same as generate's): vocabulary, logprobs, context
    /// length, the other ranges.
    pub fn check(
        &self,
        prompt: &[u32],
        max_tokens: Option<u32>,
        logprobs: Option<i32>,
        limits: EngineLimits,
    ) -> Result<(), ApiError> {
        check_vocabulary(prompt)?;
        check_logprob_count("logprobs", logprobs)?;
        check_context_length(prompt, limits)?;
        check_sampling(&self.params(max_tokens, logprobs), prompt.len(), limits)
    }

    pub fn text_options(&self, stop: Vec<String>) -> TextOptions {
        TextOptions {
            skip_special_tokens: self.skip_special_tokens,
            stop,
            include_stop_str_in_output: self.include_stop_str_in_output,
            min_tokens: self.min_tokens.unwrap_or(0),
        }
    }
}

/// `params` with the OpenAI routes' constraint on the output, checked:
/// `structured_outputs` as `response_format` leaves it. Both are read at
/// the top level of the request, not flattened with the sampling fields, so
/// that a parse error names its path as vllm-rs's does.
pub fn constrained(
    mut params: SamplingParams,
    structured_outputs: Option<&StructuredOutputs>,
    response_format: Option<&ResponseFormat>,
) -> Result<SamplingParams, ApiError> {
    params.structured_outputs = resolve(structured_outputs, response_format);
    if let Some(structured) = &params.structured_outputs {
        structured.check()?;
    }
    Ok(params)
}

/// What the engine is asked for a prompt, under the id the engine knows it
/// by and the one the client sees.
pub fn engine_request(
    engine_request_id: &str,
    external_req_id: &str,
    prompt: Vec<u32>,
    params: &SamplingParams,
    limits: EngineLimits,
) -> mock_engine::EngineRequest {
    let max_tokens = limits.max_tokens(prompt.len(), params.max_tokens);
    let view = Asked {
        engine_request_id,
        external_req_id,
        prompt: &prompt,
        params,
        max_tokens,
        cache_salt: None,
        priority: 0,
    }
    .view();
    let mut request = mock_engine::EngineRequest::new(engine_request_id, prompt);
    request.max_tokens = max_tokens;
    request.logprobs = params
        .logprobs
        .map(|k| if k < 0 { VOCAB_SIZE } else { k as u32 });
    request.prompt_logprobs = params.prompt_logprobs.map(i64::from);
    request.view = Some(view);
    request
}
