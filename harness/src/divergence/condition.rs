//! `when`: the condition on a case under which a registry entry holds.
//!
//! A condition is a list of alternatives; each alternative is a table of
//! fact paths (see [`super::facts`]) and the test each must pass. The entry
//! holds when any alternative holds, and an alternative holds when every one
//! of its tests passes:
//!
//! ```toml
//! when = [
//!   # asks for logprobs, does not stream, and the engine makes no token
//!   { "sampling.logprobs" = { set = true }, stream = false, "script.tokens" = 0 },
//! ]
//! ```
//!
//! A bare value is shorthand for `{ eq = value }`. A table combines tests,
//! all of which must pass on one value: `eq`, `ne`, `one_of`, `none_of`,
//! `is` (JSON types: null, bool, number, string, array, object), `above`
//! and `below` (a number, or the path of a numeric fact such as
//! `"context.room"`), `non_ascii` (a string, or any string in an array, has a
//! non-ASCII character), `present` (the path has a value, null included)
//! and `set` (present, and neither null nor false: `logprobs = 0` is set,
//! as it asks for the sampled token's logprob). TOML has no null: test for
//! it with `is = "null"`. A path with `[*]` passes when any element passes.
//! An absent path passes only `ne`, `none_of`, `present = false` and
//! `set = false`.
//!
//! ```
//! use harness::divergence::condition::When;
//! use harness::divergence::facts::CaseFacts;
//!
//! #[derive(serde::Deserialize)]
//! struct Entry { when: When }
//! let entry: Entry = toml::from_str(
//!     r#"when = [{ "sampling.n" = { above = 1 } }, { "sampling.n" = 0 }]"#,
//! ).unwrap();
//! let case = |n: i64| CaseFacts::of(&serde_json::from_value(serde_json::json!({
//!     "name": "x",
//!     "request": { "body": { "token_ids": [1], "sampling_params": { "n": n } } }
//! })).unwrap());
//! assert!(entry.when.holds(&case(3)));
//! assert!(entry.when.holds(&case(0)));
//! assert!(!entry.when.holds(&case(1)));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::facts::{self, CaseFacts, ROOTS};

/// Any of these alternatives; empty means always.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct When(pub Vec<BTreeMap<String, Test>>);

impl When {
    pub fn is_always(&self) -> bool {
        self.0.is_empty()
    }

    pub fn holds(&self, facts: &CaseFacts) -> bool {
        self.is_always()
            || self.0.iter().any(|all| {
                all.iter()
                    .all(|(path, test)| test.passes(&facts.get(path), facts))
            })
    }

    /// A path that no fact can answer, with why, as `when[i]."path"`:
    /// a misspelt condition would silently never hold.
    pub fn unknown_path(&self) -> Option<(String, String)> {
        for (i, all) in self.0.iter().enumerate() {
            for (path, test) in all {
                let paths = std::iter::once(path.as_str()).chain(test.fact_bounds());
                for p in paths {
                    if let Some(why) = why_unknown(p) {
                        return Some((format!("when[{i}].\"{path}\""), why));
                    }
                }
            }
        }
        None
    }
}

fn why_unknown(path: &str) -> Option<String> {
    let mut segments = path.split('.');
    let root = segments.next().unwrap_or("");
    let root = root.split('[').next().unwrap_or(root);
    if !ROOTS.contains(&root) {
        return Some(format!(
            "`{path}` starts with `{root}`, which is not a fact (roots: {})",
            ROOTS.join(", ")
        ));
    }
    let names = facts::names_under(root)?;
    let name = segments.next().unwrap_or("");
    (!names.contains(&name)).then(|| {
        format!(
            "`{path}`: `{root}` has no fact `{name}` (it has: {})",
            names.join(", ")
        )
    })
}

/// What one fact must be. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Test {
    pub eq: Option<Value>,
    pub ne: Option<Value>,
    pub one_of: Option<Vec<Value>>,
    pub none_of: Option<Vec<Value>>,
    pub is: Option<Vec<JsonType>>,
    pub above: Option<Bound>,
    pub below: Option<Bound>,
    pub non_ascii: Option<bool>,
    pub present: Option<bool>,
    pub set: Option<bool>,
}

