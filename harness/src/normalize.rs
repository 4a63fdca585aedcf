//! From a raw capture to a transcript that two servers can agree on.
//!
//! - Generated values (request ids the client did not choose, timestamps)
//!   become placeholders that keep equality: the first random id seen is
//!   `<request_id#1>` wherever it appears.
//! - Values the client chose stay literal, so "the server echoed my
//!   `X-Request-Id`" is still visible in a snapshot.
//! - `null` stays distinct from an absent key; integral floats become
//!   integers so numbers compare as numbers.
//! - Key order is recorded beside the values (sorted) as one line per object
//!   shape, so it can be reported without failing a comparison.

use std::collections::BTreeMap;

use mock_engine::engine_view::EngineView;
use serde::Serialize;
use serde_json::{Map, Value};

pub mod engine;

/// Response headers that carry behaviour; the rest (date, length) is noise.
pub const HEADERS_THAT_MATTER: &[&str] = &[
    "content-type",
    "cache-control",
    "x-request-id",
    "www-authenticate",
    "x-accel-buffering",
];

/// A body, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Body {
    Empty,
    Json(Value),
    Text(String),
    Events(Vec<EventData>),
}

/// The data of one server-sent event.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum EventData {
    Json(Value),
    Done,
    Text(String),
}

impl EventData {
    pub fn parse(data: &str) -> Self {
        if data == "[DONE]" {
            return Self::Done;
        }
        match serde_json::from_str(data) {
            Ok(v) => Self::Json(v),
            Err(_) => Self::Text(data.to_string()),
        }
    }

    pub fn json(&self) -> Option<&Value> {
        match self {
            Self::Json(v) => Some(v),
            _ => None,
        }
    }
}

/// One exchange, ready to snapshot and compare.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Transcript {
    pub status: Option<u16>,
    pub headers: BTreeMap<String, String>,
    pub body: Body,
    /// Lexical notes from the SSE lexer and the strict client.
    pub notes: Vec<String>,
    /// `<object path>: key, key, ...` for each distinct key order seen at
    /// each object path, in the order the server wrote the keys.
    pub key_order: Vec<String>,
    /// Why the capture is incomplete, if it is.
    pub error: Option<String>,
    /// What the engine was asked, one object per engine request, sorted
    /// (see [`engine`]); `None` where it cannot be seen (a target whose
    /// engine the harness does not own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Vec<Value>>,
}

/// Values the client chose, which must not be replaced by placeholders.
#[derive(Debug, Clone, Default)]
pub struct ClientValues {
    pub request_ids: Vec<String>,
}

impl ClientValues {
    pub fn from_request(request: &mock_engine::script::RequestSpec) -> Self {
        let mut ids: Vec<String> = request
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, v)| v.clone())
            .collect();
        if let Some(id) = request
            .body
            .as_ref()
            .and_then(|b| b.get("request_id"))
            .and_then(Value::as_str)
        {
            ids.push(id.to_string());
        }
        ids.retain(|id| !id.is_empty());
        Self { request_ids: ids }
    }
}

/// Replaces generated values, consistently within one transcript.
#[derive(Debug, Default)]
pub struct Normalizer {
    client: ClientValues,
    ids: Vec<String>,
    shapes: BTreeMap<String, Vec<Vec<String>>>,
}

impl Normalizer {
    pub fn new(client: ClientValues) -> Self {
        Self {
            client,
            ..Self::default()
        }
    }

    fn request_id(&mut self, id: &str) -> String {
        if self
            .client
            .request_ids
            .iter()
            .any(|c| id.contains(c.as_str()))
        {
            return id.to_string();
        }
        let n = match self.ids.iter().position(|seen| seen == id) {
            Some(i) => i + 1,
            None => {
                self.ids.push(id.to_string());
                self.ids.len()
            }
        };
        format!("<request_id#{n}>")
    }

