//! Fixtures may share a prompt (real traffic repeats prompts; a recorded
//! repeat hits the prefix cache). Every case must replay its own script.

use std::path::PathBuf;

use harness::normalize::Body;
use harness::run::{self, Outcome, RunOptions};
use harness::targets::TargetSpec;
use mock_engine::{Corpus, Fixture, LoadedFixture};
use serde_json::{Value, json};

const PROMPT: [u32; 3] = [611, 612, 613];

fn fixture(name: &str, engine: Value) -> LoadedFixture {
    let fixture: Fixture = serde_json::from_value(json!({
        "name": name,
        "description": "a prompt another fixture repeats",
        "request": {
            "headers": {"x-request-id": format!("fixed-{name}")},
            "body": {"token_ids": PROMPT, "sampling_params": {"max_tokens": 2}}
        },
        "engine": engine,
    }))
    .expect("a valid fixture");
    LoadedFixture {
        path: PathBuf::from(format!("fixtures/{name}.json")),
        fixture,
    }
}

/// `delay_ms` 20 is paced (each such case runs alone in its column), 3 is
/// not (cases run together, one per prompt at a time).
fn scripted(tokens: [u32; 2], cached: u32, delay_ms: u64) -> Value {
    json!({"steps": [
        {"delay_ms": delay_ms, "tokens": [tokens[0]], "cached_tokens": cached},
        {"delay_ms": delay_ms, "tokens": [tokens[1]], "finish": "stop"}
    ]})
}

fn tokens(report: &run::RunReport, fixture: &str) -> Vec<u64> {
    let case = report.case(fixture, "reference").expect("the case ran");
    assert_eq!(case.outcome, Outcome::Pass, "{case:#?}");
    let transcript = case.transcript.as_ref().expect("a transcript");
    let Body::Json(body) = &transcript.body else {
        panic!("{fixture}: not a JSON body: {:?}", transcript.body);
    };
    let ids = body
        .pointer("/choices/0/token_ids")
        .unwrap_or_else(|| panic!("{fixture}: no token ids in {body}"));
    ids.as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_u64().expect("a token id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_case_replays_its_own_script_for_a_shared_prompt() {
    for delay_ms in [20, 3] {
        replays_its_own_script(delay_ms).await;
    }
}

async fn replays_its_own_script(delay_ms: u64) {
    let corpus = Corpus {
        fixtures: vec![
            fixture("repeat_cold", scripted([33, 34], 0, delay_ms)),
            fixture("repeat_generated", json!({})),
            fixture("repeat_warm", scripted([55, 56], 2, delay_ms)),
            fixture("repeat_cold_again", scripted([33, 34], 0, delay_ms)),
        ],
    };
    let options = RunOptions {
        budget: std::time::Duration::from_secs(120),
        jobs: 4,
        ..RunOptions::new(vec![TargetSpec::Reference])
    };
    let report = run::run(&corpus, &options, &()).await.expect("the run");
    assert_eq!(tokens(&report, "repeat_cold"), [33, 34]);
    assert_eq!(tokens(&report, "repeat_warm"), [55, 56]);
    assert_eq!(tokens(&report, "repeat_cold_again"), [33, 34]);
    // A fixture without a script meets the generator, not a script another
    // fixture registered for the same prompt.
    let generated = tokens(&report, "repeat_generated");
    assert_eq!(generated.len(), 2);
    assert_ne!(generated, [33, 34]);
    assert_ne!(generated, [55, 56]);
}

/// A reference server started by hand (here, in the test) with the corpus
/// loaded answers each shared prompt with the first fixture's script; with
/// `--enable-script-control`, `run` sets each case's own script first, so a
/// `url=` reference gives the embedded reference's verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_started_server_with_script_control_replays_each_cases_own_script() {
    let corpus = Corpus {
        fixtures: vec![
            fixture("repeat_cold", scripted([33, 34], 0, 3)),
            fixture("repeat_warm", scripted([55, 56], 2, 3)),
            fixture("repeat_generated", json!({})),
        ],
    };
    for control in [true, false] {
        let config = reference_server::Config {
            enable_script_control: control,
            ..reference_server::Config::default()
        };
        let engine = mock_engine::Engine::with_corpus(Default::default(), &corpus);
        let server = reference_server::spawn(config, engine)
            .await
            .expect("the server");
        let options = RunOptions {
            budget: std::time::Duration::from_secs(120),
            ..RunOptions::new(vec![
                TargetSpec::Reference,
                format!("url={},name=by-hand", server.base_url())
                    .parse()
                    .expect("a target"),
            ])
        };
        let report = run::run(&corpus, &options, &()).await.expect("the run");
        let outcome = |f: &str| report.case(f, "by-hand").expect("the case ran").outcome;
        if control {
            for f in ["repeat_cold", "repeat_warm", "repeat_generated"] {
                assert_eq!(outcome(f), Outcome::Pass, "{f}");
            }
        } else {
            // Without the channel, the server answers with the first script.
            assert_eq!(outcome("repeat_cold"), Outcome::Pass);
            assert_eq!(outcome("repeat_warm"), Outcome::New);
        }
    }
    assert!(
        mock_engine::fixture::shared_prompts_warning(&corpus.fixtures)
            .is_some_and(|w| w.contains("repeat_cold, repeat_warm, repeat_generated")),
        "the warning names the fixtures that share the prompt"
    );
}