/// The tests of a table, read strictly so a misspelt test is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Checks {
    eq: Option<Value>,
    ne: Option<Value>,
    one_of: Option<Vec<Value>>,
    none_of: Option<Vec<Value>>,
    is: Option<OneOrMany<JsonType>>,
    above: Option<Bound>,
    below: Option<Bound>,
    non_ascii: Option<bool>,
    present: Option<bool>,
    set: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    fn of(v: &Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Bool,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        }
    }
}

/// A number, or the path of a numeric fact to compare with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    Number(f64),
    Fact(String),
}

impl Bound {
    fn value(&self, facts: &CaseFacts) -> Option<f64> {
        match self {
            Bound::Number(n) => Some(*n),
            Bound::Fact(path) => facts.get(path).first().and_then(|v| v.as_f64()),
        }
    }
}

impl Test {
    fn fact_bounds(&self) -> impl Iterator<Item = &str> {
        [&self.above, &self.below]
            .into_iter()
            .flatten()
            .filter_map(|b| match b {
                Bound::Fact(p) => Some(p.as_str()),
                Bound::Number(_) => None,
            })
    }

    /// Whether the values found at the test's path pass it.
    pub fn passes(&self, values: &[&Value], facts: &CaseFacts) -> bool {
        if self
            .present
            .is_some_and(|present| present == values.is_empty())
        {
            return false;
        }
        if values.is_empty() {
            return self.passes_absent();
        }
        if let Some(want) = self.set
            && values.iter().any(|v| is_set(v)) != want
        {
            return false;
        }
        values.iter().any(|v| self.passes_value(v, facts))
    }

    fn passes_absent(&self) -> bool {
        self.eq.is_none()
            && self.one_of.is_none()
            && self.is.is_none()
            && self.above.is_none()
            && self.below.is_none()
            && self.non_ascii.is_none()
            && self.set != Some(true)
    }

    fn passes_value(&self, v: &Value, facts: &CaseFacts) -> bool {
        let number = v.as_f64();
        self.eq.as_ref().is_none_or(|e| same(e, v))
            && self.ne.as_ref().is_none_or(|e| !same(e, v))
            && self
                .one_of
                .as_ref()
                .is_none_or(|l| l.iter().any(|e| same(e, v)))
            && self
                .none_of
                .as_ref()
                .is_none_or(|l| !l.iter().any(|e| same(e, v)))
            && self
                .is
                .as_ref()
                .is_none_or(|t| t.contains(&JsonType::of(v)))
            && self
                .above
                .as_ref()
                .is_none_or(|b| matches!((number, b.value(facts)), (Some(n), Some(b)) if n > b))
            && self
                .below
                .as_ref()
                .is_none_or(|b| matches!((number, b.value(facts)), (Some(n), Some(b)) if n < b))
            && self.non_ascii.is_none_or(|want| has_non_ascii(v) == want)
    }
}

/// Numbers compare by value (TOML's 1 is JSON's 1.0); the rest as JSON.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn is_set(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}

fn has_non_ascii(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.is_ascii(),
        Value::Array(items) => items.iter().any(has_non_ascii),
        _ => false,
    }
}

impl<'de> Deserialize<'de> for Test {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TestVisitor)
    }
}

struct TestVisitor;

impl TestVisitor {
    fn eq(v: Value) -> Test {
        Test {
            eq: Some(v),
            ..Test::default()
        }
    }
}

