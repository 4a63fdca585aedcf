//! What vllm-rs asks the engine for a checked request, as the
//! [`EngineView`] a harness compares with a real frontend's.
//!
//! The in-process engine acts only on the token budget and the logprob
//! counts; the rest of what vllm-rs puts in an `EngineCoreRequest` is
//! written here, as vllm-rs 0.32.0 writes it (observed through the mock
//! engine core, `genconform run --target vllm-rs`):
//! - `max_tokens` clamped to the room the prompt leaves, the sampling
//!   fields the client set, its stop token ids;
//! - `_eos_token_id` the model's EOS, left unset by `ignore_eos` (the
//!   engine stops on `_eos_token_id` only), and `_all_stop_token_ids` the
//!   stop token ids and the EOS either way;
//! - `watermarking: true`, whatever the engine's watermark config;
//! - no `stop`, `include_stop_str_in_output` or `ignore_eos`: vllm-rs
//!   matches stop strings itself;
//! - the constraint of structured outputs, as given, for the `guidance`
//!   backend ([`super::structured_outputs`]);
//! - `reasoning_parser_kwargs: {"chat_template_kwargs": null}` and the
//!   client's id as `external_req_id`.

use mock_engine::engine_view::{EngineView, canonical_sampling};
use serde_json::{Map, Value, json};

use super::sampling::SamplingParams;

/// The release whose defaults a view is made canonical against: the
/// reference follows vllm-rs's pinned release.
const PINNED_RELEASE: &str = "0.32.0";

/// One engine request as vllm-rs would send it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The id the engine knows the request by.
    pub engine_request_id: &'a str,
    /// The id the client sees.
    pub external_req_id: &'a str,
    pub prompt: &'a [u32],
    pub params: &'a SamplingParams,
    /// The token budget after clamping to the context.
    pub max_tokens: Option<u32>,
    pub cache_salt: Option<&'a str>,
    pub priority: i64,
}

impl Asked<'_> {
    pub fn view(&self) -> EngineView {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "sampling_params".to_string(),
            Value::Object(canonical_sampling(&self.sampling(), PINNED_RELEASE)),
        );
        fields.insert(
            "external_req_id".to_string(),
            Value::from(self.external_req_id),
        );
        fields.insert(
            "reasoning_parser_kwargs".to_string(),
            json!({"chat_template_kwargs": null}),
        );
        if let Some(salt) = self.cache_salt {
            fields.insert("cache_salt".to_string(), Value::from(salt));
        }
        if self.priority != 0 {
            fields.insert("priority".to_string(), Value::from(self.priority));
        }
        EngineView {
            request_id: self.engine_request_id.to_string(),
            prompt_token_ids: self.prompt.to_vec(),
            fields,
        }
    }

    /// The sampling map, before it is made canonical.
    fn sampling(&self) -> Map<String, Value> {
        let p = self.params;
        let mut map = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(name.to_string(), value);
            }
        };
        put("max_tokens", self.max_tokens.map(Value::from));
        put("min_tokens", p.min_tokens.map(Value::from));
        put("temperature", p.temperature.map(Value::from));
        put("top_p", p.top_p.map(Value::from));
        put("top_k", p.top_k.map(Value::from));
        put("min_p", p.min_p.map(Value::from));
        put("seed", p.seed.map(Value::from));
        put("presence_penalty", p.presence_penalty.map(Value::from));
        put("frequency_penalty", p.frequency_penalty.map(Value::from));
        put("repetition_penalty", p.repetition_penalty.map(Value::from));
        put("logprobs", p.logprobs.map(Value::from));
        put("prompt_logprobs", p.prompt_logprobs.map(Value::from));
        let stop_ids = p.stop_token_ids.clone().unwrap_or_default();
        put("stop_token_ids", Some(Value::from(stop_ids.clone())));
        let mut all_stop = stop_ids;
        all_stop.push(model::vocabulary::EOS);
        all_stop.sort_unstable();
        all_stop.dedup();
        put("_all_stop_token_ids", Some(Value::from(all_stop)));
        if !p.ignore_eos.unwrap_or(false) {
            put("_eos_token_id", Some(Value::from(model::vocabulary::EOS)));
        }
        put(
            "structured_outputs",
            p.structured_outputs.as_ref().map(|s| s.engine_value()),
        );
        put("watermarking", Some(Value::Bool(true)));
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(params: SamplingParams, max_tokens: Option<u32>) -> Value {
        let asked = Asked {
            engine_request_id: "a-1",
            external_req_id: "a",
            prompt: &[1, 2],
            params: &params,
            max_tokens,
            cache_salt: None,
            priority: 0,
        };
        Value::Object(asked.view().fields.into_iter().collect())
    }

    #[test]
    fn ignore_eos_unsets_the_eos_and_keeps_it_among_the_stop_ids() {
        let params = SamplingParams {
            ignore_eos: Some(true),
            stop_token_ids: Some(vec![44]),
            ..SamplingParams::default()
        };
        assert_eq!(
            view(params, Some(3))["sampling_params"],
            json!({"_all_stop_token_ids": [44, 4098], "max_tokens": 3,
                   "stop_token_ids": [44], "watermarking": true})
        );
    }

    #[test]
    fn defaults_are_left_out_and_the_client_id_is_the_external_one() {
        let v = view(SamplingParams::default(), Some(16));
        assert_eq!(
            v,
            json!({
                "external_req_id": "a",
                "reasoning_parser_kwargs": {"chat_template_kwargs": null},
                "sampling_params": {"_all_stop_token_ids": [4098], "_eos_token_id": 4098, "watermarking": true},
            })
        );
    }
}
