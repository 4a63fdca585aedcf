//! What the harness knows of each endpoint family, one module per family
//! behind one trait, [`Family`]: the request rules (vllm-rs's validation of
//! the pinned release, the contract the reference reproduces), where a
//! request keeps its sampling knobs and logprobs, where an answer carries
//! its text, token ids, logprobs and prompt ids, how fuzz builds its
//! requests and how bench sends its load.
//!
//! The oracle, the registry's facts, fuzz and bench ask the family; the
//! only `match` on [`Endpoint`] in the harness is [`family`]. Adding an
//! endpoint family means a variant in `mock_engine::script::Endpoint` (its
//! name, path and prompt), a module here, and a route folder in the
//! reference server.
//!
//! ```
//! use harness::endpoint::{Validity, family};
//! use mock_engine::script::Endpoint;
//! use serde_json::json;
//!
//! let chat = family(Endpoint::Chat);
//! let body = json!({"messages": [{"role": "user", "content": "t5"}], "logprobs": true});
//! assert_eq!(chat.logprobs_asked(&body), Some(0));
//! assert_eq!(chat.validity(&body, "tiny"), Validity::Valid);
//! let unknown = json!({"token_ids": [5], "sampling_params": {}, "model": "other"});
//! assert_eq!(family(Endpoint::Generate).validity(&unknown, "tiny"), Validity::Invalid { status: 404 });
//! ```

mod chat;
mod completions;
mod generate;
mod openai;
mod types;

use mock_engine::script::{Endpoint, RequestSpec};
use serde_json::{Map, Value};

use crate::fuzz::cases::{Case, Scope};

pub use chat::Chat;
pub use completions::Completions;
pub use generate::Generate;

/// Vocabulary of the test model, and the limits vllm-rs checks against.
pub const VOCAB_SIZE: u64 = 4099;
pub const MAX_LOGPROBS: i64 = 20;
pub const MAX_MODEL_LEN: usize = 2048;

/// Whether a request must be accepted, and if not with which status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid { status: u16 },
}

/// The family that serves `endpoint`: the one place the harness dispatches
/// on which endpoint a request goes to.
pub fn family(endpoint: Endpoint) -> &'static dyn Family {
    match endpoint {
        Endpoint::Generate => &Generate,
        Endpoint::Completions => &Completions,
        Endpoint::Chat => &Chat,
    }
}

/// One endpoint family: what its requests mean and where its answers keep
/// what the harness reads.
///
/// The answer readers have defaults for the shape the three families share
/// (OpenAI's `choices`, each with `index`, `token_ids`, `logprobs` and
/// `finish_reason`; `usage` at the top); a family overrides what it keeps
/// elsewhere.
pub trait Family: Send + Sync {
    fn endpoint(&self) -> Endpoint;

    // --- The request ---

    /// Whether the request is valid by vllm-rs's rules of the pinned
    /// release, checked in its order, and the status of the first refusal.
    fn validity(&self, body: &Value, served_model: &str) -> Validity;

