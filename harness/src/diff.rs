//! Where two transcripts differ, layer by layer.
//!
//! Differences are structured (a layer, a path, a kind, both values) so the
//! divergence registry can match them, and rendered with `similar` for people.
//!
//! Chunk boundaries are compared only when the fixture is paced: an unpaced
//! engine lets a server merge steps, so then only what the stream amounts to
//! (tokens, finish reasons, usage, errors, `[DONE]`) must agree.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::normalize::{Body, EventData, Transcript};
use crate::stream_summary::StreamSummary;

/// The layer a difference lives in, outermost first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Status code and the headers that matter.
    Http,
    /// SSE lexical shape: line endings, comments, event count, `[DONE]`.
    Framing,
    /// The JSON of the body or of each event.
    Json,
    /// What the stream amounts to: tokens, finish reasons, usage, errors.
    Stream,
    /// What the frontend asked the engine (`engine[i].sampling_params...`).
    Engine,
    /// Key order: reported, never failed.
    KeyOrder,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Framing => "framing",
            Self::Json => "json",
            Self::Stream => "stream",
            Self::Engine => "engine",
            Self::KeyOrder => "key-order",
        })
    }
}

/// How two values differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Both present, different.
    Changed,
    /// In the baseline only.
    Missing,
    /// In the other target only.
    Added,
    /// `null` on one side, no key on the other.
    NullVsAbsent,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Changed => "changed",
            Self::Missing => "missing",
            Self::Added => "added",
            Self::NullVsAbsent => "null-vs-absent",
        })
    }
}

/// One difference between the baseline and another target.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Difference {
    pub layer: Layer,
    /// `status`, `headers.content-type`, `events[2].choices[0].usage`, ...
    pub path: String,
    pub kind: Kind,
    /// The baseline's value; left out of JSON when the baseline has none,
    /// so that a JSON `null` here is the value null (`report merge` reads
    /// reports back and must tell the two apart).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub baseline: Option<Value>,
    /// The other target's value, as `baseline`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub other: Option<Value>,
}

/// A field that is there, `null` included, is `Some` (an absent one is
/// `None` through `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "(absent)".to_string(),
        };
        write!(
            f,
            "[{}] {} {}: {} -> {}",
            self.layer,
            self.path,
            self.kind,
            show(&self.baseline),
            show(&self.other)
        )
    }
}

/// Compares `other` against `baseline`. `paced`: chunk boundaries count.
pub fn compare(baseline: &Transcript, other: &Transcript, paced: bool) -> Vec<Difference> {
    let mut out = Vec::new();
    if baseline.status != other.status {
        out.push(Difference {
            layer: Layer::Http,
            path: "status".into(),
            kind: Kind::Changed,
            baseline: baseline.status.map(Value::from),
            other: other.status.map(Value::from),
        });
    }
    let names: std::collections::BTreeSet<&String> = baseline
        .headers
        .keys()
        .chain(other.headers.keys())
        .collect();
    for name in names {
        let (a, b) = (baseline.headers.get(name), other.headers.get(name));
        if a != b {
            out.push(Difference {
                layer: Layer::Http,
                path: format!("headers.{name}"),
                kind: presence_kind(a.is_some(), b.is_some()),
                baseline: a.map(|s| Value::from(s.as_str())),
                other: b.map(|s| Value::from(s.as_str())),
            });
        }
    }
    if baseline.notes != other.notes {
        out.push(Difference {
            layer: Layer::Framing,
            path: "notes".into(),
            kind: Kind::Changed,
            baseline: Some(Value::from(baseline.notes.clone())),
            other: Some(Value::from(other.notes.clone())),
        });
    }
    match (&baseline.body, &other.body) {
        (Body::Events(a), Body::Events(b)) => compare_events(a, b, paced, &mut out),
        (Body::Json(a), Body::Json(b)) => json_diff("body", Some(a), Some(b), &mut out),
        (a, b) if a != b => out.push(Difference {
            layer: Layer::Framing,
            path: "body".into(),
            kind: Kind::Changed,
            baseline: Some(body_value(a)),
            other: Some(body_value(b)),
        }),
        _ => {}
    }
    if let (Some(a), Some(b)) = (&baseline.engine, &other.engine) {
        compare_engine(a, b, &mut out);
    }
    for (path, (first, second)) in order_conflicts(&baseline.key_order, &other.key_order) {
        out.push(Difference {
            layer: Layer::KeyOrder,
            path,
            kind: Kind::Changed,
            baseline: Some(Value::from(format!("{first} before {second}"))),
            other: Some(Value::from(format!("{second} before {first}"))),
        });
    }
    out
}

