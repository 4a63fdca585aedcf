//! Frontend -> engine messages on the input socket: `[type byte, payload, *aux]`.

use std::collections::BTreeMap;

use rmpv::Value;

use super::error::{Brief, WireError};
use super::layout::Layout;
use super::positional::{Reader, Writer, lookup};
use crate::engine_view::{self, EngineView};

/// The first frame of every input message (`EngineCoreRequestType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Add,
    Abort,
    StartDpWave,
    Utility,
}

impl RequestType {
    pub fn byte(self) -> u8 {
        match self {
            Self::Add => 0x00,
            Self::Abort => 0x01,
            Self::StartDpWave => 0x02,
            Self::Utility => 0x03,
        }
    }

    pub fn from_frame(frame: &[u8]) -> Result<Self, WireError> {
        match frame {
            [0x00] => Ok(Self::Add),
            [0x01] => Ok(Self::Abort),
            [0x02] => Ok(Self::StartDpWave),
            [0x03] => Ok(Self::Utility),
            [other] => Err(WireError::UnknownRequestType(*other)),
            _ => Err(WireError::Shape {
                message: "request type frame",
                expected: "exactly one byte",
                got: format!("{} bytes", frame.len()),
            }),
        }
    }
}

/// The `SamplingParams` fields a scripted engine acts on. On the wire a map
/// of the non-default fields (`omit_defaults=True`, not array-like).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// vLLM's default is 16 when the key is left off; `None` means the
    /// frontend sent nil (run to the context window).
    pub max_tokens: Option<u32>,
    pub logprobs: Option<i64>,
    pub prompt_logprobs: Option<i64>,
    /// Every field as sent, for logging and for fields we do not model.
    pub raw: Value,
}

const SAMPLING_MAX_TOKENS_DEFAULT: u32 = 16;

impl SamplingParams {
    /// Reads the map; the error names the first badly typed key.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        if !value.is_map() {
            return Err(format!("a map, got {}", Brief(value)));
        }
        let int = |key: &str| -> Result<Option<i64>, String> {
            match lookup(value, key) {
                None | Some(Value::Nil) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| format!("`{key}` as an integer, got {}", Brief(v))),
            }
        };
        let max_tokens = match lookup(value, "max_tokens") {
            None => Some(SAMPLING_MAX_TOKENS_DEFAULT),
            Some(_) => int("max_tokens")?.map(|n| n.clamp(0, i64::from(u32::MAX)) as u32),
        };
        Ok(Self {
            max_tokens,
            logprobs: int("logprobs")?,
            prompt_logprobs: int("prompt_logprobs")?,
            raw: value.clone(),
        })
    }

    /// Sampling params as a frontend sends them: only the given keys.
    pub fn from_pairs(pairs: &[(&str, Value)]) -> Result<Self, String> {
        Self::from_value(&Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        ))
    }
}

/// An ADD request (`EngineCoreRequest`), the fields a mock engine needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineCoreRequest {
    /// The frontend's id plus a random suffix: outputs echo it exactly.
    pub request_id: String,
    pub prompt_token_ids: Option<Vec<u32>>,
    pub sampling_params: Option<SamplingParams>,
    pub arrival_time: f64,
    pub data_parallel_rank: Option<i64>,
    /// Which output socket the answers go to.
    pub client_index: u32,
    pub priority: i64,
    /// The id the client chose, without the suffix.
    pub external_req_id: Option<String>,
    /// How many positions the frontend sent (the Rust frontend always sends
    /// them all, Python cuts trailing defaults).
    pub wire_len: usize,
    /// Everything the frontend asked, in a form two frontends can agree on.
    pub view: EngineView,
}

impl EngineCoreRequest {
    /// A token request with default sampling, as a test frontend sends it.
    pub fn new(request_id: impl Into<String>, prompt_token_ids: Vec<u32>) -> Self {
        Self {
            request_id: request_id.into(),
            prompt_token_ids: Some(prompt_token_ids),
            sampling_params: None,
            arrival_time: 0.0,
            data_parallel_rank: None,
            client_index: 0,
            priority: 0,
            external_req_id: None,
            wire_len: 0,
            view: EngineView::default(),
        }
    }

    pub fn decode(layout: &Layout, payload: &[u8]) -> Result<Self, WireError> {
        Self::decode_with_frames(layout, payload, &[])
    }

