//! The server around the endpoint: health, models, API key, body limit, disconnects.

mod common;

use std::time::Duration;

use common::{TestServer, first_chunk, next_record, register_two_tokens, script, step};
use futures::StreamExt;
use mock_engine::engine::Outcome;
use reference_server::Config;
use serde_json::{Value, json};

#[tokio::test]
async fn health_is_an_empty_200() {
    let s = TestServer::start().await;
    let response = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "");
    s.shutdown().await;
}

#[tokio::test]
async fn models_lists_the_served_names() {
    let s = TestServer::start().await;
    let body: Value = s
        .client
        .get(s.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    let card = &body["data"][0];
    assert_eq!(card["id"], "tiny");
    assert_eq!(card["object"], "model");
    assert_eq!(card["owned_by"], "vllm-frontend-rs");
    assert_eq!(card["parent"], Value::Null);
    assert_eq!(card["max_model_len"], 2048);
    assert!(card["created"].as_u64().unwrap() > 1_700_000_000);
    s.shutdown().await;
}

#[tokio::test]
async fn api_key_guards_v1_and_inference_but_not_health() {
    let s = TestServer::with_config(Config {
        api_key: Some("sekrit".into()),
        ..Config::default()
    })
    .await;
    register_two_tokens(&s.engine, &[1, 2]);
    let body = json!({"token_ids": [1, 2], "sampling_params": {}});
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("sekrit"),
        Some("Basic sekrit"),
    ] {
        let mut request = s.generate().json(&body);
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"error":"Unauthorized"}"#
        );
    }
    // Checked before the body is even parsed.
    let response = s.generate().body("garbage").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let models = s.client.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(models.status(), 401);
    for auth in ["Bearer sekrit", "bearer sekrit"] {
        let response = s
            .generate()
            .header("authorization", auth)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{auth}");
    }
    let health = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    s.shutdown().await;
}

#[tokio::test]
/// vllm-rs answers 400 with these words; we answer 413 (the status that says
/// what is wrong) with the same words.
async fn bodies_over_the_limit_get_413_in_vllm_rs_words() {
    let s = TestServer::with_config(Config {
        max_body_bytes: 1024,
        ..Config::default()
    })
    .await;
    register_two_tokens(&s.engine, &[1, 2]);
    let fits = format!(
        r#"{{"token_ids":[1,2],"sampling_params":{{}},"pad":"{}"}}"#,
        "x".repeat(900)
    );
    let over = format!(
        r#"{{"token_ids":[1,2],"sampling_params":{{}},"pad":"{}"}}"#,
        "x".repeat(1100)
    );
    let ok = s
        .generate()
        .header("content-type", "application/json")
        .body(fits)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = s
        .generate()
        .header("content-type", "application/json")
        .body(over)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "Failed to buffer the request body: length limit exceeded",
                         "type": "invalid_request_error", "param": null, "code": "json_parse_error"}})
    );
    s.shutdown().await;
}

#[tokio::test]
async fn default_body_limit_is_32_mib() {
    assert_eq!(Config::default().max_body_bytes, 32 * 1024 * 1024);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_aborts_the_engine_request() {
    let s = TestServer::start().await;
    let mut stall = step(&[]);
    stall.stall = true;
    s.engine
        .register(vec![9, 2], script(vec![step(&[33]), stall]));
    let mut records = s.engine.subscribe();
    let response = s
        .generate()
        .json(&json!({"token_ids": [9, 2], "sampling_params": {}, "stream": true, "request_id": "gone"}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = first_chunk(&mut body).await;
    assert!(String::from_utf8_lossy(&first).contains(r#""token_ids":[33]"#));
    assert_eq!(s.engine.stats().active(), 1);
    drop(body);
    let record = next_record(&mut records).await;
    assert_eq!(record.outcome, Outcome::Aborted);
    assert!(
        record.request_id.starts_with("gone-"),
        "{}",
        record.request_id
    );
    assert_eq!(s.engine.stats().aborted, 1);
    s.shutdown().await;
}

#[tokio::test]
async fn a_non_streaming_client_that_disconnects_aborts_too() {
    let s = TestServer::start().await;
    let mut stall = step(&[]);
    stall.stall = true;
    s.engine
        .register(vec![9, 3], script(vec![step(&[33]), stall]));
    let mut records = s.engine.subscribe();
    let request = s
        .generate()
        .json(&json!({"token_ids": [9, 3], "sampling_params": {}}))
        .timeout(Duration::from_millis(300))
        .send();
    assert!(request.await.is_err(), "a stalled request never answers");
    let record = next_record(&mut records).await;
    assert_eq!(record.outcome, Outcome::Aborted);
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_stalled_streams_and_frees_the_port() {
    let s = TestServer::start().await;
    let mut stall = step(&[]);
    stall.stall = true;
    s.engine
        .register(vec![9, 4], script(vec![step(&[33]), stall]));
    let response = s
        .generate()
        .json(&json!({"token_ids": [9, 4], "sampling_params": {}, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    assert!(body.next().await.is_some());
    let addr = s.server.local_addr();
    let engine = s.engine.clone();
    tokio::time::timeout(Duration::from_secs(60), s.server.shutdown())
        .await
        .expect("shutdown does not hang on a stalled stream");
    assert_eq!(
        engine.stats().active(),
        0,
        "the stalled request was aborted"
    );
    assert!(reqwest::get(format!("http://{addr}/health")).await.is_err());
    // The cut stream says why it ends, then ends properly.
    let mut rest = Vec::new();
    while let Some(Ok(bytes)) = body.next().await {
        rest.extend_from_slice(&bytes);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.ends_with(
            "data: {\"error\":{\"message\":\"the server is shutting down\",\"type\":\"server_error\",\"param\":null,\"code\":\"server_error\"}}\n\ndata: [DONE]\n\n"
        ),
        "{rest:?}"
    );
}

#[tokio::test]
async fn from_options_takes_the_fixture_server_options() {
    let options = mock_engine::script::ServerOptions {
        served_model_name: "m".into(),
        enable_prompt_tokens_details: true,
        api_key: Some("k".into()),
    };
    let config = Config::from_options(&options);
    assert_eq!(config.served_model_names, ["m"]);
    assert!(config.enable_prompt_tokens_details);
    assert_eq!(config.api_key.as_deref(), Some("k"));
    assert_eq!(
        (config.port, config.host.to_string().as_str()),
        (0, "127.0.0.1")
    );
}
