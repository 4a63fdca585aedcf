//! Our wire types against bytes produced by vLLM's own encoder
//! (`tests/data/capture.py`, run with the vLLM 0.32.0 and 0.33.0 venvs).

use mock_engine::core::to_wire_output;
use mock_engine::engine::EngineOutput;
use mock_engine::script::{FinishReason, LogprobEntry};
use mock_engine::wire::{
    AbortRequest, EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, HandshakeStatus,
    InitMessage, PrefillStats, ReadyResponse, StatusKind, UtilityCall, UtilityOutput, VllmVersion,
    WireError, WireStopReason,
};
use rmpv::Value;

fn captured(name: &str) -> Vec<u8> {
    captured_by(VllmVersion::V0_32_0, name)
}

fn captured_by(version: VllmVersion, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/data/v{version}/{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run tests/data/capture.py)"))
}

fn layout() -> &'static mock_engine::wire::Layout {
    VllmVersion::V0_32_0.layout()
}

#[test]
fn handshake_status_messages_match_vllm_bytes() {
    for (name, kind) in [("hello", StatusKind::Hello), ("ready", StatusKind::Ready)] {
        let bytes = captured(name);
        let ours = HandshakeStatus::remote(kind);
        assert_eq!(HandshakeStatus::decode(&bytes).unwrap(), ours, "{name}");
        assert_eq!(ours.encode(), bytes, "{name}");
    }
}

#[test]
fn init_message_decodes_and_reencodes_byte_for_byte() {
    let bytes = captured("init");
    let init = InitMessage::decode(&bytes).unwrap();
    assert_eq!(init.inputs, ["tcp://127.0.0.1:5001"]);
    assert_eq!(init.outputs, ["tcp://127.0.0.1:5002"]);
    assert_eq!(init.coordinator_input, None);
    assert_eq!(init.encode(), bytes);
}

#[test]
fn ready_response_is_the_dataclass_map_vllm_sends() {
    let bytes = captured("ready_response");
    let ours = ReadyResponse::mock(2048, 0, "0.32.0", "mock-engine");
    assert_eq!(ReadyResponse::decode(&bytes).unwrap(), ours);
    assert_eq!(ours.encode(), bytes);
}

#[test]
fn add_request_decodes_and_reencodes_byte_for_byte() {
    let bytes = captured("add_request");
    let request = EngineCoreRequest::decode(layout(), &bytes).unwrap();
    assert_eq!(request.request_id, "cmpl-abc-0-1a2b3c4d");
    assert_eq!(request.prompt_token_ids, Some(vec![1, 2, 3]));
    assert_eq!(request.arrival_time, 1700000000.25);
    assert_eq!(request.external_req_id.as_deref(), Some("cmpl-abc-0"));
    assert_eq!(request.client_index, 0);
    assert_eq!(request.wire_len, 22, "vLLM's encoder writes every field");
    let sampling = request.sampling_params.as_ref().unwrap();
    assert_eq!(
        (
            sampling.max_tokens,
            sampling.logprobs,
            sampling.prompt_logprobs
        ),
        (Some(5), Some(2), Some(1))
    );
    // Equal by value, not byte for byte: msgspec gives a Struct encoded as a
    // map (SamplingParams) a map16 header even for 8 keys; we write the
    // canonical fixmap. Both decode to the same value.
    let value = |b: &[u8]| rmpv::decode::read_value(&mut &b[..]).unwrap();
    assert_eq!(value(&request.encode(layout())), value(&bytes));
}

#[test]
fn add_request_with_trailing_fields_set() {
    let request = EngineCoreRequest::decode(layout(), &captured("add_request_long")).unwrap();
    assert_eq!(request.request_id, "r-long");
    assert_eq!(request.client_index, 1);
    assert_eq!(request.priority, 3);
    assert_eq!(request.external_req_id.as_deref(), Some("r"));
    let sampling = request.sampling_params.unwrap();
    assert_eq!(
        sampling.max_tokens, None,
        "max_tokens=None: run to the window"
    );
}

#[test]
fn abort_and_utility_call_match_vllm_bytes() {
    let bytes = captured("abort");
    let abort = AbortRequest::decode(&bytes).unwrap();
    assert_eq!(abort.0, ["cmpl-abc-0-1a2b3c4d", "other"]);
    assert_eq!(abort.encode(), bytes);

    let bytes = captured("utility_call");
    let call = UtilityCall::decode(&bytes).unwrap();
    assert_eq!(
        call,
        UtilityCall {
            client_index: 0,
            call_id: 7,
            method: "get_supported_tasks".into(),
            args: vec![],
        }
    );
    assert_eq!(call.encode(), bytes);
}

