//! What a frontend asked the engine for one request, in a form two frontends
//! can agree on.
//!
//! Two frontends can stream the same bytes and still ask the engine different
//! things: a clamped `max_tokens`, the EOS token, a stop string passed on or
//! dropped, a watermarking flag. An [`EngineView`] keeps every field of an
//! `EngineCoreRequest` that differs from its default, with its
//! `sampling_params` made canonical ([`canonical_sampling`]), so that the
//! same request asked the same way gives the same view whichever frontend
//! sent it, and whichever of the two serialisers vLLM's frontends use:
//!
//! - Python's `msgspec` leaves a field at its default off the map
//!   (`omit_defaults`), vllm-rs writes most of them. A field left off means
//!   the engine's default for that release, so it is filled in first
//!   ([`release_default`]); then every field equal to the pinned release's
//!   default is dropped. The view is what the engine decodes, minus the
//!   defaults everyone agrees on.
//! - Python writes floats as f64, vllm-rs as f32: a float is shown as the
//!   f32 it rounds to (the engine samples in f32), integral floats as
//!   integers.
//! - An empty list or map and `null` mean the same to the engine (vLLM's
//!   `SamplingParams.__post_init__` turns a `None` stop list into `[]`).
//! - `_all_stop_token_ids` is a set in vLLM: shown sorted.
//! - `structured_outputs` is a dataclass that Python writes whole: its
//!   fields at their defaults (`null`, `false`) are dropped.
//! - What the engine's `SamplingParams.__post_init__` derives from other
//!   fields when it decodes the request is derived here too, so a field
//!   one frontend leaves to the engine and the other fills in agree: a
//!   `skip_reading_prefix_cache` left unset, the stop-string hold-back
//!   (`output_text_buffer_length`), greedy sampling's reset of `top_p`,
//!   `top_k` and `min_p`; and `top_k` -1, the older spelling of 0.
//!
//! ```
//! use mock_engine::engine_view::canonical_sampling;
//! use serde_json::json;
//!
//! // vllm-rs writes the defaults, Python leaves them off: one view.
//! let rust = json!({"temperature": 1.0, "top_k": 0, "max_tokens": 3, "stop": []});
//! let python = json!({"max_tokens": 3});
//! let view = canonical_sampling(rust.as_object().unwrap(), "0.32.0");
//! assert_eq!(view, canonical_sampling(python.as_object().unwrap(), "0.32.0"));
//! assert_eq!(serde_json::Value::Object(view), json!({"max_tokens": 3}));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::wire::FieldDefault;

/// One request as the engine received it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineView {
    /// The id the engine knows the request by, as sent (a harness replaces
    /// its generated parts; the frontend's form of it stays).
    pub request_id: String,
    /// The prompt, as sent (after the frontend's chat template, truncation
    /// and special tokens).
    pub prompt_token_ids: Vec<u32>,
    /// Every other field that differs from its default, by name, sorted;
    /// `sampling_params` canonical. Run-dependent fields (arrival time,
    /// client index, wave) are left out.
    pub fields: BTreeMap<String, Value>,
}

/// Fields of an `EngineCoreRequest` whose value depends on the run, not on
/// what the client asked: never part of a view.
pub const RUN_DEPENDENT_FIELDS: &[&str] = &["arrival_time", "client_index", "current_wave"];

/// `SamplingParams`' fields and their defaults in the pinned release, 0.32.0
/// (`vllm/sampling_params.py`, `class SamplingParams`). 0.33.0 and 0.34.0
/// have the same; 0.30.0 and 0.31.0 differ in [`release_default`].
const PINNED_DEFAULTS: &[(&str, FieldDefault)] = {
    use crate::wire::FieldDefault::{Bool, Float, Int, Nil as Null};
    &[
        ("n", Int(1)),
        ("presence_penalty", Float(0.0)),
        ("frequency_penalty", Float(0.0)),
        ("repetition_penalty", Float(1.0)),
        ("temperature", Float(1.0)),
        ("watermarking", Null),
        ("top_p", Float(1.0)),
        ("top_k", Int(0)),
        ("min_p", Float(0.0)),
        ("seed", Null),
        ("stop", Null),
        ("stop_token_ids", Null),
        ("ignore_eos", Bool(false)),
        ("max_tokens", Int(16)),
        ("min_tokens", Int(0)),
        ("logprobs", Null),
        ("prompt_logprobs", Null),
        ("prompt_logprob_token_ids", Null),
        ("prompt_logprob_start", Null),
        ("logprob_token_ids", Null),
        ("flat_logprobs", Bool(false)),
        ("detokenize", Bool(true)),
        ("skip_special_tokens", Bool(true)),
        ("spaces_between_special_tokens", Bool(true)),
        ("include_stop_str_in_output", Bool(false)),
        // RequestOutputKind.CUMULATIVE
        ("output_kind", Int(0)),
        ("stream_interval", Null),
        ("skip_clone", Bool(false)),
        ("output_text_buffer_length", Int(0)),
        ("_eos_token_id", Null),
        ("_all_stop_token_ids", Null),
        ("_watermarking_skipped", Bool(false)),
        ("structured_outputs", Null),
        ("logit_bias", Null),
        ("allowed_token_ids", Null),
        ("extra_args", Null),
        ("bad_words", Null),
        ("_bad_words_token_ids", Null),
        // Derived when unset: see `derived` and `left_out`.
        ("skip_reading_prefix_cache", Null),
        ("thinking_token_budget", Null),
        ("repetition_detection", Null),
        ("routed_experts_prompt_start", Int(0)),
        ("trace_decode_token_ids", Null),
    ]
};

