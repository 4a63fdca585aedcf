//! Text events to completions chunks (streamed) or to one body (collected).

use futures::Stream;
use mock_engine::script::LogprobEntry;
use model::Tokenizer;
use serde_json::{Map, Value};

use super::convert::CompletionOptions;
use super::types::{
    CompletionChoice, CompletionLogProbs, CompletionResponse, CompletionStreamChoice,
    CompletionStreamResponse,
};
use crate::error::ApiError;
use crate::routes::logprob::clamp;
use crate::routes::openai::envelope::Envelope;
use crate::routes::openai::events::{Collected, TextDelta, TextEvent, TextEvents};
use crate::routes::openai::logprobs::token_text;
use crate::routes::openai::usage::{TokenCounts, UsageChunk};
use crate::routes::usage::Usage;

/// The chunk around `choice` (none: a usage chunk).
fn chunk(envelope: &Envelope, choice: Option<CompletionStreamChoice>) -> CompletionStreamResponse {
    CompletionStreamResponse {
        id: envelope.id.clone(),
        object: "text_completion",
        created: envelope.created,
        model: envelope.model.clone(),
        choices: choice.into_iter().collect(),
        usage: None,
    }
}

impl UsageChunk for CompletionStreamResponse {
    fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }
}

/// The stream's chunks, an error ending them.
pub fn chunks(
    events: TextEvents,
    envelope: Envelope,
    options: CompletionOptions,
    tokenizer: &'static Tokenizer,
) -> impl Stream<Item = Result<CompletionStreamResponse, ApiError>> + Send {
    let mut state = ChunkState {
        envelope,
        options,
        tokenizer,
        visible_len: 0,
    };
    events.into_chunks(move |event| state.on_event(event))
}

struct ChunkState {
    envelope: Envelope,
    options: CompletionOptions,
    tokenizer: &'static Tokenizer,
    /// Characters sent so far: where the next token's text starts.
    visible_len: u32,
}

