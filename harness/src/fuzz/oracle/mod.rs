//! Invariants every implementation of the token endpoints must keep,
//! checked on one exchange (or on a stream and its non-streamed twin).
//!
//! The oracle is the contract, and only the contract: what the request
//! means is read from its JSON with vllm-rs's rules of the pinned release
//! (the reference reproduces them), as each endpoint's family
//! ([`crate::endpoint`]) states them: [`Expected::new`] says whether the
//! request is valid, which response mode and options it asks for, and,
//! when the script is known, what the stream must amount to. The checks
//! themselves ([`check`], [`check_twins`]) ask the family where an answer
//! keeps its text, ids and logprobs, and never which endpoint it is.
//!
//! Where another frontend departs from the contract (vLLM's Python server
//! coerces `"yes"` to `true`, allows `n` > 1; a newer vllm-rs refuses
//! `stop` on generate), that is written once, in the divergence registry,
//! and nowhere here: `fuzz` judges a target that is not the baseline by
//! comparing it with the baseline through the registry (see
//! [`super::verdict`]), so a registered difference is never a violation
//! and a rule learnt once serves `run` and `fuzz` alike.

mod answer;
mod expected;
mod plain;
mod stream;
mod twins;

use std::fmt;

use serde_json::Value;

pub use crate::endpoint::Validity;
use crate::normalize::{Body, Transcript};
pub use expected::{Expected, ExpectedText, ScriptEnd, ScriptOutcome};
use plain::check_plain;
use stream::check_stream;
pub use twins::{check_twins, streamed};

/// The invariant a response broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    /// The exchange did not complete (timeout, reset, flood).
    Transport,
    /// The status agrees with the request's validity.
    Status,
    /// Errors are `{"error": {"message": ...}}` JSON.
    ErrorBody,
    /// A stream is `text/event-stream`, anything else JSON.
    ContentType,
    /// Exactly one `[DONE]`, last.
    Done,
    /// Every event is JSON or `[DONE]`.
    EventData,
    /// At most one finish reason per choice, nothing for it afterwards, and a
    /// stream ends with a finish or an error.
    FinishReason,
    /// Nothing but `[DONE]` after an in-band error; at most one error.
    ErrorEvent,
    /// A usage event only with `include_usage`, with `choices: []`, after the
    /// last token chunk and before `[DONE]`, exactly once unless an error ended the stream.
    UsageEvent,
    /// total = prompt + completion; completion = tokens emitted; prompt = prompt length.
    UsageArithmetic,
    /// Cumulative usage on every token chunk exactly when asked, never decreasing.
    ContinuousUsage,
    /// `prompt_token_ids` only with `return_token_ids`, once, equal to the prompt.
    PromptTokenIds,
    /// The client's request id is the one echoed; one id per stream.
    RequestId,
    /// Logprobs exactly when asked, one entry per token.
    Logprobs,
    /// Tokens and finish reason are what the engine script says.
    Script,
    /// The non-streamed result is what the stream amounts to.
    StreamEqualsNonStream,
    /// Completions and chat: the text is the engine's tokens detokenized
    /// incrementally, primed with the prompt, special tokens skipped.
    Text,
    /// Chat: each choice's first chunk, and only it, carries the role.
    ChatRole,
    /// Two targets differ in a way the divergence registry does not accept.
    Differential,
}

