//! The request body of `POST /inference/v1/generate` and its validation.
//!
//! Type names matter here: serde puts them in its messages
//! ("expected struct GenerateRequest"), which reach the client verbatim, as in vllm-rs.
//! vllm-rs reads the body and `sampling_params` as maps (a JSON array is refused
//! where a struct is expected) and buffers sampling parameters before typing them,
//! so a bad one is reported at the end of `sampling_params`. We keep those messages
//! byte for byte, but nothing we do not use is kept: unknown fields are skipped as
//! they are read (`Skipped`), and a buffered parameter is its JSON text, so a
//! body's memory cost is a small multiple of its size whatever it holds.

use std::fmt;

use serde::Deserialize;
use serde::de::value::MapDeserializer;
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// Largest `logprobs` / `prompt_logprobs` vllm-rs accepts by default (`--max-logprobs`).
pub const MAX_LOGPROBS: i64 = 20;

/// Vocabulary size of the test model (`t0..t4095`, `<unk>`, `<s>`, `</s>`): prompt ids
/// at or above it are refused, and `-1` logprobs means this many.
pub const VOCAB_SIZE: u32 = 4099;

/// How many out-of-vocabulary ids an error lists before it only counts the rest.
pub const MAX_LISTED_TOKEN_IDS: usize = 32;

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

/// The field names of [`SamplingParams`]: what `sampling_params` keeps to type later.
const SAMPLING_PARAM_NAMES: &[&str] = &[
    "max_tokens",
    "min_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logprobs",
    "prompt_logprobs",
    "stop_token_ids",
    "ignore_eos",
];

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

/// The sampling parameters we type; the engine only acts on the token budget and
/// the logprob counts, the others are checked for type and range and then ignored.
/// (Adding a field? Add its name to `SAMPLING_PARAM_NAMES` too.)
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingParams {
    pub max_tokens: Option<u32>,
    pub min_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logprobs: Option<i32>,
    pub prompt_logprobs: Option<i32>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
    pub continuous_usage_stats: Option<bool>,
}

/// What the response side needs to know of a valid request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    pub stream: bool,
    pub include_usage: bool,
    /// Usage on every chunk: only with `include_usage` as well.
    pub continuous_usage: bool,
    /// `sampling_params.logprobs`: candidates per generated token (-1: all).
    pub logprobs: Option<i32>,
    pub include_prompt_logprobs: bool,
    pub return_token_ids: bool,
}

/// Limits that come from the engine rather than the request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_model_len: u32,
}

impl Limits {
    /// The output budget vllm-rs gives a request: its `max_tokens` clamped to
    /// the room its prompt leaves in the context, or that room when absent.
    /// `None` leaves the request's own value alone: the prompt does not fit,
    /// and the context-length check answers that.
    pub fn max_tokens(&self, prompt_len: usize, requested: Option<u32>) -> Option<u32> {
        let room = u32::try_from(prompt_len)
            .ok()
            .and_then(|prompt| self.max_model_len.checked_sub(prompt))
            .filter(|&room| room > 0);
        match (room, requested) {
            (Some(room), Some(max)) => Some(max.min(room)),
            (Some(room), None) => Some(room),
            (None, requested) => requested,
        }
    }
}

