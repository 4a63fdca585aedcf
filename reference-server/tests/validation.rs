//! Every request vllm-rs refuses, refused the same way: status, message, type, param, code.

mod common;

use common::TestServer;
use serde_json::{Value, json};

async fn expect_error(
    server: &TestServer,
    body: Value,
    status: u16,
    message: &str,
    param: Option<&str>,
    code: &str,
) {
    let (got_status, got) = server.post_json(body.clone()).await;
    assert_eq!(got_status, status, "status for {body}: {got}");
    assert_eq!(
        got,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}),
        "body for {body}"
    );
}

#[tokio::test]
async fn each_invalid_request_gets_vllm_rs_error() {
    let s = TestServer::start().await;
    let iv = "invalid_request_error";
    expect_error(
        &s,
        json!({"token_ids": [], "sampling_params": {}}),
        400,
        "token_ids must contain at least one token ID.",
        Some("token_ids"),
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {}, "stream_options": {"include_usage": true}}),
        400,
        "stream_options are only supported when stream=true.",
        Some("stream_options"),
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {}, "stream": false, "stream_options": {}}),
        400,
        "stream_options are only supported when stream=true.",
        Some("stream_options"),
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"n": 2}}),
        400,
        "Only n=1 is supported.",
        Some("n"),
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"n": 0}}),
        400,
        "Only n=1 is supported.",
        Some("n"),
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"max_tokens": 0}}),
        400,
        "max_tokens must be greater than 0.",
        Some("sampling_params"),
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"prompt_logprobs": -2}}),
        400,
        "`prompt_logprobs` must be a non-negative value or -1.",
        Some("sampling_params"),
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"prompt_logprobs": 1}, "stream": true}),
        400,
        "`prompt_logprobs` are not available when `stream=true`.",
        Some("sampling_params"),
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"logprobs": -2}}),
        400,
        "logprobs must be non-negative or -1, got -2",
        None,
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"logprobs": 21}}),
        400,
        "requested logprobs of 21, which is greater than max allowed: 20",
        None,
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"logprobs": -1}}),
        400,
        "requested logprobs of 4099, which is greater than max allowed: 20",
        None,
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"prompt_logprobs": 21}}),
        400,
        "requested prompt_logprobs of 21, which is greater than max allowed: 20",
        None,
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {"temperature": -1}}),
        400,
        "temperature must be in [0, 2], got -1",
        None,
        iv,
    )
    .await;
    expect_error(
        &s,
        json!({"token_ids": [1, 99999], "sampling_params": {}}),
        400,
        "token_id(s) [99999] in prompt are out of vocabulary. Vocabulary size: 4099",
        None,
        iv,
    )
    .await;
    expect_error(&s, json!({"token_ids": vec![1; 2048], "sampling_params": {}}), 400,
        "this model's maximum context length is 2048 tokens, but the prompt contains 2048 input tokens", None, iv).await;
    expect_error(
        &s,
        json!({"token_ids": [1], "sampling_params": {}, "model": "x"}),
        404,
        "The model `x` does not exist.",
        Some("model"),
        "model_not_found",
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn first_failure_wins_in_vllm_rs_order() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post_json(json!({"token_ids": [], "sampling_params": {"n": 2}, "model": "x", "stream_options": {}}))
        .await;
    assert_eq!((status, &body["error"]["param"]), (404, &json!("model")));
    let (_, body) = s
        .post_json(json!({"token_ids": [], "sampling_params": {"n": 2}, "stream_options": {}}))
        .await;
    assert_eq!(body["error"]["param"], "stream_options");
    let (_, body) = s
        .post_json(json!({"token_ids": [], "sampling_params": {"n": 2, "max_tokens": 0}}))
        .await;
    assert_eq!(body["error"]["param"], "n");
    let (_, body) = s
        .post_json(
            json!({"token_ids": [1], "sampling_params": {"max_tokens": 0, "prompt_logprobs": -5}}),
        )
        .await;
    assert_eq!(
        body["error"]["message"],
        "max_tokens must be greater than 0."
    );
    s.shutdown().await;
}

async fn expect_parse_error(server: &TestServer, content_type: &str, body: &str, message: &str) {
    let response = server
        .generate()
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "{body}");
    let got: Value = response.json().await.unwrap();
    assert_eq!(
        got,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "json_parse_error"}}),
        "for {body}"
    );
}

#[tokio::test]
async fn bodies_that_are_not_a_request_are_json_parse_errors() {
    let s = TestServer::start().await;
    let j = "application/json";
    expect_parse_error(&s, j, r#"{"token_ids":"a","sampling_params":{}}"#,
        "Failed to deserialize the JSON body into the target type: token_ids: invalid type: string \"a\", expected a sequence at line 1 column 16").await;
    expect_parse_error(&s, j, r#"{"token_ids":[1,-1],"sampling_params":{}}"#,
        "Failed to deserialize the JSON body into the target type: token_ids[1]: invalid value: integer `-1`, expected u32 at line 1 column 18").await;
    expect_parse_error(&s, j, r#"{"token_ids":[1,5]}"#,
        "Failed to deserialize the JSON body into the target type: missing field `sampling_params` at line 1 column 19").await;
    expect_parse_error(&s, j, r#"{"token_ids":[1,5],"sampling_params":null}"#,
        "Failed to deserialize the JSON body into the target type: sampling_params: invalid type: null, expected struct GenerateSamplingParams at line 1 column 41").await;
    expect_parse_error(&s, j, r#"{"token_ids":[1,2],"sampling_params":{"top_k":-5}}"#,
        "Failed to deserialize the JSON body into the target type: sampling_params: invalid value: integer `-5`, expected u32 at line 1 column 49").await;
    expect_parse_error(&s, j, "[1]",
        "Failed to deserialize the JSON body into the target type: invalid type: sequence, expected struct GenerateRequest at line 1 column 0").await;
    expect_parse_error(
        &s,
        j,
        r#"{"token_ids":[1],"#,
        "Failed to parse the request body as JSON: EOF while parsing a value at line 1 column 17",
    )
    .await;
    expect_parse_error(
        &s,
        j,
        "",
        "Failed to parse the request body as JSON: EOF while parsing a value at line 1 column 0",
    )
    .await;
    expect_parse_error(
        &s,
        "text/plain",
        r#"{"token_ids":[1],"sampling_params":{}}"#,
        "Expected request with `Content-Type: application/json`",
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn unknown_fields_and_json_suffix_content_types_are_accepted() {
    let s = TestServer::start().await;
    common::register_two_tokens(&s.engine, &[1, 2]);
    let response = s
        .generate()
        .header("content-type", "application/vnd.api+json")
        .body(r#"{"token_ids":[1,2],"sampling_params":{"bogus":1},"bogus":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["token_ids"], json!([33, 44]));
    s.shutdown().await;
}
