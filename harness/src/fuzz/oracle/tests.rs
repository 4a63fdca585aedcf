use mock_engine::script::{Endpoint, FinishReason, RequestSpec, Script};
use serde_json::{Value, json};

use super::*;

#[test]
fn an_engine_stop_hides_the_last_tokens_text_whatever_its_reason() {
    use mock_engine::script::{Step, StopReason};
    let script = |stop_reason: Option<StopReason>| Script {
        steps: vec![Step {
            tokens: vec![0],
            finish: Some(FinishReason::Stop),
            stop_reason,
            ..Step::default()
        }],
        ..Script::default()
    };
    let on_token = ScriptOutcome::of(&script(None)).unwrap();
    assert!(on_token.stop_token);
    let on_id = ScriptOutcome::of(&script(Some(StopReason::Token(0)))).unwrap();
    assert!(on_id.stop_token);
    let on_text = ScriptOutcome::of(&script(Some(StopReason::Text("\n".into())))).unwrap();
    assert!(on_text.stop_token);
    let text = ExpectedText::of(&[3839, 236, 227], &on_text).unwrap();
    assert_eq!(text.all, "");
}
use crate::normalize::{ClientValues, TranscriptBuilder};

fn request(body: Value) -> RequestSpec {
    RequestSpec {
        body: Some(body),
        ..RequestSpec::default()
    }
}

fn stream(events: &[&str]) -> Transcript {
    TranscriptBuilder::new(ClientValues::default()).build(
        Some(200),
        &[("content-type".into(), "text/event-stream".into())],
        b"",
        Some(events.iter().map(|s| s.to_string()).collect()),
        vec![],
        None,
    )
}

fn props(v: &[Violation]) -> Vec<Property> {
    v.iter().map(|v| v.property).collect()
}

#[test]
fn a_good_stream_passes_and_a_missing_done_fails() {
    let e = Expected::new(
        &request(
            json!({"token_ids": [1, 2], "sampling_params": {}, "stream": true,
            "stream_options": {"include_usage": true}}),
        ),
        "tiny",
        None,
    );
    let good = [
        r#"{"request_id":"a","choices":[{"index":0,"token_ids":[5]}]}"#,
        r#"{"request_id":"a","choices":[{"index":0,"token_ids":[6],"finish_reason":"stop"}]}"#,
        r#"{"request_id":"a","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}"#,
        "[DONE]",
    ];
    assert_eq!(check(&e, &stream(&good)), []);
    let cut = check(&e, &stream(&good[..3]));
    assert_eq!(props(&cut)[0], Property::Done, "{cut:?}");
}

