//! `/v1/completions` and `/v1/chat/completions` over the scripted engine.

mod common;

use common::{TestServer, finish, step};
use mock_engine::script::FinishReason;
use model::vocabulary::byte_tokens;
use serde_json::json;

const COMPLETIONS: &str = "/v1/completions";
const CHAT: &str = "/v1/chat/completions";

/// `é` split over two steps comes out whole, after the primed leading space.
#[tokio::test]
async fn completions_stream_a_character_split_across_steps_with_continuous_usage() {
    let e = byte_tokens("é");
    let s = TestServer::scripted(
        &[5, 7, 9],
        vec![
            step(&[33]),
            step(&e[..1]),
            step(&e[1..]),
            finish(&[44], FinishReason::Length),
        ],
    )
    .await;
    let events = s
        .stream_chunks(
            COMPLETIONS,
            json!({"prompt": "t5 t7 t9", "max_tokens": 4, "stream": true,
                "stream_options": {"include_usage": true, "continuous_usage_stats": true}}),
        )
        .await;
    let texts: Vec<_> = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(texts, [" t33", "", " é", " t44", ""], "{events:?}");
    let completion: Vec<_> = events
        .iter()
        .map(|e| e["usage"]["completion_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(completion, [1, 2, 3, 4, 4, 4]);
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 3);
    assert_eq!(last["usage"]["total_tokens"], 7);
    assert_eq!(events[4]["choices"][0]["finish_reason"], "length");
}

/// A stop string spanning two tokens cuts the text before it and finishes
/// with the string as `stop_reason`.
#[tokio::test]
async fn completions_stop_string_spanning_two_tokens() {
    let s = TestServer::scripted(
        &[5, 7, 15],
        vec![
            step(&[33]),
            step(&[34]),
            step(&[35]),
            finish(&[36], FinishReason::Length),
        ],
    )
    .await;
    let (status, body) = s
        .post_json_to(
            COMPLETIONS,
            json!({"prompt": [5, 7, 15], "max_tokens": 4, "stop": ["4 t3"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["text"], " t33 t3");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["stop_reason"], "4 t3");
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

/// The role comes first, alone; then the content; then the finish.
#[tokio::test]
async fn chat_stream_sends_the_role_first() {
    let s = TestServer::scripted(
        &[3, 10, 11, 4],
        vec![step(&[33]), finish(&[44], FinishReason::Length)],
    )
    .await;
    let events = s
        .stream_chunks(
            CHAT,
            json!({"messages": [{"role": "user", "content": "t10 t11"}], "stream": true}),
        )
        .await;
    let deltas: Vec<_> = events.iter().map(|e| e["choices"][0].clone()).collect();
    assert_eq!(
        deltas[0]["delta"],
        json!({"role": "assistant"}),
        "{events:?}"
    );
    assert_eq!(deltas[1]["delta"], json!({"content": " t33"}));
    assert_eq!(deltas[2]["delta"], json!({"content": " t44"}));
    assert_eq!(deltas[3]["finish_reason"], "length");
    assert_eq!(deltas.len(), 4);
}

#[tokio::test]
async fn chat_non_stream_collects_the_message_and_usage() {
    let s = TestServer::scripted(
        &[3, 10, 12, 4],
        vec![step(&[33]), finish(&[44], FinishReason::Length)],
    )
    .await;
    let (status, body) = s
        .post_json_to(
            CHAT,
            json!({"messages": [{"role": "user", "content": "t10 t12"}], "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], " t33 t44");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["total_tokens"], 6);
}

#[tokio::test]
async fn validation_errors_name_what_is_wrong() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post_json_to(COMPLETIONS, json!({"prompt": "t5", "n": 2}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "n");
    let (status, body) = s
        .post_json_to(CHAT, json!({"messages": [], "model": "tiny"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "messages: Validation error: messages cannot be empty [{\"value\": Array []}]"
    );
    let (status, body) = s
        .post_json_to(
            COMPLETIONS,
            json!({"prompt": "t5", "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "stream_options");
}

/// Stop strings are held back by their length in bytes, as vllm-rs does:
/// `€` is 3 bytes, so 2 bytes of `" t33"` wait (characters would hold none).
#[tokio::test]
async fn completions_stop_string_hold_back_counts_bytes() {
    let euro = byte_tokens("€");
    let s = TestServer::scripted(
        &[5, 7, 21],
        vec![
            step(&[33]),
            step(&euro[..2]),
            step(&euro[2..]),
            step(&[44]),
            finish(&[55], FinishReason::Length),
        ],
    )
    .await;
    let events = s
        .stream_chunks(
            COMPLETIONS,
            json!({"prompt": "t5 t7 t21", "max_tokens": 6, "stream": true, "stop": ["€"]}),
        )
        .await;
    let texts: Vec<_> = events
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, [" t", "", "33 ", ""], "{events:?}");
    let last = &events[3]["choices"][0];
    assert_eq!(last["finish_reason"], "stop");
    assert_eq!(last["stop_reason"], "€");
}

/// The same rule on chat: `é` is 2 bytes, so one byte of `" t33"` waits.
#[tokio::test]
async fn chat_stop_string_hold_back_counts_bytes() {
    let e = byte_tokens("é");
    let s = TestServer::scripted(
        &[3, 10, 21, 4],
        vec![
            step(&[33]),
            step(&e[..1]),
            step(&e[1..]),
            finish(&[44], FinishReason::Length),
        ],
    )
    .await;
    let events = s
        .stream_chunks(
            CHAT,
            json!({"messages": [{"role": "user", "content": "t10 t21"}], "stream": true,
                "stop": ["é"]}),
        )
        .await;
    let contents: Vec<_> = events[1..]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(contents, [" t3", "3 ", "-"], "{events:?}");
    assert_eq!(events[3]["choices"][0]["stop_reason"], "é");
}

/// A request that finishes inside a character lets its bytes out as `�`
/// with the last step, as vllm-rs's final flush does.
#[tokio::test]
async fn completions_incomplete_character_at_finish_is_flushed() {
    let e = byte_tokens("é");
    let s = TestServer::scripted(
        &[5, 7, 22],
        vec![step(&[33]), finish(&e[..1], FinishReason::Length)],
    )
    .await;
    let events = s
        .stream_chunks(
            COMPLETIONS,
            json!({"prompt": "t5 t7 t22", "max_tokens": 2, "stream": true}),
        )
        .await;
    let texts: Vec<_> = events
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, [" t33", " \u{FFFD}", ""], "{events:?}");
    let (status, body) = s
        .post_json_to(COMPLETIONS, json!({"prompt": "t5 t7 t22", "max_tokens": 2}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], " t33 \u{FFFD}");
}

/// Text parts are put together with nothing between them (vllm-rs), so
/// `"t1"` + `"0 t11"` is the prompt of `"t10 t11"`.
#[tokio::test]
async fn chat_text_parts_are_concatenated() {
    let s = TestServer::scripted(
        &[3, 10, 11, 4],
        vec![step(&[33]), finish(&[44], FinishReason::Length)],
    )
    .await;
    let (status, body) = s
        .post_json_to(
            CHAT,
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "t1"}, {"type": "text", "text": "0 t11"}]}],
                "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], " t33 t44");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
}

/// A bad field inside a message names the message and the position after
/// it, as vllm-rs's role-tagged messages do.
#[tokio::test]
async fn chat_content_of_the_wrong_type_names_the_message() {
    let s = TestServer::start().await;
    let request = json!({"messages": [{"role": "user", "content": 5}], "max_tokens": 3});
    let text = request.to_string();
    // The first `}` closes the message; serde_json reports the column of the
    // character it peeked next (columns count from 1).
    let column = text.find('}').unwrap() + 2;
    let (status, body) = s.post_json_to(CHAT, request).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        format!(
            "Failed to deserialize the JSON body into the target type: messages[0]: \
             data did not match any variant of untagged enum MessageContent at line 1 column {column}"
        )
    );
}

/// `max_tokens: 0` is checked as `max_completion_tokens` (vllm-rs moves it
/// there first), in the `validator` crate's words, with no `param`.
#[tokio::test]
async fn chat_max_tokens_zero_is_a_range_error_of_max_completion_tokens() {
    let s = TestServer::start().await;
    let messages = json!([{"role": "user", "content": "t10 t11"}]);
    let range = r#"Validation error: range [{"min": Number(1), "value": Number(0)}]"#;
    for (body, field) in [
        (
            json!({"messages": messages, "max_tokens": 0}),
            "max_completion_tokens",
        ),
        (
            json!({"messages": messages, "max_completion_tokens": 0}),
            "max_completion_tokens",
        ),
        (
            json!({"messages": messages, "max_completion_tokens": 2, "max_tokens": 0}),
            "max_tokens",
        ),
    ] {
        let (status, got) = s.post_json_to(CHAT, body).await;
        assert_eq!(status, 400);
        assert_eq!(got["error"]["message"], format!("{field}: {range}"));
        assert_eq!(got["error"]["param"], serde_json::Value::Null);
    }
}

/// A stop string found at the first of a step's tokens ends the output
/// there: the usage counts no token after it (as vllm-rs 0.32.0 answered the
/// fuzzer's case).
#[tokio::test]
async fn completions_stop_string_inside_a_step_counts_only_tokens_up_to_it() {
    let s = TestServer::scripted(
        &[3839, 1165, 2671],
        vec![step(&[1000, 0]), finish(&[], FinishReason::Stop)],
    )
    .await;
    let (status, body) = s
        .post_json_to(
            COMPLETIONS,
            json!({"prompt": [3839, 1165, 2671], "stop": ["t1"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], " ");
    assert_eq!(body["choices"][0]["stop_reason"], "t1");
    assert_eq!(body["usage"]["completion_tokens"], 1);
}
