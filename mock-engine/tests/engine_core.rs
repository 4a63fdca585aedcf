//! The engine core against a fake frontend built from `zeromq` sockets the way
//! vLLM's frontends build theirs: a ROUTER for the handshake, a ROUTER for
//! requests, a PULL for outputs. No Python needed.

mod common;

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use common::{Bound, finish, script, step, within};
use mock_engine::core::{CoreError, CoreOptions, run_engine_core};
use mock_engine::script::FinishReason;
use mock_engine::wire::{
    AbortRequest, ENGINE_CORE_DEAD, EngineCoreRequest, RequestType, UtilityCall, VllmVersion,
    WireError,
};
use mock_engine::{Engine, EngineConfig};
use rmpv::Value;
use tokio::task::JoinHandle;

/// The fake frontend with the engine core it started.
struct Frontend {
    frontend: common::Frontend,
    core: JoinHandle<Result<(), CoreError>>,
}

impl Deref for Frontend {
    type Target = common::Frontend;
    fn deref(&self) -> &Self::Target {
        &self.frontend
    }
}

impl DerefMut for Frontend {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.frontend
    }
}

impl Frontend {
    /// Binds, starts the engine core and completes the handshake, checking
    /// every start-up message on the way.
    async fn start(engine: Engine) -> Self {
        Self::start_with(engine, |_| {}).await
    }

    async fn start_with(engine: Engine, options: impl FnOnce(&mut CoreOptions)) -> Self {
        let bound = Bound::bind().await;
        let mut opts = CoreOptions::new(bound.handshake_address.clone());
        options(&mut opts);
        let core = tokio::spawn(run_engine_core(opts, engine));
        Self {
            frontend: bound.accept().await,
            core,
        }
    }
}

#[tokio::test]
async fn scripted_request_streams_outputs_with_the_request_id_echoed() {
    let engine = Engine::new(EngineConfig::default());
    let mut cached = step(&[33]);
    cached.cached_tokens = Some(2);
    let mut last = finish(&[44], FinishReason::Stop);
    last.stop_reason = Some(mock_engine::script::StopReason::Token(44));
    engine.register(vec![1, 2, 3], script(vec![cached, last]));
    let mut frontend = Frontend::start(engine).await;

    frontend
        .add(
            "cmpl-1-abcd",
            vec![1, 2, 3],
            &[("max_tokens", 16.into()), ("logprobs", 1.into())],
        )
        .await;
    let first = frontend.next().await;
    assert_eq!(first.outputs.len(), 1);
    let out = &first.outputs[0];
    assert_eq!(out.request_id, "cmpl-1-abcd");
    assert_eq!(out.new_token_ids, [33]);
    assert_eq!(out.finish_reason, None);
    let stats = out
        .prefill_stats
        .expect("cached tokens travel as prefill stats");
    assert_eq!((stats.num_prompt_tokens, stats.num_cached_tokens), (3, 2));
    let logprobs = out.new_logprobs.as_ref().expect("logprobs were asked for");
    assert_eq!(logprobs.logprob_token_ids.shape, [1, 2]);

    let second = frontend.next().await;
    let out = &second.outputs[0];
    assert_eq!(out.new_token_ids, [44]);
    assert_eq!(out.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        out.stop_reason,
        Some(mock_engine::wire::WireStopReason::Token(44))
    );
    assert!(out.prefill_stats.is_none());
}

#[tokio::test]
async fn unscripted_prompts_get_max_tokens_from_the_generator() {
    let mut frontend = Frontend::start(Engine::default()).await;
    frontend
        .add("gen", vec![9, 9], &[("max_tokens", 3.into())])
        .await;
    let mut tokens: Vec<u32> = Vec::new();
    loop {
        let outputs = frontend.next().await;
        let out = &outputs.outputs[0];
        tokens.extend(&out.new_token_ids);
        if let Some(reason) = out.finish_reason {
            assert_eq!(reason, FinishReason::Length);
            break;
        }
    }
    assert_eq!(tokens.len(), 3);
}

#[tokio::test]
async fn utility_calls_are_answered_with_their_call_id() {
    let mut frontend = Frontend::start(Engine::default()).await;
    for (call_id, method) in [(41, "reset_mm_cache"), (42, "get_supported_tasks")] {
        let call = UtilityCall {
            client_index: 0,
            call_id,
            method: method.into(),
            args: vec![],
        };
        frontend.send(RequestType::Utility, call.encode()).await;
        let answer = frontend.next().await;
        assert!(answer.outputs.is_empty(), "a utility answer travels alone");
        let utility = answer.utility_output.unwrap();
        assert_eq!(utility.call_id, call_id);
        assert_eq!(utility.failure_message, None);
        let expected = match method {
            "get_supported_tasks" => Value::Array(vec![Value::from("generate")]),
            _ => Value::Nil,
        };
        assert_eq!(utility.result, Some(expected), "{method}");
    }
}

