//! Deliberately broken servers must be caught, each with a clear difference.
//!
//! Each broken server is a proxy in front of a healthy reference server that
//! damages the event stream in one way a real implementation might.

mod common;

use common::{Damage, drop_done, spawn_broken_proxy, usage_on_first_chunk};
use harness::diff::Layer;
use harness::run::{self, Outcome, RunOptions, RunReport};
use harness::targets::TargetSpec;
use mock_engine::{Corpus, Engine, EngineConfig};

fn corpus() -> Corpus {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    Corpus::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}
use std::path::Path;

/// Runs `fixtures` against the reference and a damaged copy of it.
async fn run_broken(damage: Damage, filter: &str) -> RunReport {
    let corpus = corpus();
    let healthy = reference_server::spawn(
        reference_server::Config::default(),
        Engine::with_corpus(EngineConfig::default(), &corpus),
    )
    .await
    .expect("reference starts");
    let proxy = spawn_broken_proxy(healthy.base_url(), damage).await;
    let options = RunOptions {
        filter: Some(filter.to_string()),
        budget: std::time::Duration::from_secs(120),
        ..RunOptions::new(vec![
            TargetSpec::Reference,
            format!("url={proxy},name=broken").parse().unwrap(),
        ])
    };
    let report = run::run(&corpus, &options, &()).await.expect("run");
    healthy.shutdown().await;
    report
}

fn broken_case<'a>(report: &'a RunReport, fixture: &str) -> &'a run::CaseResult {
    let case = report.case(fixture, "broken").expect("the case ran");
    assert_eq!(case.outcome, Outcome::New, "{fixture}: {case:#?}");
    assert!(
        case.text_diff
            .as_deref()
            .is_some_and(|d| d.contains("\n-") || d.contains("\n+")),
        "a readable diff"
    );
    case
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_forgets_done_is_caught() {
    let report = run_broken(drop_done, "stream_mode_stream").await;
    let case = broken_case(&report, "stream_mode_stream");
    assert!(
        case.differences
            .iter()
            .any(|d| d.difference.layer == Layer::Stream
                && d.difference.path == "stream.done_events"),
        "{:#?}",
        case.differences
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_on_the_wrong_chunk_is_caught() {
    // Moves the usage object from the usage-only event onto the first chunk.
    let report = run_broken(usage_on_first_chunk, "stream_mode_include_usage").await;
    let case = broken_case(&report, "stream_mode_include_usage");
    assert!(
        case.differences
            .iter()
            .any(|d| d.difference.path == "events[0].usage"),
        "{:#?}",
        case.differences
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_finish_only_chunk_is_caught() {
    let report = run_broken(
        |mut events| {
            events.retain(|e| !(e.contains("\"finish_reason\"") && e.contains("\"token_ids\":[]")));
            events
        },
        "finish_only_stream",
    )
    .await;
    let case = broken_case(&report, "finish_only_stream");
    assert!(
        case.differences
            .iter()
            .any(|d| d.difference.path == "stream.finish_reasons.0"),
        "{:#?}",
        case.differences
    );
}
