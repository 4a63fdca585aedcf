//! Field order of every positional message: read from a vLLM install at
//! start-up ([`super::LayoutFile`]), or one hand-written table per release
//! (the tested fallback for a bare `vllm-rs` binary).
//!
//! Facts, from `vllm/v1/engine/__init__.py` of each release: a struct declared
//! `array_like=True` is a msgpack array in declaration order. Defaults matter
//! when reading: a shorter array means the missing fields have theirs.
//!
//! What `genconform layout` read from the installed wheels (2026-12), kept in
//! `tests/data/layouts/v<V>.json`, each equal to its table below (a test):
//! - 0.30.0: `EngineCoreRequest` has no `kv_hints` (21 fields),
//!   `EngineCoreOutput` no `prompt_token_id_logprobs` (17),
//!   `EngineCoreOutputs` no `weight_version` (8).
//! - 0.31.0: as 0.32.0, except `EngineCoreOutputs` has no `weight_version`.
//! - 0.33.0: 0.32.0 with a trailing `EngineCoreOutput.error`.
//! - 0.34.0: 0.33.0 with a trailing `EngineCoreRequest.block_hashes` and
//!   `EngineCoreOutput.watermarking` (both default nil; neither means anything
//!   to the mock engine, so it reads the one and sends the other's default).
//! - Every release 0.30.0 to 0.34.0: `UtilityOutput` is `[call_id,
//!   failure_message, result]`, `LogprobsLists` has 4 fields and
//!   `LogprobsTensors` 5, as the mock writes them.

use std::fmt;
use std::str::FromStr;

/// A field's default: the value of a field a shorter array leaves off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldDefault {
    /// No default: always on the wire.
    Required,
    Nil,
    Int(i64),
    Bool(bool),
    Float(f64),
    EmptyArray,
}

impl FieldDefault {
    /// The default's msgpack bytes, as [`Self::value`] would encode (nil
    /// for a required field): the direct encoders write one per field they
    /// leave unset, for every output.
    pub fn write(self, buf: &mut Vec<u8>) {
        use super::IN_MEMORY;
        use rmp::encode as rmp;
        match self {
            Self::Required | Self::Nil => rmp::write_nil(buf).expect(IN_MEMORY),
            Self::Int(i) if i >= 0 => {
                rmp::write_uint(buf, i as u64).expect(IN_MEMORY);
            }
            Self::Int(i) => {
                rmp::write_sint(buf, i).expect(IN_MEMORY);
            }
            Self::Bool(b) => rmp::write_bool(buf, b).expect(IN_MEMORY),
            Self::Float(x) => rmp::write_f64(buf, x).expect(IN_MEMORY),
            Self::EmptyArray => {
                rmp::write_array_len(buf, 0).expect(IN_MEMORY);
            }
        }
    }

    /// The default as JSON: what a field left off means (`null` for a
    /// required field, which has none).
    pub fn json(self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Self::Required | Self::Nil => J::Null,
            Self::Int(i) => J::from(i),
            Self::Bool(b) => J::Bool(b),
            Self::Float(x) => J::from(x),
            Self::EmptyArray => J::Array(Vec::new()),
        }
    }

    /// The default a layout file gives as JSON (`null`, a number, a bool,
    /// `[]`); `None` for one the mock cannot send.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        use serde_json::Value as J;
        match value {
            J::Null => Some(Self::Nil),
            J::Bool(b) => Some(Self::Bool(*b)),
            J::Number(n) if n.is_f64() => n.as_f64().map(Self::Float),
            J::Number(n) => n.as_i64().map(Self::Int),
            J::Array(a) if a.is_empty() => Some(Self::EmptyArray),
            _ => None,
        }
    }

    pub fn value(self) -> Option<rmpv::Value> {
        match self {
            Self::Required => None,
            Self::Nil => Some(rmpv::Value::Nil),
            Self::Int(i) => Some(rmpv::Value::from(i)),
            Self::Bool(b) => Some(rmpv::Value::Boolean(b)),
            Self::Float(x) => Some(rmpv::Value::F64(x)),
            Self::EmptyArray => Some(rmpv::Value::Array(Vec::new())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    pub name: &'static str,
    pub default: FieldDefault,
}

const fn f(name: &'static str, default: FieldDefault) -> Field {
    Field { name, default }
}

use FieldDefault::{Bool, EmptyArray, Float, Int, Nil, Required};

/// The positional layouts of one vLLM release (or build).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    pub version: &'static str,
    /// Whether these tables were checked against that release's source
    /// (always, for one read from an install).
    pub verified: bool,
    /// Where the layout comes from: `hand-written table` or the install.
    pub source: &'static str,
    pub request: &'static [Field],
    pub output: &'static [Field],
    pub outputs: &'static [Field],
}

/// The positional structs a [`Layout`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Struct {
    Request,
    Output,
    Outputs,
}

