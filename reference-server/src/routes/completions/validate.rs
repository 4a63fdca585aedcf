//! The checks vllm-rs makes on a completions request before it looks at
//! the prompt, in its order; the first failure wins.

use super::types::{CompletionRequest, Prompt};
use crate::error::ApiError;
use crate::routes::openai::checks::{self, RequestShape};

pub fn validate(
    request: &CompletionRequest,
    served: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    checks::check(
        RequestShape {
            model: request.model.as_deref(),
            stream: request.stream,
            has_stream_options: request.stream_options.is_some(),
            n: request.n,
        },
        served,
    )?;
    if request.max_tokens == Some(0) && !request.echo {
        return Err(ApiError::invalid_request(
            "max_tokens=0 is only supported when echo=true.",
            Some("max_tokens"),
        ));
    }
    if request.suffix.is_some() {
        return Err(ApiError::invalid_request(
            "suffix is not supported.",
            Some("suffix"),
        ));
    }
    if let Some(k) = request.logprobs
        && k < -1
    {
        return Err(ApiError::invalid_request(
            "`logprobs` must be a non-negative value or -1.",
            Some("logprobs"),
        ));
    }
    if let Some(k) = request.prompt_logprobs {
        if request.stream && (k > 0 || k == -1) {
            return Err(ApiError::invalid_request(
                "`prompt_logprobs` are not available when `stream=true`.",
                Some("prompt_logprobs"),
            ));
        }
        if k < -1 {
            return Err(ApiError::invalid_request(
                "`prompt_logprobs` must be a non-negative value or -1.",
                Some("prompt_logprobs"),
            ));
        }
    }
    if request.use_beam_search {
        return Err(ApiError::invalid_request(
            "use_beam_search is not supported.",
            Some("use_beam_search"),
        ));
    }
    Ok(())
}

/// vllm-rs's words for an empty prompt, which name the request.
pub fn empty_prompt(prompt: &Prompt, request_id: &str) -> ApiError {
    let message = match prompt {
        Prompt::Ids(_) => {
            format!("text request `{request_id}` must contain at least one prompt token ID")
        }
        Prompt::Text(_) => format!("generate request `{request_id}` has an empty prompt_token_ids"),
    };
    ApiError::invalid_request(message, None)
}
