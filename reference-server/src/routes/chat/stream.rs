//! Text events to chat chunks (streamed: the role first, then content
//! deltas, then the finish) or to one body (collected).

use futures::Stream;
use mock_engine::script::LogprobEntry;
use model::Tokenizer;

use super::convert::ChatOptions;
use super::types::{
    ChatCompletionChoice, ChatCompletionMessage, ChatCompletionResponse,
    ChatCompletionStreamChoice, ChatCompletionStreamResponse, ChatLogProbs, ChatLogProbsContent,
    ChatMessageDelta, TopLogProb,
};
use crate::error::ApiError;
use crate::routes::logprob::clamp;
use crate::routes::openai::envelope::Envelope;
use crate::routes::openai::events::{Collected, TextDelta, TextEvent, TextEvents};
use crate::routes::openai::logprobs::{candidates, token_text};
use crate::routes::openai::usage::{TokenCounts, UsageChunk};
use crate::routes::usage::Usage;

const ASSISTANT: &str = "assistant";

/// The chunk around `choice` (none: a usage chunk).
fn chunk(
    envelope: &Envelope,
    choice: Option<ChatCompletionStreamChoice>,
) -> ChatCompletionStreamResponse {
    ChatCompletionStreamResponse {
        id: envelope.id.clone(),
        object: "chat.completion.chunk",
        created: envelope.created,
        model: envelope.model.clone(),
        choices: choice.into_iter().collect(),
        usage: None,
        prompt_token_ids: None,
    }
}

impl UsageChunk for ChatCompletionStreamResponse {
    fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }
}

/// The stream's chunks, an error ending them.
pub fn chunks(
    events: TextEvents,
    envelope: Envelope,
    options: ChatOptions,
    tokenizer: &'static Tokenizer,
) -> impl Stream<Item = Result<ChatCompletionStreamResponse, ApiError>> + Send {
    let mut state = ChunkState {
        envelope,
        options,
        tokenizer,
    };
    events.into_chunks(move |event| state.on_event(event))
}

struct ChunkState {
    envelope: Envelope,
    options: ChatOptions,
    tokenizer: &'static Tokenizer,
}

impl ChunkState {
    fn on_event(&mut self, event: TextEvent) -> Vec<ChatCompletionStreamResponse> {
        let usage = self.options.usage;
        let enable_details = self.envelope.enable_prompt_tokens_details;
        let with_usage = |chunk, counts| usage.running(chunk, counts, enable_details);
        match event {
            TextEvent::Start { prompt_token_ids } => {
                let counts = TokenCounts::prompt(prompt_token_ids.len());
                let role = ChatCompletionStreamChoice {
                    delta: ChatMessageDelta {
                        role: Some(ASSISTANT),
                        content: None,
                    },
                    ..ChatCompletionStreamChoice::default()
                };
                let mut chunk = chunk(&self.envelope, Some(role));
                chunk.prompt_token_ids = self.options.return_token_ids.then_some(prompt_token_ids);
                vec![with_usage(chunk, counts)]
            }
            TextEvent::Delta(delta) => {
                // An engine output without tokens has no logprobs: vllm-rs
                // sends no content chunk for it (only its finish, if any).
                let logprobs = self
                    .options
                    .top_logprobs
                    .zip(delta.logprobs.as_deref())
                    .map(|(top, positions)| chat_logprobs(self.tokenizer, positions, top));
                let TextDelta {
                    text,
                    token_ids,
                    finished,
                    counts,
                    ..
                } = delta;
                let mut out = Vec::new();
                // vllm-rs sends a step that has tokens but no text yet (a
                // character's first bytes) only for its logprobs or token
                // ids, with an empty delta; a step without tokens, not at all.
                let carries_tokens =
                    logprobs.is_some() || (self.options.return_token_ids && !token_ids.is_empty());
                if !text.is_empty() || carries_tokens {
                    let choice = ChatCompletionStreamChoice {
                        delta: ChatMessageDelta {
                            role: None,
                            content: Some(text).filter(|t| !t.is_empty()),
                        },
                        logprobs,
                        // Text held back (by a stop string, or bytes that
                        // are no character yet) and flushed by an output
                        // without tokens: vllm-rs writes no `token_ids`
                        // rather than an empty list.
                        token_ids: (self.options.return_token_ids && !token_ids.is_empty())
                            .then_some(token_ids),
                        ..ChatCompletionStreamChoice::default()
                    };
                    out.push(with_usage(chunk(&self.envelope, Some(choice)), counts));
                }
                if let Some(finished) = finished {
                    let last = ChatCompletionStreamChoice {
                        finish_reason: Some(finished.reason),
                        stop_reason: finished.stop_reason,
                        ..ChatCompletionStreamChoice::default()
                    };
                    out.extend(usage.finish(
                        chunk(&self.envelope, Some(last)),
                        chunk(&self.envelope, None),
                        finished.counts,
                        enable_details,
                    ));
                }
                out
            }
        }
    }
}

