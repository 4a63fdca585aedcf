//! A stream and its non-streamed twin: the plain answer must be what the
//! stream amounts to.

use super::plain::plain_result;
use super::stream::stream_summary;
use super::{
    Expected, Property, Streamed, Violation, brief, refuses_empty_logprobs,
    refuses_tokenless_logprobs, violation,
};
use crate::normalize::{Body, Transcript};

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
