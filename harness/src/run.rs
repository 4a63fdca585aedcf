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
use mock_engine::{Corpus, Fixture, LoadedFixture};
use serde::{Deserialize, Serialize};

use crate::capture::{Capture, Limits};
use crate::diff::{self, Difference, Layer};
use crate::divergence::facts::CaseFacts;
use crate::divergence::{Compared, Registry};
use crate::excerpt;
use crate::normalize::{ClientValues, Transcript, TranscriptBuilder};
use crate::partition::{Partition, Selection};
use crate::script_channel::ScriptChannel;
use crate::snapshot::{self, Store};
use crate::sse;
use crate::targets::{Target, TargetSpec, Unavailable, VllmOptions};

mod bar;
mod column;

pub use bar::Bar;
use column::{Column, Liveness};

/// How a case ended, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Skipped,
    /// The run was interrupted before this case finished.
    NotRun,
    /// Differs from the baseline only in registered ways.
    Known,
    /// The transcript is not the reviewed snapshot.
    SnapshotChanged,
    /// Differs from the baseline in a way the registry does not accept.
    New,
    Error,
}

impl Outcome {
    pub fn fails(self) -> bool {
        matches!(self, Self::SnapshotChanged | Self::New | Self::Error)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Skipped => "skip",
            Self::NotRun => "not run",
            Self::Known => "known",
            Self::SnapshotChanged => "snapshot",
            Self::New => "NEW",
            Self::Error => "ERROR",
        }
    }
}

/// A difference from the baseline, with the registry entry that accepts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judged {
    #[serde(flatten)]
    pub difference: Difference,
    /// The id of the registry entry, when the difference is known.
    pub known: Option<String>,
}

/// One fixture against one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub fixture: String,
    /// The endpoint the fixture's request went to.
    pub endpoint: Endpoint,
    pub target: String,
    pub outcome: Outcome,
    /// Why it was skipped or errored.
    pub reason: Option<String>,
    pub transcript: Option<Transcript>,
    pub differences: Vec<Judged>,
    /// Unified diff against the baseline's transcript, when it differs.
    pub text_diff: Option<String>,
    pub snapshot: Option<snapshot::Status>,
    pub elapsed_ms: f64,
    /// What was cut from this case to keep it within its budget (see
    /// [`crate::excerpt`]); empty when nothing was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
    /// Registry entries that name this fixture as evidence (`seen_in`) and
    /// that no difference of this case matched: stale evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unshown_evidence: Vec<String>,
    /// What the verdict allowed for that a reader should know (a snapshot
    /// whose stream merged paced steps under load).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl CaseResult {
    /// Cuts what this case keeps to the budgets of [`crate::excerpt`], once
    /// it has been judged on the whole of it, and says what was cut.
    pub fn bound(&mut self) {
        let mut cut = |what: &str, more: usize| {
            if more > 0 {
                self.truncated.push(format!("{what}: {more} bytes more"));
            }
        };
        if let Some(reason) = &mut self.reason {
            cut(
                "reason",
                excerpt::truncate(reason, excerpt::KEPT_REASON_BYTES),
            );
        }
        // A case that passes equals its baseline or its snapshot: that is a
        // real answer (a long recorded stream is hundreds of KiB), kept
        // whole. A failing one may hold anything a broken target sent.
        let fails = self.outcome.fails();
        if let Some(transcript) = self.transcript.as_mut().filter(|_| fails) {
            cut(
                "transcript",
                excerpt::truncate_transcript(transcript, excerpt::KEPT_TRANSCRIPT_BYTES),
            );
        }
        if let Some(diff) = &mut self.text_diff {
            cut(
                "text_diff",
                excerpt::truncate(diff, excerpt::KEPT_TEXT_BYTES),
            );
        }
        if let Some(snapshot::Status::Changed(diff)) = &mut self.snapshot {
            cut(
                "snapshot diff",
                excerpt::truncate(diff, excerpt::KEPT_TEXT_BYTES),
            );
        }
        let mut values = 0;
        let mut used = 0;
        let mut keep = self.differences.len();
        for (i, judged) in self.differences.iter_mut().enumerate() {
            let d = &mut judged.difference;
            for v in [&mut d.baseline, &mut d.other].into_iter().flatten() {
                values += excerpt::value(v, excerpt::KEPT_VALUE_BYTES);
            }
            used += d.path.len()
                + [&d.baseline, &d.other]
                    .into_iter()
                    .flatten()
                    .map(|v| v.to_string().len())
                    .sum::<usize>();
            if used > excerpt::KEPT_DIFFERENCES_BYTES {
                keep = i;
                break;
            }
        }
        let dropped = self.differences.len() - keep;
        self.differences.truncate(keep);
        cut("difference values", values);
        if dropped > 0 {
            self.truncated
                .push(format!("differences: {dropped} more not kept"));
        }
    }
}

