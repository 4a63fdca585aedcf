//! The sampling parameters every endpoint gives the engine, and the checks
//! vllm-rs makes on them and on the prompt, in its order and words.
//!
//! Generate reads these fields from its `sampling_params` object, the OpenAI
//! routes from their top level (`routes::openai::sampling`); both end in the
//! same [`SamplingParams`] and the same checks, against the same
//! [`EngineLimits`].

use serde::Deserialize;

use super::structured_outputs::StructuredOutputs;
use crate::error::ApiError;

/// Largest `logprobs` / `prompt_logprobs` vllm-rs accepts by default (`--max-logprobs`).
pub const MAX_LOGPROBS: i64 = 20;

/// Vocabulary size of the test model (`t0..t4095`, `<unk>`, `<s>`, `</s>`): prompt ids
/// at or above it are refused, and `-1` logprobs means this many.
pub const VOCAB_SIZE: u32 = 4099;

/// How many out-of-vocabulary ids an error lists before it only counts the rest.
pub const MAX_LISTED_TOKEN_IDS: usize = 32;

/// The sampling parameters we type; the engine only acts on the token budget and
/// the logprob counts, the others are checked for type and range and then ignored.
/// (Adding a field? Add its name to [`SAMPLING_PARAM_NAMES`] too.)
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
    /// The constraint on the output ([`super::structured_outputs`]); the
    /// OpenAI routes' `response_format` already applied.
    pub structured_outputs: Option<StructuredOutputs>,
}

/// The field names of [`SamplingParams`]: what generate's `sampling_params`
/// keeps to type once the object is read (the others it skips unread).
pub const SAMPLING_PARAM_NAMES: &[&str] = &[
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
    "structured_outputs",
];

/// What a request is checked against that comes from the engine rather than
/// the request.
///
/// ```
/// use reference_server::routes::sampling::EngineLimits;
/// let limits = EngineLimits { max_model_len: 10 };
/// assert_eq!(limits.max_tokens(4, Some(100)), Some(6));
/// assert_eq!(limits.max_tokens(4, None), Some(6));
/// assert_eq!(limits.max_tokens(12, Some(3)), Some(3));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    pub max_model_len: u32,
}

impl EngineLimits {
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

/// The token budget and the sampling ranges, in vllm-rs's order (shared by every endpoint).
pub fn check_sampling(
    params: &SamplingParams,
    prompt_len: usize,
    limits: EngineLimits,
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
    if let Some(structured) = &params.structured_outputs {
        structured.check()?;
    }
    Ok(())
}

/// The prompt's ids against the vocabulary.
pub fn check_vocabulary(token_ids: &[u32]) -> Result<(), ApiError> {
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
pub fn check_context_length(token_ids: &[u32], limits: EngineLimits) -> Result<(), ApiError> {
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

/// How many candidates a logprob count asks for: `-1` is the whole vocabulary.
pub fn resolve_count(k: i32) -> i64 {
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

/// A logprob count (`logprobs`, `prompt_logprobs`) against [`MAX_LOGPROBS`].
pub fn check_logprob_count(name: &str, requested: Option<i32>) -> Result<(), ApiError> {
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
    use serde::de::{self, Deserializer, Visitor};

    use super::*;

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
    fn penalties_and_min_p_are_range_checked_in_vllm_rs_order() {
        let check = |params: &str| {
            let params: SamplingParams = serde_json::from_str(params).unwrap();
            check_sampling_ranges(&params).map_err(|e| e.message)
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
}
