//! Replaying the corpus against every target, and judging each case.
//!
//! Every (fixture, target) pair ends as exactly one [`CaseResult`], whatever
//! the target does: a crash, a hang or an exhausted budget is an `error`
//! outcome with its reason, and the run goes on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use mock_engine::script::Endpoint;
use mock_engine::{Corpus, LoadedFixture};
use serde::{Deserialize, Serialize};

use crate::capture::CaptureLimits;
use crate::divergence::Registry;
use crate::partition::{Partition, Selection};
use crate::session::scripts::ScriptChannel;
use crate::session::targets::TargetSet;
use crate::snapshot;
use crate::targets::{TargetSpec, VllmOptions};

mod case;
mod column;
mod judge;
pub mod progress;
mod timing;

pub use case::{CaseResult, Judged, Outcome};
use column::{Column, Liveness};
use judge::judge_row_at;
pub use progress::Progress;
pub use timing::Timing;
use timing::wall_time;

/// What a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub targets: Vec<TargetSpec>,
    pub filter: Option<String>,
    /// Only the fixtures of this endpoint (all, when `None`).
    pub endpoint: Option<Endpoint>,
    pub limits: CaptureLimits,
    /// Past this, the remaining cases are errors with that reason.
    pub budget: Duration,
    pub snapshots: PathBuf,
    pub registry: Registry,
    pub accept_snapshots: bool,
    /// Checks snapshots at all (off for ad-hoc comparisons).
    pub check_snapshots: bool,
    /// For `vllm-rs` and `vllm-python` targets.
    pub vllm: VllmOptions,
    /// Run only this shard of the selection (all of it, when `None`).
    pub partition: Option<Partition>,
    /// Cases in flight at once per target (at least 1; see [`column`]).
    pub jobs: usize,
}

/// A case that ended, with its snapshot text (when it got a transcript).
type Done = (CaseResult, Option<String>);

/// Cases in flight per target by default: most of a case is waiting on the
/// server or on its script's delays.
pub const DEFAULT_JOBS: u16 = 4;

impl RunOptions {
    /// Every fixture on `targets`, judged against each other only: no
    /// snapshots, no registered divergences, default request limits,
    /// [`DEFAULT_JOBS`] cases in flight and half an hour in all. Set what a
    /// run needs on top of it:
    ///
    /// ```
    /// use harness::run::RunOptions;
    /// use harness::targets::TargetSpec;
    ///
    /// let options = RunOptions {
    ///     filter: Some("stream".into()),
    ///     jobs: 1,
    ///     ..RunOptions::new(vec![TargetSpec::Reference])
    /// };
    /// assert!(!options.check_snapshots);
    /// ```
    pub fn new(targets: Vec<TargetSpec>) -> Self {
        Self {
            targets,
            filter: None,
            endpoint: None,
            limits: CaptureLimits::default(),
            budget: Duration::from_secs(1800),
            snapshots: PathBuf::from("snapshots"),
            registry: Registry::default(),
            accept_snapshots: false,
            check_snapshots: false,
            vllm: VllmOptions::default(),
            partition: None,
            jobs: usize::from(DEFAULT_JOBS),
        }
    }
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub targets: Vec<String>,
    /// The fixtures run (a shard's, when the run was cut), in order.
    pub fixtures: Vec<String>,
    /// The endpoint of each of `fixtures`, in the same order.
    pub endpoints: Vec<Endpoint>,
    pub cases: Vec<CaseResult>,
    pub elapsed_ms: f64,
    /// The signal that stopped the run early (its other cases are `not_run`).
    pub interrupted: Option<String>,
    /// The fixtures selected (by `--filter` and `--endpoint`) before the
    /// run was cut into shards: the same in every shard of one run.
    pub selection: Selection,
    /// Which shard of the selection this run is, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Where the run's time went (absent from reports of older harnesses).
    #[serde(default)]
    pub timing: Timing,
}

/// A sharded run's place in its selection: enough for `genconform report
/// merge` to check that shards are disjoint and complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub partition: Partition,
    /// The index in the selection of each of the report's `fixtures`.
    pub indices: Vec<u64>,
}

impl RunReport {
    pub fn failed(&self) -> bool {
        self.cases.iter().any(|c| c.outcome.fails())
    }

