//! What a registry entry may ask of a case: the facts of one fixture, as a
//! JSON document that [`super::condition`] paths read.
//!
//! An entry describes a behaviour ("a request that asks for logprobs and
//! whose engine finishes without a token"), never the fixtures that happen
//! to show it, so a new fixture with the same behaviour is `known` without
//! touching the registry. The facts are what such a description needs:
//!
//! | root | what it holds |
//! |---|---|
//! | `endpoint` | `"generate"`, `"completions"` or `"chat"` |
//! | `request` | the JSON body as sent (`null` for a raw, malformed body) |
//! | `sampling` | where the sampling parameters live: generate's `sampling_params`, the body itself on completions and chat |
//! | `stream` | whether the request streams (`stream: true`) |
//! | `server` | the server options: `enable_prompt_tokens_details`, `served_model_name`, `api_key` (whether one is set) |
//! | `prompt` | `len` and `out_of_vocab` of the prompt the engine sees, when the body has a well-formed one |
//! | `context` | `room`: how many tokens the context leaves after the prompt |
//! | `model` | `served`: the request names no model, or one the server serves |
//! | `script` | properties of the engine script, listed in [`SCRIPT_FACTS`] |
//!
//! ```
//! use harness::divergence::facts::CaseFacts;
//! use mock_engine::script::Fixture;
//!
//! let fixture: Fixture = serde_json::from_str(r#"{
//!     "name": "any name at all",
//!     "request": { "body": { "token_ids": [1, 2], "sampling_params": {"n": 2}, "stream": true } },
//!     "engine": { "steps": [ { "delay_ms": 20, "tokens": [], "finish": "error" } ] }
//! }"#).unwrap();
//! let facts = CaseFacts::of(&fixture);
//! assert_eq!(facts.get("sampling.n"), vec![&serde_json::json!(2)]);
//! assert_eq!(facts.get("script.error_finish"), vec![&serde_json::json!(true)]);
//! assert_eq!(facts.get("script.tokens"), vec![&serde_json::json!(0)]);
//! assert!(facts.get("request.stream_options").is_empty());
//! ```

use mock_engine::script::{Endpoint, FinishReason, Fixture, Step};
use model::vocabulary::{BYTES_START, MAX_MODEL_LEN, VOCAB};
use serde_json::{Map, Value, json};

use crate::endpoint::family;

/// The roots a condition path may start with.
pub const ROOTS: &[&str] = &[
    "endpoint", "request", "sampling", "stream", "server", "prompt", "context", "model", "script",
];

/// The facts under `script`, each with what it says. Conditions on any
/// other `script.*` name are refused when the registry loads.
pub const SCRIPT_FACTS: &[(&str, &str)] = &[
    (
        "scripted",
        "the fixture scripts the engine (else the generator answers)",
    ),
    (
        "paced",
        "every step waits at least 20 ms (PACED_MIN_DELAY_MS)",
    ),
    (
        "chunks_comparable",
        "paced and one choice: servers must send one chunk per step",
    ),
    ("samples", "how many samples the script has (1 + `samples`)"),
    ("tokens", "how many tokens sample 0 generates"),
    (
        "finish",
        "the finish reason of sample 0's last step (null if none)",
    ),
    ("error_finish", "some step finishes with `error`"),
    ("kills_engine", "some step `fail`s: the engine core dies"),
    ("stalls", "some step stalls: the engine never answers again"),
    (
        "tokenless_step",
        "some step carries no token (an empty or finish-only step)",
    ),
    ("finish_only_step", "some step finishes without a token"),
    (
        "first_step_tokenless",
        "the first step of sample 0 carries no token",
    ),
    (
        "makes_text",
        "sample 0's shown tokens decode to some text (special tokens skipped; an engine `stop`'s last token, never shown, left out)",
    ),
    (
        "byte_tokens",
        "some token, or logprob candidate, is a byte of a multi-byte character",
    ),
    (
        "ends_mid_character",
        "sample 0's shown text, as the tokenizer decodes it, ends in U+FFFD: inside a multi-byte character, or in bytes that are no UTF-8 (an engine `stop`'s last token, never shown, left out)",
    ),
    (
        "cached_tokens",
        "the largest `cached_tokens` a step reports (0 if none)",
    ),
    ("logprobs", "the script gives logprob candidates"),
    (
        "bytes_not_utf8",
        "sample 0's shown tokens hold a run of byte tokens that is no UTF-8 (a byte no character starts with, or a character cut by a word or by the end)",
    ),
    (
        "candidates_past_asked",
        "some step's script lists more distinct tokens (the sampled one among them) than the candidates asked for, or than one when none is",
    ),
    (
        "special_token",
        "a token or a logprob candidate is a special token (`<unk>`, `<s>`, `</s>`)",
    ),
    (
        "sampled_outside_top",
        "a sampled token is not among the top candidates listed with it",
    ),
    (
        "sampled_in_top",
        "a sampled token is also listed among its top candidates",
    ),
];

