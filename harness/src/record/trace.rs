//! From what the tap saw to engine scripts: each engine request's outputs,
//! in order, with the gaps between them, become the steps the mock engine
//! replays.
//!
//! ```
//! use harness::record::trace::Traces;
//!
//! let mut traces = Traces::default();
//! // traces.push(event) for every `TapEvent` of the journal, then:
//! assert!(traces.take_finished().is_empty());
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use mock_engine::engine_view::msgpack_to_json;
use mock_engine::script::{FinishReason, LogprobEntry, Script, Step, StopReason};
use mock_engine::tap::{TapEvent, Tapped};
use mock_engine::wire::{EngineCoreOutput, EngineCoreRequest, NdArray, WireStopReason};

/// Everything the tap saw of one engine request.
#[derive(Debug, Clone)]
pub struct Trace {
    pub request: EngineCoreRequest,
    pub added_at: Instant,
    pub outputs: Vec<(Instant, EngineCoreOutput)>,
    /// The frontend aborted it (its client went away, or it failed).
    pub aborted: bool,
}

impl Trace {
    /// Whether nothing more will come for this request.
    pub fn finished(&self) -> bool {
        self.aborted
            || self
                .outputs
                .last()
                .is_some_and(|(_, o)| o.finish_reason.is_some())
    }

    /// The steps the mock engine replays for this request: one per output,
    /// each after the gap the tap observed before it (from the ADD, for the
    /// first), to the nearest millisecond.
    ///
    /// A request the frontend aborted before the engine finished it (a stop
    /// string is found by the frontend, which then aborts the request in the
    /// engine) ends with an `abort` finish [`ABORTED_AFTER_MS`] after its
    /// last output: a replay's frontend aborts it again at the same output,
    /// long before that step is due, and a frontend that does not would
    /// show the `abort`.
    pub fn steps(&self) -> Result<Vec<Step>, String> {
        let mut last = self.added_at;
        let mut steps = Vec::with_capacity(self.outputs.len());
        for (position, (at, output)) in self.outputs.iter().enumerate() {
            let gap = at.saturating_duration_since(last);
            last = *at;
            let mut step = step_of(output).map_err(|e| {
                format!(
                    "request {}: output {position}: {e}",
                    self.request.request_id
                )
            })?;
            step.delay_ms = (gap.as_secs_f64() * 1000.0).round() as u64;
            steps.push(step);
        }
        if self.aborted && steps.last().is_none_or(|s| s.finish.is_none()) {
            steps.push(Step {
                delay_ms: ABORTED_AFTER_MS,
                finish: Some(FinishReason::Abort),
                ..Step::default()
            });
        }
        Ok(steps)
    }
}

/// How long after its last output an aborted request's script finishes
/// with `abort` (see [`Trace::steps`]).
pub const ABORTED_AFTER_MS: u64 = 2000;

/// One output as a script step (without its delay).
fn step_of(output: &EngineCoreOutput) -> Result<Step, String> {
    let logprobs = output
        .new_logprobs
        .as_deref()
        .map(|l| rows(&l.logprob_token_ids, &l.logprobs, &l.sampled_token_ranks))
        .transpose()
        .map_err(|e| format!("new_logprobs: {e}"))?;
    let prompt_logprobs = output
        .new_prompt_logprobs_tensors
        .as_deref()
        .map(|t| rows(&t.logprob_token_ids, &t.logprobs, &t.selected_token_ranks))
        .transpose()
        .map_err(|e| format!("new_prompt_logprobs_tensors: {e}"))?;
    let cached = output
        .prefill_stats
        .map(|s| s.num_cached_tokens)
        .filter(|&n| n > 0);
    Ok(Step {
        delay_ms: 0,
        tokens: output.new_token_ids.clone(),
        finish: output.finish_reason,
        stop_reason: output.stop_reason.as_ref().map(|r| match r {
            WireStopReason::Token(t) => StopReason::Token(*t),
            WireStopReason::Text(s) => StopReason::Text(s.clone()),
        }),
        cached_tokens: cached,
        logprobs,
        prompt_logprobs,
        kv_transfer_params: output.kv_transfer_params.as_ref().map(msgpack_to_json),
        ..Step::default()
    })
}

