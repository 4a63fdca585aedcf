//! The engine: for a submitted request, a stream of engine outputs that follows
//! the request's script on an absolute clock.
//!
//! Dropping the stream is the abort: no task runs behind it, so nothing is
//! left behind, and the engine counts the request as aborted.
//!
//! ```
//! # tokio_test_block_on(async {
//! use futures::StreamExt;
//! use mock_engine::engine::{Engine, EngineEvent, EngineRequest};
//! use mock_engine::script::{FinishReason, Script, Step};
//!
//! let engine = Engine::default();
//! engine.register(vec![1, 2], Script { steps: vec![
//!     Step { tokens: vec![33], ..Step::default() },
//!     Step { tokens: vec![44], finish: Some(FinishReason::Stop), ..Step::default() },
//! ], ..Script::default() });
//! let events: Vec<_> = engine.submit(EngineRequest::new("r1", vec![1, 2])).collect().await;
//! let EngineEvent::Output(last) = &events[1] else { panic!() };
//! assert_eq!(last.finish_reason, Some(FinishReason::Stop));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::time::{Instant, Sleep};

use crate::clock;
use crate::fixture::Corpus;
use crate::generator::{Generator, GeneratorConfig};
use crate::script::{FinishReason, LogprobEntry, Script, Step, StopReason};
use crate::wire::DEFAULT_WEIGHT_VERSION;

/// What the engine needs to know of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineRequest {
    pub request_id: String,
    pub prompt_token_ids: Vec<u32>,
    /// `None`: the generator runs to the end of the context window.
    pub max_tokens: Option<u32>,
    /// Top candidates asked per sampled token (`sampling_params.logprobs`).
    pub logprobs: Option<u32>,
    /// Top candidates asked per prompt position (`sampling_params.prompt_logprobs`,
    /// -1 meaning the whole vocabulary).
    pub prompt_logprobs: Option<i64>,
}

impl EngineRequest {
    pub fn new(request_id: impl Into<String>, prompt_token_ids: Vec<u32>) -> Self {
        Self {
            request_id: request_id.into(),
            prompt_token_ids,
            max_tokens: None,
            logprobs: None,
            prompt_logprobs: None,
        }
    }
}

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

/// How a request ended, as the engine saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The script ran to its end.
    Completed,
    /// The consumer dropped the stream before the end: vLLM's abort.
    Aborted,
}

/// Published when a request leaves the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub request_id: String,
    pub prompt_token_ids: Vec<u32>,
    pub outcome: Outcome,
}

/// Counters since the engine was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub submitted: u64,
    pub completed: u64,
    pub aborted: u64,
}

impl EngineStats {
    pub fn active(&self) -> u64 {
        self.submitted - self.completed - self.aborted
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    pub generator: GeneratorConfig,
    /// vLLM's context window; the default `max_tokens` fills it.
    pub max_model_len: u32,
    pub timer: Timer,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            generator: GeneratorConfig::default(),
            max_model_len: 2048,
            timer: Timer::Precise,
        }
    }
}

/// What keeps the scripted delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timer {
    /// [`crate::clock`]: to a fraction of a millisecond, on real time.
    #[default]
    Precise,
    /// Tokio's timer: whole milliseconds, but it follows a paused test clock
    /// (`tokio::time::pause`), so tests of timing run instantly.
    Tokio,
}

/// A cheaply clonable handle to one scripted engine.
#[derive(Clone, Default)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    scripts: RwLock<HashMap<Vec<u32>, Arc<Registration>>>,
    submitted: AtomicU64,
    completed: AtomicU64,
    aborted: AtomicU64,
    records: broadcast::Sender<RequestRecord>,
}

/// A registered script and the requests for its prompt since it was registered
/// (the k-th gets sample k; see [`Script::steps_for_arrival`]).
struct Registration {
    script: Arc<Script>,
    arrivals: AtomicUsize,
}

impl Default for Inner {
    fn default() -> Self {
        Self::new(EngineConfig::default())
    }
}

impl Inner {
    fn new(config: EngineConfig) -> Self {
        Self {
            config,
            scripts: RwLock::default(),
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            records: broadcast::channel(1024).0,
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            inner: Arc::new(Inner::new(config)),
        }
    }

