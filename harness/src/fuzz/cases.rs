//! What the fuzzer generates: a request (every knob of the generate
//! endpoint that changes the answer's shape, in valid and invalid forms) and,
//! when the target's engine can be scripted, the engine script that answers it.
//!
//! A [`Case`] is plain data, so proptest shrinks it field by field: towards
//! absent knobs, shorter prompts, fewer and emptier steps.
//!
//! ```
//! use harness::fuzz::cases::{Case, Scope, case};
//! use proptest::strategy::{Strategy, ValueTree};
//! use proptest::test_runner::TestRunner;
//!
//! let mut runner = TestRunner::deterministic();
//! let c: Case = case(Scope::default()).new_tree(&mut runner).unwrap().current();
//! let request = c.request_spec("tiny");
//! assert_eq!(request.path(), "/inference/v1/generate");
//! ```

use std::collections::BTreeMap;

use mock_engine::script::{
    Endpoint, FinishReason, LogprobEntry, RequestSpec, Script, Step, StopReason,
};
use proptest::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The first prompt token of every well-formed fuzz prompt: keeps fuzz
/// prompts apart from the corpus's, whose scripts share the engine.
pub const PROMPT_MARK: u32 = 4095;

/// Token ids the test model knows (`t0..t4095`).
const VOCAB: u32 = 4096;

/// A JSON value in one of the forms a client may send for a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Knob<T> {
    Absent,
    Null,
    /// A value of the right type.
    Value(T),
    /// A string where the field wants something else.
    WrongType,
}

impl<T: Into<Value> + Copy> Knob<T> {
    fn put(&self, map: &mut Map<String, Value>, key: &str) {
        let value = match self {
            Self::Absent => return,
            Self::Null => Value::Null,
            Self::Value(v) => (*v).into(),
            Self::WrongType => Value::from("yes"),
        };
        map.insert(key.to_string(), value);
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StreamOptions {
    Absent,
    Null,
    Object {
        include_usage: Knob<bool>,
        continuous_usage_stats: Knob<bool>,
        /// A key no server knows.
        unknown_key: bool,
    },
}

/// `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Model {
    Absent,
    Served,
    Other,
}

/// `token_ids`: the generated part. Well-formed prompts get a prefix that
/// makes them unique per case (see [`Case::prompt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Prompt {
    Empty,
    Ids(Vec<u32>),
}

/// One request, as knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    /// `stream`; `WrongType` is the string `"yes"`, `Value(None)` the number 1.
    pub stream: Knob<Option<bool>>,
    pub stream_options: StreamOptions,
    pub max_tokens: Knob<u32>,
    pub n: Knob<u32>,
    pub logprobs: Knob<i32>,
    pub return_token_ids: Knob<bool>,
    pub header_request_id: Option<String>,
    pub body_request_id: Option<String>,
    pub model: Model,
    pub prompt: Prompt,
}

/// One generated case: a request, and the script that answers it (`None`: the
/// engine's default generator answers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    pub request: Request,
    pub script: Option<Script>,
}

/// What the targets allow the generator to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// Every target's engine can be scripted.
    pub scripts: bool,
    /// Late prompt info: only in-process engines can deliver it.
    pub late_prompt_info: bool,
    /// Engine failures (`fail`): a real frontend's engine core dies with
    /// them, and the frontend must be restarted before it serves again.
    pub engine_failures: bool,
}

impl Default for Scope {
    fn default() -> Self {
        Self {
            scripts: true,
            late_prompt_info: true,
            engine_failures: true,
        }
    }
}

