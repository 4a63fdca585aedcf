//! What a request means for its answer: validity, response mode and
//! options, and what the engine script makes the client see.

use mock_engine::script::{Endpoint, FinishReason, RequestSpec, Script};
use serde_json::Value;

use super::Validity;
use crate::endpoint::{Family, family};

/// How the engine script ends, as the client must see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptEnd {
    Finish(FinishReason),
    /// `finish: "error"`: an in-band error in a stream.
    ErrorFinish,
    /// The engine stream broke.
    Fail,
}

/// The text of a script's tokens, as a frontend's incremental detokenizer
/// makes it: primed with the prompt (so the first word has its leading
/// space), each token stepped in, a character released once whole (bytes of
/// an unfinished one never come out), special tokens skipped, and the stop
/// token of a `stop` finish left out (vLLM's `detokenizer.update` with
/// `stop_terminated`, without `include_stop_str_in_output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedText {
    /// Of the tokens a stream carries.
    pub streamed: String,
    /// Of every token the engine emitted.
    pub all: String,
    /// The same texts with a character left unfinished at the end flushed
    /// as U+FFFD, as vllm-rs does (Python never releases it). Equal to the
    /// texts above when every character is whole.
    pub streamed_flushed: String,
    pub all_flushed: String,
}

impl ExpectedText {
    pub fn of(prompt: &[u64], script: &ScriptOutcome) -> Option<Self> {
        let ids = |t: &[u64]| -> Option<Vec<u32>> {
            t.iter().map(|&id| u32::try_from(id).ok()).collect()
        };
        let prompt = ids(prompt)?;
        let text = |tokens: &[u64]| -> Option<(String, String)> {
            let tokenizer = model::Tokenizer::shared_built_in();
            let mut stream = tokenizer.detokenizer(&prompt, true);
            let mut out = String::new();
            let mut tokens = ids(tokens)?;
            if script.stop_token {
                tokens.pop();
            }
            for &id in &tokens {
                out.push_str(&stream.step(id).ok()?.unwrap_or_default());
            }
            // vllm-rs's final flush lets out what is still held back.
            let flushed = out.clone() + &stream.flush().ok()?.unwrap_or_default();
            Some((out, flushed))
        };
        let (streamed, streamed_flushed) = text(&script.streamed_tokens)?;
        let (all, all_flushed) = text(&script.all_tokens)?;
        Some(Self {
            streamed,
            all,
            streamed_flushed,
            all_flushed,
        })
    }
}

/// What the script makes the client see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptOutcome {
    /// Tokens a stream carries (an error step's tokens are not sent).
    pub streamed_tokens: Vec<u64>,
    /// Every token the engine emitted.
    pub all_tokens: Vec<u64>,
    pub end: ScriptEnd,
    pub late_prompt_info: bool,
    /// Some engine output carries no token (an empty or finish-only step).
    pub tokenless_step: bool,
    /// The engine finishes with `stop` in a step with tokens, on a token (no
    /// stop reason, or a token id): that last token is the stop token, which
    /// frontends do not detokenize. A stop reason that is a string says the
    /// engine matched text, and the token's text is shown.
    pub stop_token: bool,
}

impl ScriptOutcome {
    pub fn of(script: &Script) -> Option<Self> {
        let last = script.steps.last()?;
        let end = match (last.finish, &last.fail) {
            (_, Some(_)) => ScriptEnd::Fail,
            (Some(FinishReason::Error), _) => ScriptEnd::ErrorFinish,
            (Some(r), _) => ScriptEnd::Finish(r),
            // Unfinished or stalled scripts are not generated.
            (None, None) => return None,
        };
        let all_tokens: Vec<u64> = script
            .steps
            .iter()
            .flat_map(|s| s.tokens.iter().map(|&t| u64::from(t)))
            .collect();
        let mut streamed_tokens = all_tokens.clone();
        if end == ScriptEnd::ErrorFinish {
            streamed_tokens.truncate(all_tokens.len() - last.tokens.len());
        }
        Some(Self {
            streamed_tokens,
            all_tokens,
            end,
            late_prompt_info: script.steps.iter().any(|s| s.prompt_info == Some(false)),
            tokenless_step: script
                .steps
                .iter()
                .any(|s| s.tokens.is_empty() && s.fail.is_none()),
            // Whatever the engine's stop reason: both 0.32.0 frontends
            // hide the last token of an engine `stop`
            // (`completions_stop_reason_text_from_engine_*`).
            stop_token: end == ScriptEnd::Finish(FinishReason::Stop) && !last.tokens.is_empty(),
        })
    }
}

