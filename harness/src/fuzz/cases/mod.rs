//! What the fuzzer generates: a request (every knob of an endpoint that
//! changes the answer's shape, in valid and invalid forms) and, when the
//! target's engine can be scripted, the engine script that answers it
//! ([`script`]). Each endpoint's family (`crate::endpoint`) draws its cases
//! and turns them into HTTP requests; this module holds the knobs they share.
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

mod script;

use mock_engine::script::{Endpoint, RequestSpec, Script};
use proptest::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};

pub use script::{keep_candidates, script, text_script};

use crate::endpoint::family;

/// The first prompt token of every well-formed fuzz prompt: keeps fuzz
/// prompts apart from the corpus's, whose scripts share the engine.
pub const PROMPT_MARK: u32 = 4095;

/// Token ids the test model knows that are not special.
pub const VOCAB: u32 = model::vocabulary::VOCAB;

/// The words `t0..t3839`: what text prompts and chat messages are made of.
pub const WORDS: u32 = model::vocabulary::BYTES_START;

/// The first word of every well-formed completions or chat prompt (a word,
/// so it can be written as text; [`PROMPT_MARK`] is a byte token).
pub const WORD_MARK: u32 = WORDS - 1;

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
    pub fn put(&self, map: &mut Map<String, Value>, key: &str) {
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

/// One generated case: the endpoint, a request, and the script that answers
/// it (`None`: the engine's default generator answers).
///
/// A generate case serialises as it did before other endpoints existed, so
/// its digest, and with it its prompt, stays the same for a given seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    #[serde(skip_serializing_if = "Endpoint::is_generate")]
    pub endpoint: Endpoint,
    pub request: Request,
    /// The knobs only `/v1/completions` and `/v1/chat/completions` have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAi>,
    pub script: Option<Script>,
}

/// A chat role the template knows (`t2`, `t3`, `t4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One chat message before the user's last one: its words, as text or as
/// text parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: Role,
    pub words: Vec<u32>,
    pub parts: bool,
}

/// What `/v1/completions` and `/v1/chat/completions` add to the shared knobs.
/// `Request::logprobs` is completions' integer `logprobs`; chat has a bool
/// and `top_logprobs` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenAi {
    /// Completions: `echo`.
    pub echo: Knob<bool>,
    /// Chat: `logprobs`.
    pub chat_logprobs: Knob<bool>,
    /// Chat: `top_logprobs`.
    pub top_logprobs: Knob<i32>,
    /// `stop` strings (none: the field is absent).
    pub stop: Vec<String>,
    /// Completions: the prompt as one text (`"t5 t7"`) rather than ids.
    pub text_prompt: bool,
    /// Chat: the messages before the user's, which carries the prompt words.
    pub earlier: Vec<Message>,
    /// Chat: the user's content as a list of text parts.
    pub parts: bool,
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
    /// The endpoints the cases go to.
    pub endpoints: Endpoints,
}

impl Default for Scope {
    fn default() -> Self {
        Self {
            scripts: true,
            late_prompt_info: true,
            engine_failures: true,
            endpoints: Endpoints::default(),
        }
    }
}

/// `--endpoint`: one endpoint, or the cases spread over all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    One(Endpoint),
    All,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::One(Endpoint::default())
    }
}

impl std::str::FromStr for Endpoints {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "all" {
            return Ok(Self::All);
        }
        s.parse::<Endpoint>()
            .map(Self::One)
            .map_err(|_| format!("`{s}` is not an endpoint (generate, completions, chat, all)"))
    }
}

impl std::fmt::Display for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::One(e) => write!(f, "{e}"),
            Self::All => f.write_str("all"),
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

    /// The prompt the engine sees: the mark and two digest tokens, then the
    /// generated ids, so no two different cases share a prompt (and so a
    /// script). For completions and chat, what the endpoint makes of the
    /// body ([`Endpoint::prompt_token_ids`]), built around [`Case::words`].
    pub fn prompt(&self) -> Vec<u32> {
        family(self.endpoint).fuzz_prompt(self)
    }

    /// Completions and chat: the prompt's words, the [`WORD_MARK`] and two
    /// digest words first; generated ids in the vocabulary become words
    /// (prompts of byte tokens are not what these endpoints are fuzzed
    /// for), ids outside it stay (an invalid id prompt; as text, `<unk>`).
    pub fn words(&self) -> Vec<u32> {
        match &self.request.prompt {
            Prompt::Empty => Vec::new(),
            Prompt::Ids(ids) => {
                let d = self.digest();
                let mut words = vec![WORD_MARK, (d >> 12) as u32 % WORDS, d as u32 % WORDS];
                words.extend(
                    ids.iter()
                        .map(|&id| if id < VOCAB { id % WORDS } else { id }),
                );
                words
            }
        }
    }

    /// The HTTP request, for a server that serves `model`.
    pub fn request_spec(&self, model: &str) -> RequestSpec {
        family(self.endpoint).fuzz_request(self, model)
    }
}

