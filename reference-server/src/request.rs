//! The request body of `POST /inference/v1/generate` and its validation.
//!
//! Type names matter here: serde puts them in its messages
//! ("expected struct GenerateRequest"), which reach the client verbatim, as in vllm-rs.
//! The `flatten`ed maps matter too: they make serde refuse a JSON array where a
//! struct is expected, and buffer sampling parameters before typing them, as vllm-rs does.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Largest `logprobs` / `prompt_logprobs` vllm-rs accepts by default (`--max-logprobs`).
pub const MAX_LOGPROBS: i64 = 20;

/// Vocabulary size of the test model (`t0..t4095`, `<unk>`, `<s>`, `</s>`): prompt ids
/// at or above it are refused, and `-1` logprobs means this many.
pub const VOCAB_SIZE: u32 = 4099;

#[derive(Debug, Clone, Deserialize)]
pub struct GenerateRequest {
    pub request_id: Option<String>,
    pub model: Option<String>,
    pub token_ids: Vec<u32>,
    pub sampling_params: GenerateSamplingParams,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub cache_salt: Option<String>,
    #[serde(default)]
    pub priority: i32,
    pub kv_transfer_params: Option<HashMap<String, Value>>,
    pub ec_transfer_params: Option<HashMap<String, Value>>,
    pub return_token_ids: Option<bool>,
    /// Unknown fields are accepted and ignored.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `sampling_params`: `n` (only 1 is allowed) beside the parameters the engine takes.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerateSamplingParams {
    pub n: Option<u32>,
    #[serde(flatten)]
    pub inner: SamplingParams,
}

/// The sampling parameters we type; the engine only acts on the token budget and
/// the logprob counts, the others are checked for type and then ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingParams {
    pub max_tokens: Option<u32>,
    pub min_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logprobs: Option<i32>,
    pub prompt_logprobs: Option<i32>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
    pub continuous_usage_stats: Option<bool>,
}

/// What the response side needs to know of a valid request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    pub stream: bool,
    pub include_usage: bool,
    /// Usage on every chunk: only with `include_usage` as well.
    pub continuous_usage: bool,
    /// `sampling_params.logprobs`: candidates per generated token (-1: all).
    pub logprobs: Option<i32>,
    pub include_prompt_logprobs: bool,
    pub return_token_ids: bool,
}

/// Limits that come from the engine rather than the request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_model_len: u32,
}

impl Limits {
    /// The output budget vllm-rs gives a request: its `max_tokens` clamped to
    /// the room its prompt leaves in the context, or that room when absent.
    /// `None` leaves the request's own value alone: the prompt does not fit,
    /// and the context-length check answers that.
    pub fn max_tokens(&self, prompt_len: usize, requested: Option<u32>) -> Option<u32> {
        let room = u32::try_from(prompt_len)
            .ok()
            .and_then(|prompt| self.max_model_len.checked_sub(prompt))
            .filter(|&room| room > 0);
        match (room, requested) {
            (Some(room), Some(max)) => Some(max.min(room)),
            (Some(room), None) => Some(room),
            (None, requested) => requested,
        }
    }
}

