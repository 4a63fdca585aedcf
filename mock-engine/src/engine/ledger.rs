//! What the engine counts of the requests that pass through it: how many
//! came, finished and were aborted, and a record of each one as it leaves.
//!
//! A request cannot say when it is aborted (the consumer just drops its
//! stream), so each carries a [`Guard`] that counts it as aborted when it
//! is dropped unless it was finished first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::engine_view::EngineView;

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

/// The counters and the feed of records, shared by the engine and the
/// guards of its requests.
pub(super) struct Ledger {
    submitted: AtomicU64,
    completed: AtomicU64,
    aborted: AtomicU64,
    records: broadcast::Sender<RequestRecord>,
    arrivals: broadcast::Sender<EngineView>,
}

impl Ledger {
    pub(super) fn new() -> Self {
        Self {
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            records: broadcast::channel(1024).0,
            arrivals: broadcast::channel(1024).0,
        }
    }

    pub(super) fn stats(&self) -> EngineStats {
        EngineStats {
            submitted: self.submitted.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<RequestRecord> {
        self.records.subscribe()
    }

    pub(super) fn watch(&self) -> broadcast::Receiver<EngineView> {
        self.arrivals.subscribe()
    }

    /// Publishes what an arriving request asked (nobody watching is fine).
    pub(super) fn arrived(&self, view: EngineView) {
        let _ = self.arrivals.send(view);
    }

    /// Counts one more request in, and gives the guard that counts it out.
    pub(super) fn admit(self: &Arc<Self>, request_id: String, prompt: Vec<u32>) -> Guard {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        Guard {
            ledger: self.clone(),
            request_id,
            prompt,
            done: false,
        }
    }
}

/// Counts the request as aborted unless it was finished first.
pub(super) struct Guard {
    ledger: Arc<Ledger>,
    request_id: String,
    prompt: Vec<u32>,
    done: bool,
}

impl Guard {
    pub(super) fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.ledger.completed.fetch_add(1, Ordering::Relaxed);
            self.publish(Outcome::Completed);
        }
    }

    fn publish(&mut self, outcome: Outcome) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.ledger.records.send(RequestRecord {
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
            self.ledger.aborted.fetch_add(1, Ordering::Relaxed);
            self.publish(Outcome::Aborted);
        }
    }
}
