//! The engine scripts the fuzzer generates: steps of tokens (ids for
//! generate, words and byte tokens for the text endpoints), empty and
//! finish-only steps, late prompt info, logprob candidates, and an end
//! (a finish, an `error` finish, or an engine failure).

use mock_engine::script::{FinishReason, LogprobEntry, Script, Step, StopReason};
use proptest::prelude::*;

use super::{Scope, VOCAB, WORDS};

/// How a script ends.
#[derive(Debug, Clone)]
enum End {
    Finish(FinishReason, Option<StopReason>),
    ErrorFinish,
    Fail(String),
}

fn end(engine_failures: bool) -> impl Strategy<Value = End> {
    let reason = prop_oneof![
        Just(FinishReason::Stop),
        Just(FinishReason::Length),
        Just(FinishReason::Abort),
        Just(FinishReason::Repetition),
    ];
    let stop_reason = proptest::option::weighted(
        0.3,
        prop_oneof![
            (0i64..4096).prop_map(StopReason::Token),
            Just(StopReason::Text("\n".into())),
        ],
    );
    prop_oneof![
        8 => (reason, stop_reason).prop_map(|(r, s)| {
            let s = if r == FinishReason::Stop { s } else { None };
            End::Finish(r, s)
        }),
        1 => Just(End::ErrorFinish),
        u32::from(engine_failures) => "[a-z ]{1,16}".prop_map(End::Fail),
    ]
}

/// The step fields every step may have.
#[derive(Debug, Clone)]
struct Body {
    delay_ms: u64,
    tokens: Vec<u32>,
    cached_tokens: Option<u32>,
    late_prompt_info: bool,
    /// Scripted logprobs: how many top candidates, and the sampled token's rank.
    logprob_candidates: Option<(u32, u32)>,
}

/// Generate's step tokens: any ids of the vocabulary.
fn id_tokens() -> BoxedStrategy<Vec<u32>> {
    proptest::collection::vec(0..VOCAB, 0..4).boxed()
}

/// Text endpoints' step tokens: mostly words, and characters of two to four
/// byte tokens (which [`script`] sometimes splits over two steps), a stray
/// byte that is no character, and the end-of-sequence special.
fn text_tokens() -> BoxedStrategy<Vec<u32>> {
    let piece = prop_oneof![
        8 => (0..WORDS).prop_map(|w| vec![w]),
        4 => proptest::sample::select(vec!["é", "€", "😀", "ß"])
            .prop_map(model::vocabulary::byte_tokens),
        1 => (WORDS..VOCAB).prop_map(|b| vec![b]),
        1 => Just(vec![model::vocabulary::EOS]),
    ];
    proptest::collection::vec(piece, 0..4)
        .prop_map(|pieces| pieces.concat())
        .boxed()
}

fn body(late_prompt_info: bool, tokens: BoxedStrategy<Vec<u32>>) -> impl Strategy<Value = Body> {
    (
        0u64..=5,
        tokens,
        proptest::option::weighted(0.2, 0u32..8),
        proptest::bool::weighted(if late_prompt_info { 0.2 } else { 0.0 }),
        proptest::option::weighted(0.2, (0u32..3, 1u32..=3)),
    )
        .prop_map(
            |(delay_ms, tokens, cached_tokens, late_prompt_info, logprob_candidates)| Body {
                delay_ms,
                tokens,
                cached_tokens,
                late_prompt_info,
                logprob_candidates,
            },
        )
}

impl Body {
    fn step(self) -> Step {
        // An engine sends no logprobs for a step without tokens.
        let candidates = self.logprob_candidates.filter(|_| !self.tokens.is_empty());
        let logprobs = candidates.map(|(k, sampled_rank)| {
            // As vLLM's engine reports them: the sampled token with its rank,
            // then the top k in rank order (a rank is the position there), so
            // the sampled token is among them when its rank is at most k.
            let sampled_rank = sampled_rank.min(k + 1);
            let logprob = |rank: u32| 0.5 - rank as f32;
            self.tokens
                .iter()
                .map(|&t| {
                    std::iter::once(LogprobEntry {
                        token_id: t,
                        logprob: logprob(sampled_rank),
                        rank: sampled_rank,
                    })
                    .chain((1..=k).map(|rank| LogprobEntry {
                        token_id: if rank == sampled_rank {
                            t
                        } else {
                            (t + rank) % VOCAB
                        },
                        logprob: logprob(rank),
                        rank,
                    }))
                    .collect()
                })
                .collect()
        });
        Step {
            delay_ms: self.delay_ms,
            tokens: self.tokens,
            cached_tokens: self.cached_tokens,
            prompt_info: self.late_prompt_info.then_some(false),
            logprobs,
            ..Step::default()
        }
    }
}

/// Scripts valid by the fixture rules: 0..5 steps, then one that ends the
/// request (a finish, possibly without tokens; an error finish; a failure).
pub fn script(scope: Scope) -> impl Strategy<Value = Script> {
    (
        proptest::collection::vec(body(scope.late_prompt_info, id_tokens()), 0..6),
        body(false, id_tokens()),
        end(scope.engine_failures),
    )
        .prop_map(|(middle, last, end)| assemble(middle, last, end))
}

/// Scripts for the text endpoints: as [`script`], with word and byte tokens (`text_tokens`), and a
/// step's last token sometimes moved to the next step, so a character's
/// bytes arrive in two engine outputs.
pub fn text_script(scope: Scope) -> impl Strategy<Value = Script> {
    (
        proptest::collection::vec(body(scope.late_prompt_info, text_tokens()), 0..6),
        body(false, text_tokens()),
        end(scope.engine_failures),
        proptest::collection::vec(proptest::bool::weighted(0.4), 6),
    )
        .prop_map(|(mut middle, mut last, end, split)| {
            for i in 0..middle.len() {
                if !split[i] {
                    continue;
                }
                let Some(moved) = middle[i].tokens.pop() else {
                    continue;
                };
                match middle.get_mut(i + 1) {
                    Some(next) => next.tokens.insert(0, moved),
                    None => last.tokens.insert(0, moved),
                }
            }
            assemble(middle, last, end)
        })
}

fn assemble(middle: Vec<Body>, last: Body, end: End) -> Script {
    let mut steps: Vec<Step> = middle.into_iter().map(Body::step).collect();
    let mut last = last.step();
    match end {
        End::Finish(reason, stop_reason) => {
            last.finish = Some(reason);
            last.stop_reason = stop_reason;
        }
        End::ErrorFinish => last.finish = Some(FinishReason::Error),
        End::Fail(message) => {
            last = Step {
                delay_ms: last.delay_ms,
                fail: Some(message),
                ..Step::default()
            };
        }
    }
    steps.push(last);
    Script {
        steps,
        ..Script::default()
    }
}

/// A real engine sends the sampled token and exactly the top `k` the request
/// asked for; the frontends differ on surplus candidates (vllm-rs lists
/// them, Python keeps `k`), which no engine sends, so scripts keep at most `k`.
pub fn keep_candidates(script: &mut Script, k: usize) {
    for step in &mut script.steps {
        for position in step.logprobs.iter_mut().flatten() {
            position.truncate(1 + k);
        }
    }
}