/// The facts under `server`, `prompt` and `context`.
const SERVER_FACTS: &[&str] = &[
    "enable_prompt_tokens_details",
    "served_model_name",
    "api_key",
];
const PROMPT_FACTS: &[&str] = &["len", "out_of_vocab"];
const CONTEXT_FACTS: &[&str] = &["room"];
const MODEL_FACTS: &[&str] = &["served"];

/// The names a condition may use under `root`, for the roots whose facts
/// are a fixed set; `None` for the roots that hold the request as sent.
pub fn names_under(root: &str) -> Option<Vec<&'static str>> {
    match root {
        "script" => Some(SCRIPT_FACTS.iter().map(|(n, _)| *n).collect()),
        "server" => Some(SERVER_FACTS.to_vec()),
        "prompt" => Some(PROMPT_FACTS.to_vec()),
        "context" => Some(CONTEXT_FACTS.to_vec()),
        "model" => Some(MODEL_FACTS.to_vec()),
        _ => None,
    }
}

/// The facts of one case. Built once per fixture; cheap to query.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFacts(Value);

impl CaseFacts {
    pub fn of(fixture: &Fixture) -> Self {
        let endpoint = fixture.request.endpoint;
        let body = match &fixture.request.raw_body {
            Some(_) => Value::Null,
            None => fixture.request.body.clone().unwrap_or(Value::Null),
        };
        let sampling = family(endpoint)
            .sampling(&body)
            .cloned()
            .unwrap_or(Value::Null);
        let prompt = fixture.prompt_token_ids();
        let prompt_facts = match &prompt {
            Some(ids) => json!({
                "len": ids.len(),
                "out_of_vocab": ids.iter().any(|&id| id as usize >= model::vocabulary::size()),
            }),
            None => Value::Null,
        };
        let context = match &prompt {
            Some(ids) => json!({ "room": i64::from(MAX_MODEL_LEN) - ids.len() as i64 }),
            None => Value::Null,
        };
        let server = &fixture.server;
        let mut facts = Map::new();
        facts.insert("endpoint".into(), endpoint.name().into());
        facts.insert("stream".into(), fixture.request.is_stream().into());
        let model = json!({ "served": model_served(endpoint, &body, &server.served_model_name) });
        facts.insert("request".into(), body);
        facts.insert("model".into(), model);
        facts.insert("sampling".into(), sampling);
        facts.insert(
            "server".into(),
            json!({
                "enable_prompt_tokens_details": server.enable_prompt_tokens_details,
                "served_model_name": server.served_model_name,
                "api_key": server.api_key.is_some(),
            }),
        );
        facts.insert("prompt".into(), prompt_facts);
        facts.insert("context".into(), context);

        facts.insert("script".into(), script_facts(fixture));
        Self(Value::Object(facts))
    }