/// What a response to one request must look like.
#[derive(Debug, Clone)]
pub struct Expected {
    pub endpoint: Endpoint,
    pub validity: Validity,
    pub stream: bool,
    pub include_usage: bool,
    pub continuous_usage: bool,
    pub return_token_ids: bool,
    /// Logprobs when asked: generate's `sampling_params.logprobs`,
    /// completions' `logprobs`, chat's `top_logprobs` (0 when absent) when
    /// its `logprobs` is true.
    pub logprobs: Option<i64>,
    /// The prompt ids the engine sees.
    pub prompt: Vec<u64>,
    /// Choices carry `token_ids` (generate; completions and chat with
    /// `return_token_ids`), so tokens can be counted on the wire.
    pub token_ids_visible: bool,
    /// `stop` strings are set: the frontend may end the text (and the
    /// tokens) before the script does, so what the script says is not checked.
    pub stop_strings: bool,
    /// Completions' `echo`: the text starts with the prompt's.
    pub echo: bool,
    /// Completions and chat: the text the script's tokens make.
    pub text: Option<ExpectedText>,
    /// The id the client chose: the header's, else the body's.
    pub request_id: Option<String>,
    pub script: Option<ScriptOutcome>,
}

impl Expected {
    /// `script`: the script the engine answers with, when known.
    pub fn new(request: &RequestSpec, served_model: &str, script: Option<&Script>) -> Self {
        let endpoint = request.endpoint;
        let rules = family(endpoint);
        let body = request.body.clone().unwrap_or(Value::Null);
        let get = |k: &str| body.get(k).filter(|v| !v.is_null());
        let options = get("stream_options");
        let option = |k: &str| options.and_then(|o| o.get(k)).and_then(Value::as_bool);
        let flag = |k: &str| get(k).and_then(Value::as_bool).unwrap_or(false);
        let stream = flag("stream");
        let include_usage = stream && option("include_usage").unwrap_or(false);
        let header_id = request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, v)| v.as_str());
        let return_token_ids = flag("return_token_ids");
        let prompt: Vec<u64> = if request.raw_body.is_some() {
            Vec::new()
        } else {
            endpoint
                .prompt_token_ids(&body)
                .unwrap_or_default()
                .into_iter()
                .map(u64::from)
                .collect()
        };
        let script = script.and_then(ScriptOutcome::of);
        let text = script
            .as_ref()
            .filter(|_| rules.detokenizes())
            .and_then(|s| ExpectedText::of(&prompt, s));
        Self {
            endpoint,
            validity: rules.validity(&body, served_model),
            stream,
            include_usage,
            continuous_usage: include_usage && option("continuous_usage_stats").unwrap_or(false),
            return_token_ids,
            logprobs: rules.logprobs_asked(&body),
            prompt,
            token_ids_visible: rules.always_shows_token_ids() || return_token_ids,
            stop_strings: rules.stop_strings(&body),
            echo: rules.echo(&body),
            text,
            request_id: rules.client_request_id(&body, header_id),
            script,
        }
    }

    /// The rules of the endpoint the request goes to.
    pub fn family(&self) -> &'static dyn Family {
        family(self.endpoint)
    }

    /// How many tokens the engine's script says were emitted (`all`: the
    /// tokens of an error step too), when the wire cannot show it and the
    /// script is known and followed to its end.
    pub(super) fn script_tokens(&self, all: bool) -> Option<u64> {
        let s = self.script.as_ref().filter(|_| !self.stop_strings)?;
        let tokens = if all {
            &s.all_tokens
        } else {
            &s.streamed_tokens
        };
        Some(tokens.len() as u64)
    }
}
