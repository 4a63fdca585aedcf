//! Engine -> frontend messages on the output (PUSH) socket.

use bytes::Bytes;
use rmpv::Value;

use super::IN_MEMORY;
use super::error::WireError;
use super::layout::{Field, FieldDefault, Layout};
use super::ndarray::{LogprobsLists, LogprobsTensors};
use super::positional::{Reader, Writer, lookup, token_ids, write_fields, write_value};
use crate::step::FinishReason;

/// The single frame that tells the frontend the engine died.
pub const ENGINE_CORE_DEAD: &[u8] = b"ENGINE_CORE_DEAD";

/// The weight version vLLM's engine core starts with and stamps on every
/// step's message (`EngineCore._attach_weight_version`); frontends turn it
/// into `weight_versions` spans on a finished choice.
pub const DEFAULT_WEIGHT_VERSION: &str = "default";

/// `stop_reason: int | str | None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireStopReason {
    Token(i64),
    Text(String),
}

/// `PrefillStats` (`v1/metrics/stats.py`): a dataclass, so a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefillStats {
    pub num_prompt_tokens: u32,
    pub num_computed_tokens: u32,
    pub num_cached_tokens: u32,
    pub num_local_cached_tokens: u32,
    pub num_external_cached_tokens: u32,
    pub num_cache_creation_tokens: u32,
}

impl PrefillStats {
    /// A prefill where `cached` prompt tokens came from the local prefix cache.
    pub fn local_cache_hit(num_prompt_tokens: u32, cached: u32) -> Self {
        let cached = cached.min(num_prompt_tokens);
        Self {
            num_prompt_tokens,
            num_computed_tokens: num_prompt_tokens - cached,
            num_cached_tokens: cached,
            num_local_cached_tokens: cached,
            ..Self::default()
        }
    }

    const KEYS: [&str; 6] = [
        "num_prompt_tokens",
        "num_computed_tokens",
        "num_cached_tokens",
        "num_local_cached_tokens",
        "num_external_cached_tokens",
        "num_cache_creation_tokens",
    ];

    fn values(&self) -> [u32; 6] {
        [
            self.num_prompt_tokens,
            self.num_computed_tokens,
            self.num_cached_tokens,
            self.num_local_cached_tokens,
            self.num_external_cached_tokens,
            self.num_cache_creation_tokens,
        ]
    }

    pub fn to_value(&self) -> Value {
        Value::Map(
            Self::KEYS
                .iter()
                .zip(self.values())
                .map(|(k, v)| (Value::from(*k), Value::from(v)))
                .collect(),
        )
    }

    fn from_value(value: &Value) -> Option<Self> {
        let n = |k| match lookup(value, k) {
            None => Some(0),
            Some(v) => v.as_u64().and_then(|x| u32::try_from(x).ok()),
        };
        value.as_map()?;
        Some(Self {
            num_prompt_tokens: n("num_prompt_tokens")?,
            num_computed_tokens: n("num_computed_tokens")?,
            num_cached_tokens: n("num_cached_tokens")?,
            num_local_cached_tokens: n("num_local_cached_tokens")?,
            num_external_cached_tokens: n("num_external_cached_tokens")?,
            num_cache_creation_tokens: n("num_cache_creation_tokens")?,
        })
    }
}

/// One request's step (`EngineCoreOutput`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineCoreOutput {
    pub request_id: String,
    pub new_token_ids: Vec<u32>,
    /// Boxed: rare, and large inline, while the
    /// engine core moves hundreds of thousands of outputs a second.
    pub new_logprobs: Option<Box<LogprobsLists>>,
    pub new_prompt_logprobs_tensors: Option<Box<LogprobsTensors>>,
    pub finish_reason: Option<FinishReason>,
    pub stop_reason: Option<WireStopReason>,
    /// Any JSON-like value, passed through as msgpack.
    pub kv_transfer_params: Option<Value>,
    pub prefill_stats: Option<PrefillStats>,
    pub num_nans_in_logits: u32,
}

fn finish_from_code(code: i64) -> Option<FinishReason> {
    [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Abort,
        FinishReason::Error,
        FinishReason::Repetition,
    ]
    .into_iter()
    .find(|r| i64::from(r.wire_code()) == code)
}

