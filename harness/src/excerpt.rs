//! Bounded excerpts of what a case produced.
//!
//! A target may send up to the capture cap (16 MiB) per case, and a diff or a
//! list of differences against such a body is as large again. Kept whole for
//! every case, a flooding target would make the run's memory, its terminal
//! output and its reports grow with the corpus (gigabytes for the full one).
//! So what a case keeps after it has been judged is cut to a budget, and
//! every cut says what it left out: `… truncated: N bytes more`.
//!
//! ```
//! use harness::excerpt;
//!
//! let mut text = "x".repeat(100);
//! assert_eq!(excerpt::truncate(&mut text, 10), 90);
//! assert!(text.starts_with("xxxxxxxxxx\n… truncated: 90 bytes more"));
//! ```

use serde_json::Value;

use crate::normalize::{Body, EventData, Transcript};

/// What a failing case keeps of its transcript (JSON report, memory).
pub const KEPT_TRANSCRIPT_BYTES: usize = 128 << 10;
/// What is transcribed of a body that went past the capture cap: the case
/// is an error whatever the body says, so its start is evidence enough, and
/// small events parsed as JSON take ten times their bytes in memory.
pub const KEPT_FLOOD_BYTES: usize = 16 << 10;
/// What a case keeps of each text: its diff, its snapshot diff.
pub const KEPT_TEXT_BYTES: usize = 64 << 10;
/// What a case keeps of its reason (an error and a log tail).
pub const KEPT_REASON_BYTES: usize = 16 << 10;
/// What a case keeps of its list of differences, all together.
pub const KEPT_DIFFERENCES_BYTES: usize = 32 << 10;
/// What one value in a difference keeps.
pub const KEPT_VALUE_BYTES: usize = 2 << 10;
/// What the terminal and a JUnit test case show of one case.
pub const PRINTED_CASE_BYTES: usize = 64 << 10;

/// The note that ends a cut text.
pub fn note(more: usize) -> String {
    format!("… truncated: {more} bytes more")
}