#[test]
fn token_output_matches_vllm_bytes() {
    let bytes = captured("outputs_tokens");
    let mut ours = EngineCoreOutputs::batch(
        0,
        vec![EngineCoreOutput::tokens("cmpl-abc-0-1a2b3c4d", vec![33])],
        12.5,
    );
    // These messages were encoded from constructed outputs, not by an
    // engine's step, so they carry no weight version.
    ours.weight_version = None;
    assert_eq!(
        EngineCoreOutputs::decode(layout(), &bytes, &[]).unwrap(),
        ours
    );
    assert_eq!(ours.encode(layout()), bytes);
}

#[test]
fn finished_outputs_with_stop_reasons_prefill_stats_and_kv_params_match_vllm_bytes() {
    let bytes = captured("outputs_finished");
    let mut first = EngineCoreOutput::tokens("r1", vec![44, 45]);
    first.finish_reason = Some(FinishReason::Stop);
    first.stop_reason = Some(WireStopReason::Token(44));
    first.kv_transfer_params = Some(Value::Map(vec![
        (Value::from("do_remote_prefill"), Value::Boolean(false)),
        (Value::from("remote_port"), Value::from(7)),
    ]));
    first.prefill_stats = Some(PrefillStats::local_cache_hit(3, 2));
    let mut second = EngineCoreOutput::tokens("r2", vec![]);
    second.finish_reason = Some(FinishReason::Length);
    second.stop_reason = Some(WireStopReason::Text("</s>".into()));
    let mut ours = EngineCoreOutputs::batch(0, vec![first, second], 13.0);
    // These messages were encoded from constructed outputs, not by an
    // engine's step, so they carry no weight version.
    ours.weight_version = None;
    assert_eq!(
        EngineCoreOutputs::decode(layout(), &bytes, &[]).unwrap(),
        ours
    );
    assert_eq!(ours.encode(layout()), bytes);
}

fn entry(token_id: u32, logprob: f32, rank: u32) -> LogprobEntry {
    LogprobEntry {
        token_id,
        logprob,
        rank,
    }
}

#[test]
fn logprobs_from_engine_output_match_vllm_ndarray_bytes() {
    let bytes = captured("outputs_logprobs");
    let output = EngineOutput {
        new_token_ids: vec![33, 44],
        logprobs: Some(vec![
            vec![
                entry(33, -0.125, 1),
                entry(33, -0.125, 1),
                entry(34, -2.0, 2),
            ],
            vec![entry(44, -0.5, 1), entry(44, -0.5, 1), entry(46, -2.0, 2)],
        ]),
        prompt_logprobs: Some(vec![
            vec![entry(2, -0.125, 1), entry(2, -0.125, 1)],
            vec![entry(3, -0.25, 1), entry(3, -0.25, 1)],
        ]),
        ..EngineOutput::default()
    };
    let wire = to_wire_output("lp", 3, output).unwrap();
    let mut ours = EngineCoreOutputs::batch(0, vec![wire], 14.0);
    // These messages were encoded from constructed outputs, not by an
    // engine's step, so they carry no weight version.
    ours.weight_version = None;
    assert_eq!(
        EngineCoreOutputs::decode(layout(), &bytes, &[]).unwrap(),
        ours
    );
    assert_eq!(ours.encode(layout()), bytes);
    let lists = ours.outputs[0].new_logprobs.as_ref().unwrap();
    assert_eq!(lists.logprob_token_ids.shape, [2, 3]);
    assert_eq!(
        lists.logprob_token_ids.to_i64s().unwrap(),
        [33, 33, 34, 44, 44, 46]
    );
    assert_eq!(lists.sampled_token_ranks.to_i64s().unwrap(), [1, 1]);
}

