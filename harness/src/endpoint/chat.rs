//! `/v1/chat/completions`: messages through the chat template, deltas out.
//! Logprobs are a bool and `top_logprobs`; each choice announces its role
//! first; the model is checked after the other fields.

use mock_engine::script::{Endpoint, RequestSpec};
use proptest::strategy::BoxedStrategy;
use serde_json::{Map, Value, json};

use super::openai::{self, Rules};
use super::{Family, Validity, present};
use crate::fuzz::cases::{self, Case, Knob, OpenAi, Role, Scope};

/// The chat family.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chat;

const RULES: Rules = Rules {
    endpoint: Endpoint::Chat,
    prompt_ok: |map| {
        map.get("messages")
            .and_then(Value::as_array)
            .is_some_and(|m| !m.is_empty())
    },
    bools: &["stream", "echo", "logprobs"],
    logprobs_key: "top_logprobs",
    logprobs: |map| {
        let asked = map
            .get("logprobs")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let top = openai::given(map.get("top_logprobs")).and_then(Value::as_i64);
        if top.is_some() && !asked {
            return Err(openai::Refused);
        }
        Ok(top)
    },
    model_last: true,
};

impl Family for Chat {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Chat
    }

    fn validity(&self, body: &Value, served_model: &str) -> Validity {
        openai::validity(&RULES, body, served_model)
    }

    /// `top_logprobs` (0 when absent) when `logprobs` is true.
    fn logprobs_asked(&self, body: &Value) -> Option<i64> {
        let asked = present(body, "logprobs").and_then(Value::as_bool)?;
        asked.then(|| openai::counted_logprobs(body, "top_logprobs").unwrap_or(0))
    }

    fn serves(&self, named: &str, served: &str) -> bool {
        openai::serves(named, served)
    }

    fn prompt_fields(&self) -> &'static [&'static str] {
        &["messages"]
    }

    fn detokenizes(&self) -> bool {
        true
    }

    fn role(&self) -> Option<&'static str> {
        Some("assistant")
    }

    fn fuzz_cases(&self, scope: Scope) -> BoxedStrategy<Case> {
        openai::fuzz_cases(
            scope,
            Endpoint::Chat,
            |drawn| OpenAi {
                chat_logprobs: drawn.chat_logprobs,
                top_logprobs: drawn.top_logprobs,
                earlier: drawn.earlier,
                parts: drawn.parts,
                stop: drawn.stop,
                ..OpenAi::default()
            },
            |_, openai| match (&openai.chat_logprobs, &openai.top_logprobs) {
                (Knob::Value(true), Knob::Value(k)) => Some(*k),
                (Knob::Value(true), _) => Some(0),
                _ => None,
            },
        )
    }

    /// The earlier messages, then the user's with the prompt words.
    fn fuzz_request(&self, case: &Case, model: &str) -> RequestSpec {
        openai::fuzz_request(
            case,
            model,
            |extra, words, body| {
                let mut messages: Vec<Value> = extra
                    .earlier
                    .iter()
                    .map(|m| cases::message(m.role, &m.words, m.parts))
                    .collect();
                if !words.is_empty() {
                    messages.push(cases::message(Role::User, words, extra.parts));
                }
                body.insert("messages".into(), Value::Array(messages));
            },
            |_, extra, body| {
                extra.chat_logprobs.put(body, "logprobs");
                extra.top_logprobs.put(body, "top_logprobs");
            },
        )
    }

    /// The ids as the words of one user message (the engine then sees the
    /// template around them), with `return_token_ids` so chunks count in
    /// tokens.
    fn bench_body(&self, prompt: &[u32], model: &str, max_tokens: u32) -> Map<String, Value> {
        let words: Vec<String> = prompt.iter().map(|id| format!("t{id}")).collect();
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": words.join(" ")}],
            "max_tokens": max_tokens,
            "return_token_ids": true,
        });
        body.as_object().cloned().unwrap_or_default()
    }
}
