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

/// Token ids the test model knows that are not special.
const VOCAB: u32 = model::vocabulary::VOCAB;

/// The words `t0..t3839`: what text prompts and chat messages are made of.
const WORDS: u32 = model::vocabulary::BYTES_START;

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
        Self::One(Endpoint::Generate)
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
        if self.endpoint.is_generate() {
            return match &self.request.prompt {
                Prompt::Empty => Vec::new(),
                Prompt::Ids(ids) => {
                    let d = self.digest();
                    let mut prompt = vec![PROMPT_MARK, (d >> 12) as u32 % VOCAB, d as u32 % VOCAB];
                    prompt.extend(ids);
                    prompt
                }
            };
        }
        let spec = self.request_spec("");
        spec.body
            .as_ref()
            .and_then(|b| self.endpoint.prompt_token_ids(b))
            .unwrap_or_default()
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
        if !self.endpoint.is_generate() {
            return self.openai_request_spec(model);
        }
        let r = &self.request;
        let mut params = Map::new();
        r.max_tokens.put(&mut params, "max_tokens");
        r.n.put(&mut params, "n");
        r.logprobs.put(&mut params, "logprobs");
        let mut body = Map::new();
        body.insert("token_ids".into(), json!(self.prompt()));
        body.insert("sampling_params".into(), Value::Object(params));
        r.put_stream(&mut body);
        r.return_token_ids.put(&mut body, "return_token_ids");
        if let Some(id) = &r.body_request_id {
            body.insert("request_id".into(), id.as_str().into());
        }
        r.model.put(&mut body, model);
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

    /// A completions or chat request: the shared knobs at the top level of
    /// the body, the prompt as `prompt` or `messages`. Request ids are left
    /// out: these endpoints answer with an `id` of their own making.
    fn openai_request_spec(&self, model: &str) -> RequestSpec {
        let r = &self.request;
        let extra = self.openai.clone().unwrap_or_default();
        let words = self.words();
        let mut body = Map::new();
        r.model.put(&mut body, model);
        match self.endpoint {
            Endpoint::Chat => {
                let mut messages: Vec<Value> = extra
                    .earlier
                    .iter()
                    .map(|m| message(m.role, &m.words, m.parts))
                    .collect();
                if !words.is_empty() {
                    messages.push(message(Role::User, &words, extra.parts));
                }
                body.insert("messages".into(), Value::Array(messages));
            }
            _ if extra.text_prompt => {
                body.insert("prompt".into(), text(&words).into());
            }
            _ => {
                body.insert("prompt".into(), json!(words));
            }
        }
        r.max_tokens.put(&mut body, "max_tokens");
        r.n.put(&mut body, "n");
        match self.endpoint {
            Endpoint::Chat => {
                extra.chat_logprobs.put(&mut body, "logprobs");
                extra.top_logprobs.put(&mut body, "top_logprobs");
            }
            _ => {
                r.logprobs.put(&mut body, "logprobs");
                // `max_tokens: 0` with `echo` asks for the prompt alone and
                // never reaches the engine: not a case about streaming.
                if r.max_tokens != Knob::Value(0) {
                    extra.echo.put(&mut body, "echo");
                }
            }
        }
        r.put_stream(&mut body);
        r.return_token_ids.put(&mut body, "return_token_ids");
        if !extra.stop.is_empty() {
            body.insert("stop".into(), json!(extra.stop));
        }
        RequestSpec {
            method: "POST".into(),
            endpoint: self.endpoint,
            path: None,
            headers: BTreeMap::new(),
            body: Some(Value::Object(body)),
            raw_body: None,
            content_type: None,
        }
    }
}

/// Words as the text the tokenizer turns back into them: `t5 t7`.
fn text(words: &[u32]) -> String {
    let words: Vec<String> = words.iter().map(|w| format!("t{w}")).collect();
    words.join(" ")
}

