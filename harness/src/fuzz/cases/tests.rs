use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::*;

#[test]
fn generated_scripts_are_valid_fixtures() {
    let mut runner = TestRunner::deterministic();
    for i in 0..300 {
        let c = case(Scope::default())
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let fixture = mock_engine::Fixture {
            name: format!("c{i}"),
            description: String::new(),
            server: Default::default(),
            request: c.request_spec("tiny"),
            engine: c.script.clone().unwrap_or_default(),
            in_process_only: None,
            recorded: None,
        };
        let text = serde_json::to_string(&fixture).unwrap();
        if let Err(e) = mock_engine::fixture::parse("c.json".as_ref(), &text) {
            panic!("{e}\n{text}");
        }
    }
}

#[test]
fn prompts_differ_between_cases_and_keep_the_mark() {
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let c = case(Scope::default())
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let p = c.prompt();
        if let Prompt::Ids(_) = c.request.prompt {
            assert_eq!(p[0], PROMPT_MARK);
            seen.insert(p);
        }
    }
    assert!(seen.len() > 150, "{}", seen.len());
}

#[test]
fn a_twin_flips_the_mode() {
    let spec = RequestSpec {
        body: Some(json!({"token_ids": [1], "stream": true, "stream_options": {}})),
        ..RequestSpec::default()
    };
    let t = twin(&spec).unwrap();
    assert_eq!(t.body, Some(json!({"token_ids": [1]})));
    assert_eq!(twin(&t).unwrap().body.unwrap()["stream"], json!(true));
}
