//! `POST /inference/v1/generate` on the wire: the request, the body, the
//! stream chunks, in vllm-rs's field order. Stream chunks omit what is null;
//! the body spells every field out, `null` included.
//!
//! The request is read by hand, as vllm-rs reads it. Type names matter here:
//! serde puts them in its messages ("expected struct GenerateRequest"), which
//! reach the client verbatim. vllm-rs reads the body and `sampling_params` as
//! maps (a JSON array is refused where a struct is expected) and buffers
//! sampling parameters before typing them, so a bad one is reported at the end
//! of `sampling_params`. We keep those messages byte for byte, but nothing we
//! do not use is kept: unknown fields are skipped as they are read
//! (`Skipped`), and a buffered parameter is its JSON text, so a body's memory
//! cost is a small multiple of its size whatever it holds.

use std::fmt;

use mock_engine::script::StopReason;
use serde::de::value::MapDeserializer;
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::logprobs::{GenerateLogProbs, PromptLogprobs};
use super::weight_versions::WeightVersionSpan;
use crate::routes::sampling::{SAMPLING_PARAM_NAMES, SamplingParams};
use crate::routes::usage::{StreamOptions, Usage};

/// The body, typed. Unknown fields are accepted and ignored.
///
/// ```
/// use reference_server::routes::generate::types::GenerateRequest;
/// let body = r#"{"token_ids": [1, 2], "sampling_params": {"max_tokens": 4}, "extra": [0, 0]}"#;
/// let request: GenerateRequest = serde_json::from_str(body).unwrap();
/// assert_eq!(request.sampling_params.inner.max_tokens, Some(4));
/// ```
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub request_id: Option<String>,
    pub model: Option<String>,
    pub token_ids: Vec<u32>,
    pub sampling_params: GenerateSamplingParams,
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub cache_salt: Option<String>,
    pub priority: i32,
    /// Checked to be a map (or null); the engine is not told.
    pub kv_transfer_params: Option<TransferParams>,
    pub ec_transfer_params: Option<TransferParams>,
    pub return_token_ids: Option<bool>,
}

impl<'de> Deserialize<'de> for GenerateRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A map only: serde's derived structs would also take a JSON array.
        deserializer.deserialize_map(GenerateRequestVisitor)
    }
}

struct GenerateRequestVisitor;

/// Reads one field into its slot, refusing a second occurrence as serde's derive does.
fn read_once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Visitor<'de> for GenerateRequestVisitor {
    type Value = GenerateRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct GenerateRequest")
    }

    /// What serde's derive does for the struct, except that an unknown field
    /// is walked through ([`Skipped`]) rather than kept.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GenerateRequest, A::Error> {
        let (mut request_id, mut model, mut token_ids, mut sampling_params) =
            (None, None, None, None);
        let (mut stream, mut stream_options, mut cache_salt, mut priority) =
            (None, None, None, None);
        let (mut kv_transfer_params, mut ec_transfer_params, mut return_token_ids) =
            (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "request_id" => read_once(&mut map, &mut request_id, "request_id")?,
                "model" => read_once(&mut map, &mut model, "model")?,
                "token_ids" => read_once(&mut map, &mut token_ids, "token_ids")?,
                "sampling_params" => read_once(&mut map, &mut sampling_params, "sampling_params")?,
                "stream" => read_once(&mut map, &mut stream, "stream")?,
                "stream_options" => read_once(&mut map, &mut stream_options, "stream_options")?,
                "cache_salt" => read_once(&mut map, &mut cache_salt, "cache_salt")?,
                "priority" => read_once(&mut map, &mut priority, "priority")?,
                "kv_transfer_params" => {
                    read_once(&mut map, &mut kv_transfer_params, "kv_transfer_params")?
                }
                "ec_transfer_params" => {
                    read_once(&mut map, &mut ec_transfer_params, "ec_transfer_params")?
                }
                "return_token_ids" => {
                    read_once(&mut map, &mut return_token_ids, "return_token_ids")?
                }
                _ => {
                    map.next_value::<Skipped>()?;
                }
            }
        }
        Ok(GenerateRequest {
            token_ids: token_ids.ok_or_else(|| de::Error::missing_field("token_ids"))?,
            sampling_params: sampling_params
                .ok_or_else(|| de::Error::missing_field("sampling_params"))?,
            request_id: request_id.flatten(),
            model: model.flatten(),
            stream: stream.unwrap_or_default(),
            stream_options: stream_options.flatten(),
            cache_salt: cache_salt.flatten(),
            priority: priority.unwrap_or_default(),
            kv_transfer_params: kv_transfer_params.flatten(),
            ec_transfer_params: ec_transfer_params.flatten(),
            return_token_ids: return_token_ids.flatten(),
        })
    }
}