impl EngineCoreOutput {
    pub fn tokens(request_id: impl Into<String>, new_token_ids: Vec<u32>) -> Self {
        Self {
            request_id: request_id.into(),
            new_token_ids,
            ..Self::default()
        }
    }

    pub fn to_value(&self, layout: &Layout) -> Value {
        let mut w = Writer::new(layout.output);
        w.set("request_id", self.request_id.as_str());
        w.set(
            "new_token_ids",
            Value::Array(self.new_token_ids.iter().map(|&t| Value::from(t)).collect()),
        );
        if let Some(l) = &self.new_logprobs {
            w.set("new_logprobs", l.to_value());
        }
        if let Some(t) = &self.new_prompt_logprobs_tensors {
            w.set("new_prompt_logprobs_tensors", t.to_value());
        }
        if let Some(r) = self.finish_reason {
            w.set("finish_reason", r.wire_code());
        }
        match &self.stop_reason {
            Some(WireStopReason::Token(t)) => w.set("stop_reason", *t),
            Some(WireStopReason::Text(s)) => w.set("stop_reason", s.as_str()),
            None => &mut w,
        };
        if let Some(p) = &self.kv_transfer_params {
            w.set("kv_transfer_params", p.clone());
        }
        if let Some(s) = &self.prefill_stats {
            w.set("prefill_stats", s.to_value());
        }
        w.set("num_nans_in_logits", self.num_nans_in_logits);
        w.finish()
    }

    /// [`Self::to_value`]'s bytes, written directly; `plan` is
    /// [`OutputField::plan`] of the layout's output fields.
    fn write(&self, plan: &[(OutputField, FieldDefault)], buf: &mut Vec<u8>) {
        use rmp::encode as rmp;
        rmp::write_array_len(buf, plan.len() as u32).expect(IN_MEMORY);
        for (field, default) in plan {
            let written = match field {
                OutputField::RequestId => {
                    rmp::write_str(buf, &self.request_id).expect(IN_MEMORY);
                    true
                }
                OutputField::NewTokenIds => {
                    rmp::write_array_len(buf, self.new_token_ids.len() as u32).expect(IN_MEMORY);
                    for &t in &self.new_token_ids {
                        rmp::write_uint(buf, u64::from(t)).expect(IN_MEMORY);
                    }
                    true
                }
                OutputField::NewLogprobs => self
                    .new_logprobs
                    .as_ref()
                    .map(|l| write_value(buf, &l.to_value()))
                    .is_some(),
                OutputField::NewPromptLogprobsTensors => self
                    .new_prompt_logprobs_tensors
                    .as_ref()
                    .map(|t| write_value(buf, &t.to_value()))
                    .is_some(),
                OutputField::FinishReason => self
                    .finish_reason
                    .map(|r| rmp::write_uint(buf, u64::from(r.wire_code())).expect(IN_MEMORY))
                    .is_some(),
                OutputField::StopReason => match &self.stop_reason {
                    Some(WireStopReason::Token(t)) => {
                        write_value(buf, &Value::from(*t));
                        true
                    }
                    Some(WireStopReason::Text(s)) => {
                        rmp::write_str(buf, s).expect(IN_MEMORY);
                        true
                    }
                    None => false,
                },
                OutputField::KvTransferParams => self
                    .kv_transfer_params
                    .as_ref()
                    .map(|p| write_value(buf, p))
                    .is_some(),
                OutputField::PrefillStats => self
                    .prefill_stats
                    .map(|s| write_value(buf, &s.to_value()))
                    .is_some(),
                OutputField::NumNansInLogits => {
                    rmp::write_uint(buf, u64::from(self.num_nans_in_logits)).expect(IN_MEMORY);
                    true
                }
                OutputField::Other => false,
            };
            if !written {
                default.write(buf);
            }
        }
    }