    /// [`Self::decode`] with the message's buffers after its type byte:
    /// `bufs[0]` is `payload`, and vLLM 0.34.0 on puts a long prompt's token
    /// ids (an ndarray "out of band") in a later one, which the array names by
    /// its index in `bufs` (vLLM's `MsgpackEncoder` counts the payload as 0).
    pub fn decode_with_frames(
        layout: &Layout,
        payload: &[u8],
        aux: &[bytes::Bytes],
    ) -> Result<Self, WireError> {
        const M: &str = "EngineCoreRequest";
        let value = super::from_bytes(M, payload)?;
        let r = Reader::new(M, layout.version, layout.request, &value)?;
        // Fields we ignore are still type-checked, so that a frontend whose
        // fields moved fails here instead of feeding the script garbage.
        if let Some(v) = r.opt("mm_features")?
            && !v.is_array()
        {
            return Err(r.mistyped("mm_features", "a list or nil", v));
        }
        if let Some(v) = r.opt("pooling_params")? {
            return Err(r.mistyped("pooling_params", "nil (a mock engine only generates)", v));
        }
        let sampling_params = match r.opt_map("sampling_params")? {
            Some(v) => Some(SamplingParams::from_value(v).map_err(|e| WireError::Field {
                message: M,
                version: layout.version,
                field: "sampling_params",
                position: Layout::position(layout.request, "sampling_params").unwrap_or(0),
                expected: "a SamplingParams map with integer counts",
                got: e,
            })?),
            None => None,
        };
        let request_id = r.str("request_id")?;
        let prompt_token_ids = r.opt_token_ids("prompt_token_ids", aux)?;
        let view = EngineView {
            request_id: request_id.clone(),
            prompt_token_ids: prompt_token_ids.clone().unwrap_or_default(),
            fields: view_fields(layout, &value, sampling_params.as_ref()),
        };
        Ok(Self {
            request_id,
            prompt_token_ids,
            sampling_params,
            arrival_time: r.float_or("arrival_time", 0.0)?,
            data_parallel_rank: r.opt_int("data_parallel_rank")?,
            client_index: u32::try_from(r.int_or("client_index", 0)?).map_err(|_| {
                r.mistyped("client_index", "a small non-negative integer", &Value::Nil)
            })?,
            priority: r.int_or("priority", 0)?,
            external_req_id: r.opt_str("external_req_id")?,
            wire_len: value.as_array().map_or(0, Vec::len),
            view,
        })
    }

    /// Encodes like the Python frontend (trailing defaults cut).
    pub fn encode(&self, layout: &Layout) -> Vec<u8> {
        let mut w = Writer::new(layout.request);
        w.set("request_id", self.request_id.as_str());
        w.set(
            "prompt_token_ids",
            self.prompt_token_ids.as_ref().map_or(Value::Nil, |ids| {
                Value::Array(ids.iter().map(|&t| Value::from(t)).collect())
            }),
        );
        w.set(
            "sampling_params",
            self.sampling_params
                .as_ref()
                .map_or(Value::Nil, |s| s.raw.clone()),
        );
        w.set("arrival_time", Value::F64(self.arrival_time));
        w.set(
            "data_parallel_rank",
            self.data_parallel_rank.map_or(Value::Nil, Value::from),
        );
        w.set("client_index", self.client_index);
        w.set("priority", self.priority);
        w.set(
            "external_req_id",
            self.external_req_id
                .as_deref()
                .map_or(Value::Nil, Value::from),
        );
        super::to_bytes(&w.finish())
    }
}

/// The fields of a decoded request that differ from their defaults, for its
/// [`EngineView`]: every field of the layout but the id, the prompt (the
/// view keeps them apart) and the run-dependent ones.
fn view_fields(
    layout: &Layout,
    value: &Value,
    sampling: Option<&SamplingParams>,
) -> BTreeMap<String, serde_json::Value> {
    let sent = value.as_array().map_or(&[][..], Vec::as_slice);
    let mut fields = BTreeMap::new();
    for (position, field) in layout.request.iter().enumerate() {
        let name = field.name;
        if matches!(name, "request_id" | "prompt_token_ids")
            || engine_view::RUN_DEPENDENT_FIELDS.contains(&name)
        {
            continue;
        }
        if name == "sampling_params" {
            if let Some(serde_json::Value::Object(map)) =
                sampling.map(|s| engine_view::msgpack_to_json(&s.raw))
            {
                let map = engine_view::canonical_sampling(&map, layout.version);
                fields.insert(name.to_string(), serde_json::Value::Object(map));
            }
            continue;
        }
        let Some(sent) = sent.get(position) else {
            continue;
        };
        let sent = engine_view::msgpack_to_json(sent);
        if engine_view::differs_from_default(&sent, &field.default.json()) {
            fields.insert(name.to_string(), engine_view::comparable(name, &sent));
        }
    }
    fields
}

