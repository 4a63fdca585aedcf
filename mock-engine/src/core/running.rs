//! The running requests, and which of them may have output due.
//!
//! Each request gets a waker of its own that puts the request on a ready
//! list. The engine loop takes the whole list at once and polls each request
//! on it once: that is one engine step, with at most one output per request,
//! as vLLM's engine steps. A request with more output due at once (an
//! unpaced script) goes back on the list for the next step.
//!
//! `futures::stream::SelectAll` does the same job but allocates a task and
//! moves the stream for every item; this loop runs per token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures::StreamExt;
use futures::task::AtomicWaker;

use super::convert::to_wire_output;
use crate::engine::{EngineEvent, EngineStream};
use crate::step::FinishReason;
use crate::wire::EngineCoreOutput;

/// One request's output that is due, or the script's death.
pub(crate) struct Due {
    pub client: u32,
    pub event: DueEvent,
}

pub(crate) enum DueEvent {
    Output(EngineCoreOutput),
    Failed { request_id: String, message: String },
}

/// A request as the engine core runs it: the engine's stream, answered as
/// wire outputs to one client.
pub(crate) struct Request {
    pub request_id: String,
    pub client: u32,
    pub prompt_len: usize,
    pub events: EngineStream,
}

struct Slot {
    request: Request,
    /// Only a conversion failure ends a request before its stream does.
    ended: bool,
    waker: Waker,
    flag: Arc<SlotWaker>,
}

/// Puts its slot on the ready list, once until the slot is polled.
struct SlotWaker {
    index: usize,
    generation: u64,
    queued: AtomicBool,
    ready: Arc<ReadyList>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready
                .slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((self.index, self.generation));
            self.ready.loop_waker.wake();
        }
    }
}

#[derive(Default)]
struct ReadyList {
    slots: Mutex<Vec<(usize, u64)>>,
    loop_waker: AtomicWaker,
}

#[derive(Default)]
pub(crate) struct Running {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<String, (usize, u64)>,
    generations: u64,
    ready: Arc<ReadyList>,
    /// The list being worked through, kept to reuse its allocation.
    taking: Vec<(usize, u64)>,
}

impl Running {
    pub fn add(&mut self, request: Request) {
        if self.abort(&request.request_id) {
            tracing::warn!(request_id = %request.request_id,
                "duplicate request id: the earlier request is aborted");
        }
        self.generations += 1;
        let generation = self.generations;
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let flag = Arc::new(SlotWaker {
            index,
            generation,
            queued: AtomicBool::new(false),
            ready: self.ready.clone(),
        });
        let waker = Waker::from(flag.clone());
        self.by_id
            .insert(request.request_id.clone(), (index, generation));
        self.slots[index] = Some(Slot {
            request,
            ended: false,
            waker: waker.clone(),
            flag,
        });
        // Its first output may be due at once.
        waker.wake();
    }