/// Key pairs written in opposite orders at the same object path. Different
/// key sets (an extra null field, a merged chunk) are not an order change.
fn order_conflicts(a: &[String], b: &[String]) -> Vec<(String, (String, String))> {
    use std::collections::BTreeSet;
    fn pairs(lines: &[String]) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for line in lines {
            let Some((path, keys)) = line.split_once(": ") else {
                continue;
            };
            let keys: Vec<&str> = keys.split(", ").collect();
            for (i, x) in keys.iter().enumerate() {
                for y in &keys[i + 1..] {
                    out.insert((path.to_string(), x.to_string(), y.to_string()));
                }
            }
        }
        out
    }
    let (pa, pb) = (pairs(a), pairs(b));
    pa.iter()
        .filter(|(path, x, y)| pb.contains(&(path.clone(), y.clone(), x.clone())))
        .map(|(path, x, y)| (format!("{path} (key order)"), (x.clone(), y.clone())))
        .collect()
}

fn body_value(body: &Body) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

fn presence_kind(in_baseline: bool, in_other: bool) -> Kind {
    match (in_baseline, in_other) {
        (true, false) => Kind::Missing,
        (false, true) => Kind::Added,
        _ => Kind::Changed,
    }
}

/// What two frontends asked the engine: request by request when they
/// asked as many times (a transcript keeps its views sorted), else the
/// lists.
fn compare_engine(a: &[Value], b: &[Value], out: &mut Vec<Difference>) {
    let mut engine = Vec::new();
    if a.len() == b.len() {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            json_diff(&format!("engine[{i}]"), Some(x), Some(y), &mut engine);
        }
    } else {
        engine.push(Difference {
            layer: Layer::Engine,
            path: "engine".into(),
            kind: Kind::Changed,
            baseline: Some(Value::from(a.to_vec())),
            other: Some(Value::from(b.to_vec())),
        });
    }
    out.extend(engine.into_iter().map(|d| Difference {
        layer: Layer::Engine,
        ..d
    }));
}

fn compare_events(a: &[EventData], b: &[EventData], paced: bool, out: &mut Vec<Difference>) {
    let (sa, sb) = (StreamSummary::of(a), StreamSummary::of(b));
    let summary = |s: &StreamSummary| serde_json::to_value(s).unwrap_or(Value::Null);
    let (mut va, mut vb) = (summary(&sa), summary(&sb));
    if !paced {
        // Chunk counts are allowed to differ when steps may be merged.
        for v in [&mut va, &mut vb] {
            if let Some(m) = v.as_object_mut() {
                m.remove("chunks");
            }
        }
    }
    let mut stream = Vec::new();
    json_diff("stream", Some(&va), Some(&vb), &mut stream);
    out.extend(stream.into_iter().map(|d| Difference {
        layer: Layer::Stream,
        ..d
    }));
    if paced || a.len() == b.len() {
        if a.len() != b.len() {
            out.push(Difference {
                layer: Layer::Framing,
                path: "events.len".into(),
                kind: Kind::Changed,
                baseline: Some(a.len().into()),
                other: Some(b.len().into()),
            });
        }
        for (i, (ea, eb)) in a.iter().zip(b).enumerate() {
            let path = format!("events[{i}]");
            match (ea, eb) {
                (EventData::Json(x), EventData::Json(y)) => json_diff(&path, Some(x), Some(y), out),
                (x, y) if x != y => out.push(Difference {
                    layer: Layer::Framing,
                    path,
                    kind: Kind::Changed,
                    baseline: serde_json::to_value(x).ok(),
                    other: serde_json::to_value(y).ok(),
                }),
                _ => {}
            }
        }
    }
}

/// Structural JSON difference; numbers compare by value.
pub fn json_diff(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Difference>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                json_diff(&format!("{path}.{key}"), x.get(key), y.get(key), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), Some(p), Some(q), out);
            }
        }
        (Some(Value::Number(x)), Some(Value::Number(y))) if same_number(x, y) => {}
        (Some(x), Some(y)) if x == y => {}
        (None, None) => {}
        (x, y) => {
            let kind = match (x, y) {
                (Some(Value::Null), None) | (None, Some(Value::Null)) => Kind::NullVsAbsent,
                _ => presence_kind(x.is_some(), y.is_some()),
            };
            out.push(Difference {
                layer: Layer::Json,
                path: path.to_string(),
                kind,
                baseline: x.cloned(),
                other: y.cloned(),
            });
        }
    }
}

