//! Logprob helpers for the OpenAI endpoints, where candidates are named by
//! their text rather than their id.

use std::collections::HashSet;

use mock_engine::script::LogprobEntry;
use model::Tokenizer;

/// The text of one token on its own: a word is itself (no joining space), a
/// byte token that is not a character by itself is U+FFFD, a special token is
/// empty (decoded skipping special tokens), as vllm-rs shows them.
///
/// ```
/// use reference_server::routes::openai::logprobs::token_text;
/// let t = model::Tokenizer::shared_built_in();
/// assert_eq!(token_text(t, 33), "t33");
/// assert_eq!(token_text(t, model::vocabulary::byte_token(b'a')), "a");
/// assert_eq!(token_text(t, model::vocabulary::byte_token(0xC3)), "\u{FFFD}");
/// assert_eq!(token_text(t, model::vocabulary::EOS), "");
/// ```
pub fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer
        .decode(&[id], true)
        .unwrap_or_else(|_| format!("token_id:{id}"))
}

/// One position's candidates: the sampled token first, each token once, at
/// most `keep` of them.
pub fn candidates(entries: &[LogprobEntry], keep: usize) -> impl Iterator<Item = &LogprobEntry> {
    let mut seen = HashSet::new();
    entries
        .iter()
        .filter(move |e| seen.insert(e.token_id))
        .take(keep)
}
