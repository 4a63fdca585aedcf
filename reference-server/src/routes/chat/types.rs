//! `/v1/chat/completions` on the wire: the request, the body, the stream
//! chunks, in vllm-rs's field order. Stream chunks omit what is null; the
//! body spells every field out.

use mock_engine::script::StopReason;
use serde::{Deserialize, Serialize};

use crate::routes::openai::sampling::OpenAiSampling;
use crate::routes::structured_outputs::{ResponseFormat, StructuredOutputs};
use crate::routes::usage::{StreamOptions, Usage};

/// The request. Unknown fields are accepted and ignored.
///
/// ```
/// use reference_server::routes::chat::types::ChatCompletionRequest;
/// let body = r#"{"messages": [{"role": "user", "content": "t10 t11"}], "top_logprobs": 2}"#;
/// let r: ChatCompletionRequest = serde_json::from_str(body).unwrap();
/// assert_eq!(r.messages.len(), 1);
/// assert_eq!(r.top_logprobs, Some(2));
/// ```
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub messages: Vec<ChatMessage>,
    pub model: Option<String>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<i32>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(default = "default_true")]
    pub add_generation_prompt: bool,
    #[serde(default)]
    pub add_special_tokens: bool,
    pub prompt_logprobs: Option<i32>,
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

/// One message: its role and its content (a string or text parts).
///
/// vllm-rs reads a message as an enum tagged by `role`, so serde buffers the
/// whole object before it reads a field: an error inside the message names
/// the message (`messages[0]`) and the position just after it. Reading the
/// message through a [`RawMessage`] object does the same.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawMessage")]
pub struct ChatMessage {
    /// Any role: vllm-rs hands unknown ones to the template too.
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    pub name: Option<String>,
}

/// A message as JSON, before its fields are read.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct RawMessage(serde_json::Map<String, serde_json::Value>);

/// The fields of a message, read from the buffered object.
#[derive(Deserialize)]
struct MessageFields {
    role: String,
    #[serde(default)]
    content: Option<MessageContent>,
    name: Option<String>,
}

impl TryFrom<RawMessage> for ChatMessage {
    /// serde_json's words without a position (serde adds the message's).
    type Error = serde_json::Error;

    fn try_from(RawMessage(object): RawMessage) -> Result<Self, Self::Error> {
        let MessageFields {
            role,
            content,
            name,
        } = serde_json::from_value(object.into())?;
        Ok(Self {
            role,
            content,
            name,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A content part; only text parts are supported by the tiny model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
}

impl MessageContent {
    /// The content as JSON, for error messages.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Text(text) => text.as_str().into(),
            Self::Parts(parts) => parts
                .iter()
                .map(|ContentPart::Text { text }| serde_json::json!({"type": "text", "text": text}))
                .collect(),
        }
    }

    /// The text a template sees: text parts put together with nothing
    /// between them, as vllm-rs does (vLLM Python joins them with `\n`).
    ///
    /// ```
    /// use reference_server::routes::chat::types::MessageContent;
    /// let parts: MessageContent =
    ///     serde_json::from_str(r#"[{"type": "text", "text": "t1"}, {"type": "text", "text": " t2"}]"#).unwrap();
    /// assert_eq!(parts.text(), "t1 t2");
    /// ```
    pub fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Parts(parts) => parts
                .iter()
                .map(|ContentPart::Text { text }| text.as_str())
                .collect(),
        }
    }
}

/// The non-streaming body.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatCompletionChoice>,
    pub usage: Option<Usage>,
    pub system_fingerprint: Option<String>,
    pub prompt_logprobs: Option<serde_json::Value>,
    pub prompt_token_ids: Option<Vec<u32>>,
    pub kv_transfer_params: Option<serde_json::Value>,
    pub ec_transfer_params: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChoice {
    pub index: u32,
    pub message: ChatCompletionMessage,
    pub logprobs: Option<ChatLogProbs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReason>,
    pub token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionMessage {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<serde_json::Value>,
    pub reasoning: Option<String>,
}

/// One `data:` event of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionStreamResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatCompletionStreamChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatCompletionStreamChoice {
    pub index: u32,
    pub delta: ChatMessageDelta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<ChatLogProbs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatMessageDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Chat logprobs: per token its text, logprob, UTF-8 bytes and candidates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatLogProbs {
    pub content: Option<Vec<ChatLogProbsContent>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatLogProbsContent {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogProb>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLogProb {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}