    /// The object that holds the sampling knobs (`n`, `max_tokens`,
    /// `logprobs`, ...): where it is, the engine crate's `Endpoint` says,
    /// since fixtures need it too.
    fn sampling<'a>(&self, body: &'a Value) -> Option<&'a Value> {
        self.endpoint().sampling(body)
    }

    /// The number of logprob candidates per token asked for, when logprobs
    /// are asked for at all.
    fn logprobs_asked(&self, body: &Value) -> Option<i64>;

    /// Whether a `model` of this name is the served one (absent and `null`
    /// are handled by the caller).
    fn serves(&self, named: &str, served: &str) -> bool {
        named == served
    }

    /// The request id the client chose and the answer must echo
    /// (`x-request-id`, the body's), when this family echoes one.
    fn client_request_id(&self, _body: &Value, _header: Option<&str>) -> Option<String> {
        None
    }

    /// The body fields that hold the prompt.
    fn prompt_fields(&self) -> &'static [&'static str];

    /// Whether the answer is text the frontend detokenises (and so stop
    /// strings and the incremental detokenizer apply).
    fn detokenizes(&self) -> bool;

    /// Whether `stop` strings are set and honoured: the frontend may end
    /// the text (and the tokens) before the engine does.
    fn stop_strings(&self, body: &Value) -> bool {
        self.detokenizes() && body.get("stop").is_some_and(|v| !v.is_null())
    }

    /// Completions' `echo`: the answer's text starts with the prompt's.
    fn echo(&self, _body: &Value) -> bool {
        false
    }

    // --- What the contract says of the answer ---

    /// A plain request whose engine finishes with `error` is a 5xx (on
    /// generate vllm-rs answers 200 with that finish).
    fn error_finish_is_server_error(&self) -> bool {
        self.detokenizes()
    }

    /// vllm-rs streams the tokens (and their text) of an engine step that
    /// finishes with `error` before the in-band error.
    fn streams_error_step(&self) -> bool {
        self.detokenizes()
    }

    /// Every choice carries its `token_ids`, asked for or not (elsewhere
    /// only with `return_token_ids`), so tokens can be counted on the wire.
    fn always_shows_token_ids(&self) -> bool {
        false
    }

    /// Logprob entries name their token ids, so they can be matched to the
    /// tokens (elsewhere they are only counted).
    fn logprobs_name_token_ids(&self) -> bool {
        false
    }

    /// vllm-rs's completions stream ends with an in-band error at an engine
    /// output without tokens when logprobs are asked for.
    fn tokenless_logprobs_end_stream(&self) -> bool {
        false
    }

    /// The role each choice announces in its first chunk (chat's
    /// `assistant`), when the family has roles.
    fn role(&self) -> Option<&'static str> {
        None
    }

    // --- Where the answer keeps things ---

    /// The text a choice carries.
    fn text<'a>(&self, choice: &'a Value) -> Option<&'a str> {
        choice_text(choice)
    }

    /// A choice's logprob entries, one per token: `logprobs.content`
    /// (generate, chat) or `logprobs.tokens` (completions).
    fn logprob_entries<'a>(&self, choice: &'a Value) -> Option<&'a Vec<Value>> {
        let l = present(choice, "logprobs")?;
        l.get("content")
            .or_else(|| l.get("tokens"))
            .and_then(Value::as_array)
    }

    /// The token ids a choice's logprob entries name, in order.
    fn logprob_token_ids(&self, choice: &Value) -> Option<Vec<u64>> {
        let content = present(choice, "logprobs")?.get("content")?.as_array()?;
        Some(
            content
                .iter()
                .filter_map(|c| c.get("token_id").and_then(Value::as_u64))
                .collect(),
        )
    }

    /// The prompt ids an answer (or a chunk) carries: at the top (generate,
    /// chat) or on a choice (completions).
    fn prompt_token_ids<'a>(&self, answer: &'a Value) -> Option<&'a Value> {
        present(answer, "prompt_token_ids").or_else(|| {
            answer
                .get("choices")?
                .as_array()?
                .iter()
                .find_map(|c| present(c, "prompt_token_ids"))
        })
    }

    // --- fuzz and bench ---

    /// Whole fuzz cases for this family.
    fn fuzz_cases(&self, scope: Scope) -> proptest::strategy::BoxedStrategy<Case>;

    /// The HTTP request of a fuzz case, for a server that serves `model`.
    fn fuzz_request(&self, case: &Case, model: &str) -> RequestSpec;

    /// The prompt ids the engine sees for a fuzz case.
    fn fuzz_prompt(&self, case: &Case) -> Vec<u32> {
        self.fuzz_request(case, "")
            .body
            .as_ref()
            .and_then(|b| self.endpoint().prompt_token_ids(b))
            .unwrap_or_default()
    }

    /// Bench's request body for one prompt of ids: the prompt and
    /// `max_tokens` where this family keeps them, and what makes its chunks
    /// countable in tokens.
    fn bench_body(&self, prompt: &[u32], model: &str, max_tokens: u32) -> Map<String, Value>;
}

/// A value that is there and not `null`.
pub(crate) fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|v| !v.is_null())
}

/// The text a choice carries in the shape the families share: completions'
/// `text`, a chat chunk's `delta.content`, a chat answer's
/// `message.content` (generate has none).
pub fn choice_text(choice: &Value) -> Option<&str> {
    choice
        .get("text")
        .or_else(|| choice.pointer("/delta/content"))
        .or_else(|| choice.pointer("/message/content"))
        .and_then(Value::as_str)
}

/// Token ids of a choice object.
pub fn token_ids(choice: &Value) -> Vec<u64> {
    choice
        .get("token_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