impl ChunkState {
    fn on_event(&mut self, event: TextEvent) -> Vec<CompletionStreamResponse> {
        let usage = self.options.usage;
        let enable_details = self.envelope.enable_prompt_tokens_details;
        let with_usage = |chunk, counts| usage.running(chunk, counts, enable_details);
        match event {
            TextEvent::Start { prompt_token_ids } => {
                let counts = TokenCounts::prompt(prompt_token_ids.len());
                let prompt_ids = self.options.return_token_ids.then_some(prompt_token_ids);
                let text = match (&self.options.echo, &prompt_ids) {
                    (Some(echo), _) => echo.clone(),
                    (None, Some(_)) => String::new(),
                    (None, None) => return Vec::new(),
                };
                self.visible_len = char_len(&text);
                let choice = CompletionStreamChoice {
                    text,
                    token_ids: prompt_ids.is_some().then(Vec::new),
                    prompt_token_ids: prompt_ids,
                    ..CompletionStreamChoice::default()
                };
                vec![with_usage(chunk(&self.envelope, Some(choice)), counts)]
            }
            TextEvent::Delta(delta) => {
                let logprobs = self.options.logprobs.map(|requested| {
                    completion_logprobs(
                        self.tokenizer,
                        delta.logprobs.as_deref().unwrap_or_default(),
                        requested,
                        self.visible_len,
                    )
                });
                self.visible_len += char_len(&delta.text);
                let TextDelta {
                    text,
                    token_ids,
                    finished,
                    counts,
                    ..
                } = delta;
                let choice = CompletionStreamChoice {
                    text,
                    logprobs,
                    token_ids: self.options.return_token_ids.then_some(token_ids),
                    ..CompletionStreamChoice::default()
                };
                // Every step is a chunk, empty or not; the finish is one more.
                let mut out = vec![with_usage(chunk(&self.envelope, Some(choice)), counts)];
                if let Some(finished) = finished {
                    let last = CompletionStreamChoice {
                        finish_reason: Some(finished.reason),
                        stop_reason: finished.stop_reason,
                        token_ids: self.options.return_token_ids.then(Vec::new),
                        ..CompletionStreamChoice::default()
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

fn char_len(text: &str) -> u32 {
    u32::try_from(text.chars().count()).unwrap_or(u32::MAX)
}

/// The legacy logprobs of some tokens whose text starts at `offset`.
pub fn completion_logprobs(
    tokenizer: &Tokenizer,
    positions: &[Vec<LogprobEntry>],
    requested: i32,
    mut offset: u32,
) -> CompletionLogProbs {
    // vllm-rs lists every candidate the engine sent, whatever `requested`.
    let _ = requested;
    let mut out = CompletionLogProbs::default();
    for entries in positions {
        let Some(sampled) = entries.first() else {
            continue;
        };
        let token = token_text(tokenizer, sampled.token_id);
        // vllm-rs's map is a HashMap (its order varies by run) filled from
        // every entry in the engine's order, the repeated sampled token
        // included: when two tokens read the same (byte tokens that are no
        // character read U+FFFD), the later entry's logprob is the key's.
        let top: Map<String, Value> = entries
            .iter()
            .map(|e| {
                (
                    token_text(tokenizer, e.token_id),
                    Value::from(clamp(e.logprob)),
                )
            })
            .collect();
        out.text_offset.push(offset);
        offset += char_len(&token);
        out.tokens.push(token);
        out.token_logprobs.push(Some(clamp(sampled.logprob)));
        out.top_logprobs.push(Some(top));
    }
    out
}

/// vllm-rs's answer when logprobs were asked for and no engine output had any.
const LOGPROBS_MISSING: &str =
    "completion response requested logprobs but generation returned none";

/// Runs the request to its end and builds the body.
pub async fn collect(
    events: TextEvents,
    envelope: Envelope,
    options: CompletionOptions,
    tokenizer: &'static Tokenizer,
) -> Result<CompletionResponse, ApiError> {
    // With echo, vllm-rs has the prompt's logprobs, and an `error` finish
    // without a token is its plain "Internal server error".
    let events = match (options.logprobs, options.echo_asked) {
        (Some(_), false) => events.with_logprobs_checked_first(LOGPROBS_MISSING),
        _ => events,
    };
    let Collected {
        prompt_token_ids,
        mut text,
        token_ids,
        positions,
        finished,
    } = events
        .collect("completion stream failed: the engine stream ended without finishing")
        .await?;
    let echo_len = options.echo.as_deref().map_or(0, char_len);
    let logprobs = match (options.logprobs, positions) {
        (Some(requested), Some(positions)) => Some(completion_logprobs(
            tokenizer, &positions, requested, echo_len,
        )),
        // With echo, vllm-rs has the prompt's logprobs to answer with (the
        // reference lists the generated tokens' only, here none).
        (Some(_), None) if options.echo_asked => Some(CompletionLogProbs::default()),
        // As vllm-rs 0.32 (and its generate route): asked for logprobs, and
        // no engine output carried any (no token at all), is a 500.
        (Some(_), None) => {
            return Err(ApiError::server_error(LOGPROBS_MISSING));
        }
        (None, _) => None,
    };
    if let Some(echo) = &options.echo {
        text.insert_str(0, echo);
    }
    Ok(CompletionResponse {
        id: envelope.id,
        object: "text_completion",
        created: envelope.created,
        model: envelope.model,
        choices: vec![CompletionChoice {
            index: 0,
            text,
            logprobs,
            finish_reason: Some(finished.reason),
            stop_reason: finished.stop_reason,
            prompt_logprobs: None,
            token_ids: options.return_token_ids.then_some(token_ids),
            prompt_token_ids: options.return_token_ids.then_some(prompt_token_ids),
        }],
        usage: Some(finished.counts.usage(envelope.enable_prompt_tokens_details)),
        system_fingerprint: None,
        kv_transfer_params: None,
        ec_transfer_params: None,
    })
}
