//! The engine profile of a bench run, turned into scripts.
//!
//! An engine's generator config is fixed when the engine is built, but its
//! scripts are not: the bench registers one script per prompt *variant*, each
//! with its own (seeded) jitter, and the load generator cycles through the
//! variants. Knowing every variant's script is what lets a result say how far
//! a frontend lagged behind what the engine was told to do.
//!
//! ```
//! use harness::bench::profile::{EngineProfile, RequestShape, variants};
//!
//! let profile = EngineProfile { ttft_ms: 20, itl_ms: 10, itl_jitter_ms: 0, tokens_per_step: 2, unpaced: false };
//! let shape = RequestShape { prompt_len: 4, max_tokens: 5, ..RequestShape::default() };
//! let v = &variants(&profile, &shape, 1, 0)[0];
//! assert_eq!(v.script.steps.len(), 3); // 2 + 2 + 1 tokens
//! assert_eq!(v.offsets_us, [20_000, 30_000, 40_000]);
//! assert_eq!(v.scripted_offset_us(3), Some(30_000)); // token 3 comes with step 2
//! ```

use mock_engine::generator::splitmix;
use mock_engine::script::{Endpoint, FinishReason, Script, Step};
use serde::Serialize;
use serde_json::{Value, json};

use crate::endpoint::family;

/// What the scripted engine is told to do for every bench request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineProfile {
    /// Delay before the first step.
    pub ttft_ms: u64,
    /// Delay before each later step.
    pub itl_ms: u64,
    /// Each later delay is drawn uniformly from `itl_ms ± itl_jitter_ms`.
    pub itl_jitter_ms: u64,
    pub tokens_per_step: u32,
    /// Every delay zero: the engine emits as fast as it can, so the frontend
    /// (or the client) is the limit.
    pub unpaced: bool,
}

/// The request every bench client sends (apart from the prompt variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestShape {
    /// Where the load goes; the same prompts and scripts on each endpoint.
    pub endpoint: Endpoint,
    /// The model completions and chat requests name.
    pub model: String,
    pub prompt_len: usize,
    pub max_tokens: u32,
    pub stream: bool,
    pub include_usage: bool,
    pub continuous_usage: bool,
}

impl Default for RequestShape {
    fn default() -> Self {
        Self {
            endpoint: Endpoint::default(),
            model: "tiny".into(),
            prompt_len: 16,
            max_tokens: 64,
            stream: true,
            include_usage: false,
            continuous_usage: false,
        }
    }
}

impl RequestShape {
    /// The JSON body for one prompt: its ids as `token_ids` (generate) or
    /// `prompt` (completions), or its words as one user message (chat, whose
    /// engine then sees the template around them: [`Self::engine_prompt`]).
    /// Completions and chat ask for `return_token_ids`, so their chunks can be
    /// counted in tokens as generate's are.
    pub fn body(&self, prompt: &[u32]) -> Value {
        let mut body =
            Value::Object(family(self.endpoint).bench_body(prompt, &self.model, self.max_tokens));
        body["stream"] = json!(self.stream);
        if self.stream && (self.include_usage || self.continuous_usage) {
            body["stream_options"] = json!({
                "include_usage": self.include_usage || self.continuous_usage,
                "continuous_usage_stats": self.continuous_usage,
            });
        }
        body
    }

    /// The prompt ids the engine sees for [`Self::body`]`(prompt)`: what its
    /// script is registered under.
    pub fn engine_prompt(&self, prompt: &[u32]) -> Vec<u32> {
        self.endpoint
            .prompt_token_ids(&self.body(prompt))
            .unwrap_or_else(|| prompt.to_vec())
    }
}

/// One prompt variant and the script that answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedRequest {
    pub prompt: Vec<u32>,
    pub script: Script,
    /// When each step is due, from the request's arrival at the engine.
    pub offsets_us: Vec<i64>,
    pub tokens_per_step: u32,
    pub total_tokens: u32,
}

