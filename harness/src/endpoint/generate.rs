//! `/inference/v1/generate`: token ids in, token ids out. The sampling
//! knobs sit in `sampling_params`; the answer names its tokens by id,
//! logprobs included, and echoes the client's request id.

use std::collections::BTreeMap;

use mock_engine::script::{Endpoint, RequestSpec};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::types::{given, shared_fields_mistyped};
use super::{Family, MAX_LOGPROBS, MAX_MODEL_LEN, VOCAB_SIZE, Validity, present};
use crate::fuzz::cases::{self, Case, Prompt, Scope};

/// The generate family.
#[derive(Debug, Clone, Copy, Default)]
pub struct Generate;

impl Family for Generate {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Generate
    }

    /// vllm-rs's validation of generate, in its order: serde's type errors,
    /// the model (404), then the values.
    fn validity(&self, body: &Value, served_model: &str) -> Validity {
        let invalid = |status| Validity::Invalid { status };
        let Some(map) = body.as_object() else {
            return invalid(400);
        };
        let is_u32 = |v: &Value| v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX));
        let ids = match map.get("token_ids").and_then(Value::as_array) {
            Some(ids) if ids.iter().all(is_u32) => ids,
            _ => return invalid(400),
        };
        let Some(params) = map.get("sampling_params").and_then(Value::as_object) else {
            return invalid(400);
        };
        // Type errors: serde refuses them before anything is checked.
        if let Some(s) = map.get("stream")
            && !s.is_boolean()
        {
            return invalid(400);
        }
        if shared_fields_mistyped(map, params, "logprobs") {
            return invalid(400);
        }
        for k in ["model", "request_id"] {
            if given(map.get(k)).is_some_and(|v| !v.is_string()) {
                return invalid(400);
            }
        }
        if given(map.get("model")).is_some_and(|m| m.as_str() != Some(served_model)) {
            return invalid(404);
        }
        let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(false);
        if given(map.get("stream_options")).is_some() && !stream {
            return invalid(400);
        }
        if given(params.get("n")).is_some_and(|n| n.as_u64() != Some(1)) {
            return invalid(400);
        }
        if ids.is_empty() {
            return invalid(400);
        }
        if params.get("max_tokens").and_then(Value::as_u64) == Some(0) {
            return invalid(400);
        }
        if let Some(k) = params.get("logprobs").and_then(Value::as_i64) {
            let resolved = if k == -1 { VOCAB_SIZE as i64 } else { k };
            if k < -1 || resolved > MAX_LOGPROBS {
                return invalid(400);
            }
        }
        if ids
            .iter()
            .any(|t| t.as_u64().is_some_and(|t| t >= VOCAB_SIZE))
        {
            return invalid(400);
        }
        if ids.len() >= MAX_MODEL_LEN {
            return invalid(400);
        }
        Validity::Valid
    }

    fn logprobs_asked(&self, body: &Value) -> Option<i64> {
        present(self.sampling(body)?, "logprobs")?.as_i64()
    }

    fn client_request_id(&self, body: &Value, header: Option<&str>) -> Option<String> {
        header
            .map(Into::into)
            .or_else(|| present(body, "request_id")?.as_str().map(Into::into))
    }

    fn prompt_fields(&self) -> &'static [&'static str] {
        &["token_ids"]
    }

    fn detokenizes(&self) -> bool {
        false
    }

    fn always_shows_token_ids(&self) -> bool {
        true
    }

    fn logprobs_name_token_ids(&self) -> bool {
        true
    }

    fn fuzz_cases(&self, scope: Scope) -> BoxedStrategy<Case> {
        let script = if scope.scripts {
            proptest::option::weighted(0.8, cases::script(scope)).boxed()
        } else {
            Just(None).boxed()
        };
        (cases::request(), script)
            .prop_map(|(request, script)| Case {
                endpoint: Endpoint::Generate,
                request,
                openai: None,
                script,
            })
            .boxed()
    }

    /// The knobs in `sampling_params`, the ids as `token_ids`, and the
    /// request id in the header or the body, as the case says.
    fn fuzz_request(&self, case: &Case, model: &str) -> RequestSpec {
        let r = &case.request;
        let mut params = Map::new();
        r.max_tokens.put(&mut params, "max_tokens");
        r.n.put(&mut params, "n");
        r.logprobs.put(&mut params, "logprobs");
        let mut body = Map::new();
        body.insert("token_ids".into(), json!(self.fuzz_prompt(case)));
        body.insert("sampling_params".into(), Value::Object(params));
        r.put_stream(&mut body);
        r.return_token_ids.put(&mut body, "return_token_ids");
        if let Some(id) = &r.body_request_id {
            body.insert("request_id".into(), id.as_str().into());
        }
        r.model.put(&mut body, model);
        let mut headers = BTreeMap::new();
        if let Some(id) = &r.header_request_id {
            headers.insert("x-request-id".to_string(), id.clone());
        }
        RequestSpec {
            method: "POST".into(),
            endpoint: Endpoint::Generate,
            path: None,
            headers,
            body: Some(Value::Object(body)),
            raw_body: None,
            content_type: None,
        }
    }

    /// The mark and two digest tokens, then the generated ids, so no two
    /// different cases share a prompt (and so a script).
    fn fuzz_prompt(&self, case: &Case) -> Vec<u32> {
        match &case.request.prompt {
            Prompt::Empty => Vec::new(),
            Prompt::Ids(ids) => {
                let d = case.digest();
                let vocab = cases::VOCAB;
                let mut prompt = vec![
                    cases::PROMPT_MARK,
                    (d >> 12) as u32 % vocab,
                    d as u32 % vocab,
                ];
                prompt.extend(ids);
                prompt
            }
        }
    }

    fn bench_body(&self, prompt: &[u32], _model: &str, max_tokens: u32) -> Map<String, Value> {
        let body = json!({
            "token_ids": prompt,
            "sampling_params": {"max_tokens": max_tokens},
        });
        body.as_object().cloned().unwrap_or_default()
    }
}