impl<'de> Visitor<'de> for TestVisitor {
    type Value = Test;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value to equal, or a table of tests (eq, ne, one_of, none_of, is, above, below, non_ascii, present, set)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Test, E> {
        Ok(Self::eq(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Test, E> {
        Ok(Self::eq(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Test, E> {
        Ok(Self::eq(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Test, E> {
        Ok(Self::eq(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Test, E> {
        Ok(Self::eq(v.into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Test, A::Error> {
        let c = Checks::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Test {
            eq: c.eq,
            ne: c.ne,
            one_of: c.one_of,
            none_of: c.none_of,
            is: c.is.map(|t| match t {
                OneOrMany::One(t) => vec![t],
                OneOrMany::Many(t) => t,
            }),
            above: c.above,
            below: c.below,
            non_ascii: c.non_ascii,
            present: c.present,
            set: c.set,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Holder {
        when: When,
    }

    fn when(toml_text: &str) -> When {
        toml::from_str::<Holder>(toml_text).unwrap().when
    }

    fn facts(body: Value) -> CaseFacts {
        CaseFacts::of(
            &serde_json::from_value(json!({"name": "f", "request": {"body": body}})).unwrap(),
        )
    }

    #[test]
    fn absent_fields_pass_only_negative_tests() {
        let f = facts(json!({"token_ids": [1], "sampling_params": {}}));
        assert!(when(r#"when = [{ "request.stream" = { ne = true } }]"#).holds(&f));
        assert!(!when(r#"when = [{ "request.stream" = false }]"#).holds(&f));
        assert!(when(r#"when = [{ "request.stream_options" = { present = false } }]"#).holds(&f));
        assert!(!when(r#"when = [{ "request.stream" = { is = "bool" } }]"#).holds(&f));
        assert!(when(r#"when = [{ "request.stream" = { none_of = [true] } }]"#).holds(&f));
    }

    #[test]
    fn null_is_a_value_not_an_absence() {
        let f = facts(json!({"token_ids": [1], "sampling_params": {"n": null}}));
        assert!(when(r#"when = [{ "sampling.n" = { is = "null" } }]"#).holds(&f));
        assert!(when(r#"when = [{ "sampling.n" = { present = true } }]"#).holds(&f));
        assert!(!when(r#"when = [{ "sampling.n" = { set = true } }]"#).holds(&f));
        assert!(when(r#"when = [{ "sampling.n" = { set = false } }]"#).holds(&f));
        let zero = facts(json!({"token_ids": [1], "sampling_params": {"logprobs": 0}}));
        assert!(when(r#"when = [{ "sampling.logprobs" = { set = true } }]"#).holds(&zero));
        let no = facts(json!({"logprobs": false}));
        assert!(!when(r#"when = [{ "sampling.logprobs" = { set = true } }]"#).holds(&no));
        let without = facts(json!({"token_ids": [1], "sampling_params": {}}));
        assert!(!when(r#"when = [{ "sampling.n" = { is = "null" } }]"#).holds(&without));
    }

    #[test]
    fn every_test_of_an_alternative_must_pass_and_any_alternative_may() {
        let w = when(
            r#"when = [{ "request.stream" = true, "sampling.logprobs" = { above = 0 } }, { "sampling.n" = 2 }]"#,
        );
        let f = |body| facts(body);
        assert!(w.holds(&f(
            json!({"stream": true, "sampling_params": {"logprobs": 2}})
        )));
        assert!(!w.holds(&f(
            json!({"stream": true, "sampling_params": {"logprobs": 0}})
        )));
        assert!(!w.holds(&f(
            json!({"stream": false, "sampling_params": {"logprobs": 2}})
        )));
        assert!(w.holds(&f(json!({"sampling_params": {"n": 2}}))));
        assert!(When::default().holds(&f(json!({}))));
    }

    #[test]
    fn bounds_may_name_another_fact() {
        let w = when(r#"when = [{ "sampling.min_tokens" = { above = "context.room" } }]"#);
        let past = facts(json!({"token_ids": [1, 2], "sampling_params": {"min_tokens": 2047}}));
        let within = facts(json!({"token_ids": [1, 2], "sampling_params": {"min_tokens": 2046}}));
        assert!(w.holds(&past));
        assert!(!w.holds(&within));
    }

    #[test]
    fn non_ascii_reads_strings_and_lists_of_strings() {
        let w = when(r#"when = [{ "request.stop" = { non_ascii = true } }]"#);
        assert!(w.holds(&facts(json!({"stop": ["ab", "é"]}))));
        assert!(w.holds(&facts(json!({"stop": "é"}))));
        assert!(!w.holds(&facts(json!({"stop": ["ab"]}))));
    }

    #[test]
    fn misspelt_tests_and_unknown_facts_are_named() {
        let e = toml::from_str::<Holder>(r#"when = [{ "sampling.n" = { abvoe = 1 } }]"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("abvoe"), "{e}");
        let w = when(r#"when = [{ "script.error_finsh" = true }]"#);
        let (at, why) = w.unknown_path().unwrap();
        assert_eq!(at, r#"when[0]."script.error_finsh""#);
        assert!(why.contains("error_finish"), "{why}");
        let w = when(r#"when = [{ "body.n" = 1 }]"#);
        assert!(w.unknown_path().unwrap().1.contains("not a fact"));
        let w = when(r#"when = [{ "sampling.n" = { above = "context.rooom" } }]"#);
        assert!(w.unknown_path().is_some());
        assert!(
            when(r#"when = [{ "request.anything.at_all" = 1 }]"#)
                .unknown_path()
                .is_none()
        );
    }
}