    pub fn from_value(layout: &Layout, value: &Value, aux: &[Bytes]) -> Result<Self, WireError> {
        let r = Reader::new("EngineCoreOutput", layout.version, layout.output, value)?;
        let new_token_ids = match r.get("new_token_ids")? {
            Some(v) => token_ids(v).ok_or_else(|| r.mistyped("new_token_ids", "token ids", v))?,
            None => Vec::new(),
        };
        let finish_reason = match r.opt("finish_reason")? {
            Some(v) => Some(
                v.as_i64()
                    .and_then(finish_from_code)
                    .ok_or_else(|| r.mistyped("finish_reason", "a code 0..=4", v))?,
            ),
            None => None,
        };
        let stop_reason = match r.opt("stop_reason")? {
            Some(Value::String(s)) if s.as_str().is_some() => {
                Some(WireStopReason::Text(s.as_str().unwrap().to_string()))
            }
            Some(v) => Some(WireStopReason::Token(v.as_i64().ok_or_else(|| {
                r.mistyped("stop_reason", "an int, a string or nil", v)
            })?)),
            None => None,
        };
        let prefill_stats = match r.opt("prefill_stats")? {
            Some(v) => Some(
                PrefillStats::from_value(v)
                    .ok_or_else(|| r.mistyped("prefill_stats", "a PrefillStats map", v))?,
            ),
            None => None,
        };
        Ok(Self {
            request_id: r.str("request_id")?,
            new_token_ids,
            new_logprobs: r
                .opt("new_logprobs")?
                .map(|v| LogprobsLists::from_value(v, aux).map(Box::new))
                .transpose()?,
            new_prompt_logprobs_tensors: r
                .opt("new_prompt_logprobs_tensors")?
                .map(|v| LogprobsTensors::from_value(v, aux).map(Box::new))
                .transpose()?,
            finish_reason,
            stop_reason,
            kv_transfer_params: r.opt("kv_transfer_params")?.cloned(),
            prefill_stats,
            num_nans_in_logits: r.int_or("num_nans_in_logits", 0)?.try_into().unwrap_or(0),
        })
    }
}

/// An `EngineCoreOutputs` message written one output at a time, so that an
/// output can be dropped as soon as it is encoded (the engine core encodes
/// where it steps, and hands the writer bytes).
///
/// ```
/// use mock_engine::wire::{EngineCoreOutput, EngineCoreOutputs, OutputsWriter, VllmVersion};
///
/// let layout = VllmVersion::V0_32_0.layout();
/// let mut writer = OutputsWriter::new(layout);
/// writer.push(&EngineCoreOutput::tokens("req-1", vec![33]));
/// let bytes = writer.finish(0, 1.5);
/// let batch = EngineCoreOutputs::batch(0, vec![EngineCoreOutput::tokens("req-1", vec![33])], 1.5);
/// assert_eq!(bytes, batch.encode(layout));
/// assert!(writer.is_empty());
/// ```
#[derive(Debug)]
pub struct OutputsWriter {
    /// `EngineCoreOutputs`' own fields.
    fields: &'static [Field],
    plan: Vec<(OutputField, FieldDefault)>,
    outputs: Vec<u8>,
    count: u32,
}

impl OutputsWriter {
    pub fn new(layout: &Layout) -> Self {
        Self {
            fields: layout.outputs,
            plan: OutputField::plan(layout),
            outputs: Vec::new(),
            count: 0,
        }
    }

