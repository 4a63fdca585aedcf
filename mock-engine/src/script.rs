//! The fixture format: one request, the engine steps that answer it, and the
//! server options it needs.
//!
//! ```
//! use mock_engine::script::Fixture;
//!
//! let fixture: Fixture = serde_json::from_str(r#"{
//!     "name": "two_tokens",
//!     "request": { "body": { "token_ids": [1, 2], "sampling_params": {}, "stream": true } },
//!     "engine": { "steps": [
//!         { "delay_ms": 20, "tokens": [33] },
//!         { "delay_ms": 20, "tokens": [44], "finish": "stop" }
//!     ] }
//! }"#).unwrap();
//! assert_eq!(fixture.prompt_token_ids(), Some(vec![1, 2]));
//! assert!(fixture.engine.is_paced());
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Steps at least this far apart are "paced": every server sends one chunk per
/// step, so chunk boundaries are comparable between servers.
pub const PACED_MIN_DELAY_MS: u64 = 20;

/// One conformance case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub server: ServerOptions,
    pub request: RequestSpec,
    #[serde(default)]
    pub engine: Script,
    /// Why this case cannot run against a real vLLM frontend, if it cannot
    /// (for example: it scripts something only the in-process engine can do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_process_only: Option<String>,
}

impl Fixture {
    /// The prompt the engine will see, when the body carries a well-formed one.
    /// Scripts are keyed on it because both real frontends rewrite request ids.
    pub fn prompt_token_ids(&self) -> Option<Vec<u32>> {
        if self.request.raw_body.is_some() {
            return None;
        }
        let ids = self.request.body.as_ref()?.get("token_ids")?.as_array()?;
        ids.iter()
            .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    }

    /// Whether every server must send one chunk per engine step, so chunk
    /// boundaries can be compared: the steps are paced, and there is one
    /// choice (with `n` > 1 a server interleaves and may merge the choices'
    /// chunks in any order).
    pub fn chunks_comparable(&self) -> bool {
        let n = self
            .request
            .body
            .as_ref()
            .and_then(|b| b.get("sampling_params"))
            .and_then(|p| p.get("n"))
            .and_then(Value::as_u64)
            .unwrap_or(1);
        (self.engine.is_paced() || self.engine.steps.is_empty()) && n <= 1
    }

    /// The reason this fixture cannot run against a real frontend: declared, or
    /// implied by a step only the in-process engine can produce.
    pub fn in_process_reason(&self) -> Option<String> {
        if let Some(reason) = &self.in_process_only {
            return Some(reason.clone());
        }
        if self
            .engine
            .steps
            .iter()
            .any(|s| s.prompt_info == Some(false))
        {
            return Some(
                "late prompt info: a real frontend learns the prompt from its own request, \
                 not from the engine"
                    .to_string(),
            );
        }
        None
    }
}

/// Options of the server under test that change its observable behaviour.
/// Fixtures with different options run against different server instances.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerOptions {
    #[serde(default = "default_model_name")]
    pub served_model_name: String,
    #[serde(default)]
    pub enable_prompt_tokens_details: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

pub const DEFAULT_MODEL_NAME: &str = "tiny";

fn default_model_name() -> String {
    DEFAULT_MODEL_NAME.to_string()
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            served_model_name: default_model_name(),
            enable_prompt_tokens_details: false,
            api_key: None,
        }
    }
}

/// The HTTP request a fixture sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Any JSON value, so that invalid requests are cases too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Sent byte for byte instead of `body` (malformed JSON cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<String>,
    /// Overrides `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

pub const GENERATE_PATH: &str = "/inference/v1/generate";

fn default_method() -> String {
    "POST".to_string()
}

fn default_path() -> String {
    GENERATE_PATH.to_string()
}

impl RequestSpec {
    /// The bytes of the body as they go on the wire.
    pub fn body_bytes(&self) -> Vec<u8> {
        match (&self.raw_body, &self.body) {
            (Some(raw), _) => raw.clone().into_bytes(),
            (None, Some(body)) => serde_json::to_vec(body).expect("a JSON value serialises"),
            (None, None) => Vec::new(),
        }
    }

    pub fn content_type(&self) -> &str {
        self.content_type.as_deref().unwrap_or("application/json")
    }

    /// Whether the request asks for a stream (`"stream": true` in a JSON body).
    pub fn is_stream(&self) -> bool {
        self.raw_body.is_none()
            && self
                .body
                .as_ref()
                .and_then(|b| b.get("stream"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
    }
}

/// The engine steps for one request, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Overrides the pacing derived from the delays (see [`Script::is_paced`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced: Option<bool>,
}

impl Script {
    /// Whether every step waits long enough that no server coalesces two
    /// steps into one chunk.
    pub fn is_paced(&self) -> bool {
        self.paced.unwrap_or_else(|| {
            !self.steps.is_empty() && self.steps.iter().all(|s| s.delay_ms >= PACED_MIN_DELAY_MS)
        })
    }
}

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
