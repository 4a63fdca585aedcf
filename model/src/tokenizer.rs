//! A model directory's tokenizer and chat template, as a frontend uses them:
//! text to ids, chat messages to text, ids back to text incrementally.
//!
//! ```
//! let tokenizer = model::Tokenizer::built_in();
//! assert_eq!(tokenizer.encode("t5 t7", true).unwrap(), vec![5, 7]);
//! let messages = serde_json::json!([{"role": "user", "content": "t10 t11"}]);
//! let text = tokenizer.render_chat(&messages, true).unwrap();
//! assert_eq!(tokenizer.encode(&text, false).unwrap(), vec![3, 10, 11, 4]);
//!
//! // `é` is two byte tokens: nothing shows until the character is whole.
//! let mut detok = tokenizer.detokenizer(&[7], true);
//! let e = model::vocabulary::byte_tokens("é");
//! assert_eq!(detok.step(5).unwrap().as_deref(), Some(" t5"));
//! assert_eq!(detok.step(e[0]).unwrap(), None);
//! assert_eq!(detok.step(e[1]).unwrap().as_deref(), Some(" é"));
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::vocabulary;

/// Why a tokenizer could not be loaded or used; says which file or input.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a tokenizer this build can load: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("{}: not JSON: {source}", path.display())]
    Config {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the model has no chat template")]
    NoChatTemplate,
    #[error("the chat template failed: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Tokenize(String),
}

/// A loaded tokenizer and the chat template next to it.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// The tiny model's tokenizer: the same JSON [`crate::write_model_dir`]
    /// writes, so the reference server needs no model directory.
    pub fn built_in() -> Self {
        let json = vocabulary::tokenizer_json().to_string();
        let inner: tokenizers::Tokenizer = json
            .parse()
            .expect("the built-in tokenizer.json is one tokenizers reads");
        let config = vocabulary::tokenizer_config_json();
        Self::with_config(inner, &config)
    }

    /// One built-in tokenizer for the whole process, for incremental
    /// decoders that outlive any one request.
    pub fn shared_built_in() -> &'static Self {
        static BUILT_IN: OnceLock<Tokenizer> = OnceLock::new();
        BUILT_IN.get_or_init(Self::built_in)
    }

    /// Reads `tokenizer.json` and, when present, `tokenizer_config.json`
    /// (its `chat_template`, `bos_token`, `eos_token`) from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|source| TokenizerError::Read {
            path: path.clone(),
            source,
        })?;
        let inner: tokenizers::Tokenizer =
            text.parse()
                .map_err(|e: tokenizers::Error| TokenizerError::Load {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        let config_path = dir.join("tokenizer_config.json");
        let config = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| TokenizerError::Config {
                path: config_path,
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
            Err(source) => {
                return Err(TokenizerError::Read {
                    path: config_path,
                    source,
                });
            }
        };
        Ok(Self::with_config(inner, &config))
    }

    /// [`Tokenizer::from_dir`], loaded once per directory for the whole
    /// process (a server's decoders borrow it for as long as they stream).
    pub fn shared_from_dir(dir: &Path) -> Result<&'static Self, TokenizerError> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, &'static Tokenizer>>> = OnceLock::new();
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let mut loaded = LOADED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(tokenizer) = loaded.get(&key) {
            return Ok(tokenizer);
        }
        // Leaked on purpose: one per model directory, for the process's life.
        let tokenizer: &'static Self = Box::leak(Box::new(Self::from_dir(dir)?));
        loaded.insert(key, tokenizer);
        Ok(tokenizer)
    }

    fn with_config(inner: tokenizers::Tokenizer, config: &Value) -> Self {
        let text = |key: &str| {
            let v = config.get(key)?;
            // A special token may be a string or an `AddedToken` object.
            v.as_str()
                .or_else(|| v.get("content").and_then(Value::as_str))
                .map(str::to_string)
        };
        Self {
            inner,
            chat_template: text("chat_template"),
            bos_token: text("bos_token"),
            eos_token: text("eos_token"),
        }
    }

    /// The tokenizers crate's tokenizer, for what this type does not wrap.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Every id the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of `text`; `add_special_tokens` applies the post-processor
    /// (this model's has none, so no `<s>` is added either way).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, all at once.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Tokenize(e.to_string()))
    }

    /// The vocabulary entry of one id (`<0xC3>`, `t5`), not decoded.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The chat template rendered over `messages` (a JSON list of
    /// `{role, content}`), with the variables transformers gives a template:
    /// `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, and the
    /// `raise_exception` function.
    pub fn render_chat(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or(TokenizerError::NoChatTemplate)?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        let render_error = |e: minijinja::Error| TokenizerError::Template(e.to_string());
        env.add_template("chat", template).map_err(render_error)?;
        let context = minijinja::context! {
            messages => minijinja::Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat")
            .and_then(|t| t.render(context))
            .map_err(render_error)
    }

    /// An incremental decoder that has seen `prompt`: one generated token
    /// in, the new text out once it is whole characters.
    pub fn detokenizer(&self, prompt: &[u32], skip_special_tokens: bool) -> Detokenizer<'_> {
        Detokenizer {
            tokenizer: self,
            skip_special_tokens,
            window: prompt.to_vec(),
            prefix: String::new(),
            prefix_len: 0,
            stepped: false,
        }
    }
}

