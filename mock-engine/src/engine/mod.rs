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
//!
//! The parts: this module is the handle (scripts registered by prompt, and
//! [`Engine::submit`]); `stream` plays one request's steps on its clock;
//! `output` turns a step into what the consumer sees; `timer` keeps the
//! delays; `ledger` counts requests in and out.

mod ledger;
mod output;
mod stream;
mod timer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use self::ledger::Ledger;
pub use self::ledger::{EngineStats, Outcome, RequestRecord};
pub use self::output::{EngineEvent, EngineOutput, synthetic_logprobs};
pub use self::stream::EngineStream;
use self::stream::Steps;
pub use self::timer::Timer;
use crate::engine_view::EngineView;
use crate::fixture::Corpus;
use crate::generator::{Generator, GeneratorConfig};
use crate::script::Script;

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
    /// Everything the frontend asked, when it says: published to
    /// [`Engine::watch`] as the request arrives.
    pub view: Option<EngineView>,
}

impl EngineRequest {
    pub fn new(request_id: impl Into<String>, prompt_token_ids: Vec<u32>) -> Self {
        Self {
            request_id: request_id.into(),
            prompt_token_ids,
            max_tokens: None,
            logprobs: None,
            prompt_logprobs: None,
            view: None,
        }
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

/// A cheaply clonable handle to one scripted engine.
#[derive(Clone, Default)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    scripts: RwLock<HashMap<Vec<u32>, Arc<Registration>>>,
    /// Shared with every request's guard, which counts it out.
    ledger: Arc<Ledger>,
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
            ledger: Arc::new(Ledger::new()),
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
        self.inner.ledger.stats()
    }

    /// A feed of every request that leaves the engine from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RequestRecord> {
        self.inner.ledger.subscribe()
    }

    /// A feed of what every request that arrives from now on asked, for
    /// the requests that carry an [`EngineView`]. A request is published
    /// before its first output, so a client that has its answer has seen
    /// the views of the requests behind it.
    pub fn watch(&self) -> broadcast::Receiver<EngineView> {
        self.inner.ledger.watch()
    }

    /// Starts a request. Its clock starts now: each step's deadline is the
    /// previous deadline plus the step's delay. A scripted prompt's k-th
    /// request since the registration follows sample k of the script.
    pub fn submit(&self, mut request: EngineRequest) -> EngineStream {
        if let Some(view) = request.view.take() {
            self.inner.ledger.arrived(view);
        }
        let guard = self
            .inner
            .ledger
            .admit(request.request_id.clone(), request.prompt_token_ids.clone());
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
        EngineStream::new(guard, request, steps, room, self.inner.config.timer)
    }
}

#[cfg(test)]
mod tests;
