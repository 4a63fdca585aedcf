//! The non-streaming response: every engine output gathered into one body.
//!
//! No usage here (vllm-rs sends none without a stream), and an engine `error`
//! finish is reported as `finish_reason: "error"` with status 200, as vllm-rs does.

use futures::{Stream, StreamExt};
use mock_engine::script::{LogprobEntry, StopReason};
use mock_engine::{EngineEvent, FinishReason};
use serde_json::Value;

use super::convert::GenerateOptions;
use super::logprobs::{PromptLogprobs, no_candidates, output_logprobs};
use super::types::{GenerateResponse, GenerateResponseChoice};
use super::weight_versions::WeightVersions;
use crate::error::{ApiError, ENGINE_DEAD_MESSAGE};

/// Everything the engine said about one request.
#[derive(Debug, Default)]
struct Collected {
    token_ids: Vec<u32>,
    prompt_token_ids: Option<Vec<u32>>,
    finish_reason: Option<FinishReason>,
    stop_reason: Option<StopReason>,
    logprobs: Option<Vec<Vec<LogprobEntry>>>,
    prompt_logprobs: Option<Vec<Vec<LogprobEntry>>>,
    kv_transfer_params: Option<Value>,
    weight_versions: WeightVersions,
}

async fn collect(events: impl Stream<Item = EngineEvent>) -> Result<Collected, ApiError> {
    let mut events = std::pin::pin!(events);
    let mut c = Collected::default();
    while let Some(event) = events.next().await {
        let output = match event {
            EngineEvent::Output(output) => output,
            EngineEvent::Failed(message) => {
                tracing::info!(%message, "the engine failed");
                return Err(ApiError::server_error(format!(
                    "failed to collect raw generate response: {ENGINE_DEAD_MESSAGE}"
                )));
            }
        };
        if c.prompt_token_ids.is_none() {
            c.prompt_token_ids = output.prompt_token_ids.as_deref().map(<[u32]>::to_vec);
        }
        c.token_ids.extend_from_slice(&output.new_token_ids);
        c.weight_versions
            .observe(output.weight_version, output.new_token_ids.len());
        if let Some(positions) = output.logprobs {
            c.logprobs.get_or_insert_with(Vec::new).extend(positions);
        }
        if output.prompt_logprobs.is_some() {
            c.prompt_logprobs = output.prompt_logprobs;
        }
        if output.kv_transfer_params.is_some() {
            c.kv_transfer_params = output.kv_transfer_params;
        }
        if output.finish_reason.is_some() {
            c.finish_reason = output.finish_reason;
            c.stop_reason = output.stop_reason;
        }
    }
    Ok(c)
}

/// Runs the request to its end and builds the body.
pub async fn generate_response(
    events: impl Stream<Item = EngineEvent>,
    request_id: String,
    prompt: &[u32],
    options: GenerateOptions,
) -> Result<GenerateResponse, ApiError> {
    let c = collect(events).await?;
    let finish_reason = c.finish_reason.ok_or_else(|| {
        ApiError::server_error(
            "failed to collect raw generate response: the engine stream ended without a finish reason",
        )
    })?;
    let logprobs = match options.logprobs {
        Some(requested) => {
            let positions = c.logprobs.as_deref().ok_or_else(|| {
                ApiError::server_error(
                    "raw generate response requested logprobs but generation returned none",
                )
            })?;
            Some(output_logprobs(positions, requested).ok_or_else(no_candidates)?)
        }
        None => None,
    };
    let prompt_token_ids = c.prompt_token_ids.unwrap_or_else(|| prompt.to_vec());
    let prompt_logprobs = match (options.include_prompt_logprobs, &c.prompt_logprobs) {
        (false, _) => None,
        (true, Some(positions)) => Some(PromptLogprobs::from_positions(positions)),
        // A one-token prompt has no position to score.
        (true, None) if prompt_token_ids.len() == 1 => Some(PromptLogprobs(vec![None])),
        (true, None) => {
            return Err(ApiError::server_error(
                "raw generate response requested prompt_logprobs but generation returned none",
            ));
        }
    };
    Ok(GenerateResponse {
        request_id,
        choices: vec![GenerateResponseChoice {
            index: 0,
            logprobs,
            finish_reason: Some(finish_reason.as_str()),
            stop_reason: c.stop_reason,
            weight_versions: c.weight_versions.spans(),
            token_ids: c.token_ids,
            sampling_mask: None,
        }],
        prompt_logprobs,
        prompt_token_id_logprobs: None,
        prompt_token_ids: options.return_token_ids.then_some(prompt_token_ids),
        mm_placeholders: None,
        kv_transfer_params: c.kv_transfer_params,
        ec_transfer_params: None,
        metrics: None,
    })
}