#[tokio::test]
async fn abort_stops_a_stalled_request_and_others_keep_running() {
    let engine = Engine::default();
    let mut stall = step(&[]);
    stall.stall = true;
    engine.register(vec![7], script(vec![step(&[1]), stall]));
    engine.register(
        vec![8],
        script(vec![step(&[2]), finish(&[3], FinishReason::Stop)]),
    );
    let mut records = engine.subscribe();
    let mut frontend = Frontend::start(engine.clone()).await;

    frontend.add("stalled", vec![7], &[]).await;
    assert_eq!(frontend.next().await.outputs[0].request_id, "stalled");
    frontend
        .send(
            RequestType::Abort,
            AbortRequest(vec!["stalled".into()]).encode(),
        )
        .await;
    let record = within("the abort record", records.recv()).await.unwrap();
    assert_eq!(record.request_id, "stalled");
    assert_eq!(record.outcome, mock_engine::engine::Outcome::Aborted);
    assert_eq!(engine.stats().aborted, 1);

    // The core still serves, and the aborted request sent nothing more.
    frontend.add("after", vec![8], &[]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(frontend.next().await.outputs[0].request_id.clone());
    }
    assert_eq!(ids, ["after", "after"]);
}

#[tokio::test]
async fn many_concurrent_requests_all_complete() {
    let engine = Engine::default();
    let mut frontend = Frontend::start(engine.clone()).await;
    for i in 0..50u32 {
        frontend
            .add(&format!("r{i}"), vec![100 + i], &[("max_tokens", 4.into())])
            .await;
    }
    let mut finished = std::collections::BTreeSet::new();
    while finished.len() < 50 {
        for out in frontend.next().await.outputs {
            if out.finish_reason.is_some() {
                assert!(
                    finished.insert(out.request_id.clone()),
                    "{} twice",
                    out.request_id
                );
            }
        }
    }
    assert_eq!(engine.stats().completed, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_loops_keep_their_order_and_one_output_per_message() {
    let engine = Engine::default();
    for i in 0..30u32 {
        let steps = (0..5).map(|t| step(&[i * 10 + t])).collect::<Vec<_>>();
        let mut steps = steps;
        steps.push(finish(&[i * 10 + 5], FinishReason::Length));
        engine.register(vec![500 + i], script(steps));
    }
    let mut frontend = Frontend::start_with(engine.clone(), |o| o.loops = 3).await;
    for i in 0..30u32 {
        frontend.add(&format!("r{i}"), vec![500 + i], &[]).await;
    }
    let mut tokens: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    let mut finished = 0;
    while finished < 30 {
        let message = frontend.next().await;
        let mut in_message = std::collections::HashSet::new();
        for out in message.outputs {
            assert!(
                in_message.insert(out.request_id.clone()),
                "two outputs of {} in one message",
                out.request_id
            );
            finished += usize::from(out.finish_reason.is_some());
            tokens
                .entry(out.request_id)
                .or_default()
                .extend(out.new_token_ids);
        }
    }
    for i in 0..30u32 {
        let expected: Vec<u32> = (0..6).map(|t| i * 10 + t).collect();
        assert_eq!(tokens[&format!("r{i}")], expected, "r{i}");
    }
    assert_eq!(engine.stats().completed, 30);
}

#[tokio::test]
async fn a_failing_script_sends_engine_core_dead_and_stops_the_core() {
    let engine = Engine::default();
    let mut fail = step(&[]);
    fail.fail = Some("scripted crash".into());
    engine.register(vec![5], script(vec![step(&[1]), fail]));
    let mut frontend = Frontend::start(engine).await;
    frontend.add("doomed", vec![5], &[]).await;
    assert_eq!(frontend.next().await.outputs[0].new_token_ids, [1]);
    let dead = frontend.next_raw().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0][..], ENGINE_CORE_DEAD);
    let result = within("the core to stop", frontend.core).await.unwrap();
    assert!(
        matches!(&result, Err(CoreError::ScriptedDeath(m)) if m == "scripted crash"),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_request_of_another_layout_fails_loudly() {
    let mut frontend = Frontend::start(Engine::default()).await;
    let layout = VllmVersion::V0_32_0.layout();
    let bytes = EngineCoreRequest::new("x", vec![1]).encode(layout);
    let Value::Array(mut fields) = rmpv::decode::read_value(&mut &bytes[..]).unwrap() else {
        panic!("a request is an array");
    };
    fields.push(Value::from("a field from a later release"));
    frontend
        .send(
            RequestType::Add,
            mock_engine::wire::to_bytes(&Value::Array(fields)),
        )
        .await;
    let dead = frontend.next_raw().await;
    assert_eq!(&dead[0][..], ENGINE_CORE_DEAD);
    let result = within("the core to stop", frontend.core).await.unwrap();
    let Err(CoreError::Wire(WireError::TooManyFields { got, known, .. })) = result else {
        panic!("expected a layout error, got {result:?}");
    };
    assert_eq!((got, known), (23, 22));
}

#[tokio::test]
async fn no_frontend_means_a_handshake_timeout_naming_the_address() {
    // A port nobody listens on: bind one, then free it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut opts = CoreOptions::new(address.clone());
    opts.handshake_timeout = Duration::from_millis(500);
    let result = within("the timeout", run_engine_core(opts, Engine::default())).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, CoreError::HandshakeTimeout { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&address), "{error}");
}
