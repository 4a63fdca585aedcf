//! A column keeps several cases in flight (`--jobs`), except the ones that
//! must run alone: a paced case (its chunk boundaries are compared) and one
//! whose script kills the engine. The report keeps the fixtures' order.
//!
//! The target is a server of this test's own that answers every request
//! after 100 ms and writes down when each one was in flight.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use harness::run::{self, Outcome, RunOptions};
use harness::targets::TargetSpec;
use mock_engine::{Corpus, Fixture, LoadedFixture};
use serde_json::{Value, json};

/// When each request was in flight, by the first prompt token.
type Log = Arc<Mutex<Vec<(u64, Instant, Instant)>>>;

async fn answer(
    State(log): State<Log>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    let from = Instant::now();
    // `run` asks a url= target whether it takes scripts (it does not).
    if uri.path() == reference_server::control::SCRIPTS_PATH {
        return axum::Json(json!({}));
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = body["token_ids"][0].as_u64().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    log.lock().unwrap().push((id, from, Instant::now()));
    axum::Json(json!({"choices": [{"index": 0, "token_ids": [1], "finish_reason": "stop"}]}))
}

fn fixture(name: &str, prompt: u32, engine: Value) -> LoadedFixture {
    let fixture: Fixture = serde_json::from_value(json!({
        "name": name,
        "description": "a case for the cases in flight",
        "request": {"body": {"token_ids": [prompt], "sampling_params": {"max_tokens": 1}}},
        "engine": engine,
    }))
    .expect("a valid fixture");
    LoadedFixture {
        path: PathBuf::from(format!("fixtures/{name}.json")),
        fixture,
    }
}

/// This test's server, at the returned base URL, and its log.
async fn logging_target() -> (String, Log) {
    let log = Log::default();
    let app = Router::new()
        .fallback(axum::routing::post(answer))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_cases_overlap_and_the_others_run_alone() {
    let (base, log) = logging_target().await;

    let unpaced = || json!({"steps": [{"delay_ms": 1, "tokens": [1], "finish": "stop"}]});
    let paced = json!({"steps": [{"delay_ms": 20, "tokens": [1], "finish": "stop"}]});
    let kills = json!({"steps": [{"delay_ms": 1, "tokens": [1]}, {"fail": "boom"}]});
    let mut fixtures = Vec::new();
    for i in 0..4 {
        fixtures.push(fixture(&format!("a_unpaced_{i}"), 100 + i, unpaced()));
    }
    fixtures.push(fixture("b_paced", 200, paced));
    for i in 0..4 {
        fixtures.push(fixture(&format!("c_unpaced_{i}"), 300 + i, unpaced()));
    }
    fixtures.push(fixture("d_kills", 400, kills));
    for i in 0..4 {
        fixtures.push(fixture(&format!("e_unpaced_{i}"), 500 + i, unpaced()));
    }
    let names: Vec<String> = fixtures.iter().map(|f| f.fixture.name.clone()).collect();
    let corpus = Corpus { fixtures };
    let options = RunOptions {
        budget: Duration::from_secs(120),
        jobs: 4,
        ..RunOptions::new(vec![format!("url={base}").parse::<TargetSpec>().unwrap()])
    };
    let report = run::run(&corpus, &options, &()).await.expect("the run");

    let ran: Vec<&str> = report.cases.iter().map(|c| c.fixture.as_str()).collect();
    assert_eq!(ran, names, "the report keeps the fixtures' order");
    for case in &report.cases {
        assert_eq!(case.outcome, Outcome::Pass, "{case:#?}");
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), names.len());
    let overlaps = |id: u64| {
        let (_, from, to) = log.iter().find(|(i, ..)| *i == id).unwrap();
        log.iter()
            .filter(|(i, f, t)| *i != id && f < to && from < t)
            .count()
    };
    assert!(
        (100..104).any(|id| overlaps(id) > 0),
        "unpaced cases run together: {log:?}"
    );
    assert_eq!(overlaps(200), 0, "the paced case runs alone");
    assert_eq!(
        overlaps(400),
        0,
        "the case that kills the engine runs alone"
    );
}

/// A column starts the long scripts first, then the cases that share it,
/// then those that run alone, each group in the fixtures' order; the report
/// keeps the fixtures' order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_scripts_start_first_and_the_report_keeps_the_fixtures_order() {
    let (base, log) = logging_target().await;

    let step =
        |delay_ms: u64| json!({"steps": [{"delay_ms": delay_ms, "tokens": [1], "finish": "stop"}]});
    // Names in path order; prompts say which group each is in.
    let fixtures = vec![
        fixture("a_paced", 300, step(20)),
        fixture("b_unpaced", 200, step(1)),
        fixture("c_long", 100, step(1000)),
        fixture("d_paced", 301, step(20)),
        fixture("e_unpaced", 201, step(1)),
        fixture("f_long", 101, step(1500)),
    ];
    let names: Vec<String> = fixtures.iter().map(|f| f.fixture.name.clone()).collect();
    let corpus = Corpus { fixtures };
    let options = RunOptions {
        budget: Duration::from_secs(120),
        // One at a time: the order the requests arrive in is the start order.
        jobs: 1,
        ..RunOptions::new(vec![format!("url={base}").parse::<TargetSpec>().unwrap()])
    };
    let report = run::run(&corpus, &options, &()).await.expect("the run");

    let ran: Vec<&str> = report.cases.iter().map(|c| c.fixture.as_str()).collect();
    assert_eq!(ran, names, "the report keeps the fixtures' order");
    assert!(report.cases.iter().all(|c| c.outcome == Outcome::Pass));
    let mut log = log.lock().unwrap().clone();
    log.sort_by_key(|(_, from, _)| *from);
    let started: Vec<u64> = log.iter().map(|(id, ..)| *id).collect();
    assert_eq!(started, [100, 101, 200, 201, 300, 301]);
}
