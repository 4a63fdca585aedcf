//! Invariants every implementation of the generate endpoint must keep,
//! checked on one exchange (or on a stream and its non-streamed twin).
//!
//! The oracle is the contract, and only the contract: what the request
//! means is read from its JSON with vllm-rs's rules of the pinned release
//! (the reference reproduces them): [`Expected::new`] says whether the
//! request is valid, which response mode and options it asks for, and,
//! when the script is known, what the stream must amount to.
//!
//! Where another frontend departs from the contract (vLLM's Python server
//! coerces `"yes"` to `true`, allows `n` > 1; a newer vllm-rs refuses
//! `stop` on generate), that is written once, in the divergence registry,
//! and nowhere here: `fuzz` judges a target that is not the baseline by
//! comparing it with the baseline through the registry (see
//! [`super::verdict`]), so a registered difference is never a violation
//! and a rule learnt once serves `run` and `fuzz` alike.

use std::fmt;

use mock_engine::script::{Endpoint, FinishReason, RequestSpec, Script};
use serde_json::Value;

pub use crate::endpoint::Validity;
use crate::endpoint::{Family, family, present, token_ids};
use crate::normalize::{Body, EventData, StreamSummary, Transcript};

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

/// How the engine script ends, as the client must see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptEnd {
    Finish(FinishReason),
    /// `finish: "error"`: an in-band error in a stream.
    ErrorFinish,
    /// The engine stream broke.
    Fail,
}

/// The text of a script's tokens, as a frontend's incremental detokenizer
/// makes it: primed with the prompt (so the first word has its leading
/// space), each token stepped in, a character released once whole (bytes of
/// an unfinished one never come out), special tokens skipped, and the stop
/// token of a `stop` finish left out (vLLM's `detokenizer.update` with
/// `stop_terminated`, without `include_stop_str_in_output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedText {
    /// Of the tokens a stream carries.
    pub streamed: String,
    /// Of every token the engine emitted.
    pub all: String,
    /// The same texts with a character left unfinished at the end flushed
    /// as U+FFFD, as vllm-rs does (Python never releases it). Equal to the
    /// texts above when every character is whole.
    pub streamed_flushed: String,
    pub all_flushed: String,
}

impl ExpectedText {
    pub fn of(prompt: &[u64], script: &ScriptOutcome) -> Option<Self> {
        let ids = |t: &[u64]| -> Option<Vec<u32>> {
            t.iter().map(|&id| u32::try_from(id).ok()).collect()
        };
        let prompt = ids(prompt)?;
        let text = |tokens: &[u64]| -> Option<(String, String)> {
            let tokenizer = model::Tokenizer::shared_built_in();
            let mut stream = tokenizer.detokenizer(&prompt, true);
            let mut out = String::new();
            let mut tokens = ids(tokens)?;
            if script.stop_token {
                tokens.pop();
            }
            for &id in &tokens {
                out.push_str(&stream.step(id).ok()?.unwrap_or_default());
            }
            // vllm-rs's final flush lets out what is still held back.
            let flushed = out.clone() + &stream.flush().ok()?.unwrap_or_default();
            Some((out, flushed))
        };
        let (streamed, streamed_flushed) = text(&script.streamed_tokens)?;
        let (all, all_flushed) = text(&script.all_tokens)?;
        Some(Self {
            streamed,
            all,
            streamed_flushed,
            all_flushed,
        })
    }
}

/// What the script makes the client see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptOutcome {
    /// Tokens a stream carries (an error step's tokens are not sent).
    pub streamed_tokens: Vec<u64>,
    /// Every token the engine emitted.
    pub all_tokens: Vec<u64>,
    pub end: ScriptEnd,
    pub late_prompt_info: bool,
    /// Some engine output carries no token (an empty or finish-only step).
    pub tokenless_step: bool,
    /// The engine finishes with `stop` in a step with tokens, on a token (no
    /// stop reason, or a token id): that last token is the stop token, which
    /// frontends do not detokenize. A stop reason that is a string says the
    /// engine matched text, and the token's text is shown.
    pub stop_token: bool,
}

impl ScriptOutcome {
    pub fn of(script: &Script) -> Option<Self> {
        let last = script.steps.last()?;
        let end = match (last.finish, &last.fail) {
            (_, Some(_)) => ScriptEnd::Fail,
            (Some(FinishReason::Error), _) => ScriptEnd::ErrorFinish,
            (Some(r), _) => ScriptEnd::Finish(r),
            // Unfinished or stalled scripts are not generated.
            (None, None) => return None,
        };
        let all_tokens: Vec<u64> = script
            .steps
            .iter()
            .flat_map(|s| s.tokens.iter().map(|&t| u64::from(t)))
            .collect();
        let mut streamed_tokens = all_tokens.clone();
        if end == ScriptEnd::ErrorFinish {
            streamed_tokens.truncate(all_tokens.len() - last.tokens.len());
        }
        Some(Self {
            streamed_tokens,
            all_tokens,
            end,
            late_prompt_info: script.steps.iter().any(|s| s.prompt_info == Some(false)),
            tokenless_step: script
                .steps
                .iter()
                .any(|s| s.tokens.is_empty() && s.fail.is_none()),
            // Whatever the engine's stop reason: both 0.32.0 frontends
            // hide the last token of an engine `stop`
            // (`completions_stop_reason_text_from_engine_*`).
            stop_token: end == ScriptEnd::Finish(FinishReason::Stop) && !last.tokens.is_empty(),
        })
    }
}