/// Cuts `text` to at most `max` bytes (at a character boundary) and appends
/// the note on its own line; returns how many bytes were cut (0: untouched).
pub fn truncate(text: &mut String, max: usize) -> usize {
    if text.len() <= max {
        return 0;
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let more = text.len() - at;
    text.truncate(at);
    text.push('\n');
    text.push_str(&note(more));
    // `truncate` keeps the allocation: without this, a cut 16 MiB diff
    // would still hold its 16 MiB for the rest of the run.
    text.shrink_to_fit();
    more
}

/// `text` cut to `max` bytes, with the note.
pub fn cut(text: &str, max: usize) -> String {
    let mut at = max.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let mut out = text[..at].to_string();
    if at < text.len() {
        out.push('\n');
        out.push_str(&note(text.len() - at));
    }
    out
}

/// Keeps the leading items of `items` whose sizes fit in `max` bytes
/// together (a single item larger than that is cut); the rest are replaced
/// by one line that counts them. Returns how many bytes were left out.
pub fn truncate_lines(items: &mut Vec<String>, max: usize) -> usize {
    let mut used = 0;
    for i in 0..items.len() {
        let len = items[i].len();
        if used + len <= max {
            used += len;
            continue;
        }
        // The item that crosses the budget keeps its beginning, if any
        // budget is left for it.
        let left = max - used;
        let (mut more, keep) = if left > 0 {
            (truncate(&mut items[i], left), i + 1)
        } else {
            (0, i)
        };
        let dropped = items.len() - keep;
        more += items.drain(keep..).map(|s| s.len()).sum::<usize>();
        if dropped > 0 {
            items.push(format!("… truncated: {dropped} more, {more} bytes more"));
        }
        items.shrink_to_fit();
        return more;
    }
    0
}

/// Cuts a transcript to about `max` bytes: long bodies, events, notes and
/// key orders are cut or dropped, each with a note in its place. Returns how
/// many bytes were left out (0: untouched).
pub fn truncate_transcript(transcript: &mut Transcript, max: usize) -> usize {
    // Headers are bounded by the HTTP client; the rest shares the budget:
    // the body most of it, the lexer's notes and key orders a quarter each.
    let mut more = truncate_lines(&mut transcript.notes, max / 4);
    more += truncate_lines(&mut transcript.key_order, max / 4);
    if let Some(error) = &mut transcript.error {
        more += truncate(error, KEPT_REASON_BYTES);
    }
    let max = max / 2;
    match &mut transcript.body {
        Body::Empty => {}
        Body::Text(text) => more += truncate(text, max),
        Body::Json(value) => {
            let text = value.to_string();
            if text.len() > max {
                more += text.len() - max;
                transcript.body = Body::Text(cut(&text, max));
            }
        }
        Body::Events(events) => more += truncate_events(events, max),
    }
    more
}

fn truncate_events(events: &mut Vec<EventData>, max: usize) -> usize {
    let text = |e: &EventData| match e {
        EventData::Json(v) => v.to_string(),
        EventData::Text(t) => t.clone(),
        EventData::Done => "[DONE]".to_string(),
    };
    let mut used = 0;
    for i in 0..events.len() {
        let len = match &events[i] {
            EventData::Text(t) => t.len(),
            e => text(e).len(),
        };
        if used + len <= max {
            used += len;
            continue;
        }
        // The event that crosses the budget keeps its beginning, as text,
        // if any budget is left for it.
        let left = max - used;
        let (mut more, keep) = if left > 0 {
            let whole = text(&events[i]);
            events[i] = EventData::Text(cut(&whole, left));
            (whole.len() - left, i + 1)
        } else {
            (0, i)
        };
        let dropped = events.len() - keep;
        more += events
            .drain(keep..)
            .map(|e| match e {
                EventData::Text(t) => t.len(),
                e => text(&e).len(),
            })
            .sum::<usize>();
        if dropped > 0 {
            events.push(EventData::Text(format!(
                "… truncated: {dropped} more events, {more} bytes more"
            )));
        }
        events.shrink_to_fit();
        return more;
    }
    0
}

/// A value of a difference, cut to `max` bytes of its JSON text (then a
/// string holding that text and the note).
pub fn value(value: &mut Value, max: usize) -> usize {
    let text = value.to_string();
    if text.len() <= max {
        return 0;
    }
    *value = Value::String(cut(&text, max));
    text.len() - max
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn short_texts_are_untouched() {
        let mut t = "short".to_string();
        assert_eq!(truncate(&mut t, 10), 0);
        assert_eq!(t, "short");
        assert_eq!(cut("short", 10), "short");
    }

    #[test]
    fn cuts_at_a_character_boundary() {
        let mut t = "ééé".to_string(); // 6 bytes
        assert_eq!(truncate(&mut t, 3), 4);
        assert_eq!(t, "é\n… truncated: 4 bytes more");
        assert_eq!(t.capacity(), t.len(), "the cut text holds no more memory");
    }

    #[test]
    fn long_lists_keep_their_head_and_count_the_rest() {
        let mut items: Vec<String> = (0..100).map(|i| format!("note {i:03}")).collect();
        let more = truncate_lines(&mut items, 80);
        assert_eq!(items.len(), 11, "{items:?}");
        assert_eq!(items[9], "note 009");
        assert_eq!(items[10], "… truncated: 90 more, 720 bytes more");
        assert_eq!(more, 720);
        let mut one = vec!["y".repeat(100)];
        assert_eq!(truncate_lines(&mut one, 10), 90);
        assert_eq!(one, ["yyyyyyyyyy\n… truncated: 90 bytes more"]);
    }

    #[test]
    fn a_flooded_transcript_is_cut_to_its_budget() {
        let garbage = "garbage".repeat(9000);
        let mut transcript = Transcript {
            status: Some(200),
            headers: BTreeMap::new(),
            body: Body::Events(vec![EventData::Text(garbage.clone()); 266]),
            notes: vec!["strict client: differs".to_string(); 5000],
            key_order: Vec::new(),
            error: Some("the body exceeded 16777216 bytes".into()),
            engine: None,
        };
        let before = serde_json::to_string(&transcript).unwrap().len();
        let more = truncate_transcript(&mut transcript, KEPT_TRANSCRIPT_BYTES);
        let after = serde_json::to_string(&transcript).unwrap().len();
        assert!(before > 16_000_000, "{before}");
        assert!(after < KEPT_TRANSCRIPT_BYTES + 4096, "{after}");
        // Counted in text bytes, so without JSON quotes and escapes.
        assert!(more > (before - after) / 10 * 9, "{more} of {before}");
        let Body::Events(events) = &transcript.body else {
            panic!("still events")
        };
        let Some(EventData::Text(last)) = events.last() else {
            panic!("a note at the end")
        };
        assert!(last.starts_with("… truncated: "), "{last}");
    }

    #[test]
    fn a_normal_transcript_is_untouched() {
        let mut transcript = Transcript {
            status: Some(200),
            headers: BTreeMap::new(),
            body: Body::Events(vec![
                EventData::Json(serde_json::json!({"choices": [{"token_ids": [1, 2]}]})),
                EventData::Done,
            ]),
            notes: vec!["a note".into()],
            key_order: vec!["$: choices".into()],
            error: None,
            engine: None,
        };
        let copy = transcript.clone();
        assert_eq!(
            truncate_transcript(&mut transcript, KEPT_TRANSCRIPT_BYTES),
            0
        );
        assert_eq!(transcript, copy);
    }
}
