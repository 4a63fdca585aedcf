//! The checks vllm-rs makes on a chat request before it renders the
//! messages, in its order: every field's own check, then (when all pass)
//! the checks across fields and the model; the first of those that fails wins.

use serde_json::{Value, json};

use super::types::{ChatCompletionRequest, MessageContent};
use crate::error::ApiError;
use crate::routes::openai::checks::{self, RequestShape};

pub fn validate(
    request: &ChatCompletionRequest,
    served: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    // vllm-rs's `validator` checks every field and reports each field that
    // fails, one line each; the checks of the whole request run only when
    // every field is valid. (vllm-rs writes the lines in a hash map's
    // order, which changes from one process to the next; the harness
    // compares them as a set, so this order is only ours.)
    let mut field_errors = Vec::new();
    // The `validator` crate's words, which print the messages as Rust's
    // `Debug` shows a JSON value.
    let invalid_messages = |why: &str| {
        let value = messages_json(request);
        format!("messages: Validation error: {why} [{{\"value\": {value:?}}}]")
    };
    if request.messages.is_empty() {
        field_errors.push(invalid_messages("messages cannot be empty"));
    }
    let empty_user_content = request
        .messages
        .iter()
        .filter(|m| m.role == "user")
        .find_map(|message| match &message.content {
            Some(MessageContent::Text(text)) if text.is_empty() => {
                Some("message content cannot be empty")
            }
            Some(MessageContent::Parts(parts)) if parts.is_empty() => {
                Some("message content parts cannot be empty")
            }
            _ => None,
        });
    if let Some(why) = empty_user_content {
        field_errors.push(invalid_messages(why));
    }
    // vllm-rs first moves `max_tokens` into `max_completion_tokens` when only
    // it is given, then checks both fields' ranges.
    let (max_completion_tokens, max_tokens) = match request.max_completion_tokens {
        Some(_) => (request.max_completion_tokens, request.max_tokens),
        None => (request.max_tokens, None),
    };
    for (field, value) in [
        ("max_tokens", max_tokens),
        ("max_completion_tokens", max_completion_tokens),
    ] {
        if value == Some(0) {
            field_errors.push(format!(
                "{field}: Validation error: range [{{\"min\": Number(1), \"value\": Number(0)}}]"
            ));
        }
    }
    // Chat's `temperature` has a range of its own (the `validator` crate's;
    // the other routes check it with the sampling fields, in other words).
    if let Some(t) = request.sampling.temperature
        && !(0.0..=2.0).contains(&t)
    {
        field_errors.push(format!(
            "temperature: Validation error: range [{{\"max\": Number(2.0), \"min\": Number(0.0), \"value\": Number({})}}]",
            validator_number(t)
        ));
    }
    if !field_errors.is_empty() {
        return Err(ApiError::invalid_request(field_errors.join("\n"), None));
    }
    // Checks of the whole request (`__all__`), before the model is looked at.
    // (With both wrong, vllm-rs 0.32 names `top_logprobs`.)
    if request.top_logprobs.is_some() && !request.logprobs {
        return Err(ApiError::invalid_request(
            "__all__: top_logprobs is only allowed when logprobs is enabled",
            None,
        ));
    }
    if request.stream_options.is_some() && !request.stream {
        return Err(ApiError::invalid_request(
            "__all__: stream_options can only be used when stream is true",
            None,
        ));
    }
    checks::check(
        RequestShape {
            model: request.model.as_deref(),
            stream: request.stream,
            has_stream_options: request.stream_options.is_some(),
            n: request.n,
        },
        served,
    )?;
    if let Some(k) = request.top_logprobs
        && k < 0
        && k != -1
    {
        return Err(ApiError::invalid_request(
            "`top_logprobs` must be a non-negative value or -1.",
            Some("top_logprobs"),
        ));
    }
    if let Some(k) = request.prompt_logprobs
        && request.stream
        && (k > 0 || k == -1)
    {
        return Err(ApiError::invalid_request(
            "`prompt_logprobs` are not available when `stream=true`.",
            Some("prompt_logprobs"),
        ));
    }
    Ok(())
}

/// A float as serde_json's `Number` prints in `Debug` (`5.0`, `-0.5`, `2.5`).
fn validator_number(x: f32) -> String {
    format!("{:?}", f64::from(x))
}

/// The messages as the client sent them (role, content, name).
fn messages_json(request: &ChatCompletionRequest) -> Value {
    request
        .messages
        .iter()
        .map(|m| {
            let mut object = json!({"role": m.role});
            if let Some(content) = &m.content {
                object["content"] = content.to_json();
            }
            if let Some(name) = &m.name {
                object["name"] = name.as_str().into();
            }
            object
        })
        .collect()
}
