//! What one engine step becomes on the way out: the output a consumer sees
//! (vLLM's `EngineCoreOutput`, in our terms), with the step cut where the
//! context fills, the prompt on the output that carries it, and logprobs
//! only when the request asks (synthetic ones where the script gives none).

use std::sync::Arc;

use serde_json::Value;

use super::EngineRequest;
use crate::step::{FinishReason, LogprobEntry, Step, StopReason};
use crate::wire::DEFAULT_WEIGHT_VERSION;

/// One engine output for one request (vLLM's `EngineCoreOutput`, in our terms).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineOutput {
    pub new_token_ids: Vec<u32>,
    /// The prompt, on the output that carries the prompt info (normally the
    /// first; later when the script delays it).
    pub prompt_token_ids: Option<Arc<[u32]>>,
    pub num_cached_tokens: u32,
    pub finish_reason: Option<FinishReason>,
    pub stop_reason: Option<StopReason>,
    /// One entry list per new token: the sampled token first, then the top candidates.
    pub logprobs: Option<Vec<Vec<LogprobEntry>>>,
    /// One entry list per prompt position after the first.
    pub prompt_logprobs: Option<Vec<Vec<LogprobEntry>>>,
    pub kv_transfer_params: Option<Value>,
    /// The weights that sampled this step's tokens: a real engine core stamps
    /// every step's message with its version; ours is always
    /// [`DEFAULT_WEIGHT_VERSION`].
    pub weight_version: Option<&'static str>,
}

/// What the engine stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    Output(EngineOutput),
    /// The engine stream broke (a script's `fail`); nothing follows.
    Failed(String),
}

/// A request's prompt, and whether an output has carried it yet.
pub(super) struct Prompt {
    pub(super) ids: Arc<[u32]>,
    pub(super) sent: bool,
}

/// The step as a real engine would emit it when the context fills during it:
/// the tokens that fit, finished with `length` (a stop token that lands
/// exactly on the last slot still finishes with `stop`, as `check_stop` looks
/// for stop tokens first). `None` when the step fits as scripted.
pub(super) fn context_cut(step: &Step, room: u32) -> Option<Step> {
    let fits = room as usize;
    let tokens = step.tokens.len();
    if tokens < fits || (tokens == fits && step.finish.is_some()) {
        return None;
    }
    let mut cut = step.clone();
    cut.tokens.truncate(fits);
    if let Some(logprobs) = &mut cut.logprobs {
        logprobs.truncate(fits);
    }
    cut.finish = Some(FinishReason::Length);
    cut.stop_reason = None;
    Some(cut)
}

/// The output for `step`, carrying the prompt if it is the first to.
pub(super) fn output(prompt: &mut Prompt, request: &EngineRequest, step: &Step) -> EngineOutput {
    let carries_prompt = !prompt.sent && step.prompt_info != Some(false);
    let prompt_token_ids = carries_prompt.then(|| {
        prompt.sent = true;
        prompt.ids.clone()
    });
    // A real engine computes logprobs only when the request asks for them;
    // a frontend that gets unasked-for ones may fail (Python asserts).
    let logprobs = match (&step.logprobs, request.logprobs) {
        (_, None) => None,
        (Some(scripted), Some(_)) => Some(scripted.clone()),
        (None, Some(k)) if !step.tokens.is_empty() => Some(
            step.tokens
                .iter()
                .map(|&t| synthetic_logprobs(t, k))
                .collect(),
        ),
        _ => None,
    };
    let prompt_logprobs = match (carries_prompt, request.prompt_logprobs) {
        (true, Some(_)) if step.prompt_logprobs.is_some() => step.prompt_logprobs.clone(),
        (true, Some(k)) => Some(
            prompt
                .ids
                .iter()
                .skip(1)
                .map(|&t| synthetic_logprobs(t, k.max(0) as u32))
                .collect(),
        ),
        _ => None,
    };
    EngineOutput {
        new_token_ids: step.tokens.clone(),
        prompt_token_ids,
        num_cached_tokens: step.cached_tokens.unwrap_or(0),
        finish_reason: step.finish,
        stop_reason: step.stop_reason.clone(),
        logprobs,
        prompt_logprobs,
        kv_transfer_params: step.kv_transfer_params.clone(),
        weight_version: Some(DEFAULT_WEIGHT_VERSION),
    }
}

/// Logprobs for a token the script gave none for: the token is the most
/// likely one, and the other candidates are its neighbours.
pub fn synthetic_logprobs(token: u32, top: u32) -> Vec<LogprobEntry> {
    let sampled = LogprobEntry {
        token_id: token,
        logprob: -0.125,
        rank: 1,
    };
    std::iter::once(sampled)
        .chain((1..=top).map(|rank| LogprobEntry {
            token_id: if rank == 1 {
                token
            } else {
                token.wrapping_add(rank)
            },
            logprob: if rank == 1 { -0.125 } else { -(rank as f32) },
            rank,
        }))
        .collect()
}