    /// An engine that answers every fixture of `corpus` with its script. A
    /// prompt that several fixtures share gets the first one's script (in
    /// path order); to replay each, register its script right before sending
    /// its request, as `genconform run` does.
    pub fn with_corpus(config: EngineConfig, corpus: &Corpus) -> Self {
        let engine = Self::new(config);
        let mut seen = std::collections::HashSet::new();
        for loaded in &corpus.fixtures {
            if let Some(ids) = loaded.fixture.prompt_token_ids()
                && !loaded.fixture.engine.steps.is_empty()
                && seen.insert(ids.clone())
            {
                engine.register(ids, loaded.fixture.engine.clone());
            }
        }
        engine
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Answers requests whose prompt is exactly `prompt_token_ids` with `script`,
    /// replacing any script registered for it before. The count of arrivals
    /// that picks a script's sample starts again from 0.
    pub fn register(&self, prompt_token_ids: Vec<u32>, script: Script) {
        let registration = Arc::new(Registration {
            script: Arc::new(script),
            arrivals: AtomicUsize::new(0),
        });
        self.inner
            .scripts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(prompt_token_ids, registration);
    }

    pub fn unregister(&self, prompt_token_ids: &[u32]) {
        self.inner
            .scripts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(prompt_token_ids);
    }

    /// The script registered for this prompt (looking does not count as an
    /// arrival).
    pub fn script_for(&self, prompt_token_ids: &[u32]) -> Option<Arc<Script>> {
        self.inner
            .scripts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(prompt_token_ids)
            .map(|r| r.script.clone())
    }

    /// The script for one more request of this prompt, and which arrival
    /// since the registration it is.
    fn arrive(&self, prompt_token_ids: &[u32]) -> Option<(Arc<Script>, usize)> {
        let scripts = self.inner.scripts.read().unwrap_or_else(|e| e.into_inner());
        let registration = scripts.get(prompt_token_ids)?;
        let arrival = registration.arrivals.fetch_add(1, Ordering::Relaxed);
        Some((registration.script.clone(), arrival))
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            submitted: self.inner.submitted.load(Ordering::Relaxed),
            completed: self.inner.completed.load(Ordering::Relaxed),
            aborted: self.inner.aborted.load(Ordering::Relaxed),
        }
    }

    /// A feed of every request that leaves the engine from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RequestRecord> {
        self.inner.records.subscribe()
    }

    /// Starts a request. Its clock starts now: each step's deadline is the
    /// previous deadline plus the step's delay. A scripted prompt's k-th
    /// request since the registration follows sample k of the script.
    pub fn submit(&self, request: EngineRequest) -> EngineStream {
        self.inner.submitted.fetch_add(1, Ordering::Relaxed);
        // A real engine stops a request when prompt plus output fill the
        // context (the scheduler's check_stop), whatever `max_tokens` says;
        // it always samples at least one token.
        let room = u32::try_from(request.prompt_token_ids.len())
            .map_or(0, |prompt| {
                self.inner.config.max_model_len.saturating_sub(prompt)
            })
            .max(1);
        let steps = match self.arrive(&request.prompt_token_ids) {
            Some((script, arrival)) => Steps::Scripted {
                script,
                arrival,
                next: 0,
            },
            None => Steps::Generated(Generator::new(
                self.inner.config.generator,
                &request.prompt_token_ids,
                request.max_tokens.map_or(room, |max| max.min(room)),
            )),
        };
        EngineStream {
            guard: Guard {
                inner: self.inner.clone(),
                request_id: request.request_id.clone(),
                prompt: request.prompt_token_ids.clone(),
                done: false,
            },
            prompt: Prompt {
                ids: request.prompt_token_ids.clone().into(),
                sent: false,
            },
            request,
            steps,
            room,
            deadline: Instant::now(),
            reached: false,
            due: None,
            timer: match self.inner.config.timer {
                Timer::Precise => Deadline::Precise(clock::sleep_until(std::time::Instant::now())),
                Timer::Tokio => Deadline::Tokio(None),
            },
            state: State::Running,
        }
    }
}

