//! A stream against the contract: one walk over its events checks what
//! depends on their order, summing them as it goes.

use serde_json::Value;

use super::answer::{
    check_logprobs, check_prompt_ids, check_request_ids, check_usage, text_matches,
};
use super::{
    Expected, Property, ScriptEnd, Streamed, Violation, brief, content_type,
    refuses_tokenless_logprobs, violation,
};
use crate::endpoint::{present, token_ids};
use crate::normalize::{Body, EventData, Transcript};
use crate::stream_summary::StreamSummary;

pub(super) fn check_stream(expected: &Expected, t: &Transcript, out: &mut Vec<Violation>) {
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

/// Walks the events once, checking everything that depends on order.
pub(super) fn stream_summary(
    expected: &Expected,
    events: &[EventData],
    out: &mut Vec<Violation>,
) -> Streamed {
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
