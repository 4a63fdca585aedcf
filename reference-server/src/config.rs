//! What a running server needs to know besides its engine.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use mock_engine::script::ServerOptions;
use model::{Tokenizer, TokenizerError};

/// vllm-rs refuses bodies above 32 MiB (axum's `DefaultBodyLimit` as it sets it).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long a connection may take to send a request head, counted from when the
/// server starts waiting for one: a new connection, or a kept-alive one after its
/// last response. So it is also how long an idle connection is kept.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request body may take to arrive, whole (32 MiB at ~0.5 MiB/s).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Server settings, named after the vLLM flags they stand for.
///
/// ```
/// use reference_server::Config;
/// let config = Config { api_key: Some("sekrit".into()), ..Config::default() };
/// assert_eq!(config.served_model_names, ["tiny"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// `--served-model-name`; the first one is the name `/v1/models` lists first.
    pub served_model_names: Vec<String>,
    /// `--api-key`: every `/v1` and `/inference` route then wants `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// `--enable-prompt-tokens-details`: usage reports `prompt_tokens_details.cached_tokens`.
    pub enable_prompt_tokens_details: bool,
    /// Bodies larger than this are refused with 413 (vllm-rs answers 400).
    pub max_body_bytes: usize,
    /// `--header-read-timeout`: see [`DEFAULT_HEADER_READ_TIMEOUT`]; the
    /// connection is closed when it passes.
    pub header_read_timeout: Duration,
    /// `--body-read-timeout`: see [`DEFAULT_BODY_READ_TIMEOUT`]; answered with 408.
    /// Responses, streamed or not, have no time limit.
    pub body_read_timeout: Duration,
    /// `--enable-script-control`: `POST /genconform/v1/scripts` scripts the
    /// engine (see [`crate::control`]); off, the path is a 404.
    pub enable_script_control: bool,
    /// `--model-dir`: the tokenizer and chat template the OpenAI endpoints use.
    pub tokenizer: ModelTokenizer,
}

/// The tokenizer a server uses: the tiny model's built-in one, or one loaded
/// from a model directory for the life of the process (streams borrow it).
///
/// ```
/// use reference_server::config::ModelTokenizer;
/// let t = ModelTokenizer::default();
/// assert_eq!(t.get().encode("t5 t7", true).unwrap(), [5, 7]);
/// assert!(ModelTokenizer::from_dir("/nonexistent".as_ref()).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ModelTokenizer(&'static Tokenizer);

impl ModelTokenizer {
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        Tokenizer::shared_from_dir(dir).map(Self)
    }

    pub fn get(&self) -> &'static Tokenizer {
        self.0
    }
}

impl Default for ModelTokenizer {
    fn default() -> Self {
        Self(Tokenizer::shared_built_in())
    }
}

/// The same loaded tokenizer: each is loaded once per process.
impl PartialEq for ModelTokenizer {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for ModelTokenizer {}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            served_model_names: vec![mock_engine::script::DEFAULT_MODEL_NAME.to_string()],
            api_key: None,
            enable_prompt_tokens_details: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            enable_script_control: false,
            tokenizer: ModelTokenizer::default(),
        }
    }
}

impl Config {
    /// The server a fixture asks for, on a free port of 127.0.0.1.
    pub fn from_options(o: &ServerOptions) -> Self {
        Self {
            served_model_names: vec![o.served_model_name.clone()],
            api_key: o.api_key.clone(),
            enable_prompt_tokens_details: o.enable_prompt_tokens_details,
            ..Self::default()
        }
    }

    pub(crate) fn serves(&self, model: &str) -> bool {
        self.served_model_names.iter().any(|m| m == model)
    }
}
