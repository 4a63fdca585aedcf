//! The checks both OpenAI routes make once a request has parsed, in
//! vllm-rs's order: the model, `stream_options` without `stream`, `n`.

use crate::error::ApiError;

/// The fields the shared checks read.
#[derive(Debug, Clone, Copy)]
pub struct RequestShape<'r> {
    pub model: Option<&'r str>,
    pub stream: bool,
    pub has_stream_options: bool,
    pub n: Option<u32>,
}

/// The first failure of the shared checks; `served` says whether a model
/// name is one this server serves (an empty name means the served model).
///
/// ```
/// use reference_server::routes::openai::checks::{RequestShape, check};
/// let shape = RequestShape { model: Some("tiny"), stream: false, has_stream_options: false, n: Some(2) };
/// let e = check(shape, |m| m == "tiny").unwrap_err();
/// assert_eq!(e.message, "Only n=1 is supported.");
/// ```
pub fn check(shape: RequestShape<'_>, served: impl Fn(&str) -> bool) -> Result<(), ApiError> {
    if let Some(model) = shape.model.filter(|m| !m.is_empty())
        && !served(model)
    {
        return Err(ApiError::model_not_found(model));
    }
    if shape.has_stream_options && !shape.stream {
        return Err(ApiError::invalid_request(
            "stream_options are only supported when stream=true.",
            Some("stream_options"),
        ));
    }
    if shape.n.unwrap_or(1) > 1 {
        return Err(ApiError::invalid_request(
            "Only n=1 is supported.",
            Some("n"),
        ));
    }
    Ok(())
}
