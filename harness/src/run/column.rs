//! One target's column of the grid: its fixtures, several cases in flight,
//! each result handed on with its row as it ends ([`start_order`] says which
//! start first).
//!
//! Most of a case is waiting (on the server, on the script's delays: a
//! recorded stream replays five seconds of a real engine's steps), so a
//! column keeps up to [`RunOptions::jobs`] cases running at once. What must
//! not share the target runs alone in its column:
//!
//! - a case whose script kills the engine (the cases beside it would die
//!   with it, and the next ones must meet the restarted server);
//! - a paced case, whose chunk boundaries are compared and snapshotted: one
//!   chunk per 20 ms step holds only while nothing else keeps the server busy.
//!
//! Two cases with one prompt never overlap ([`PromptLocks`]): the engine
//! picks a script by prompt, and a case registers its own just before it is
//! sent. A real engine core (not scripted) gets one case at a time: it would
//! batch concurrent requests into shared steps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Semaphore};

use super::RunOptions;
use super::case::{CaseResult, Outcome};
use super::timing::StartClock;
use crate::capture::{self, CaptureError, CaptureLimits};
use crate::excerpt::KEPT_FLOOD_BYTES;
use crate::prompt_lock::PromptLocks;
use crate::session::scripts::ScriptChannel;
use crate::session::send;
use crate::targets::{Target, TargetSpec, Unavailable};
use mock_engine::LoadedFixture;
use mock_engine::script::ServerOptions;

/// How many cases of a column may be started at once (waiting for their
/// locks or running); each is handed on as it ends, with its index.
pub(super) const WINDOW: usize = 64;

/// A script that plays this long or longer starts ahead of the others.
const LONG_SCRIPT: Duration = Duration::from_secs(1);

/// The order a column starts its cases in: the long scripts first, then the
/// cases that share the column, then those that run alone, each group in
/// the fixtures' order (the grid and the reports keep the fixtures' order
/// whatever this is).
///
/// Why: the corpus's two longest cases stream 2045 recorded engine steps
/// over five seconds each, one after the other (they share a prompt), and
/// every paced case on vllm-python waits for them to end (the machine lock,
/// [`Column::case`]). Started first, the fast targets play theirs while
/// vllm-python is still starting, instead of holding up its paced cases
/// later (docs/src/measurements.md, "Long scripts first", has the figures).
pub(super) fn start_order(fixtures: &[&LoadedFixture]) -> Vec<usize> {
    let group = |i: &usize| {
        let fixture = &fixtures[*i].fixture;
        if fixture.engine.plays_for() >= LONG_SCRIPT {
            0
        } else if !runs_alone(fixture) {
            1
        } else {
            2
        }
    };
    let mut order: Vec<usize> = (0..fixtures.len()).collect();
    order.sort_by_key(group);
    order
}

/// Whether a case must have its target's column to itself.
fn runs_alone(fixture: &mock_engine::Fixture) -> bool {
    fixture.chunks_comparable() || fixture.kills_engine()
}

/// One target and its cases in flight.
pub(super) struct Column<'a> {
    target: Mutex<&'a mut Target>,
    live: Mutex<&'a mut Liveness>,
    /// Read by the cases that share the column, written by one that runs
    /// alone in it.
    alone: RwLock<()>,
    /// Cases running at once.
    running: Semaphore,
    prompts: PromptLocks,
    /// Whether the target's frontend merges the engine steps it finds
    /// queued (see [`TargetSpec::merges_queued_steps`]).
    merges: bool,
    /// The scripted engine deaths still ahead, per server options: the
    /// target keeps frontends starting for them ([`Target::keep_spares`]).
    deaths: std::sync::Mutex<BTreeMap<ServerOptions, usize>>,
    /// How the target's engine takes each case's script: its in-process
    /// engine, the control channel of a server started by hand (a `url=`
    /// reference with `--enable-script-control`), or not at all.
    channel: ScriptChannel,
}

/// A lock held for the length of a case, shared or whole.
enum Held<'a> {
    Shared { _guard: RwLockReadGuard<'a, ()> },
    Whole { _guard: RwLockWriteGuard<'a, ()> },
}

impl Held<'_> {
    async fn take(lock: &RwLock<()>, whole: bool) -> Held<'_> {
        if whole {
            Held::Whole {
                _guard: lock.write().await,
            }
        } else {
            Held::Shared {
                _guard: lock.read().await,
            }
        }
    }
}

