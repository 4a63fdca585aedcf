//! Response messages, field for field and in vllm-rs's key order.
//!
//! Stream chunks omit what is null; the non-streaming body spells every field out,
//! `null` included.

use mock_engine::script::StopReason;
use serde::Serialize;
use serde_json::Value;

use crate::routes::generate::logprobs::{GenerateLogProbs, PromptLogprobs};
use crate::routes::generate::weight_versions::WeightVersionSpan;

/// The non-streaming body.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateResponse {
    pub request_id: String,
    pub choices: Vec<GenerateResponseChoice>,
    pub prompt_logprobs: Option<PromptLogprobs>,
    /// Always null: we have no per-token-id prompt scoring.
    pub prompt_token_id_logprobs: Option<Value>,
    pub prompt_token_ids: Option<Vec<u32>>,
    pub mm_placeholders: Option<Value>,
    pub kv_transfer_params: Option<Value>,
    pub ec_transfer_params: Option<Value>,
    pub metrics: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateResponseChoice {
    pub index: u32,
    pub logprobs: Option<GenerateLogProbs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReason>,
    pub token_ids: Vec<u32>,
    pub sampling_mask: Option<Value>,
    /// Spans over `token_ids` (see [`crate::routes::generate::weight_versions`]).
    pub weight_versions: Option<Vec<WeightVersionSpan>>,
}

/// One `data:` event of a stream (a token chunk or the usage-only event).
#[derive(Debug, Clone, Serialize)]
pub struct GenerateStreamResponse {
    pub request_id: String,
    pub choices: Vec<GenerateResponseStreamChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateResponseStreamChoice {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<GenerateLogProbs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    pub token_ids: Vec<u32>,
    /// On the finish chunk only, over every output token of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_versions: Option<Vec<WeightVersionSpan>>,
}

/// What vllm-rs says when its engine core dies: the engine's own words never
/// reach the client, so neither do a script's.
pub const ENGINE_DEAD_MESSAGE: &str = "engine-core error: engine core reported fatal failure";

/// Token counts; vllm-rs writes the details objects even when they say nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    pub completion_tokens_details: CompletionTokensDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompletionTokensDetails {
    pub reasoning_tokens: usize,
}

/// Running counts over one request's engine outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageCounter {
    /// Unknown until an output carries the prompt; counted as 0 until then.
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: usize,
    pub cached_tokens: u32,
}

impl UsageCounter {
    /// `cached_tokens` are reported only with `--enable-prompt-tokens-details`
    /// and only when the engine reported some.
    pub fn usage(&self, enable_prompt_tokens_details: bool) -> Usage {
        let prompt_tokens = self.prompt_tokens.unwrap_or(0);
        Usage {
            prompt_tokens,
            total_tokens: prompt_tokens + self.completion_tokens,
            completion_tokens: self.completion_tokens,
            prompt_tokens_details: (enable_prompt_tokens_details && self.cached_tokens > 0)
                .then_some(PromptTokensDetails {
                    cached_tokens: self.cached_tokens,
                }),
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_chunk_omits_nulls_in_vllm_order() {
        let chunk = GenerateStreamResponse {
            request_id: "a".into(),
            choices: vec![GenerateResponseStreamChoice {
                index: 0,
                logprobs: None,
                finish_reason: Some("stop"),
                stop_reason: Some(StopReason::Token(44)),
                token_ids: vec![44],
                weight_versions: None,
            }],
            usage: None,
            prompt_token_ids: None,
        };
        assert_eq!(
            serde_json::to_string(&chunk).unwrap(),
            r#"{"request_id":"a","choices":[{"index":0,"finish_reason":"stop","stop_reason":44,"token_ids":[44]}]}"#
        );
    }

    #[test]
    fn cached_tokens_need_the_flag_and_a_count() {
        let counter = UsageCounter {
            prompt_tokens: Some(3),
            completion_tokens: 2,
            cached_tokens: 2,
        };
        assert_eq!(
            serde_json::to_string(&counter.usage(true)).unwrap(),
            r#"{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":0}}"#
        );
        assert_eq!(counter.usage(false).prompt_tokens_details, None);
        let uncached = UsageCounter {
            cached_tokens: 0,
            ..counter
        };
        assert_eq!(uncached.usage(true).prompt_tokens_details, None);
    }
}