impl GenerateRequest {
    /// Checks the request in vllm-rs's order; the first failure wins.
    pub fn validate(&self, served: impl Fn(&str) -> bool, limits: Limits) -> Result<(), ApiError> {
        if let Some(model) = &self.model
            && !served(model)
        {
            return Err(ApiError::model_not_found(model));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(ApiError::invalid_request(
                "stream_options are only supported when stream=true.",
                Some("stream_options"),
            ));
        }
        if self.sampling_params.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid_request(
                "Only n=1 is supported.",
                Some("n"),
            ));
        }
        if self.token_ids.is_empty() {
            return Err(ApiError::invalid_request(
                "token_ids must contain at least one token ID.",
                Some("token_ids"),
            ));
        }
        let params = &self.sampling_params.inner;
        if params.max_tokens == Some(0) {
            return Err(ApiError::invalid_request(
                "max_tokens must be greater than 0.",
                Some("sampling_params"),
            ));
        }
        if let Some(k) = params.prompt_logprobs {
            if k < -1 {
                return Err(ApiError::invalid_request(
                    "`prompt_logprobs` must be a non-negative value or -1.",
                    Some("sampling_params"),
                ));
            }
            if self.stream {
                return Err(ApiError::invalid_request(
                    "`prompt_logprobs` are not available when `stream=true`.",
                    Some("sampling_params"),
                ));
            }
        }
        // vllm-rs 0.32.0's order from here, seen on pairs of bad fields:
        // vocabulary, logprobs, context length, the other sampling fields.
        check_vocabulary(&self.token_ids)?;
        if let Some(k) = params.logprobs
            && k < -1
        {
            return Err(ApiError::invalid_request(
                format!("logprobs must be non-negative or -1, got {k}"),
                None,
            ));
        }
        check_logprob_count("logprobs", params.logprobs)?;
        check_logprob_count("prompt_logprobs", params.prompt_logprobs)?;
        check_context_length(&self.token_ids, limits)?;
        check_sampling(params, self.token_ids.len(), limits)?;
        Ok(())
    }

    pub fn response_options(&self) -> ResponseOptions {
        let stream_options = self.stream_options.unwrap_or_default();
        let include_usage = stream_options.include_usage.unwrap_or(false);
        let params = &self.sampling_params.inner;
        ResponseOptions {
            stream: self.stream,
            include_usage,
            continuous_usage: include_usage
                && stream_options.continuous_usage_stats.unwrap_or(false),
            logprobs: params.logprobs,
            include_prompt_logprobs: params.prompt_logprobs.is_some(),
            return_token_ids: self.return_token_ids.unwrap_or(false),
        }
    }

    /// What the engine is asked, under the id the engine knows the request by.
    pub fn engine_request(
        &self,
        engine_request_id: String,
        limits: Limits,
    ) -> mock_engine::EngineRequest {
        let params = &self.sampling_params.inner;
        let mut request =
            mock_engine::EngineRequest::new(engine_request_id, self.token_ids.clone());
        request.max_tokens = limits.max_tokens(self.token_ids.len(), params.max_tokens);
        request.logprobs = params.logprobs.map(|k| resolve_count(k) as u32);
        request.prompt_logprobs = params.prompt_logprobs.map(i64::from);
        request
    }
}

/// The token budget and the sampling ranges, in vllm-rs's order (shared by every endpoint).
pub(crate) fn check_sampling(
    params: &SamplingParams,
    prompt_len: usize,
    limits: Limits,
) -> Result<(), ApiError> {
    // vllm-rs checks the token budget before the sampling ranges.
    if let Some(min) = params.min_tokens
        && let Some(max) = limits.max_tokens(prompt_len, params.max_tokens)
        && min > max
    {
        return Err(ApiError::invalid_request(
            format!(
                "`min_tokens` must be less than or equal to `max_tokens`, got min_tokens={min}, max_tokens={max}"
            ),
            None,
        ));
    }
    if let Some(t) = params.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid_request(
            format!("temperature must be in [0, 2], got {t}"),
            None,
        ));
    }
    if let Some(p) = params.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid_request(
            format!("top_p must be in (0, 1], got {p}"),
            None,
        ));
    }
    check_sampling_ranges(params)?;
    Ok(())
}

/// The prompt's ids against the vocabulary.
pub(crate) fn check_vocabulary(token_ids: &[u32]) -> Result<(), ApiError> {
    let out_of_vocab = token_ids.iter().filter(|&&t| t >= VOCAB_SIZE);
    let count = out_of_vocab.clone().count();
    if count > 0 {
        // vllm-rs lists them all; a 6 M-id prompt made that a 36 MB answer.
        let listed: Vec<u32> = out_of_vocab.take(MAX_LISTED_TOKEN_IDS).copied().collect();
        let ids = match count - listed.len() {
            0 => format!("{listed:?}"),
            more => format!("{:?} and {more} more", listed),
        };
        return Err(ApiError::invalid_request(
            format!(
                "token_id(s) {ids} in prompt are out of vocabulary. Vocabulary size: {VOCAB_SIZE}"
            ),
            None,
        ));
    }
    Ok(())
}

/// The prompt against the context window.
pub(crate) fn check_context_length(token_ids: &[u32], limits: Limits) -> Result<(), ApiError> {
    if token_ids.len() >= limits.max_model_len as usize {
        return Err(ApiError::invalid_request(
            format!(
                "this model's maximum context length is {} tokens, but the prompt contains {} input tokens",
                limits.max_model_len,
                token_ids.len()
            ),
            None,
        ));
    }
    Ok(())
}

/// `-1` asks for the whole vocabulary.
fn resolve_count(k: i32) -> i64 {
    if k == -1 {
        i64::from(VOCAB_SIZE)
    } else {
        i64::from(k)
    }
}

/// The ranges vllm-rs 0.32.0 checks after the token counts, in its order and words.
fn check_sampling_ranges(params: &SamplingParams) -> Result<(), ApiError> {
    let out_of_range = |name: &str, range: &str, value: f32| {
        ApiError::invalid_request(format!("{name} must be in {range}, got {value}"), None)
    };
    if let Some(p) = params.min_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(out_of_range("min_p", "[0, 1]", p));
    }
    if let Some(p) = params.frequency_penalty
        && !(-2.0..=2.0).contains(&p)
    {
        return Err(out_of_range("frequency_penalty", "[-2, 2]", p));
    }
    if let Some(p) = params.presence_penalty
        && !(-2.0..=2.0).contains(&p)
    {
        return Err(out_of_range("presence_penalty", "[-2, 2]", p));
    }
    if let Some(p) = params.repetition_penalty
        && !p.is_finite()
    {
        // A JSON number past f32's range reads as infinity.
        return Err(ApiError::invalid_request(
            format!("repetition_penalty must be a finite number, got {p}"),
            None,
        ));
    }
    if let Some(p) = params.repetition_penalty
        && p <= 0.0
    {
        return Err(out_of_range("repetition_penalty", "(0, inf)", p));
    }
    Ok(())
}

