//! Shared by the integration tests: a server on an ephemeral port, and requests to it.
#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use mock_engine::Engine;
use mock_engine::engine::RequestRecord;
use mock_engine::script::{Endpoint, FinishReason, Script, Step};
use reference_server::{Config, RunningServer};
use serde_json::Value;

pub struct TestServer {
    pub server: RunningServer,
    pub engine: Engine,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> Self {
        let engine = Engine::default();
        let server = reference_server::spawn(config, engine.clone())
            .await
            .expect("the server binds an ephemeral port");
        Self {
            server,
            engine,
            client: reqwest::Client::new(),
        }
    }

    /// A server whose engine answers `prompt` with `steps`.
    pub async fn scripted(prompt: &[u32], steps: Vec<Step>) -> Self {
        let s = Self::start().await;
        s.engine.register(prompt.to_vec(), script(steps));
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    pub fn generate(&self) -> reqwest::RequestBuilder {
        self.client.post(self.url(Endpoint::Generate.path()))
    }

    /// POSTs `body` and returns the status and the parsed JSON answer.
    pub async fn post_json(&self, body: Value) -> (u16, Value) {
        self.post_json_to(Endpoint::Generate.path(), body).await
    }

    /// [`TestServer::post_json`] to another path.
    pub async fn post_json_to(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request is sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body is read");
        let json =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is JSON ({e}): {text}"));
        (status, json)
    }

    /// POSTs a streaming request; returns the `data:` payloads in order.
    pub async fn post_stream(&self, body: Value) -> Vec<String> {
        self.post_stream_to(Endpoint::Generate.path(), body).await
    }

    /// [`TestServer::post_stream`] to another path.
    pub async fn post_stream_to(&self, path: &str, body: Value) -> Vec<String> {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request is sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let text = response.text().await.expect("body is read");
        sse_data(&text)
    }

    /// [`TestServer::post_stream_to`], checked to end with `[DONE]`: the
    /// chunks before it, as JSON.
    pub async fn stream_chunks(&self, path: &str, body: Value) -> Vec<Value> {
        let got = self.post_stream_to(path, body).await;
        assert_eq!(got.last().map(String::as_str), Some("[DONE]"), "{got:?}");
        got[..got.len() - 1].iter().map(|d| json(d)).collect()
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// The `data:` payloads of an SSE body, checking the framing vllm-rs uses.
pub fn sse_data(text: &str) -> Vec<String> {
    assert!(
        text.ends_with("\n\n"),
        "events end with a blank line: {text:?}"
    );
    text.trim_end_matches('\n')
        .split("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("every event is one data line: {event:?}"))
                .to_string()
        })
        .collect()
}

pub fn json(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("event is JSON ({e}): {data}"))
}

pub fn step(tokens: &[u32]) -> Step {
    Step {
        tokens: tokens.to_vec(),
        ..Step::default()
    }
}

pub fn finish(tokens: &[u32], reason: FinishReason) -> Step {
    Step {
        finish: Some(reason),
        ..step(tokens)
    }
}

pub fn script(steps: Vec<Step>) -> Script {
    Script {
        steps,
        ..Script::default()
    }
}

/// The scripted answer to `[1, 2]` most tests use: 33, then 44 and stop.
pub fn register_two_tokens(engine: &Engine, prompt: &[u32]) {
    engine.register(
        prompt.to_vec(),
        script(vec![step(&[33]), finish(&[44], FinishReason::Stop)]),
    );
}

/// The first chunk of a streamed response body: 30 s, or the test fails.
pub async fn first_chunk(body: &mut (impl Stream<Item = reqwest::Result<Bytes>> + Unpin)) -> Bytes {
    tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .expect("the first chunk arrives")
        .expect("the body has a first chunk")
        .unwrap()
}

/// The next request the engine finishes or aborts: 30 s, or the test fails.
pub async fn next_record(
    records: &mut tokio::sync::broadcast::Receiver<RequestRecord>,
) -> RequestRecord {
    tokio::time::timeout(Duration::from_secs(30), records.recv())
        .await
        .expect("the engine hears of the disconnect")
        .unwrap()
}