impl ScriptedRequest {
    /// When the engine was scripted to emit the `cumulative_tokens`-th token
    /// (1-based), from the request's arrival.
    pub fn scripted_offset_us(&self, cumulative_tokens: u32) -> Option<i64> {
        if cumulative_tokens == 0 || cumulative_tokens > self.total_tokens {
            return None;
        }
        let step = (cumulative_tokens - 1) / self.tokens_per_step.max(1);
        self.offsets_us.get(step as usize).copied()
    }

    /// The scripted delay before step `step` (0-based).
    pub fn scripted_gap_us(&self, step: usize) -> Option<i64> {
        let this = *self.offsets_us.get(step)?;
        let before = if step == 0 {
            0
        } else {
            self.offsets_us[step - 1]
        };
        Some(this - before)
    }
}

/// Prompt ids stay below this: valid for the test tokenizer (4096 words).
const VOCAB: u32 = 4096;

/// `count` prompt variants (distinct first tokens) with their scripts; `seed`
/// picks the jitter, so two runs with one seed script the same delays.
pub fn variants(
    profile: &EngineProfile,
    shape: &RequestShape,
    count: usize,
    seed: u64,
) -> Vec<ScriptedRequest> {
    (0..count.max(1))
        .map(|v| {
            let v = v as u32;
            // Distinct first token per variant; the rest is filler. The first
            // token avoids 1..=10, which the Python prototype engine reserves.
            let prompt: Vec<u32> = std::iter::once(1000 + v % 3000)
                .chain((1..shape.prompt_len.max(1) as u32).map(|i| 11 + (v + i) % (VOCAB - 11)))
                .collect();
            let mut rng = splitmix(seed ^ u64::from(v).wrapping_mul(0x9E37_79B9));
            let per_step = profile.tokens_per_step.max(1);
            let mut steps = Vec::new();
            let mut offsets_us = Vec::new();
            let mut emitted = 0u32;
            let mut at_us = 0i64;
            while emitted < shape.max_tokens {
                let n = per_step.min(shape.max_tokens - emitted);
                let delay_ms = if profile.unpaced {
                    0
                } else if steps.is_empty() {
                    profile.ttft_ms
                } else {
                    rng = splitmix(rng);
                    jittered(profile.itl_ms, profile.itl_jitter_ms, rng)
                };
                let tokens = (0..n).map(|i| 100 + (emitted + i) % 800).collect();
                emitted += n;
                at_us += delay_ms as i64 * 1000;
                offsets_us.push(at_us);
                steps.push(Step {
                    delay_ms,
                    tokens,
                    finish: (emitted == shape.max_tokens).then_some(FinishReason::Length),
                    ..Step::default()
                });
            }
            ScriptedRequest {
                prompt,
                script: Script {
                    steps,
                    ..Script::default()
                },
                offsets_us,
                tokens_per_step: per_step,
                total_tokens: shape.max_tokens,
            }
        })
        .collect()
}