    pub fn push(&mut self, output: &EngineCoreOutput) {
        output.write(&self.plan, &mut self.outputs);
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The step message of the outputs pushed since the last one.
    pub fn finish(&mut self, engine_index: u32, timestamp: f64) -> Vec<u8> {
        let header = EngineCoreOutputs {
            engine_index,
            weight_version: Some(DEFAULT_WEIGHT_VERSION.to_string()),
            ..EngineCoreOutputs::default()
        };
        self.write_message(&header, timestamp)
    }

    /// `message`'s fields around the outputs pushed so far, which it is
    /// taken to hold.
    fn write_message(&mut self, message: &EngineCoreOutputs, timestamp: f64) -> Vec<u8> {
        use rmp::encode as rmp;
        let mut buf = Vec::with_capacity(64 + self.outputs.len());
        write_fields(&mut buf, self.fields, |name, buf| {
            match name {
                "engine_index" => {
                    rmp::write_uint(buf, u64::from(message.engine_index)).expect(IN_MEMORY);
                }
                "outputs" => {
                    rmp::write_array_len(buf, self.count).expect(IN_MEMORY);
                    buf.extend_from_slice(&self.outputs);
                }
                "timestamp" => rmp::write_f64(buf, timestamp).expect(IN_MEMORY),
                "utility_output" => match &message.utility_output {
                    Some(u) => write_value(buf, &u.to_value()),
                    None => return false,
                },
                "finished_requests" => match &message.finished_requests {
                    Some(f) => write_value(
                        buf,
                        &Value::Array(f.iter().map(|s| Value::from(s.as_str())).collect()),
                    ),
                    None => return false,
                },
                "weight_version" => match &message.weight_version {
                    Some(v) => rmp::write_str(buf, v).expect(IN_MEMORY),
                    None => return false,
                },
                _ => return false,
            }
            true
        });
        self.outputs.clear();
        self.count = 0;
        buf
    }
}

/// The fields of `EngineCoreOutput` we write, so that each output of a
/// message is written without matching field names again.
#[derive(Debug, Clone, Copy)]
enum OutputField {
    RequestId,
    NewTokenIds,
    NewLogprobs,
    NewPromptLogprobsTensors,
    FinishReason,
    StopReason,
    KvTransferParams,
    PrefillStats,
    NumNansInLogits,
    /// A field we never set: its default.
    Other,
}

impl OutputField {
    fn plan(layout: &Layout) -> Vec<(Self, FieldDefault)> {
        layout
            .output
            .iter()
            .map(|f| {
                let field = match f.name {
                    "request_id" => Self::RequestId,
                    "new_token_ids" => Self::NewTokenIds,
                    "new_logprobs" => Self::NewLogprobs,
                    "new_prompt_logprobs_tensors" => Self::NewPromptLogprobsTensors,
                    "finish_reason" => Self::FinishReason,
                    "stop_reason" => Self::StopReason,
                    "kv_transfer_params" => Self::KvTransferParams,
                    "prefill_stats" => Self::PrefillStats,
                    "num_nans_in_logits" => Self::NumNansInLogits,
                    _ => Self::Other,
                };
                (field, f.default)
            })
            .collect()
    }
}

/// `UtilityOutput`: array-like WITHOUT `omit_defaults`, so always three
/// positions; `result` is a `UtilityResult`, encoded as `[type_info, value]`
/// with `type_info` nil unless insecure serialization is on.
#[derive(Debug, Clone, PartialEq)]
pub struct UtilityOutput {
    pub call_id: u64,
    pub failure_message: Option<String>,
    pub result: Option<Value>,
}

impl UtilityOutput {
    pub fn success(call_id: u64, result: Value) -> Self {
        Self {
            call_id,
            failure_message: None,
            result: Some(result),
        }
    }

    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            Value::from(self.call_id),
            self.failure_message
                .as_deref()
                .map_or(Value::Nil, Value::from),
            self.result
                .as_ref()
                .map_or(Value::Nil, |r| Value::Array(vec![Value::Nil, r.clone()])),
        ])
    }

    fn from_value(value: &Value) -> Option<Self> {
        let items = value.as_array()?;
        let call_id = items.first()?.as_u64()?;
        let failure_message = match items.get(1) {
            None | Some(Value::Nil) => None,
            Some(v) => Some(v.as_str()?.to_string()),
        };
        let result = match items.get(2) {
            None | Some(Value::Nil) => None,
            Some(v) => match v.as_array()?.as_slice() {
                [Value::Nil, result] => Some(result.clone()),
                _ => return None,
            },
        };
        Some(Self {
            call_id,
            failure_message,
            result,
        })
    }
}

/// One message on the output socket (`EngineCoreOutputs`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineCoreOutputs {
    pub engine_index: u32,
    pub outputs: Vec<EngineCoreOutput>,
    /// Monotonic seconds; vLLM fills it in when the message is built.
    pub timestamp: f64,
    pub utility_output: Option<UtilityOutput>,
    pub finished_requests: Option<Vec<String>>,
    /// Set on every step's message by a real engine; absent on utility answers.
    pub weight_version: Option<String>,
}

impl EngineCoreOutputs {
    /// One step's outputs, stamped with the default weight version as a
    /// real engine stamps them.
    pub fn batch(engine_index: u32, outputs: Vec<EngineCoreOutput>, timestamp: f64) -> Self {
        Self {
            engine_index,
            outputs,
            timestamp,
            weight_version: Some(DEFAULT_WEIGHT_VERSION.to_string()),
            ..Self::default()
        }
    }

