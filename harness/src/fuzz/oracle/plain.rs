//! A plain (non-streamed) answer against the contract.

use serde_json::Value;

use super::answer::{
    check_logprobs, check_prompt_ids, check_request_ids, check_usage, text_matches,
};
use super::{Expected, Property, ScriptEnd, Streamed, Violation, brief, content_type, violation};
use crate::endpoint::{Family, present, token_ids};
use crate::normalize::{Body, Transcript};

pub(super) fn check_plain(expected: &Expected, t: &Transcript, out: &mut Vec<Violation>) {
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

pub(super) fn plain_result(rules: &dyn Family, t: &Transcript) -> Option<Streamed> {
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
