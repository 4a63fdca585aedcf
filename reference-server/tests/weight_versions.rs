//! `weight_versions` on finished choices, as vllm-rs 0.32.0 puts them on the
//! wire when its engine core stamps every step with weight version "default"
//! (checked against the real frontends with the finish/, engine/ and errors/
//! fixtures).

mod common;

use common::{TestServer, finish, json, script, step};
use mock_engine::script::FinishReason;
use serde_json::{Value, json};

fn spans(end: usize) -> Value {
    json!([{"version": "default", "start": 0, "end": end}])
}

fn stream_body(prompt: &[u32]) -> Value {
    json!({"token_ids": prompt, "sampling_params": {}, "request_id": "w", "stream": true,
           "stream_options": {"include_usage": true}})
}

/// The `weight_versions` of every chunk's choice, `None` where the key is absent.
fn chunk_spans(events: &[String]) -> Vec<Option<Value>> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| json(e)["choices"].get(0).cloned())
        .map(|choice| choice.get("weight_versions").cloned())
        .collect()
}

#[tokio::test]
async fn only_the_finish_chunk_carries_spans_over_every_output_token() {
    let s = TestServer::start().await;
    s.engine.register(
        vec![1, 2],
        script(vec![
            step(&[33, 34]),
            step(&[]),
            step(&[35]),
            finish(&[36], FinishReason::Length),
        ]),
    );
    let got = s.post_stream(stream_body(&[1, 2])).await;
    assert_eq!(chunk_spans(&got), [None, None, Some(spans(4))], "{got:?}");
    // The key sits last in the choice, its fields in vLLM's order.
    assert!(
        got[2].ends_with(
            r#""token_ids":[36],"weight_versions":[{"version":"default","start":0,"end":4}]}]}"#
        ),
        "{}",
        got[2]
    );
    let (_, body) = s
        .post_json(json!({"token_ids": [1, 2], "sampling_params": {}}))
        .await;
    assert_eq!(body["choices"][0]["weight_versions"], spans(4));
    s.shutdown().await;
}

#[tokio::test]
async fn a_finish_only_last_step_covers_the_earlier_tokens() {
    let s = TestServer::start().await;
    s.engine.register(
        vec![3, 2],
        script(vec![
            step(&[33]),
            step(&[44]),
            finish(&[], FinishReason::Stop),
        ]),
    );
    let got = s.post_stream(stream_body(&[3, 2])).await;
    assert_eq!(chunk_spans(&got), [None, None, Some(spans(2))]);
    let (_, body) = s
        .post_json(json!({"token_ids": [3, 2], "sampling_params": {}}))
        .await;
    assert_eq!(body["choices"][0]["weight_versions"], spans(2));
    s.shutdown().await;
}

#[tokio::test]
async fn no_output_tokens_is_an_empty_list_of_spans() {
    let s = TestServer::start().await;
    s.engine.register(
        vec![5, 2],
        script(vec![step(&[]), finish(&[], FinishReason::Stop)]),
    );
    let got = s.post_stream(stream_body(&[5, 2])).await;
    assert_eq!(chunk_spans(&got), [Some(json!([]))]);
    let (_, body) = s
        .post_json(json!({"token_ids": [5, 2], "sampling_params": {}}))
        .await;
    assert_eq!(body["choices"][0]["weight_versions"], json!([]));
    s.shutdown().await;
}

#[tokio::test]
async fn an_abort_finish_has_spans() {
    let s = TestServer::start().await;
    s.engine.register(
        vec![7, 2],
        script(vec![step(&[33]), finish(&[44], FinishReason::Abort)]),
    );
    let got = s.post_stream(stream_body(&[7, 2])).await;
    assert_eq!(chunk_spans(&got), [None, Some(spans(2))]);
    let (_, body) = s
        .post_json(json!({"token_ids": [7, 2], "sampling_params": {}}))
        .await;
    assert_eq!(body["choices"][0]["finish_reason"], "abort");
    assert_eq!(body["choices"][0]["weight_versions"], spans(2));
    s.shutdown().await;
}

#[tokio::test]
async fn an_error_finish_has_spans_only_without_a_stream() {
    let s = TestServer::start().await;
    s.engine.register(
        vec![4, 2],
        script(vec![step(&[33]), finish(&[55], FinishReason::Error)]),
    );
    // Streamed, the error finish is an in-band error: no finished choice.
    let got = s.post_stream(stream_body(&[4, 2])).await;
    assert_eq!(chunk_spans(&got), [None], "{got:?}");
    assert!(json(&got[1]).get("error").is_some(), "{got:?}");
    // Not streamed, vllm-rs answers 200 with the finish, and its spans count
    // the error step's tokens too.
    let (status, body) = s
        .post_json(json!({"token_ids": [4, 2], "sampling_params": {}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["finish_reason"], "error");
    assert_eq!(body["choices"][0]["weight_versions"], spans(2));
    s.shutdown().await;
}

#[tokio::test]
async fn the_generator_stamps_its_steps_too() {
    let s = TestServer::start().await;
    let (_, body) = s
        .post_json(json!({"token_ids": [900, 901], "sampling_params": {"max_tokens": 3}}))
        .await;
    assert_eq!(body["choices"][0]["token_ids"].as_array().unwrap().len(), 3);
    assert_eq!(body["choices"][0]["weight_versions"], spans(3));
    s.shutdown().await;
}
