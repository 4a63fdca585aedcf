//! One test per lexical rule and per note, then properties over hostile input.

use std::time::Duration;

use proptest::prelude::*;

use super::strict::{self, Discrepancy, StrictEnd};
use super::*;

fn one(body: &[u8]) -> LexedBody {
    lex(&[body])
}

const VLLM: &[u8] = b"data: {\"token_ids\":[1,2]}\n\ndata: {\"token_ids\":[],\"finish_reason\":\"length\"}\n\ndata: [DONE]\n\n";

#[test]
fn a_vllm_stream_has_three_events_and_nothing_to_note() {
    let t = one(VLLM);
    assert_eq!(
        t.data(),
        [
            "{\"token_ids\":[1,2]}",
            "{\"token_ids\":[],\"finish_reason\":\"length\"}",
            "[DONE]"
        ]
    );
    assert!(
        t.events
            .iter()
            .all(|e| e.event_type == "message" && e.id.is_none())
    );
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    assert_eq!(t.lines.len(), 6);
    assert!(t.lines.iter().all(|l| l.ending == LineEnding::Lf));
    assert_eq!(t.lines[1].kind, LineKind::Blank);
    assert_eq!(
        t.lines[4].kind,
        LineKind::Field {
            name: "data".into(),
            value: "[DONE]".into(),
            separator: Separator::ColonSpace
        }
    );
    assert_eq!((t.events[2].first_line, t.events[2].last_line), (5, 6));
    assert_eq!(t.body_len, VLLM.len());
}

#[test]
fn empty_body_is_an_empty_transcript() {
    let t = lex::<&[u8]>(&[]);
    assert_eq!(t, LexedBody::default());
    let t = lex(&[b"".as_slice(), b""]);
    assert!(t.lines.is_empty() && t.events.is_empty() && t.notes.is_empty());
    assert_eq!(t.chunk_count, 2);
}