/// The pinned release's default of a sampling field (`None`: a field vLLM's
/// `SamplingParams` does not have, which a frontend sent anyway).
pub fn pinned_default(field: &str) -> Option<Value> {
    PINNED_DEFAULTS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, d)| d.json())
}

/// The default a field left off the map has in `release`'s engine.
///
/// 0.30.0 and 0.31.0 declare `watermarking: bool = True`; 0.32.0 made it
/// `bool | None = None` (resolved by the frontend against the engine's
/// watermark config). A release this table does not know gets the pinned
/// defaults.
pub fn release_default(field: &str, release: &str) -> Option<Value> {
    let before_0_32 = release.starts_with("0.30.") || release.starts_with("0.31.");
    match field {
        "watermarking" if before_0_32 => Some(Value::Bool(true)),
        _ => pinned_default(field),
    }
}

/// A sampling map as the engine of `release` decodes it, minus what equals
/// the pinned release's defaults; values made comparable ([`comparable`]).
/// Keys come out sorted.
pub fn canonical_sampling(sent: &Map<String, Value>, release: &str) -> Map<String, Value> {
    let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
    for (name, _) in PINNED_DEFAULTS {
        if let Some(value) = sent
            .get(*name)
            .cloned()
            .or_else(|| release_default(name, release))
        {
            fields.insert(name, value);
        }
    }
    for (name, value) in sent {
        fields.entry(name.as_str()).or_insert_with(|| value.clone());
    }
    derived(&mut fields);
    fields
        .into_iter()
        .filter_map(|(name, value)| {
            let value = comparable(name, &value);
            (value != comparable(name, &left_out(name))).then(|| (name.to_string(), value))
        })
        .collect()
}

/// The value of a field a view leaves out: its pinned default, or for a
/// field the engine derives when unset, what it derives for a request that
/// asks nothing of it.
fn left_out(field: &str) -> Value {
    match field {
        "skip_reading_prefix_cache" => Value::Bool(false),
        _ => pinned_default(field).unwrap_or(Value::Null),
    }
}

/// What vLLM's `SamplingParams.__post_init__` (0.32.0) sets when the
/// engine decodes the request, applied to the decoded fields.
fn derived(fields: &mut BTreeMap<&str, Value>) {
    let set = |fields: &BTreeMap<&str, Value>, name: &str| {
        fields
            .get(name)
            .is_some_and(|v| !comparable(name, v).is_null())
    };
    if fields
        .get("skip_reading_prefix_cache")
        .is_none_or(Value::is_null)
    {
        let skip = set(fields, "prompt_logprobs") || set(fields, "prompt_logprob_token_ids");
        fields.insert("skip_reading_prefix_cache", Value::Bool(skip));
    }
    let include = fields
        .get("include_stop_str_in_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // `stop` is one string or a list of them.
    let longest = match fields.get("stop") {
        Some(Value::String(one)) => Some(one.chars().count()),
        Some(Value::Array(stop)) => stop
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.chars().count())
            .max(),
        _ => None,
    };
    if let (Some(longest), false) = (longest, include) {
        fields.insert(
            "output_text_buffer_length",
            json!(longest.saturating_sub(1)),
        );
    }
    // `top_k` -1 is vLLM's older spelling of 0: no top-k (the sampler
    // takes every token for either).
    if fields.get("top_k").and_then(Value::as_i64) == Some(-1) {
        fields.insert("top_k", json!(0));
    }
    let greedy = fields
        .get("temperature")
        .and_then(Value::as_f64)
        .is_some_and(|t| t < 1e-5);
    if greedy {
        fields.insert("top_p", json!(1.0));
        fields.insert("top_k", json!(0));
        fields.insert("min_p", json!(0.0));
    }
}

/// A field of a request other than its sampling params: shown unless it
/// equals its default (`default`, from the wire layout).
pub fn differs_from_default(value: &Value, default: &Value) -> bool {
    comparable("", value) != comparable("", default)
}