#[test]
fn usage_on_the_wrong_chunk_and_bad_arithmetic_are_caught() {
    let e = Expected::new(
        &request(
            json!({"token_ids": [1], "sampling_params": {}, "stream": true,
            "stream_options": {"include_usage": true}}),
        ),
        "tiny",
        None,
    );
    let got = check(
        &e,
        &stream(&[
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":3}}"#,
            r#"{"choices":[{"index":0,"token_ids":[5],"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]),
    );
    let p = props(&got);
    assert!(p.contains(&Property::UsageEvent), "{got:?}");
    assert!(p.contains(&Property::UsageArithmetic), "{got:?}");
}

#[test]
fn a_chunk_after_the_finish_and_events_after_an_error_are_caught() {
    let e = Expected::new(
        &request(json!({"token_ids": [1], "sampling_params": {}, "stream": true})),
        "tiny",
        None,
    );
    let got = check(
        &e,
        &stream(&[
            r#"{"choices":[{"index":0,"token_ids":[5],"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"token_ids":[6]}]}"#,
            r#"{"error":{"message":"x"}}"#,
            r#"{"choices":[{"index":0,"token_ids":[7]}]}"#,
            "[DONE]",
        ]),
    );
    let p = props(&got);
    assert!(
        p.contains(&Property::FinishReason) && p.contains(&Property::ErrorEvent),
        "{got:?}"
    );
}

fn plain(body: Value) -> Transcript {
    TranscriptBuilder::new(ClientValues::default()).build(
        Some(200),
        &[("content-type".into(), "application/json".into())],
        body.to_string().as_bytes(),
        None,
        vec![],
        None,
    )
}

#[test]
fn a_plain_answer_must_be_what_its_stream_amounts_to() {
    let e = Expected::new(
        &request(json!({"token_ids": [1], "sampling_params": {}, "stream": true})),
        "tiny",
        None,
    );
    let s = stream(&[
        r#"{"choices":[{"index":0,"token_ids":[5]}]}"#,
        r#"{"choices":[{"index":0,"token_ids":[6],"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    let same =
        plain(json!({"choices": [{"index": 0, "token_ids": [5, 6], "finish_reason": "stop"}]}));
    assert_eq!(check_twins(&e, &s, &same), None);
    let other =
        plain(json!({"choices": [{"index": 0, "token_ids": [5], "finish_reason": "length"}]}));
    let v = check_twins(&e, &s, &other).expect("differs");
    assert_eq!(v.property, Property::StreamEqualsNonStream);
}

#[test]
fn the_empty_generation_logprobs_quirk_is_accepted_only_where_it_applies() {
    let script: Script = serde_json::from_value(json!({"steps": [{"finish": "stop"}]})).unwrap();
    let asks = request(json!({"token_ids": [1], "sampling_params": {"logprobs": 0}}));
    let quirk = Expected::new(&asks, "tiny", Some(&script));
    assert!(refuses_empty_logprobs(&quirk));
    let error = TranscriptBuilder::new(ClientValues::default()).build(
        Some(500),
        &[("content-type".into(), "application/json".into())],
        br#"{"error":{"message":"requested logprobs but generation returned none"}}"#,
        None,
        vec![],
        None,
    );
    assert_eq!(check(&quirk, &error), []);
    let no_logprobs = request(json!({"token_ids": [1], "sampling_params": {}}));
    let strict = Expected::new(&no_logprobs, "tiny", Some(&script));
    assert_eq!(props(&check(&strict, &error)), [Property::Status]);
}

fn on(endpoint: Endpoint, body: Value) -> RequestSpec {
    RequestSpec {
        endpoint,
        body: Some(body),
        ..RequestSpec::default()
    }
}

/// Three steps: `t33`, then `é` split over two steps, then `t44`.
fn split_char_script() -> Script {
    serde_json::from_value(json!({"steps": [
        {"tokens": [33, 4035]}, {"tokens": [4009]}, {"tokens": [44], "finish": "length"}
    ]}))
    .unwrap()
}

#[test]
fn the_expected_text_is_primed_with_the_prompt_and_holds_back_split_characters() {
    let script = ScriptOutcome::of(&split_char_script()).unwrap();
    let text = ExpectedText::of(&[5, 7, 9], &script).unwrap();
    assert_eq!(text.streamed, " t33 é t44");
    assert_eq!(text.all, text.streamed);
    // A character never finished never comes out.
    let cut: Script =
        serde_json::from_value(json!({"steps": [{"tokens": [33, 4066, 3970], "finish": "stop"}]}))
            .unwrap();
    let cut = ExpectedText::of(&[5], &ScriptOutcome::of(&cut).unwrap()).unwrap();
    assert_eq!(cut.all, " t33");
}

#[test]
fn completions_text_must_be_the_detokenized_script() {
    let req = on(
        Endpoint::Completions,
        json!({"prompt": "t5 t7 t9", "stream": true,
            "stream_options": {"include_usage": true}}),
    );
    let e = Expected::new(&req, "tiny", Some(&split_char_script()));
    assert_eq!(e.prompt, [5, 7, 9]);
    let events = |middle: &str| {
        vec![
            r#"{"id":"c","choices":[{"index":0,"text":" t33"}]}"#.to_string(),
            format!(r#"{{"id":"c","choices":[{{"index":0,"text":"{middle}"}}]}}"#),
            r#"{"id":"c","choices":[{"index":0,"text":" t44","finish_reason":"length"}]}"#
                .to_string(),
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#
                .to_string(),
            "[DONE]".to_string(),
        ]
    };
    let good = events(" é");
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    assert_eq!(check(&e, &stream(&good)), []);
    // The two halves of `é` decoded one by one: replacement characters.
    let bad = events(" \u{FFFD}\u{FFFD}");
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    assert_eq!(props(&check(&e, &stream(&bad))), [Property::Text]);
}

#[test]
fn completions_usage_must_count_the_scripts_tokens() {
    let req = on(
        Endpoint::Completions,
        json!({"prompt": [5, 7, 9], "stream": true,
            "stream_options": {"include_usage": true}}),
    );
    let e = Expected::new(&req, "tiny", Some(&split_char_script()));
    let got = check(
        &e,
        &stream(&[
            r#"{"choices":[{"index":0,"text":" t33 é t44","finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}"#,
            "[DONE]",
        ]),
    );
    assert_eq!(props(&got), [Property::UsageArithmetic], "{got:?}");
}

#[test]
fn a_chat_stream_needs_one_role_delta_first() {
    let req = on(
        Endpoint::Chat,
        json!({"messages": [{"role": "user", "content": "t10 t11"}], "stream": true}),
    );
    let script: Script = serde_json::from_value(
        json!({"steps": [{"tokens": [33]}, {"tokens": [44], "finish": "length"}]}),
    )
    .unwrap();
    let e = Expected::new(&req, "tiny", Some(&script));
    assert_eq!(e.prompt, [3, 10, 11, 4]);
    let good = [
        r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":" t33"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":" t44"},"finish_reason":"length"}]}"#,
        "[DONE]",
    ];
    assert_eq!(check(&e, &stream(&good)), []);
    let no_role = check(&e, &stream(&good[1..]));
    assert_eq!(props(&no_role), [Property::ChatRole]);
    let twice = [
        good[0],
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":" t33"}}]}"#,
        good[2],
        good[3],
    ];
    assert_eq!(props(&check(&e, &stream(&twice))), [Property::ChatRole]);
}

#[test]
fn a_chat_stream_may_carry_the_error_steps_ids_but_no_others() {
    let req = on(
        Endpoint::Chat,
        json!({"messages": [{"role": "user", "content": "t10 t11"}], "stream": true,
               "return_token_ids": true}),
    );
    let script: Script = serde_json::from_value(
        json!({"steps": [{"tokens": [33]}, {"tokens": [0], "finish": "error"}]}),
    )
    .unwrap();
    let e = Expected::new(&req, "tiny", Some(&script));
    let events = |last_ids: &str| {
        vec![
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}],"prompt_token_ids":[3,10,11,4]}"#.to_string(),
            r#"{"choices":[{"index":0,"delta":{"content":" t33"},"token_ids":[33]}]}"#.to_string(),
            format!(r#"{{"choices":[{{"index":0,"delta":{{"content":" t0"}},"token_ids":{last_ids}}}]}}"#),
            r#"{"error":{"code":"server_error","message":"Internal server error","param":null,"type":"server_error"}}"#.to_string(),
            "[DONE]".to_string(),
        ]
    };
    let as_strs = |v: &[String]| stream(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let scripted = check(&e, &as_strs(&events("[0]")));
    assert!(
        !props(&scripted).contains(&Property::Script),
        "{scripted:?}"
    );
    let extra = check(&e, &as_strs(&events("[0,7]")));
    assert!(props(&extra).contains(&Property::Script), "{extra:?}");
}