/// Numbers are equal by value, and so are two writings of one float32: the
/// engine's logprobs are float32, which vllm-rs writes in the shortest form
/// that reads back as that float32 (`-3.7324631`), while Python works in
/// float64 and writes more digits (`-3.732463121414185`). One side must be
/// written as a float32 (its text is that float32's shortest form) and the
/// other must round to the same float32; a difference a float32 can hold
/// still shows.
fn same_number(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    let (Some(a), Some(b)) = (x.as_f64(), y.as_f64()) else {
        return x == y;
    };
    if a == b {
        return true;
    }
    let written_as_f32 = |v: f64| (v as f32).to_string().parse::<f64>() == Ok(v);
    (a as f32) == (b as f32) && (written_as_f32(a) || written_as_f32(b))
}

/// A unified diff of two snapshot texts, for people.
pub fn render_text_diff(
    baseline_name: &str,
    baseline: &str,
    other_name: &str,
    other: &str,
) -> String {
    similar::TextDiff::from_lines(baseline, other)
        .unified_diff()
        .context_radius(2)
        .header(baseline_name, other_name)
        .to_string()
}

#[cfg(test)]
mod tests {

    #[test]
    fn what_the_engine_was_asked_is_its_own_layer_and_only_where_both_can_see_it() {
        let mut a = stream(&["[DONE]"]);
        let mut b = a.clone();
        a.engine = Some(vec![
            serde_json::json!({"sampling_params": {"max_tokens": 8}}),
        ]);
        b.engine = Some(vec![
            serde_json::json!({"sampling_params": {"max_tokens": 100}}),
        ]);
        let d = compare(&a, &b, false);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].layer, Layer::Engine);
        assert_eq!(d[0].path, "engine[0].sampling_params.max_tokens");
        b.engine = Some(vec![]);
        let d = compare(&a, &b, false);
        assert_eq!((d[0].layer, d[0].path.as_str()), (Layer::Engine, "engine"));
        b.engine = None;
        assert!(
            compare(&a, &b, false).is_empty(),
            "no view: nothing to compare"
        );
    }
    use serde_json::json;

    use super::*;

    fn stream(events: &[&str]) -> Transcript {
        crate::normalize::stream_of(events)
    }

    #[test]
    fn one_float32_written_at_two_precisions_is_equal_and_other_values_are_not() {
        let rust = json!({"logprob": -3.7324631});
        let mut out = Vec::new();
        for python in [-3.732463121414185, -3.7324631214141846] {
            json_diff("", Some(&rust), Some(&json!({"logprob": python})), &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // A float32 step or two away is another value.
        json_diff(
            "",
            Some(&rust),
            Some(&json!({"logprob": -3.7324636})),
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        // Neither side written as a float32: compared as float64.
        let mut out = Vec::new();
        json_diff(
            "",
            Some(&json!(0.30000001)),
            Some(&json!(0.300000012)),
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn null_versus_absent_is_its_own_kind() {
        let a = stream(&[r#"{"choices":[{"index":0,"token_ids":[1]}]}"#]);
        let b = stream(&[r#"{"choices":[{"index":0,"token_ids":[1],"logprobs":null}]}"#]);
        let d = compare(&a, &b, true);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].kind, d[0].path.as_str()),
            (Kind::NullVsAbsent, "events[0].choices[0].logprobs")
        );
    }

    #[test]
    fn merged_chunks_are_equal_when_unpaced_and_different_when_paced() {
        let a = stream(&[
            r#"{"choices":[{"index":0,"token_ids":[1]}]}"#,
            r#"{"choices":[{"index":0,"token_ids":[2],"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        let b = stream(&[
            r#"{"choices":[{"index":0,"token_ids":[1,2],"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(compare(&a, &b, false), []);
        let paced = compare(&a, &b, true);
        assert!(paced.iter().any(|d| d.path == "events.len"), "{paced:?}");
        assert!(paced.iter().any(|d| d.path == "stream.chunks"), "{paced:?}");
    }

    #[test]
    fn key_order_is_reported_only_for_swapped_keys() {
        let a = stream(&[r#"{"request_id":"x","choices":[]}"#]);
        let b = stream(&[r#"{"choices":[],"request_id":"x"}"#]);
        let d = compare(&a, &b, true);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].layer, Layer::KeyOrder);
        assert_eq!(d[0].baseline, Some(json!("request_id before choices")));
    }

    #[test]
    fn a_missing_done_is_a_stream_difference() {
        let a = stream(&[r#"{"choices":[]}"#, "[DONE]"]);
        let b = stream(&[r#"{"choices":[]}"#]);
        let d = compare(&a, &b, false);
        assert!(
            d.iter().any(|d| d.layer == Layer::Stream
                && d.path == "stream.done_events"
                && d.baseline == Some(json!(1))
                && d.other == Some(json!(0))),
            "{d:?}"
        );
    }
}
