//! What a stream amounts to, whatever its chunking: per choice its token
//! ids, text, roles and finish reason, then usage, errors and `[DONE]`s.
//! Diff, snapshots and the recording's fidelity compare streams by it even
//! when a server merged engine steps into fewer chunks; the fuzz oracle sums
//! a stream with it as it walks the events.
//!
//! ```
//! use harness::normalize::EventData;
//! use harness::stream_summary::StreamSummary;
//!
//! let events: Vec<EventData> = [
//!     r#"{"choices":[{"index":0,"text":" t5","token_ids":[5]}]}"#,
//!     r#"{"choices":[{"index":0,"text":" t6","token_ids":[6],"finish_reason":"stop"}]}"#,
//!     "[DONE]",
//! ]
//! .iter()
//! .map(|d| EventData::parse(d))
//! .collect();
//! let s = StreamSummary::of(&events);
//! assert_eq!(s.token_ids(0), [5, 6]);
//! assert_eq!((s.text_of(0), s.finish_reason(0)), (" t5 t6", Some("stop")));
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::normalize::EventData;

/// What a stream amounts to, whatever its chunking: compared even when a
/// server merged engine steps into fewer chunks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamSummary {
    /// Token ids per choice index, concatenated over all chunks.
    pub tokens: BTreeMap<u64, Vec<Value>>,
    /// Text per choice index, concatenated over all chunks: a completion's
    /// `text`, a chat delta's `content`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub text: BTreeMap<u64, String>,
    /// The chat roles each choice's deltas announced, in order.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<u64, Vec<Value>>,
    pub finish_reasons: BTreeMap<u64, Value>,
    /// The usage of the last event that had one.
    pub usage: Option<Value>,
    pub errors: Vec<Value>,
    pub done_events: usize,
    pub chunks: usize,
}

impl StreamSummary {
    pub fn of(events: &[EventData]) -> Self {
        let mut summary = Self::default();
        for event in events {
            summary.add(event);
        }
        summary
    }

    /// Adds one event: the oracle sums a stream as it walks it, checking
    /// the order of events, with this same summary.
    pub fn add(&mut self, event: &EventData) {
        match event {
            EventData::Done => self.done_events += 1,
            EventData::Text(_) => {}
            EventData::Json(v) => self.add_json(v),
        }
    }

    fn add_json(&mut self, v: &Value) {
        if let Some(e) = v.get("error") {
            self.errors.push(e.clone());
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let choices = v.get("choices").and_then(Value::as_array);
        if choices.is_some_and(|c| !c.is_empty()) {
            self.chunks += 1;
        }
        for choice in choices.into_iter().flatten() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            if let Some(ids) = choice.get("token_ids").and_then(Value::as_array) {
                self.tokens
                    .entry(index)
                    .or_default()
                    .extend(ids.iter().cloned());
            }
            if let Some(text) = crate::endpoint::choice_text(choice) {
                self.text.entry(index).or_default().push_str(text);
            }
            if let Some(role) = choice.get("delta").and_then(|d| d.get("role")) {
                self.roles.entry(index).or_default().push(role.clone());
            }
            if let Some(f) = choice.get("finish_reason").filter(|f| !f.is_null()) {
                self.finish_reasons.insert(index, f.clone());
            }
        }
    }

    /// Choice `index`'s token ids so far, as numbers.
    pub fn token_ids(&self, index: u64) -> Vec<u64> {
        self.tokens
            .get(&index)
            .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }

    /// Choice `index`'s text so far.
    pub fn text_of(&self, index: u64) -> &str {
        self.text.get(&index).map_or("", String::as_str)
    }

    /// Choice `index`'s finish reason, when it is a string.
    pub fn finish_reason(&self, index: u64) -> Option<&str> {
        self.finish_reasons.get(&index).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn summary_concatenates_tokens_across_chunks() {
        let events: Vec<EventData> = [
            r#"{"choices":[{"index":0,"token_ids":[1,2]}]}"#,
            r#"{"choices":[{"index":0,"token_ids":[3],"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":2}}"#,
            "[DONE]",
        ]
        .iter()
        .map(|d| EventData::parse(d))
        .collect();
        let s = StreamSummary::of(&events);
        assert_eq!(s.tokens[&0], [json!(1), json!(2), json!(3)]);
        assert_eq!(s.finish_reasons[&0], json!("stop"));
        assert!(s.text.is_empty(), "generate chunks carry no text");
        assert_eq!(s.usage, Some(json!({"prompt_tokens": 2})));
        assert_eq!((s.done_events, s.chunks), (1, 2));
    }

    #[test]
    fn summary_concatenates_completion_text_and_chat_deltas() {
        let events = |data: &[&str]| -> Vec<EventData> {
            data.iter().map(|d| EventData::parse(d)).collect()
        };
        let s = StreamSummary::of(&events(&[
            r#"{"choices":[{"index":0,"text":"t5"}]}"#,
            r#"{"choices":[{"index":0,"text":" é","finish_reason":"length"}]}"#,
        ]));
        assert_eq!(s.text[&0], "t5 é");
        let s = StreamSummary::of(&events(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"t5"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" t6"},"finish_reason":"stop"}]}"#,
        ]));
        assert_eq!(s.text[&0], "t5 t6");
        assert_eq!(s.roles[&0], vec![json!("assistant")]);
    }
}