#[test]
fn a_finish_only_first_output_must_still_finish_the_stream() {
    // The contract sends the finish of an output without tokens, first
    // or not (Python 0.32's skipping it is the registry's business,
    // `python-skips-empty-first-output`).
    let no_finish = stream(&["[DONE]"]);
    for steps in [
        json!([{"tokens": [], "finish": "stop"}]),
        json!([{"tokens": [33]}, {"tokens": [], "finish": "stop"}]),
    ] {
        let script: Script = serde_json::from_value(json!({ "steps": steps })).unwrap();
        let completions = Expected::new(
            &on(
                Endpoint::Completions,
                json!({"prompt": [5, 7], "stream": true}),
            ),
            "tiny",
            Some(&script),
        );
        let got = props(&check(&completions, &no_finish));
        assert!(got.contains(&Property::FinishReason), "{steps}: {got:?}");
    }
}

#[test]
fn a_chat_answer_must_be_what_its_stream_amounts_to() {
    let req = on(
        Endpoint::Chat,
        json!({"messages": [{"role": "user", "content": "t10"}], "stream": true}),
    );
    let e = Expected::new(&req, "tiny", None);
    let s = stream(&[
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":" t33"},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    let answer = |content: &str| {
        plain(json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": content}}]}))
    };
    assert_eq!(check_twins(&e, &s, &answer(" t33")), None);
    let v = check_twins(&e, &s, &answer(" t34")).expect("differs");
    assert_eq!(v.property, Property::StreamEqualsNonStream);
}

#[test]
fn stop_strings_turn_the_script_checks_off() {
    let req = on(
        Endpoint::Completions,
        json!({"prompt": "t5", "stop": ["t4"], "max_tokens": 5}),
    );
    let e = Expected::new(&req, "tiny", Some(&split_char_script()));
    let stopped = plain(
        json!({"choices": [{"index": 0, "text": " t33é", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}),
    );
    assert_eq!(check(&e, &stopped), []);
    let e = Expected::new(
        &on(
            Endpoint::Completions,
            json!({"prompt": "t5", "max_tokens": 5}),
        ),
        "tiny",
        Some(&split_char_script()),
    );
    let p = props(&check(&e, &stopped));
    assert!(
        p.contains(&Property::Text) && p.contains(&Property::Script),
        "{p:?}"
    );
}
