//! The engine's view in a transcript: what a frontend asked the engine for
//! each request ([`EngineView`]), with its generated values replaced.
//!
//! The mock engine already made a view's fields canonical (defaults
//! dropped, floats at f32 precision; see [`mock_engine::engine_view`]). What
//! is left is the ids a frontend makes up. In an engine request id:
//! - a value the client chose stays literal (`fixed-a-<hex>`);
//! - any other run of 8 or more hex digits becomes `<hex>`, so the form
//!   stays (`cmpl-<hex>-0-<hex>`: Python's prompt index).
//!
//! An id is not matched with the ids of the body: whether a body carries
//! one (an error answer does not) would then change the view.
//!
//! The prompt is left out: a case's views are the requests for its own
//! prompt (see [`crate::session::watch`]).
//!
//! Views are sorted by their text, so that the order in which a frontend's
//! concurrent requests (`n` > 1 fanned out) arrived does not matter.

use std::collections::BTreeMap;

use mock_engine::engine_view::EngineView;
use serde_json::{Map, Value};

use super::Normalizer;

/// The fewest hex digits that make a run a generated id part.
const GENERATED_HEX_DIGITS: usize = 8;

impl Normalizer {
    /// `views`, each as one JSON object: `request_id` and the fields sent.
    pub fn engine_views(&self, views: &[EngineView]) -> Vec<Value> {
        let mut out: Vec<Value> = views.iter().map(|v| self.engine_view(v)).collect();
        out.sort_by_cached_key(Value::to_string);
        out
    }

    fn engine_view(&self, view: &EngineView) -> Value {
        let mut fields: BTreeMap<&str, Value> = view
            .fields
            .iter()
            .map(|(name, value)| match (name.as_str(), value) {
                ("external_req_id", Value::String(id)) => {
                    (name.as_str(), Value::String(self.engine_request_id(id)))
                }
                _ => (name.as_str(), value.clone()),
            })
            .collect();
        fields.insert(
            "request_id",
            Value::String(self.engine_request_id(&view.request_id)),
        );
        Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect::<Map<_, _>>(),
        )
    }

    /// An engine request id with its generated parts replaced (see the
    /// module docs).
    fn engine_request_id(&self, id: &str) -> String {
        let mut pieces = vec![Piece::Open(id.to_string())];
        for chosen in &self.client.request_ids {
            pieces = split(pieces, chosen);
        }
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Open(text) => hex_runs_replaced(&text),
                Piece::Fixed(text) => text,
            })
            .collect()
    }
}

/// Part of an id: still to be scanned, or already decided.
enum Piece {
    Open(String),
    Fixed(String),
}

/// Splits every open piece around `needle`, which stays as it is.
fn split(pieces: Vec<Piece>, needle: &str) -> Vec<Piece> {
    if needle.is_empty() {
        return pieces;
    }
    let mut out = Vec::new();
    for piece in pieces {
        let Piece::Open(text) = piece else {
            out.push(piece);
            continue;
        };
        let mut rest = text.as_str();
        while let Some(at) = rest.find(needle) {
            if at > 0 {
                out.push(Piece::Open(rest[..at].to_string()));
            }
            out.push(Piece::Fixed(needle.to_string()));
            rest = &rest[at + needle.len()..];
        }
        if !rest.is_empty() {
            out.push(Piece::Open(rest.to_string()));
        }
    }
    out
}

/// `text` with every run of [`GENERATED_HEX_DIGITS`] or more hex digits
/// (bounded by anything not alphanumeric) as `<hex>`.
fn hex_runs_replaced(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        // A random suffix may be all decimal digits by chance (vllm-rs's
        // 8 hex digits are, one time in 43): digits count too.
        let generated =
            word.len() >= GENERATED_HEX_DIGITS && word.chars().all(|c| c.is_ascii_hexdigit());
        if generated {
            out.push_str("<hex>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::ClientValues;
    use serde_json::json;

    fn view(request_id: &str, fields: Value) -> EngineView {
        EngineView {
            request_id: request_id.into(),
            prompt_token_ids: vec![1],
            fields: serde_json::from_value(fields).unwrap(),
        }
    }

    #[test]
    fn generated_hex_goes_and_what_the_client_chose_stays() {
        let n = Normalizer::new(ClientValues {
            request_ids: vec!["fixed-abcdef0123".into()],
        });
        let views = n.engine_views(&[view(
            "fixed-abcdef0123-9ebff8f9",
            json!({"external_req_id": "fixed-abcdef0123"}),
        )]);
        assert_eq!(
            views,
            [
                json!({"request_id": "fixed-abcdef0123-<hex>", "external_req_id": "fixed-abcdef0123"})
            ]
        );
    }

    #[test]
    fn the_form_of_a_generated_id_stays_and_views_come_sorted() {
        let n = Normalizer::new(ClientValues::default());
        let views = n.engine_views(&[
            view("1_chatcmpl-d6dcd233-414e437e", json!({})),
            view("cmpl-a3ed646faefe3598-0-82a68306", json!({})),
            view("0_chatcmpl-d6dcd233-9f8f058a", json!({})),
        ]);
        assert_eq!(
            views,
            [
                json!({"request_id": "0_chatcmpl-<hex>-<hex>"}),
                json!({"request_id": "1_chatcmpl-<hex>-<hex>"}),
                json!({"request_id": "cmpl-<hex>-0-<hex>"}),
            ]
        );
    }

    #[test]
    fn short_words_are_not_ids_and_a_suffix_of_digits_is() {
        assert_eq!(hex_runs_replaced("req-29013852-0"), "req-<hex>-0");
        assert_eq!(hex_runs_replaced("req-1234567-abc"), "req-1234567-abc");
        assert_eq!(hex_runs_replaced("deadbeef_cafe"), "<hex>_cafe");
    }
}