impl Struct {
    pub const ALL: [Self; 3] = [Self::Request, Self::Output, Self::Outputs];

    /// vLLM's class name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Request => "EngineCoreRequest",
            Self::Output => "EngineCoreOutput",
            Self::Outputs => "EngineCoreOutputs",
        }
    }
}

impl fmt::Display for Struct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Layout {
    pub fn position(fields: &[Field], name: &str) -> Option<usize> {
        fields.iter().position(|f| f.name == name)
    }

    pub fn fields(&self, s: Struct) -> &'static [Field] {
        match s {
            Struct::Request => self.request,
            Struct::Output => self.output,
            Struct::Outputs => self.outputs,
        }
    }

    /// This layout for the rest of the process.
    ///
    /// Deliberately leaked rather than reference-counted: a process reads a
    /// layout once at start-up and speaks it until it exits, and every wire
    /// type (readers, writers, [`super::WireError`]) names fields and versions
    /// with `&'static str`, which an `Arc<Layout>` would turn into lifetimes
    /// threaded through the whole protocol for no gain. Equal layouts are
    /// leaked once (a harness that starts many frontends of one install
    /// reads the same layout each time), so what leaks is bounded by the
    /// installs a process talks to: a few KiB each.
    pub fn leak(self) -> &'static Layout {
        static LEAKED: std::sync::Mutex<Vec<&'static Layout>> = std::sync::Mutex::new(Vec::new());
        let mut leaked = LEAKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(same) = leaked.iter().find(|l| ***l == self) {
            return same;
        }
        let layout: &'static Layout = Box::leak(Box::new(self));
        leaked.push(layout);
        layout
    }
}

/// A name for the rest of the process (see [`Layout::leak`]).
pub(crate) fn leak_str(s: &str) -> &'static str {
    static LEAKED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut leaked = LEAKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(same) = leaked.iter().find(|l| **l == s) {
        return same;
    }
    let name: &'static str = Box::leak(s.to_string().into_boxed_str());
    leaked.push(name);
    name
}

/// 0.34.0's `EngineCoreRequest`; 0.34.0 appended `block_hashes`.
const REQUEST_0_34: &[Field] = &[
    f("request_id", Required),
    f("prompt_token_ids", Required),
    f("mm_features", Required),
    f("sampling_params", Required),
    f("pooling_params", Required),
    f("arrival_time", Required),
    f("lora_request", Required),
    f("cache_salt", Required),
    f("data_parallel_rank", Required),
    f("prompt_embeds", Nil),
    f("prompt_is_token_ids", Nil),
    f("client_index", Int(0)),
    f("current_wave", Int(0)),
    f("priority", Int(0)),
    f("trace_headers", Nil),
    f("resumable", Bool(false)),
    f("external_req_id", Nil),
    f("reasoning_ended", Nil),
    f("reasoning_parser_kwargs", Nil),
    f("abort_immediately", Bool(false)),
    f("session_id", Nil),
    f("kv_hints", Nil),
    f("block_hashes", Nil),
];

