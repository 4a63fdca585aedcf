//! The streaming response: engine outputs in, SSE events out.
//!
//! The engine stream lives inside the response body, so a client that goes away
//! drops the body, the body drops the engine stream, and the engine counts an abort.

use std::convert::Infallible;
use std::pin::Pin;

use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use mock_engine::{EngineEvent, EngineOutput, FinishReason};

use crate::error::ApiError;
use crate::routes::generate::logprobs::output_logprobs;
use crate::routes::generate::types::ResponseOptions;
use crate::routes::generate::weight_versions::WeightVersions;
use crate::routes::sse::SseItem;
use crate::routes::usage::{
    ENGINE_DEAD_MESSAGE, GenerateResponseStreamChoice, GenerateStreamResponse, UsageCounter,
};

/// What the stream sends, before it becomes SSE: the same items as the
/// OpenAI routes' streams (an in-band error, then nothing but `[DONE]`).
pub type StreamItem = SseItem<GenerateStreamResponse>;

type EngineStream = Pin<Box<dyn Stream<Item = EngineEvent> + Send>>;

/// Turns engine events into the chunks vllm-rs sends for them.
pub struct ChunkStream {
    engine: Option<EngineStream>,
    request_id: String,
    options: ResponseOptions,
    enable_prompt_tokens_details: bool,
    usage: UsageCounter,
    weight_versions: WeightVersions,
    /// The prompt, waiting for the next chunk that is sent (`return_token_ids`).
    pending_prompt: Option<Vec<u32>>,
    finished: bool,
}

impl ChunkStream {
    pub fn new(
        engine: impl Stream<Item = EngineEvent> + Send + 'static,
        request_id: String,
        options: ResponseOptions,
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
            finished: false,
        }
    }

    /// The next item to send; `None` after `[DONE]`.
    pub async fn next_item(&mut self) -> Option<StreamItem> {
        loop {
            let Some(engine) = self.engine.as_mut() else {
                if std::mem::replace(&mut self.finished, true) {
                    return None;
                }
                return Some(StreamItem::Done);
            };
            let item = match engine.next().await {
                Some(EngineEvent::Output(output)) => match self.on_output(output) {
                    Ok(Some(chunk)) => StreamItem::Chunk(chunk),
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
                        continue;
                    }
                    StreamItem::Chunk(GenerateStreamResponse {
                        request_id: self.request_id.clone(),
                        choices: Vec::new(),
                        usage: Some(self.usage.usage(self.enable_prompt_tokens_details)),
                        prompt_token_ids: None,
                    })
                }
            };
            return Some(item);
        }
    }

    /// Stops reading the engine (dropping its stream) and reports `error`.
    fn fail(&mut self, error: ApiError) -> StreamItem {
        self.engine = None;
        StreamItem::Error(error)
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

    /// The items as a stream.
    pub fn into_stream(self) -> impl Stream<Item = StreamItem> + Send {
        futures::stream::unfold(self, |mut s| async move {
            let item = s.next_item().await?;
            Some((item, s))
        })
    }

    /// The SSE events, ready for `axum::response::sse::Sse`.
    pub fn into_events(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        self.into_stream().map(|item| Ok(item.to_event()))
    }
}

pub(crate) fn no_candidates() -> ApiError {
    ApiError::server_error("raw generate logprobs position unexpectedly had no token candidates")
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

    async fn items(events: Vec<EngineEvent>, options: ResponseOptions) -> Vec<StreamItem> {
        ChunkStream::new(futures::stream::iter(events), "r".into(), options, true)
            .into_stream()
            .collect()
            .await
    }

    #[tokio::test]
    async fn late_prompt_is_counted_and_empty_steps_skipped() {
        let mut last = output(&[44]);
        last.finish_reason = Some(FinishReason::Stop);
        last.prompt_token_ids = Some(Arc::from(vec![1u32, 2, 3]));
        let options = ResponseOptions {
            stream: true,
            include_usage: true,
            return_token_ids: true,
            ..ResponseOptions::default()
        };
        let got = items(
            vec![
                EngineEvent::Output(output(&[])),
                EngineEvent::Output(output(&[33])),
                EngineEvent::Output(last),
            ],
            options,
        )
        .await;
        assert_eq!(got.len(), 4, "{got:?}");
        let StreamItem::Chunk(second) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(second.prompt_token_ids.as_deref(), Some(&[1, 2, 3][..]));
        let StreamItem::Chunk(usage) = &got[2] else {
            panic!("{got:?}")
        };
        assert_eq!(usage.usage.unwrap().prompt_tokens, 3);
        assert!(matches!(got[3], StreamItem::Done));
    }

    #[tokio::test]
    async fn error_finish_is_an_in_band_error_without_usage() {
        let mut last = output(&[44]);
        last.finish_reason = Some(FinishReason::Error);
        let options = ResponseOptions {
            stream: true,
            include_usage: true,
            ..ResponseOptions::default()
        };
        let got = items(
            vec![
                EngineEvent::Output(output(&[33])),
                EngineEvent::Output(last),
            ],
            options,
        )
        .await;
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[1], StreamItem::Error(e) if e.message == "Internal server error"));
        assert!(matches!(got[2], StreamItem::Done));
    }
}
