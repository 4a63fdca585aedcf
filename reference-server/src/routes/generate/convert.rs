//! A valid generate request becomes the engine request and what the
//! response side needs to know.

use super::types::GenerateRequest;
use crate::routes::engine_view::Asked;
use crate::routes::sampling::{EngineLimits, resolve_count};

/// What the response side needs to know of a valid generate request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerateOptions {
    pub stream: bool,
    pub include_usage: bool,
    /// Usage on every chunk: only with `include_usage` as well.
    pub continuous_usage: bool,
    /// `sampling_params.logprobs`: candidates per generated token (-1: all).
    pub logprobs: Option<i32>,
    pub include_prompt_logprobs: bool,
    pub return_token_ids: bool,
}

/// The response options `request` asks for.
pub fn options(request: &GenerateRequest) -> GenerateOptions {
    let stream_options = request.stream_options.unwrap_or_default();
    let include_usage = stream_options.include_usage.unwrap_or(false);
    let params = &request.sampling_params.inner;
    GenerateOptions {
        stream: request.stream,
        include_usage,
        continuous_usage: include_usage && stream_options.continuous_usage_stats.unwrap_or(false),
        logprobs: params.logprobs,
        include_prompt_logprobs: params.prompt_logprobs.is_some(),
        return_token_ids: request.return_token_ids.unwrap_or(false),
    }
}

/// What the engine is asked, under the id the engine knows the request by
/// and the one the client sees.
pub fn engine_request(
    request: &GenerateRequest,
    engine_request_id: String,
    external_req_id: &str,
    limits: EngineLimits,
) -> mock_engine::EngineRequest {
    let params = &request.sampling_params.inner;
    let max_tokens = limits.max_tokens(request.token_ids.len(), params.max_tokens);
    let view = Asked {
        engine_request_id: &engine_request_id,
        external_req_id,
        prompt: &request.token_ids,
        params,
        max_tokens,
        cache_salt: request.cache_salt.as_deref(),
        priority: i64::from(request.priority),
    }
    .view();
    let mut engine_request =
        mock_engine::EngineRequest::new(engine_request_id, request.token_ids.clone());
    engine_request.max_tokens = max_tokens;
    engine_request.logprobs = params.logprobs.map(|k| resolve_count(k) as u32);
    engine_request.prompt_logprobs = params.prompt_logprobs.map(i64::from);
    engine_request.view = Some(view);
    engine_request
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: EngineLimits = EngineLimits {
        max_model_len: 2048,
    };

    fn parse(body: &str) -> GenerateRequest {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn max_tokens_is_clamped_to_the_room_the_prompt_leaves() {
        let max_tokens = |body| engine_request(&parse(body), "e".into(), "e", LIMITS).max_tokens;
        assert_eq!(
            max_tokens(r#"{"token_ids":[1,2,3],"sampling_params":{"max_tokens":4294967295}}"#),
            Some(2045)
        );
        assert_eq!(
            max_tokens(r#"{"token_ids":[1,2,3],"sampling_params":{}}"#),
            Some(2045)
        );
        assert_eq!(
            max_tokens(r#"{"token_ids":[1,2,3],"sampling_params":{"max_tokens":7}}"#),
            Some(7)
        );
    }

    #[test]
    fn continuous_usage_needs_include_usage() {
        let r = parse(
            r#"{"token_ids":[1],"sampling_params":{},"stream":true,"stream_options":{"continuous_usage_stats":true}}"#,
        );
        let o = options(&r);
        assert!(!o.include_usage && !o.continuous_usage);
    }
}