#[test]
fn utility_outputs_match_vllm_bytes() {
    let cases = [
        (
            "outputs_utility",
            UtilityOutput::success(7, Value::Array(vec![Value::from("generate")])),
            15.0,
        ),
        (
            "outputs_utility_none",
            UtilityOutput::success(8, Value::Nil),
            16.0,
        ),
    ];
    for (name, utility, timestamp) in cases {
        let bytes = captured(name);
        let ours = EngineCoreOutputs::utility(0, utility, timestamp);
        assert_eq!(ours.encode(layout()), bytes, "{name}");
        let decoded = EngineCoreOutputs::decode(layout(), &bytes, &[]).unwrap();
        assert_eq!(decoded.utility_output, ours.utility_output, "{name}");
    }
}

#[test]
fn a_longer_request_than_the_layout_fails_naming_the_version() {
    let bytes = captured("add_request");
    let mut value = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
    value
        .as_array_mut_for_test()
        .push(Value::from("a field 0.32.0 does not have"));
    let longer = mock_engine::wire::to_bytes(&value);
    let error = EngineCoreRequest::decode(layout(), &longer).unwrap_err();
    assert!(
        matches!(
            error,
            WireError::TooManyFields {
                got: 23,
                known: 22,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("--vllm-version"), "{error}");
}

#[test]
fn a_moved_field_fails_naming_the_field() {
    let bytes = captured("add_request");
    let mut value = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
    // As if a release had inserted a field before arrival_time.
    value
        .as_array_mut_for_test()
        .insert(5, Value::from("inserted"));
    value.as_array_mut_for_test().pop();
    let moved = mock_engine::wire::to_bytes(&value);
    let error = EngineCoreRequest::decode(layout(), &moved).unwrap_err();
    assert!(
        matches!(
            error,
            WireError::Field {
                field: "arrival_time",
                position: 5,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn every_supported_version_reads_the_0_32_0_bytes_or_says_why() {
    let sent = VllmVersion::V0_32_0.layout().request.len();
    for version in VllmVersion::ALL {
        let result = EngineCoreRequest::decode(version.layout(), &captured("add_request"));
        let known = version.layout().request.len();
        if known >= sent {
            assert!(result.is_ok(), "{version}: {:?}", result.err());
        } else {
            // 0.30.0 has no `kv_hints`: a 0.32.0 request is one field too long.
            let error = result.unwrap_err();
            assert!(
                matches!(error, WireError::TooManyFields { got, known: k, .. } if got == sent && k == known),
                "{version}: {error:?}"
            );
            let text = error.to_string();
            assert!(text.contains(version.as_str()), "{text}");
        }
        assert_eq!(version.as_str().parse::<VllmVersion>().unwrap(), version);
    }
    assert!("0.29.0".parse::<VllmVersion>().is_err());
}

trait ArrayMut {
    fn as_array_mut_for_test(&mut self) -> &mut Vec<Value>;
}

impl ArrayMut for Value {
    fn as_array_mut_for_test(&mut self) -> &mut Vec<Value> {
        match self {
            Value::Array(a) => a,
            other => panic!("not an array: {other}"),
        }
    }
}

#[test]
fn requests_and_handshake_are_the_same_bytes_in_0_33_0() {
    for name in [
        "hello",
        "ready",
        "init",
        "abort",
        "add_request",
        "add_request_long",
        "utility_call",
        "outputs_utility",
        "outputs_utility_none",
    ] {
        assert_eq!(
            captured_by(VllmVersion::V0_32_0, name),
            captured_by(VllmVersion::V0_33_0, name),
            "{name}"
        );
    }
}

#[test]
fn outputs_round_trip_through_the_0_33_0_layout() {
    let layout = VllmVersion::V0_33_0.layout();
    for name in ["outputs_tokens", "outputs_finished", "outputs_logprobs"] {
        let bytes = captured_by(VllmVersion::V0_33_0, name);
        let decoded = EngineCoreOutputs::decode(layout, &bytes, &[]).unwrap();
        // The same message as 0.32.0 sent, in the longer 0.33.0 layout.
        let old = captured_by(VllmVersion::V0_32_0, name);
        assert_eq!(
            EngineCoreOutputs::decode(VllmVersion::V0_32_0.layout(), &old, &[]).unwrap(),
            decoded,
            "{name}"
        );
        assert_eq!(decoded.encode(layout), bytes, "{name}");
    }
    // A 0.33.0 output read with the 0.32.0 layout is a loud error, not data.
    let bytes = captured_by(VllmVersion::V0_33_0, "outputs_tokens");
    assert!(EngineCoreOutputs::decode(VllmVersion::V0_32_0.layout(), &bytes, &[]).is_err());
}