/// Chat logprobs of some tokens, with `top` candidates each (-1: all).
pub fn chat_logprobs(
    tokenizer: &Tokenizer,
    positions: &[Vec<LogprobEntry>],
    top: i32,
) -> ChatLogProbs {
    let keep = if top < 0 { usize::MAX } else { top as usize };
    let entry = |e: &LogprobEntry| {
        let token = token_text(tokenizer, e.token_id);
        (Some(token.as_bytes().to_vec()), token, clamp(e.logprob))
    };
    let content = positions
        .iter()
        .filter_map(|entries| {
            let (bytes, token, logprob) = entry(entries.first()?);
            let top_logprobs = candidates(entries, keep)
                .map(|e| {
                    let (bytes, token, logprob) = entry(e);
                    TopLogProb {
                        token,
                        logprob,
                        bytes,
                    }
                })
                .collect();
            Some(ChatLogProbsContent {
                token,
                logprob,
                bytes,
                top_logprobs,
            })
        })
        .collect();
    ChatLogProbs {
        content: Some(content),
    }
}

/// Runs the request to its end and builds the body.
pub async fn collect(
    events: TextEvents,
    envelope: Envelope,
    options: ChatOptions,
    tokenizer: &'static Tokenizer,
) -> Result<ChatCompletionResponse, ApiError> {
    let Collected {
        prompt_token_ids,
        text,
        token_ids,
        positions,
        finished,
    } = events
        .collect(
            "failed to collect chat completion response: the engine stream ended without finishing",
        )
        .await?;
    let logprobs = match (options.top_logprobs, positions) {
        (Some(top), Some(positions)) => Some(chat_logprobs(tokenizer, &positions, top)),
        // As vllm-rs 0.32 (and its generate route): asked for logprobs, and
        // no engine output carried any (no token at all), is a 500.
        (Some(_), None) => {
            return Err(ApiError::server_error(
                "chat response requested logprobs but generation returned none",
            ));
        }
        (None, _) => None,
    };
    Ok(ChatCompletionResponse {
        id: envelope.id,
        object: "chat.completion",
        created: envelope.created,
        model: envelope.model,
        choices: vec![ChatCompletionChoice {
            index: 0,
            message: ChatCompletionMessage {
                role: ASSISTANT,
                content: Some(text).filter(|t| !t.is_empty()),
                tool_calls: Vec::new(),
                reasoning: None,
            },
            logprobs,
            finish_reason: Some(finished.reason),
            stop_reason: finished.stop_reason,
            token_ids: options.return_token_ids.then_some(token_ids),
        }],
        usage: Some(finished.counts.usage(envelope.enable_prompt_tokens_details)),
        system_fingerprint: None,
        prompt_logprobs: None,
        prompt_token_ids: options.return_token_ids.then_some(prompt_token_ids),
        kv_transfer_params: None,
        ec_transfer_params: None,
    })
}