impl Property {
    pub fn name(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::Status => "status-agrees-with-validity",
            Self::ErrorBody => "error-body",
            Self::ContentType => "content-type",
            Self::Done => "one-done-last",
            Self::EventData => "event-data-is-json",
            Self::FinishReason => "one-finish-reason-per-choice",
            Self::ErrorEvent => "nothing-after-error",
            Self::UsageEvent => "usage-event-placement",
            Self::UsageArithmetic => "usage-arithmetic",
            Self::ContinuousUsage => "continuous-usage",
            Self::PromptTokenIds => "prompt-token-ids",
            Self::RequestId => "request-id",
            Self::Logprobs => "logprobs",
            Self::Script => "follows-script",
            Self::StreamEqualsNonStream => "stream-equals-non-stream",
            Self::Text => "text-equals-detokenized-tokens",
            Self::ChatRole => "one-role-delta-first",
            Self::Differential => "targets-agree",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: Property,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

fn violation(property: Property, detail: impl Into<String>) -> Violation {
    Violation {
        property,
        detail: detail.into(),
    }
}

/// Whether a lexer note depends only on where TCP split the body (the
/// lexer's `SplitEvents`), so two targets may differ in it.
pub fn is_transport_note(note: &str) -> bool {
    note.contains("arrived in more than one chunk")
}

/// Checks one exchange against the contract.
pub fn check(expected: &Expected, t: &Transcript) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(e) = &t.error {
        out.push(violation(Property::Transport, e.clone()));
        return out;
    }
    let status = t.status.unwrap_or(0);
    match expected.validity {
        Validity::Invalid { status: want } => {
            if status != want {
                out.push(violation(
                    Property::Status,
                    format!("an invalid request wants {want}, got {status}"),
                ));
            }
            check_error_body(t, &mut out);
            return out;
        }
        Validity::Valid => {}
    }
    let end = expected.script.as_ref().map(|s| s.end);
    // Completions and chat answer a plain request whose engine finishes
    // with `error` with a 500 too (generate in vllm-rs: 200 and the finish).
    let text_error_finish =
        expected.family().error_finish_is_server_error() && end == Some(ScriptEnd::ErrorFinish);
    // A stop string may end the request before the engine fails or
    // finishes with an error: then the answer is a good 200.
    let fails = (end == Some(ScriptEnd::Fail) || text_error_finish)
        && !(expected.stop_strings && status == 200);
    if expected.stream {
        if status != 200 {
            out.push(violation(
                Property::Status,
                format!("a valid streamed request wants 200, got {status}"),
            ));
            return out;
        }
        check_stream(expected, t, &mut out);
    } else if fails {
        if !(500..600).contains(&status) {
            out.push(violation(
                Property::Status,
                format!("a plain request whose engine fails wants a 5xx, got {status}"),
            ));
        }
        check_error_body(t, &mut out);
    } else if status != 200 && refuses_empty_logprobs(expected) && (500..600).contains(&status) {
        check_error_body(t, &mut out);
    } else {
        if status != 200 {
            out.push(violation(
                Property::Status,
                format!("a valid request wants 200, got {status}"),
            ));
            return out;
        }
        check_plain(expected, t, &mut out);
    }
    out
}

/// A known quirk, kept by vllm-rs 0.32 and so by the reference: a plain
/// request that asks for logprobs and generates no token at all is a 500
/// ("requested logprobs but generation returned none"), although its stream
/// finishes normally. An `error` finish without a token is the same 500 on
/// generate (the logprobs check comes first). Python answers 200 with empty
/// logprobs. See `fixtures/found/fuzz_empty_generation_logprobs.json`,
/// `completions_logprobs_no_token_non_stream`, `chat_logprobs_no_token_non_stream`.
pub fn refuses_empty_logprobs(expected: &Expected) -> bool {
    // With completions' `echo`, vllm-rs answers with the prompt's logprobs.
    expected.logprobs.is_some()
        && !expected.echo
        && expected.script.as_ref().is_some_and(|s| {
            s.all_tokens.is_empty()
                && matches!(s.end, ScriptEnd::Finish(_) | ScriptEnd::ErrorFinish)
        })
}

/// vllm-rs 0.32's completions stream wants logprobs on every engine output
/// when they are asked for, and ends with an in-band error ("completion
/// stream requested logprobs but generation returned none") at an output
/// without tokens, which an engine sends none for; its generate route skips
/// such outputs, its chat route sends only their finish. The stream may end
/// there (a prefix of its text, no finish); a stream that goes on must be
/// right. Pinned by `completions_logprobs_*_stream`.
pub fn refuses_tokenless_logprobs(expected: &Expected) -> bool {
    expected.family().tokenless_logprobs_end_stream()
        && expected.logprobs.is_some()
        && expected.script.as_ref().is_some_and(|s| s.tokenless_step)
}

pub(super) fn content_type(t: &Transcript) -> &str {
    t.headers.get("content-type").map_or("", String::as_str)
}

pub(super) fn check_error_body(t: &Transcript, out: &mut Vec<Violation>) {
    if !content_type(t).starts_with("application/json") {
        out.push(violation(
            Property::ContentType,
            format!(
                "an error body wants application/json, got `{}`",
                content_type(t)
            ),
        ));
    }
    let ok = match &t.body {
        Body::Json(v) => v.pointer("/error/message").is_some_and(Value::is_string),
        _ => false,
    };
    if !ok {
        out.push(violation(
            Property::ErrorBody,
            format!(
                "wants {{\"error\": {{\"message\": ...}}}}, got {}",
                brief(&t.body)
            ),
        ));
    }
}

pub(super) fn brief(body: &Body) -> String {
    let text = serde_json::to_string(body).unwrap_or_default();
    if text.len() > 200 {
        format!("{}...", &text[..text.floor_char_boundary(200)])
    } else {
        text
    }
}

/// What a well-formed stream amounts to, for the twin comparison.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Streamed {
    pub tokens: Vec<u64>,
    pub finish_reason: Option<String>,
    pub error: bool,
    pub prompt_token_ids: Option<Value>,
    /// Logprob token ids, concatenated (generate).
    pub logprob_tokens: Option<Vec<u64>>,
    /// Logprob entries, counted (completions and chat name no token ids).
    pub logprob_count: Option<usize>,
    /// Completions and chat: the text of choice 0, concatenated.
    pub text: String,
}

#[cfg(test)]
mod tests;
