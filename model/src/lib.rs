//! The tiny model every genconform target loads, whatever the engine: the
//! mock engine answers in its vocabulary, the real CPU engine runs its
//! weights, and the frontends (vllm-rs, vLLM's Python server and our
//! reference server) tokenize, render chat and detokenize with it.
//!
//! - [`vocabulary`]: the words, byte tokens and specials, and the JSON files
//!   of the tokenizer and its config (with the chat template).
//! - [`tokenizer`]: the loaded tokenizer: encode, render chat, decode, and
//!   decode incrementally.
//! - [`files`]: the whole model directory, seeded weights included.

pub mod files;
pub mod tokenizer;
pub mod vocabulary;

pub use files::{description, write_model_dir};
pub use tokenizer::{Detokenizer, Tokenizer, TokenizerError};
pub use vocabulary::{MAX_MODEL_LEN, VOCAB};
