//! `/v1/completions` on the wire: the request, the body, the stream chunks,
//! in vllm-rs's field order. Stream chunks omit what is null; the body spells
//! every field out.

use mock_engine::script::StopReason;
use serde::{Deserialize, Serialize};

use crate::routes::openai::sampling::OpenAiSampling;
use crate::routes::structured_outputs::{ResponseFormat, StructuredOutputs};
use crate::routes::usage::{StreamOptions, Usage};

/// `max_tokens` when the request has none (or `null`), as in vLLM and OpenAI.
pub const DEFAULT_MAX_TOKENS: u32 = 16;

/// The request. Unknown fields are accepted and ignored.
///
/// ```
/// use reference_server::routes::completions::types::{CompletionRequest, Prompt};
/// let r: CompletionRequest = serde_json::from_str(r#"{"prompt": [5, 7], "stop": "t9"}"#).unwrap();
/// assert_eq!(r.prompt, Prompt::Ids(vec![5, 7]));
/// assert_eq!(r.sampling.stop_strings().unwrap(), ["t9"]);
/// ```
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default)]
    pub echo: bool,
    pub logprobs: Option<i32>,
    pub max_tokens: Option<u32>,
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub suffix: Option<String>,
    #[serde(default)]
    pub use_beam_search: bool,
    pub prompt_logprobs: Option<i32>,
    #[serde(default = "default_true")]
    pub add_special_tokens: bool,
    pub request_id: Option<String>,
    pub return_token_ids: Option<bool>,
    pub structured_outputs: Option<StructuredOutputs>,
    pub response_format: Option<ResponseFormat>,
    #[serde(flatten)]
    pub sampling: OpenAiSampling,
}

fn default_true() -> bool {
    true
}

/// `prompt`: one text or one list of ids. (A batch fails to parse, as in vllm-rs.)
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// The non-streaming body.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Option<Usage>,
    pub system_fingerprint: Option<String>,
    pub kv_transfer_params: Option<serde_json::Value>,
    pub ec_transfer_params: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<CompletionLogProbs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReason>,
    pub prompt_logprobs: Option<serde_json::Value>,
    pub token_ids: Option<Vec<u32>>,
    pub prompt_token_ids: Option<Vec<u32>>,
}

/// One `data:` event of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionStreamResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionStreamChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CompletionStreamChoice {
    pub index: u32,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<CompletionLogProbs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
}

/// The legacy completions logprobs: parallel lists, one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionLogProbs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    /// Candidates by their text, in rank order.
    pub top_logprobs: Vec<Option<serde_json::Map<String, serde_json::Value>>>,
    pub text_offset: Vec<u32>,
}