/// vLLM's logprob arrays (`[positions, 1 + top]` ids and logprobs, and the
/// chosen token's rank per position) as the script's entry lists: the chosen
/// token first with its rank, then the candidates ranked 1, 2, ...
fn rows(
    ids: &NdArray,
    logprobs: &NdArray,
    ranks: &NdArray,
) -> Result<Vec<Vec<LogprobEntry>>, String> {
    let ids = ids.to_i64s().ok_or("token ids are not integers")?;
    let lps = logprobs.to_f32s().ok_or("logprobs are not floats")?;
    let ranks = ranks.to_i64s().ok_or("ranks are not integers")?;
    if ids.len() != lps.len() {
        return Err(format!(
            "{} token ids but {} logprobs",
            ids.len(),
            lps.len()
        ));
    }
    if ranks.is_empty() {
        return Ok(Vec::new());
    }
    if ids.len() % ranks.len() != 0 {
        return Err(format!(
            "{} entries do not split into {} positions",
            ids.len(),
            ranks.len()
        ));
    }
    let width = ids.len() / ranks.len();
    let id = |x: i64| u32::try_from(x).map_err(|_| format!("token id {x} is not a vocabulary id"));
    let rank = |x: i64| u32::try_from(x).map_err(|_| format!("rank {x} is negative"));
    (0..ranks.len())
        .map(|p| {
            (0..width)
                .map(|j| {
                    let at = p * width + j;
                    Ok(LogprobEntry {
                        token_id: id(ids[at])?,
                        logprob: lps[at],
                        rank: if j == 0 { rank(ranks[p])? } else { j as u32 },
                    })
                })
                .collect()
        })
        .collect()
}

/// The requests the tap has seen, in the order they were added.
#[derive(Debug, Default)]
pub struct Traces {
    traces: Vec<Trace>,
    by_id: BTreeMap<String, usize>,
    /// Outputs for requests the tap never saw added (started before it).
    pub orphans: usize,
    /// Messages that did not decode, with the reason.
    pub undecodable: Vec<String>,
}

impl Traces {
    pub fn push(&mut self, event: TapEvent) {
        match event.message {
            Tapped::Add(request) => {
                self.by_id
                    .insert(request.request_id.clone(), self.traces.len());
                self.traces.push(Trace {
                    request,
                    added_at: event.at,
                    outputs: Vec::new(),
                    aborted: false,
                });
            }
            Tapped::Abort(ids) => {
                for id in ids {
                    if let Some(&i) = self.by_id.get(&id) {
                        self.traces[i].aborted = true;
                    }
                }
            }
            Tapped::Outputs(outputs) => {
                for output in outputs.outputs {
                    match self.by_id.get(&output.request_id) {
                        Some(&i) => self.traces[i].outputs.push((event.at, output)),
                        None => self.orphans += 1,
                    }
                }
            }
            Tapped::Undecodable { direction, error } => {
                self.undecodable.push(format!("{direction:?}: {error}"));
            }
            Tapped::EngineDead | Tapped::Other { .. } => {}
        }
    }

    /// Whether every request seen so far is finished.
    pub fn all_finished(&self) -> bool {
        self.traces.iter().all(Trace::finished)
    }

    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// Takes every trace (finished or not), in the order of their ADDs.
    pub fn take_all(&mut self) -> Vec<Trace> {
        self.by_id.clear();
        std::mem::take(&mut self.traces)
    }

    /// Takes the finished traces, in the order of their ADDs, and keeps the rest.
    pub fn take_finished(&mut self) -> Vec<Trace> {
        let (done, open): (Vec<Trace>, Vec<Trace>) =
            self.take_all().into_iter().partition(Trace::finished);
        for trace in open {
            self.by_id
                .insert(trace.request.request_id.clone(), self.traces.len());
            self.traces.push(trace);
        }
        done
    }
}