/// What a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub targets: Vec<TargetSpec>,
    pub filter: Option<String>,
    /// Only the fixtures of this endpoint (all, when `None`).
    pub endpoint: Option<Endpoint>,
    pub limits: Limits,
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
            limits: Limits::default(),
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

/// Where a run's time went, in milliseconds: the parts add up to
/// [`RunReport::elapsed_ms`] (in a merged report, they are the shards'
/// parts added up, while its `elapsed_ms` is the slowest shard's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Starting targets, then the wall time while some target was starting
    /// the first server of some server options (a real frontend's start-up,
    /// a cold Python import); the targets' columns run together.
    pub startup_ms: f64,
    /// The rest of the wall time while some target was starting a server
    /// again after it had died (a scripted engine death).
    pub restart_ms: f64,
    /// How many servers were started again.
    pub restarts: u32,
    /// Sending the cases and judging what came back.
    pub cases_ms: f64,
    /// Stopping the targets.
    pub stop_ms: f64,
}

impl Timing {
    /// The parts of several shards' runs, added up.
    pub fn add(&mut self, other: &Timing) {
        self.startup_ms += other.startup_ms;
        self.restart_ms += other.restart_ms;
        self.restarts += other.restarts;
        self.cases_ms += other.cases_ms;
        self.stop_ms += other.stop_ms;
    }
}

/// The start-up clock of one target: which server options it has started
/// a server for, and when starts ran (the targets' columns run together, so
/// the run's parts are measured as spans of wall time, see [`wall_time`]).
#[derive(Debug, Default)]
struct StartClock {
    started: std::collections::BTreeSet<String>,
    /// First starts of some server options.
    startup: Vec<(Instant, Instant)>,
    /// Starts after a server had died.
    restart: Vec<(Instant, Instant)>,
    restarts: u32,
}