/// ABORT: a list of request ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortRequest(pub Vec<String>);

impl AbortRequest {
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        const M: &str = "abort request";
        let value = super::from_bytes(M, payload)?;
        value
            .as_array()
            .and_then(|ids| {
                ids.iter()
                    .map(|id| id.as_str().map(str::to_string))
                    .collect()
            })
            .map(Self)
            .ok_or_else(|| WireError::Shape {
                message: M,
                expected: "a list of request id strings",
                got: Brief(&value).to_string(),
            })
    }

    pub fn encode(&self) -> Vec<u8> {
        super::to_bytes(&Value::Array(
            self.0.iter().map(|s| Value::from(s.as_str())).collect(),
        ))
    }
}

/// UTILITY: `(client_index, call_id, method_name, args)`.
#[derive(Debug, Clone, PartialEq)]
pub struct UtilityCall {
    pub client_index: u32,
    pub call_id: u64,
    pub method: String,
    pub args: Vec<Value>,
}

impl UtilityCall {
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        const M: &str = "utility call";
        let value = super::from_bytes(M, payload)?;
        let bad = || WireError::Shape {
            message: M,
            expected: "[client_index, call_id, method_name, args]",
            got: Brief(&value).to_string(),
        };
        let [client_index, call_id, method, args] =
            value.as_array().map(Vec::as_slice).unwrap_or(&[])
        else {
            return Err(bad());
        };
        Ok(Self {
            client_index: client_index
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .ok_or_else(bad)?,
            call_id: call_id.as_u64().ok_or_else(bad)?,
            method: method.as_str().ok_or_else(bad)?.to_string(),
            args: args.as_array().cloned().ok_or_else(bad)?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        super::to_bytes(&Value::Array(vec![
            Value::from(self.client_index),
            Value::from(self.call_id),
            Value::from(self.method.as_str()),
            Value::Array(self.args.clone()),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_as_a_uint32_ndarray_read_inline_or_from_an_extra_frame() {
        // vLLM 0.34.0's frontends send `prompt_token_ids` as numpy's
        // `["=u4", [n], ext 3 <bytes>]`, or with a frame index when long.
        let layout = crate::wire::VllmVersion::V0_33_0.layout();
        let payload = EngineCoreRequest::new("r", vec![1]).encode(layout);
        let Value::Array(mut value) = crate::wire::from_bytes("test", &payload).unwrap() else {
            panic!("a request is an array")
        };
        let bytes: Vec<u8> = [3u32, 2012, 11, 4]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect();
        let array = |data| Value::Array(vec!["=u4".into(), Value::Array(vec![4.into()]), data]);
        value[1] = array(Value::Ext(3, bytes.clone()));
        let inline = crate::wire::to_bytes(&Value::Array(value.clone()));
        let request = EngineCoreRequest::decode(layout, &inline).unwrap();
        assert_eq!(request.prompt_token_ids, Some(vec![3, 2012, 11, 4]));
        value[1] = array(Value::from(1));
        let indexed = crate::wire::to_bytes(&Value::Array(value.clone()));
        let frames = [
            bytes::Bytes::from(indexed.clone()),
            bytes::Bytes::from(bytes),
        ];
        let request = EngineCoreRequest::decode_with_frames(layout, &indexed, &frames).unwrap();
        assert_eq!(request.prompt_token_ids, Some(vec![3, 2012, 11, 4]));
        let e = EngineCoreRequest::decode(layout, &indexed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prompt_token_ids"), "no buffer 1: {e}");
        value[1] = Value::Array(vec!["=f4".into()]);
        let e =
            EngineCoreRequest::decode(layout, &crate::wire::to_bytes(&Value::Array(value.clone())))
                .unwrap_err()
                .to_string();
        assert!(e.contains("a 1-D integer ndarray"), "{e}");
    }

    #[test]
    fn utility_call_ids_use_the_whole_u64_range() {
        // The Python frontend's call ids are `uuid1().int >> 64`.
        let call = UtilityCall {
            client_index: 0,
            call_id: 14_031_856_707_665_465_841,
            method: "reset_mm_cache".into(),
            args: vec![],
        };
        assert_eq!(UtilityCall::decode(&call.encode()).unwrap(), call);
    }
}
