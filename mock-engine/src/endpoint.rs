//! The token endpoints a fixture's request can be for, and the one place
//! their HTTP paths are written: where each endpoint's prompt sits in a
//! request body and how it becomes the token ids the engine sees.
//!
//! Scripts are keyed on those ids, so the harness, the reference server and
//! the engine must all turn a body into the same prompt; they ask
//! [`Endpoint`] rather than read the body themselves.
//!
//! ```
//! use mock_engine::script::Endpoint;
//!
//! let body = serde_json::json!({"prompt": "t5 t7"});
//! assert_eq!(Endpoint::Completions.prompt_token_ids(&body), Some(vec![5, 7]));
//! assert_eq!("chat".parse::<Endpoint>(), Ok(Endpoint::Chat));
//! assert_eq!(Endpoint::Chat.path(), mock_engine::script::CHAT_PATH);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

// The paths, written once: the reference server routes by them and the
// harness sends to them, both through [`Endpoint::path`].
pub const GENERATE_PATH: &str = "/inference/v1/generate";
pub const COMPLETIONS_PATH: &str = "/v1/completions";
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// The token endpoints both real frontends serve from the same engine
/// outputs. A script is written once and replays on each.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// [`GENERATE_PATH`]: token ids in, token ids out.
    #[default]
    Generate,
    /// [`COMPLETIONS_PATH`]: a prompt as ids or text, text out.
    Completions,
    /// [`CHAT_PATH`]: messages through the chat template, deltas out.
    Chat,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Generate, Endpoint::Completions, Endpoint::Chat];

    /// The path a request for this endpoint goes to.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Generate => GENERATE_PATH,
            Endpoint::Completions => COMPLETIONS_PATH,
            Endpoint::Chat => CHAT_PATH,
        }
    }

    /// The name fixtures and the command line use: `generate`,
    /// `completions`, `chat`.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Generate => "generate",
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat",
        }
    }

    pub fn is_generate(&self) -> bool {
        *self == Endpoint::Generate
    }

    /// Where the prompt is in a body for this endpoint, as a JSON path.
    pub fn prompt_field(self) -> &'static str {
        match self {
            Endpoint::Generate => "request.body.token_ids",
            Endpoint::Completions => "request.body.prompt",
            Endpoint::Chat => "request.body.messages",
        }
    }

    /// What [`Endpoint::prompt_field`] must hold for a script to be chosen
    /// by it, said for a fixture's author.
    pub fn prompt_form(self) -> &'static str {
        match self {
            Endpoint::Generate => "a list of token ids",
            Endpoint::Completions => "token ids or one text",
            Endpoint::Chat => "a list of `{role, content}` the chat template renders",
        }
    }

    /// The body field that holds the sampling knobs (`n`, `max_tokens`,
    /// `logprobs`, ...) as an object of their own: generate's
    /// `sampling_params`; completions and chat keep them at the top.
    pub fn sampling_key(self) -> Option<&'static str> {
        match self {
            Endpoint::Generate => Some("sampling_params"),
            Endpoint::Completions | Endpoint::Chat => None,
        }
    }

    /// The object that holds a body's sampling knobs.
    pub fn sampling(self, body: &Value) -> Option<&Value> {
        match self.sampling_key() {
            Some(key) => body.get(key),
            None => Some(body),
        }
    }

    /// The `n` (samples per request) a body for this endpoint asks for, if
    /// it says.
    pub fn n_of(self, body: &Value) -> Option<u64> {
        self.sampling(body)?.get("n").and_then(Value::as_u64)
    }

    /// The prompt token ids the engine sees for this body, when it holds
    /// one well-formed prompt: `token_ids` (generate); `prompt` as ids or
    /// as text (completions, tokenized with special tokens unless
    /// `add_special_tokens` is false); `messages` rendered by the chat
    /// template (chat, with the generation prompt unless
    /// `add_generation_prompt` is false, tokenized without special tokens
    /// unless `add_special_tokens` is true), all with the tiny model's
    /// tokenizer.
    pub fn prompt_token_ids(self, body: &Value) -> Option<Vec<u32>> {
        let flag =
            |key: &str, default: bool| body.get(key).and_then(Value::as_bool).unwrap_or(default);
        match self {
            Endpoint::Generate => ids_of(body.get("token_ids")?),
            Endpoint::Completions => match body.get("prompt")? {
                Value::String(text) => model::Tokenizer::shared_built_in()
                    .encode(text, flag("add_special_tokens", true))
                    .ok(),
                // One prompt as a list of strings is a batch, not ids.
                ids @ Value::Array(list) if list.iter().all(Value::is_number) => ids_of(ids),
                _ => None,
            },
            Endpoint::Chat => {
                let messages = chat_messages_as_text(body.get("messages")?)?;
                let tokenizer = model::Tokenizer::shared_built_in();
                let text = tokenizer
                    .render_chat(&messages, flag("add_generation_prompt", true))
                    .ok()?;
                tokenizer
                    .encode(&text, flag("add_special_tokens", false))
                    .ok()
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("`{s}` is not an endpoint (generate, completions, chat)"))
    }
}