/// Where a request's steps come from.
enum Steps {
    Scripted {
        script: Arc<Script>,
        /// Picks the sample: see [`Script::steps_for_arrival`].
        arrival: usize,
        next: usize,
    },
    Generated(Generator),
}

/// The step a stream is waiting to emit: scripted steps are read in place,
/// not copied, since a long script is walked once per request. A generated
/// step stays inline: boxing it would cost an allocation per step.
#[allow(clippy::large_enum_variant)]
enum Due {
    Scripted(usize),
    Generated(Step),
}

impl Steps {
    fn next(&mut self) -> Option<Due> {
        match self {
            Self::Scripted {
                script,
                arrival,
                next,
            } => {
                let steps = script.steps_for_arrival(*arrival);
                let due = (*next < steps.len()).then_some(Due::Scripted(*next));
                *next += 1;
                due
            }
            Self::Generated(generator) => generator.next().map(Due::Generated),
        }
    }

    fn get<'a>(&'a self, due: &'a Due) -> &'a Step {
        match (self, due) {
            (
                Self::Scripted {
                    script, arrival, ..
                },
                Due::Scripted(i),
            ) => &script.steps_for_arrival(*arrival)[*i],
            (_, Due::Generated(step)) => step,
            (Self::Generated(_), Due::Scripted(_)) => {
                unreachable!("a generated request has no scripted steps")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Only the consumer dropping the stream ends a stalled request.
    Stalled,
    Ended,
}

/// One request's engine outputs, each at its deadline. Dropping it before the
/// end is the abort.
///
/// Written out by hand rather than as an async block: the engine core polls
/// hundreds of these per millisecond, and an `unfold` moves the whole state
/// in and out of a fresh future on every step.
pub struct EngineStream {
    guard: Guard,
    request: EngineRequest,
    prompt: Prompt,
    steps: Steps,
    /// Output tokens the context still has room for.
    room: u32,
    deadline: Instant,
    /// `deadline` has passed.
    reached: bool,
    /// The next step, taken from the script, while its deadline is ahead.
    due: Option<Due>,
    timer: Deadline,
    state: State,
}

/// One timer per stream, reset per step: a timer entry per step would cost
/// an allocation each.
enum Deadline {
    Precise(clock::Sleep),
    Tokio(Option<Pin<Box<Sleep>>>),
}

impl Deadline {
    fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Self::Precise(sleep) => {
                let deadline = deadline.into_std();
                if sleep.deadline() != deadline {
                    sleep.reset(deadline);
                }
                sleep.poll_deadline(cx)
            }
            Self::Tokio(sleep) => {
                let sleep =
                    sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep.as_mut().poll(cx)
            }
        }
    }
}

struct Prompt {
    ids: Arc<[u32]>,
    sent: bool,
}

impl Stream for EngineStream {
    type Item = EngineEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EngineEvent>> {
        let this = self.get_mut();
        match this.state {
            State::Running => {}
            State::Stalled => return Poll::Pending,
            State::Ended => return Poll::Ready(None),
        }
        let due = match this.due.take() {
            Some(due) => due,
            None => {
                let Some(due) = this.steps.next() else {
                    this.end();
                    return Poll::Ready(None);
                };
                let delay_ms = this.steps.get(&due).delay_ms;
                if delay_ms > 0 {
                    this.deadline += Duration::from_millis(delay_ms);
                    this.reached = false;
                }
                due
            }
        };
        // An unpaced step keeps a deadline already reached: no clock read.
        if !this.reached && this.deadline > Instant::now() {
            if this.timer.poll_until(this.deadline, cx).is_pending() {
                this.due = Some(due);
                return Poll::Pending;
            }
        } else {
            // A deadline already past needs no timer round trip; spending the
            // task's budget keeps an unpaced stream from starving the rest.
            match tokio::task::coop::poll_proceed(cx) {
                Poll::Ready(progress) => progress.made_progress(),
                Poll::Pending => {
                    this.due = Some(due);
                    return Poll::Pending;
                }
            }
        }
        this.reached = true;
        let step = this.steps.get(&due);
        if step.stall {
            this.state = State::Stalled;
            return Poll::Pending;
        }
        if let Some(message) = &step.fail {
            let message = message.clone();
            this.end();
            return Poll::Ready(Some(EngineEvent::Failed(message)));
        }
        let output = match context_cut(step, this.room) {
            Some(cut) => output(&mut this.prompt, &this.request, &cut),
            None => output(&mut this.prompt, &this.request, step),
        };
        this.room = this
            .room
            .saturating_sub(u32::try_from(output.new_token_ids.len()).unwrap_or(u32::MAX));
        if output.finish_reason.is_some() {
            this.end();
        }
        Poll::Ready(Some(EngineEvent::Output(output)))
    }
}

impl EngineStream {
    fn end(&mut self) {
        self.state = State::Ended;
        self.guard.finish();
    }
}

/// The step as a real engine would emit it when the context fills during it:
/// the tokens that fit, finished with `length` (a stop token that lands
/// exactly on the last slot still finishes with `stop`, as `check_stop` looks
/// for stop tokens first). `None` when the step fits as scripted.
fn context_cut(step: &Step, room: u32) -> Option<Step> {
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

fn output(prompt: &mut Prompt, request: &EngineRequest, step: &Step) -> EngineOutput {
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

/// Counts the request as aborted unless it was finished first.
struct Guard {
    inner: Arc<Inner>,
    request_id: String,
    prompt: Vec<u32>,
    done: bool,
}

impl Guard {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.inner.completed.fetch_add(1, Ordering::Relaxed);
            self.publish(Outcome::Completed);
        }
    }

    fn publish(&mut self, outcome: Outcome) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.inner.records.send(RequestRecord {
            request_id: std::mem::take(&mut self.request_id),
            prompt_token_ids: std::mem::take(&mut self.prompt),
            outcome,
        });
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.inner.aborted.fetch_add(1, Ordering::Relaxed);
            self.publish(Outcome::Aborted);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// These tests run on tokio's paused clock, which only tokio's timer follows.
    fn paused_engine() -> Engine {
        Engine::new(EngineConfig {
            timer: Timer::Tokio,
            ..EngineConfig::default()
        })
    }

    fn step(tokens: &[u32]) -> Step {
        Step {
            tokens: tokens.to_vec(),
            delay_ms: 10,
            ..Step::default()
        }
    }

    fn outputs(events: Vec<EngineEvent>) -> Vec<EngineOutput> {
        events
            .into_iter()
            .map(|e| match e {
                EngineEvent::Output(o) => o,
                EngineEvent::Failed(m) => panic!("unexpected failure {m}"),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn late_prompt_info_arrives_with_the_next_step() {
        let engine = paused_engine();
        let mut first = step(&[]);
        first.prompt_info = Some(false);
        let mut last = step(&[44]);
        last.finish = Some(FinishReason::Stop);
        engine.register(
            vec![9],
            Script {
                steps: vec![first, step(&[33]), last],
                ..Script::default()
            },
        );
        let out = outputs(
            engine
                .submit(EngineRequest::new("a", vec![9]))
                .collect()
                .await,
        );
        assert_eq!(out.len(), 3);
        assert!(out[0].prompt_token_ids.is_none());
        assert_eq!(out[1].prompt_token_ids.as_deref(), Some(&[9][..]));
        assert!(out[2].prompt_token_ids.is_none());
        assert_eq!(
            engine.stats(),
            EngineStats {
                submitted: 1,
                completed: 1,
                aborted: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_are_absolute() {
        let engine = paused_engine();
        let mut last = step(&[2]);
        last.finish = Some(FinishReason::Length);
        engine.register(
            vec![5],
            Script {
                steps: vec![step(&[1]), last],
                ..Script::default()
            },
        );
        let start = Instant::now();
        let out: Vec<_> = engine
            .submit(EngineRequest::new("a", vec![5]))
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_stream_aborts() {
        let engine = paused_engine();
        let mut records = engine.subscribe();
        let mut stall = step(&[]);
        stall.stall = true;
        engine.register(
            vec![3],
            Script {
                steps: vec![step(&[1]), stall],
                ..Script::default()
            },
        );
        let mut stream = Box::pin(engine.submit(EngineRequest::new("s", vec![3])));
        assert!(stream.next().await.is_some());
        let pending = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        assert!(pending.is_err(), "a stalled step never yields");
        assert_eq!(engine.stats().active(), 1);
        drop(stream);
        assert_eq!(engine.stats().aborted, 1);
        let record = records.recv().await.unwrap();
        assert_eq!(
            (record.request_id.as_str(), record.outcome),
            ("s", Outcome::Aborted)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fail_ends_the_stream_with_its_message() {
        let engine = paused_engine();
        let mut fail = step(&[]);
        fail.fail = Some("engine died".into());
        engine.register(
            vec![4],
            Script {
                steps: vec![step(&[1]), fail],
                ..Script::default()
            },
        );
        let events: Vec<_> = engine
            .submit(EngineRequest::new("f", vec![4]))
            .collect()
            .await;
        assert_eq!(
            events.last(),
            Some(&EngineEvent::Failed("engine died".into()))
        );
        assert_eq!(engine.stats().completed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unscripted_prompts_get_max_tokens_from_the_generator() {
        let engine = paused_engine();
        let mut request = EngineRequest::new("g", vec![1, 2, 3]);
        request.max_tokens = Some(5);
        request.logprobs = Some(2);
        let out = outputs(engine.submit(request.clone()).collect().await);
        let tokens: Vec<u32> = out.iter().flat_map(|o| o.new_token_ids.clone()).collect();
        assert_eq!(tokens.len(), 5);
        assert_eq!(
            out.last().unwrap().finish_reason,
            Some(FinishReason::Length)
        );
        assert!(
            out.iter()
                .all(|o| o.logprobs.as_ref().unwrap()[0].len() == 3)
        );
        let again = outputs(engine.submit(request).collect().await);
        assert_eq!(out, again, "the generator is deterministic");
    }

    /// An engine whose context holds 8 tokens.
    fn small_context_engine() -> Engine {
        Engine::new(EngineConfig {
            timer: Timer::Tokio,
            max_model_len: 8,
            ..EngineConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn generation_stops_when_the_context_is_full_whatever_max_tokens_says() {
        let engine = small_context_engine();
        let mut request = EngineRequest::new("g", vec![1, 2, 3]);
        request.max_tokens = Some(u32::MAX);
        let out = outputs(engine.submit(request).collect().await);
        assert_eq!(tokens_of(&out).len(), 5, "3 prompt + 5 output = 8");
        assert_eq!(
            out.last().unwrap().finish_reason,
            Some(FinishReason::Length)
        );
        // A prompt that fills the context still samples one token, as vLLM does.
        let full = outputs(
            engine
                .submit(EngineRequest::new("f", vec![1; 8]))
                .collect()
                .await,
        );
        assert_eq!(tokens_of(&full).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_script_that_overruns_the_context_is_cut_with_length() {
        let engine = small_context_engine();
        let mut last = step(&[13, 14, 15]);
        last.finish = Some(FinishReason::Stop);
        last.stop_reason = Some(StopReason::Token(15));
        engine.register(
            vec![1, 2, 3],
            Script {
                steps: vec![step(&[10, 11, 12]), last],
                ..Script::default()
            },
        );
        let out = outputs(
            engine
                .submit(EngineRequest::new("s", vec![1, 2, 3]))
                .collect()
                .await,
        );
        assert_eq!(tokens_of(&out), [10, 11, 12, 13, 14]);
        assert_eq!(out[1].finish_reason, Some(FinishReason::Length));
        assert_eq!(out[1].stop_reason, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_token_on_the_last_slot_still_stops() {
        let engine = small_context_engine();
        let mut last = step(&[10, 11, 12, 13, 14]);
        last.finish = Some(FinishReason::Stop);
        engine.register(
            vec![1, 2, 3],
            Script {
                steps: vec![last],
                ..Script::default()
            },
        );
        let out = outputs(
            engine
                .submit(EngineRequest::new("s", vec![1, 2, 3]))
                .collect()
                .await,
        );
        assert_eq!(tokens_of(&out).len(), 5);
        assert_eq!(out[0].finish_reason, Some(FinishReason::Stop));
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_logprobs_go_out_only_when_asked_for() {
        let engine = paused_engine();
        let mut last = step(&[7]);
        last.finish = Some(FinishReason::Stop);
        last.logprobs = Some(vec![vec![LogprobEntry {
            token_id: 7,
            logprob: -0.5,
            rank: 1,
        }]]);
        engine.register(
            vec![6],
            Script {
                steps: vec![last],
                ..Script::default()
            },
        );
        let plain = outputs(
            engine
                .submit(EngineRequest::new("p", vec![6]))
                .collect()
                .await,
        );
        assert_eq!(plain[0].logprobs, None);
        let mut asking = EngineRequest::new("a", vec![6]);
        asking.logprobs = Some(1);
        let asked = outputs(engine.submit(asking).collect().await);
        assert_eq!(asked[0].logprobs.as_ref().unwrap()[0][0].logprob, -0.5);
    }

    fn tokens_of(out: &[EngineOutput]) -> Vec<u32> {
        out.iter().flat_map(|o| o.new_token_ids.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn each_arrival_of_a_prompt_gets_its_sample() {
        let engine = paused_engine();
        let one = |t: u32| {
            let mut s = step(&[t]);
            s.finish = Some(FinishReason::Stop);
            vec![s]
        };
        let script = Script {
            steps: one(10),
            samples: vec![one(11), one(12)],
            ..Script::default()
        };
        engine.register(vec![8, 9], script.clone());
        let mut seen = Vec::new();
        for i in 0..4 {
            let request = EngineRequest::new(format!("r{i}"), vec![8, 9]);
            seen.push(tokens_of(&outputs(engine.submit(request).collect().await)));
        }
        assert_eq!(seen, [vec![10], vec![11], vec![12], vec![10]]);
        // Looking a script up is not an arrival; registering again starts over.
        assert!(engine.script_for(&[8, 9]).is_some());
        engine.register(vec![8, 9], script);
        let mut again = Vec::new();
        for i in 0..2 {
            let request = EngineRequest::new(format!("s{i}"), vec![8, 9]);
            again.push(tokens_of(&outputs(engine.submit(request).collect().await)));
        }
        assert_eq!(again, [vec![10], vec![11]]);
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_prompt_logprobs_replace_the_synthetic_ones() {
        let engine = paused_engine();
        let entry = |token_id, logprob| LogprobEntry {
            token_id,
            logprob,
            rank: 3,
        };
        let scripted = vec![
            vec![entry(2, -4.5), entry(900, -0.25)],
            vec![entry(3, -1.5), entry(901, -0.5)],
        ];
        let mut first = step(&[]);
        first.prompt_info = Some(false);
        let mut last = step(&[7]);
        last.finish = Some(FinishReason::Stop);
        last.prompt_logprobs = Some(scripted.clone());
        engine.register(
            vec![1, 2, 3],
            Script {
                steps: vec![first, last],
                ..Script::default()
            },
        );
        let mut asking = EngineRequest::new("a", vec![1, 2, 3]);
        asking.prompt_logprobs = Some(1);
        let out = outputs(engine.submit(asking).collect().await);
        assert_eq!(out[0].prompt_logprobs, None);
        assert_eq!(out[1].prompt_logprobs.as_ref(), Some(&scripted));
        let plain = outputs(
            engine
                .submit(EngineRequest::new("p", vec![1, 2, 3]))
                .collect()
                .await,
        );
        assert!(plain.iter().all(|o| o.prompt_logprobs.is_none()));
        // Without scripted ones, the request still gets synthetic ones.
        let mut other = EngineRequest::new("g", vec![4, 5, 6]);
        other.max_tokens = Some(1);
        other.prompt_logprobs = Some(1);
        let generated = outputs(engine.submit(other).collect().await);
        let synthetic = generated[0].prompt_logprobs.as_ref().unwrap();
        assert_eq!(synthetic[0], synthetic_logprobs(5, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn many_concurrent_requests_complete() {
        let engine = paused_engine();
        let runs = (0..200u32).map(|i| {
            let mut r = EngineRequest::new(format!("r{i}"), vec![i, i + 1]);
            r.max_tokens = Some(4);
            engine.submit(r).collect::<Vec<_>>()
        });
        let all = futures::future::join_all(runs).await;
        assert!(all.iter().all(|events| events.len() == 4));
        assert_eq!(engine.stats().completed, 200);
    }
}
