//! Engine outputs turned into text events, the one stream both OpenAI routes
//! read (streamed or collected): the prompt first, then per engine step the
//! text it adds, its token ids and logprobs, and on the last one how the
//! request finished with its usage.
//!
//! A stop string found here ends the request: the engine stream is dropped
//! (which aborts the engine request) and the finish is `stop` with the string
//! as `stop_reason`.

use std::collections::VecDeque;
use std::pin::Pin;

use futures::{Stream, StreamExt, stream};
use mock_engine::script::{LogprobEntry, StopReason};
use mock_engine::{EngineEvent, EngineOutput, FinishReason};

use super::text::TextPipeline;
use super::usage::TokenCounts;
use crate::error::{ApiError, ENGINE_DEAD_MESSAGE};

/// How a request ended, as the OpenAI endpoints report it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// `stop`, `length`, `abort` or `repetition` (an engine `error` finish
    /// is an [`ApiError`] instead).
    pub reason: &'static str,
    pub stop_reason: Option<StopReason>,
    pub counts: TokenCounts,
}

/// One event of a request's text.
#[derive(Debug, Clone, PartialEq)]
pub enum TextEvent {
    /// The engine has the prompt (sent once, before any delta).
    Start { prompt_token_ids: Vec<u32> },
    /// One engine step's worth of output (an empty step too: vllm-rs sends
    /// a completions chunk with empty text for it).
    Delta(TextDelta),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TextDelta {
    pub text: String,
    pub token_ids: Vec<u32>,
    /// Per token: the sampled entry first, then the candidates.
    pub logprobs: Option<Vec<Vec<LogprobEntry>>>,
    pub finished: Option<Finished>,
    /// Counts so far (continuous usage).
    pub counts: TokenCounts,
}

type EngineStream = Pin<Box<dyn Stream<Item = EngineEvent> + Send>>;

/// A whole request's text events put together, for a non-streamed body.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub prompt_token_ids: Vec<u32>,
    pub text: String,
    pub token_ids: Vec<u32>,
    /// Per token: the sampled entry first, then the candidates; `None` when
    /// no engine output carried logprobs (none asked for, or no token).
    pub positions: Option<Vec<Vec<LogprobEntry>>>,
    pub finished: Finished,
}

/// Reads the engine for one request.
pub struct TextEvents {
    engine: Option<EngineStream>,
    text: TextPipeline,
    counts: TokenCounts,
    /// The prompt the request sent, until the first output takes it.
    prompt: Option<Vec<u32>>,
    pending: VecDeque<Result<TextEvent, ApiError>>,
    /// Put before the engine's failure message (vllm-rs says where it was collecting).
    failure_prefix: &'static str,
    /// The error of an `error` finish when no output carried logprobs yet
    /// (see [`Self::with_logprobs_checked_first`]).
    logprobs_missing: Option<&'static str>,
    /// Whether any engine output so far carried logprobs.
    logprobs_seen: bool,
}

impl TextEvents {
    /// Events of `engine`'s outputs for a request whose prompt is `prompt`.
    pub fn new(
        engine: impl Stream<Item = EngineEvent> + Send + 'static,
        text: TextPipeline,
        prompt: Vec<u32>,
    ) -> Self {
        Self {
            engine: Some(Box::pin(engine)),
            text,
            counts: TokenCounts::default(),
            prompt: Some(prompt),
            pending: VecDeque::new(),
            failure_prefix: "",
            logprobs_missing: None,
            logprobs_seen: false,
        }
    }

    /// An `error` finish before any logprobs fails with `message` instead of
    /// "Internal server error": vllm-rs's collected completions check the
    /// logprobs they were asked for before the finish.
    pub fn with_logprobs_checked_first(mut self, message: &'static str) -> Self {
        self.logprobs_missing = Some(message);
        self
    }

    /// Reports an engine failure as `{prefix}{message}` (a collected response does).
    pub fn with_failure_prefix(mut self, prefix: &'static str) -> Self {
        self.failure_prefix = prefix;
        self
    }