impl Case {
    /// A stable digest of the case, for unique prompts and fixture names.
    pub fn digest(&self) -> u64 {
        let text = serde_json::to_string(self).expect("a case serialises");
        // FNV-1a: stable across runs and builds, unlike `DefaultHasher`.
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The prompt sent: the mark and two digest tokens, then the generated ids,
    /// so no two different cases share a prompt (and so a script).
    pub fn prompt(&self) -> Vec<u32> {
        match &self.request.prompt {
            Prompt::Empty => Vec::new(),
            Prompt::Ids(ids) => {
                let d = self.digest();
                let mut prompt = vec![PROMPT_MARK, (d >> 12) as u32 % VOCAB, d as u32 % VOCAB];
                prompt.extend(ids);
                prompt
            }
        }
    }

    /// The HTTP request, for a server that serves `model`.
    pub fn request_spec(&self, model: &str) -> RequestSpec {
        let r = &self.request;
        let mut params = Map::new();
        r.max_tokens.put(&mut params, "max_tokens");
        r.n.put(&mut params, "n");
        r.logprobs.put(&mut params, "logprobs");
        let mut body = Map::new();
        body.insert("token_ids".into(), json!(self.prompt()));
        body.insert("sampling_params".into(), Value::Object(params));
        match r.stream {
            Knob::Absent => {}
            Knob::Null => {
                body.insert("stream".into(), Value::Null);
            }
            Knob::Value(Some(b)) => {
                body.insert("stream".into(), b.into());
            }
            Knob::Value(None) => {
                body.insert("stream".into(), 1.into());
            }
            Knob::WrongType => {
                body.insert("stream".into(), "yes".into());
            }
        }
        match r.stream_options {
            StreamOptions::Absent => {}
            StreamOptions::Null => {
                body.insert("stream_options".into(), Value::Null);
            }
            StreamOptions::Object {
                include_usage,
                continuous_usage_stats,
                unknown_key,
            } => {
                let mut o = Map::new();
                include_usage.put(&mut o, "include_usage");
                continuous_usage_stats.put(&mut o, "continuous_usage_stats");
                if unknown_key {
                    o.insert("include_everything".into(), true.into());
                }
                body.insert("stream_options".into(), Value::Object(o));
            }
        }
        r.return_token_ids.put(&mut body, "return_token_ids");
        if let Some(id) = &r.body_request_id {
            body.insert("request_id".into(), id.as_str().into());
        }
        match r.model {
            Model::Absent => {}
            Model::Served => {
                body.insert("model".into(), model.into());
            }
            Model::Other => {
                body.insert("model".into(), format!("not-{model}").into());
            }
        }
        let mut headers = BTreeMap::new();
        if let Some(id) = &r.header_request_id {
            headers.insert("x-request-id".to_string(), id.clone());
        }
        RequestSpec {
            method: "POST".into(),
            endpoint: Endpoint::Generate,
            path: None,
            headers,
            body: Some(Value::Object(body)),
            raw_body: None,
            content_type: None,
        }
    }
}

/// The same request asking for the other response mode: a stream becomes a
/// plain request (without `stream_options`) and a plain request a stream.
/// `None` when the request has no usable mode to flip.
pub fn twin(request: &RequestSpec) -> Option<RequestSpec> {
    let mut twin = request.clone();
    let body = twin.body.as_mut()?.as_object_mut()?;
    let streamed = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    body.remove("stream_options");
    if streamed {
        body.remove("stream");
    } else {
        body.insert("stream".into(), true.into());
    }
    Some(twin)
}

fn knob<T: Copy + std::fmt::Debug + 'static>(
    value: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Knob<T>> {
    // Mostly well-typed: every invalid form is still common enough to shrink
    // towards, and valid requests (where most invariants live) stay the majority.
    prop_oneof![
        6 => Just(Knob::Absent),
        2 => Just(Knob::Null),
        12 => value.prop_map(Knob::Value),
        1 => Just(Knob::WrongType),
    ]
}

fn stream_options() -> impl Strategy<Value = StreamOptions> {
    prop_oneof![
        4 => Just(StreamOptions::Absent),
        1 => Just(StreamOptions::Null),
        5 => (knob(proptest::bool::weighted(0.7)), knob(proptest::bool::weighted(0.7)), proptest::bool::weighted(0.15)).prop_map(
            |(include_usage, continuous_usage_stats, unknown_key)| StreamOptions::Object {
                include_usage,
                continuous_usage_stats,
                unknown_key,
            }
        ),
    ]
}

fn request_id() -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(0.3, "[a-z0-9-]{1,12}".prop_map(|s| format!("fz-{s}")))
}