impl GenerateRequest {
    /// Checks the request in vllm-rs's order; the first failure wins.
    pub fn validate(&self, served: impl Fn(&str) -> bool, limits: Limits) -> Result<(), ApiError> {
        if let Some(model) = &self.model
            && !served(model)
        {
            return Err(ApiError::model_not_found(model));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(ApiError::invalid_request(
                "stream_options are only supported when stream=true.",
                Some("stream_options"),
            ));
        }
        if self.sampling_params.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid_request(
                "Only n=1 is supported.",
                Some("n"),
            ));
        }
        if self.token_ids.is_empty() {
            return Err(ApiError::invalid_request(
                "token_ids must contain at least one token ID.",
                Some("token_ids"),
            ));
        }
        let params = &self.sampling_params.inner;
        if params.max_tokens == Some(0) {
            return Err(ApiError::invalid_request(
                "max_tokens must be greater than 0.",
                Some("sampling_params"),
            ));
        }
        if let Some(k) = params.prompt_logprobs {
            if k < -1 {
                return Err(ApiError::invalid_request(
                    "`prompt_logprobs` must be a non-negative value or -1.",
                    Some("sampling_params"),
                ));
            }
            if self.stream {
                return Err(ApiError::invalid_request(
                    "`prompt_logprobs` are not available when `stream=true`.",
                    Some("sampling_params"),
                ));
            }
        }
        if let Some(k) = params.logprobs
            && k < -1
        {
            return Err(ApiError::invalid_request(
                format!("logprobs must be non-negative or -1, got {k}"),
                None,
            ));
        }
        check_logprob_count("logprobs", params.logprobs)?;
        check_logprob_count("prompt_logprobs", params.prompt_logprobs)?;
        if let Some(t) = params.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ApiError::invalid_request(
                format!("temperature must be in [0, 2], got {t}"),
                None,
            ));
        }
        if let Some(p) = params.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ApiError::invalid_request(
                format!("top_p must be in (0, 1], got {p}"),
                None,
            ));
        }
        if let Some(min) = params.min_tokens
            && let Some(max) = limits.max_tokens(self.token_ids.len(), params.max_tokens)
            && min > max
        {
            return Err(ApiError::invalid_request(
                format!(
                    "`min_tokens` must be less than or equal to `max_tokens`, got min_tokens={min}, max_tokens={max}"
                ),
                None,
            ));
        }
        let out_of_vocab: Vec<u32> = self
            .token_ids
            .iter()
            .copied()
            .filter(|&t| t >= VOCAB_SIZE)
            .collect();
        if !out_of_vocab.is_empty() {
            return Err(ApiError::invalid_request(
                format!(
                    "token_id(s) {out_of_vocab:?} in prompt are out of vocabulary. Vocabulary size: {VOCAB_SIZE}"
                ),
                None,
            ));
        }
        if self.token_ids.len() >= limits.max_model_len as usize {
            return Err(ApiError::invalid_request(
                format!(
                    "this model's maximum context length is {} tokens, but the prompt contains {} input tokens",
                    limits.max_model_len,
                    self.token_ids.len()
                ),
                None,
            ));
        }
        Ok(())
    }

    pub fn response_options(&self) -> ResponseOptions {
        let stream_options = self.stream_options.unwrap_or_default();
        let include_usage = stream_options.include_usage.unwrap_or(false);
        let params = &self.sampling_params.inner;
        ResponseOptions {
            stream: self.stream,
            include_usage,
            continuous_usage: include_usage
                && stream_options.continuous_usage_stats.unwrap_or(false),
            logprobs: params.logprobs,
            include_prompt_logprobs: params.prompt_logprobs.is_some(),
            return_token_ids: self.return_token_ids.unwrap_or(false),
        }
    }

    /// What the engine is asked, under the id the engine knows the request by.
    pub fn engine_request(
        &self,
        engine_request_id: String,
        limits: Limits,
    ) -> mock_engine::EngineRequest {
        let params = &self.sampling_params.inner;
        let mut request =
            mock_engine::EngineRequest::new(engine_request_id, self.token_ids.clone());
        request.max_tokens = limits.max_tokens(self.token_ids.len(), params.max_tokens);
        request.logprobs = params.logprobs.map(|k| resolve_count(k) as u32);
        request.prompt_logprobs = params.prompt_logprobs.map(i64::from);
        request
    }
}

/// `-1` asks for the whole vocabulary.
fn resolve_count(k: i32) -> i64 {
    if k == -1 {
        i64::from(VOCAB_SIZE)
    } else {
        i64::from(k)
    }
}

fn check_logprob_count(name: &str, requested: Option<i32>) -> Result<(), ApiError> {
    match requested.map(resolve_count) {
        Some(k) if k > MAX_LOGPROBS => Err(ApiError::invalid_request(
            format!("requested {name} of {k}, which is greater than max allowed: {MAX_LOGPROBS}"),
            None,
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> GenerateRequest {
        serde_json::from_str(body).unwrap()
    }

    const LIMITS: Limits = Limits {
        max_model_len: 2048,
    };

    #[test]
    fn a_json_array_is_not_a_request() {
        let err = serde_json::from_str::<GenerateRequest>("[1]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid type: sequence, expected struct GenerateRequest at line 1 column 0"
        );
    }

    #[test]
    fn model_is_checked_before_everything_else() {
        let r =
            parse(r#"{"token_ids":[],"sampling_params":{"n":2},"model":"x","stream_options":{}}"#);
        let e = r.validate(|m| m == "tiny", LIMITS).unwrap_err();
        assert_eq!(e.code, "model_not_found");
    }

    #[test]
    fn max_tokens_is_clamped_to_the_room_the_prompt_leaves() {
        let r = parse(r#"{"token_ids":[1,2,3],"sampling_params":{"max_tokens":4294967295}}"#);
        r.validate(|_| true, LIMITS).unwrap();
        assert_eq!(r.engine_request("e".into(), LIMITS).max_tokens, Some(2045));
        let r = parse(r#"{"token_ids":[1,2,3],"sampling_params":{}}"#);
        assert_eq!(r.engine_request("e".into(), LIMITS).max_tokens, Some(2045));
        let r = parse(r#"{"token_ids":[1,2,3],"sampling_params":{"max_tokens":7}}"#);
        assert_eq!(r.engine_request("e".into(), LIMITS).max_tokens, Some(7));
    }

    #[test]
    fn min_tokens_is_checked_against_the_clamped_max_tokens() {
        let r = parse(r#"{"token_ids":[1,2,3],"sampling_params":{"min_tokens":3000}}"#);
        let e = r.validate(|_| true, LIMITS).unwrap_err();
        assert_eq!(
            e.message,
            "`min_tokens` must be less than or equal to `max_tokens`, got min_tokens=3000, max_tokens=2045"
        );
    }

    #[test]
    fn continuous_usage_needs_include_usage() {
        let r = parse(
            r#"{"token_ids":[1],"sampling_params":{},"stream":true,"stream_options":{"continuous_usage_stats":true}}"#,
        );
        let o = r.response_options();
        assert!(!o.include_usage && !o.continuous_usage);
    }
}