fn ids_of(value: &Value) -> Option<Vec<u32>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// Messages whose `content` is a list of text parts, with the parts joined by
/// newlines, as vLLM hands a template that reads `content` as a string.
fn chat_messages_as_text(messages: &Value) -> Option<Value> {
    let list = messages.as_array()?;
    let mut out = Vec::with_capacity(list.len());
    for message in list {
        let mut message = message.as_object()?.clone();
        if let Some(Value::Array(parts)) = message.get("content") {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            message.insert("content".into(), Value::String(texts?.join("\n")));
        }
        out.push(Value::Object(message));
    }
    Some(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_is_read_where_each_endpoint_puts_it() {
        use serde_json::json;
        let generate = json!({"token_ids": [1], "n": 5, "sampling_params": {"n": 2}});
        assert_eq!(Endpoint::Generate.n_of(&generate), Some(2));
        assert_eq!(Endpoint::Generate.n_of(&json!({"n": 2})), None);
        for endpoint in [Endpoint::Completions, Endpoint::Chat] {
            assert_eq!(endpoint.n_of(&generate), Some(5), "{endpoint}");
            assert_eq!(endpoint.n_of(&json!({"n": "2"})), None, "{endpoint}");
        }
    }

    #[test]
    fn prompts_are_the_ids_the_engine_sees_on_every_endpoint() {
        let prompt = |endpoint: Endpoint, body: Value| endpoint.prompt_token_ids(&body);
        use serde_json::json;
        assert_eq!(
            prompt(Endpoint::Generate, json!({"token_ids": [5, 7]})),
            Some(vec![5, 7])
        );
        assert_eq!(
            prompt(Endpoint::Completions, json!({"prompt": [5, 7]})),
            Some(vec![5, 7])
        );
        assert_eq!(
            prompt(Endpoint::Completions, json!({"prompt": "t5 t7"})),
            Some(vec![5, 7])
        );
        assert_eq!(
            prompt(Endpoint::Completions, json!({"prompt": ["t5", "t7"]})),
            None
        );
        let chat = json!({"messages": [{"role": "system", "content": "t9"},
                                       {"role": "user", "content": [{"type": "text", "text": "t10"},
                                                                    {"type": "text", "text": "t11"}]}]});
        assert_eq!(
            prompt(Endpoint::Chat, chat.clone()),
            Some(vec![2, 9, 3, 10, 11, 4])
        );
        let mut no_generation_prompt = chat;
        no_generation_prompt["add_generation_prompt"] = json!(false);
        assert_eq!(
            prompt(Endpoint::Chat, no_generation_prompt),
            Some(vec![2, 9, 3, 10, 11])
        );
        assert_eq!(prompt(Endpoint::Chat, json!({"messages": "t5"})), None);
    }
}