fn prompt() -> impl Strategy<Value = Prompt> {
    // At most one id outside the vocabulary, so most prompts are valid.
    let ids = (
        proptest::collection::vec(0..VOCAB, 0..24),
        proptest::option::weighted(0.08, (any::<proptest::sample::Index>(), 4099u32..=5000)),
    )
        .prop_map(|(mut ids, bad)| {
            if let Some((at, id)) = bad {
                let at = at.index(ids.len() + 1);
                ids.insert(at, id);
            }
            ids
        });
    prop_oneof![
        1 => Just(Prompt::Empty),
        30 => ids.prop_map(Prompt::Ids),
    ]
}

/// Requests, valid and invalid.
pub fn request() -> impl Strategy<Value = Request> {
    let stream = prop_oneof![
        2 => Just(Knob::Absent),
        10 => Just(Knob::Value(Some(true))),
        2 => Just(Knob::Value(Some(false))),
        1 => Just(Knob::Null),
        1 => Just(Knob::WrongType),
        1 => Just(Knob::Value(None)),
    ];
    let max_tokens = knob(prop_oneof![
        1 => Just(0u32),
        3 => Just(1u32),
        6 => 2u32..=16,
        1 => Just(1000u32),
    ]);
    let n = prop_oneof![
        12 => Just(Knob::Absent),
        1 => Just(Knob::Null),
        3 => Just(Knob::Value(1u32)),
        1 => Just(Knob::Value(2u32)),
    ];
    let logprobs = prop_oneof![
        12 => Just(Knob::Absent),
        1 => Just(Knob::Null),
        6 => (0i32..=5).prop_map(Knob::Value),
        1 => prop_oneof![Just(-2i32), Just(-1), Just(21)].prop_map(Knob::Value),
    ];
    let model = prop_oneof![
        8 => Just(Model::Absent),
        4 => Just(Model::Served),
        1 => Just(Model::Other),
    ];
    (
        (stream, stream_options(), max_tokens, n, logprobs),
        (
            knob(any::<bool>()),
            request_id(),
            request_id(),
            model,
            prompt(),
        ),
    )
        .prop_map(
            |(
                (stream, stream_options, max_tokens, n, logprobs),
                (return_token_ids, header_request_id, body_request_id, model, prompt),
            )| Request {
                stream,
                stream_options,
                max_tokens,
                n,
                logprobs,
                return_token_ids,
                header_request_id,
                body_request_id,
                model,
                prompt,
            },
        )
}

/// How a script ends.
#[derive(Debug, Clone)]
enum End {
    Finish(FinishReason, Option<StopReason>),
    ErrorFinish,
    Fail(String),
}

fn end(engine_failures: bool) -> impl Strategy<Value = End> {
    let reason = prop_oneof![
        Just(FinishReason::Stop),
        Just(FinishReason::Length),
        Just(FinishReason::Abort),
        Just(FinishReason::Repetition),
    ];
    let stop_reason = proptest::option::weighted(
        0.3,
        prop_oneof![
            (0i64..4096).prop_map(StopReason::Token),
            Just(StopReason::Text("\n".into())),
        ],
    );
    prop_oneof![
        8 => (reason, stop_reason).prop_map(|(r, s)| {
            let s = if r == FinishReason::Stop { s } else { None };
            End::Finish(r, s)
        }),
        1 => Just(End::ErrorFinish),
        u32::from(engine_failures) => "[a-z ]{1,16}".prop_map(End::Fail),
    ]
}

/// The step fields every step may have.
#[derive(Debug, Clone)]
struct Body {
    delay_ms: u64,
    tokens: Vec<u32>,
    cached_tokens: Option<u32>,
    late_prompt_info: bool,
    /// Scripted logprobs: how many top candidates, and the sampled token's rank.
    logprob_candidates: Option<(u32, u32)>,
}

fn body(late_prompt_info: bool) -> impl Strategy<Value = Body> {
    (
        0u64..=5,
        proptest::collection::vec(0..VOCAB, 0..4),
        proptest::option::weighted(0.2, 0u32..8),
        proptest::bool::weighted(if late_prompt_info { 0.2 } else { 0.0 }),
        proptest::option::weighted(0.2, (0u32..3, 1u32..=3)),
    )
        .prop_map(
            |(delay_ms, tokens, cached_tokens, late_prompt_info, logprob_candidates)| Body {
                delay_ms,
                tokens,
                cached_tokens,
                late_prompt_info,
                logprob_candidates,
            },
        )
}