/// Words as the text the tokenizer turns back into them: `t5 t7`.
pub fn text(words: &[u32]) -> String {
    let words: Vec<String> = words.iter().map(|w| format!("t{w}")).collect();
    words.join(" ")
}

/// A chat message whose content is `words`, as one text or as two text
/// parts. The first part ends with a space: Python joins parts with a
/// newline and vllm-rs 0.32 with nothing, and this way both make the same
/// words (the difference itself is a fixture's business, not the fuzzer's).
pub fn message(role: Role, words: &[u32], parts: bool) -> Value {
    let content = if parts && words.len() > 1 {
        let (a, b) = words.split_at(words.len() / 2);
        let a = format!("{} ", text(a));
        json!([{"type": "text", "text": a}, {"type": "text", "text": text(b)}])
    } else {
        text(words).into()
    };
    json!({"role": role.name(), "content": content})
}

impl Default for OpenAi {
    fn default() -> Self {
        Self {
            echo: Knob::Absent,
            chat_logprobs: Knob::Absent,
            top_logprobs: Knob::Absent,
            stop: Vec::new(),
            text_prompt: false,
            earlier: Vec::new(),
            parts: false,
        }
    }
}

impl Request {
    /// `stream` and `stream_options`, as the knobs say.
    pub fn put_stream(&self, body: &mut Map<String, Value>) {
        match self.stream {
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
        match self.stream_options {
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
    }
}

impl Model {
    pub fn put(self, body: &mut Map<String, Value>, served: &str) {
        match self {
            Model::Absent => {}
            Model::Served => {
                body.insert("model".into(), served.into());
            }
            Model::Other => {
                body.insert("model".into(), format!("not-{served}").into());
            }
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

fn messages() -> impl Strategy<Value = Vec<Message>> {
    let role = prop_oneof![Just(Role::System), Just(Role::User), Just(Role::Assistant)];
    let message = (
        role,
        proptest::collection::vec(0..WORDS, 1..4),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(role, words, parts)| Message { role, words, parts });
    proptest::collection::vec(message, 0..3)
}

fn stop() -> impl Strategy<Value = Vec<String>> {
    // Words that generated text often holds (`t1` is in `t1`, `t12`, ...),
    // a character the byte tokens spell, and one that never comes.
    let one = proptest::sample::select(vec!["t1", "t2 t", "é", "\n", "never"]);
    prop_oneof![
        6 => Just(Vec::new()),
        1 => proptest::collection::vec(one.prop_map(String::from), 1..3),
    ]
}

/// Every knob of `/v1/completions` and `/v1/chat/completions`, all drawn
/// whatever the route, so the stream of cases a seed makes does not depend
/// on it; each route's family keeps its own (`Family::fuzz_cases`).
pub fn openai_knobs() -> impl Strategy<Value = OpenAi> {
    let top_logprobs = prop_oneof![
        12 => Just(Knob::Absent),
        1 => Just(Knob::Null),
        6 => (0i32..=5).prop_map(Knob::Value),
        1 => prop_oneof![Just(-1i32), Just(21)].prop_map(Knob::Value),
        1 => Just(Knob::WrongType),
    ];
    (
        knob(any::<bool>()),
        knob(proptest::bool::weighted(0.7)),
        top_logprobs,
        stop(),
        any::<bool>(),
        messages(),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(echo, chat_logprobs, top_logprobs, stop, text_prompt, earlier, parts)| OpenAi {
                echo,
                chat_logprobs,
                top_logprobs,
                stop,
                text_prompt,
                earlier,
                parts,
            },
        )
}

/// Whole cases for `scope.endpoints`, from each endpoint's family. For
/// generate alone, exactly the cases (and so, for a seed, the same
/// sequence) as before other endpoints existed.
pub fn case(scope: Scope) -> BoxedStrategy<Case> {
    match scope.endpoints {
        Endpoints::One(endpoint) => family(endpoint).fuzz_cases(scope),
        Endpoints::All => {
            let [generate, completions, chat] = Endpoint::ALL.map(|e| family(e).fuzz_cases(scope));
            prop_oneof![generate, completions, chat].boxed()
        }
    }
}

#[cfg(test)]
mod tests;