/// A value we do not keep, read element by element so that a syntax error in
/// it is reported at its path (`pad[3]`), as when vllm-rs buffers it, but at no
/// memory cost. (`IgnoredAny` skips the text whole and reports only `pad`.)
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkippedVisitor)
    }
}

struct SkippedVisitor;

impl<'de> Visitor<'de> for SkippedVisitor {
    type Value = Skipped;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_unit<E>(self) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_none<E>(self) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skipped, D::Error> {
        Skipped::deserialize(d)
    }
    fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Skipped, S::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Skipped, M::Error> {
        while map.next_entry::<Skipped, Skipped>()?.is_some() {}
        Ok(Skipped)
    }
}

/// `kv_transfer_params` / `ec_transfer_params`: any JSON object, which we do not keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferParams;

impl<'de> Deserialize<'de> for TransferParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyMap;
        impl<'de> Visitor<'de> for AnyMap {
            type Value = TransferParams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TransferParams, A::Error> {
                while map.next_entry::<String, Skipped>()?.is_some() {}
                Ok(TransferParams)
            }
        }
        deserializer.deserialize_map(AnyMap)
    }
}

/// `sampling_params`: `n` (only 1 is allowed) beside the parameters the engine takes.
#[derive(Debug, Clone)]
pub struct GenerateSamplingParams {
    pub n: Option<u32>,
    pub inner: SamplingParams,
}

impl<'de> Deserialize<'de> for GenerateSamplingParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SamplingParamsVisitor)
    }
}

struct SamplingParamsVisitor;

impl<'de> Visitor<'de> for SamplingParamsVisitor {
    type Value = GenerateSamplingParams;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct GenerateSamplingParams")
    }

    /// `n` is typed where it stands; the parameters we know are kept as JSON
    /// text and typed once the object is read (vllm-rs's order and error
    /// positions); the others are skipped.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GenerateSamplingParams, A::Error> {
        let mut n = None;
        let mut known: Vec<(String, Box<RawValue>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "n" {
                if n.is_some() {
                    return Err(de::Error::duplicate_field("n"));
                }
                n = Some(map.next_value::<Option<u32>>()?);
            } else if SAMPLING_PARAM_NAMES.contains(&key.as_str()) {
                known.push((key, map.next_value()?));
            } else {
                map.next_value::<Skipped>()?;
            }
        }
        let entries = known
            .iter()
            .map(|(name, json)| (name.as_str(), BufferedParam(json)));
        let inner =
            SamplingParams::deserialize(MapDeserializer::<_, de::value::Error>::new(entries))
                .map_err(de::Error::custom)?;
        Ok(GenerateSamplingParams {
            n: n.flatten(),
            inner,
        })
    }
}

/// One buffered sampling parameter, read from its JSON text.
///
/// Its errors lose the position serde_json gives them inside that text: the
/// outer reader puts the position of the end of `sampling_params` on them.
#[derive(Clone, Copy)]
struct BufferedParam<'a>(&'a RawValue);

impl BufferedParam<'_> {
    fn positionless(e: serde_json::Error) -> de::value::Error {
        let text = e.to_string();
        let at = format!(" at line {} column {}", e.line(), e.column());
        let message = match e.line() {
            0 => text.as_str(),
            _ => text.strip_suffix(&at).unwrap_or(&text),
        };
        de::Error::custom(message)
    }
}

impl<'a> IntoDeserializer<'a, de::value::Error> for BufferedParam<'a> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// Forwards each request for a type to serde_json reading the text, so that
/// types are checked exactly as if the value had been read in place.
macro_rules! forward_to_json {
    ($($method:ident ( $($arg:ident : $ty:ty),* ))*) => {
        $(
            fn $method<V: Visitor<'a>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
                serde_json::Deserializer::from_str(self.0.get())
                    .$method($($arg,)* visitor)
                    .map_err(Self::positionless)
            }
        )*
    };
}