    /// The next event; `None` once the request has finished, failed, or the
    /// engine stream ended.
    pub async fn next(&mut self) -> Option<Result<TextEvent, ApiError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let engine = self.engine.as_mut()?;
            match engine.next().await {
                Some(EngineEvent::Output(output)) => self.on_output(output),
                Some(EngineEvent::Failed(message)) => {
                    tracing::info!(%message, "the engine failed mid-stream");
                    let message = format!("{}{ENGINE_DEAD_MESSAGE}", self.failure_prefix);
                    self.fail(ApiError::server_error(message));
                }
                None => self.engine = None,
            }
        }
    }

    fn fail(&mut self, error: ApiError) {
        self.engine = None;
        self.pending.push_back(Err(error));
    }

    fn on_output(&mut self, output: EngineOutput) {
        // The first output starts the answer (chat's role chunk), even when
        // the engine sends the prompt info later: the frontend knows the
        // prompt from its own request.
        if let Some(sent) = self.prompt.take() {
            let prompt = output
                .prompt_token_ids
                .as_deref()
                .map_or(sent, <[u32]>::to_vec);
            self.counts.prompt_tokens = prompt.len();
            self.pending.push_back(Ok(TextEvent::Start {
                prompt_token_ids: prompt,
            }));
        }
        self.counts.cached_tokens = self.counts.cached_tokens.max(output.num_cached_tokens);
        self.logprobs_seen |= output.logprobs.is_some();
        // A request the engine stopped does not show the last token's text,
        // as in vLLM: both frontends take an engine `stop` to be a stop on
        // a token (EOS or `stop_token_ids`), whatever its stop reason says
        // (seen on 0.32.0 with a text stop reason from the engine).
        let stopped_on_token = output.finish_reason == Some(FinishReason::Stop);
        let decoded = match stopped_on_token {
            true => &output.new_token_ids[..output.new_token_ids.len().saturating_sub(1)],
            false => &output.new_token_ids[..],
        };
        let tokens_before = self.text.tokens_out();
        let stop = match self.text.push(decoded) {
            Ok(stop) => stop,
            Err(e) => return self.fail(e),
        };
        // A stop string ends the output at the token that completed it:
        // vllm-rs counts no token after it.
        let used = match stop {
            Some(_) => (self.text.tokens_out() - tokens_before) as usize,
            None => output.new_token_ids.len(),
        };
        self.counts.completion_tokens += used;
        let mut token_ids = output.new_token_ids;
        token_ids.truncate(used);
        let mut logprobs = output.logprobs;
        if let Some(positions) = logprobs.as_mut() {
            positions.truncate(used);
        }
        let finished = match (stop, output.finish_reason) {
            (Some(stop), _) => Some(Finished {
                reason: "stop",
                stop_reason: Some(StopReason::Text(stop.0)),
                counts: self.counts,
            }),
            // vllm-rs sends the step's text, then the error.
            (None, Some(FinishReason::Error)) => None,
            (None, Some(reason)) => Some(Finished {
                reason: reason.as_str(),
                stop_reason: output.stop_reason,
                counts: self.counts,
            }),
            (None, None) => None,
        };
        let failed = output.finish_reason == Some(FinishReason::Error) && finished.is_none();
        if finished.is_some() || failed {
            // Finished, by the engine or by a stop string, or failed by an
            // `error` finish: read no more, and let out an incomplete
            // character's bytes (vllm-rs sends them before the error too).
            self.engine = None;
            if let Err(e) = self.text.flush() {
                return self.fail(e);
            }
        }
        let text = self.text.take_delta(finished.is_some() || failed);
        self.pending.push_back(Ok(TextEvent::Delta(TextDelta {
            text,
            token_ids,
            logprobs,
            finished,
            counts: self.counts,
        })));
        if failed {
            let message = match self.logprobs_missing {
                Some(message) if !self.logprobs_seen => message,
                _ => "Internal server error",
            };
            self.fail(ApiError::server_error(message));
        }
    }

    /// Everything decoded and kept so far.
    pub fn text(&self) -> &str {
        self.text.text()
    }

    /// The stream of a route's chunks: `to_chunks` turns each event into
    /// the chunks it sends; an error ends the stream.
    pub fn into_chunks<C>(
        self,
        to_chunks: impl FnMut(TextEvent) -> Vec<C> + Send + 'static,
    ) -> impl Stream<Item = Result<C, ApiError>> + Send
    where
        C: Send + 'static,
    {
        stream::unfold(
            (self, to_chunks),
            |(mut events, mut to_chunks)| async move {
                let chunks = match events.next().await? {
                    Ok(event) => to_chunks(event).into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                Some((stream::iter(chunks), (events, to_chunks)))
            },
        )
        .flatten()
    }

    /// Runs the request to its end; `unfinished` is the error message when
    /// the engine stream ends without a finish (each route words it its own way).
    pub async fn collect(mut self, unfinished: &'static str) -> Result<Collected, ApiError> {
        let mut prompt_token_ids = Vec::new();
        let mut text = String::new();
        let mut token_ids = Vec::new();
        let mut positions = Vec::new();
        let mut finished = None;
        while let Some(event) = self.next().await {
            match event? {
                TextEvent::Start {
                    prompt_token_ids: ids,
                } => prompt_token_ids = ids,
                TextEvent::Delta(delta) => {
                    text.push_str(&delta.text);
                    token_ids.extend(delta.token_ids);
                    positions.extend(delta.logprobs.into_iter().flatten());
                    finished = delta.finished.or(finished);
                }
            }
        }
        let finished = finished.ok_or_else(|| ApiError::server_error(unfinished))?;
        Ok(Collected {
            prompt_token_ids,
            text,
            token_ids,
            // One record of whether any output carried logprobs: the same
            // flag decides an `error` finish's message.
            positions: self.logprobs_seen.then_some(positions),
            finished,
        })
    }
}
