//! The default generator: what the engine does for a prompt no script names.
//!
//! Tokens are a pure function of the seed, the prompt and the position, so two
//! servers (or two runs) fed the same request see the same tokens.

use crate::step::{FinishReason, PACED_MIN_DELAY_MS, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Delay before the first step.
    pub ttft_ms: u64,
    /// Delay before every later step.
    pub itl_ms: u64,
    pub tokens_per_step: u32,
    /// Generated ids stay below this, so they are valid for the test tokenizer.
    pub vocab_size: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            ttft_ms: 0,
            itl_ms: 0,
            tokens_per_step: 1,
            vocab_size: 1000,
        }
    }
}

impl GeneratorConfig {
    /// Whether every generated step waits long enough that no server
    /// coalesces two steps into one chunk (at least [`PACED_MIN_DELAY_MS`],
    /// as a paced script's steps do). The default generator is unpaced.
    pub fn is_paced(&self) -> bool {
        self.ttft_ms >= PACED_MIN_DELAY_MS && self.itl_ms >= PACED_MIN_DELAY_MS
    }
}

/// The steps of one generated request.
#[derive(Debug, Clone)]
pub struct Generator {
    config: GeneratorConfig,
    state: u64,
    remaining: u32,
    first: bool,
}

impl Generator {
    pub fn new(config: GeneratorConfig, prompt: &[u32], max_tokens: u32) -> Self {
        let state = prompt
            .iter()
            .fold(splitmix(config.seed), |h, &t| splitmix(h ^ u64::from(t)));
        Self {
            config,
            state,
            remaining: max_tokens,
            first: true,
        }
    }

    fn next_token(&mut self) -> u32 {
        self.state = splitmix(self.state);
        (self.state % u64::from(self.config.vocab_size.max(1))) as u32
    }
}

impl Iterator for Generator {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.remaining == 0 {
            return None;
        }
        let n = self.config.tokens_per_step.max(1).min(self.remaining);
        self.remaining -= n;
        let delay_ms = if std::mem::take(&mut self.first) {
            self.config.ttft_ms
        } else {
            self.config.itl_ms
        };
        Some(Step {
            delay_ms,
            tokens: (0..n).map(|_| self.next_token()).collect(),
            finish: (self.remaining == 0).then_some(FinishReason::Length),
            ..Step::default()
        })
    }
}

/// SplitMix64: a tiny, well-mixed, dependency-free hash step; shared by
/// everything that needs reproducible pseudo-random numbers from a seed.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_max_tokens_in_steps_and_finishes_with_length() {
        let config = GeneratorConfig {
            tokens_per_step: 3,
            ttft_ms: 50,
            itl_ms: 5,
            ..Default::default()
        };
        let steps: Vec<Step> = Generator::new(config, &[1, 2], 7).collect();
        assert_eq!(
            steps.iter().map(|s| s.tokens.len()).collect::<Vec<_>>(),
            [3, 3, 1]
        );
        assert_eq!(
            steps.iter().map(|s| s.delay_ms).collect::<Vec<_>>(),
            [50, 5, 5]
        );
        assert_eq!(steps[2].finish, Some(FinishReason::Length));
        assert!(steps[..2].iter().all(|s| s.finish.is_none()));
    }

    #[test]
    fn only_a_generator_with_long_delays_is_paced() {
        assert!(!GeneratorConfig::default().is_paced());
        let slow = GeneratorConfig {
            ttft_ms: 20,
            itl_ms: 20,
            ..GeneratorConfig::default()
        };
        assert!(slow.is_paced());
        assert!(!GeneratorConfig { itl_ms: 19, ..slow }.is_paced());
    }

    #[test]
    fn different_prompts_give_different_tokens() {
        let a: Vec<Step> = Generator::new(GeneratorConfig::default(), &[1], 8).collect();
        let b: Vec<Step> = Generator::new(GeneratorConfig::default(), &[2], 8).collect();
        assert_ne!(a, b);
        assert!(a.iter().flat_map(|s| &s.tokens).all(|&t| t < 1000));
    }
}
