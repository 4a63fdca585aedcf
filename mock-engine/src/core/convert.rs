//! Between the wire's request/output types and the engine's.

use rmpv::Value;

use crate::engine::{EngineOutput, EngineRequest};
use crate::step::{LogprobEntry, StopReason};
use crate::wire::{
    DtypeNaming, EngineCoreOutput, EngineCoreRequest, LogprobsLists, LogprobsTensors, NdArray,
    PrefillStats, WireStopReason,
};

/// A script output the wire cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "{what}: position {position} has {got} candidates but position 0 has {expected}; \
         vLLM sends logprobs as a rectangular array"
    )]
    Ragged {
        what: &'static str,
        position: usize,
        expected: usize,
        got: usize,
    },
    #[error("{what}: position {position} has no entries (the sampled token comes first)")]
    Empty { what: &'static str, position: usize },
}

/// The engine's view of an ADD request.
pub fn to_engine_request(request: &EngineCoreRequest) -> EngineRequest {
    let sampling = request.sampling_params.as_ref();
    EngineRequest {
        request_id: request.request_id.clone(),
        prompt_token_ids: request.prompt_token_ids.clone().unwrap_or_default(),
        max_tokens: sampling.and_then(|s| s.max_tokens),
        // -1 asks for the whole vocabulary: far more than a script can mean,
        // so it counts as "none beyond the sampled token".
        logprobs: sampling
            .and_then(|s| s.logprobs)
            .map(|k| u32::try_from(k.max(0)).unwrap_or(u32::MAX)),
        prompt_logprobs: sampling.and_then(|s| s.prompt_logprobs),
        view: Some(request.view.clone()),
    }
}

/// One engine output as the frontend expects it, echoing `request_id`.
pub fn to_wire_output(
    request_id: &str,
    prompt_len: usize,
    output: EngineOutput,
) -> Result<EngineCoreOutput, ConvertError> {
    let new_logprobs = output
        .logprobs
        .as_deref()
        .map(|rows| {
            let (ids, lps, ranks, shape) = columns("logprobs", rows)?;
            Ok::<_, ConvertError>(LogprobsLists {
                logprob_token_ids: NdArray::from_i32(DtypeNaming::Numpy, shape.clone(), &ids),
                logprobs: NdArray::from_f32(DtypeNaming::Numpy, shape, &lps),
                sampled_token_ranks: NdArray::from_i64(
                    DtypeNaming::Numpy,
                    vec![ranks.len()],
                    &ranks,
                ),
                cu_num_generated_tokens: None,
            })
        })
        .transpose()?;
    let new_prompt_logprobs_tensors = output
        .prompt_logprobs
        .as_deref()
        .map(|rows| {
            let (ids, lps, ranks, shape) = columns("prompt_logprobs", rows)?;
            Ok::<_, ConvertError>(LogprobsTensors {
                logprob_token_ids: NdArray::from_i32(DtypeNaming::Torch, shape.clone(), &ids),
                logprobs: NdArray::from_f32(DtypeNaming::Torch, shape, &lps),
                selected_token_ranks: NdArray::from_i64(
                    DtypeNaming::Torch,
                    vec![ranks.len()],
                    &ranks,
                ),
                cu_num_generated_tokens: None,
            })
        })
        .transpose()?;
    let prefill_stats = (output.num_cached_tokens > 0).then(|| {
        PrefillStats::local_cache_hit(
            u32::try_from(prompt_len).unwrap_or(u32::MAX),
            output.num_cached_tokens,
        )
    });
    Ok(EngineCoreOutput {
        request_id: request_id.to_string(),
        new_token_ids: output.new_token_ids,
        new_logprobs: new_logprobs.map(Box::new),
        new_prompt_logprobs_tensors: new_prompt_logprobs_tensors.map(Box::new),
        finish_reason: output.finish_reason,
        stop_reason: output.stop_reason.map(|r| match r {
            StopReason::Token(t) => WireStopReason::Token(t),
            StopReason::Text(s) => WireStopReason::Text(s),
        }),
        kv_transfer_params: output.kv_transfer_params.as_ref().map(json_to_msgpack),
        prefill_stats,
        num_nans_in_logits: 0,
    })
}

type Columns = (Vec<i32>, Vec<f32>, Vec<i64>, Vec<usize>);

/// Row-major token ids and logprobs `[positions, width]` plus the sampled
/// token's rank per position.
fn columns(what: &'static str, rows: &[Vec<LogprobEntry>]) -> Result<Columns, ConvertError> {
    let width = rows.first().map_or(0, Vec::len);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut lps = Vec::with_capacity(rows.len() * width);
    let mut ranks = Vec::with_capacity(rows.len());
    for (position, row) in rows.iter().enumerate() {
        if row.is_empty() {
            return Err(ConvertError::Empty { what, position });
        }
        if row.len() != width {
            return Err(ConvertError::Ragged {
                what,
                position,
                expected: width,
                got: row.len(),
            });
        }
        ranks.push(i64::from(row[0].rank));
        for entry in row {
            // Token ids beyond i32 cannot be vocabulary ids; vLLM uses int32.
            ids.push(i32::try_from(entry.token_id).unwrap_or(i32::MAX));
            lps.push(entry.logprob);
        }
    }
    Ok((ids, lps, ranks, vec![rows.len(), width]))
}

/// JSON to msgpack, keeping integers integers (vLLM's kv params carry ports).
pub(crate) fn json_to_msgpack(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(json_to_msgpack).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_msgpack(v)))
                .collect(),
        ),
    }
}