/// What a response to one request must look like.
#[derive(Debug, Clone)]
pub struct Expected {
    pub endpoint: Endpoint,
    pub validity: Validity,
    pub stream: bool,
    pub include_usage: bool,
    pub continuous_usage: bool,
    pub return_token_ids: bool,
    /// Logprobs when asked: generate's `sampling_params.logprobs`,
    /// completions' `logprobs`, chat's `top_logprobs` (0 when absent) when
    /// its `logprobs` is true.
    pub logprobs: Option<i64>,
    /// The prompt ids the engine sees.
    pub prompt: Vec<u64>,
    /// Choices carry `token_ids` (generate; completions and chat with
    /// `return_token_ids`), so tokens can be counted on the wire.
    pub token_ids_visible: bool,
    /// `stop` strings are set: the frontend may end the text (and the
    /// tokens) before the script does, so what the script says is not checked.
    pub stop_strings: bool,
    /// Completions' `echo`: the text starts with the prompt's.
    pub echo: bool,
    /// Completions and chat: the text the script's tokens make.
    pub text: Option<ExpectedText>,
    /// The id the client chose: the header's, else the body's.
    pub request_id: Option<String>,
    pub script: Option<ScriptOutcome>,
}

impl Expected {
    /// `script`: the script the engine answers with, when known.
    pub fn new(request: &RequestSpec, served_model: &str, script: Option<&Script>) -> Self {
        let endpoint = request.endpoint;
        let rules = family(endpoint);
        let body = request.body.clone().unwrap_or(Value::Null);
        let get = |k: &str| body.get(k).filter(|v| !v.is_null());
        let options = get("stream_options");
        let option = |k: &str| options.and_then(|o| o.get(k)).and_then(Value::as_bool);
        let flag = |k: &str| get(k).and_then(Value::as_bool).unwrap_or(false);
        let stream = flag("stream");
        let include_usage = stream && option("include_usage").unwrap_or(false);
        let header_id = request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, v)| v.as_str());
        let return_token_ids = flag("return_token_ids");
        let prompt: Vec<u64> = if request.raw_body.is_some() {
            Vec::new()
        } else {
            endpoint
                .prompt_token_ids(&body)
                .unwrap_or_default()
                .into_iter()
                .map(u64::from)
                .collect()
        };
        let script = script.and_then(ScriptOutcome::of);
        let text = script
            .as_ref()
            .filter(|_| rules.detokenizes())
            .and_then(|s| ExpectedText::of(&prompt, s));
        Self {
            endpoint,
            validity: rules.validity(&body, served_model),
            stream,
            include_usage,
            continuous_usage: include_usage && option("continuous_usage_stats").unwrap_or(false),
            return_token_ids,
            logprobs: rules.logprobs_asked(&body),
            prompt,
            token_ids_visible: rules.logprobs_name_token_ids() || return_token_ids,
            stop_strings: rules.stop_strings(&body),
            echo: rules.echo(&body),
            text,
            request_id: rules.client_request_id(&body, header_id),
            script,
        }
    }

    /// The rules of the endpoint the request goes to.
    pub fn family(&self) -> &'static dyn Family {
        family(self.endpoint)
    }

    /// How many tokens the engine's script says were emitted (`all`: the
    /// tokens of an error step too), when the wire cannot show it and the
    /// script is known and followed to its end.
    fn script_tokens(&self, all: bool) -> Option<u64> {
        let s = self.script.as_ref().filter(|_| !self.stop_strings)?;
        let tokens = if all {
            &s.all_tokens
        } else {
            &s.streamed_tokens
        };
        Some(tokens.len() as u64)
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

fn content_type(t: &Transcript) -> &str {
    t.headers.get("content-type").map_or("", String::as_str)
}

fn check_error_body(t: &Transcript, out: &mut Vec<Violation>) {
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

fn brief(body: &Body) -> String {
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

fn check_usage(
    usage: &Value,
    expected: &Expected,
    emitted: Option<u64>,
    what: &str,
    property: Property,
    out: &mut Vec<Violation>,
) -> Option<(u64, u64)> {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64);
    let (Some(prompt), Some(completion), Some(total)) = (
        n("prompt_tokens"),
        n("completion_tokens"),
        n("total_tokens"),
    ) else {
        out.push(violation(
            property,
            format!("{what}: usage without integer counts: {usage}"),
        ));
        return None;
    };
    if total != prompt + completion {
        out.push(violation(
            Property::UsageArithmetic,
            format!("{what}: total_tokens {total} != prompt_tokens {prompt} + completion_tokens {completion}"),
        ));
    }
    if let Some(emitted) = emitted
        && completion != emitted
    {
        out.push(violation(
            Property::UsageArithmetic,
            format!(
                "{what}: completion_tokens {completion}, but {emitted} tokens were sent so far"
            ),
        ));
    }
    let late = expected.script.as_ref().is_some_and(|s| s.late_prompt_info);
    let want = expected.prompt.len() as u64;
    if prompt != want && !(late && prompt == 0 && property == Property::ContinuousUsage) {
        out.push(violation(
            Property::UsageArithmetic,
            format!("{what}: prompt_tokens {prompt}, but the prompt has {want} tokens"),
        ));
    }
    Some((prompt, completion))
}

fn check_stream(expected: &Expected, t: &Transcript, out: &mut Vec<Violation>) {
    if !content_type(t).starts_with("text/event-stream") {
        out.push(violation(
            Property::ContentType,
            format!(
                "a stream wants text/event-stream, got `{}`",
                content_type(t)
            ),
        ));
    }
    let Body::Events(events) = &t.body else {
        out.push(violation(
            Property::ContentType,
            format!("not an event stream: {}", brief(&t.body)),
        ));
        return;
    };
    let dones = events
        .iter()
        .filter(|e| matches!(e, EventData::Done))
        .count();
    if dones != 1 || !matches!(events.last(), Some(EventData::Done)) {
        out.push(violation(
            Property::Done,
            format!(
                "{dones} [DONE] events in {}; the last is {}",
                events.len(),
                events
                    .last()
                    .map_or("nothing".into(), |e| serde_json::to_string(e)
                        .unwrap_or_default())
            ),
        ));
    }
    if let Some(note) = t
        .notes
        .iter()
        .find(|n| n.contains("after the `[DONE]` event"))
    {
        out.push(violation(
            Property::Done,
            format!("bytes after [DONE]: {note}"),
        ));
    }
    let s = stream_summary(expected, events, out);
    // Stop strings end the text where the frontend finds them, not where
    // the script ends.
    if let Some(script) = expected.script.as_ref().filter(|_| !expected.stop_strings) {
        let cut_short = refuses_tokenless_logprobs(expected) && s.error;
        // vllm-rs streams the text of an `error` step's tokens before the
        // error; generate and Python send none of them.
        let error_step_text = script.end == ScriptEnd::ErrorFinish;
        if let Some(want) = &expected.text
            && !text_matches(expected, &s.text, &want.streamed)
            && !text_matches(expected, &s.text, &want.streamed_flushed)
            && !(error_step_text
                && (text_matches(expected, &s.text, &want.all)
                    || text_matches(expected, &s.text, &want.all_flushed)))
            && !(cut_short && (expected.echo || want.streamed.starts_with(&s.text)))
        {
            out.push(violation(
                Property::Text,
                format!(
                    "streamed text {:?}, the script's tokens {:?} make {:?}",
                    s.text, script.streamed_tokens, want.streamed
                ),
            ));
        }
        if let (Some(want), Some(got)) = (expected.logprobs, s.logprob_count)
            && !expected.family().logprobs_name_token_ids()
            && got != script.streamed_tokens.len()
            && !(error_step_text && got == script.all_tokens.len())
            && !(cut_short && got < script.streamed_tokens.len())
        {
            out.push(violation(
                Property::Logprobs,
                format!(
                    "{got} logprob entries (top {want}) for the {} tokens streamed",
                    script.streamed_tokens.len()
                ),
            ));
        }
        let merged_into_error = cut_short && script.streamed_tokens.starts_with(&s.tokens);
        // vllm-rs streams an `error` step's token ids with its text.
        let error_step_ids = error_step_text
            && expected.family().streams_error_step()
            && s.tokens == script.all_tokens;
        if expected.token_ids_visible
            && s.tokens != script.streamed_tokens
            && !merged_into_error
            && !error_step_ids
        {
            out.push(violation(
                Property::Script,
                format!(
                    "streamed tokens {:?}, the script emits {:?}",
                    s.tokens, script.streamed_tokens
                ),
            ));
        }
        match &script.end {
            ScriptEnd::Finish(_)
                if refuses_tokenless_logprobs(expected) && s.error && s.finish_reason.is_none() => {
            }
            ScriptEnd::Finish(r) => {
                if s.error || s.finish_reason.as_deref() != Some(r.as_str()) {
                    out.push(violation(
                        Property::Script,
                        format!(
                            "the script finishes with `{r}`; the stream ends with finish {:?}{}",
                            s.finish_reason,
                            if s.error { " and an error" } else { "" }
                        ),
                    ));
                }
            }
            ScriptEnd::ErrorFinish | ScriptEnd::Fail => {
                if !s.error || s.finish_reason.is_some() {
                    out.push(violation(
                        Property::Script,
                        format!(
                            "the engine {} : wants an in-band error and no finish reason, got error={} finish {:?}",
                            if script.end == ScriptEnd::Fail { "fails" } else { "finishes with `error`" },
                            s.error,
                            s.finish_reason
                        ),
                    ));
                }
            }
        }
    }
}

/// Whether a choice's text is `generated`: with completions' `echo` it may
/// start with the prompt's text.
fn text_matches(expected: &Expected, text: &str, generated: &str) -> bool {
    if expected.echo {
        text.ends_with(generated)
    } else {
        text == generated
    }
}

/// Walks the events once, checking everything that depends on order.
fn stream_summary(expected: &Expected, events: &[EventData], out: &mut Vec<Violation>) -> Streamed {
    let rules = expected.family();
    let mut s = Streamed::default();
    // What the chunks so far add up to: tokens, text and finish per choice.
    let mut sum = StreamSummary::default();
    let mut finished = std::collections::BTreeSet::new();
    let mut error_at: Option<usize> = None;
    let mut usage_at: Vec<usize> = Vec::new();
    let mut last_continuous: Option<(u64, u64)> = None;
    let mut prompt_ids_seen = 0;
    let mut request_ids = std::collections::BTreeSet::new();
    let mut token_chunks = 0;
    let mut roles = std::collections::BTreeSet::new();
    for (i, event) in events.iter().enumerate() {
        let v = match event {
            EventData::Done => continue,
            EventData::Text(text) => {
                out.push(violation(
                    Property::EventData,
                    format!("event {i} is not JSON: {text:?}"),
                ));
                continue;
            }
            EventData::Json(v) => v,
        };
        if let Some(at) = error_at {
            out.push(violation(
                Property::ErrorEvent,
                format!("event {i} follows the error of event {at}: {v}"),
            ));
        }
        if let Some(id) = v.get("request_id").and_then(Value::as_str) {
            request_ids.insert(id.to_string());
        }
        if v.get("error").is_some() {
            if !v.pointer("/error/message").is_some_and(Value::is_string) {
                out.push(violation(
                    Property::ErrorBody,
                    format!("event {i}: an error without a message: {v}"),
                ));
            }
            error_at.get_or_insert(i);
            s.error = true;
            continue;
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            out.push(violation(
                Property::EventData,
                format!("event {i} has neither choices nor error: {v}"),
            ));
            continue;
        };
        if choices.is_empty() {
            usage_at.push(i);
            if !expected.include_usage {
                out.push(violation(
                    Property::UsageEvent,
                    format!("event {i} is a usage event, but include_usage is off: {v}"),
                ));
            }
            match present(v, "usage") {
                Some(u) => {
                    let emitted = if expected.token_ids_visible {
                        Some(sum.token_ids(0).len() as u64)
                    } else {
                        expected.script_tokens(false)
                    };
                    check_usage(
                        u,
                        expected,
                        emitted,
                        &format!("usage event {i}"),
                        Property::UsageEvent,
                        out,
                    );
                }
                None => out.push(violation(
                    Property::UsageEvent,
                    format!("event {i} has `choices: []` but no usage"),
                )),
            }
            continue;
        }
        token_chunks += 1;
        sum.add(event);
        if let Some(&u) = usage_at.first() {
            out.push(violation(
                Property::UsageEvent,
                format!("token chunk {i} comes after the usage event {u}"),
            ));
        }
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            if finished.contains(&index) {
                out.push(violation(
                    Property::FinishReason,
                    format!("event {i}: choice {index} goes on after its finish reason: {choice}"),
                ));
            }
            let ids = token_ids(choice);
            if let Some(want) = rules.role() {
                let role = present(choice, "delta").and_then(|d| present(d, "role"));
                if roles.insert(index) {
                    if role.and_then(Value::as_str) != Some(want) {
                        out.push(violation(
                            Property::ChatRole,
                            format!("event {i}: the first chunk of choice {index} has no role `{want}`: {choice}"),
                        ));
                    }
                } else if let Some(role) = role {
                    out.push(violation(
                        Property::ChatRole,
                        format!("event {i}: choice {index} has its role {role} again"),
                    ));
                }
            }
            check_logprobs(expected, choice, &ids, &format!("event {i}"), out);
            if index == 0 {
                if let Some(l) = rules.logprob_token_ids(choice) {
                    s.logprob_tokens.get_or_insert_with(Vec::new).extend(l);
                }
                if let Some(n) = rules.logprob_entries(choice).map(Vec::len) {
                    *s.logprob_count.get_or_insert(0) += n;
                }
            }
            if present(choice, "finish_reason").is_some() {
                finished.insert(index);
            }
        }
        if let Some(p) = rules.prompt_token_ids(v) {
            prompt_ids_seen += 1;
            check_prompt_ids(expected, p, &format!("event {i}"), out);
            s.prompt_token_ids = Some(p.clone());
        }
        match (expected.continuous_usage, present(v, "usage")) {
            (true, Some(u)) => {
                let now = check_usage(
                    u,
                    expected,
                    expected
                        .token_ids_visible
                        .then(|| sum.token_ids(0).len() as u64),
                    &format!("event {i}"),
                    Property::ContinuousUsage,
                    out,
                );
                if let (Some(now), Some(before)) = (now, last_continuous)
                    && (now.0 < before.0 || now.1 < before.1)
                {
                    out.push(violation(
                        Property::ContinuousUsage,
                        format!("event {i}: usage went down from {before:?} to {now:?} (prompt, completion)"),
                    ));
                }
                last_continuous = now.or(last_continuous);
            }
            (true, None) => out.push(violation(
                Property::ContinuousUsage,
                format!("event {i}: continuous usage was asked, the token chunk has none"),
            )),
            (false, Some(u)) => out.push(violation(
                Property::ContinuousUsage,
                format!(
                    "event {i}: a token chunk carries usage {u} without continuous usage asked"
                ),
            )),
            (false, None) => {}
        }
    }
    s.tokens = sum.token_ids(0);
    s.text = sum.text_of(0).to_string();
    s.finish_reason = sum.finish_reason(0).map(Into::into);
    if usage_at.len() > 1 {
        out.push(violation(
            Property::UsageEvent,
            format!("{} usage events (at {usage_at:?})", usage_at.len()),
        ));
    }
    if let (Some(e), Some(&u)) = (error_at, usage_at.last())
        && u > e
    {
        out.push(violation(
            Property::UsageEvent,
            format!("usage event {u} after the error of event {e}"),
        ));
    }
    if expected.include_usage && error_at.is_none() && usage_at.is_empty() {
        out.push(violation(
            Property::UsageEvent,
            "include_usage is on, and no usage event came",
        ));
    }
    if let Some(&u) = usage_at.last() {
        let next = events.get(u + 1);
        if !matches!(next, Some(EventData::Done)) {
            out.push(violation(
                Property::UsageEvent,
                format!("the usage event {u} is not followed by [DONE]"),
            ));
        }
    }
    if s.finish_reason.is_none() && !s.error {
        out.push(violation(
            Property::FinishReason,
            "the stream ends with neither a finish reason nor an error",
        ));
    }
    if prompt_ids_seen > 1 {
        out.push(violation(
            Property::PromptTokenIds,
            format!("prompt_token_ids sent {prompt_ids_seen} times"),
        ));
    }
    let late = expected.script.as_ref().is_none_or(|s| s.late_prompt_info);
    if expected.return_token_ids && prompt_ids_seen == 0 && token_chunks > 0 && !late && !s.error {
        out.push(violation(
            Property::PromptTokenIds,
            "return_token_ids is on, and no chunk carried prompt_token_ids",
        ));
    }
    check_request_ids(expected, request_ids.iter().map(String::as_str), out);
    s
}

fn check_prompt_ids(expected: &Expected, p: &Value, at: &str, out: &mut Vec<Violation>) {
    if !expected.return_token_ids {
        out.push(violation(
            Property::PromptTokenIds,
            format!("{at}: prompt_token_ids without return_token_ids"),
        ));
    } else if p
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect::<Vec<_>>())
        != Some(expected.prompt.clone())
    {
        out.push(violation(
            Property::PromptTokenIds,
            format!(
                "{at}: prompt_token_ids {p}, the prompt is {:?}",
                expected.prompt
            ),
        ));
    }
}