    /// A utility answer travels alone: the Rust frontend rejects a message
    /// that mixes it with request outputs.
    pub fn utility(engine_index: u32, output: UtilityOutput, timestamp: f64) -> Self {
        Self {
            engine_index,
            timestamp,
            utility_output: Some(output),
            ..Self::default()
        }
    }

    pub fn to_value(&self, layout: &Layout) -> Value {
        let mut w = Writer::new(layout.outputs);
        w.set("engine_index", self.engine_index);
        w.set(
            "outputs",
            Value::Array(self.outputs.iter().map(|o| o.to_value(layout)).collect()),
        );
        w.set("timestamp", Value::F64(self.timestamp));
        if let Some(u) = &self.utility_output {
            w.set("utility_output", u.to_value());
        }
        if let Some(f) = &self.finished_requests {
            w.set(
                "finished_requests",
                Value::Array(f.iter().map(|s| Value::from(s.as_str())).collect()),
            );
        }
        if let Some(v) = &self.weight_version {
            w.set_if_present("weight_version", v.as_str());
        }
        w.finish()
    }

    /// The bytes of [`Self::to_value`], written without the value tree.
    pub fn encode(&self, layout: &Layout) -> Vec<u8> {
        let mut outputs = OutputsWriter::new(layout);
        for o in &self.outputs {
            outputs.push(o);
        }
        outputs.write_message(self, self.timestamp)
    }

    /// `aux` holds the extra frames of a multipart message (large arrays).
    pub fn decode(layout: &Layout, bytes: &[u8], aux: &[Bytes]) -> Result<Self, WireError> {
        const M: &str = "EngineCoreOutputs";
        let value = super::from_bytes(M, bytes)?;
        let r = Reader::new(M, layout.version, layout.outputs, &value)?;
        let outputs = match r.get("outputs")? {
            Some(Value::Array(items)) => items
                .iter()
                .map(|o| EngineCoreOutput::from_value(layout, o, aux))
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(r.mistyped("outputs", "a list", other)),
            None => Vec::new(),
        };
        let utility_output = match r.opt("utility_output")? {
            Some(v) => Some(UtilityOutput::from_value(v).ok_or_else(|| {
                r.mistyped("utility_output", "[call_id, failure, [nil, result]]", v)
            })?),
            None => None,
        };
        let finished_requests = match r.opt("finished_requests")? {
            Some(v) => Some(
                v.as_array()
                    .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| r.mistyped("finished_requests", "a list of ids", v))?,
            ),
            None => None,
        };
        Ok(Self {
            engine_index: r.int_or("engine_index", 0)?.try_into().unwrap_or(0),
            outputs,
            timestamp: r.float_or("timestamp", 0.0)?,
            utility_output,
            finished_requests,
            weight_version: r.opt_str_if_present("weight_version")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::VllmVersion;

    /// The direct encoder against the value tree, on what no captured vLLM
    /// message covers (tests/wire_roundtrip.rs checks the rest byte for byte).
    #[test]
    fn direct_encoding_is_the_value_trees_bytes() {
        let mut negative = EngineCoreOutput::tokens("neg", vec![0, 127, 128, 65_536, u32::MAX]);
        negative.stop_reason = Some(WireStopReason::Token(-40));
        negative.num_nans_in_logits = 300;
        let mut long_id = EngineCoreOutput::tokens("x".repeat(300), vec![]);
        long_id.finish_reason = Some(FinishReason::Repetition);
        let messages = [
            EngineCoreOutputs::batch(70_000, vec![negative, long_id], -1.25),
            EngineCoreOutputs::utility(1, UtilityOutput::success(u64::MAX, Value::Nil), 2.0),
            EngineCoreOutputs {
                finished_requests: Some(vec!["a".into(), "b".into()]),
                ..EngineCoreOutputs::default()
            },
        ];
        for version in [VllmVersion::V0_32_0, VllmVersion::V0_33_0] {
            let layout = version.layout();
            for message in &messages {
                assert_eq!(
                    message.encode(layout),
                    crate::wire::to_bytes(&message.to_value(layout)),
                    "{version:?}: {message:?}"
                );
            }
        }
    }
}