impl Body {
    fn step(self) -> Step {
        // An engine sends no logprobs for a step without tokens.
        let candidates = self.logprob_candidates.filter(|_| !self.tokens.is_empty());
        let logprobs = candidates.map(|(k, sampled_rank)| {
            // As vLLM's engine reports them: the sampled token with its rank,
            // then the top k in rank order (a rank is the position there), so
            // the sampled token is among them when its rank is at most k.
            let sampled_rank = sampled_rank.min(k + 1);
            let logprob = |rank: u32| 0.5 - rank as f32;
            self.tokens
                .iter()
                .map(|&t| {
                    std::iter::once(LogprobEntry {
                        token_id: t,
                        logprob: logprob(sampled_rank),
                        rank: sampled_rank,
                    })
                    .chain((1..=k).map(|rank| LogprobEntry {
                        token_id: if rank == sampled_rank {
                            t
                        } else {
                            (t + rank) % VOCAB
                        },
                        logprob: logprob(rank),
                        rank,
                    }))
                    .collect()
                })
                .collect()
        });
        Step {
            delay_ms: self.delay_ms,
            tokens: self.tokens,
            cached_tokens: self.cached_tokens,
            prompt_info: self.late_prompt_info.then_some(false),
            logprobs,
            ..Step::default()
        }
    }
}

/// Scripts valid by the fixture rules: 0..5 steps, then one that ends the
/// request (a finish, possibly without tokens; an error finish; a failure).
pub fn script(scope: Scope) -> impl Strategy<Value = Script> {
    (
        proptest::collection::vec(body(scope.late_prompt_info), 0..6),
        body(false),
        end(scope.engine_failures),
    )
        .prop_map(|(middle, last, end)| {
            let mut steps: Vec<Step> = middle.into_iter().map(Body::step).collect();
            let mut last = last.step();
            match end {
                End::Finish(reason, stop_reason) => {
                    last.finish = Some(reason);
                    last.stop_reason = stop_reason;
                }
                End::ErrorFinish => last.finish = Some(FinishReason::Error),
                End::Fail(message) => {
                    last = Step {
                        delay_ms: last.delay_ms,
                        fail: Some(message),
                        ..Step::default()
                    };
                }
            }
            steps.push(last);
            Script {
                steps,
                ..Script::default()
            }
        })
}

/// Whole cases.
pub fn case(scope: Scope) -> impl Strategy<Value = Case> {
    let script = if scope.scripts {
        proptest::option::weighted(0.8, script(scope)).boxed()
    } else {
        Just(None).boxed()
    };
    (request(), script).prop_map(|(request, script)| Case { request, script })
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    #[test]
    fn generated_scripts_are_valid_fixtures() {
        let mut runner = TestRunner::deterministic();
        for i in 0..300 {
            let c = case(Scope::default())
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let fixture = mock_engine::Fixture {
                name: format!("c{i}"),
                description: String::new(),
                server: Default::default(),
                request: c.request_spec("tiny"),
                engine: c.script.clone().unwrap_or_default(),
                in_process_only: None,
                recorded: None,
            };
            let text = serde_json::to_string(&fixture).unwrap();
            if let Err(e) = mock_engine::fixture::parse("c.json".as_ref(), &text) {
                panic!("{e}\n{text}");
            }
        }
    }

    #[test]
    fn prompts_differ_between_cases_and_keep_the_mark() {
        let mut runner = TestRunner::deterministic();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let c = case(Scope::default())
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let p = c.prompt();
            if let Prompt::Ids(_) = c.request.prompt {
                assert_eq!(p[0], PROMPT_MARK);
                seen.insert(p);
            }
        }
        assert!(seen.len() > 150, "{}", seen.len());
    }

    #[test]
    fn a_twin_flips_the_mode() {
        let spec = RequestSpec {
            body: Some(json!({"token_ids": [1], "stream": true, "stream_options": {}})),
            ..RequestSpec::default()
        };
        let t = twin(&spec).unwrap();
        assert_eq!(t.body, Some(json!({"token_ids": [1]})));
        assert_eq!(twin(&t).unwrap().body.unwrap()["stream"], json!(true));
    }
}