    /// Drops the request's stream, which is the engine's abort.
    pub fn abort(&mut self, request_id: &str) -> bool {
        match self.by_id.remove(request_id) {
            Some((index, _)) => {
                self.remove(index);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, index: usize) {
        if let Some(slot) = self.slots[index].take() {
            let id = &slot.request.request_id;
            if self.by_id.get(id) == Some(&(index, slot.flag.generation)) {
                self.by_id.remove(id);
            }
            self.free.push(index);
        }
    }

    /// Ready when some request may have output due.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.ready.loop_waker.register(cx.waker());
        let ready = self.ready.slots.lock().unwrap_or_else(|e| e.into_inner());
        if ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// One engine step: polls every request on the ready list once, and
    /// hands what is due to `due`.
    pub fn step(&mut self, mut due: impl FnMut(Due)) {
        std::mem::swap(
            &mut self.taking,
            &mut *self.ready.slots.lock().unwrap_or_else(|e| e.into_inner()),
        );
        let mut taking = std::mem::take(&mut self.taking);
        for (index, generation) in taking.drain(..) {
            let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if slot.flag.generation != generation {
                continue;
            }
            slot.flag.queued.store(false, Ordering::Release);
            match slot.poll(&mut Context::from_waker(&slot.waker.clone())) {
                Poll::Ready(Some(item)) => {
                    due(item);
                    // More may be due at once: its turn comes next step.
                    slot.waker.wake_by_ref();
                }
                Poll::Ready(None) => self.remove(index),
                Poll::Pending => {}
            }
        }
        self.taking = taking;
    }
}

impl Slot {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Due>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let request = &mut self.request;
        let Some(event) = std::task::ready!(request.events.poll_next_unpin(cx)) else {
            return Poll::Ready(None);
        };
        let event = match event {
            EngineEvent::Output(output) => {
                match to_wire_output(&request.request_id, request.prompt_len, output) {
                    Ok(output) => DueEvent::Output(output),
                    Err(error) => {
                        tracing::error!(request_id = %request.request_id, %error,
                            "script output cannot go on the wire; finishing with error");
                        self.ended = true;
                        let mut failed = EngineCoreOutput::tokens(&request.request_id, vec![]);
                        failed.finish_reason = Some(FinishReason::Error);
                        DueEvent::Output(failed)
                    }
                }
            }
            EngineEvent::Failed(message) => DueEvent::Failed {
                request_id: request.request_id.clone(),
                message,
            },
        };
        Poll::Ready(Some(Due {
            client: request.client,
            event,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;
    use crate::engine::EngineRequest;
    use crate::script::Script;
    use crate::step::Step;

    fn engine_with(prompt: u32, tokens: u32) -> Engine {
        let engine = Engine::default();
        let mut steps: Vec<Step> = (0..tokens)
            .map(|t| Step {
                tokens: vec![t],
                ..Step::default()
            })
            .collect();
        steps.last_mut().unwrap().finish = Some(FinishReason::Length);
        engine.register(
            vec![prompt],
            Script {
                steps,
                ..Script::default()
            },
        );
        engine
    }

    fn request(engine: &Engine, id: &str, prompt: u32) -> Request {
        Request {
            request_id: id.into(),
            client: 0,
            prompt_len: 1,
            events: engine.submit(EngineRequest::new(id, vec![prompt])),
        }
    }

    fn ids(due: &[Due]) -> Vec<String> {
        due.iter()
            .map(|d| match &d.event {
                DueEvent::Output(o) => o.request_id.clone(),
                DueEvent::Failed { request_id, .. } => request_id.clone(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_step_takes_one_output_per_request_until_each_ends() {
        let engine = engine_with(1, 3);
        let mut running = Running::default();
        running.add(request(&engine, "a", 1));
        running.add(request(&engine, "b", 1));
        let mut steps = Vec::new();
        loop {
            std::future::poll_fn(|cx| running.poll_ready(cx)).await;
            let mut due = Vec::new();
            running.step(|d| due.push(d));
            if running.by_id.is_empty() {
                break;
            }
            steps.push(ids(&due));
        }
        assert_eq!(steps, [["a", "b"], ["a", "b"], ["a", "b"]]);
        assert_eq!(engine.stats().completed, 2);
    }

    #[tokio::test]
    async fn abort_and_a_duplicate_id_drop_the_engine_stream() {
        let engine = engine_with(1, 100);
        let mut running = Running::default();
        running.add(request(&engine, "a", 1));
        running.add(request(&engine, "a", 1));
        assert_eq!(engine.stats().aborted, 1, "the earlier `a` is aborted");
        let mut due = Vec::new();
        running.step(|d| due.push(d));
        assert_eq!(
            ids(&due),
            ["a"],
            "the stale slot of the first `a` is skipped"
        );
        assert!(running.abort("a"));
        assert!(!running.abort("a"));
        assert_eq!(engine.stats().aborted, 2);
        due.clear();
        running.step(|d| due.push(d));
        assert!(due.is_empty());
    }
}