impl<'a> Column<'a> {
    pub(super) fn new(
        target: &'a mut Target,
        live: &'a mut Liveness,
        fixtures: &[&LoadedFixture],
        jobs: usize,
        channel: ScriptChannel,
    ) -> Self {
        let mut deaths = BTreeMap::<ServerOptions, usize>::new();
        for loaded in fixtures {
            let fixture = &loaded.fixture;
            if fixture.kills_engine() && fixture.in_process_reason().is_none() {
                *deaths.entry(fixture.server.clone()).or_default() += 1;
            }
        }
        // A real engine batches the requests it has together: one at a time
        // keeps its steps each case's own, as they were recorded.
        let jobs = if matches!(target.spec, TargetSpec::RealEngine(_)) {
            1
        } else {
            jobs.max(1)
        };
        Self {
            merges: target.spec.merges_queued_steps(),
            target: Mutex::new(target),
            live: Mutex::new(live),
            alone: RwLock::new(()),
            running: Semaphore::new(jobs),
            prompts: PromptLocks::default(),
            deaths: std::sync::Mutex::new(deaths),
            channel,
        }
    }

    /// Runs one case, once the locks it needs are free. `machine`: taken
    /// whole by a paced case on a frontend that merges queued steps (with
    /// the other columns' cases beside it on a 2-core machine, its 20 ms
    /// steps arrive together), shared by every other case of every column.
    /// Locks are taken in one order (column, machine, a running slot), so
    /// every case that holds a slot can finish.
    pub(super) async fn case(
        &self,
        client: &reqwest::Client,
        loaded: &LoadedFixture,
        options: &RunOptions,
        machine: &RwLock<()>,
        started: Instant,
    ) -> CaseResult {
        let fixture = &loaded.fixture;
        let paced = fixture.chunks_comparable();
        let _column = Held::take(&self.alone, runs_alone(fixture)).await;
        let _machine = Held::take(machine, paced && self.merges).await;
        let Ok(_slot) = self.running.acquire().await else {
            unreachable!("the semaphore is never closed");
        };
        if started.elapsed() > options.budget {
            let name = self.target.lock().await.name();
            return CaseResult::error(
                loaded,
                &name,
                format!(
                    "the run's budget of {} s was spent before this case started",
                    options.budget.as_secs()
                ),
            );
        }
        self.run(client, loaded, options.limits).await
    }

    async fn run(
        &self,
        client: &reqwest::Client,
        loaded: &LoadedFixture,
        limits: CaptureLimits,
    ) -> CaseResult {
        let fixture = &loaded.fixture;
        let (name, base, server) = {
            let mut target = self.target.lock().await;
            let mut live = self.live.lock().await;
            let name = target.name();
            target
                .keep_spares(&fixture.server, self.deaths_ahead(&fixture.server))
                .await;
            let base = match live.clock.endpoint(&mut target, fixture).await {
                Ok(base) => base,
                Err(Unavailable::Skip(reason)) => {
                    return CaseResult {
                        outcome: Outcome::Skipped,
                        ..CaseResult::error(loaded, &name, reason)
                    };
                }
                Err(Unavailable::Error(reason)) => return CaseResult::error(loaded, &name, reason),
            };
            let server = (base.clone(), target.generation());
            if let Some(reason) = live.gone.get(&server) {
                return CaseResult::error(loaded, &name, format!("not sent: {reason}"));
            }
            (name, base, server)
        };
        let prompt = match fixture.prompt_token_ids() {
            Some(prompt) => Some(self.prompts.lock(&prompt).await),
            None => None,
        };
        // The prompt is this case's until its last answer, so the script
        // registered now is the one its requests meet.
        if let Err(e) = self.channel.set_for(client, fixture).await {
            return CaseResult::error(
                loaded,
                &name,
                format!("not sent: cannot set its script: {e}"),
            );
        }
        // A body past the cap makes the case an error whatever it says: its
        // transcript, evidence only, is made from its start.
        let watch = self.channel.watch(fixture);
        let sent = send::send_keeping(
            client,
            &base,
            &fixture.request,
            limits,
            KEPT_FLOOD_BYTES,
            watch,
        )
        .await;
        drop(prompt);
        if fixture.kills_engine() {
            self.target.lock().await.settle_after_death(fixture).await;
            if let Some(ahead) = self.deaths().get_mut(&fixture.server) {
                *ahead = ahead.saturating_sub(1);
            }
        }
        let send::Sent {
            capture,
            transcript,
            cut,
        } = sent;
        let (outcome, reason) = match &capture.error {
            Some(e) => {
                let log = self
                    .target
                    .lock()
                    .await
                    .log_tail(fixture, 20)
                    .map(|l| format!("\n{l}"))
                    .unwrap_or_default();
                (Outcome::Error, Some(format!("{e}{log}")))
            }
            None => (Outcome::Pass, None),
        };
        self.live
            .lock()
            .await
            .answered(client, loaded, server, capture.error.as_ref(), limits)
            .await;
        CaseResult {
            fixture: fixture.name.clone(),
            endpoint: fixture.request.endpoint,
            target: name,
            outcome,
            reason,
            transcript: Some(transcript),
            differences: Vec::new(),
            text_diff: None,
            snapshot: None,
            elapsed_ms: capture.elapsed_ms,
            truncated: match cut {
                0 => Vec::new(),
                n => vec![format!(
                    "body past the cap: transcribed from its first {} bytes, {n} bytes more not read into it",
                    KEPT_FLOOD_BYTES
                )],
            },
            unshown_evidence: Vec::new(),
            notes: Vec::new(),
        }
    }
}

