//! Layouts read from an install (the reader's JSON, tests/data/layouts) and
//! the start-up checks: what the mock speaks, reports and refuses.

use mock_engine::script::FinishReason;
use mock_engine::wire::{
    EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, FieldDefault, FileField, Layout,
    LayoutError, LayoutFile, Struct, VllmVersion, WireStopReason,
};
use rmpv::Value;

fn canned(name: &str) -> LayoutFile {
    let path = format!("{}/tests/data/layouts/{name}", env!("CARGO_MANIFEST_DIR"));
    LayoutFile::read(std::path::Path::new(&path)).unwrap()
}

fn output_fields(file: &mut LayoutFile) -> &mut Vec<FileField> {
    file.structs.get_mut("EngineCoreOutput").unwrap()
}

/// A finished step with everything the mock writes set.
fn finished() -> EngineCoreOutputs {
    let mut output = EngineCoreOutput::tokens("req-1", vec![5, 6]);
    output.finish_reason = Some(FinishReason::Stop);
    output.stop_reason = Some(WireStopReason::Text("\n".into()));
    EngineCoreOutputs::batch(0, vec![output], 2.5)
}

/// The round trip of every supported release: what the reader printed from
/// its installed wheel (`tests/data/layouts/v<V>.json`, written by
/// `genconform layout --vllm-version V --json`) is its hand-written table,
/// and both write the same bytes.
#[test]
fn every_wheel_reads_as_its_hand_written_table() {
    for version in VllmVersion::ALL {
        let file = canned(&format!("v{version}.json"));
        assert_eq!(file.vllm_version, version.as_str());
        let (layout, report) = file.layout().unwrap();
        let table = version.layout();
        for s in Struct::ALL {
            assert_eq!(layout.fields(s), table.fields(s), "{version} {s}");
        }
        assert!(report.unknown.is_empty(), "{version}: {report}");
        assert_eq!(
            finished().encode(layout),
            finished().encode(table),
            "{version}: same layout, same bytes"
        );
    }
}

#[test]
fn the_0_30_0_wheel_lacks_three_fields_and_is_still_spoken() {
    let (layout, report) = canned("v0.30.0.json").layout().unwrap();
    assert!(report.unknown.is_empty(), "{report}");
    assert_eq!(layout.request.len(), 21);
    assert_eq!(layout.output.len(), 17);
    assert!(Layout::position(layout.outputs, "weight_version").is_none());
    // No weight_version on the wire, and decoding does not miss it.
    let bytes = finished().encode(layout);
    let Value::Array(fields) = mock_engine::wire::from_bytes("x", &bytes).unwrap() else {
        panic!("not an array")
    };
    assert_eq!(fields.len(), 8);
    let decoded = EngineCoreOutputs::decode(layout, &bytes, &[]).unwrap();
    assert_eq!(decoded.weight_version, None);
    assert_eq!(decoded.outputs, finished().outputs);
    assert_eq!(decoded.to_value(layout), finished().to_value(layout));
}

#[test]
fn an_unknown_field_is_reported_once_and_its_default_sent() {
    let file = canned("extra-field.json");
    let (layout, report) = file.layout().unwrap();
    assert_eq!(report.unknown.len(), 1, "{report}");
    let unknown = report.unknown[0];
    assert_eq!(
        (
            unknown.class,
            unknown.name,
            unknown.position,
            unknown.default
        ),
        (Struct::Output, "debug_tag", 18, FieldDefault::Nil)
    );
    let text = report.to_string();
    assert!(text.contains("0.32.0+debug-tag"), "{text}");
    assert!(
        text.contains("unknown field EngineCoreOutput.debug_tag (position 18)"),
        "{text}"
    );
    assert!(text.contains("sends its default: nil"), "{text}");

    // Encoded with the extra field at its position, decoded back the same.
    let bytes = finished().encode(layout);
    let value = mock_engine::wire::from_bytes("x", &bytes).unwrap();
    let output = &value[1][0];
    assert_eq!(output.as_array().unwrap().len(), 19);
    assert_eq!(output[18], Value::Nil);
    assert_eq!(
        mock_engine::wire::to_bytes(&finished().to_value(layout)),
        bytes
    );
    assert_eq!(
        EngineCoreOutputs::decode(layout, &bytes, &[]).unwrap(),
        finished()
    );
    // A frontend of this build that sets the field is read, the value ignored.
    let mut theirs = value.clone();
    if let Value::Array(outer) = &mut theirs
        && let Value::Array(outputs) = &mut outer[1]
        && let Value::Array(fields) = &mut outputs[0]
    {
        fields[18] = Value::from("tagged");
    }
    let theirs = mock_engine::wire::to_bytes(&theirs);
    assert_eq!(
        EngineCoreOutputs::decode(layout, &theirs, &[]).unwrap(),
        finished()
    );
}

#[test]
fn a_moved_field_is_spoken_at_its_new_position() {
    let mut file = canned("v0.32.0.json");
    let fields = output_fields(&mut file);
    let finish = fields
        .iter()
        .position(|f| f.name == "finish_reason")
        .unwrap();
    let stop = fields.iter().position(|f| f.name == "stop_reason").unwrap();
    fields.swap(finish, stop);
    let (layout, report) = file.layout().unwrap();
    assert!(report.unknown.is_empty(), "{report}");
    let bytes = finished().encode(layout);
    let value = mock_engine::wire::from_bytes("x", &bytes).unwrap();
    let output = &value[1][0];
    assert_eq!(output[finish], Value::from("\n"), "stop_reason moved here");
    assert_eq!(
        output[stop],
        Value::from(0),
        "finish_reason (stop) moved here"
    );
    assert_eq!(
        EngineCoreOutputs::decode(layout, &bytes, &[]).unwrap(),
        finished()
    );
}