/// A value as a view shows it: floats at f32 precision, integral ones as
/// integers, sets sorted, empty containers as `null`.
pub fn comparable(field: &str, value: &Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN) as f32;
            if x.fract() == 0.0 && x.abs() < 9.0e15 {
                json!(x as i64)
            } else {
                // The f32's shortest decimal, read back: 0.7f32 shows as 0.7.
                x.to_string()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        // A dataclass written whole (Python) or only where set (vllm-rs):
        // every field of StructuredOutputsParams defaults to none or false.
        Value::Object(o) if field == "structured_outputs" => Value::Object(
            o.iter()
                .map(|(k, v)| (k, comparable(k, v)))
                .filter(|(_, v)| !v.is_null() && *v != Value::Bool(false))
                .map(|(k, v)| (k.clone(), v))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(|v| comparable("", v)).collect();
            if field == "_all_stop_token_ids" {
                items.sort_by_key(|v| v.as_i64());
            }
            Value::Array(items)
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), comparable(k, v)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A msgpack value as JSON, keeping integers integers. An extension value
/// (a numpy array inline) has no JSON form and becomes `null`; a view never
/// holds one (token ids are read before).
pub fn msgpack_to_json(value: &rmpv::Value) -> Value {
    use rmpv::Value as V;
    match value {
        V::Nil => Value::Null,
        V::Boolean(b) => (*b).into(),
        V::Integer(i) => i
            .as_u64()
            .map(Into::into)
            .or_else(|| i.as_i64().map(Into::into))
            .unwrap_or(Value::Null),
        V::F32(f) => (*f).into(),
        V::F64(f) => (*f).into(),
        V::String(s) => s.as_str().unwrap_or_default().into(),
        V::Binary(b) => b.iter().map(|&x| Value::from(x)).collect(),
        V::Array(a) => a.iter().map(msgpack_to_json).collect(),
        V::Map(m) => m
            .iter()
            .map(|(k, v)| {
                let key = match k {
                    V::String(s) => s.as_str().unwrap_or_default().to_string(),
                    other => other.to_string(),
                };
                (key, msgpack_to_json(v))
            })
            .collect::<Map<_, _>>()
            .into(),
        V::Ext(_, _) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(sent: Value, release: &str) -> Value {
        Value::Object(canonical_sampling(sent.as_object().unwrap(), release))
    }

    #[test]
    fn f32_and_f64_floats_of_one_request_agree() {
        let rust = json!({"temperature": 0.699_999_988_079_071, "top_p": 1.0});
        let python = json!({"temperature": 0.7});
        assert_eq!(view(rust, "0.32.0"), json!({"temperature": 0.7}));
        assert_eq!(view(python, "0.32.0"), json!({"temperature": 0.7}));
        assert_eq!(
            view(json!({"temperature": 0.0}), "0.32.0"),
            json!({"temperature": 0})
        );
    }

    #[test]
    fn a_field_left_off_takes_its_release_default() {
        // 0.31.0 declares watermarking true by default: left off, it is on.
        assert_eq!(view(json!({}), "0.31.0"), json!({"watermarking": true}));
        assert_eq!(
            view(json!({"watermarking": true}), "0.31.0"),
            json!({"watermarking": true})
        );
        assert_eq!(view(json!({}), "0.32.0"), json!({}));
        assert_eq!(
            view(json!({"watermarking": false}), "0.32.0"),
            json!({"watermarking": false})
        );
    }

    #[test]
    fn sets_are_sorted_and_empty_lists_are_none() {
        let sent = json!({"_all_stop_token_ids": [9, 2], "stop": [], "bad_words": []});
        assert_eq!(view(sent, "0.32.0"), json!({"_all_stop_token_ids": [2, 9]}));
    }

    #[test]
    fn what_the_engine_derives_on_decoding_is_derived_here_too() {
        // Python sends the prefix-cache flag and the stop hold-back it
        // derived; vllm-rs leaves both for the engine to derive.
        let python = json!({"prompt_logprobs": 1, "skip_reading_prefix_cache": true,
            "stop": ["t44"], "output_text_buffer_length": 2});
        let rust = json!({"prompt_logprobs": 1, "stop": ["t44"]});
        assert_eq!(view(python, "0.32.0"), view(rust, "0.32.0"));
        assert_eq!(
            view(json!({"skip_reading_prefix_cache": false}), "0.32.0"),
            json!({})
        );
        assert_eq!(view(json!({"top_k": -1}), "0.32.0"), json!({}));
        // Greedy sampling ignores top-p, top-k and min-p.
        assert_eq!(
            view(json!({"temperature": 0, "top_k": 20}), "0.32.0"),
            json!({"temperature": 0})
        );
    }

    #[test]
    fn structured_outputs_keep_only_what_is_set() {
        let python = json!({"structured_outputs": {"_backend": "xgrammar", "choice": null,
            "disable_any_whitespace": false, "json_object": true, "regex": null}});
        assert_eq!(
            view(python, "0.32.0"),
            json!({"structured_outputs": {"_backend": "xgrammar", "json_object": true}})
        );
    }

    #[test]
    fn a_field_vllm_does_not_know_is_kept() {
        let sent = json!({"max_tokens": 16, "made_up": 1, "nothing": null});
        assert_eq!(view(sent, "0.32.0"), json!({"made_up": 1}));
    }

    #[test]
    fn keys_come_out_sorted_whatever_the_order_sent() {
        let sent = json!({"seed": 1, "max_tokens": 2, "ignore_eos": true});
        let keys: Vec<String> = canonical_sampling(sent.as_object().unwrap(), "0.32.0")
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["ignore_eos", "max_tokens", "seed"]);
    }
}
