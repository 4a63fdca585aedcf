//! One request's engine outputs, each at its deadline: the stream
//! [`super::Engine::submit`] returns, and where its steps come from (the
//! script's, read in place, or the generator's).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;

use super::EngineRequest;
use super::ledger::Guard;
use super::output::{EngineEvent, Prompt, context_cut, output};
use super::timer::{Deadline, Timer};
use crate::generator::Generator;
use crate::script::Script;
use crate::step::Step;

/// Where a request's steps come from.
pub(super) enum Steps {
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
    /// A request's stream, its clock starting now.
    pub(super) fn new(
        guard: Guard,
        request: EngineRequest,
        steps: Steps,
        room: u32,
        timer: Timer,
    ) -> Self {
        Self {
            guard,
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
            timer: Deadline::new(timer),
            state: State::Running,
        }
    }

    fn end(&mut self) {
        self.state = State::Ended;
        self.guard.finish();
    }
}
