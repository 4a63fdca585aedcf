//! The checks vllm-rs makes on a generate request once it has parsed, in
//! its order; the first failure wins.

use super::types::GenerateRequest;
use crate::error::ApiError;
use crate::routes::sampling::{
    EngineLimits, check_context_length, check_logprob_count, check_sampling, check_vocabulary,
};

/// Checks `request` in vllm-rs's order; `served` says whether a model name
/// is one this server serves.
pub fn validate(
    request: &GenerateRequest,
    served: impl Fn(&str) -> bool,
    limits: EngineLimits,
) -> Result<(), ApiError> {
    if let Some(model) = &request.model
        && !served(model)
    {
        return Err(ApiError::model_not_found(model));
    }
    if request.stream_options.is_some() && !request.stream {
        return Err(ApiError::invalid_request(
            "stream_options are only supported when stream=true.",
            Some("stream_options"),
        ));
    }
    if request.sampling_params.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid_request(
            "Only n=1 is supported.",
            Some("n"),
        ));
    }
    if request.token_ids.is_empty() {
        return Err(ApiError::invalid_request(
            "token_ids must contain at least one token ID.",
            Some("token_ids"),
        ));
    }
    let params = &request.sampling_params.inner;
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
        if request.stream {
            return Err(ApiError::invalid_request(
                "`prompt_logprobs` are not available when `stream=true`.",
                Some("sampling_params"),
            ));
        }
    }
    // vllm-rs 0.32.0's order from here, seen on pairs of bad fields:
    // vocabulary, logprobs, context length, the other sampling fields.
    check_vocabulary(&request.token_ids)?;
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
    check_context_length(&request.token_ids, limits)?;
    check_sampling(params, request.token_ids.len(), limits)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: EngineLimits = EngineLimits {
        max_model_len: 2048,
    };

    fn check(body: &str, served: impl Fn(&str) -> bool) -> Result<(), ApiError> {
        validate(&serde_json::from_str(body).unwrap(), served, LIMITS)
    }

    #[test]
    fn model_is_checked_before_everything_else() {
        let body = r#"{"token_ids":[],"sampling_params":{"n":2},"model":"x","stream_options":{}}"#;
        let e = check(body, |m| m == "tiny").unwrap_err();
        assert_eq!(e.code, "model_not_found");
    }

    #[test]
    fn the_sampling_ranges_are_checked_in_vllm_rs_order() {
        let body = r#"{"token_ids":[1],"sampling_params":{"repetition_penalty":-1,"presence_penalty":3,"frequency_penalty":-2.5}}"#;
        let e = check(body, |_| true).unwrap_err();
        assert_eq!(e.message, "frequency_penalty must be in [-2, 2], got -2.5");
    }

    #[test]
    fn min_tokens_is_checked_against_the_clamped_max_tokens() {
        let body = r#"{"token_ids":[1,2,3],"sampling_params":{"min_tokens":3000}}"#;
        let e = check(body, |_| true).unwrap_err();
        assert_eq!(
            e.message,
            "`min_tokens` must be less than or equal to `max_tokens`, got min_tokens=3000, max_tokens=2045"
        );
    }
}