/// A chat message whose content is `words`, as one text or as two text
/// parts. The first part ends with a space: Python joins parts with a
/// newline and vllm-rs 0.32 with nothing, and this way both make the same
/// words (the difference itself is a fixture's business, not the fuzzer's).
fn message(role: Role, words: &[u32], parts: bool) -> Value {
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
    fn put_stream(&self, body: &mut Map<String, Value>) {
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
    fn put(self, body: &mut Map<String, Value>, served: &str) {
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

/// Generate's step tokens: any ids of the vocabulary.
fn id_tokens() -> BoxedStrategy<Vec<u32>> {
    proptest::collection::vec(0..VOCAB, 0..4).boxed()
}

/// Text endpoints' step tokens: mostly words, and characters of two to four
/// byte tokens (which [`script`] sometimes splits over two steps), a stray
/// byte that is no character, and the end-of-sequence special.
fn text_tokens() -> BoxedStrategy<Vec<u32>> {
    let piece = prop_oneof![
        8 => (0..WORDS).prop_map(|w| vec![w]),
        4 => proptest::sample::select(vec!["é", "€", "😀", "ß"])
            .prop_map(model::vocabulary::byte_tokens),
        1 => (WORDS..VOCAB).prop_map(|b| vec![b]),
        1 => Just(vec![model::vocabulary::EOS]),
    ];
    proptest::collection::vec(piece, 0..4)
        .prop_map(|pieces| pieces.concat())
        .boxed()
}

fn body(late_prompt_info: bool, tokens: BoxedStrategy<Vec<u32>>) -> impl Strategy<Value = Body> {
    (
        0u64..=5,
        tokens,
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
        proptest::collection::vec(body(scope.late_prompt_info, id_tokens()), 0..6),
        body(false, id_tokens()),
        end(scope.engine_failures),
    )
        .prop_map(|(middle, last, end)| assemble(middle, last, end))
}

/// Scripts for the text endpoints: as [`script`], with [`text_tokens`], and a
/// step's last token sometimes moved to the next step, so a character's
/// bytes arrive in two engine outputs.
pub fn text_script(scope: Scope) -> impl Strategy<Value = Script> {
    (
        proptest::collection::vec(body(scope.late_prompt_info, text_tokens()), 0..6),
        body(false, text_tokens()),
        end(scope.engine_failures),
        proptest::collection::vec(proptest::bool::weighted(0.4), 6),
    )
        .prop_map(|(mut middle, mut last, end, split)| {
            for i in 0..middle.len() {
                if !split[i] {
                    continue;
                }
                let Some(moved) = middle[i].tokens.pop() else {
                    continue;
                };
                match middle.get_mut(i + 1) {
                    Some(next) => next.tokens.insert(0, moved),
                    None => last.tokens.insert(0, moved),
                }
            }
            assemble(middle, last, end)
        })
}

fn assemble(middle: Vec<Body>, last: Body, end: End) -> Script {
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

/// The knobs of `/v1/completions` or `/v1/chat/completions`.
pub fn openai(endpoint: Endpoint) -> impl Strategy<Value = OpenAi> {
    let top_logprobs = prop_oneof![
        12 => Just(Knob::Absent),
        1 => Just(Knob::Null),
        6 => (0i32..=5).prop_map(Knob::Value),
        1 => prop_oneof![Just(-1i32), Just(21)].prop_map(Knob::Value),
        1 => Just(Knob::WrongType),
    ];
    let chat = endpoint == Endpoint::Chat;
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
            move |(echo, chat_logprobs, top_logprobs, stop, text_prompt, earlier, parts)| {
                let mut o = OpenAi {
                    stop,
                    ..OpenAi::default()
                };
                if chat {
                    o.chat_logprobs = chat_logprobs;
                    o.top_logprobs = top_logprobs;
                    o.earlier = earlier;
                    o.parts = parts;
                } else {
                    o.echo = echo;
                    o.text_prompt = text_prompt;
                }
                o
            },
        )
}

/// Whole cases for `scope.endpoints`. For generate alone, exactly the cases
/// (and so, for a seed, the same sequence) as before other endpoints existed.
pub fn case(scope: Scope) -> BoxedStrategy<Case> {
    match scope.endpoints {
        Endpoints::One(Endpoint::Generate) => generate_case(scope),
        Endpoints::One(endpoint) => openai_case(scope, endpoint),
        Endpoints::All => prop_oneof![
            generate_case(scope),
            openai_case(scope, Endpoint::Completions),
            openai_case(scope, Endpoint::Chat),
        ]
        .boxed(),
    }
}

fn generate_case(scope: Scope) -> BoxedStrategy<Case> {
    let script = if scope.scripts {
        proptest::option::weighted(0.8, script(scope)).boxed()
    } else {
        Just(None).boxed()
    };
    (request(), script)
        .prop_map(|(request, script)| Case {
            endpoint: Endpoint::Generate,
            request,
            openai: None,
            script,
        })
        .boxed()
}

fn openai_case(scope: Scope, endpoint: Endpoint) -> BoxedStrategy<Case> {
    let script = if scope.scripts {
        proptest::option::weighted(0.8, text_script(scope)).boxed()
    } else {
        Just(None).boxed()
    };
    (request(), openai(endpoint), script)
        .prop_map(move |(request, openai, mut script)| {
            if let (Some(script), Some(k)) = (
                script.as_mut(),
                asked_candidates(endpoint, &request, &openai),
            ) {
                keep_candidates(script, k);
            }
            Case {
                endpoint,
                request,
                openai: Some(openai),
                script,
            }
        })
        .boxed()
}

/// How many top candidates per token an engine would send for this
/// request: the number of logprobs asked for (`None`: none asked, or -1).
fn asked_candidates(endpoint: Endpoint, request: &Request, openai: &OpenAi) -> Option<usize> {
    let asked = match endpoint {
        Endpoint::Chat => match (&openai.chat_logprobs, &openai.top_logprobs) {
            (Knob::Value(true), Knob::Value(k)) => Some(*k),
            (Knob::Value(true), _) => Some(0),
            _ => None,
        },
        _ => match request.logprobs {
            Knob::Value(k) => Some(k),
            _ => None,
        },
    };
    asked.and_then(|k| usize::try_from(k).ok())
}

/// A real engine sends the sampled token and exactly the top `k` the request
/// asked for; the frontends differ on surplus candidates (vllm-rs lists
/// them, Python keeps `k`), which no engine sends, so scripts keep at most `k`.
fn keep_candidates(script: &mut Script, k: usize) {
    for step in &mut script.steps {
        for position in step.logprobs.iter_mut().flatten() {
            position.truncate(1 + k);
        }
    }
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
