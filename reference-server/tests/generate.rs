//! Responses over real HTTP, compared with what vllm-rs 0.32.0 sends for the same engine steps.

mod common;

use common::{TestServer, finish, json, register_two_tokens, script, step};
use mock_engine::script::{FinishReason, LogprobEntry, StopReason};
use reference_server::Config;
use serde_json::json;

const USAGE_2_2: &str = r#"{"prompt_tokens":2,"total_tokens":4,"completion_tokens":2,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":0}}"#;

#[tokio::test]
async fn non_stream_body_spells_out_every_field() {
    let s = TestServer::start().await;
    register_two_tokens(&s.engine, &[1, 2]);
    let response = s
        .generate()
        .json(&json!({"token_ids": [1, 2], "sampling_params": {}, "request_id": "r1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"request_id":"r1","choices":[{"index":0,"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":[33,44],"sampling_mask":null,"weight_versions":[{"version":"default","start":0,"end":2}]}],"prompt_logprobs":null,"prompt_token_id_logprobs":null,"prompt_token_ids":null,"mm_placeholders":null,"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}"#
    );
    s.shutdown().await;
}

#[tokio::test]
async fn stream_modes() {
    let s = TestServer::start().await;
    register_two_tokens(&s.engine, &[1, 2]);
    let base =
        json!({"token_ids": [1, 2], "sampling_params": {}, "request_id": "r", "stream": true});
    let chunk1 = r#"{"request_id":"r","choices":[{"index":0,"token_ids":[33]}]}"#;
    let chunk2 = r#"{"request_id":"r","choices":[{"index":0,"finish_reason":"stop","token_ids":[44],"weight_versions":[{"version":"default","start":0,"end":2}]}]}"#;
    let usage_event = format!(r#"{{"request_id":"r","choices":[],"usage":{USAGE_2_2}}}"#);

    assert_eq!(
        s.post_stream(base.clone()).await,
        [chunk1, chunk2, "[DONE]"]
    );

    let mut with_usage = base.clone();
    with_usage["stream_options"] = json!({"include_usage": true});
    assert_eq!(
        s.post_stream(with_usage).await,
        [chunk1, chunk2, usage_event.as_str(), "[DONE]"]
    );

    let mut continuous = base.clone();
    continuous["stream_options"] = json!({"include_usage": true, "continuous_usage_stats": true});
    let got = s.post_stream(continuous).await;
    assert_eq!(got.len(), 4);
    assert_eq!(
        json(&got[0])["usage"],
        json!({"prompt_tokens": 2, "total_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": null, "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    assert_eq!(json(&got[1])["usage"]["completion_tokens"], 2);
    assert_eq!(got[2], usage_event);

    let mut continuous_alone = base;
    continuous_alone["stream_options"] = json!({"continuous_usage_stats": true});
    assert_eq!(
        s.post_stream(continuous_alone).await,
        [chunk1, chunk2, "[DONE]"]
    );
    s.shutdown().await;
}

#[tokio::test]
async fn late_prompt_info_empty_steps_and_finish_only_chunk() {
    let s = TestServer::start().await;
    let mut no_prompt = step(&[]);
    no_prompt.prompt_info = Some(false);
    let mut tokens_no_prompt = step(&[33]);
    tokens_no_prompt.prompt_info = Some(false);
    s.engine.register(
        vec![7, 8, 9],
        script(vec![
            no_prompt,
            tokens_no_prompt,
            step(&[]),
            step(&[44]),
            finish(&[], FinishReason::Stop),
        ]),
    );
    let got = s
        .post_stream(json!({
            "token_ids": [7, 8, 9], "sampling_params": {}, "request_id": "late", "stream": true,
            "return_token_ids": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true}
        }))
        .await;
    assert_eq!(got.len(), 5, "{got:?}");
    // Before the prompt arrives, it counts as 0.
    let first = json(&got[0]);
    assert_eq!(first["choices"][0]["token_ids"], json!([33]));
    assert_eq!(first["usage"]["prompt_tokens"], 0);
    assert!(first.get("prompt_token_ids").is_none());
    // The prompt arrives on an empty step; the next chunk sent carries it.
    let second = json(&got[1]);
    assert_eq!(second["choices"][0]["token_ids"], json!([44]));
    assert_eq!(second["prompt_token_ids"], json!([7, 8, 9]));
    assert_eq!(second["usage"]["prompt_tokens"], 3);
    assert_eq!(
        got[2],
        r#"{"request_id":"late","choices":[{"index":0,"finish_reason":"stop","token_ids":[],"weight_versions":[{"version":"default","start":0,"end":2}]}],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":0}}}"#
    );
    assert_eq!(json(&got[3])["usage"]["total_tokens"], 5);
    assert_eq!(got[4], "[DONE]");
    s.shutdown().await;
}

#[tokio::test]
async fn error_finish_is_in_band_with_no_usage() {
    let s = TestServer::start().await;
    s.engine.register(
        vec![4, 2],
        script(vec![step(&[33]), finish(&[55], FinishReason::Error)]),
    );
    let got = s
        .post_stream(
            json!({"token_ids": [4, 2], "sampling_params": {}, "request_id": "e", "stream": true,
                            "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(
        got,
        [
            r#"{"request_id":"e","choices":[{"index":0,"token_ids":[33]}]}"#,
            r#"{"error":{"message":"Internal server error","type":"server_error","param":null,"code":"server_error"}}"#,
            "[DONE]"
        ]
    );
    // Without a stream vllm-rs reports the finish reason as it is, with 200.
    let (status, body) = s
        .post_json(json!({"token_ids": [4, 2], "sampling_params": {}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["finish_reason"], "error");
    assert_eq!(body["choices"][0]["token_ids"], json!([33, 55]));
    s.shutdown().await;
}

#[tokio::test]
async fn engine_failure_after_chunks_then_done() {
    let s = TestServer::start().await;
    let mut dead = step(&[]);
    dead.fail = Some("the script says the engine dies here".into());
    s.engine
        .register(vec![10, 2], script(vec![step(&[33]), dead]));
    let got = s
        .post_stream(
            json!({"token_ids": [10, 2], "sampling_params": {}, "request_id": "d", "stream": true,
                            "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(
        got,
        [
            r#"{"request_id":"d","choices":[{"index":0,"token_ids":[33]}]}"#,
            r#"{"error":{"message":"engine-core error: engine core reported fatal failure","type":"server_error","param":null,"code":"server_error"}}"#,
            "[DONE]"
        ]
    );
    let (status, body) = s
        .post_json(json!({"token_ids": [10, 2], "sampling_params": {}}))
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        body["error"]["message"],
        "failed to collect raw generate response: engine-core error: engine core reported fatal failure"
    );
    assert_eq!(body["error"]["code"], "server_error");
    s.shutdown().await;
}

#[tokio::test]
async fn finish_reasons_and_stop_reason() {
    let s = TestServer::start().await;
    let mut stop = finish(&[44], FinishReason::Stop);
    stop.stop_reason = Some(StopReason::Token(44));
    s.engine
        .register(vec![8, 2], script(vec![step(&[33]), stop]));
    s.engine.register(
        vec![5, 2],
        script(vec![step(&[33]), finish(&[44], FinishReason::Length)]),
    );
    s.engine.register(
        vec![7, 2],
        script(vec![step(&[33]), finish(&[], FinishReason::Abort)]),
    );
    let got = s
        .post_stream(
            json!({"token_ids": [8, 2], "sampling_params": {}, "request_id": "s", "stream": true}),
        )
        .await;
    assert_eq!(
        got[1],
        r#"{"request_id":"s","choices":[{"index":0,"finish_reason":"stop","stop_reason":44,"token_ids":[44],"weight_versions":[{"version":"default","start":0,"end":2}]}]}"#
    );
    let (_, body) = s
        .post_json(json!({"token_ids": [8, 2], "sampling_params": {}}))
        .await;
    assert_eq!(body["choices"][0]["stop_reason"], 44);
    let (_, body) = s
        .post_json(json!({"token_ids": [5, 2], "sampling_params": {}}))
        .await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let got = s
        .post_stream(
            json!({"token_ids": [7, 2], "sampling_params": {}, "request_id": "a", "stream": true,
                            "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(
        got[1],
        r#"{"request_id":"a","choices":[{"index":0,"finish_reason":"abort","token_ids":[],"weight_versions":[{"version":"default","start":0,"end":1}]}]}"#
    );
    assert_eq!(json(&got[2])["usage"]["completion_tokens"], 1);
    s.shutdown().await;
}

async fn cached_usage(enable_prompt_tokens_details: bool) -> serde_json::Value {
    let s = TestServer::with_config(Config {
        enable_prompt_tokens_details,
        ..Config::default()
    })
    .await;
    let mut cached = step(&[33]);
    cached.cached_tokens = Some(2);
    s.engine.register(
        vec![6, 2, 3],
        script(vec![cached, finish(&[44], FinishReason::Stop)]),
    );
    register_two_tokens(&s.engine, &[1, 2, 3]);
    let got = s
        .post_stream(
            json!({"token_ids": [6, 2, 3], "sampling_params": {}, "stream": true,
                            "stream_options": {"include_usage": true}}),
        )
        .await;
    let uncached = s
        .post_stream(
            json!({"token_ids": [1, 2, 3], "sampling_params": {}, "stream": true,
                            "stream_options": {"include_usage": true}}),
        )
        .await;
    // Nothing cached: null even with the flag.
    assert_eq!(
        json(&uncached[2])["usage"]["prompt_tokens_details"],
        serde_json::Value::Null
    );
    s.shutdown().await;
    json(&got[2])["usage"].clone()
}

#[tokio::test]
async fn cached_tokens_only_with_the_details_flag() {
    let with = cached_usage(true).await;
    assert_eq!(with["prompt_tokens_details"], json!({"cached_tokens": 2}));
    assert_eq!(with["total_tokens"], 5);
    let without = cached_usage(false).await;
    assert_eq!(without["prompt_tokens_details"], serde_json::Value::Null);
}

#[tokio::test]
async fn logprobs_in_stream_and_body() {
    let s = TestServer::start().await;
    let entry = |token_id, logprob, rank| LogprobEntry {
        token_id,
        logprob,
        rank,
    };
    let mut first = step(&[33]);
    first.logprobs = Some(vec![vec![
        entry(33, -0.5, 1),
        entry(33, -0.5, 1),
        entry(34, -1.5, 2),
    ]]);
    s.engine.register(
        vec![1, 2],
        script(vec![first, finish(&[], FinishReason::Stop)]),
    );
    let got = s
        .post_stream(json!({"token_ids": [1, 2], "sampling_params": {"logprobs": 1}, "request_id": "l", "stream": true}))
        .await;
    assert_eq!(
        got,
        [
            r#"{"request_id":"l","choices":[{"index":0,"logprobs":{"content":[{"token_id":33,"logprob":-0.5,"rank":1,"top_logprobs":[{"token_id":33,"logprob":-0.5,"rank":1}]}]},"token_ids":[33]}]}"#,
            r#"{"request_id":"l","choices":[{"index":0,"finish_reason":"stop","token_ids":[],"weight_versions":[{"version":"default","start":0,"end":1}]}]}"#,
            "[DONE]"
        ]
    );
    let (_, body) = s
        .post_json(json!({"token_ids": [1, 2], "sampling_params": {"logprobs": 2}}))
        .await;
    assert_eq!(
        body["choices"][0]["logprobs"],
        json!({"content": [{"token_id": 33, "logprob": -0.5, "rank": 1, "top_logprobs": [
            {"token_id": 33, "logprob": -0.5, "rank": 1}, {"token_id": 34, "logprob": -1.5, "rank": 2}]}]})
    );
    s.shutdown().await;
}

#[tokio::test]
async fn prompt_logprobs_in_body() {
    let s = TestServer::start().await;
    register_two_tokens(&s.engine, &[1, 2]);
    register_two_tokens(&s.engine, &[1]);
    let (_, body) = s
        .post_json(json!({"token_ids": [1, 2], "sampling_params": {"prompt_logprobs": 0}}))
        .await;
    assert_eq!(
        body["prompt_logprobs"],
        json!([null, {"2": {"logprob": -0.125, "rank": 1, "decoded_token": "token_id:2"}}])
    );
    let (_, body) = s
        .post_json(json!({"token_ids": [1], "sampling_params": {"prompt_logprobs": 0}}))
        .await;
    assert_eq!(body["prompt_logprobs"], json!([null]));
    s.shutdown().await;
}

#[tokio::test]
async fn return_token_ids() {
    let s = TestServer::start().await;
    register_two_tokens(&s.engine, &[1, 5]);
    let (_, body) = s
        .post_json(json!({"token_ids": [1, 5], "sampling_params": {}, "return_token_ids": true}))
        .await;
    assert_eq!(body["prompt_token_ids"], json!([1, 5]));
    let got = s
        .post_stream(
            json!({"token_ids": [1, 5], "sampling_params": {}, "return_token_ids": true,
                            "request_id": "t", "stream": true}),
        )
        .await;
    assert_eq!(
        got[0],
        r#"{"request_id":"t","choices":[{"index":0,"token_ids":[33]}],"prompt_token_ids":[1,5]}"#
    );
    assert!(
        json(&got[1]).get("prompt_token_ids").is_none(),
        "first chunk only"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn request_id_header_body_both_neither() {
    let s = TestServer::start().await;
    register_two_tokens(&s.engine, &[1, 2]);
    let mut engine_records = s.engine.subscribe();
    let id = |headers: Option<&str>, body_id: Option<&str>| {
        let mut body = json!({"token_ids": [1, 2], "sampling_params": {}});
        if let Some(b) = body_id {
            body["request_id"] = json!(b);
        }
        let mut request = s.generate().json(&body);
        if let Some(h) = headers {
            request = request.header("X-Request-Id", h);
        }
        async move {
            let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            body["request_id"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(id(None, Some("body-id")).await, "body-id");
    let record = engine_records.recv().await.unwrap();
    assert!(
        record.request_id.starts_with("body-id-"),
        "{}",
        record.request_id
    );
    assert_eq!(id(Some("hdr"), Some("body-id")).await, "hdr");
    assert_eq!(id(Some("hdr"), None).await, "hdr");
    assert_eq!(id(Some(""), Some("body-id")).await, "");
    let random = id(None, None).await;
    assert_eq!(random.len(), 8);
    assert!(
        random
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert_ne!(random, id(None, None).await);
    s.shutdown().await;
}

#[tokio::test]
async fn model_match_mismatch_absent() {
    let s = TestServer::with_config(Config {
        served_model_names: vec!["tiny".into(), "alias".into()],
        ..Config::default()
    })
    .await;
    register_two_tokens(&s.engine, &[1, 2]);
    for model in [Some("tiny"), Some("alias"), None] {
        let mut body = json!({"token_ids": [1, 2], "sampling_params": {}});
        if let Some(m) = model {
            body["model"] = json!(m);
        }
        let (status, _) = s.post_json(body).await;
        assert_eq!(status, 200, "{model:?}");
    }
    let (status, body) = s
        .post_json(json!({"token_ids": [1, 2], "sampling_params": {}, "model": "other"}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body["error"]["message"],
        "The model `other` does not exist."
    );
    s.shutdown().await;
}

#[tokio::test]
async fn unscripted_prompts_use_the_generator_and_max_tokens() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post_json(json!({"token_ids": [3, 1, 4], "sampling_params": {"max_tokens": 5}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["token_ids"].as_array().unwrap().len(), 5);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    s.shutdown().await;
}
