//! Checks of what one answer or chunk holds, shared by streams and plain
//! answers: usage arithmetic, prompt ids, logprobs, request ids, text.

use serde_json::Value;

use super::{Expected, Property, Violation, violation};

pub(super) fn check_usage(
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

/// Whether a choice's text is `generated`: with completions' `echo` it may
/// start with the prompt's text.
pub(super) fn text_matches(expected: &Expected, text: &str, generated: &str) -> bool {
    if expected.echo {
        text.ends_with(generated)
    } else {
        text == generated
    }
}

pub(super) fn check_prompt_ids(expected: &Expected, p: &Value, at: &str, out: &mut Vec<Violation>) {
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

pub(super) fn check_logprobs(
    expected: &Expected,
    choice: &Value,
    ids: &[u64],
    at: &str,
    out: &mut Vec<Violation>,
) {
    let rules = expected.family();
    // Whether the choice has logprobs, and what is wrong with them for its
    // tokens: entries that name token ids must name these; entries that name
    // tokens by text are counted where the ids show (with `echo` the
    // prompt's entries come first).
    let (has, mismatch) = if rules.logprobs_name_token_ids() {
        match rules.logprob_token_ids(choice) {
            Some(l) => (
                true,
                (l != ids)
                    .then(|| format!("logprobs are for tokens {l:?}, the choice has {ids:?}")),
            ),
            None => (false, None),
        }
    } else {
        match rules.logprob_entries(choice).map(Vec::len) {
            Some(n) => (
                true,
                (expected.token_ids_visible && !expected.echo && n != ids.len())
                    .then(|| format!("{n} logprob entries for the tokens {ids:?}")),
            ),
            None => (false, None),
        }
    };
    let detail = match (expected.logprobs.is_some(), has) {
        (true, true) => mismatch,
        (true, false) if !ids.is_empty() => Some(format!(
            "logprobs were asked, and the choice with tokens {ids:?} has none"
        )),
        (false, true) => Some("logprobs were not asked, and the choice has some".into()),
        _ => None,
    };
    if let Some(detail) = detail {
        out.push(violation(Property::Logprobs, format!("{at}: {detail}")));
    }
}

pub(super) fn check_request_ids<'a>(
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