#[test]
fn a_needed_field_that_is_gone_fails_naming_field_struct_and_versions() {
    let mut file = canned("v0.32.0.json");
    file.vllm_version = "0.99.0".into();
    output_fields(&mut file).retain(|f| f.name != "finish_reason");
    let error = file.layout().unwrap_err();
    assert!(matches!(error, LayoutError::Gone { .. }), "{error:?}");
    let text = error.to_string();
    for needle in [
        "EngineCoreOutput.finish_reason",
        "gone from vLLM 0.99.0",
        "writes it",
        "0.32.0, 0.33.0",
    ] {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
    let mut file = canned("v0.32.0.json");
    file.structs
        .get_mut("EngineCoreRequest")
        .unwrap()
        .retain(|f| f.name != "sampling_params");
    let text = file.layout().unwrap_err().to_string();
    assert!(
        text.contains("EngineCoreRequest.sampling_params") && text.contains("reads it"),
        "{text}"
    );
}

#[test]
fn a_changed_default_the_mock_relies_on_fails() {
    let mut file = canned("v0.32.0.json");
    let field = output_fields(&mut file)
        .iter_mut()
        .find(|f| f.name == "finish_reason")
        .unwrap();
    field.default = Some(0.into());
    let text = file.layout().unwrap_err().to_string();
    assert!(
        text.contains("EngineCoreOutput.finish_reason") && text.contains("defaults to 0"),
        "{text}"
    );
    assert!(text.contains("relies on nil"), "{text}");
}

#[test]
fn an_output_field_without_a_default_fails() {
    let mut file = canned("v0.32.0.json");
    output_fields(&mut file).push(FileField {
        name: "must_send".into(),
        default: None,
        default_repr: None,
        default_factory: None,
    });
    let text = file.layout().unwrap_err().to_string();
    assert!(
        text.contains("EngineCoreOutput.must_send (position 18)") && text.contains("no default"),
        "{text}"
    );
    // On a request (which the mock only reads) it is merely reported.
    let mut file = canned("v0.32.0.json");
    file.structs
        .get_mut("EngineCoreRequest")
        .unwrap()
        .push(FileField {
            name: "new_required".into(),
            default: None,
            default_repr: None,
            default_factory: None,
        });
    let (layout, report) = file.layout().unwrap();
    assert_eq!(report.unknown[0].name, "new_required", "{report}");
    assert!(report.to_string().contains("ignored when read"), "{report}");
    let bytes = EngineCoreRequest::new("r", vec![1]).encode(layout);
    assert_eq!(
        EngineCoreRequest::decode(layout, &bytes).unwrap().wire_len,
        23
    );
}

#[test]
fn a_default_the_mock_cannot_send_fails_naming_it() {
    let mut file = canned("extra-field.json");
    let field = output_fields(&mut file).last_mut().unwrap();
    field.default = None;
    field.default_repr = Some("<Tag.DEBUG: 'debug'>".into());
    let text = file.layout().unwrap_err().to_string();
    assert!(
        text.contains("EngineCoreOutput.debug_tag")
            && text.contains("<Tag.DEBUG: 'debug'>")
            && text.contains("0.32.0+debug-tag"),
        "{text}"
    );
    let mut file = canned("extra-field.json");
    output_fields(&mut file).last_mut().unwrap().default = Some("text".into());
    let text = file.layout().unwrap_err().to_string();
    assert!(text.contains("defaults to \"text\""), "{text}");
}

#[test]
fn a_fixed_struct_that_changed_fails() {
    let mut file = canned("v0.32.0.json");
    file.structs.get_mut("LogprobsTensors").unwrap().pop();
    let text = file.layout().unwrap_err().to_string();
    assert!(
        text.contains("LogprobsTensors") && text.contains("fixed positions"),
        "{text}"
    );
}

#[test]
fn a_bad_layout_file_names_file_and_field() {
    let text = LayoutFile::parse(
        r#"{"vllm_version": "1", "source": "s", "structs": {"EngineCoreOutput": [{"nmae": "x"}]}}"#,
        "mine.json",
    )
    .unwrap_err()
    .to_string();
    assert!(text.contains("mine.json"), "{text}");
    assert!(text.contains("structs.EngineCoreOutput[0]"), "{text}");
    let text = LayoutFile::parse(
        r#"{"vllm_version": "1", "source": "s", "structs": {}}"#,
        "m",
    )
    .unwrap()
    .layout()
    .unwrap_err()
    .to_string();
    assert!(text.contains("no struct `EngineCoreRequest`"), "{text}");
}

#[test]
fn a_hand_written_table_writes_back_as_a_layout_file() {
    for version in VllmVersion::ALL {
        let table = version.layout();
        let mut file = LayoutFile::of(table);
        // `of` leaves the fixed structs out; the reader prints them.
        for (class, fields) in canned("v0.32.0.json").structs {
            file.structs.entry(class).or_insert(fields);
        }
        let json = serde_json::to_string(&file).unwrap();
        let (layout, _) = LayoutFile::parse(&json, "x").unwrap().layout().unwrap();
        for s in Struct::ALL {
            assert_eq!(layout.fields(s), table.fields(s), "{version} {s}");
        }
    }
}