pub(crate) fn check_logprob_count(name: &str, requested: Option<i32>) -> Result<(), ApiError> {
    match requested.map(resolve_count) {
        Some(k) if k > MAX_LOGPROBS => Err(ApiError::invalid_request(
            format!("requested {name} of {k}, which is greater than max allowed: {MAX_LOGPROBS}"),
            None,
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> GenerateRequest {
        serde_json::from_str(body).unwrap()
    }

    const LIMITS: Limits = Limits {
        max_model_len: 2048,
    };

    /// `SAMPLING_PARAM_NAMES` must name every field of `SamplingParams`, or a
    /// field left out would be skipped unread.
    #[test]
    fn the_buffered_names_are_the_sampling_param_fields() {
        struct Fields;
        impl<'de> Deserializer<'de> for Fields {
            type Error = de::value::Error;
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom(fields.join(",")))
            }
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                unreachable!()
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let fields = SamplingParams::deserialize(Fields).unwrap_err().to_string();
        assert_eq!(fields, SAMPLING_PARAM_NAMES.join(","));
    }

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
    fn penalties_and_min_p_are_range_checked_in_vllm_rs_order() {
        let check = |params: &str| {
            parse(&format!(
                r#"{{"token_ids":[1],"sampling_params":{params}}}"#
            ))
            .validate(|_| true, LIMITS)
            .map_err(|e| e.message)
        };
        assert_eq!(check(r#"{"min_p":1}"#), Ok(()));
        assert_eq!(
            check(r#"{"repetition_penalty":0,"presence_penalty":3,"min_p":-1}"#),
            Err("min_p must be in [0, 1], got -1".into())
        );
        assert_eq!(
            check(r#"{"repetition_penalty":-1,"presence_penalty":3,"frequency_penalty":-2.5}"#),
            Err("frequency_penalty must be in [-2, 2], got -2.5".into())
        );
        assert_eq!(
            check(r#"{"repetition_penalty":-1,"presence_penalty":3}"#),
            Err("presence_penalty must be in [-2, 2], got 3".into())
        );
        assert_eq!(
            check(r#"{"repetition_penalty":1e300}"#),
            Err("repetition_penalty must be a finite number, got inf".into())
        );
        assert_eq!(
            check(r#"{"repetition_penalty":0}"#),
            Err("repetition_penalty must be in (0, inf), got 0".into())
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
    fn model_is_checked_before_everything_else() {
        let r =
            parse(r#"{"token_ids":[],"sampling_params":{"n":2},"model":"x","stream_options":{}}"#);
        let e = r.validate(|m| m == "tiny", LIMITS).unwrap_err();
        assert_eq!(e.code, "model_not_found");
    }

    #[test]
    fn max_tokens_is_clamped_to_the_room_the_prompt_leaves() {
        let r = parse(r#"{"token_ids":[1,2,3],"sampling_params":{"max_tokens":4294967295}}"#);
        r.validate(|_| true, LIMITS).unwrap();
        assert_eq!(r.engine_request("e".into(), LIMITS).max_tokens, Some(2045));
        let r = parse(r#"{"token_ids":[1,2,3],"sampling_params":{}}"#);
        assert_eq!(r.engine_request("e".into(), LIMITS).max_tokens, Some(2045));
        let r = parse(r#"{"token_ids":[1,2,3],"sampling_params":{"max_tokens":7}}"#);
        assert_eq!(r.engine_request("e".into(), LIMITS).max_tokens, Some(7));
    }

    #[test]
    fn min_tokens_is_checked_against_the_clamped_max_tokens() {
        let r = parse(r#"{"token_ids":[1,2,3],"sampling_params":{"min_tokens":3000}}"#);
        let e = r.validate(|_| true, LIMITS).unwrap_err();
        assert_eq!(
            e.message,
            "`min_tokens` must be less than or equal to `max_tokens`, got min_tokens=3000, max_tokens=2045"
        );
    }

    #[test]
    fn continuous_usage_needs_include_usage() {
        let r = parse(
            r#"{"token_ids":[1],"sampling_params":{},"stream":true,"stream_options":{"continuous_usage_stats":true}}"#,
        );
        let o = r.response_options();
        assert!(!o.include_usage && !o.continuous_usage);
    }
}