/// The script for one HTTP request: its first engine request's steps, and
/// those of the others (with `n` > 1, one engine request per sample, in the
/// order the frontend added them) as further samples.
pub fn script_of(traces: &[Trace]) -> Result<Script, String> {
    let mut samples = traces.iter().map(Trace::steps);
    let steps = samples.next().transpose()?.unwrap_or_default();
    Ok(Script {
        steps,
        samples: samples.collect::<Result<_, _>>()?,
        ..Script::default()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mock_engine::FinishReason;
    use mock_engine::wire::{DtypeNaming, EngineCoreOutputs, LogprobsLists, PrefillStats};

    use super::*;

    fn event(at: Instant, message: Tapped) -> TapEvent {
        TapEvent {
            at,
            message,
            frames: Vec::new(),
        }
    }

    #[test]
    fn a_request_the_frontend_aborted_ends_with_an_abort_long_after() {
        let t0 = Instant::now();
        let mut traces = Traces::default();
        traces.push(event(
            t0,
            Tapped::Add(EngineCoreRequest::new("r-1", vec![1, 2])),
        ));
        traces.push(event(
            t0 + Duration::from_millis(4),
            Tapped::Outputs(EngineCoreOutputs::batch(
                0,
                vec![EngineCoreOutput::tokens("r-1", vec![7])],
                0.0,
            )),
        ));
        assert!(!traces.all_finished());
        traces.push(event(t0, Tapped::Abort(vec!["r-1".into()])));
        assert!(traces.all_finished(), "an aborted request is over");
        let steps = traces.take_all()[0].steps().unwrap();
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!((steps[0].delay_ms, &steps[0].tokens), (4, &vec![7]));
        assert_eq!(steps[1].finish, Some(FinishReason::Abort));
        assert_eq!(
            (steps[1].delay_ms, steps[1].tokens.len()),
            (ABORTED_AFTER_MS, 0)
        );
    }

    #[test]
    fn outputs_become_steps_with_their_gaps_and_fields() {
        let t0 = Instant::now();
        let mut traces = Traces::default();
        traces.push(event(
            t0,
            Tapped::Add(EngineCoreRequest::new("r-1", vec![1, 2, 3])),
        ));
        let mut first = EngineCoreOutput::tokens("r-1", vec![7]);
        first.prefill_stats = Some(PrefillStats::local_cache_hit(3, 2));
        first.new_logprobs = Some(Box::new(LogprobsLists {
            logprob_token_ids: NdArray::from_i32(DtypeNaming::Numpy, vec![1, 3], &[7, 7, 9]),
            logprobs: NdArray::from_f32(DtypeNaming::Numpy, vec![1, 3], &[-0.5, -0.5, -2.0]),
            sampled_token_ranks: NdArray::from_i64(DtypeNaming::Numpy, vec![1], &[1]),
            cu_num_generated_tokens: None,
        }));
        traces.push(event(
            t0 + Duration::from_millis(30),
            Tapped::Outputs(EngineCoreOutputs::batch(0, vec![first], 0.0)),
        ));
        assert!(!traces.all_finished());
        let mut last = EngineCoreOutput::tokens("r-1", vec![8]);
        last.finish_reason = Some(FinishReason::Stop);
        last.stop_reason = Some(WireStopReason::Token(8));
        let mut other = EngineCoreOutput::tokens("unknown", vec![1]);
        other.finish_reason = Some(FinishReason::Length);
        traces.push(event(
            t0 + Duration::from_micros(33_400),
            Tapped::Outputs(EngineCoreOutputs::batch(0, vec![last, other], 0.0)),
        ));
        assert!(traces.all_finished());
        assert_eq!(traces.orphans, 1);
        let done = traces.take_finished();
        assert_eq!(done.len(), 1);
        let steps = done[0].steps().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[0].delay_ms, steps[1].delay_ms), (30, 3));
        assert_eq!(steps[0].tokens, vec![7]);
        assert_eq!(steps[0].cached_tokens, Some(2));
        let lp = steps[0].logprobs.as_ref().unwrap();
        assert_eq!(lp[0].len(), 3);
        assert_eq!((lp[0][0].token_id, lp[0][0].rank), (7, 1));
        assert_eq!(
            (lp[0][2].token_id, lp[0][2].rank, lp[0][2].logprob),
            (9, 2, -2.0)
        );
        assert_eq!(steps[1].finish, Some(FinishReason::Stop));
        assert_eq!(steps[1].stop_reason, Some(StopReason::Token(8)));
        assert_eq!(steps[1].cached_tokens, None);
    }

    #[test]
    fn an_abort_finishes_a_trace_and_samples_follow_add_order() {
        let t0 = Instant::now();
        let mut traces = Traces::default();
        for id in ["0_p", "1_p"] {
            traces.push(event(t0, Tapped::Add(EngineCoreRequest::new(id, vec![5]))));
        }
        for (id, token) in [("1_p", 11), ("0_p", 10)] {
            let mut o = EngineCoreOutput::tokens(id, vec![token]);
            o.finish_reason = Some(FinishReason::Length);
            traces.push(event(
                t0,
                Tapped::Outputs(EngineCoreOutputs::batch(0, vec![o], 0.0)),
            ));
        }
        traces.push(event(t0, Tapped::Add(EngineCoreRequest::new("x", vec![6]))));
        traces.push(event(t0, Tapped::Abort(vec!["x".into()])));
        let done = traces.take_all();
        assert!(done[2].aborted && done[2].finished());
        let script = script_of(&done[..2]).unwrap();
        assert_eq!(script.steps[0].tokens, vec![10]);
        assert_eq!(script.samples.len(), 1);
        assert_eq!(script.samples[0][0].tokens, vec![11]);
    }

    #[test]
    fn ragged_logprobs_are_an_error_naming_the_request() {
        let t0 = Instant::now();
        let mut traces = Traces::default();
        traces.push(event(t0, Tapped::Add(EngineCoreRequest::new("r", vec![1]))));
        let mut o = EngineCoreOutput::tokens("r", vec![7]);
        o.new_logprobs = Some(Box::new(LogprobsLists {
            logprob_token_ids: NdArray::from_i32(DtypeNaming::Numpy, vec![1, 3], &[7, 7, 9]),
            logprobs: NdArray::from_f32(DtypeNaming::Numpy, vec![1, 2], &[-0.5, -0.5]),
            sampled_token_ranks: NdArray::from_i64(DtypeNaming::Numpy, vec![1], &[1]),
            cu_num_generated_tokens: None,
        }));
        traces.push(event(
            t0,
            Tapped::Outputs(EngineCoreOutputs::batch(0, vec![o], 0.0)),
        ));
        let e = traces.take_all()[0].steps().unwrap_err();
        assert!(e.contains("request r") && e.contains("new_logprobs"), "{e}");
    }
}
