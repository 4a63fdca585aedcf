//! What `/v1/completions` and `/v1/chat/completions` share: vllm-rs's
//! request validation (its `routes/openai/*/validate.rs`), whose order
//! differs between the two only where [`Rules`] says, and the fuzz request
//! body both build around their prompt.

use std::collections::BTreeMap;

use mock_engine::script::{Endpoint, RequestSpec};
use proptest::prelude::*;
use serde_json::{Map, Value};

pub(super) use super::types::given;
use super::types::shared_fields_mistyped;
use super::{MAX_LOGPROBS, MAX_MODEL_LEN, VOCAB_SIZE, Validity, present};
use crate::fuzz::cases::{self, Case, Knob, OpenAi, Request, Scope};

/// The number of logprobs a body asks for, when it asks; `Err` when the
/// request is refused for how it asks.
pub(super) type ReadLogprobs = fn(&Map<String, Value>) -> Result<Option<i64>, Refused>;

/// A request refused (with a 400).
pub(super) struct Refused;

/// Where one OpenAI route's validation differs from the other's.
pub(super) struct Rules {
    pub endpoint: Endpoint,
    /// The prompt field is present and well formed (serde's check).
    pub prompt_ok: fn(&Map<String, Value>) -> bool,
    /// `bool` fields with a default: present means a boolean.
    pub bools: &'static [&'static str],
    /// The field that holds the number of logprobs.
    pub logprobs_key: &'static str,
    pub logprobs: ReadLogprobs,
    /// The model is checked after every other field (chat, on vllm-rs
    /// 0.32), not right after the types (completions); so are `n` > 1 and
    /// the number of logprobs.
    pub model_last: bool,
}

/// vllm-rs's validation of an OpenAI route, in its order: serde refuses
/// wrong types (400; `bool` fields refuse `null` too), then an unknown model
/// is a 404, then every other refusal is a 400.
pub(super) fn validity(rules: &Rules, body: &Value, served_model: &str) -> Validity {
    let invalid = |status| Validity::Invalid { status };
    let Some(map) = body.as_object() else {
        return invalid(400);
    };
    if !(rules.prompt_ok)(map) {
        return invalid(400);
    }
    for k in rules.bools {
        if map.get(*k).is_some_and(|v| !v.is_boolean()) {
            return invalid(400);
        }
    }
    if shared_fields_mistyped(map, map, rules.logprobs_key) {
        return invalid(400);
    }
    if given(map.get("model")).is_some_and(|v| !v.is_string()) {
        return invalid(400);
    }
    let unknown_model = given(map.get("model"))
        .and_then(Value::as_str)
        .is_some_and(|m| !m.is_empty() && m != served_model);
    if unknown_model && !rules.model_last {
        return invalid(404);
    }
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if given(map.get("stream_options")).is_some() && !stream {
        return invalid(400);
    }
    // With the model last, `n` > 1 is refused after it (seen on vllm-rs
    // 0.32: an unknown model with `n` 2 is a 404).
    let n_refused = given(map.get("n")).is_some_and(|n| n.as_u64() != Some(1));
    if n_refused && !rules.model_last {
        return invalid(400);
    }
    let echo = map.get("echo").and_then(Value::as_bool).unwrap_or(false);
    if map.get("max_tokens").and_then(Value::as_u64) == Some(0) && !echo {
        return invalid(400);
    }
    let Ok(logprobs) = (rules.logprobs)(map) else {
        return invalid(400);
    };
    // The number of logprobs is the engine's limit, which a route with the
    // model last checks after it (seen on both 0.32.0 frontends: an unknown
    // model with `top_logprobs` -1 is a 404).
    let logprobs_refused = logprobs.is_some_and(|k| {
        let resolved = if k == -1 { VOCAB_SIZE as i64 } else { k };
        k < -1 || resolved > MAX_LOGPROBS
    });
    if logprobs_refused && !rules.model_last {
        return invalid(400);
    }
    match rules.endpoint.prompt_token_ids(body) {
        Some(ids)
            if !ids.is_empty()
                && ids.len() < MAX_MODEL_LEN
                && ids.iter().all(|&t| u64::from(t) < VOCAB_SIZE) => {}
        _ => return invalid(400),
    }
    if unknown_model {
        return invalid(404);
    }
    if logprobs_refused || n_refused {
        return invalid(400);
    }
    Validity::Valid
}

/// The served model, or `""`: the OpenAI routes default an empty name.
pub(super) fn serves(named: &str, served: &str) -> bool {
    named == served || named.is_empty()
}

/// A fuzz request body with the shared knobs at the top level, the prompt
/// put in by `put_prompt`, and the route's own knobs by `put_knobs`.
/// Request ids are left out: these routes answer with an `id` of their own
/// making.
pub(super) fn fuzz_request(
    case: &Case,
    model: &str,
    put_prompt: impl FnOnce(&OpenAi, &[u32], &mut Map<String, Value>),
    put_knobs: impl FnOnce(&Case, &OpenAi, &mut Map<String, Value>),
) -> RequestSpec {
    let r = &case.request;
    let extra = case.openai.clone().unwrap_or_default();
    let mut body = Map::new();
    r.model.put(&mut body, model);
    put_prompt(&extra, &case.words(), &mut body);
    r.max_tokens.put(&mut body, "max_tokens");
    r.n.put(&mut body, "n");
    put_knobs(case, &extra, &mut body);
    r.put_stream(&mut body);
    r.return_token_ids.put(&mut body, "return_token_ids");
    if !extra.stop.is_empty() {
        body.insert("stop".into(), serde_json::json!(extra.stop));
    }
    RequestSpec {
        method: "POST".into(),
        endpoint: case.endpoint,
        path: None,
        headers: BTreeMap::new(),
        body: Some(Value::Object(body)),
        raw_body: None,
        content_type: None,
    }
}

/// The number of logprobs asked for by an integer field.
pub(super) fn counted_logprobs(body: &Value, key: &str) -> Option<i64> {
    present(body, key)?.as_i64()
}

/// A knob as a number of candidates, when it is one.
pub(super) fn asked(knob: Knob<i32>) -> Option<i32> {
    match knob {
        Knob::Value(k) => Some(k),
        _ => None,
    }
}

/// Fuzz cases of an OpenAI route: the shared knobs, every route knob drawn
/// (so a seed's stream of cases does not depend on which route it is for)
/// and those the route has kept by `keep`, and a text script whose
/// candidates per token are at most the `asked` number.
pub(super) fn fuzz_cases(
    scope: Scope,
    endpoint: Endpoint,
    keep: fn(OpenAi) -> OpenAi,
    asked: fn(&Request, &OpenAi) -> Option<i32>,
) -> BoxedStrategy<Case> {
    let script = if scope.scripts {
        proptest::option::weighted(0.8, cases::text_script(scope)).boxed()
    } else {
        Just(None).boxed()
    };
    (
        cases::request(),
        cases::openai_knobs().prop_map(keep),
        script,
    )
        .prop_map(move |(request, openai, mut script)| {
            let k = asked(&request, &openai).and_then(|k| usize::try_from(k).ok());
            if let (Some(script), Some(k)) = (script.as_mut(), k) {
                cases::keep_candidates(script, k);
            }
            Case {
                endpoint,
                request,
                openai: Some(openai),
                script,
            }
        })
        .boxed()
}
