//! `/v1/completions`: a prompt as ids or text, text out. The sampling
//! knobs sit at the top of the body; `logprobs` is a number; `echo` puts
//! the prompt before the answer; the prompt ids come on the choice.

use mock_engine::script::{Endpoint, RequestSpec};
use proptest::strategy::BoxedStrategy;
use serde_json::{Map, Value, json};

use super::openai::{self, Rules};
use super::{Family, Validity, present};
use crate::fuzz::cases::{self, Case, Knob, OpenAi, Scope};

/// The completions family.
#[derive(Debug, Clone, Copy, Default)]
pub struct Completions;

const RULES: Rules = Rules {
    endpoint: Endpoint::Completions,
    prompt_ok: |map| {
        let is_u32 = |v: &Value| v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX));
        match map.get("prompt") {
            Some(Value::String(_)) => true,
            Some(Value::Array(ids)) => ids.iter().all(is_u32),
            _ => false,
        }
    },
    bools: &["stream", "echo"],
    logprobs_key: "logprobs",
    logprobs: |map| Ok(openai::given(map.get("logprobs")).and_then(Value::as_i64)),
    model_last: false,
};

impl Family for Completions {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Completions
    }

    fn validity(&self, body: &Value, served_model: &str) -> Validity {
        openai::validity(&RULES, body, served_model)
    }

    fn logprobs_asked(&self, body: &Value) -> Option<i64> {
        openai::counted_logprobs(body, "logprobs")
    }

    fn serves(&self, named: &str, served: &str) -> bool {
        openai::serves(named, served)
    }

    fn prompt_fields(&self) -> &'static [&'static str] {
        &["prompt"]
    }

    fn detokenizes(&self) -> bool {
        true
    }

    fn echo(&self, body: &Value) -> bool {
        present(body, "echo")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn tokenless_logprobs_end_stream(&self) -> bool {
        true
    }

    fn fuzz_cases(&self, scope: Scope) -> BoxedStrategy<Case> {
        openai::fuzz_cases(
            scope,
            Endpoint::Completions,
            |drawn| OpenAi {
                echo: drawn.echo,
                text_prompt: drawn.text_prompt,
                stop: drawn.stop,
                ..OpenAi::default()
            },
            |request, _| openai::asked(request.logprobs),
        )
    }

    /// The prompt as ids, or as one text when the case says so.
    fn fuzz_request(&self, case: &Case, model: &str) -> RequestSpec {
        openai::fuzz_request(
            case,
            model,
            |extra, words, body| {
                let prompt = if extra.text_prompt {
                    cases::text(words).into()
                } else {
                    json!(words)
                };
                body.insert("prompt".into(), prompt);
            },
            |case, extra, body| {
                case.request.logprobs.put(body, "logprobs");
                // `max_tokens: 0` with `echo` asks for the prompt alone and
                // never reaches the engine: not a case about streaming.
                if case.request.max_tokens != Knob::Value(0) {
                    extra.echo.put(body, "echo");
                }
            },
        )
    }

    /// The ids as `prompt`, with `return_token_ids` so chunks count in tokens.
    fn bench_body(&self, prompt: &[u32], model: &str, max_tokens: u32) -> Map<String, Value> {
        let body = json!({
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "return_token_ids": true,
        });
        body.as_object().cloned().unwrap_or_default()
    }
}