/// `base ± jitter`, uniform over whole milliseconds, never below zero.
pub fn jittered(base_ms: u64, jitter_ms: u64, random: u64) -> u64 {
    if jitter_ms == 0 {
        return base_ms;
    }
    let span = 2 * jitter_ms + 1;
    (base_ms + random % span).saturating_sub(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> EngineProfile {
        EngineProfile {
            ttft_ms: 50,
            itl_ms: 10,
            itl_jitter_ms: 0,
            tokens_per_step: 1,
            unpaced: false,
        }
    }

    #[test]
    fn scripts_follow_the_profile() {
        let shape = RequestShape {
            max_tokens: 4,
            ..RequestShape::default()
        };
        let v = variants(&profile(), &shape, 3, 7);
        assert_eq!(v.len(), 3);
        let delays: Vec<u64> = v[0].script.steps.iter().map(|s| s.delay_ms).collect();
        assert_eq!(delays, [50, 10, 10, 10]);
        assert_eq!(v[0].offsets_us, [50_000, 60_000, 70_000, 80_000]);
        assert_eq!(
            v[0].script.steps.last().unwrap().finish,
            Some(FinishReason::Length)
        );
        assert!(v[0].script.steps[..3].iter().all(|s| s.finish.is_none()));
        let firsts: std::collections::HashSet<u32> = v.iter().map(|r| r.prompt[0]).collect();
        assert_eq!(firsts.len(), 3, "each variant has its own prompt");
        assert!(v.iter().all(|r| r.prompt.len() == 16));
        assert!(v.iter().flat_map(|r| &r.prompt).all(|&t| t < VOCAB));
    }

    #[test]
    fn unpaced_scripts_have_no_delays() {
        let p = EngineProfile {
            unpaced: true,
            ..profile()
        };
        let v = variants(&p, &RequestShape::default(), 1, 0);
        assert!(v[0].script.steps.iter().all(|s| s.delay_ms == 0));
        assert_eq!(v[0].script.steps.len(), 64);
    }

    #[test]
    fn jitter_stays_in_bounds_and_is_seeded() {
        let p = EngineProfile {
            itl_jitter_ms: 3,
            ..profile()
        };
        let shape = RequestShape {
            max_tokens: 200,
            ..RequestShape::default()
        };
        let a = variants(&p, &shape, 2, 1);
        let later = |r: &ScriptedRequest| -> Vec<u64> {
            r.script.steps[1..].iter().map(|s| s.delay_ms).collect()
        };
        assert!(later(&a[0]).iter().all(|d| (7..=13).contains(d)));
        assert!(later(&a[0]).iter().any(|&d| d != 10), "jitter moves delays");
        assert_ne!(later(&a[0]), later(&a[1]), "variants jitter differently");
        assert_eq!(a, variants(&p, &shape, 2, 1), "same seed, same scripts");
        assert_eq!(jittered(1, 5, 0), 0, "never below zero");
    }

    #[test]
    fn scripted_offsets_by_cumulative_tokens() {
        let p = EngineProfile {
            tokens_per_step: 3,
            ..profile()
        };
        let shape = RequestShape {
            max_tokens: 7,
            ..RequestShape::default()
        };
        let v = &variants(&p, &shape, 1, 0)[0];
        assert_eq!(v.offsets_us, [50_000, 60_000, 70_000]);
        assert_eq!(v.scripted_offset_us(1), Some(50_000));
        assert_eq!(v.scripted_offset_us(3), Some(50_000));
        assert_eq!(v.scripted_offset_us(4), Some(60_000));
        assert_eq!(v.scripted_offset_us(7), Some(70_000));
        assert_eq!(v.scripted_offset_us(0), None);
        assert_eq!(v.scripted_offset_us(8), None);
        assert_eq!(v.scripted_gap_us(0), Some(50_000));
        assert_eq!(v.scripted_gap_us(2), Some(10_000));
        assert_eq!(v.scripted_gap_us(3), None);
    }

    #[test]
    fn each_endpoint_gets_its_body_and_engine_prompt() {
        let on = |endpoint| RequestShape {
            endpoint,
            ..RequestShape::default()
        };
        let generate = on(Endpoint::Generate);
        assert_eq!(generate.body(&[10, 11])["token_ids"], json!([10, 11]));
        assert_eq!(generate.engine_prompt(&[10, 11]), [10, 11]);
        let completions = on(Endpoint::Completions);
        assert_eq!(completions.body(&[10, 11])["prompt"], json!([10, 11]));
        assert_eq!(completions.body(&[10, 11])["return_token_ids"], true);
        assert_eq!(completions.engine_prompt(&[10, 11]), [10, 11]);
        let chat = on(Endpoint::Chat);
        assert_eq!(
            chat.body(&[10, 11])["messages"][0]["content"],
            json!("t10 t11")
        );
        // The template: user `t3`, the generation prompt `t4`.
        assert_eq!(chat.engine_prompt(&[10, 11]), [3, 10, 11, 4]);
    }

    #[test]
    fn body_has_stream_options_only_when_streaming() {
        let shape = RequestShape {
            include_usage: true,
            ..RequestShape::default()
        };
        let body = shape.body(&[1, 2]);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["sampling_params"]["max_tokens"], 64);
        let plain = RequestShape {
            stream: false,
            ..shape
        };
        assert!(plain.body(&[1]).get("stream_options").is_none());
    }
}