impl<'a> Deserializer<'a> for BufferedParam<'a> {
    type Error = de::value::Error;

    forward_to_json! {
        deserialize_any() deserialize_bool() deserialize_i8() deserialize_i16()
        deserialize_i32() deserialize_i64() deserialize_i128() deserialize_u8()
        deserialize_u16() deserialize_u32() deserialize_u64() deserialize_u128()
        deserialize_f32() deserialize_f64() deserialize_char() deserialize_str()
        deserialize_string() deserialize_bytes() deserialize_byte_buf()
        deserialize_option() deserialize_unit() deserialize_seq() deserialize_map()
        deserialize_identifier() deserialize_ignored_any()
        deserialize_unit_struct(name: &'static str)
        deserialize_newtype_struct(name: &'static str)
        deserialize_tuple(len: usize)
        deserialize_tuple_struct(name: &'static str, len: usize)
        deserialize_struct(name: &'static str, fields: &'static [&'static str])
        deserialize_enum(name: &'static str, variants: &'static [&'static str])
    }
}

/// The non-streaming body.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateResponse {
    pub request_id: String,
    pub choices: Vec<GenerateResponseChoice>,
    pub prompt_logprobs: Option<PromptLogprobs>,
    /// Always null: we have no per-token-id prompt scoring.
    pub prompt_token_id_logprobs: Option<Value>,
    pub prompt_token_ids: Option<Vec<u32>>,
    pub mm_placeholders: Option<Value>,
    pub kv_transfer_params: Option<Value>,
    pub ec_transfer_params: Option<Value>,
    pub metrics: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateResponseChoice {
    pub index: u32,
    pub logprobs: Option<GenerateLogProbs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReason>,
    pub token_ids: Vec<u32>,
    pub sampling_mask: Option<Value>,
    /// Spans over `token_ids` (see [`super::weight_versions`]).
    pub weight_versions: Option<Vec<WeightVersionSpan>>,
}

/// One `data:` event of a stream (a token chunk or the usage-only event).
#[derive(Debug, Clone, Serialize)]
pub struct GenerateStreamResponse {
    pub request_id: String,
    pub choices: Vec<GenerateResponseStreamChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateResponseStreamChoice {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<GenerateLogProbs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    pub token_ids: Vec<u32>,
    /// On the finish chunk only, over every output token of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_versions: Option<Vec<WeightVersionSpan>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_walked_so_a_syntax_error_names_its_path() {
        let e = serde_json::from_str::<GenerateRequest>(r#"{"pad":[1,{"a":[1,}]}"#).unwrap_err();
        assert_eq!(e.to_string(), "expected value at line 1 column 19");
        let mut de = serde_json::Deserializer::from_str(r#"{"pad":[1,{"a":[1,}]}"#);
        let e = serde_path_to_error::deserialize::<_, GenerateRequest>(&mut de).unwrap_err();
        assert_eq!(e.path().to_string(), "pad[1].a[1]");
    }

    #[test]
    fn a_bad_buffered_parameter_is_reported_at_the_end_of_sampling_params() {
        let body = r#"{"token_ids":[1],"sampling_params":{"top_k":-5, "x":[0]}}"#;
        let e = serde_json::from_str::<GenerateRequest>(body).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value: integer `-5`, expected u32 at line 1 column 56"
        );
    }

    #[test]
    fn a_json_array_is_not_a_request() {
        let err = serde_json::from_str::<GenerateRequest>("[1]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid type: sequence, expected struct GenerateRequest at line 1 column 0"
        );
    }

    #[test]
    fn stream_chunk_omits_nulls_in_vllm_order() {
        let chunk = GenerateStreamResponse {
            request_id: "a".into(),
            choices: vec![GenerateResponseStreamChoice {
                index: 0,
                logprobs: None,
                finish_reason: Some("stop"),
                stop_reason: Some(StopReason::Token(44)),
                token_ids: vec![44],
                weight_versions: None,
            }],
            usage: None,
            prompt_token_ids: None,
        };
        assert_eq!(
            serde_json::to_string(&chunk).unwrap(),
            r#"{"request_id":"a","choices":[{"index":0,"finish_reason":"stop","stop_reason":44,"token_ids":[44]}]}"#
        );
    }
}