    pub fn case(&self, fixture: &str, target: &str) -> Option<&CaseResult> {
        self.cases
            .iter()
            .find(|c| c.fixture == fixture && c.target == target)
    }
}

/// Fixtures selected by `filter` (a substring or `*` pattern on the name)
/// and `endpoint`.
pub fn select<'a>(
    corpus: &'a Corpus,
    filter: Option<&str>,
    endpoint: Option<Endpoint>,
) -> Vec<&'a LoadedFixture> {
    corpus
        .fixtures
        .iter()
        .filter(|f| match filter {
            None => true,
            Some(p) if p.contains('*') => crate::divergence::wildcard(p, &f.fixture.name),
            Some(p) => f.fixture.name.contains(p),
        })
        .filter(|f| endpoint.is_none_or(|e| f.fixture.request.endpoint == e))
        .collect()
}

pub async fn run(
    corpus: &Corpus,
    options: &RunOptions,
    progress: &dyn Progress,
) -> anyhow::Result<RunReport> {
    run_until(corpus, options, progress, std::future::pending::<String>()).await
}

/// [`run`], until `stop` resolves (with what stopped it, e.g. `SIGTERM`):
/// then the case in flight is abandoned, the targets are stopped, and every
/// case that did not finish is `not_run`. The report is complete either way.
pub async fn run_until(
    corpus: &Corpus,
    options: &RunOptions,
    progress: &dyn Progress,
    stop: impl Future<Output = String>,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let selected = select(corpus, options.filter.as_deref(), options.endpoint);
    let selection = Selection::of(selected.iter().map(|f| f.fixture.name.as_str()));
    // The corpus is in path order (the same on every machine), so `count`
    // deals the same fixtures to the same shard everywhere.
    let (indices, fixtures): (Vec<u64>, Vec<&LoadedFixture>) = selected
        .into_iter()
        .enumerate()
        .map(|(i, f)| (i as u64, f))
        .filter(|(i, f)| {
            options
                .partition
                .is_none_or(|p| p.contains(*i, f.fixture.name.as_bytes()))
        })
        .unzip();
    let clock = Instant::now();
    let mut set = TargetSet::start(&options.targets, corpus, &options.vllm).await?;
    let targets_started = clock.elapsed();
    let names = set.names.clone();
    // A server started by hand takes each case's script when it has the
    // control channel; without it, fixtures that share a prompt meet the
    // first one's script, and the user is told which.
    for (target, channel) in set.targets.iter().zip(&set.channels) {
        if matches!(target.spec, TargetSpec::Url { .. })
            && matches!(channel, ScriptChannel::None)
            && let Some(warning) =
                mock_engine::fixture::shared_prompts_warning(fixtures.iter().copied())
        {
            eprintln!("warning: {}: {warning}", target.name());
        }
    }
    progress.start((fixtures.len() * set.targets.len()) as u64);
    let mut liveness: Vec<Liveness> = set.targets.iter().map(|_| Liveness::default()).collect();
    let mut stop = std::pin::pin!(stop);
    let mut interrupted = None;
    // Judged rows by fixture index; the report lists them in that order.
    let mut rows: BTreeMap<usize, Vec<CaseResult>> = BTreeMap::new();
    if !fixtures.is_empty() {
        // Each target's column runs on its own (the targets are separate
        // servers and engines; a real frontend's start is mostly waiting on
        // its imports and its engine handshake), and a row is judged as soon
        // as every column has its case, whatever the order they end in: a
        // case waiting for its row holds its whole transcript, so rows left
        // waiting behind a slow one would pile up (a flooding target's
        // transcripts are megabytes each).
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(usize, usize, Done)>();
        let senders: Vec<_> = set.targets.iter().map(|_| sender.clone()).collect();
        drop(sender);
        let order = column::start_order(&fixtures);
        let (client, fixtures, order) = (&set.client, &fixtures, &order);
        // See [`Column::case`]: a paced case on a frontend that merges the
        // steps it finds queued takes the machine whole.
        let machine = tokio::sync::RwLock::new(());
        let machine = &machine;
        let columns = futures::future::join_all(
            set.targets
                .iter_mut()
                .zip(&mut liveness)
                .zip(senders)
                .zip(set.channels.iter().cloned())
                .enumerate()
                .map(|(c, (((target, live), sender), channel))| async move {
                    let column = Column::new(target, live, fixtures, options.jobs, channel);
                    let column = &column;
                    let mut results = futures::stream::iter(order.iter().copied())
                        .map(|i| async move {
                            let loaded = fixtures[i];
                            let case = column.case(client, loaded, options, machine, started).await;
                            let text = case.transcript.as_ref().map(|t| {
                                snapshot::render(
                                    &loaded.fixture.name,
                                    &loaded.fixture.description,
                                    t,
                                    loaded.fixture.chunks_comparable(),
                                )
                            });
                            (i, (case, text))
                        })
                        .buffer_unordered(column::WINDOW);
                    while let Some((i, done)) = results.next().await {
                        if sender.send((c, i, done)).is_err() {
                            return;
                        }
                    }
                }),
        );
        // Cases end in any order; row `i` is judged once every column has
        // handed on its case `i`. What ended and was not judged yet is kept
        // here, so an interrupted run still reports it.
        let mut ended: Vec<BTreeMap<usize, Done>> = names.iter().map(|_| BTreeMap::new()).collect();
        {
            let (rows, names, receiver, ended) = (&mut rows, &names, &mut receiver, &mut ended);
            let judge = async move {
                while rows.len() < fixtures.len() {
                    let Some((c, i, done)) = receiver.recv().await else {
                        return;
                    };
                    ended[c].insert(i, done);
                    if ended.iter().all(|column| column.contains_key(&i)) {
                        // Judging is CPU work too: not beside a case that runs alone.
                        let shared = machine.read().await;
                        let row = judge_row_at(i, fixtures[i], ended, names, options, progress);
                        rows.insert(i, row);
                        drop(shared);
                    }
                }
            };
            tokio::select! {
                // The cases in flight are dropped with their requests.
                why = &mut stop => interrupted = Some(why),
                _ = futures::future::join(columns, judge) => {}
            }
        }
        if let Some(why) = &interrupted {
            // Every row whose cases all ended is judged, wherever it is in
            // the order the columns started their cases; a row with a case
            // still in flight is not run (its cases cannot be compared).
            while let Ok((c, j, case)) = receiver.try_recv() {
                ended[c].insert(j, case);
            }
            for (i, loaded) in fixtures.iter().enumerate() {
                if rows.contains_key(&i) {
                    continue;
                }
                if ended.iter().all(|column| column.contains_key(&i)) {
                    let row = judge_row_at(i, loaded, &mut ended, &names, options, progress);
                    rows.insert(i, row);
                    continue;
                }
                let row = rows.entry(i).or_default();
                for name in &names {
                    row.push(CaseResult {
                        outcome: Outcome::NotRun,
                        ..CaseResult::error(
                            loaded,
                            name,
                            format!("not run: the run was interrupted by {why}"),
                        )
                    });
                }
            }
        }
    }
    progress.finish();
    let clock = Instant::now();
    set.stop().await;
    let stopped = clock.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let elapsed_ms = ms(started.elapsed());
    // Wall time during which some target was starting a first server is
    // start-up; the rest of the time some target was restarting one is
    // restart time.
    let spans = |restarts: bool| -> Vec<(Instant, Instant)> {
        liveness
            .iter()
            .flat_map(|live| {
                let mut spans = live.clock.startup.clone();
                if restarts {
                    spans.extend(&live.clock.restart);
                }
                spans
            })
            .collect()
    };
    let (startup, starts) = (wall_time(spans(false)), wall_time(spans(true)));
    let mut timing = Timing {
        startup_ms: ms(targets_started + startup),
        restart_ms: ms(starts - startup),
        restarts: liveness.iter().map(|live| live.clock.restarts).sum(),
        stop_ms: ms(stopped),
        ..Timing::default()
    };
    timing.cases_ms =
        (elapsed_ms - timing.startup_ms - timing.restart_ms - timing.stop_ms).max(0.0);
    Ok(RunReport {
        targets: names,
        fixtures: fixtures.iter().map(|f| f.fixture.name.clone()).collect(),
        endpoints: fixtures
            .iter()
            .map(|f| f.fixture.request.endpoint)
            .collect(),
        cases: rows.into_values().flatten().collect(),
        elapsed_ms,
        interrupted,
        selection,
        shard: options
            .partition
            .map(|partition| Shard { partition, indices }),
        timing,
    })
}
