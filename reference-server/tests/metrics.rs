//! `GET /metrics`: vllm-rs's Prometheus names, labels and content type, with
//! the requests, aborts and tokens the server has seen.

mod common;

use std::collections::BTreeMap;

use common::{TestServer, first_chunk, next_record, register_two_tokens, script, step};
use mock_engine::engine::Outcome;
use reference_server::Config;
use serde_json::json;

/// One scrape: `# TYPE` lines by family, and every sample by name and labels.
#[derive(Debug)]
struct Page {
    types: BTreeMap<String, String>,
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Page {
    fn parse(text: &str) -> Self {
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics ends with # EOF: {text}"
        );
        let mut types = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels end with }");
                    let labels = labels
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label is k=\"v\"");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            samples.insert((name.to_string(), labels), value);
        }
        Self { types, samples }
    }

    /// The sample of `name` for model `m`, engine 0, and the `extra` labels.
    fn get(&self, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
        let mut labels: BTreeMap<String, String> = [("model_name", "m"), ("engine", "0")]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.retain(|_, v| !v.is_empty());
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    fn finished(&self, reason: &str) -> Option<f64> {
        self.get("vllm:request_success_total", &[("finished_reason", reason)])
    }
}

async fn scrape(s: &TestServer) -> Page {
    // No API key: vllm-rs serves /metrics without one.
    let response = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    Page::parse(&response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_finished_aborted_requests_and_tokens() {
    let config = Config {
        served_model_names: vec!["m".into()],
        api_key: Some("k".into()),
        ..Config::default()
    };
    let s = TestServer::with_config(config).await;

    let page = scrape(&s).await;
    for (family, kind) in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:request_success", "counter"),
        ("vllm:prompt_tokens", "counter"),
        ("vllm:generation_tokens", "counter"),
    ] {
        assert_eq!(
            page.types.get(family).map(String::as_str),
            Some(kind),
            "{page:?}"
        );
    }
    assert_eq!(page.get("vllm:num_requests_running", &[]), Some(0.0));
    assert_eq!(page.get("vllm:prompt_tokens_total", &[]), Some(0.0));
    assert_eq!(page.get("vllm:generation_tokens_total", &[]), Some(0.0));
    assert_eq!(page.finished("abort"), None, "no request yet: {page:?}");

    // Finished by the script: prompt [1, 2], tokens 33 and 44, `stop`.
    register_two_tokens(&s.engine, &[1, 2]);
    let (status, _) = s
        .post_json(json!({"model": "m", "token_ids": [1, 2], "sampling_params": {}}))
        .await;
    assert_eq!(status, 401, "the key is still wanted on /inference");
    let response = s
        .generate()
        .bearer_auth("k")
        .json(&json!({"model": "m", "token_ids": [1, 2], "sampling_params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();

    // Finished by the generator at max_tokens: prompt of 3, 2 tokens, `length`.
    let response = s
        .generate()
        .bearer_auth("k")
        .json(&json!({"model": "m", "token_ids": [5, 6, 7], "sampling_params": {"max_tokens": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();

    // Aborted: the client drops a stream that has sent one token and then stalls.
    let mut stall = step(&[]);
    stall.stall = true;
    s.engine
        .register(vec![9, 9, 9, 9], script(vec![step(&[33]), stall]));
    let mut records = s.engine.subscribe();
    let response = s
        .generate()
        .bearer_auth("k")
        .json(&json!({"model": "m", "token_ids": [9, 9, 9, 9], "sampling_params": {}, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    first_chunk(&mut body).await;
    let page = scrape(&s).await;
    assert_eq!(page.get("vllm:num_requests_running", &[]), Some(1.0));
    drop(body);
    let record = next_record(&mut records).await;
    assert_eq!(record.outcome, Outcome::Aborted);

    let page = scrape(&s).await;
    assert_eq!(page.get("vllm:num_requests_running", &[]), Some(0.0));
    assert_eq!(page.finished("stop"), Some(1.0), "{page:?}");
    assert_eq!(page.finished("length"), Some(1.0), "{page:?}");
    assert_eq!(page.finished("abort"), Some(1.0), "{page:?}");
    assert_eq!(
        page.finished("abort"),
        Some(s.engine.stats().aborted as f64),
        "the engine's own abort count"
    );
    assert_eq!(
        page.get("vllm:prompt_tokens_total", &[]),
        Some(2.0 + 3.0 + 4.0)
    );
    assert_eq!(
        page.get("vllm:generation_tokens_total", &[]),
        Some(2.0 + 2.0 + 1.0)
    );
    s.shutdown().await;
}

#[tokio::test]
async fn an_engine_failure_counts_as_error() {
    let config = Config {
        served_model_names: vec!["m".into()],
        ..Config::default()
    };
    let s = TestServer::with_config(config).await;
    let mut fail = step(&[]);
    fail.fail = Some("boom".into());
    s.engine
        .register(vec![3, 3], script(vec![step(&[8]), fail]));
    let (status, _) = s
        .post_json(json!({"model": "m", "token_ids": [3, 3], "sampling_params": {}}))
        .await;
    assert_eq!(status, 500);
    let page = scrape(&s).await;
    assert_eq!(page.finished("error"), Some(1.0), "{page:?}");
    assert_eq!(page.finished("abort"), None, "{page:?}");
    assert_eq!(page.get("vllm:generation_tokens_total", &[]), Some(1.0));
    s.shutdown().await;
}