    /// The values at `path` (`request.messages[*].role`): `[*]` stands for
    /// every element of an array, `[N]` for one. An absent path gives none.
    pub fn get(&self, path: &str) -> Vec<&Value> {
        let mut at = vec![&self.0];
        for segment in path.split('.') {
            let (key, indexes) = match segment.find('[') {
                Some(i) => (&segment[..i], &segment[i..]),
                None => (segment, ""),
            };
            at = at.into_iter().filter_map(|v| v.get(key)).collect();
            for index in indexes.split_terminator(']') {
                let index = index.trim_start_matches('[');
                at = at
                    .into_iter()
                    .flat_map(|v| match (v, index) {
                        (Value::Array(items), "*") => items.iter().collect::<Vec<_>>(),
                        (Value::Array(items), n) => n
                            .parse::<usize>()
                            .ok()
                            .and_then(|n| items.get(n))
                            .into_iter()
                            .collect(),
                        _ => Vec::new(),
                    })
                    .collect();
            }
        }
        at
    }
}

/// Whether the model the body names (if any) is the one served: absent or
/// `null` is; so is `""` on the OpenAI routes (the default model), but not
/// on generate, which wants the name.
fn model_served(endpoint: Endpoint, body: &Value, served: &str) -> bool {
    match body.get("model") {
        None | Some(Value::Null) => true,
        Some(Value::String(m)) => family(endpoint).serves(m, served),
        Some(_) => false,
    }
}

fn script_facts(fixture: &Fixture) -> Value {
    let script = &fixture.engine;
    let steps = &script.steps;
    let all = || script.all_steps();
    let is_byte_of_char = |t: &u32| (BYTES_START..VOCAB).contains(t) && t - BYTES_START >= 0x80;
    let listed = candidate_ids(fixture);
    let candidates = || {
        all()
            .filter_map(|s| s.logprobs.as_ref())
            .flatten()
            .filter_map(|entries| entries.split_first())
    };
    json!({
        "scripted": !steps.is_empty(),
        "paced": script.is_paced(),
        "chunks_comparable": fixture.chunks_comparable(),
        "samples": 1 + script.samples.len(),
        "tokens": steps.iter().map(|s| s.tokens.len()).sum::<usize>(),
        "finish": steps.iter().rev().find_map(|s| s.finish).map(FinishReason::as_str),
        "error_finish": all().any(|s| s.finish == Some(FinishReason::Error)),
        "kills_engine": all().any(|s| s.fail.is_some()),
        "stalls": all().any(|s| s.stall),
        "tokenless_step": all().any(|s| s.tokens.is_empty()),
        "finish_only_step": all().any(|s| s.tokens.is_empty() && s.finish.is_some()),
        "first_step_tokenless": steps.first().is_some_and(|s| s.tokens.is_empty()),
        "makes_text": makes_text(steps),
        "byte_tokens": all().flat_map(|s| &s.tokens).any(is_byte_of_char)
            || listed.iter().any(is_byte_of_char),
        "ends_mid_character": ends_mid_character(steps),
        "cached_tokens": all().filter_map(|s| s.cached_tokens).max().unwrap_or(0),
        "logprobs": all().any(|s| s.logprobs.is_some()),
        "bytes_not_utf8": bytes_not_utf8(steps),
        "candidates_past_asked": candidates_past_asked(fixture),
        "special_token": all().flat_map(|s| &s.tokens).any(|&t| t >= VOCAB)
            || listed.iter().any(|&t| t >= VOCAB),
        "sampled_outside_top": candidates()
            .any(|(sampled, top)| !top.iter().any(|c| c.token_id == sampled.token_id)
                && !top.is_empty()),
        "sampled_in_top": candidates()
            .any(|(sampled, top)| top.iter().any(|c| c.token_id == sampled.token_id)),
    })
}

fn makes_text(steps: &[Step]) -> bool {
    model::Tokenizer::shared_built_in()
        .decode(&shown_tokens(steps), true)
        .is_ok_and(|text| !text.is_empty())
}

