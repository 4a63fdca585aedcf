//! The engine as a client sees it: scripts and the generator replayed
//! through [`Engine::submit`], on tokio's paused clock.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::*;
use crate::step::{FinishReason, LogprobEntry, Step, StopReason};

/// These tests run on tokio's paused clock, which only tokio's timer follows.
fn paused_engine() -> Engine {
    Engine::new(EngineConfig {
        timer: Timer::Tokio,
        ..EngineConfig::default()
    })
}

fn step(tokens: &[u32]) -> Step {
    Step {
        tokens: tokens.to_vec(),
        delay_ms: 10,
        ..Step::default()
    }
}

fn outputs(events: Vec<EngineEvent>) -> Vec<EngineOutput> {
    events
        .into_iter()
        .map(|e| match e {
            EngineEvent::Output(o) => o,
            EngineEvent::Failed(m) => panic!("unexpected failure {m}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn late_prompt_info_arrives_with_the_next_step() {
    let engine = paused_engine();
    let mut first = step(&[]);
    first.prompt_info = Some(false);
    let mut last = step(&[44]);
    last.finish = Some(FinishReason::Stop);
    engine.register(
        vec![9],
        Script {
            steps: vec![first, step(&[33]), last],
            ..Script::default()
        },
    );
    let out = outputs(
        engine
            .submit(EngineRequest::new("a", vec![9]))
            .collect()
            .await,
    );
    assert_eq!(out.len(), 3);
    assert!(out[0].prompt_token_ids.is_none());
    assert_eq!(out[1].prompt_token_ids.as_deref(), Some(&[9][..]));
    assert!(out[2].prompt_token_ids.is_none());
    assert_eq!(
        engine.stats(),
        EngineStats {
            submitted: 1,
            completed: 1,
            aborted: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn deadlines_are_absolute() {
    let engine = paused_engine();
    let mut last = step(&[2]);
    last.finish = Some(FinishReason::Length);
    engine.register(
        vec![5],
        Script {
            steps: vec![step(&[1]), last],
            ..Script::default()
        },
    );
    let start = Instant::now();
    let out: Vec<_> = engine
        .submit(EngineRequest::new("a", vec![5]))
        .collect()
        .await;
    assert_eq!(out.len(), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_aborts() {
    let engine = paused_engine();
    let mut records = engine.subscribe();
    let mut stall = step(&[]);
    stall.stall = true;
    engine.register(
        vec![3],
        Script {
            steps: vec![step(&[1]), stall],
            ..Script::default()
        },
    );
    let mut stream = Box::pin(engine.submit(EngineRequest::new("s", vec![3])));
    assert!(stream.next().await.is_some());
    let pending = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
    assert!(pending.is_err(), "a stalled step never yields");
    assert_eq!(engine.stats().active(), 1);
    drop(stream);
    assert_eq!(engine.stats().aborted, 1);
    let record = records.recv().await.unwrap();
    assert_eq!(
        (record.request_id.as_str(), record.outcome),
        ("s", Outcome::Aborted)
    );
}

#[tokio::test(start_paused = true)]
async fn fail_ends_the_stream_with_its_message() {
    let engine = paused_engine();
    let mut fail = step(&[]);
    fail.fail = Some("engine died".into());
    engine.register(
        vec![4],
        Script {
            steps: vec![step(&[1]), fail],
            ..Script::default()
        },
    );
    let events: Vec<_> = engine
        .submit(EngineRequest::new("f", vec![4]))
        .collect()
        .await;
    assert_eq!(
        events.last(),
        Some(&EngineEvent::Failed("engine died".into()))
    );
    assert_eq!(engine.stats().completed, 1);
}

#[tokio::test(start_paused = true)]
async fn unscripted_prompts_get_max_tokens_from_the_generator() {
    let engine = paused_engine();
    let mut request = EngineRequest::new("g", vec![1, 2, 3]);
    request.max_tokens = Some(5);
    request.logprobs = Some(2);
    let out = outputs(engine.submit(request.clone()).collect().await);
    let tokens: Vec<u32> = out.iter().flat_map(|o| o.new_token_ids.clone()).collect();
    assert_eq!(tokens.len(), 5);
    assert_eq!(
        out.last().unwrap().finish_reason,
        Some(FinishReason::Length)
    );
    assert!(
        out.iter()
            .all(|o| o.logprobs.as_ref().unwrap()[0].len() == 3)
    );
    let again = outputs(engine.submit(request).collect().await);
    assert_eq!(out, again, "the generator is deterministic");
}

/// An engine whose context holds 8 tokens.
fn small_context_engine() -> Engine {
    Engine::new(EngineConfig {
        timer: Timer::Tokio,
        max_model_len: 8,
        ..EngineConfig::default()
    })
}

#[tokio::test(start_paused = true)]
async fn generation_stops_when_the_context_is_full_whatever_max_tokens_says() {
    let engine = small_context_engine();
    let mut request = EngineRequest::new("g", vec![1, 2, 3]);
    request.max_tokens = Some(u32::MAX);
    let out = outputs(engine.submit(request).collect().await);
    assert_eq!(tokens_of(&out).len(), 5, "3 prompt + 5 output = 8");
    assert_eq!(
        out.last().unwrap().finish_reason,
        Some(FinishReason::Length)
    );
    // A prompt that fills the context still samples one token, as vLLM does.
    let full = outputs(
        engine
            .submit(EngineRequest::new("f", vec![1; 8]))
            .collect()
            .await,
    );
    assert_eq!(tokens_of(&full).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_script_that_overruns_the_context_is_cut_with_length() {
    let engine = small_context_engine();
    let mut last = step(&[13, 14, 15]);
    last.finish = Some(FinishReason::Stop);
    last.stop_reason = Some(StopReason::Token(15));
    engine.register(
        vec![1, 2, 3],
        Script {
            steps: vec![step(&[10, 11, 12]), last],
            ..Script::default()
        },
    );
    let out = outputs(
        engine
            .submit(EngineRequest::new("s", vec![1, 2, 3]))
            .collect()
            .await,
    );
    assert_eq!(tokens_of(&out), [10, 11, 12, 13, 14]);
    assert_eq!(out[1].finish_reason, Some(FinishReason::Length));
    assert_eq!(out[1].stop_reason, None);
}

#[tokio::test(start_paused = true)]
async fn a_stop_token_on_the_last_slot_still_stops() {
    let engine = small_context_engine();
    let mut last = step(&[10, 11, 12, 13, 14]);
    last.finish = Some(FinishReason::Stop);
    engine.register(
        vec![1, 2, 3],
        Script {
            steps: vec![last],
            ..Script::default()
        },
    );
    let out = outputs(
        engine
            .submit(EngineRequest::new("s", vec![1, 2, 3]))
            .collect()
            .await,
    );
    assert_eq!(tokens_of(&out).len(), 5);
    assert_eq!(out[0].finish_reason, Some(FinishReason::Stop));
}

#[tokio::test(start_paused = true)]
async fn scripted_logprobs_go_out_only_when_asked_for() {
    let engine = paused_engine();
    let mut last = step(&[7]);
    last.finish = Some(FinishReason::Stop);
    last.logprobs = Some(vec![vec![LogprobEntry {
        token_id: 7,
        logprob: -0.5,
        rank: 1,
    }]]);
    engine.register(
        vec![6],
        Script {
            steps: vec![last],
            ..Script::default()
        },
    );
    let plain = outputs(
        engine
            .submit(EngineRequest::new("p", vec![6]))
            .collect()
            .await,
    );
    assert_eq!(plain[0].logprobs, None);
    let mut asking = EngineRequest::new("a", vec![6]);
    asking.logprobs = Some(1);
    let asked = outputs(engine.submit(asking).collect().await);
    assert_eq!(asked[0].logprobs.as_ref().unwrap()[0][0].logprob, -0.5);
}

fn tokens_of(out: &[EngineOutput]) -> Vec<u32> {
    out.iter().flat_map(|o| o.new_token_ids.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn each_arrival_of_a_prompt_gets_its_sample() {
    let engine = paused_engine();
    let one = |t: u32| {
        let mut s = step(&[t]);
        s.finish = Some(FinishReason::Stop);
        vec![s]
    };
    let script = Script {
        steps: one(10),
        samples: vec![one(11), one(12)],
        ..Script::default()
    };
    engine.register(vec![8, 9], script.clone());
    let mut seen = Vec::new();
    for i in 0..4 {
        let request = EngineRequest::new(format!("r{i}"), vec![8, 9]);
        seen.push(tokens_of(&outputs(engine.submit(request).collect().await)));
    }
    assert_eq!(seen, [vec![10], vec![11], vec![12], vec![10]]);
    // Looking a script up is not an arrival; registering again starts over.
    assert!(engine.script_for(&[8, 9]).is_some());
    engine.register(vec![8, 9], script);
    let mut again = Vec::new();
    for i in 0..2 {
        let request = EngineRequest::new(format!("s{i}"), vec![8, 9]);
        again.push(tokens_of(&outputs(engine.submit(request).collect().await)));
    }
    assert_eq!(again, [vec![10], vec![11]]);
}

#[tokio::test(start_paused = true)]
async fn scripted_prompt_logprobs_replace_the_synthetic_ones() {
    let engine = paused_engine();
    let entry = |token_id, logprob| LogprobEntry {
        token_id,
        logprob,
        rank: 3,
    };
    let scripted = vec![
        vec![entry(2, -4.5), entry(900, -0.25)],
        vec![entry(3, -1.5), entry(901, -0.5)],
    ];
    let mut first = step(&[]);
    first.prompt_info = Some(false);
    let mut last = step(&[7]);
    last.finish = Some(FinishReason::Stop);
    last.prompt_logprobs = Some(scripted.clone());
    engine.register(
        vec![1, 2, 3],
        Script {
            steps: vec![first, last],
            ..Script::default()
        },
    );
    let mut asking = EngineRequest::new("a", vec![1, 2, 3]);
    asking.prompt_logprobs = Some(1);
    let out = outputs(engine.submit(asking).collect().await);
    assert_eq!(out[0].prompt_logprobs, None);
    assert_eq!(out[1].prompt_logprobs.as_ref(), Some(&scripted));
    let plain = outputs(
        engine
            .submit(EngineRequest::new("p", vec![1, 2, 3]))
            .collect()
            .await,
    );
    assert!(plain.iter().all(|o| o.prompt_logprobs.is_none()));
    // Without scripted ones, the request still gets synthetic ones.
    let mut other = EngineRequest::new("g", vec![4, 5, 6]);
    other.max_tokens = Some(1);
    other.prompt_logprobs = Some(1);
    let generated = outputs(engine.submit(other).collect().await);
    let synthetic = generated[0].prompt_logprobs.as_ref().unwrap();
    assert_eq!(synthetic[0], synthetic_logprobs(5, 1));
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_requests_complete() {
    let engine = paused_engine();
    let runs = (0..200u32).map(|i| {
        let mut r = EngineRequest::new(format!("r{i}"), vec![i, i + 1]);
        r.max_tokens = Some(4);
        engine.submit(r).collect::<Vec<_>>()
    });
    let all = futures::future::join_all(runs).await;
    assert!(all.iter().all(|events| events.len() == 4));
    assert_eq!(engine.stats().completed, 200);
}