/// Incremental detokenization by a sliding window, as vLLM's frontends do
/// it: the window's ids are decoded whole each time a token arrives, and
/// what the text gained past the decoded `prefix` (the text of the window's
/// first `prefix_len` ids) is released, unless it ends in U+FFFD (a
/// character still incomplete). So a character split over byte tokens comes
/// out whole, once, and a word gets the space that joins it to the words
/// before it.
///
/// The window starts as the prompt. At the first token it is narrowed to the
/// shortest tail of four to six prompt ids that decodes cleanly (no U+FFFD),
/// or else the whole prompt is the context. Unlike tokenizers'
/// `DecodeStream`, a text that no longer starts with the prefix (invalid
/// bytes decode differently once more bytes follow) is not an error: the new
/// text is taken from the prefix's length on, at a character boundary,
/// which is what vllm-rs (`rust/src/tokenizer/src/incremental.rs`) does.
#[derive(Clone)]
pub struct Detokenizer<'t> {
    tokenizer: &'t Tokenizer,
    skip_special_tokens: bool,
    window: Vec<u32>,
    /// The text of `window[..prefix_len]`, already released or context.
    prefix: String,
    prefix_len: usize,
    /// Whether a generated token has come: before one, the window holds
    /// only the prompt, which is never output.
    stepped: bool,
}

/// The prompt tails tried as the window's context at the first token.
const CLEAN_TAIL: std::ops::RangeInclusive<usize> = 4..=6;