/// Sample 0's tokens that frontends detokenize: all of them but the stop
/// token of an engine `stop` on a token (the last step's last token).
fn shown_tokens(steps: &[Step]) -> Vec<u32> {
    let mut tokens: Vec<u32> = steps
        .iter()
        .flat_map(|s| s.tokens.iter().copied())
        .collect();
    if steps
        .last()
        .is_some_and(|s| s.finish == Some(FinishReason::Stop) && !s.tokens.is_empty())
    {
        tokens.pop();
    }
    tokens
}

/// The logprob candidates the engine lists: a step's own, or, for a step
/// whose script gives none, the ones the mock engine makes up for a request
/// that asks for candidates ([`mock_engine::engine::synthetic_logprobs`]).
fn candidate_ids(fixture: &Fixture) -> Vec<u32> {
    let asked = asked_candidates(fixture);
    fixture
        .engine
        .all_steps()
        .flat_map(|step| match (&step.logprobs, asked) {
            (Some(positions), _) => positions.iter().flatten().map(|e| e.token_id).collect(),
            (None, Some(top)) => step
                .tokens
                .iter()
                .flat_map(|&t| mock_engine::engine::synthetic_logprobs(t, top))
                .map(|e| e.token_id)
                .collect(),
            (None, None) => Vec::new(),
        })
        .collect()
}

/// Whether a step's script lists more distinct tokens than the request
/// asks for (`max(k, 1)`: the sampled token and its candidates): what
/// a frontend keeps of the engine's list then depends on whether it cuts.
fn candidates_past_asked(fixture: &Fixture) -> bool {
    let Some(asked) = asked_candidates(fixture) else {
        return false;
    };
    fixture
        .engine
        .all_steps()
        .filter_map(|s| s.logprobs.as_ref())
        .flatten()
        .any(|entries| {
            let distinct: std::collections::BTreeSet<u32> =
                entries.iter().map(|e| e.token_id).collect();
            distinct.len() > asked.max(1) as usize
        })
}

/// How many candidates per token the request asks for, when it asks.
fn asked_candidates(fixture: &Fixture) -> Option<u32> {
    let body = fixture.request.body.as_ref()?;
    let count = family(fixture.request.endpoint).logprobs_asked(body)?;
    u32::try_from(count).ok()
}

/// Whether some run of byte tokens among sample 0's shown tokens is no
/// UTF-8. Frontends render such bytes as they each see fit (vllm-rs one
/// U+FFFD per byte, Python's incremental detokenizer drops them).
fn bytes_not_utf8(steps: &[Step]) -> bool {
    let tokens = shown_tokens(steps);
    tokens
        .split(|t| !(BYTES_START..VOCAB).contains(t))
        .any(|run| {
            let bytes: Vec<u8> = run.iter().map(|t| (t - BYTES_START) as u8).collect();
            std::str::from_utf8(&bytes).is_err()
        })
}

