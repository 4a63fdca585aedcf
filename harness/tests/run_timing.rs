//! A run says where its time went: start-up, cases, restarts and stop add
//! up to the run's time, in the closing line and in the JSON report.

use std::path::PathBuf;

use harness::report;
use harness::run::{self, RunOptions, RunReport};
use harness::targets::TargetSpec;
use mock_engine::{Corpus, Fixture, LoadedFixture};
use serde_json::json;

fn fixture(name: &str, prompt: u32) -> LoadedFixture {
    let fixture: Fixture = serde_json::from_value(json!({
        "name": name,
        "description": "a case that takes 40 ms of scripted delays",
        "request": {
            "headers": {"x-request-id": format!("fixed-{name}")},
            "body": {"token_ids": [prompt, prompt + 1], "sampling_params": {"max_tokens": 2}}
        },
        "engine": {"steps": [
            {"delay_ms": 20, "tokens": [7]},
            {"delay_ms": 20, "tokens": [8], "finish": "stop"}
        ]},
    }))
    .expect("a valid fixture");
    LoadedFixture {
        path: PathBuf::from(format!("fixtures/{name}.json")),
        fixture,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_says_where_its_time_went() {
    let corpus = Corpus {
        fixtures: vec![fixture("timed_a", 701), fixture("timed_b", 801)],
    };
    let options = RunOptions {
        budget: std::time::Duration::from_secs(120),
        ..RunOptions::new(vec![TargetSpec::Reference])
    };
    let report = run::run(&corpus, &options, &()).await.expect("the run");
    let t = report.timing;
    assert!(t.startup_ms > 0.0, "the reference server's start: {t:?}");
    assert!(t.cases_ms >= 80.0, "two cases of 40 ms delays: {t:?}");
    assert_eq!((t.restarts, t.restart_ms), (0, 0.0), "nothing died: {t:?}");
    let parts = t.startup_ms + t.cases_ms + t.restart_ms + t.stop_ms;
    assert!(
        (parts - report.elapsed_ms).abs() < 0.01,
        "{parts} ms of parts, {} ms of run",
        report.elapsed_ms
    );

    let closing = report::summary(&report);
    assert!(
        closing.contains(&format!("start-up {:.1} s", t.startup_ms / 1000.0))
            && closing.contains("(0 restarts)"),
        "{closing}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["timing"]["restarts"], 0, "{json}");
    let back: RunReport = serde_json::from_value(json).unwrap();
    assert_eq!(back.timing, t);
}
