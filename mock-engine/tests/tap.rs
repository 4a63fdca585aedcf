//! The tap between our fake frontend (tests/common) and our mock engine core:
//! every message must reach the other side unchanged and be journaled.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Bound, finish, script, step, within};
use mock_engine::Engine;
use mock_engine::core::{CoreError, CoreOptions, run_engine_core};
use mock_engine::engine::Outcome;
use mock_engine::script::FinishReason;
use mock_engine::tap::{Direction, TapError, TapEvent, TapOptions, Tapped, run_tap};
use mock_engine::wire::{
    AbortRequest, ENGINE_CORE_DEAD, EngineCoreOutputs, RequestType, VllmVersion, WireError,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// An address nobody listens on: a port bound, then freed.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", listener.local_addr().unwrap())
}

async fn next_event(journal: &mut UnboundedReceiver<TapEvent>) -> TapEvent {
    within("a journal event", journal.recv())
        .await
        .expect("the journal closed early")
}

fn outputs_of(frames: &[Bytes]) -> EngineCoreOutputs {
    EngineCoreOutputs::decode(VllmVersion::V0_32_0.layout(), &frames[0], &frames[1..]).unwrap()
}

#[tokio::test]
async fn messages_pass_through_unchanged_and_are_journaled() {
    let engine = Engine::default();
    engine.register(
        vec![1, 2, 3],
        script(vec![step(&[33]), finish(&[44], FinishReason::Stop)]),
    );
    let mut stall = step(&[]);
    stall.stall = true;
    engine.register(vec![7], script(vec![step(&[1]), stall]));
    let mut records = engine.subscribe();

    let bound = Bound::bind().await;
    let engine_handshake = free_address();
    let (journal_tx, mut journal) = unbounded_channel();
    let tap = tokio::spawn(run_tap(
        TapOptions::new(bound.handshake_address.clone(), engine_handshake.clone()),
        journal_tx,
    ));
    let core = tokio::spawn(run_engine_core(
        CoreOptions::new(engine_handshake),
        engine.clone(),
    ));
    // Every start-up message is checked on the way, through the tap.
    let mut frontend = bound.accept().await;

    // ADD, then its outputs, byte for byte as the tap recorded them.
    frontend
        .add("cmpl-1", vec![1, 2, 3], &[("max_tokens", 16.into())])
        .await;
    let mut received = Vec::new();
    loop {
        let frames = frontend.next_raw().await;
        let done = outputs_of(&frames).outputs[0].finish_reason.is_some();
        received.push(frames);
        if done {
            break;
        }
    }
    let add = next_event(&mut journal).await;
    let Tapped::Add(request) = &add.message else {
        panic!("expected ADD first, got {:?}", add.message)
    };
    assert_eq!(request.request_id, "cmpl-1");
    assert_eq!(request.prompt_token_ids, Some(vec![1, 2, 3]));
    assert_eq!(&add.frames[0][..], &[RequestType::Add.byte()]);
    let mut tokens = Vec::new();
    let mut finishes = Vec::new();
    for frames in &received {
        let event = next_event(&mut journal).await;
        assert_eq!(
            &event.frames, frames,
            "the frontend got what the tap recorded"
        );
        assert!(event.at >= add.at);
        let Tapped::Outputs(outputs) = event.message else {
            panic!("expected outputs, got {:?}", event.message)
        };
        for out in outputs.outputs {
            assert_eq!(out.request_id, "cmpl-1");
            tokens.extend(out.new_token_ids);
            finishes.extend(out.finish_reason);
        }
    }
    assert_eq!(tokens, [33, 44]);
    assert_eq!(finishes, [FinishReason::Stop]);

    // ABORT reaches the engine (it aborts the stalled request) and is journaled.
    frontend.add("stalled", vec![7], &[]).await;
    assert_eq!(frontend.next().await.outputs[0].request_id, "stalled");
    assert!(matches!(
        next_event(&mut journal).await.message,
        Tapped::Add(_)
    ));
    assert!(matches!(
        next_event(&mut journal).await.message,
        Tapped::Outputs(_)
    ));
    frontend
        .send(
            RequestType::Abort,
            AbortRequest(vec!["stalled".into()]).encode(),
        )
        .await;
    assert_eq!(
        next_event(&mut journal).await.message,
        Tapped::Abort(vec!["stalled".into()])
    );
    let aborted = loop {
        let record = within("the abort record", records.recv()).await.unwrap();
        if record.request_id == "stalled" {
            break record;
        }
    };
    assert_eq!(aborted.outcome, Outcome::Aborted);

    // A garbage frame is forwarded (the engine core dies of it) and
    // journaled as undecodable; ENGINE_CORE_DEAD comes back through the tap.
    let garbage = vec![Bytes::from_static(&[0x07]), Bytes::from_static(b"garbage")];
    frontend.send_frames(garbage.clone()).await;
    let event = next_event(&mut journal).await;
    assert_eq!(event.frames, garbage);
    let Tapped::Undecodable { direction, error } = event.message else {
        panic!("expected undecodable, got {:?}", event.message)
    };
    assert_eq!(direction, Direction::ToEngine);
    assert!(error.contains("0x07"), "{error}");
    let dead = frontend.next_raw().await;
    assert_eq!(dead, [Bytes::from_static(ENGINE_CORE_DEAD)]);
    assert_eq!(next_event(&mut journal).await.message, Tapped::EngineDead);
    let result = within("the core to stop", core).await.unwrap();
    assert!(
        matches!(
            result,
            Err(CoreError::Wire(WireError::UnknownRequestType(7)))
        ),
        "{result:?}"
    );

    // The engine is gone: the tap ends well and its journal closes.
    within("the tap to stop", tap).await.unwrap().unwrap();
    assert!(
        within("the journal to close", journal.recv())
            .await
            .is_none()
    );
}

#[tokio::test]
async fn no_engine_means_a_handshake_timeout_naming_the_stage() {
    let bound = Bound::bind().await;
    let engine_handshake = free_address();
    let mut opts = TapOptions::new(bound.handshake_address.clone(), engine_handshake.clone());
    opts.handshake_timeout = Duration::from_millis(300);
    let (journal, _events) = unbounded_channel();
    let error = within("the timeout", run_tap(opts, journal))
        .await
        .unwrap_err();
    assert!(
        matches!(error, TapError::HandshakeTimeout { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("waiting for an engine"), "{text}");
    assert!(text.contains("HELLO"), "{text}");
    assert!(text.contains(&engine_handshake), "{text}");
}

#[tokio::test]
async fn aborting_the_tap_closes_its_sockets() {
    let bound = Bound::bind().await;
    let engine_handshake = free_address();
    let addr = engine_handshake.trim_start_matches("tcp://").to_string();
    let (journal, _events) = unbounded_channel();
    let tap = tokio::spawn(run_tap(
        TapOptions::new(bound.handshake_address.clone(), engine_handshake),
        journal,
    ));
    // Listening (a connection is accepted) ...
    within("the tap to listen", async {
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tap.abort();
    assert!(tap.await.unwrap_err().is_cancelled());
    // ... and after the abort the port is free again.
    within("the tap's port to be released", async {
        while std::net::TcpListener::bind(&addr).is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
