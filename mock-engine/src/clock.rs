//! Sleeping until an absolute deadline, to a fraction of a millisecond.
//!
//! Tokio's timer wheel has a resolution of one millisecond, and its driver
//! rounds each park up to the next whole millisecond, so a 10 ms step lands
//! anywhere up to 2 ms late and single inter-token gaps vary by ±10 %. A
//! scripted engine is the yardstick of a benchmark, so it keeps better time:
//! one thread per process holds every pending deadline in a heap, parks until
//! the earliest (the kernel's high-resolution timers), and wakes what is due.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::{Duration, Instant};
//! use mock_engine::clock::sleep_until;
//!
//! let deadline = Instant::now() + Duration::from_millis(3);
//! sleep_until(deadline).await;
//! assert!(Instant::now() + mock_engine::clock::EARLY >= deadline);
//! # });
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How early a deadline may be taken as reached: waking a thread costs about
/// this much, so firing this close to the deadline is as good as on it.
pub const EARLY: Duration = Duration::from_micros(20);

/// A future that is ready at `deadline` (at most [`EARLY`] before it).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        registered: None,
    }
}

/// See [`sleep_until`]. Reset it for the next deadline rather than building
/// a new one: it remembers what it registered.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    /// The deadline and waker the clock thread holds for us, if any.
    registered: Option<(Instant, Waker)>,
}

impl Sleep {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Whether the deadline is reached, registering `cx`'s waker if not.
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() + EARLY >= self.deadline {
            self.registered = None;
            return Poll::Ready(());
        }
        let current = matches!(&self.registered,
            Some((at, waker)) if *at == self.deadline && waker.will_wake(cx.waker()));
        if !current {
            // A stale entry left in the heap only costs a spurious wake-up.
            clock().register(self.deadline, cx.waker().clone());
            self.registered = Some((self.deadline, cx.waker().clone()));
        }
        Poll::Pending
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_deadline(cx)
    }
}

struct Entry {
    deadline: Instant,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.deadline.cmp(&other.deadline)
    }
}

struct Clock {
    pending: Mutex<BinaryHeap<Reverse<Entry>>>,
    thread: OnceLock<Thread>,
}

fn clock() -> &'static Arc<Clock> {
    static CLOCK: OnceLock<Arc<Clock>> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock = Arc::new(Clock {
            pending: Mutex::new(BinaryHeap::new()),
            thread: OnceLock::new(),
        });
        let runner = clock.clone();
        let handle = std::thread::Builder::new()
            .name("mock-engine-clock".into())
            .spawn(move || runner.run())
            .expect("cannot start the mock engine's clock thread");
        let _ = clock.thread.set(handle.thread().clone());
        clock
    })
}

impl Clock {
    fn register(&self, deadline: Instant, waker: Waker) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = pending
            .peek()
            .is_none_or(|Reverse(first)| deadline < first.deadline);
        pending.push(Reverse(Entry { deadline, waker }));
        drop(pending);
        if earliest && let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    fn run(&self) {
        let mut due = Vec::new();
        loop {
            let next = {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now() + EARLY;
                while let Some(Reverse(first)) = pending.peek() {
                    if first.deadline > now {
                        break;
                    }
                    if let Some(Reverse(entry)) = pending.pop() {
                        due.push(entry.waker);
                    }
                }
                pending.peek().map(|Reverse(first)| first.deadline)
            };
            // Wake outside the lock: a woken task may register its next step.
            for waker in due.drain(..) {
                waker.wake();
            }
            match next {
                Some(deadline) => {
                    std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                None => std::thread::park(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deadlines_out_of_order_are_each_reached_and_not_before() {
        let start = Instant::now();
        let offsets = [9u64, 1, 5, 3, 7, 2];
        let tasks: Vec<_> = offsets
            .iter()
            .map(|&ms| {
                let deadline = start + Duration::from_millis(ms);
                tokio::spawn(async move {
                    sleep_until(deadline).await;
                    (deadline, Instant::now())
                })
            })
            .collect();
        for task in tasks {
            let (deadline, woke) = task.await.unwrap();
            assert!(woke + EARLY >= deadline, "woke {:?} early", deadline - woke);
        }
    }

    #[tokio::test]
    async fn a_reset_sleep_waits_for_its_new_deadline() {
        let mut sleep = sleep_until(Instant::now());
        (&mut sleep).await;
        let later = Instant::now() + Duration::from_millis(2);
        sleep.reset(later);
        (&mut sleep).await;
        assert!(Instant::now() + EARLY >= later);
    }
}
