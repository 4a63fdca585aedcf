//! Usage on the OpenAI endpoints: the running counts their text events
//! carry, and what `stream_options` asks of a stream (usage on each chunk, a
//! usage-only chunk at the end).

use crate::error::ApiError;
use crate::routes::usage::{StreamOptions, Usage, UsageCounter};

/// Running counts over one request's engine outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: u32,
}

impl TokenCounts {
    /// The counts before any output: the prompt only.
    pub fn prompt(prompt_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            ..Self::default()
        }
    }

    /// ```
    /// use reference_server::routes::openai::usage::TokenCounts;
    /// let counts = TokenCounts { prompt_tokens: 3, completion_tokens: 2, cached_tokens: 1 };
    /// assert_eq!(counts.usage(false).total_tokens, 5);
    /// assert_eq!(counts.usage(true).prompt_tokens_details.unwrap().cached_tokens, 1);
    /// ```
    pub fn usage(&self, enable_prompt_tokens_details: bool) -> Usage {
        UsageCounter {
            prompt_tokens: Some(self.prompt_tokens),
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
        }
        .usage(enable_prompt_tokens_details)
    }
}

/// Which usage a stream carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageOptions {
    /// A usage-only chunk before `[DONE]`.
    pub include_usage: bool,
    /// Usage on every chunk as well: only with `include_usage`.
    pub continuous: bool,
}

impl UsageOptions {
    /// Refuses `stream_options` on a request that does not stream, as vllm-rs does.
    ///
    /// ```
    /// use reference_server::routes::openai::usage::UsageOptions;
    /// use reference_server::routes::usage::StreamOptions;
    /// let both = StreamOptions { include_usage: Some(true), continuous_usage_stats: Some(true) };
    /// assert!(UsageOptions::new(false, Some(both)).is_err());
    /// assert!(UsageOptions::new(true, Some(both)).unwrap().continuous);
    /// let only_continuous = StreamOptions { continuous_usage_stats: Some(true), ..Default::default() };
    /// assert!(!UsageOptions::new(true, Some(only_continuous)).unwrap().continuous);
    /// ```
    pub fn new(stream: bool, options: Option<StreamOptions>) -> Result<Self, ApiError> {
        if options.is_some() && !stream {
            return Err(ApiError::invalid_request(
                "stream_options are only supported when stream=true.",
                Some("stream_options"),
            ));
        }
        let options = options.unwrap_or_default();
        let include_usage = options.include_usage.unwrap_or(false);
        Ok(Self {
            include_usage,
            continuous: include_usage && options.continuous_usage_stats.unwrap_or(false),
        })
    }
}

/// A stream chunk that can carry usage (both routes' chunks do).
pub trait UsageChunk {
    fn set_usage(&mut self, usage: Usage);
}

impl UsageOptions {
    /// `chunk`, with the running usage when `continuous_usage_stats` asks for it.
    pub fn running<C: UsageChunk>(
        self,
        mut chunk: C,
        counts: TokenCounts,
        enable_prompt_tokens_details: bool,
    ) -> C {
        if self.continuous {
            chunk.set_usage(counts.usage(enable_prompt_tokens_details));
        }
        chunk
    }

    /// The end of a stream: the `finish` chunk (with the running usage), then
    /// `usage_only` carrying the final usage when `include_usage` asks for it.
    ///
    /// ```
    /// use reference_server::routes::openai::usage::{TokenCounts, UsageChunk, UsageOptions};
    /// use reference_server::routes::usage::Usage;
    /// #[derive(Default)]
    /// struct Chunk(Option<Usage>);
    /// impl UsageChunk for Chunk {
    ///     fn set_usage(&mut self, usage: Usage) { self.0 = Some(usage); }
    /// }
    /// let counts = TokenCounts { completion_tokens: 2, ..TokenCounts::prompt(3) };
    /// let plain = UsageOptions::default().finish(Chunk::default(), Chunk::default(), counts, false);
    /// assert_eq!(plain.len(), 1);
    /// let usage = UsageOptions { include_usage: true, continuous: false };
    /// let ended = usage.finish(Chunk::default(), Chunk::default(), counts, false);
    /// assert!(ended[0].0.is_none());
    /// assert_eq!(ended[1].0.as_ref().unwrap().total_tokens, 5);
    /// ```
    pub fn finish<C: UsageChunk>(
        self,
        finish: C,
        mut usage_only: C,
        counts: TokenCounts,
        enable_prompt_tokens_details: bool,
    ) -> Vec<C> {
        let mut out = vec![self.running(finish, counts, enable_prompt_tokens_details)];
        if self.include_usage {
            usage_only.set_usage(counts.usage(enable_prompt_tokens_details));
            out.push(usage_only);
        }
        out
    }
}
