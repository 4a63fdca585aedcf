//! What every message of one OpenAI response repeats.

/// The id, creation time and model name each chunk or body carries, and
/// whether usage lists prompt token details.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub enable_prompt_tokens_details: bool,
}
