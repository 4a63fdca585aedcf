//! What `/v1/completions` and `/v1/chat/completions` share: the sampling
//! fields and their checks, the text pipeline (detokenizer primed like
//! vllm-rs, stop strings), engine outputs as text events (streamed as
//! chunks or collected), the envelope every message repeats, usage as
//! `stream_options` asks for it, token strings for logprobs, and the
//! handler flow after a request is prepared (submit, then stream or collect).
//! What generate shares with them too sits one level up, in
//! [`crate::routes`].

pub mod checks;
pub mod envelope;
pub mod events;
pub mod logprobs;
pub mod run;
pub mod sampling;
pub mod text;
pub mod usage;