#[test]
fn crlf_and_cr_endings_are_lines_and_are_noted_once_each() {
    let t = one(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n");
    assert_eq!(t.data(), ["a", "b", "c"]);
    let endings: Vec<_> = t.lines.iter().map(|l| l.ending).collect();
    use LineEnding::*;
    assert_eq!(endings, [CrLf, CrLf, Cr, Cr, Lf, Lf]);
    assert_eq!(
        t.notes,
        [
            Note::LineEndings {
                ending: CrLf,
                count: 2,
                first_line: 1
            },
            Note::LineEndings {
                ending: Cr,
                count: 2,
                first_line: 3
            },
        ]
    );
}

#[test]
fn a_cr_at_the_end_of_the_body_ends_the_line() {
    let t = one(b"data: a\r\r");
    assert_eq!(t.data(), ["a"]);
    assert!(
        !t.notes
            .iter()
            .any(|n| matches!(n, Note::UnterminatedLine { .. }))
    );
}

#[test]
fn crlf_split_between_chunks_is_one_line_ending() {
    let t = lex(&[b"data: a\r".as_slice(), b"\n\r\n"]);
    assert_eq!(t.lines.len(), 2);
    assert_eq!(t.lines[0].ending, LineEnding::CrLf);
    assert_eq!((t.lines[0].first_chunk, t.lines[0].last_chunk), (0, 1));
    assert!(t.lines[0].is_split());
    assert_eq!(t.data(), ["a"]);
}

#[test]
fn a_leading_bom_is_stripped_and_noted_but_only_one() {
    let t = lex(&[b"\xEF\xBB".as_slice(), b"\xBFdata: a\n\n"]);
    assert_eq!(t.notes[0], Note::Bom);
    assert_eq!(t.data(), ["a"]);
    assert_eq!(t.lines[0].offset, 3);

    // A second BOM belongs to the first line's field name, so `data` is
    // not recognised and nothing is dispatched.
    let t = one(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n");
    assert!(t.events.is_empty());
    assert!(t.notes.iter().any(|n| matches!(n,
        Note::OtherField { field, known: false, .. } if field == "\u{feff}data")));
}

#[test]
fn comments_are_counted_not_dispatched() {
    let t = one(b": keep-alive\n\n:x\ndata: a\n\n");
    assert_eq!(t.data(), ["a"]);
    assert_eq!(
        t.notes,
        [Note::Comments {
            count: 2,
            first_line: 1,
            first_text: " keep-alive".into()
        }]
    );
    assert_eq!(
        t.lines[0].kind,
        LineKind::Comment {
            text: " keep-alive".into()
        }
    );
}

#[test]
fn only_one_space_after_the_colon_is_removed() {
    let t = one(b"data:a\ndata:  b\ndata:\n\n");
    assert_eq!(t.data(), ["a\n b\n"]);
    assert_eq!(
        t.notes,
        [Note::NoSpaceAfterColon {
            field: "data".into(),
            count: 2,
            first_line: 1
        }]
    );
    assert!(matches!(
        &t.lines[1].kind,
        LineKind::Field { value, separator: Separator::ColonSpace, .. } if value == " b"
    ));
}

#[test]
fn a_field_without_colon_has_an_empty_value() {
    let t = one(b"data\n\n");
    assert_eq!(t.data(), [""]);
    assert_eq!(
        t.notes,
        [
            Note::NoColon {
                field: "data".into(),
                count: 1,
                first_line: 1
            },
            Note::EmptyData { blank_line: 2 },
        ]
    );
}

#[test]
fn data_lines_join_with_lf_and_only_the_last_lf_is_removed() {
    let t = one(b"data: a\ndata: b\ndata:\n\n");
    assert_eq!(t.data(), ["a\nb\n"]);
}

#[test]
fn event_id_and_retry_fields_are_applied_and_noted() {
    let t = one(b"event: usage\nid: 7\nretry: 1500\ndata: a\n\ndata: b\n\n");
    let (a, b) = (&t.events[0], &t.events[1]);
    assert_eq!(a.event_type, "usage");
    assert_eq!(a.retry, Some(1500));
    assert_eq!(a.fields.len(), 3);
    assert_eq!(
        (a.fields[0].name.as_str(), a.fields[0].value.as_str()),
        ("event", "usage")
    );
    // The event type is per event, the last event id persists (spec).
    assert_eq!(b.event_type, "message");
    assert_eq!(b.id.as_deref(), Some("7"));
    assert_eq!(b.retry, None);
    let names: Vec<_> = t
        .notes
        .iter()
        .map(|n| match n {
            Note::OtherField {
                field,
                known: true,
                count: 1,
                ..
            } => field.as_str(),
            other => panic!("unexpected note {other:?}"),
        })
        .collect();
    assert_eq!(names, ["event", "id", "retry"]);
}

#[test]
fn unknown_fields_are_ignored_but_noted() {
    let t = one(b"foo: bar\ndata: a\n\n");
    assert_eq!(t.data(), ["a"]);
    assert_eq!(
        t.notes,
        [Note::OtherField {
            field: "foo".into(),
            known: false,
            count: 1,
            first_line: 1
        }]
    );
}

#[test]
fn an_id_with_nul_is_ignored() {
    let t = one(b"id: 1\n\ndata: a\nid: x\0y\n\n");
    assert_eq!(t.events[0].id.as_deref(), Some("1"));
    assert!(t.notes.contains(&Note::IdWithNul { line: 4 }));
}

#[test]
fn retry_must_be_ascii_digits() {
    for bad in ["+5", "", "1.5", " 5", "99999999999999999999999"] {
        let body = format!("retry: {bad}\ndata: a\n\n");
        let t = one(body.as_bytes());
        assert_eq!(t.events[0].retry, None, "{bad:?}");
        assert!(
            t.notes.contains(&Note::InvalidRetry {
                line: 1,
                value: bad.into()
            }),
            "{bad:?}: {:?}",
            t.notes
        );
    }
}

#[test]
fn fields_without_data_dispatch_nothing_and_reset_the_type() {
    let t = one(b"event: x\n\ndata: a\n\n");
    assert_eq!(t.events.len(), 1);
    assert_eq!(t.events[0].event_type, "message");
    assert!(t.notes.contains(&Note::FieldsWithoutData {
        first_line: 1,
        blank_line: 2
    }));
}

#[test]
fn an_unterminated_last_event_is_discarded_and_noted() {
    let t = one(b"data: a\n\ndata: b\ndata: c\n");
    assert_eq!(t.data(), ["a"]);
    assert_eq!(
        t.notes,
        [Note::UnterminatedEvent {
            first_line: 3,
            data_lines: 2
        }]
    );
}

#[test]
fn an_unterminated_last_line_is_discarded_and_noted() {
    let t = one(b"data: a\n\ndata: b");
    assert_eq!(t.data(), ["a"]);
    assert_eq!(t.lines[2].ending, LineEnding::None);
    assert_eq!(
        t.notes,
        [
            Note::UnterminatedLine {
                line: 3,
                text: "data: b".into()
            },
            Note::UnterminatedEvent {
                first_line: 3,
                data_lines: 1
            },
        ]
    );
    // A trailing partial comment is lost too, but no event was pending.
    let t = one(b"data: a\n\n: ping");
    assert_eq!(
        t.notes,
        [Note::UnterminatedLine {
            line: 3,
            text: ": ping".into()
        }]
    );
}

#[test]
fn bytes_after_done_and_a_second_done_are_noted() {
    let t = one(b"data: [DONE]\n\n\ndata: [DONE]\n\n");
    assert_eq!(t.data(), ["[DONE]", "[DONE]"]);
    assert_eq!(
        t.notes,
        [
            Note::RepeatedDone { blank_line: 5 },
            Note::BytesAfterDone {
                bytes: 15,
                first_line: 3
            },
        ]
    );
    let t = one(b"data: [DONE]\n\n");
    assert!(t.notes.is_empty());
}

#[test]
fn invalid_utf8_is_replaced_and_kept_raw() {
    let t = one(b"data: a\xFFb\xE2\x82\n\n");
    assert_eq!(t.data(), ["a\u{FFFD}b\u{FFFD}"]);
    assert_eq!(t.lines[0].raw, b"data: a\xFFb\xE2\x82");
    assert_eq!(
        t.notes,
        [Note::InvalidUtf8 {
            count: 1,
            first_line: 1
        }]
    );
    let json = serde_json::to_value(&t.lines).unwrap();
    assert_eq!(json[0]["raw"], "data: a\\xffb\\xe2\\x82");
    assert!(
        json[1].get("raw").is_none(),
        "valid lines carry no raw copy"
    );
}

#[test]
fn events_split_across_chunks_are_noted_with_their_chunks() {
    let chunks: [&[u8]; 5] = [b"data: a\n", b"", b"\ndata: b\n\n", b"data: c", b"\n\n"];
    let t = lex(&chunks);
    assert_eq!(t.data(), ["a", "b", "c"]);
    let spans: Vec<_> = t
        .events
        .iter()
        .map(|e| (e.first_chunk, e.last_chunk))
        .collect();
    assert_eq!(spans, [(0, 2), (2, 2), (3, 4)]);
    assert_eq!(
        t.notes,
        [Note::SplitEvents {
            count: 2,
            first_line: 1
        }]
    );
}

#[test]
fn notes_read_as_sentences() {
    let t = one(b"\xEF\xBB\xBFdata:x\r\n\r\ndata: [DONE]\n\nextra");
    assert_eq!(
        t.note_lines(),
        [
            "the body starts with a UTF-8 byte order mark (stripped, as the spec says)",
            "2 lines ending in CRLF (first: line 1); vLLM's servers end lines with LF",
            "`data:` with no space before the value on 1 line (first: line 1); the value starts right after the colon",
            "line 5 (`extra`) has no line ending at the end of the body; the spec discards it",
            "the body ends inside an event (from line 5, 0 data lines) with no blank line after it; the spec discards it",
            "5 bytes after the `[DONE]` event (from line 5)",
        ]
    );
}

#[test]
fn transcript_serializes_with_tagged_kinds() {
    let t = one(b"data: a\n\n");
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(json["lines"][0]["kind"]["kind"], "field");
    assert_eq!(json["lines"][0]["kind"]["separator"], "colon_space");
    assert_eq!(json["lines"][0]["ending"], "lf");
    assert_eq!(json["events"][0]["data"], "a");
    let json = serde_json::to_value(one(b"data: a").notes).unwrap();
    assert_eq!(json[0]["note"], "unterminated_line");
}

// ---- strict cross-check ----

fn strict_of(chunks: &[&[u8]]) -> (LexedBody, strict::StrictRun, Vec<Discrepancy>) {
    let theirs = strict::run_blocking(chunks, Duration::from_secs(30)).expect("strict run");
    let ours = lex(chunks);
    let found = strict::compare(&ours, &theirs);
    (ours, theirs, found)
}

#[test]
fn strict_client_agrees_on_a_vllm_stream_split_anywhere() {
    for cut in 0..=VLLM.len() {
        let (_, theirs, found) = strict_of(&[&VLLM[..cut], &VLLM[cut..]]);
        assert!(found.is_empty(), "cut at {cut}: {found:?}");
        assert_eq!(theirs.events.len(), 3);
        assert_eq!(theirs.end, StrictEnd::Eof);
    }
}

#[test]
fn strict_client_rejects_invalid_utf8_where_the_spec_replaces() {
    let (ours, theirs, found) = strict_of(&[b"data: a\n\ndata: \xFF\n\ndata: c\n\n"]);
    assert_eq!(ours.events.len(), 3);
    assert!(matches!(theirs.end, StrictEnd::Error(_)));
    assert!(matches!(found[0], Discrepancy::StrictRejected { .. }));
    assert!(found.contains(&Discrepancy::MissingInStrict {
        from_event: 1,
        count: 2,
        first_line: 3
    }));
}

#[test]
fn strict_client_rejects_an_event_of_only_unknown_fields() {
    let (ours, _, found) = strict_of(&[b"foo: bar\n\ndata: a\n\n"]);
    assert_eq!(ours.data(), ["a"]);
    assert!(
        matches!(&found[0], Discrepancy::StrictRejected { message } if message.contains("invalid event"))
    );
}

#[test]
fn strict_client_accepts_a_signed_retry() {
    let (_, _, found) = strict_of(&[b"retry: +5\ndata: a\n\n"]);
    assert_eq!(
        found,
        [Discrepancy::EventDiffers {
            event: 0,
            line: 1,
            property: "retry",
            ours: "None".into(),
            theirs: "Some(5)".into()
        }]
    );
}

#[test]
fn strict_client_also_drops_an_unterminated_event() {
    let (_, theirs, found) = strict_of(&[b"data: a\n\ndata: b"]);
    assert_eq!(theirs.end, StrictEnd::UnexpectedEof);
    assert!(found.is_empty(), "{found:?}");
    let (_, theirs, found) = strict_of(&[b"data: a\n\ndata: b\n"]);
    assert_eq!(theirs.end, StrictEnd::Eof);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn strict_client_sees_the_same_comments_and_line_endings() {
    let (_, theirs, found) = strict_of(&[b": hi\r", b"\ndata: a\r", b"\r:x\n\n"]);
    assert_eq!(theirs.comments, [" hi", "x"]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn compare_reports_what_differs() {
    let ours = one(b"data: a\n\n: c\n");
    let theirs = strict::StrictRun {
        events: vec![],
        comments: vec![],
        end: StrictEnd::UnexpectedEof,
    };
    let found = strict::compare(&ours, &theirs);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(matches!(
        found[0],
        Discrepancy::EndDiffers {
            ours_unterminated: false,
            ..
        }
    ));
    assert!(matches!(
        found[1],
        Discrepancy::MissingInStrict { count: 1, .. }
    ));
    assert!(matches!(found[2], Discrepancy::CommentsDiffer { .. }));
    assert!(found.iter().all(|d| !d.to_string().is_empty()));
}

#[test]
fn run_blocking_refuses_to_nest_in_a_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err =
        rt.block_on(async { strict::run_blocking(&[b"".as_slice()], Duration::from_secs(1)) });
    assert!(matches!(err, Err(strict::StrictRunError::InsideRuntime)));
}

// ---- properties ----

/// Bytes that exercise the grammar far more often than uniform noise does.
fn sse_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"data".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"event".to_vec()),
        Just(b"id".to_vec()),
        Just(b"retry".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(b":".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"\xFF".to_vec()),
        Just(b"\xE2\x82".to_vec()),
        Just(b"x7".to_vec()),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// Cut `body` at the given fractions (sorted, deduplicated, empty chunks kept).
fn split(body: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut prev = 0;
    for a in at {
        chunks.push(body[prev..a].to_vec());
        prev = a;
    }
    chunks.push(body[prev..].to_vec());
    chunks
}

/// The parts of a transcript that must not depend on chunking.
fn chunk_free(t: &LexedBody) -> impl PartialEq + std::fmt::Debug {
    let lines: Vec<_> = t
        .lines
        .iter()
        .map(|l| {
            (
                l.number,
                l.offset,
                l.raw.clone(),
                l.text.clone(),
                l.ending,
                l.kind.clone(),
            )
        })
        .collect();
    let events: Vec<_> = t
        .events
        .iter()
        .map(|e| {
            (
                e.event_type.clone(),
                e.data.clone(),
                e.id.clone(),
                e.retry,
                e.fields.clone(),
                e.first_line,
                e.last_line,
            )
        })
        .collect();
    let notes: Vec<_> = t.notes_ignoring_chunks().cloned().collect();
    (lines, events, notes, t.body_len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lexing_never_panics_and_ignores_chunk_boundaries(
        body in prop_oneof![sse_ish(), prop::collection::vec(any::<u8>(), 0..200)],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = lex(&[&body]);
        let chunks = split(&body, &cuts);
        let parts = lex(&chunks);
        prop_assert_eq!(chunk_free(&whole), chunk_free(&parts));
        prop_assert_eq!(parts.chunk_count, chunks.len());
        // Every byte is accounted for: BOM + lines cover the body exactly.
        let covered: usize = parts.lines.iter().map(|l| l.raw.len() + match l.ending {
            LineEnding::CrLf => 2, LineEnding::Lf | LineEnding::Cr => 1, LineEnding::None => 0,
        }).sum::<usize>() + if parts.notes.first() == Some(&Note::Bom) { 3 } else { 0 };
        prop_assert_eq!(covered, body.len());
        for l in &parts.lines {
            prop_assert!(l.first_chunk <= l.last_chunk && l.last_chunk < chunks.len());
            prop_assert!(!chunks[l.first_chunk].is_empty());
        }
        for n in &parts.notes {
            prop_assert!(!n.to_string().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// On streams shaped like vLLM's (LF, `data: ` lines of printable ASCII,
    /// optional comments) split anywhere, the strict client sees what we see.
    #[test]
    fn strict_client_agrees_on_well_formed_streams(
        events in prop::collection::vec(prop::collection::vec("[ -~]{0,12}", 1..3), 0..6),
        comment in prop::option::of("[ -~]{0,8}"),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut body = String::new();
        if let Some(c) = &comment {
            body.push_str(&format!(":{c}\n"));
        }
        for lines in &events {
            for l in lines {
                body.push_str(&format!("data: {l}\n"));
            }
            body.push('\n');
        }
        let chunks = split(body.as_bytes(), &cuts);
        let theirs = strict::run_blocking(&chunks, Duration::from_secs(30)).unwrap();
        let found = strict::compare(&lex(&chunks), &theirs);
        prop_assert!(found.is_empty(), "{:?}", found);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// On hostile input the strict client never disagrees about an event it
    /// delivers: it only stops early (rejecting invalid UTF-8, or an event
    /// made only of unknown/empty fields), or reads `retry: +N` as a number.
    #[test]
    fn strict_client_only_ever_stops_early(
        body in sse_ish(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let chunks = split(&body, &cuts);
        let theirs = strict::run_blocking(&chunks, Duration::from_secs(30)).unwrap();
        let ours = lex(&chunks);
        let signed_retry = ours.lines.iter().any(|l| matches!(&l.kind,
            LineKind::Field { name, value, .. } if name == "retry" && value.starts_with('+')));
        let found = strict::compare(&ours, &theirs);
        for (i, d) in found.iter().enumerate() {
            let explained = match d {
                Discrepancy::StrictRejected { .. } => i == 0,
                Discrepancy::MissingInStrict { .. } | Discrepancy::CommentsDiffer { .. } => {
                    matches!(found[0], Discrepancy::StrictRejected { .. })
                }
                Discrepancy::EventDiffers { property: "retry", .. } => signed_retry,
                _ => false,
            };
            prop_assert!(explained, "{:?} in {:?}", d, found);
        }
    }
}