/// 0.32.0's is 0.34.0's without the trailing `block_hashes`.
const REQUEST_0_32: &[Field] = REQUEST_0_34.split_at(REQUEST_0_34.len() - 1).0;

/// 0.30.0's is 0.32.0's without the trailing `kv_hints`.
const REQUEST_0_30: &[Field] = REQUEST_0_32.split_at(REQUEST_0_32.len() - 1).0;

/// 0.34.0's `EngineCoreOutput`. 0.33.0 appended `error: RequestError | None`
/// (sent with finish reason `error`, e.g. when a paused engine rejects a
/// request), 0.34.0 `watermarking`.
const OUTPUT_0_34: &[Field] = &[
    f("request_id", Required),
    f("new_token_ids", Required),
    f("new_logprobs", Nil),
    f("new_prompt_logprobs_tensors", Nil),
    f("pooling_output", Nil),
    f("finish_reason", Nil),
    f("stop_reason", Nil),
    f("events", Nil),
    f("kv_transfer_params", Nil),
    f("ec_transfer_params", Nil),
    f("trace_headers", Nil),
    f("prefill_stats", Nil),
    f("routed_experts", Nil),
    f("num_nans_in_logits", Int(0)),
    f("mm_cache_miss_hashes", Nil),
    f("new_sampling_mask", Nil),
    f("spec_decode_metrics", Nil),
    f("prompt_token_id_logprobs", Nil),
    f("error", Nil),
    f("watermarking", Nil),
];

/// 0.33.0's is 0.34.0's without the trailing `watermarking`.
const OUTPUT_0_33: &[Field] = OUTPUT_0_34.split_at(OUTPUT_0_34.len() - 1).0;

/// 0.31.0 and 0.32.0's is 0.33.0's without the trailing `error`.
const OUTPUT_0_32: &[Field] = OUTPUT_0_33.split_at(OUTPUT_0_33.len() - 1).0;

/// 0.30.0's is 0.32.0's without the trailing `prompt_token_id_logprobs`.
const OUTPUT_0_30: &[Field] = OUTPUT_0_32.split_at(OUTPUT_0_32.len() - 1).0;

const OUTPUTS_0_32: &[Field] = &[
    f("engine_index", Int(0)),
    f("outputs", EmptyArray),
    f("scheduler_stats", Nil),
    f("timestamp", Float(0.0)),
    f("utility_output", Nil),
    f("finished_requests", Nil),
    f("wave_complete", Nil),
    f("start_wave", Nil),
    f("weight_version", Nil),
];

/// 0.30.0 and 0.31.0's is 0.32.0's without the trailing `weight_version`.
const OUTPUTS_0_30: &[Field] = OUTPUTS_0_32.split_at(OUTPUTS_0_32.len() - 1).0;

/// [`Layout::source`] of the hand-written tables.
pub const TABLE: &str = "hand-written table";

/// A vLLM release whose wire layout we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VllmVersion {
    V0_30_0,
    V0_31_0,
    V0_32_0,
    V0_33_0,
    V0_34_0,
}

impl VllmVersion {
    pub const ALL: [Self; 5] = [
        Self::V0_30_0,
        Self::V0_31_0,
        Self::V0_32_0,
        Self::V0_33_0,
        Self::V0_34_0,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_30_0 => "0.30.0",
            Self::V0_31_0 => "0.31.0",
            Self::V0_32_0 => "0.32.0",
            Self::V0_33_0 => "0.33.0",
            Self::V0_34_0 => "0.34.0",
        }
    }

    /// The table to compare a build of `version` with when it has none of
    /// its own: the newest release not newer than it (a `main` build of
    /// `0.35.0.dev12+g1234` is compared with 0.34.0), else the oldest.
    ///
    /// ```
    /// use mock_engine::wire::VllmVersion;
    /// assert_eq!(VllmVersion::nearest("0.35.0.dev12+g1234"), VllmVersion::V0_34_0);
    /// assert_eq!(VllmVersion::nearest("0.33.1"), VllmVersion::V0_33_0);
    /// assert_eq!(VllmVersion::nearest("0.12.0"), VllmVersion::V0_30_0);
    /// ```
    pub fn nearest(version: &str) -> Self {
        let numbers = |v: &str| -> Vec<u64> {
            v.trim_start_matches('v')
                .split(['.', '+', '-'])
                .map_while(|part| part.parse().ok())
                .collect()
        };
        let wanted = numbers(version);
        Self::ALL
            .into_iter()
            .rev()
            .find(|v| numbers(v.as_str()) <= wanted)
            .unwrap_or(Self::ALL[0])
    }

    pub fn layout(self) -> &'static Layout {
        match self {
            Self::V0_30_0 => &LAYOUT_0_30_0,
            Self::V0_31_0 => &LAYOUT_0_31_0,
            Self::V0_32_0 => &LAYOUT_0_32_0,
            Self::V0_33_0 => &LAYOUT_0_33_0,
            Self::V0_34_0 => &LAYOUT_0_34_0,
        }
    }
}