fn check_logprobs(
    expected: &Expected,
    choice: &Value,
    ids: &[u64],
    at: &str,
    out: &mut Vec<Violation>,
) {
    let rules = expected.family();
    if !rules.logprobs_name_token_ids() {
        // Entries name tokens by text, not id: count them where ids show.
        match (
            expected.logprobs,
            rules.logprob_entries(choice).map(Vec::len),
        ) {
            // With `echo` the prompt's entries come first.
            (Some(_), Some(n))
                if expected.token_ids_visible && !expected.echo && n != ids.len() =>
            {
                out.push(violation(
                    Property::Logprobs,
                    format!("{at}: {n} logprob entries for the tokens {ids:?}"),
                ))
            }
            (Some(_), None) if !ids.is_empty() => out.push(violation(
                Property::Logprobs,
                format!("{at}: logprobs were asked, and the choice with tokens {ids:?} has none"),
            )),
            (None, Some(_)) => out.push(violation(
                Property::Logprobs,
                format!("{at}: logprobs were not asked, and the choice has some"),
            )),
            _ => {}
        }
        return;
    }
    match (expected.logprobs, rules.logprob_token_ids(choice)) {
        (Some(_), Some(l)) if l != ids => out.push(violation(
            Property::Logprobs,
            format!("{at}: logprobs are for tokens {l:?}, the choice has {ids:?}"),
        )),
        (Some(_), None) if !ids.is_empty() => out.push(violation(
            Property::Logprobs,
            format!("{at}: logprobs were asked, and the choice with tokens {ids:?} has none"),
        )),
        (None, Some(_)) => out.push(violation(
            Property::Logprobs,
            format!("{at}: logprobs were not asked, and the choice has some"),
        )),
        _ => {}
    }
}

