//! One engine step: what the engine emits after a delay (tokens, why the
//! request finishes, logprobs), and how far apart steps must be for every
//! server to send one chunk per step.
//!
//! Both a fixture's script and the default generator are lists of steps, so
//! the type lives here, below both: the generator makes steps without
//! knowing the fixture format, and the format names the generator without
//! the generator naming it back.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Steps at least this far apart are "paced": every server sends one chunk per
/// step, so chunk boundaries are comparable between servers.
pub const PACED_MIN_DELAY_MS: u64 = 20;

/// One engine step: what the engine emits after `delay_ms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Pause before this step, measured from the previous step's deadline
    /// (not from when it was actually sent), so lateness does not accumulate.
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub tokens: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u32>,
    /// `false`: this step does not carry the prompt; it arrives with the next
    /// step that does not say `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_info: Option<bool>,
    /// One entry list per token in `tokens`: the sampled token first, then the
    /// top candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Vec<LogprobEntry>>>,
    /// Only on the step that carries the prompt (the first one without
    /// `prompt_info: false`): one entry list per prompt position after the
    /// first, the actual prompt token first, then the top candidates. Sent
    /// instead of synthetic ones when the request asks for prompt logprobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<Vec<Vec<LogprobEntry>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_params: Option<Value>,
    /// The engine stream breaks here with this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<String>,
    /// The engine never answers again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stall: bool,
}

/// Why a request finished, as vLLM's engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Stop,
    Length,
    Abort,
    Error,
    Repetition,
}

impl FinishReason {
    /// The string both servers put in `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
            Self::Error => "error",
            Self::Repetition => "repetition",
        }
    }

    /// The integer vLLM's engine core puts on the wire.
    pub fn wire_code(self) -> u8 {
        match self {
            Self::Stop => 0,
            Self::Length => 1,
            Self::Abort => 2,
            Self::Error => 3,
            Self::Repetition => 4,
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// vLLM's `stop_reason`: the stop token id or the matched stop string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopReason {
    Token(i64),
    Text(String),
}

/// One logprob candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogprobEntry {
    pub token_id: u32,
    pub logprob: f32,
    pub rank: u32,
}
