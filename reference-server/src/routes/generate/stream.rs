//! The streaming response: engine outputs in, stream chunks out (an error
//! ending them), which [`crate::routes::sse`] puts on the wire as every
//! route's stream is, `[DONE]` and a shutdown's cut-off included.
//!
//! The engine stream lives inside the response body, so a client that goes away
//! drops the body, the body drops the engine stream, and the engine counts an abort.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use mock_engine::{EngineEvent, EngineOutput, FinishReason};

use super::convert::GenerateOptions;
use super::logprobs::{no_candidates, output_logprobs};
use super::types::{GenerateResponseStreamChoice, GenerateStreamResponse};
use super::weight_versions::WeightVersions;
use crate::error::{ApiError, ENGINE_DEAD_MESSAGE};
use crate::routes::usage::UsageCounter;

type EngineStream = Pin<Box<dyn Stream<Item = EngineEvent> + Send>>;

/// Turns engine events into the chunks vllm-rs sends for them.
pub struct ChunkStream {
    engine: Option<EngineStream>,
    request_id: String,
    options: GenerateOptions,
    enable_prompt_tokens_details: bool,
    usage: UsageCounter,
    weight_versions: WeightVersions,
    /// The prompt, waiting for the next chunk that is sent (`return_token_ids`).
    pending_prompt: Option<Vec<u32>>,
}

impl ChunkStream {
    pub fn new(
        engine: impl Stream<Item = EngineEvent> + Send + 'static,
        request_id: String,
        options: GenerateOptions,
        enable_prompt_tokens_details: bool,
    ) -> Self {
        Self {
            engine: Some(Box::pin(engine)),
            request_id,
            options,
            enable_prompt_tokens_details,
            usage: UsageCounter::default(),
            weight_versions: WeightVersions::default(),
            pending_prompt: None,
        }
    }

    /// The next chunk to send; `None` once the engine is done, an error
    /// being the last item.
    pub async fn next_chunk(&mut self) -> Option<Result<GenerateStreamResponse, ApiError>> {
        loop {
            let engine = self.engine.as_mut()?;
            let chunk = match engine.next().await {
                Some(EngineEvent::Output(output)) => match self.on_output(output) {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => continue,
                    Err(error) => self.fail(error),
                },
                Some(EngineEvent::Failed(message)) => {
                    tracing::info!(%message, "the engine failed mid-stream");
                    self.fail(ApiError::server_error(ENGINE_DEAD_MESSAGE))
                }
                None => {
                    self.engine = None;
                    if !self.options.include_usage {
                        return None;
                    }
                    Ok(GenerateStreamResponse {
                        request_id: self.request_id.clone(),
                        choices: Vec::new(),
                        usage: Some(self.usage.usage(self.enable_prompt_tokens_details)),
                        prompt_token_ids: None,
                    })
                }
            };
            return Some(chunk);
        }
    }

    /// Stops reading the engine (dropping its stream) and reports `error`.
    fn fail(&mut self, error: ApiError) -> Result<GenerateStreamResponse, ApiError> {
        self.engine = None;
        Err(error)
    }

    /// One engine output: `Ok(None)` for a step with nothing to send.
    fn on_output(
        &mut self,
        output: EngineOutput,
    ) -> Result<Option<GenerateStreamResponse>, ApiError> {
        // The prompt may come late; usage counts it whenever it comes.
        if self.usage.prompt_tokens.is_none()
            && let Some(prompt) = &output.prompt_token_ids
        {
            self.usage.prompt_tokens = Some(prompt.len());
            if self.options.return_token_ids {
                self.pending_prompt = Some(prompt.to_vec());
            }
        }
        self.usage.cached_tokens = self.usage.cached_tokens.max(output.num_cached_tokens);
        self.usage.completion_tokens += output.new_token_ids.len();
        self.weight_versions
            .observe(output.weight_version, output.new_token_ids.len());

        if output.finish_reason == Some(FinishReason::Error) {
            return Err(ApiError::server_error("Internal server error"));
        }
        if output.new_token_ids.is_empty() && output.finish_reason.is_none() {
            return Ok(None);
        }
        let logprobs = match self.options.logprobs {
            Some(requested) if !output.new_token_ids.is_empty() => {
                let positions = output.logprobs.as_deref().ok_or_else(|| {
                    ApiError::server_error(
                        "raw generate stream requested logprobs but generation returned none",
                    )
                })?;
                Some(output_logprobs(positions, requested).ok_or_else(no_candidates)?)
            }
            _ => None,
        };
        Ok(Some(GenerateStreamResponse {
            request_id: self.request_id.clone(),
            choices: vec![GenerateResponseStreamChoice {
                index: 0,
                logprobs,
                finish_reason: output.finish_reason.map(FinishReason::as_str),
                stop_reason: output.stop_reason,
                weight_versions: output
                    .finish_reason
                    .and_then(|_| self.weight_versions.spans()),
                token_ids: output.new_token_ids,
            }],
            usage: self
                .options
                .continuous_usage
                .then(|| self.usage.usage(self.enable_prompt_tokens_details)),
            prompt_token_ids: self.pending_prompt.take(),
        }))
    }

    /// The chunks as a stream, for [`crate::routes::sse::respond`].
    pub fn into_chunks(
        self,
    ) -> impl Stream<Item = Result<GenerateStreamResponse, ApiError>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            let chunk = s.next_chunk().await?;
            Some((chunk, s))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn output(tokens: &[u32]) -> EngineOutput {
        EngineOutput {
            new_token_ids: tokens.to_vec(),
            ..EngineOutput::default()
        }
    }

    async fn chunks(
        events: Vec<EngineEvent>,
        options: GenerateOptions,
    ) -> Vec<Result<GenerateStreamResponse, ApiError>> {
        ChunkStream::new(futures::stream::iter(events), "r".into(), options, true)
            .into_chunks()
            .collect()
            .await
    }

    #[tokio::test]
    async fn late_prompt_is_counted_and_empty_steps_skipped() {
        let mut last = output(&[44]);
        last.finish_reason = Some(FinishReason::Stop);
        last.prompt_token_ids = Some(Arc::from(vec![1u32, 2, 3]));
        let options = GenerateOptions {
            stream: true,
            include_usage: true,
            return_token_ids: true,
            ..GenerateOptions::default()
        };
        let got = chunks(
            vec![
                EngineEvent::Output(output(&[])),
                EngineEvent::Output(output(&[33])),
                EngineEvent::Output(last),
            ],
            options,
        )
        .await;
        assert_eq!(got.len(), 3, "{got:?}");
        let Ok(second) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(second.prompt_token_ids.as_deref(), Some(&[1, 2, 3][..]));
        let Ok(usage) = &got[2] else {
            panic!("{got:?}")
        };
        assert_eq!(usage.usage.unwrap().prompt_tokens, 3);
    }

    #[tokio::test]
    async fn an_error_finish_is_the_last_item_and_has_no_usage() {
        let mut last = output(&[44]);
        last.finish_reason = Some(FinishReason::Error);
        let options = GenerateOptions {
            stream: true,
            include_usage: true,
            ..GenerateOptions::default()
        };
        let got = chunks(
            vec![
                EngineEvent::Output(output(&[33])),
                EngineEvent::Output(last),
                EngineEvent::Output(output(&[55])),
            ],
            options,
        )
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[1], Err(e) if e.message == "Internal server error"));
    }
}