fn check_request_ids<'a>(
    expected: &Expected,
    ids: impl Iterator<Item = &'a str>,
    out: &mut Vec<Violation>,
) {
    let ids: Vec<&str> = ids.collect();
    if ids.len() > 1 {
        out.push(violation(
            Property::RequestId,
            format!("several request ids in one response: {ids:?}"),
        ));
    }
    if let Some(want) = &expected.request_id {
        for id in ids {
            if !id.contains(want.as_str()) {
                out.push(violation(
                    Property::RequestId,
                    format!("request_id `{id}`, the client chose `{want}`"),
                ));
            }
        }
    }
}

fn check_plain(expected: &Expected, t: &Transcript, out: &mut Vec<Violation>) {
    if !content_type(t).starts_with("application/json") {
        out.push(violation(
            Property::ContentType,
            format!(
                "a plain response wants application/json, got `{}`",
                content_type(t)
            ),
        ));
    }
    let Some(p) = plain_result(expected.family(), t) else {
        out.push(violation(
            Property::ErrorBody,
            format!("wants a body with choices[0], got {}", brief(&t.body)),
        ));
        return;
    };
    let Body::Json(body) = &t.body else {
        unreachable!("plain_result read JSON")
    };
    let choice = &body["choices"][0];
    check_logprobs(expected, choice, &p.tokens, "body", out);
    if let Some(ids) = expected.family().prompt_token_ids(body) {
        check_prompt_ids(expected, ids, "body", out);
    } else if expected.return_token_ids {
        out.push(violation(
            Property::PromptTokenIds,
            "return_token_ids is on, and the body has no prompt_token_ids",
        ));
    }
    if let Some(want) = expected.family().role()
        && choice.pointer("/message/role").and_then(Value::as_str) != Some(want)
    {
        out.push(violation(
            Property::ChatRole,
            format!("the message has no role `{want}`: {choice}"),
        ));
    }
    if let Some(u) = present(body, "usage") {
        let emitted = if expected.token_ids_visible {
            Some(p.tokens.len() as u64)
        } else {
            expected.script_tokens(true)
        };
        check_usage(u, expected, emitted, "body", Property::UsageArithmetic, out);
    }
    if p.finish_reason.is_none() {
        out.push(violation(
            Property::FinishReason,
            "a complete response without a finish reason",
        ));
    }
    check_request_ids(
        expected,
        body.get("request_id").and_then(Value::as_str).into_iter(),
        out,
    );
    if let Some(script) = expected.script.as_ref().filter(|_| !expected.stop_strings) {
        let want_finish = match script.end {
            ScriptEnd::Finish(r) => r.as_str(),
            _ => "error",
        };
        if let Some(want) = &expected.text
            && !text_matches(expected, &p.text, &want.all)
            && !text_matches(expected, &p.text, &want.all_flushed)
        {
            out.push(violation(
                Property::Text,
                format!(
                    "text {:?}, the script's tokens {:?} make {:?}",
                    p.text, script.all_tokens, want.all
                ),
            ));
        }
        if let (Some(_), Some(got)) = (expected.logprobs, p.logprob_count)
            && !expected.family().logprobs_name_token_ids()
            && !expected.echo
            && got != script.all_tokens.len()
        {
            out.push(violation(
                Property::Logprobs,
                format!(
                    "body: {got} logprob entries for the {} tokens emitted",
                    script.all_tokens.len()
                ),
            ));
        }
        let tokens_differ = expected.token_ids_visible && p.tokens != script.all_tokens;
        if tokens_differ || p.finish_reason.as_deref() != Some(want_finish) {
            out.push(violation(
                Property::Script,
                format!(
                    "tokens {:?} finish {:?}; the script emits {:?} and finishes with `{want_finish}`",
                    p.tokens, p.finish_reason, script.all_tokens
                ),
            ));
        }
    }
}

