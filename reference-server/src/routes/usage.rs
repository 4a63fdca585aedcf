//! Usage as every endpoint reports it (generate's and the OpenAI routes' are
//! the same object), the counts it is made from, and `stream_options`, which
//! asks a stream for it.

use serde::{Deserialize, Serialize};

/// Token counts; vllm-rs writes the details objects even when they say nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    pub completion_tokens_details: CompletionTokensDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompletionTokensDetails {
    pub reasoning_tokens: usize,
}

/// Running counts over one request's engine outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageCounter {
    /// Unknown until an output carries the prompt; counted as 0 until then.
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: usize,
    pub cached_tokens: u32,
}

impl UsageCounter {
    /// `cached_tokens` are reported only with `--enable-prompt-tokens-details`
    /// and only when the engine reported some.
    pub fn usage(&self, enable_prompt_tokens_details: bool) -> Usage {
        let prompt_tokens = self.prompt_tokens.unwrap_or(0);
        Usage {
            prompt_tokens,
            total_tokens: prompt_tokens + self.completion_tokens,
            completion_tokens: self.completion_tokens,
            prompt_tokens_details: (enable_prompt_tokens_details && self.cached_tokens > 0)
                .then_some(PromptTokensDetails {
                    cached_tokens: self.cached_tokens,
                }),
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
}

/// `stream_options`, as the client wrote it.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
    pub continuous_usage_stats: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_need_the_flag_and_a_count() {
        let counter = UsageCounter {
            prompt_tokens: Some(3),
            completion_tokens: 2,
            cached_tokens: 2,
        };
        assert_eq!(
            serde_json::to_string(&counter.usage(true)).unwrap(),
            r#"{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":0}}"#
        );
        assert_eq!(counter.usage(false).prompt_tokens_details, None);
        let uncached = UsageCounter {
            cached_tokens: 0,
            ..counter
        };
        assert_eq!(uncached.usage(true).prompt_tokens_details, None);
    }
}