/// The wall time covered by at least one of `spans`.
fn wall_time(mut spans: Vec<(Instant, Instant)>) -> Duration {
    spans.sort();
    let mut total = Duration::ZERO;
    let mut open: Option<(Instant, Instant)> = None;
    for (from, to) in spans {
        open = match open {
            Some((a, b)) if from <= b => Some((a, b.max(to))),
            Some((a, b)) => {
                total += b - a;
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
    total + open.map_or(Duration::ZERO, |(a, b)| b - a)
}

impl StartClock {
    /// `target.endpoint(fixture)`, timed: when it started a server, its
    /// time counts as start-up the first time these server options are
    /// served, as a restart after.
    async fn endpoint(
        &mut self,
        target: &mut Target,
        fixture: &Fixture,
    ) -> Result<String, Unavailable> {
        let (before, clock) = (target.generation(), Instant::now());
        let base = target.endpoint(fixture).await;
        let (after, span) = (target.generation(), (clock, Instant::now()));
        let options = serde_json::to_string(&fixture.server).unwrap_or_default();
        let first = self.started.insert(options);
        if after > before || (first && base.is_err()) {
            if first {
                self.startup.push(span);
            } else {
                self.restart.push(span);
                self.restarts += after - before;
            }
        }
        base
    }
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

/// Progress callbacks, so the CLI can draw a bar and tests stay quiet.
pub trait Progress {
    fn start(&self, _total: u64) {}
    fn case_done(&self, _case: &CaseResult) {}
    fn finish(&self) {}
}

impl Progress for () {}

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
    let mut targets = Vec::new();
    let clock = Instant::now();
    for spec in &options.targets {
        targets.push(Target::start(spec.clone(), corpus, &options.vllm).await?);
    }
    let targets_started = clock.elapsed();
    let names: Vec<String> = targets.iter().map(Target::name).collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    // A server started by hand takes each case's script when it has the
    // control channel; without it, fixtures that share a prompt meet the
    // first one's script, and the user is told which.
    let mut controls = Vec::new();
    for target in &targets {
        let control = match ScriptChannel::of(target, &client).await {
            ScriptChannel::Control(base) => Some(base),
            _ => None,
        };
        if matches!(target.spec, TargetSpec::Url { .. })
            && control.is_none()
            && let Some(warning) =
                mock_engine::fixture::shared_prompts_warning(fixtures.iter().copied())
        {
            eprintln!("warning: {}: {warning}", target.name());
        }
        controls.push(control);
    }
    progress.start((fixtures.len() * targets.len()) as u64);
    let mut liveness: Vec<Liveness> = targets.iter().map(|_| Liveness::default()).collect();
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
        let senders: Vec<_> = targets.iter().map(|_| sender.clone()).collect();
        drop(sender);
        let order = column::start_order(&fixtures);
        let (client, fixtures, order) = (&client, &fixtures, &order);
        // See [`Column::case`]: a paced case on a frontend that merges the
        // steps it finds queued takes the machine whole.
        let machine = tokio::sync::RwLock::new(());
        let machine = &machine;
        let columns = futures::future::join_all(
            targets
                .iter_mut()
                .zip(&mut liveness)
                .zip(senders)
                .zip(controls)
                .enumerate()
                .map(|(c, (((target, live), sender), control))| async move {
                    let column = Column::new(target, live, fixtures, options.jobs, control);
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
                        ..error_case(
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
    for target in targets {
        target.stop().await;
    }
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

fn error_case(loaded: &LoadedFixture, target: &str, reason: String) -> CaseResult {
    CaseResult {
        fixture: loaded.fixture.name.clone(),
        endpoint: loaded.fixture.request.endpoint,
        target: target.to_string(),
        outcome: Outcome::Error,
        reason: Some(reason),
        transcript: None,
        differences: Vec::new(),
        text_diff: None,
        snapshot: None,
        elapsed_ms: 0.0,
        truncated: Vec::new(),
        unshown_evidence: Vec::new(),
        notes: Vec::new(),
    }
}

/// How long the strict SSE client may take over one recorded body.
const STRICT_LIMIT: Duration = Duration::from_secs(5);

/// Lexes and normalises one capture. An event stream also goes through the
/// strict client; where it would see something else, that is a note.
pub async fn transcribe(
    request: &mock_engine::script::RequestSpec,
    capture: &Capture,
) -> Transcript {
    let body = capture.body();
    let (events, notes) = if capture.is_event_stream() {
        let chunks: Vec<&[u8]> = capture.chunks.iter().map(|c| c.bytes.as_ref()).collect();
        let lexed = sse::lex(&chunks);
        // Where TCP split the body depends on timing, not on the server:
        // keeping it out of transcripts keeps snapshots and diffs stable.
        let mut notes: Vec<String> = lexed
            .notes_ignoring_chunks()
            .map(ToString::to_string)
            .collect();
        match sse::strict::run(&chunks, STRICT_LIMIT).await {
            Ok(strict) => notes.extend(
                sse::strict::compare(&lexed, &strict)
                    .iter()
                    .map(|d| format!("strict client: {d}")),
            ),
            Err(e) => notes.push(format!("strict client could not run: {e}")),
        }
        (Some(lexed.data()), notes)
    } else {
        (None, Vec::new())
    };
    TranscriptBuilder::new(ClientValues::from_request(request)).build(
        capture.status,
        &capture.headers,
        &body,
        events,
        notes,
        capture.error.as_ref().map(ToString::to_string),
    )
}

/// Judges row `i` (its cases taken out of `ended`, one map per column),
/// tells the progress, and returns the row's cases, bounded.
fn judge_row_at(
    i: usize,
    loaded: &LoadedFixture,
    ended: &mut [BTreeMap<usize, Done>],
    names: &[String],
    options: &RunOptions,
    progress: &dyn Progress,
) -> Vec<CaseResult> {
    let mut row: Vec<Done> = ended
        .iter_mut()
        .filter_map(|column| column.remove(&i))
        .collect();
    judge_row(loaded, &mut row, names, options);
    row.into_iter()
        .map(|(mut case, _)| {
            case.bound();
            progress.case_done(&case);
            case
        })
        .collect()
}

/// Compares each case of one fixture with the baseline (the first target
/// that produced a transcript is not enough: the baseline is the first named
/// target), classifies differences, and checks snapshots.
fn judge_row(loaded: &LoadedFixture, row: &mut [Done], names: &[String], options: &RunOptions) {
    let fixture = &loaded.fixture.name;
    let facts = CaseFacts::of(&loaded.fixture);
    let paced = loaded.fixture.chunks_comparable();
    let (baseline, others) = row.split_at_mut(1);
    let (base_case, base_text) = &baseline[0];
    for (case, text) in others.iter_mut() {
        let (Some(a), Some(b)) = (&base_case.transcript, &case.transcript) else {
            continue;
        };
        let compared = Compared {
            baseline: &names[0],
            target: &case.target,
            facts: &facts,
            endpoint: loaded.fixture.request.endpoint,
            version: &options.vllm.version,
        };
        let explained = |ds: &[diff::Difference]| {
            ds.iter().all(|d| {
                d.layer == Layer::KeyOrder || options.registry.find(&compared, d).is_some()
            })
        };
        let mut differences = diff::compare(a, b, paced);
        // A frontend that merges the engine steps it finds queued (Python)
        // may merge paced ones too when the machine is loaded. When the
        // chunk-for-chunk comparison leaves something unexplained, the
        // streams are compared again with the chunks' boundaries as one
        // difference, `stream.chunks` (everything they amount to is still
        // compared); if the registry explains that, it stands. Otherwise,
        // and whenever the first comparison is explained, each difference
        // keeps the entry that describes it.
        let merges = options
            .targets
            .iter()
            .any(|s| s.name() == case.target && s.merges_queued_steps());
        if paced && merges && !explained(&differences) {
            let merged = crate::record::fidelity::differences(a, b);
            if explained(&merged) {
                differences = merged;
            }
        }
        let mut new = false;
        let mut known = false;
        case.unshown_evidence = options
            .registry
            .evidence_unshown(fixture, &compared, &differences);
        case.differences = differences
            .into_iter()
            .map(|d| {
                let entry = options.registry.find(&compared, &d);
                match (entry, d.layer) {
                    (Some(_), _) => known = true,
                    (None, Layer::KeyOrder) => {}
                    (None, _) => new = true,
                }
                Judged {
                    known: entry.map(|e| e.id.clone()),
                    difference: d,
                }
            })
            .collect();
        if new || known {
            case.text_diff = match (base_text, text) {
                (Some(x), Some(y)) => Some(diff::render_text_diff(&names[0], x, &case.target, y)),
                _ => None,
            };
        }
        if case.outcome == Outcome::Pass {
            case.outcome = if new {
                Outcome::New
            } else if known {
                Outcome::Known
            } else {
                Outcome::Pass
            };
        }
    }
    if !options.check_snapshots {
        return;
    }
    for (case, text) in row.iter_mut() {
        let Some(text) = text else { continue };
        let Some(spec) = options.targets.iter().find(|s| s.name() == case.target) else {
            continue;
        };
        if !spec.has_snapshots() {
            continue;
        }
        // A real frontend's answers depend on its release; the reference's do not.
        let store = match spec.frontend() {
            Some(_) => Store::for_release(&options.snapshots, &case.target, &options.vllm.version),
            None => Store::new(&options.snapshots, &case.target),
        };
        let merges = spec.merges_queued_steps() && loaded.fixture.chunks_comparable();
        match store.check(fixture, text, options.accept_snapshots) {
            Ok(snapshot::Status::Changed(_))
                if merges
                    && store
                        .read(fixture)
                        .ok()
                        .flatten()
                        .is_some_and(|reviewed| snapshot::merged_chunks_only(&reviewed, text)) =>
            {
                // See `merged_chunks_only`: a race, not a change. The pending
                // snapshot is left for a reader who wants to look.
                case.snapshot = Some(snapshot::Status::Unchanged);
                case.notes.push(
                    "snapshot: this stream merged paced engine steps that the reviewed snapshot \
                     has apart (everything else equal); timing, not a change"
                        .to_string(),
                );
            }
            Ok(status) => {
                let changed =
                    matches!(status, snapshot::Status::New | snapshot::Status::Changed(_));
                if changed && matches!(case.outcome, Outcome::Pass | Outcome::Known) {
                    case.outcome = Outcome::SnapshotChanged;
                }
                case.snapshot = Some(status);
            }
            Err(e) => {
                case.outcome = Outcome::Error;
                case.reason = Some(format!("snapshot {}: {e}", store.path(fixture).display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_counts_overlapping_spans_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Two targets starting together (0-100, 20-150), a later restart
        // (300-350) and one inside another (310-320).
        let spans = vec![
            (at(300), at(350)),
            (at(0), at(100)),
            (at(310), at(320)),
            (at(20), at(150)),
        ];
        assert_eq!(wall_time(spans), Duration::from_millis(200));
        assert_eq!(wall_time(Vec::new()), Duration::ZERO);
        // Touching spans are one.
        let touching = vec![(at(0), at(10)), (at(10), at(30))];
        assert_eq!(wall_time(touching), Duration::from_millis(30));
    }
}