fn plain_result(rules: &dyn Family, t: &Transcript) -> Option<Streamed> {
    let Body::Json(body) = &t.body else {
        return None;
    };
    let choice = body.get("choices")?.as_array()?.first()?;
    Some(Streamed {
        tokens: token_ids(choice),
        finish_reason: present(choice, "finish_reason")
            .and_then(Value::as_str)
            .map(Into::into),
        error: false,
        prompt_token_ids: rules.prompt_token_ids(body).cloned(),
        logprob_tokens: rules.logprob_token_ids(choice),
        logprob_count: rules.logprob_entries(choice).map(Vec::len),
        text: rules.text(choice).unwrap_or_default().to_string(),
    })
}

/// What a stream amounts to (without re-checking it).
pub fn streamed(expected: &Expected, t: &Transcript) -> Option<Streamed> {
    let Body::Events(events) = &t.body else {
        return None;
    };
    Some(stream_summary(expected, events, &mut Vec::new()))
}

/// The non-streamed result must be the concatenation of the streamed one:
/// same tokens, finish reason, prompt ids and logprob tokens; a stream that
/// ended in an error pairs with an error response or a `finish_reason:
/// "error"` whose tokens start with the streamed ones.
pub fn check_twins(
    stream_expected: &Expected,
    stream: &Transcript,
    plain: &Transcript,
) -> Option<Violation> {
    if stream.error.is_some() || plain.error.is_some() || stream.status != Some(200) {
        return None;
    }
    let s = streamed(stream_expected, stream)?;
    let status = plain.status.unwrap_or(0);
    let fail = |detail: String| Some(violation(Property::StreamEqualsNonStream, detail));
    if s.error && refuses_tokenless_logprobs(stream_expected) {
        return None;
    }
    if s.error {
        if status == 200 {
            let p = plain_result(stream_expected.family(), plain)?;
            if p.finish_reason.as_deref() != Some("error") || !p.tokens.starts_with(&s.tokens) {
                return fail(format!(
                    "the stream ended in an error after {:?}; the plain response finished {:?} with {:?}",
                    s.tokens, p.finish_reason, p.tokens
                ));
            }
        }
        return None;
    }
    if status != 200 && refuses_empty_logprobs(stream_expected) {
        return None;
    }
    if status != 200 {
        return fail(format!(
            "the stream finished {:?}; the plain request got {status}",
            s.finish_reason
        ));
    }
    let Some(p) = plain_result(stream_expected.family(), plain) else {
        return fail(format!(
            "the plain response has no choices: {}",
            brief(&plain.body)
        ));
    };
    // With `echo`, vllm-rs gives the prompt's logprobs in the answer and not
    // in the stream: their count is not compared. Prompt ids not asked for
    // are the prompt-token-ids property's business (Python's echo stream
    // sends them anyway).
    let echo = stream_expected.echo;
    let asked_ids = stream_expected.return_token_ids;
    let pair = |x: &Streamed| {
        (
            x.tokens.clone(),
            x.finish_reason.clone(),
            x.prompt_token_ids.clone().filter(|_| asked_ids),
            x.logprob_tokens.clone(),
            x.logprob_count.filter(|_| !echo),
            x.text.clone(),
        )
    };
    if pair(&s) != pair(&p) {
        return fail(format!(
            "(tokens, finish, prompt_token_ids, logprob tokens, logprob count, text): streamed {:?}, plain {:?}",
            pair(&s),
            pair(&p)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_engine_stop_hides_the_last_tokens_text_whatever_its_reason() {
        use mock_engine::script::{Step, StopReason};
        let script = |stop_reason: Option<StopReason>| Script {
            steps: vec![Step {
                tokens: vec![0],
                finish: Some(FinishReason::Stop),
                stop_reason,
                ..Step::default()
            }],
            ..Script::default()
        };
        let on_token = ScriptOutcome::of(&script(None)).unwrap();
        assert!(on_token.stop_token);
        let on_id = ScriptOutcome::of(&script(Some(StopReason::Token(0)))).unwrap();
        assert!(on_id.stop_token);
        let on_text = ScriptOutcome::of(&script(Some(StopReason::Text("\n".into())))).unwrap();
        assert!(on_text.stop_token);
        let text = ExpectedText::of(&[3839, 236, 227], &on_text).unwrap();
        assert_eq!(text.all, "");
    }
    use crate::normalize::{ClientValues, TranscriptBuilder};

    fn request(body: Value) -> RequestSpec {
        RequestSpec {
            body: Some(body),
            ..RequestSpec::default()
        }
    }

    fn stream(events: &[&str]) -> Transcript {
        TranscriptBuilder::new(ClientValues::default()).build(
            Some(200),
            &[("content-type".into(), "text/event-stream".into())],
            b"",
            Some(events.iter().map(|s| s.to_string()).collect()),
            vec![],
            None,
        )
    }

    fn props(v: &[Violation]) -> Vec<Property> {
        v.iter().map(|v| v.property).collect()
    }

    #[test]
    fn validity_follows_vllm_rs_order() {
        let v = |b: Value| family(Endpoint::Generate).validity(&b, "tiny");
        assert_eq!(
            v(json!({"token_ids": [1], "sampling_params": {}})),
            Validity::Valid
        );
        assert_eq!(
            v(json!({"token_ids": [], "sampling_params": {}, "model": "x", "stream": "yes"})),
            Validity::Invalid { status: 400 }
        );
        assert_eq!(
            v(json!({"token_ids": [], "sampling_params": {}, "model": "x"})),
            Validity::Invalid { status: 404 }
        );
        assert_eq!(
            v(json!({"token_ids": [1], "sampling_params": {"logprobs": -1}})),
            Validity::Invalid { status: 400 }
        );
        assert_eq!(
            v(
                json!({"token_ids": [1], "sampling_params": {}, "stream_options": null, "stream": null})
            ),
            Validity::Invalid { status: 400 }
        );
    }

    #[test]
    fn a_good_stream_passes_and_a_missing_done_fails() {
        let e = Expected::new(
            &request(
                json!({"token_ids": [1, 2], "sampling_params": {}, "stream": true,
                "stream_options": {"include_usage": true}}),
            ),
            "tiny",
            None,
        );
        let good = [
            r#"{"request_id":"a","choices":[{"index":0,"token_ids":[5]}]}"#,
            r#"{"request_id":"a","choices":[{"index":0,"token_ids":[6],"finish_reason":"stop"}]}"#,
            r#"{"request_id":"a","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}"#,
            "[DONE]",
        ];
        assert_eq!(check(&e, &stream(&good)), []);
        let cut = check(&e, &stream(&good[..3]));
        assert_eq!(props(&cut)[0], Property::Done, "{cut:?}");
    }

    #[test]
    fn usage_on_the_wrong_chunk_and_bad_arithmetic_are_caught() {
        let e = Expected::new(
            &request(
                json!({"token_ids": [1], "sampling_params": {}, "stream": true,
                "stream_options": {"include_usage": true}}),
            ),
            "tiny",
            None,
        );
        let got = check(
            &e,
            &stream(&[
                r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":3}}"#,
                r#"{"choices":[{"index":0,"token_ids":[5],"finish_reason":"stop"}]}"#,
                "[DONE]",
            ]),
        );
        let p = props(&got);
        assert!(p.contains(&Property::UsageEvent), "{got:?}");
        assert!(p.contains(&Property::UsageArithmetic), "{got:?}");
    }

    #[test]
    fn a_chunk_after_the_finish_and_events_after_an_error_are_caught() {
        let e = Expected::new(
            &request(json!({"token_ids": [1], "sampling_params": {}, "stream": true})),
            "tiny",
            None,
        );
        let got = check(
            &e,
            &stream(&[
                r#"{"choices":[{"index":0,"token_ids":[5],"finish_reason":"stop"}]}"#,
                r#"{"choices":[{"index":0,"token_ids":[6]}]}"#,
                r#"{"error":{"message":"x"}}"#,
                r#"{"choices":[{"index":0,"token_ids":[7]}]}"#,
                "[DONE]",
            ]),
        );
        let p = props(&got);
        assert!(
            p.contains(&Property::FinishReason) && p.contains(&Property::ErrorEvent),
            "{got:?}"
        );
    }

    fn plain(body: Value) -> Transcript {
        TranscriptBuilder::new(ClientValues::default()).build(
            Some(200),
            &[("content-type".into(), "application/json".into())],
            body.to_string().as_bytes(),
            None,
            vec![],
            None,
        )
    }

    #[test]
    fn a_plain_answer_must_be_what_its_stream_amounts_to() {
        let e = Expected::new(
            &request(json!({"token_ids": [1], "sampling_params": {}, "stream": true})),
            "tiny",
            None,
        );
        let s = stream(&[
            r#"{"choices":[{"index":0,"token_ids":[5]}]}"#,
            r#"{"choices":[{"index":0,"token_ids":[6],"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        let same =
            plain(json!({"choices": [{"index": 0, "token_ids": [5, 6], "finish_reason": "stop"}]}));
        assert_eq!(check_twins(&e, &s, &same), None);
        let other =
            plain(json!({"choices": [{"index": 0, "token_ids": [5], "finish_reason": "length"}]}));
        let v = check_twins(&e, &s, &other).expect("differs");
        assert_eq!(v.property, Property::StreamEqualsNonStream);
    }

    #[test]
    fn the_empty_generation_logprobs_quirk_is_accepted_only_where_it_applies() {
        let script: Script =
            serde_json::from_value(json!({"steps": [{"finish": "stop"}]})).unwrap();
        let asks = request(json!({"token_ids": [1], "sampling_params": {"logprobs": 0}}));
        let quirk = Expected::new(&asks, "tiny", Some(&script));
        assert!(refuses_empty_logprobs(&quirk));
        let error = TranscriptBuilder::new(ClientValues::default()).build(
            Some(500),
            &[("content-type".into(), "application/json".into())],
            br#"{"error":{"message":"requested logprobs but generation returned none"}}"#,
            None,
            vec![],
            None,
        );
        assert_eq!(check(&quirk, &error), []);
        let no_logprobs = request(json!({"token_ids": [1], "sampling_params": {}}));
        let strict = Expected::new(&no_logprobs, "tiny", Some(&script));
        assert_eq!(props(&check(&strict, &error)), [Property::Status]);
    }

    fn on(endpoint: Endpoint, body: Value) -> RequestSpec {
        RequestSpec {
            endpoint,
            body: Some(body),
            ..RequestSpec::default()
        }
    }

    /// Three steps: `t33`, then `é` split over two steps, then `t44`.
    fn split_char_script() -> Script {
        serde_json::from_value(json!({"steps": [
            {"tokens": [33, 4035]}, {"tokens": [4009]}, {"tokens": [44], "finish": "length"}
        ]}))
        .unwrap()
    }

    #[test]
    fn the_expected_text_is_primed_with_the_prompt_and_holds_back_split_characters() {
        let script = ScriptOutcome::of(&split_char_script()).unwrap();
        let text = ExpectedText::of(&[5, 7, 9], &script).unwrap();
        assert_eq!(text.streamed, " t33 é t44");
        assert_eq!(text.all, text.streamed);
        // A character never finished never comes out.
        let cut: Script = serde_json::from_value(
            json!({"steps": [{"tokens": [33, 4066, 3970], "finish": "stop"}]}),
        )
        .unwrap();
        let cut = ExpectedText::of(&[5], &ScriptOutcome::of(&cut).unwrap()).unwrap();
        assert_eq!(cut.all, " t33");
    }

    #[test]
    fn completions_text_must_be_the_detokenized_script() {
        let req = on(
            Endpoint::Completions,
            json!({"prompt": "t5 t7 t9", "stream": true,
                "stream_options": {"include_usage": true}}),
        );
        let e = Expected::new(&req, "tiny", Some(&split_char_script()));
        assert_eq!(e.prompt, [5, 7, 9]);
        let events = |middle: &str| {
            vec![
                r#"{"id":"c","choices":[{"index":0,"text":" t33"}]}"#.to_string(),
                format!(r#"{{"id":"c","choices":[{{"index":0,"text":"{middle}"}}]}}"#),
                r#"{"id":"c","choices":[{"index":0,"text":" t44","finish_reason":"length"}]}"#
                    .to_string(),
                r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#
                    .to_string(),
                "[DONE]".to_string(),
            ]
        };
        let good = events(" é");
        let good: Vec<&str> = good.iter().map(String::as_str).collect();
        assert_eq!(check(&e, &stream(&good)), []);
        // The two halves of `é` decoded one by one: replacement characters.
        let bad = events(" \u{FFFD}\u{FFFD}");
        let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
        assert_eq!(props(&check(&e, &stream(&bad))), [Property::Text]);
    }

    #[test]
    fn completions_usage_must_count_the_scripts_tokens() {
        let req = on(
            Endpoint::Completions,
            json!({"prompt": [5, 7, 9], "stream": true,
                "stream_options": {"include_usage": true}}),
        );
        let e = Expected::new(&req, "tiny", Some(&split_char_script()));
        let got = check(
            &e,
            &stream(&[
                r#"{"choices":[{"index":0,"text":" t33 é t44","finish_reason":"length"}]}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}"#,
                "[DONE]",
            ]),
        );
        assert_eq!(props(&got), [Property::UsageArithmetic], "{got:?}");
    }

    #[test]
    fn a_chat_stream_needs_one_role_delta_first() {
        let req = on(
            Endpoint::Chat,
            json!({"messages": [{"role": "user", "content": "t10 t11"}], "stream": true}),
        );
        let script: Script = serde_json::from_value(
            json!({"steps": [{"tokens": [33]}, {"tokens": [44], "finish": "length"}]}),
        )
        .unwrap();
        let e = Expected::new(&req, "tiny", Some(&script));
        assert_eq!(e.prompt, [3, 10, 11, 4]);
        let good = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" t33"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" t44"},"finish_reason":"length"}]}"#,
            "[DONE]",
        ];
        assert_eq!(check(&e, &stream(&good)), []);
        let no_role = check(&e, &stream(&good[1..]));
        assert_eq!(props(&no_role), [Property::ChatRole]);
        let twice = [
            good[0],
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":" t33"}}]}"#,
            good[2],
            good[3],
        ];
        assert_eq!(props(&check(&e, &stream(&twice))), [Property::ChatRole]);
    }

    #[test]
    fn a_chat_stream_may_carry_the_error_steps_ids_but_no_others() {
        let req = on(
            Endpoint::Chat,
            json!({"messages": [{"role": "user", "content": "t10 t11"}], "stream": true,
                   "return_token_ids": true}),
        );
        let script: Script = serde_json::from_value(
            json!({"steps": [{"tokens": [33]}, {"tokens": [0], "finish": "error"}]}),
        )
        .unwrap();
        let e = Expected::new(&req, "tiny", Some(&script));
        let events = |last_ids: &str| {
            vec![
                r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}],"prompt_token_ids":[3,10,11,4]}"#.to_string(),
                r#"{"choices":[{"index":0,"delta":{"content":" t33"},"token_ids":[33]}]}"#.to_string(),
                format!(r#"{{"choices":[{{"index":0,"delta":{{"content":" t0"}},"token_ids":{last_ids}}}]}}"#),
                r#"{"error":{"code":"server_error","message":"Internal server error","param":null,"type":"server_error"}}"#.to_string(),
                "[DONE]".to_string(),
            ]
        };
        let as_strs = |v: &[String]| stream(&v.iter().map(String::as_str).collect::<Vec<_>>());
        let scripted = check(&e, &as_strs(&events("[0]")));
        assert!(
            !props(&scripted).contains(&Property::Script),
            "{scripted:?}"
        );
        let extra = check(&e, &as_strs(&events("[0,7]")));
        assert!(props(&extra).contains(&Property::Script), "{extra:?}");
    }

    #[test]
    fn a_finish_only_first_output_must_still_finish_the_stream() {
        // The contract sends the finish of an output without tokens, first
        // or not (Python 0.32's skipping it is the registry's business,
        // `python-skips-empty-first-output`).
        let no_finish = stream(&["[DONE]"]);
        for steps in [
            json!([{"tokens": [], "finish": "stop"}]),
            json!([{"tokens": [33]}, {"tokens": [], "finish": "stop"}]),
        ] {
            let script: Script = serde_json::from_value(json!({ "steps": steps })).unwrap();
            let completions = Expected::new(
                &on(
                    Endpoint::Completions,
                    json!({"prompt": [5, 7], "stream": true}),
                ),
                "tiny",
                Some(&script),
            );
            let got = props(&check(&completions, &no_finish));
            assert!(got.contains(&Property::FinishReason), "{steps}: {got:?}");
        }
    }

    #[test]
    fn a_chat_answer_must_be_what_its_stream_amounts_to() {
        let req = on(
            Endpoint::Chat,
            json!({"messages": [{"role": "user", "content": "t10"}], "stream": true}),
        );
        let e = Expected::new(&req, "tiny", None);
        let s = stream(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" t33"},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        let answer = |content: &str| {
            plain(json!({"choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": content}}]}))
        };
        assert_eq!(check_twins(&e, &s, &answer(" t33")), None);
        let v = check_twins(&e, &s, &answer(" t34")).expect("differs");
        assert_eq!(v.property, Property::StreamEqualsNonStream);
    }

    #[test]
    fn stop_strings_turn_the_script_checks_off() {
        let req = on(
            Endpoint::Completions,
            json!({"prompt": "t5", "stop": ["t4"], "max_tokens": 5}),
        );
        let e = Expected::new(&req, "tiny", Some(&split_char_script()));
        let stopped = plain(
            json!({"choices": [{"index": 0, "text": " t33é", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}),
        );
        assert_eq!(check(&e, &stopped), []);
        let e = Expected::new(
            &on(
                Endpoint::Completions,
                json!({"prompt": "t5", "max_tokens": 5}),
            ),
            "tiny",
            Some(&split_char_script()),
        );
        let p = props(&check(&e, &stopped));
        assert!(
            p.contains(&Property::Text) && p.contains(&Property::Script),
            "{p:?}"
        );
    }

    #[test]
    fn completions_and_chat_validity_follow_vllm_rs() {
        let v = |endpoint, b: Value| family(endpoint).validity(&b, "tiny");
        let bad = |status| Validity::Invalid { status };
        let c = Endpoint::Completions;
        assert_eq!(v(c, json!({"prompt": "t5"})), Validity::Valid);
        assert_eq!(v(c, json!({"prompt": [5], "model": "x"})), bad(404));
        assert_eq!(v(c, json!({"prompt": [5], "max_tokens": 0})), bad(400));
        assert_eq!(v(c, json!({"prompt": [5], "logprobs": 21})), bad(400));
        assert_eq!(v(c, json!({"prompt": [5], "echo": null})), bad(400));
        assert_eq!(v(c, json!({"prompt": []})), bad(400));
        assert_eq!(v(c, json!({"prompt": [5], "stream_options": {}})), bad(400));
        let m = json!([{"role": "user", "content": "t10"}]);
        let chat = Endpoint::Chat;
        assert_eq!(
            v(
                chat,
                json!({"messages": m, "logprobs": true, "top_logprobs": 3})
            ),
            Validity::Valid
        );
        assert_eq!(v(chat, json!({"messages": m, "top_logprobs": 3})), bad(400));
        assert_eq!(v(chat, json!({"messages": m, "logprobs": "yes"})), bad(400));
        assert_eq!(v(chat, json!({"messages": m, "n": 2})), bad(400));
        assert_eq!(
            v(chat, json!({"messages": m, "n": 2, "model": "not-tiny"})),
            bad(404)
        );
    }
}