impl Column<'_> {
    fn deaths(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServerOptions, usize>> {
        self.deaths.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deaths_ahead(&self, options: &ServerOptions) -> usize {
        self.deaths().get(options).copied().unwrap_or(0)
    }
}

/// Whether a target still answers: after [`CaptureLimits::give_up_after`]
/// transport failures in a row at one server, its health endpoint is
/// probed; when that does not answer either, the server's remaining cases
/// are errors at once instead of costing a timeout each.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    /// Transport failures in a row, per server.
    failures: BTreeMap<Server, u32>,
    /// Timeouts in a row, per server, whatever its health endpoint says.
    timeouts: BTreeMap<Server, u32>,
    /// Servers given up on, with the reason.
    gone: BTreeMap<Server, String>,
    /// The time its servers took to start.
    pub(super) clock: StartClock,
}

/// One server of a target: its base URL and the target's generation when it
/// answered there (see [`Target::generation`]).
type Server = (String, u32);

impl Liveness {
    /// Counts a case sent to `server` that ended with `failure`, if any.
    async fn answered(
        &mut self,
        client: &reqwest::Client,
        loaded: &LoadedFixture,
        server: Server,
        failure: Option<&CaptureError>,
        limits: CaptureLimits,
    ) {
        let timed_out = matches!(failure, Some(CaptureError::Timeout(_)));
        if !timed_out {
            self.timeouts.remove(&server);
        }
        let Some(error) = failure.filter(|e| e.is_transport()) else {
            self.failures.remove(&server);
            return;
        };
        if timed_out {
            let count = self.timeouts.entry(server.clone()).or_default();
            *count += 1;
            if limits.timeouts_in_a_row > 0 && *count >= limits.timeouts_in_a_row {
                let count = *count;
                // The first reason stands: the cases in flight beside the
                // one that crossed the line time out after it.
                self.gone.entry(server.clone()).or_insert_with(|| {
                    format!(
                        "the target stopped answering requests after case {}: {count} requests \
                         in a row timed out (each after {} s; the last: {error}), though its \
                         /health may still answer (--give-up-after-timeouts)",
                        loaded.fixture.name,
                        limits.timeout.as_secs()
                    )
                });
                return;
            }
        }
        let count = self.failures.entry(server.clone()).or_default();
        *count += 1;
        if limits.give_up_after == 0 || *count < limits.give_up_after {
            return;
        }
        let failed = *count;
        // A target that answers anything at all is alive: it may just be
        // slow for these cases, so it gets another round.
        self.failures.remove(&server);
        let base = &server.0;
        if let Err(probe) = probe(client, base, limits.probe_timeout).await {
            self.gone.insert(
                server.clone(),
                format!(
                    "the target stopped answering after case {}: {failed} requests in a row failed \
                     (the last: {error}), and {base}/health gave no answer within {} ms ({probe})",
                    loaded.fixture.name,
                    limits.probe_timeout.as_millis()
                ),
            );
        }
    }
}

/// Whether anything answers HTTP at `base` (any status will do).
async fn probe(client: &reqwest::Client, base: &str, timeout: Duration) -> Result<(), String> {
    client
        .get(format!("{}/health", base.trim_end_matches('/')))
        .timeout(timeout)
        .send()
        .await
        .map(drop)
        .map_err(|e| capture::error_chain(&e))
}