/// Checked field by field against the installed 0.30.0 wheel
/// (`tests/data/layouts/v0.30.0.json`).
static LAYOUT_0_30_0: Layout = Layout {
    version: "0.30.0",
    verified: true,
    source: TABLE,
    request: REQUEST_0_30,
    output: OUTPUT_0_30,
    outputs: OUTPUTS_0_30,
};

/// Checked field by field against the installed 0.31.0 wheel.
static LAYOUT_0_31_0: Layout = Layout {
    version: "0.31.0",
    verified: true,
    source: TABLE,
    request: REQUEST_0_32,
    output: OUTPUT_0_32,
    outputs: OUTPUTS_0_30,
};

/// Checked field by field against the installed 0.32.0 wheel and against
/// bytes its own encoder produced (tests/data/v0.32.0).
static LAYOUT_0_32_0: Layout = Layout {
    version: "0.32.0",
    verified: true,
    source: TABLE,
    request: REQUEST_0_32,
    output: OUTPUT_0_32,
    outputs: OUTPUTS_0_32,
};

/// Checked against the installed 0.33.0 wheel (`v1/engine/__init__.py`) and
/// its encoder's bytes (tests/data/v0.33.0): requests and the outputs batch
/// are as in 0.32.0; each output gains a trailing `error` field. The ready
/// response gains three defaulted keys (`coord_store_port`,
/// `coordinator_input_address`, `coordinator_output_address`) that both
/// 0.33.0 frontends accept being left out.
static LAYOUT_0_33_0: Layout = Layout {
    version: "0.33.0",
    verified: true,
    source: TABLE,
    request: REQUEST_0_32,
    output: OUTPUT_0_33,
    outputs: OUTPUTS_0_32,
};

/// Checked field by field against the installed 0.34.0 wheel. Its
/// frontends send `prompt_token_ids` as a uint32 ndarray (see
/// `super::positional`); the layout is unchanged by that.
static LAYOUT_0_34_0: Layout = Layout {
    version: "0.34.0",
    verified: true,
    source: TABLE,
    request: REQUEST_0_34,
    output: OUTPUT_0_34,
    outputs: OUTPUTS_0_32,
};

impl fmt::Display for VllmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported vLLM version `{0}` (supported: 0.30.0 to 0.34.0)")]
pub struct UnsupportedVersion(pub String);

impl FromStr for VllmVersion {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s.trim_start_matches('v'))
            .ok_or_else(|| UnsupportedVersion(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_writes_the_bytes_of_its_value() {
        let defaults = [
            Required,
            Nil,
            Int(0),
            Int(127),
            Int(128),
            Int(-1),
            Int(-33),
            Int(i64::MIN),
            Bool(true),
            Float(0.5),
            EmptyArray,
        ];
        for default in defaults {
            let mut direct = Vec::new();
            default.write(&mut direct);
            let value = default.value().unwrap_or(rmpv::Value::Nil);
            assert_eq!(direct, super::super::to_bytes(&value), "{default:?}");
        }
    }
}
