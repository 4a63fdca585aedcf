//! What serde refuses before any rule is checked, for the fields every
//! family has: vllm-rs reads a body into typed structs, so a value of the
//! wrong type is a 400 whatever else the request holds.

use serde_json::{Map, Value};

/// A value that is there and not `null`.
pub(super) fn given(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// Whether `stream_options`, `return_token_ids`, the counts `max_tokens`
/// and `n`, or the number of logprobs (`logprobs_key` in `sampling`) has a
/// type serde refuses. `null` is the default for each.
pub(super) fn shared_fields_mistyped(
    body: &Map<String, Value>,
    sampling: &Map<String, Value>,
    logprobs_key: &str,
) -> bool {
    let is_u32 = |v: &Value| v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX));
    stream_options_mistyped(body)
        || given(body.get("return_token_ids")).is_some_and(|v| !v.is_boolean())
        || ["max_tokens", "n"]
            .iter()
            .any(|k| given(sampling.get(*k)).is_some_and(|v| !is_u32(v)))
        || given(sampling.get(logprobs_key)).is_some_and(|v| v.as_i64().is_none())
}

/// `stream_options` that is not an object, or whose flags are not bools.
fn stream_options_mistyped(map: &Map<String, Value>) -> bool {
    let Some(o) = given(map.get("stream_options")) else {
        return false;
    };
    let Some(o) = o.as_object() else {
        return true;
    };
    ["include_usage", "continuous_usage_stats"]
        .iter()
        .any(|k| given(o.get(*k)).is_some_and(|v| !v.is_boolean()))
}