    /// `text` with every completion id in it (`cmpl-…`, `chatcmpl-…`: the
    /// prefix and the letters, digits, `-` and `_` after it) replaced as
    /// [`Normalizer::request_id`] replaces ids.
    fn completion_ids_within(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("cmpl-") {
            let start = if rest[..at].ends_with("chat") {
                at - 4
            } else {
                at
            };
            let tail = &rest[at + "cmpl-".len()..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(tail.len());
            let end = at + "cmpl-".len() + len;
            out.push_str(&rest[..start]);
            if len == 0 {
                out.push_str(&rest[start..end]);
            } else {
                out.push_str(&self.request_id(&rest[start..end]));
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    /// Normalises a JSON value found at `path` (used for key-order shapes).
    pub fn value(&mut self, path: &str, value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                // A map keyed by token ids (prompt logprobs) is data, not a
                // shape: vllm-rs writes it in hash order, which changes from
                // one process to the next.
                let keyed_by_ids = !map.is_empty() && map.keys().all(|k| k.parse::<u64>().is_ok());
                // So is a completions `top_logprobs` entry, token text to
                // logprob: vllm-rs builds it from a hash map.
                // (Generate's and chat's entries are records with a
                // `logprob` field, whose key order is a shape.)
                let keyed_by_tokens = path.ends_with(".top_logprobs[]")
                    && !map.is_empty()
                    && !map.contains_key("logprob")
                    && map.values().all(Value::is_number);
                if !keyed_by_ids && !keyed_by_tokens {
                    let order: Vec<String> = map.keys().cloned().collect();
                    let seen = self.shapes.entry(path.to_string()).or_default();
                    if !seen.contains(&order) {
                        seen.push(order);
                    }
                }
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for key in keys {
                    let v = &map[key];
                    let child = format!("{path}.{key}");
                    let normalised = match (key.as_str(), v) {
                        ("request_id", Value::String(s)) => Value::String(self.request_id(s)),
                        // A completion's or chat completion's id is made from
                        // the request id each server generates.
                        ("id", Value::String(s)) if is_completion_id(s) => {
                            Value::String(self.request_id(s))
                        }
                        // vllm-rs names the request in some error messages.
                        ("message", Value::String(s)) => Value::String(validation_lines_sorted(
                            &validation_params_sorted(&self.completion_ids_within(s)),
                        )),
                        (k, Value::Number(_)) if is_time_key(k) => Value::String("<time>".into()),
                        // Python derives it from a hash of its whole config
                        // (paths and work dir included): only its shape is
                        // the same from one machine or run to the next.
                        ("system_fingerprint", Value::String(s)) => Value::String(fingerprint(s)),
                        _ => self.value(&child, v),
                    };
                    out.insert(key.clone(), normalised);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.value(&format!("{path}[]"), v))
                    .collect(),
            ),
            Value::Number(n) => number(n),
            other => other.clone(),
        }
    }

    pub fn header(&mut self, name: &str, value: &str) -> String {
        if name == "x-request-id" {
            self.request_id(value)
        } else {
            value.to_string()
        }
    }

    /// The key-order lines gathered so far.
    pub fn key_order(&self) -> Vec<String> {
        self.shapes
            .iter()
            .flat_map(|(path, orders)| {
                orders
                    .iter()
                    .map(move |keys| format!("{path}: {}", keys.join(", ")))
            })
            .collect()
    }
}

/// vllm-rs's validation messages end with the failed rule's parameters,
/// printed from a hash map (`range [{"min": Number(1), "value": Number(0)}]`),
/// so their order changes from one process to the next: sort them.
fn validation_params_sorted(message: &str) -> String {
    let Some(at) = message.find("Validation error:") else {
        return message.to_string();
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    let mut from = at;
    while let Some(open) = rest[from..].find("[{").map(|i| from + i) {
        let Some(close) = rest[open..].find("}]").map(|i| open + i) else {
            break;
        };
        let mut params: Vec<&str> = rest[open + 2..close].split(", \"").collect();
        // Every entry but the first lost its opening quote to the split.
        let first = params.remove(0);
        let mut entries: Vec<String> = std::iter::once(first.to_string())
            .chain(params.into_iter().map(|p| format!("\"{p}")))
            .collect();
        entries.sort();
        out.push_str(&rest[..open + 2]);
        out.push_str(&entries.join(", "));
        rest = &rest[close..];
        from = 2;
    }
    out.push_str(rest);
    out
}

/// vllm-rs's validator reports every field that fails, one line each, in
/// the order of a hash map that changes from one process to the next
/// (`messages: Validation error: ...\nmax_completion_tokens: Validation
/// error: ...`): a message made only of such lines has them sorted.
fn validation_lines_sorted(message: &str) -> String {
    let mut lines: Vec<&str> = message.split('\n').collect();
    let field_error = |line: &&str| {
        line.split_once(": Validation error: ")
            .is_some_and(|(field, _)| !field.is_empty() && !field.contains(' '))
    };
    if lines.len() < 2 || !lines.iter().all(field_error) {
        return message.to_string();
    }
    lines.sort_unstable();
    lines.join("\n")
}

/// `vllm-<version>-<8 hex digits>` becomes `vllm-<version>-<hash>`; any
/// other value stays as it is, so a fingerprint of another shape (vllm-rs's
/// `vllm-<version>-nohash`, or a broken one) is still compared.
fn fingerprint(value: &str) -> String {
    if let Some(rest) = value.strip_prefix("vllm-")
        && let Some((version, hash)) = rest.rsplit_once('-')
        && !version.is_empty()
        && hash.len() == 8
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return format!("vllm-{version}-<hash>");
    }
    value.to_string()
}

fn is_completion_id(id: &str) -> bool {
    id.starts_with("cmpl-") || id.starts_with("chatcmpl-")
}

fn is_time_key(key: &str) -> bool {
    key == "created" || key.ends_with("_time") || key.ends_with("_ts") || key.contains("timestamp")
}

fn number(n: &serde_json::Number) -> Value {
    if let Some(f) = n.as_f64()
        && !n.is_i64()
        && !n.is_u64()
        && f.fract() == 0.0
        && f.abs() < 9.0e15
    {
        return Value::from(f as i64);
    }
    Value::Number(n.clone())
}

/// Builds a transcript from the parts of a capture.
pub struct TranscriptBuilder {
    normalizer: Normalizer,
    engine: Option<Result<Vec<EngineView>, String>>,
}

impl TranscriptBuilder {
    pub fn new(client: ClientValues) -> Self {
        Self {
            normalizer: Normalizer::new(client),
            engine: None,
        }
    }

    /// What the engine was asked during the exchange ([`EngineWatch::seen`]);
    /// an error becomes a note.
    ///
    /// [`EngineWatch::seen`]: crate::session::watch::EngineWatch::seen
    pub fn engine(mut self, seen: Option<Result<Vec<EngineView>, String>>) -> Self {
        self.engine = seen;
        self
    }

    /// `events`: the data of each dispatched event, when the body is an event
    /// stream; otherwise `None` and `body` is read as JSON or text.
    pub fn build(
        mut self,
        status: Option<u16>,
        headers: &[(String, String)],
        body: &[u8],
        events: Option<Vec<String>>,
        mut notes: Vec<String>,
        error: Option<String>,
    ) -> Transcript {
        let headers = headers
            .iter()
            .filter(|(n, _)| HEADERS_THAT_MATTER.contains(&n.as_str()))
            .map(|(n, v)| (n.clone(), self.normalizer.header(n, v)))
            .collect();
        let body = match events {
            Some(events) => Body::Events(
                events
                    .iter()
                    .enumerate()
                    .map(|(i, data)| match EventData::parse(data) {
                        EventData::Json(v) => {
                            EventData::Json(self.normalizer.value(&event_shape_path(i, &v), &v))
                        }
                        other => other,
                    })
                    .collect(),
            ),
            None if body.is_empty() => Body::Empty,
            None => match serde_json::from_slice::<Value>(body) {
                Ok(v) => Body::Json(self.normalizer.value("body", &v)),
                Err(_) => Body::Text(String::from_utf8_lossy(body).into_owned()),
            },
        };
        let engine = match self.engine {
            Some(Ok(views)) => Some(self.normalizer.engine_views(&views)),
            Some(Err(e)) => {
                notes.push(e);
                None
            }
            None => None,
        };
        Transcript {
            status,
            headers,
            body,
            notes,
            key_order: self.normalizer.key_order(),
            error,
            engine,
        }
    }
}

/// Events of different roles have different shapes; naming the role keeps
/// one key-order line per role instead of one per event.
fn event_shape_path(_index: usize, v: &Value) -> String {
    let role = if v.get("error").is_some() {
        "error"
    } else if v
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty())
    {
        "usage"
    } else {
        "chunk"
    };
    format!("event<{role}>")
}

/// A 200 event stream of these `data:` payloads, for tests that compare
/// transcripts.
#[cfg(test)]
pub(crate) fn stream_of(events: &[&str]) -> Transcript {
    TranscriptBuilder::new(ClientValues::default()).build(
        Some(200),
        &[],
        b"",
        Some(events.iter().map(|s| s.to_string()).collect()),
        vec![],
        None,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_config_hash_fingerprint_keeps_its_shape_and_loses_its_hash() {
        assert_eq!(fingerprint("vllm-0.32.0-ac93759a"), "vllm-0.32.0-<hash>");
        assert_eq!(fingerprint("vllm-0.32.0-91a18a14"), "vllm-0.32.0-<hash>");
        for kept in [
            "vllm-0.34.0-nohash",
            "vllm-0.32.0-ac93759",
            "vllm--ac93759a",
            "x-0.32.0-ac93759a",
            "vllm-0.32.0-ac93759g",
        ] {
            assert_eq!(fingerprint(kept), kept);
        }
        let mut n = Normalizer::new(ClientValues::default());
        let v = n.value(
            "event",
            &serde_json::json!({"system_fingerprint": "vllm-0.33.0-4ddde334"}),
        );
        assert_eq!(v["system_fingerprint"], "vllm-0.33.0-<hash>");
    }

    #[test]
    fn the_lines_of_a_many_field_validation_message_are_sorted() {
        let rs_one_run =
            "temperature: Validation error: range [x]\nmessages: Validation error: empty";
        let rs_another =
            "messages: Validation error: empty\ntemperature: Validation error: range [x]";
        assert_eq!(validation_lines_sorted(rs_one_run), rs_another);
        assert_eq!(validation_lines_sorted(rs_another), rs_another);
        // One line, or lines that are not all field errors, stay as they are.
        for kept in [
            "temperature: Validation error: range [x]",
            "b line\na line",
            "temperature: Validation error: range [x]\nand then prose: Validation error: y",
        ] {
            assert_eq!(validation_lines_sorted(kept), kept);
        }
    }

    #[test]
    fn validation_parameters_are_sorted_in_hash_ordered_messages() {
        let a = r#"max_completion_tokens: Validation error: range [{"value": Number(0), "min": Number(1)}]"#;
        let b = r#"max_completion_tokens: Validation error: range [{"min": Number(1), "value": Number(0)}]"#;
        assert_eq!(validation_params_sorted(a), b);
        assert_eq!(validation_params_sorted(b), b);
        // Two rules, and text that is not a validation message, untouched.
        let two = r#"x: Validation error: r [{"b": 1, "a": 2}], y: Validation error: s [{"d": 3, "c": 4}]"#;
        assert_eq!(
            validation_params_sorted(two),
            r#"x: Validation error: r [{"a": 2, "b": 1}], y: Validation error: s [{"c": 4, "d": 3}]"#
        );
        let plain = r#"bad [{"b": 1, "a": 2}]"#;
        assert_eq!(validation_params_sorted(plain), plain);
    }

    fn build(events: &[&str], client: ClientValues) -> Transcript {
        TranscriptBuilder::new(client).build(
            Some(200),
            &[
                ("content-type".into(), "text/event-stream".into()),
                ("date".into(), "x".into()),
            ],
            b"",
            Some(events.iter().map(|s| s.to_string()).collect()),
            vec![],
            None,
        )
    }

    #[test]
    fn random_ids_become_placeholders_that_keep_equality() {
        let t = build(
            &[
                r#"{"request_id":"ab12","choices":[]}"#,
                r#"{"request_id":"ab12"}"#,
                r#"{"request_id":"zz"}"#,
            ],
            ClientValues::default(),
        );
        let Body::Events(events) = &t.body else {
            panic!()
        };
        let ids: Vec<&Value> = events
            .iter()
            .map(|e| &e.json().unwrap()["request_id"])
            .collect();
        assert_eq!(
            ids,
            [
                &json!("<request_id#1>"),
                &json!("<request_id#1>"),
                &json!("<request_id#2>")
            ]
        );
        assert_eq!(t.headers.len(), 1, "date is noise");
    }

    #[test]
    fn completion_ids_become_placeholders_and_model_ids_stay() {
        let t = build(
            &[
                r#"{"id":"chatcmpl-50cc6699","model":"tiny","choices":[]}"#,
                r#"{"id":"chatcmpl-50cc6699","choices":[]}"#,
                r#"{"id":"cmpl-fixed-1-0","choices":[]}"#,
                r#"{"id":"tiny","choices":[]}"#,
            ],
            ClientValues {
                request_ids: vec!["fixed-1".into()],
            },
        );
        let Body::Events(events) = &t.body else {
            panic!("an event stream")
        };
        let ids: Vec<&Value> = events
            .iter()
            .filter_map(|e| e.json().and_then(|v| v.get("id")))
            .collect();
        assert_eq!(
            ids,
            [
                &json!("<request_id#1>"),
                &json!("<request_id#1>"),
                &json!("cmpl-fixed-1-0"),
                &json!("tiny")
            ]
        );
    }

    #[test]
    fn completion_ids_inside_error_messages_become_placeholders() {
        let t = build(
            &[
                r#"{"id":"cmpl-397ddb5e","choices":[]}"#,
                r#"{"error":{"message":"request `cmpl-397ddb5e` and chatcmpl-ab_1: cmpl- cmpl-fixed-1"}}"#,
            ],
            ClientValues {
                request_ids: vec!["fixed-1".into()],
            },
        );
        let Body::Events(events) = &t.body else {
            panic!("an event stream")
        };
        assert_eq!(
            events[1].json().unwrap()["error"]["message"],
            json!("request `<request_id#1>` and <request_id#2>: cmpl- cmpl-fixed-1")
        );
    }

    #[test]
    fn client_chosen_ids_stay_literal_even_when_prefixed() {
        let client = ClientValues {
            request_ids: vec!["fixed-1".into()],
        };
        let t = build(&[r#"{"request_id":"generate-tokens-fixed-1"}"#], client);
        let Body::Events(events) = &t.body else {
            panic!()
        };
        assert_eq!(
            events[0].json().unwrap()["request_id"],
            json!("generate-tokens-fixed-1")
        );
    }

    #[test]
    fn null_stays_distinct_from_absent_and_numbers_compare_as_numbers() {
        let t = build(
            &[r#"{"a":null,"n":2.0,"f":-0.5}"#, r#"{"n":2}"#],
            ClientValues::default(),
        );
        let Body::Events(events) = &t.body else {
            panic!()
        };
        let first = events[0].json().unwrap();
        assert_eq!(first.get("a"), Some(&Value::Null));
        assert_eq!(first["n"], events[1].json().unwrap()["n"]);
        assert_eq!(first["f"], json!(-0.5));
        assert!(events[1].json().unwrap().get("a").is_none());
    }

    #[test]
    fn maps_keyed_by_token_ids_have_no_key_order() {
        let mut n = Normalizer::new(ClientValues::default());
        n.value(
            "body",
            &serde_json::json!({"p": [{"17": {"rank": 1}, "3": {"rank": 2}}]}),
        );
        assert_eq!(
            n.key_order(),
            ["body: p", "body.p[].17: rank", "body.p[].3: rank"]
        );
    }

    #[test]
    fn completion_top_logprobs_maps_have_no_key_order_but_chat_entries_do() {
        let mut n = Normalizer::new(ClientValues::default());
        n.value(
            "body",
            &serde_json::json!({"logprobs": {"top_logprobs": [{"t5": -0.1, "t7": -2.0}]}}),
        );
        n.value(
            "chat",
            &serde_json::json!({"top_logprobs": [{"token": "t5", "logprob": -0.1}]}),
        );
        n.value(
            "generate",
            &serde_json::json!({"top_logprobs": [{"token_id": 5, "logprob": -0.1, "rank": 1}]}),
        );
        assert_eq!(
            n.key_order(),
            [
                "body: logprobs",
                "body.logprobs: top_logprobs",
                "chat: top_logprobs",
                "chat.top_logprobs[]: token, logprob",
                "generate: top_logprobs",
                "generate.top_logprobs[]: token_id, logprob, rank"
            ]
        );
    }

    #[test]
    fn key_order_is_recorded_and_values_sorted() {
        let t = build(&[r#"{"z":1,"a":{"y":1,"b":2}}"#], ClientValues::default());
        assert_eq!(t.key_order, ["event<chunk>: z, a", "event<chunk>.a: y, b"]);
        let Body::Events(events) = &t.body else {
            panic!()
        };
        let keys: Vec<&String> = events[0]
            .json()
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["a", "z"]);
    }
}