impl Detokenizer<'_> {
    /// The text `id` adds, or `None` while a character is incomplete (or
    /// the id adds no text).
    pub fn step(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        if self.prefix.is_empty() && !self.window.is_empty() {
            self.seed()?;
        }
        self.window.push(id);
        self.stepped = true;
        let text = self.decode(&self.window)?;
        if text.len() <= self.prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let new = text[text.floor_char_boundary(self.prefix.len())..].to_string();
        self.window.drain(..self.prefix_len);
        self.prefix = self.decode(&self.window)?;
        self.prefix_len = self.window.len();
        Ok(Some(new))
    }

    /// What is still held back, decoded as it is (an incomplete character
    /// becomes U+FFFD), at the end of a request; `None` when nothing is.
    pub fn flush(&mut self) -> Result<Option<String>, TokenizerError> {
        if !self.stepped || self.window.len() == self.prefix_len {
            return Ok(None);
        }
        let text = self.decode(&self.window)?;
        let new = text[text.floor_char_boundary(self.prefix.len())..].to_string();
        self.window.clear();
        self.prefix.clear();
        self.prefix_len = 0;
        Ok(Some(new).filter(|t| !t.is_empty()))
    }

    /// Narrows the window to a clean tail of the prompt, or takes the whole
    /// prompt as context when its text ends in a whole character.
    fn seed(&mut self) -> Result<(), TokenizerError> {
        let len = self.window.len();
        if len > *CLEAN_TAIL.start() {
            for tail in *CLEAN_TAIL.start()..=(*CLEAN_TAIL.end()).min(len - 1) {
                let text = self.decode(&self.window[len - tail..])?;
                if !text.contains('\u{FFFD}') {
                    self.window.drain(..len - tail);
                    self.prefix = text;
                    self.prefix_len = tail;
                    return Ok(());
                }
            }
        }
        let text = self.decode(&self.window)?;
        if !text.ends_with('\u{FFFD}') {
            self.prefix = text;
            self.prefix_len = len;
        }
        Ok(())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer.decode(ids, self.skip_special_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::byte_tokens;

    #[test]
    fn a_directory_written_by_write_model_dir_loads_like_the_built_in() {
        let dir = tempfile::tempdir().unwrap();
        crate::write_model_dir(dir.path()).unwrap();
        let loaded = Tokenizer::from_dir(dir.path()).unwrap();
        let built_in = Tokenizer::built_in();
        let ids = [
            5,
            7,
            vocabulary::byte_token(0xC3),
            vocabulary::byte_token(0xA9),
        ];
        assert_eq!(loaded.decode(&ids, true).unwrap(), "t5 t7 é");
        assert_eq!(built_in.decode(&ids, true).unwrap(), "t5 t7 é");
        let messages = serde_json::json!([{"role": "system", "content": "t9"}]);
        assert_eq!(
            loaded.render_chat(&messages, false).unwrap(),
            built_in.render_chat(&messages, false).unwrap()
        );
    }

    #[test]
    fn characters_split_over_tokens_come_out_whole_and_once() {
        let tokenizer = Tokenizer::built_in();
        let mut ids = vec![5];
        ids.extend(byte_tokens("€"));
        ids.push(9);
        ids.extend(byte_tokens("😀"));
        let mut detok = tokenizer.detokenizer(&[], true);
        let pieces: Vec<Option<String>> = ids.iter().map(|&i| detok.step(i).unwrap()).collect();
        assert_eq!(
            pieces,
            [
                Some("t5".into()),
                None,
                None,
                Some(" €".into()),
                Some(" t9".into()),
                None,
                None,
                None,
                Some(" 😀".into()),
            ]
        );
        let streamed: String = pieces.into_iter().flatten().collect();
        assert_eq!(streamed, tokenizer.decode(&ids, true).unwrap());
    }

    #[test]
    fn invalid_bytes_are_replaced_not_an_error_and_the_end_is_flushed() {
        let tokenizer = Tokenizer::built_in();
        let e = byte_tokens("é");
        // A lone continuation byte then a word: the bytes before it decode
        // differently once the word follows; vllm-rs goes on, and so do we.
        let mut detok = tokenizer.detokenizer(&[1, 2, 3, 4, 5], true);
        let mut out = String::new();
        for id in [e[0], e[1], vocabulary::byte_token(0x80), 0] {
            out.push_str(&detok.step(id).unwrap().unwrap_or_default());
        }
        // What the real vllm-rs 0.32.0 sent for this script: the window
        // re-decodes `é <0x80>` as three replacement characters.
        assert_eq!(out, " é� � � t0");
        // A character cut off by the end comes out as U+FFFD at the flush.
        let mut detok = tokenizer.detokenizer(&[7], true);
        assert_eq!(detok.step(33).unwrap().as_deref(), Some(" t33"));
        assert_eq!(detok.step(byte_tokens("€")[0]).unwrap(), None);
        assert_eq!(detok.flush().unwrap().as_deref(), Some(" �"));
        assert_eq!(detok.flush().unwrap(), None);
        // No token at all: the prompt is context, never output.
        assert_eq!(tokenizer.detokenizer(&[7, 8], true).flush().unwrap(), None);
    }

    #[test]
    fn the_prompt_is_context_not_output() {
        let tokenizer = Tokenizer::built_in();
        let mut long = tokenizer.detokenizer(&[1, 2, 3, 4, 5, 6, 7, 8, 9], true);
        assert_eq!(long.step(33).unwrap().as_deref(), Some(" t33"));
        let mut empty = tokenizer.detokenizer(&[], true);
        assert_eq!(empty.step(33).unwrap().as_deref(), Some("t33"));
        assert_eq!(empty.step(34).unwrap().as_deref(), Some(" t34"));
    }

    #[test]
    fn special_tokens_are_skipped_when_asked() {
        let tokenizer = Tokenizer::built_in();
        assert_eq!(tokenizer.decode(&[5, vocabulary::EOS], true).unwrap(), "t5");
        assert_eq!(
            tokenizer.decode(&[5, vocabulary::EOS], false).unwrap(),
            "t5 </s>"
        );
    }

    #[test]
    fn a_failing_template_is_an_error_not_a_panic() {
        let mut tokenizer = Tokenizer::built_in();
        tokenizer.chat_template = Some("{{ raise_exception('no system role') }}".into());
        let err = tokenizer
            .render_chat(&serde_json::json!([]), true)
            .unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
        tokenizer.chat_template = Some("{% for %}".into());
        assert!(tokenizer.render_chat(&serde_json::json!([]), true).is_err());
    }

    #[test]
    fn a_missing_directory_names_the_file() {
        let err = Tokenizer::from_dir(Path::new("/nonexistent/model")).unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/model/tokenizer.json"),
            "{err}"
        );
    }
}
