//! What keeps a request's scripted delays: the engine's choice of clock,
//! and the one timer each stream resets from step to step.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

use crate::clock;

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

/// One timer per stream, reset per step: a timer entry per step would cost
/// an allocation each.
pub(super) enum Deadline {
    Precise(clock::Sleep),
    Tokio(Option<Pin<Box<Sleep>>>),
}

impl Deadline {
    /// The timer `timer` keeps, not yet set.
    pub(super) fn new(timer: Timer) -> Self {
        match timer {
            Timer::Precise => Deadline::Precise(clock::sleep_until(std::time::Instant::now())),
            Timer::Tokio => Deadline::Tokio(None),
        }
    }

    /// Ready once `deadline` has passed; the timer is reset to it first if
    /// it was set for another.
    pub(super) fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
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