/// Whether sample 0's shown text, as the model's tokenizer decodes it,
/// ends in U+FFFD: on the first bytes of a multi-byte character, or in a
/// run of byte tokens that is no UTF-8 (byte fallback writes U+FFFD for
/// each byte of it). A detokenizer holds such text back.
fn ends_mid_character(steps: &[Step]) -> bool {
    model::Tokenizer::shared_built_in()
        .decode(&shown_tokens(steps), true)
        .is_ok_and(|text| text.ends_with(char::REPLACEMENT_CHARACTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(json: &str) -> Fixture {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn sampling_is_where_the_endpoint_keeps_it() {
        let generate = fixture(
            r#"{"name":"a","request":{"body":{"token_ids":[1],"sampling_params":{"logprobs":2}}}}"#,
        );
        let completions = fixture(
            r#"{"name":"b","request":{"endpoint":"completions","body":{"prompt":[1],"logprobs":2}}}"#,
        );
        for f in [generate, completions] {
            assert_eq!(CaseFacts::of(&f).get("sampling.logprobs"), vec![&json!(2)]);
        }
    }

    #[test]
    fn wildcards_reach_every_element_and_absent_paths_give_nothing() {
        let f = fixture(
            r#"{"name":"c","request":{"endpoint":"chat","body":{"messages":[
                {"role":"system","content":"x"},{"role":"critic","content":[{"type":"text","text":"y"}]}]}}}"#,
        );
        let facts = CaseFacts::of(&f);
        assert_eq!(
            facts.get("request.messages[*].role"),
            vec![&json!("system"), &json!("critic")]
        );
        assert_eq!(
            facts.get("request.messages[1].role"),
            vec![&json!("critic")]
        );
        assert!(facts.get("request.messages[7].role").is_empty());
        assert!(facts.get("request.nothing.here").is_empty());
    }

    #[test]
    fn script_facts_describe_bytes_logprobs_and_finishes() {
        let e_acute = model::vocabulary::byte_tokens("é");
        let f = fixture(&format!(
            r#"{{"name":"d","request":{{"body":{{"token_ids":[1]}}}},"engine":{{"steps":[
                {{"delay_ms":20,"tokens":[{}],
                  "logprobs":[[{{"token_id":{},"logprob":-1.0,"rank":2}},{{"token_id":{},"logprob":-1.0,"rank":1}}]]}},
                {{"delay_ms":20,"tokens":[],"finish":"stop"}}]}}}}"#,
            e_acute[0], e_acute[0], e_acute[0]
        ));
        let facts = CaseFacts::of(&f);
        let fact = |name: &str| facts.get(&format!("script.{name}"))[0].clone();
        assert_eq!(fact("byte_tokens"), json!(true));
        assert_eq!(fact("ends_mid_character"), json!(true));
        assert_eq!(fact("sampled_in_top"), json!(true));
        assert_eq!(fact("sampled_outside_top"), json!(false));
        assert_eq!(fact("finish_only_step"), json!(true));
        assert_eq!(fact("first_step_tokenless"), json!(false));
        assert_eq!(fact("paced"), json!(true));
        assert_eq!(fact("finish"), json!("stop"));
        // What `names_under` lets a condition name is what is computed.
        for root in ["script", "server", "prompt", "context", "model"] {
            let mut names = names_under(root).unwrap();
            names.sort_unstable();
            let computed = facts.get(root)[0].as_object().unwrap();
            let mut computed: Vec<&str> = computed.keys().map(String::as_str).collect();
            computed.sort_unstable();
            assert_eq!(computed, names, "{root}");
        }
    }

    #[test]
    fn a_whole_character_in_bytes_does_not_end_mid_character() {
        let bytes = model::vocabulary::byte_tokens("é");
        let step = |tokens: Vec<u32>| Step {
            tokens,
            ..Step::default()
        };
        assert!(!ends_mid_character(&[step(bytes.clone())]));
        assert!(ends_mid_character(&[step(vec![bytes[0]])]));
        assert!(!ends_mid_character(&[step(vec![bytes[0]]), step(vec![7])]));
        // A lone continuation byte is no character either. A run of bytes
        // that is no UTF-8 is U+FFFD for each byte, whatever follows in the
        // run; a word after it ends the text well.
        let lone = model::vocabulary::byte_token(0x80);
        assert!(ends_mid_character(&[step(vec![lone])]));
        let a = model::vocabulary::byte_token(b'a');
        assert!(ends_mid_character(&[step(vec![lone, a])]));
        assert!(ends_mid_character(&[step(vec![lone]), step(bytes.clone())]));
        assert!(!ends_mid_character(&[step(vec![lone]), step(vec![33])]));
        // A whole character whose last byte is the stop token shows only
        // its first byte.
        let stopped = Step {
            tokens: bytes.clone(),
            finish: Some(FinishReason::Stop),
            ..Step::default()
        };
        assert!(ends_mid_character(&[stopped]));
        // Bytes that are no UTF-8, anywhere; whole characters are.
        assert!(bytes_not_utf8(&[step(vec![lone]), step(vec![33])]));
        assert!(bytes_not_utf8(&[step(vec![bytes[0], 33])]));
        assert!(!bytes_not_utf8(&[step(bytes.clone()), step(vec![33])]));
    }
}
