//! `genconform fuzz`: property-based testing of the token endpoints
//! (`--endpoint generate|completions|chat|all`).
//!
//! proptest generates cases ([`cases`]): a request with every knob in valid and
//! invalid forms and, when the targets' engines can be scripted, the script
//! that answers it. Each case is sent to every target, together with its
//! *twin* (the same request in the other response mode). The first target,
//! the baseline, must keep the [`oracle`]'s invariants (the contract) and a
//! stream and its twin must agree; every other target must agree with the
//! baseline after normalisation, or differ only where the divergence
//! registry says, and then may break the contract exactly that far
//! ([`verdict`]). A failing case is shrunk by proptest and written by
//! [`found`] as a fixture.
//!
//! Scripts reach an in-process engine directly and a `url=` target through
//! the reference server's control channel (`--enable-script-control`) when it
//! answers; otherwise the url target's own engine answers and only requests vary.
//!
//! ```no_run
//! use harness::fuzz::{FuzzOptions, fuzz};
//! let report = fuzz(&FuzzOptions { cases: 100, seed: 7, ..FuzzOptions::default() }).unwrap();
//! assert!(report.found.is_none(), "{}", report.summary());
//! ```

pub mod cases;
pub mod found;
pub mod oracle;
pub mod shard;
pub mod soak;
pub mod verdict;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use mock_engine::{Corpus, Fixture};
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};

use crate::capture::{self, Limits};
use crate::divergence::Registry;
use crate::divergence::facts::CaseFacts;
use crate::interrupt::{Interrupt, Interrupts};
use crate::partition::Partition;
use crate::prompt_lock::PromptLocks;
use crate::run::transcribe;
use crate::script_channel::{ScriptChannel, probe_control};
use crate::targets::{Target, TargetSpec, Unavailable, VllmOptions};
use cases::{Case, Endpoints, Scope};
use oracle::{Expected, Property, Violation};
use verdict::{Exchange, Failure, Row};

/// `genconform fuzz`.
#[derive(Debug, Clone, Args)]
pub struct FuzzArgs {
    /// A server to test: `reference`, `vllm-rs`, `vllm-python` or
    /// `url=<base>[,name=<name>]`. Repeat to compare; the first is the
    /// baseline, held to the contract; the others are held to it as far as
    /// the registry says they differ. A real frontend named first gets the
    /// reference before it as the baseline.
    #[arg(long = "target", default_value = "reference")]
    pub targets: Vec<TargetSpec>,
    /// New cases to run (shrinking a failure runs more).
    #[arg(long, default_value_t = 256)]
    pub cases: u32,
    /// The endpoint the cases go to: `generate`, `completions`, `chat`, or
    /// `all` (the cases spread over the three).
    #[arg(long, default_value = "generate")]
    pub endpoint: Endpoints,
    /// Seed of the case generator; the same seed and targets run the same cases.
    /// Random (and printed) when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Registry of known divergences between targets.
    #[arg(long, default_value = "fixtures/divergences.toml")]
    pub divergences: PathBuf,
    /// Where a shrunk failing case is written as a fixture.
    #[arg(long, default_value = "fixtures/found")]
    pub found_dir: PathBuf,
    /// proptest's regression file: seeds of past failures, replayed first.
    #[arg(long, default_value = "harness/proptest-regressions/fuzz.txt")]
    pub regressions: PathBuf,
    /// Neither replay nor record past failures.
    #[arg(long)]
    pub no_regressions: bool,
    /// Most shrinking steps for a failure.
    #[arg(long, default_value_t = 2048)]
    pub max_shrink_iters: u32,
    /// The model name the targets serve.
    #[arg(long, default_value = mock_engine::script::DEFAULT_MODEL_NAME)]
    pub model: String,
    /// Per-request timeout.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Run one shard of the seed's case stream: `count:K/N` (by place in
    /// the stream) or `hash:K/N` (by the case's digest), K from 1. Every
    /// shard generates the whole stream; the shards of one seed together
    /// are the unsharded run.
    #[arg(long, value_name = "KIND:K/N")]
    pub partition: Option<Partition>,
    /// Cases in flight at once. Their verdicts are judged in stream order,
    /// so the same seed finds and reports the same failure at any value;
    /// shrinking a failure is serial.
    #[arg(long, default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// Soak: rounds of `--cases` cases, one per seed (`--seed`, then the
    /// next ones), until this much time has passed (`90s`, `10m`, `2h`); a
    /// failing round's minimal case is kept and the next round goes on. The
    /// summary tells each distinct finding once, with the seeds that met it.
    #[arg(long, value_parser = soak::parse_duration)]
    pub duration: Option<Duration>,
    /// Soak: at most this many rounds (seeds), with or without
    /// `--duration`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: Option<u32>,
    /// Write what the run found as JSON: the seeds, the figures, each
    /// distinct finding with its minimal case, and the registered
    /// differences met.
    #[arg(long, value_name = "PATH")]
    pub report_json: Option<PathBuf>,
    #[command(flatten)]
    pub vllm: crate::targets::VllmArgs,
}

/// What a fuzz run needs.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    pub targets: Vec<TargetSpec>,
    pub cases: u32,
    pub endpoints: Endpoints,
    pub seed: u64,
    pub limits: Limits,
    pub registry: Registry,
    pub found_dir: PathBuf,
    /// proptest's regression file, if any.
    pub regressions: Option<PathBuf>,
    pub max_shrink_iters: u32,
    pub model: String,
    pub vllm: VllmOptions,
    /// Draw a progress bar (on a terminal) or log progress lines.
    pub progress: bool,
    /// Exchange only this shard's cases (all, when `None`).
    pub partition: Option<Partition>,
    /// Cases in flight at once (at least 1).
    pub jobs: usize,
}

/// Cases in flight by default: most of a case's time is its script's
/// delays (two requests of up to six 0 to 5 ms steps), so many more than
/// the cores keep them busy. On the 2-core VM, 500 cases: 260 to 275
/// cases/s with 8, 361 with 16.
pub const DEFAULT_JOBS: u16 = 16;

impl Default for FuzzOptions {
    fn default() -> Self {
        Self {
            targets: vec![TargetSpec::Reference],
            cases: 256,
            endpoints: Endpoints::default(),
            seed: 0,
            limits: Limits {
                timeout: Duration::from_secs(10),
                ..Limits::default()
            },
            registry: Registry::default(),
            found_dir: PathBuf::from("fixtures/found"),
            regressions: None,
            max_shrink_iters: 2048,
            model: mock_engine::script::DEFAULT_MODEL_NAME.into(),
            vllm: VllmOptions::default(),
            progress: false,
            partition: None,
            jobs: usize::from(DEFAULT_JOBS),
        }
    }
}

/// A failure, shrunk.
#[derive(Debug, Clone)]
pub struct Found {
    pub violation: Violation,
    pub target: String,
    pub case: Case,
    /// Found on the twin (the response mode flipped).
    pub twin: bool,
    pub fixture: Fixture,
    /// Where the fixture was written, or why it was not.
    pub written: Result<PathBuf, String>,
    /// proptest's own account of the minimal failure.
    pub reason: String,
}

/// Everything a fuzz run found.
#[derive(Debug, Clone)]
pub struct FuzzReport {
    pub seed: u64,
    pub targets: Vec<String>,
    pub channels: Vec<(String, &'static str)>,
    pub scope: Scope,
    /// Cases exchanged with the targets, shrinking included.
    pub exchanged: u64,
    pub elapsed: Duration,
    pub found: Option<Found>,
    /// proptest gave up (too many rejects), with its reason.
    pub aborted: Option<String>,
    /// SIGINT (Ctrl-C) or SIGTERM ended the run early.
    pub interrupted: Option<Interrupt>,
    /// The shard of the case stream this run exchanged, when it was cut.
    pub partition: Option<Partition>,
    /// Cases of the stream generated, this shard's or not (shrinks aside).
    pub generated: u64,
    /// The digest ([`Case::digest`]) of each case this run exchanged, in
    /// order, shrinks aside: the shards of one seed share none, and together
    /// they hold the unsharded run's.
    pub ran: Vec<u64>,
    /// Per registry entry, the cases (before any shrinking) where a target
    /// broke the contract exactly as the entry says: known, not failures.
    pub known: BTreeMap<String, u64>,
}

impl FuzzReport {
    pub fn failed(&self) -> bool {
        self.found.is_some() || self.aborted.is_some() || self.interrupted.is_some()
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let rate = self.exchanged as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "fuzz: {} cases in {:.1} s ({rate:.0} cases/s), endpoint {}, seed {}, targets {}\n",
            self.exchanged,
            self.elapsed.as_secs_f64(),
            self.scope.endpoints,
            self.seed,
            self.targets.join(", ")
        );
        if let Some(p) = self.partition {
            s.push_str(&format!(
                "  shard {p}: ran {} of the {} cases the seed generated\n",
                self.ran.len(),
                self.generated
            ));
        }
        for (target, channel) in &self.channels {
            s.push_str(&format!("  scripts for {target}: {channel}\n"));
        }
        if !self.scope.scripts {
            s.push_str("  (no engine scripts: a target's engine cannot be scripted)\n");
        }
        if let Some(signal) = self.interrupted {
            s.push_str(&format!(
                "INTERRUPTED by {signal}: the cases after it were not run\n"
            ));
        }
        if let Some(reason) = &self.aborted {
            s.push_str(&format!("ABORTED: {reason}\n"));
        }
        s.push_str(&soak::known_line(
            &self.known,
            "breaks of the contract the registry explains",
        ));
        match &self.found {
            None => s.push_str("no property was violated\n"),
            Some(f) => {
                s.push_str(&format!(
                    "FAILED: {} against {}{}\n  {}\n",
                    f.violation.property,
                    f.target,
                    if f.twin { " (on the twin request)" } else { "" },
                    f.violation.detail
                ));
                match &f.written {
                    Ok(path) => {
                        s.push_str(&format!("  minimal case written to {}\n", path.display()))
                    }
                    Err(e) => {
                        s.push_str(&format!("  the minimal case could not be written: {e}\n"))
                    }
                }
                s.push_str(&format!(
                    "  request: {}\n  script: {}\n",
                    serde_json::to_string(&f.fixture.request).unwrap_or_default(),
                    serde_json::to_string(&f.fixture.engine).unwrap_or_default()
                ));
            }
        }
        s
    }
}

/// The CLI entry: parses nothing, runs, prints the summary.
pub fn fuzz_command(args: FuzzArgs) -> ExitCode {
    let registry = match Registry::load(&args.divergences) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: invalid divergence registry: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let options = FuzzOptions {
        targets: args.targets,
        cases: args.cases,
        endpoints: args.endpoint,
        seed,
        limits: Limits {
            timeout: Duration::from_secs(args.timeout_secs),
            ..Limits::default()
        },
        registry,
        found_dir: args.found_dir,
        regressions: (!args.no_regressions).then_some(args.regressions),
        max_shrink_iters: args.max_shrink_iters,
        model: args.model,
        vllm: args.vllm.options(),
        progress: true,
        partition: args.partition,
        jobs: usize::from(args.jobs),
    };
    let soaking = args.duration.is_some() || args.rounds.is_some();
    let until = Until {
        time: args.duration.map(|d| Instant::now() + d),
        rounds: args.rounds.map(|n| n as usize),
    };
    let rounds = match fuzz_rounds(&options, until) {
        Ok(rounds) => rounds,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let soak = soak::SoakReport::of(&rounds);
    if soaking {
        print!("{}", soak.summary());
    } else {
        print!("{}", rounds[0].summary());
    }
    if let Some(path) = &args.report_json {
        let json = serde_json::to_string_pretty(&soak).expect("a report serialises");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    match rounds.iter().find_map(|r| r.interrupted) {
        Some(signal) => ExitCode::from(signal.exit_code()),
        None if soak.failed() => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    }
}

/// The targets of a run, with how each takes scripts.
struct Bench {
    targets: Vec<Target>,
    channels: Vec<ScriptChannel>,
    names: Vec<String>,
    client: reqwest::Client,
}

/// Runs the fuzzer on a runtime of its own (proptest's runner is
/// synchronous): one round, the seed's.
pub fn fuzz(options: &FuzzOptions) -> anyhow::Result<FuzzReport> {
    let mut rounds = fuzz_rounds(options, Until::default())?;
    Ok(rounds.remove(0))
}

/// When a soak stops; neither set: after one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Until {
    /// No round starts after this.
    pub time: Option<Instant>,
    /// At most this many rounds.
    pub rounds: Option<usize>,
}

impl Until {
    fn done(&self, rounds: usize) -> bool {
        let out_of_time = self.time.is_some_and(|t| Instant::now() >= t);
        let enough = self.rounds.is_some_and(|n| rounds >= n);
        let one_round = self.time.is_none() && self.rounds.is_none();
        out_of_time || enough || one_round
    }
}

/// Runs rounds of `options.cases` cases against one set of targets: the
/// round of `options.seed`, then, until `until`, one round per next seed
/// (`seed + 1`, `seed + 2`, ...). A failing round's minimal case is
/// recorded and the next round goes on. A signal ends the rounds.
pub fn fuzz_rounds(options: &FuzzOptions, until: Until) -> anyhow::Result<Vec<FuzzReport>> {
    if options.targets.is_empty() {
        anyhow::bail!("no target to fuzz");
    }
    let options = &FuzzOptions {
        targets: contract_first(&options.targets),
        ..options.clone()
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let bench = runtime.block_on(Bench::start(options))?;
    let real_frontends = options
        .targets
        .iter()
        .any(|t| matches!(t, TargetSpec::VllmRs | TargetSpec::VllmPython));
    let scope = Scope {
        scripts: bench
            .channels
            .iter()
            .all(|c| !matches!(c, ScriptChannel::None)),
        late_prompt_info: !real_frontends,
        engine_failures: !real_frontends,
        endpoints: options.endpoints,
    };
    let channels = bench
        .names
        .iter()
        .cloned()
        .zip(bench.channels.iter().map(ScriptChannel::label))
        .collect();
    let names = bench.names.clone();
    // SIGINT or SIGTERM lets the cases in flight finish and sends no more;
    // a shrink stops where it is, the targets stop, and a minimal case found
    // so far is still written.
    let interrupts = if options.progress {
        let _entered = runtime.enter();
        Some(Interrupts::listen().map_err(|e| anyhow::anyhow!("cannot listen for signals: {e}"))?)
    } else {
        None
    };
    let interrupted = || interrupts.as_ref().and_then(Interrupts::first);
    let bench = tokio::sync::Mutex::new(bench);
    let locks = PromptLocks::default();
    let shared = Shared {
        runtime: &runtime,
        bench: &bench,
        locks: &locks,
        scope,
        channels,
        names,
        interrupted: &interrupted,
    };
    let mut rounds = Vec::new();
    let mut seed = options.seed;
    loop {
        let round_options = FuzzOptions {
            seed,
            ..options.clone()
        };
        let report = round(&shared, &round_options);
        if until.time.is_some() || until.rounds.is_some() {
            let verdict = match &report.found {
                None => "clean".to_string(),
                Some(f) => format!("FAILED: {} against {}", f.violation.property, f.target),
            };
            progress_line(format_args!(
                "round of seed {seed}: {} cases in {:.1} s, {verdict}",
                report.exchanged,
                report.elapsed.as_secs_f64()
            ));
        }
        let interrupted = report.interrupted.is_some();
        rounds.push(report);
        let stop = interrupted || until.done(rounds.len());
        if stop {
            break;
        }
        seed = seed.wrapping_add(1);
    }
    let bench = bench.into_inner();
    runtime.block_on(async {
        for target in bench.targets {
            target.stop().await;
        }
    });
    Ok(rounds)
}

/// What every round of a run shares: the runtime, the targets and how
/// they take scripts.
struct Shared<'a> {
    runtime: &'a tokio::runtime::Runtime,
    bench: &'a tokio::sync::Mutex<Bench>,
    locks: &'a PromptLocks,
    scope: Scope,
    channels: Vec<(String, &'static str)>,
    names: Vec<String>,
    interrupted: &'a dyn Fn() -> Option<Interrupt>,
}

/// One round: the seed's case stream, judged, and its first failure shrunk.
fn round(shared: &Shared<'_>, options: &FuzzOptions) -> FuzzReport {
    let Shared {
        runtime,
        bench,
        locks,
        scope,
        ..
    } = *shared;
    let interrupted = shared.interrupted;
    let names = shared.names.clone();
    let channels = shared.channels.clone();
    let exchanged = Cell::new(0u64);
    let mut ran = Vec::new();
    let bar = Bar::new(options.progress, u64::from(options.cases));
    let started = Instant::now();

    // 1. The case stream, drawn as proptest's runner draws it: the runner
    // draws the next case the same way whatever the last one's verdict (it
    // only shrinks after a failure), so this is the stream a serial run sees.
    let stream = shard::Sharded::new(cases::case(scope), options.partition);
    let drawn = RefCell::new(Vec::new());
    let drawing = TestRunner::new_with_rng(config(options), rng(options.seed)).run(
        &stream,
        |(mine, case)| {
            drawn.borrow_mut().push((mine, case));
            Ok(())
        },
    );
    let drawn = drawn.into_inner();

    // 2. This shard's cases, up to `jobs` in flight, judged in stream order:
    // the first failure in the stream is the one reported, whichever case
    // finished first.
    let mut first_failure = None;
    let mut judged = 0usize;
    // Per registry entry, the cases where it explained a target's break of
    // the contract.
    let mut known: BTreeMap<String, u64> = BTreeMap::new();
    // The last failure an exchange showed, proptest's minimal case's: if the
    // case passes when run again, it still names the property and target.
    let last_seen: RefCell<Option<Failure>> = RefCell::default();
    runtime.block_on(async {
        let mut verdicts = futures::stream::iter(drawn.iter())
            .map(|(mine, case)| async move {
                if !mine || interrupted().is_some() {
                    return None;
                }
                Some(exchange(bench, locks, options, case).await)
            })
            .buffered(options.jobs.max(1));
        while let Some(verdict) = verdicts.next().await {
            if interrupted().is_some() {
                break;
            }
            let case = &drawn[judged].1;
            judged += 1;
            match verdict {
                // Another shard's: a pass here, so the stream goes on as it
                // would unsharded.
                None => bar.skipped(),
                Some(verdict) => {
                    exchanged.set(exchanged.get() + 1);
                    ran.push(case.digest());
                    match verdict {
                        Ok(explained) => {
                            for id in explained {
                                *known.entry(id).or_insert(0) += 1;
                            }
                            bar.passed()
                        }
                        Err(failure) => {
                            bar.failing(&failure);
                            first_failure = Some((judged - 1, failure));
                            break;
                        }
                    }
                }
            }
        }
    });

    // 3. A failure is shrunk serially by proptest, on the same stream: the
    // cases before it pass from step 2's verdicts, the failing one fails
    // with its verdict, and every shrink is exchanged.
    let stopped_early = first_failure.is_some() || interrupted().is_some();
    let result = match first_failure {
        None => drawing.map_err(|e| match e {
            TestError::Abort(reason) => TestError::Abort(reason),
            // The drawing pass fails nothing; kept total all the same.
            TestError::Fail(reason, _) => TestError::Abort(reason),
        }),
        Some((at, failure)) => {
            last_seen.replace(Some(failure.clone()));
            let calls = Cell::new(0usize);
            let strategy = shard::Sharded::new(cases::case(scope), options.partition);
            let mut runner = TestRunner::new_with_rng(config(options), rng(options.seed));
            runner.run(&strategy, |(mine, case)| {
                let call = calls.replace(calls.get() + 1);
                let same = drawn
                    .get(call)
                    .is_some_and(|(_, seen)| seen.digest() == case.digest());
                if same && call < at {
                    return Ok(());
                }
                if same && call == at {
                    return Err(TestCaseError::fail(failure.to_string()));
                }
                if interrupted().is_some() {
                    return Err(TestCaseError::reject("interrupted"));
                }
                if !mine {
                    return Ok(());
                }
                exchanged.set(exchanged.get() + 1);
                match runtime.block_on(exchange(bench, locks, options, &case)) {
                    Ok(_) => Ok(()),
                    Err(failure) => {
                        bar.failing(&failure);
                        let reason = failure.to_string();
                        last_seen.replace(Some(failure));
                        Err(TestCaseError::fail(reason))
                    }
                }
            })
        }
    };
    bar.finish();
    let elapsed = started.elapsed();
    let (found, aborted) = match result {
        Ok(()) => (None, None),
        Err(TestError::Abort(reason)) => (None, Some(reason.to_string())),
        Err(TestError::Fail(reason, (_, case))) => {
            // Run the minimal case (the smallest so far, if interrupted) once
            // more, for its violation in full.
            let again = runtime.block_on(exchange(bench, locks, options, &case));
            (
                Some(record(
                    options,
                    case,
                    again.err(),
                    last_seen.take(),
                    reason.to_string(),
                )),
                None,
            )
        }
    };

    FuzzReport {
        seed: options.seed,
        targets: names,
        channels,
        scope,
        exchanged: exchanged.get(),
        elapsed,
        found,
        // The rejects that ended an interrupted run are ours, not a finding.
        aborted: aborted.filter(|_| interrupted().is_none()),
        interrupted: interrupted(),
        partition: options.partition,
        // The stream as far as it was judged: all of it, unless a failure
        // or a signal ended the run.
        generated: if stopped_early {
            judged as u64
        } else {
            stream.generated()
        },
        ran,
        known,
    }
}

/// The targets with the contract first. A real frontend is judged against
/// the baseline through the registry (see [`verdict`]); when a run names a
/// real frontend first, the reference joins as the baseline, so a
/// difference the registry knows is known on its own too.
fn contract_first(targets: &[TargetSpec]) -> Vec<TargetSpec> {
    match targets.first() {
        Some(TargetSpec::VllmRs | TargetSpec::VllmPython) => std::iter::once(TargetSpec::Reference)
            .chain(targets.iter().cloned())
            .collect(),
        _ => targets.to_vec(),
    }
}

fn config(options: &FuzzOptions) -> Config {
    let persistence = options.regressions.as_ref().map(|path| {
        // proptest wants a 'static path; one per run is a small, bounded leak.
        let path: &'static str = Box::leak(path.display().to_string().into_boxed_str());
        Box::new(FileFailurePersistence::Direct(path))
            as Box<dyn proptest::test_runner::FailurePersistence>
    });
    Config {
        cases: options.cases,
        max_shrink_iters: options.max_shrink_iters,
        failure_persistence: persistence,
        source_file: None,
        ..Config::default()
    }
}

/// A ChaCha generator seeded from `--seed`, so a seed names a run.
fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    let mut state = seed;
    for chunk in bytes.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// `again`: the minimal case's failure when run once more; `seen`: the last
/// failure shrinking saw, for a case that passes when run again.
fn record(
    options: &FuzzOptions,
    case: Case,
    again: Option<Failure>,
    seen: Option<Failure>,
    reason: String,
) -> Found {
    let failure = again.unwrap_or_else(|| {
        // The minimal case passed when run again: the failure depends on
        // timing. It keeps the property and target it failed on.
        let flaky = |detail: &str| {
            format!("did not fail again when re-run (flaky); it failed with: {detail}")
        };
        match seen {
            Some(seen) => Failure {
                violation: Violation {
                    property: seen.violation.property,
                    detail: flaky(&seen.violation.detail),
                },
                ..seen
            },
            None => Failure {
                violation: Violation {
                    property: Property::Transport,
                    detail: flaky(&reason),
                },
                target: "?".into(),
                twin: false,
            },
        }
    });
    let primary = case.request_spec(&options.model);
    let request = if failure.twin {
        cases::twin(&primary).unwrap_or(primary)
    } else {
        primary
    };
    let name = found::name(&case, Some(&failure.violation));
    let description = found::describe(&failure.violation, &failure.target, failure.twin);
    let fixture = found::fixture(&case, request, name, description);
    let written = found::write(&options.found_dir, &fixture).map_err(|e| e.to_string());
    Found {
        violation: failure.violation,
        target: failure.target,
        case,
        twin: failure.twin,
        fixture,
        written,
        reason,
    }
}

impl Bench {
    async fn start(options: &FuzzOptions) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        let mut bench = Self {
            targets: Vec::new(),
            channels: Vec::new(),
            names: Vec::new(),
            client,
        };
        let corpus = Corpus::default();
        for spec in &options.targets {
            let target = Target::start(spec.clone(), &corpus, &options.vllm).await?;
            let channel = ScriptChannel::of(&target, &bench.client).await;
            bench.names.push(target.name());
            bench.targets.push(target);
            bench.channels.push(channel);
        }
        Ok(bench)
    }
}

/// Replays a fixture (a found one, say) against `base` and checks it with
/// the oracles: when `base` has the control channel, the fixture's script is
/// set for its prompt (and then counts as known), or, for a fixture without
/// one, any script another fixture left for that prompt is forgotten so the
/// generator answers. Returns the violations.
pub async fn replay_fixture(
    base: &str,
    fixture: &Fixture,
    model: &str,
    limits: Limits,
) -> Result<Vec<Violation>, String> {
    let client = reqwest::Client::new();
    let scripted = !fixture.engine.steps.is_empty();
    let prompt = fixture.prompt_token_ids();
    let script = if (scripted || prompt.is_some()) && probe_control(&client, base).await {
        let prompt = prompt.ok_or("the fixture's script has no prompt to be chosen by")?;
        let channel = ScriptChannel::Control(base.to_string());
        let script = scripted.then_some(&fixture.engine);
        channel.set(&client, &prompt, script).await?;
        script
    } else {
        None
    };
    let capture = capture::capture(&client, base, &fixture.request, limits).await;
    let transcript = transcribe(&fixture.request, &capture).await;
    let expected = Expected::new(&fixture.request, model, script);
    Ok(oracle::check(&expected, &transcript))
}

/// Sends the case (and its twin) to every target and judges the answers
/// ([`verdict::judge`]): `Ok` holds the registry entries that explained a
/// target's break of the contract.
///
/// Several cases may be in flight at once ([`FuzzOptions::jobs`]): a case
/// holds its prompt's [`PromptLocks`] lock from setting its script to its
/// last answer, so no other case can change the script it is answered from,
/// and holds the bench only while it sets scripts and finds the servers.
async fn exchange(
    bench: &tokio::sync::Mutex<Bench>,
    locks: &PromptLocks,
    options: &FuzzOptions,
    case: &Case,
) -> Result<BTreeSet<String>, Failure> {
    let primary = case.request_spec(&options.model);
    let fixture = found::fixture(
        case,
        primary.clone(),
        found::name(case, None),
        String::new(),
    );
    let script = case.script.as_ref();
    let mut requests = vec![primary];
    let probe = Expected::new(&requests[0], &options.model, script);
    if probe.validity == oracle::Validity::Valid
        && let Some(twin) = cases::twin(&requests[0])
    {
        requests.push(twin);
    }
    // What the registry reads of each request (the twin's differs).
    let facts: Vec<CaseFacts> = requests
        .iter()
        .map(|request| {
            CaseFacts::of(&mock_engine::script::Fixture {
                request: request.clone(),
                ..fixture.clone()
            })
        })
        .collect();
    let prompt = case.prompt();
    let _prompt = locks.lock(&prompt).await;
    // Per target: its name, base URL and the script it knows; no base for a
    // target that skips the case.
    let mut plan = Vec::new();
    let client = {
        let mut guard = bench.lock().await;
        let Bench {
            targets,
            channels,
            client,
            ..
        } = &mut *guard;
        for (target, channel) in targets.iter_mut().zip(channels.iter()) {
            let name = target.name();
            let fail = |detail: String| Failure {
                violation: Violation {
                    property: Property::Transport,
                    detail,
                },
                target: name.clone(),
                twin: false,
            };
            let known_script = match channel {
                ScriptChannel::None => None,
                _ => script,
            };
            channel
                .set(client, &prompt, known_script)
                .await
                .map_err(|e| fail(format!("cannot set the script: {e}")))?;
            match target.endpoint(&fixture).await {
                Ok(base) => plan.push((name, Some((base, known_script)))),
                Err(Unavailable::Skip(_)) => plan.push((name, None)),
                Err(Unavailable::Error(e)) => return Err(fail(e)),
            }
        }
        client.clone()
    };
    let mut rows = Vec::new();
    for (name, step) in plan {
        let Some((base, known_script)) = step else {
            rows.push(Row {
                name,
                exchanges: None,
            });
            continue;
        };
        let mut exchanges = Vec::new();
        for request in &requests {
            let capture = capture::capture(&client, &base, request, options.limits).await;
            exchanges.push(Exchange {
                expected: Expected::new(request, &options.model, known_script),
                transcript: transcribe(request, &capture).await,
            });
        }
        rows.push(Row {
            name,
            exchanges: Some(exchanges),
        });
    }
    verdict::judge(&rows, &facts, &options.registry, &options.vllm.version)
}

/// Progress: a bar on a terminal, a line every 100 cases elsewhere.
struct Bar {
    bar: Option<ProgressBar>,
    enabled: bool,
    passed: Cell<u64>,
    shrinking: Cell<bool>,
}

impl Bar {
    fn new(enabled: bool, total: u64) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed}] {bar:30} {pos}/{len} {per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            enabled,
            passed: Cell::new(0),
            shrinking: Cell::new(false),
        }
    }

    fn passed(&self) {
        if self.shrinking.get() {
            return;
        }
        self.passed.set(self.passed.get() + 1);
        match &self.bar {
            Some(bar) => bar.inc(1),
            None if self.enabled && self.passed.get().is_multiple_of(100) => {
                progress_line(format_args!("[{}] cases passed", self.passed.get()));
            }
            None => {}
        }
    }

    /// Another shard's case went by.
    fn skipped(&self) {
        if let Some(bar) = self.bar.as_ref().filter(|_| !self.shrinking.get()) {
            bar.inc(1);
        }
    }

    fn failing(&self, failure: &Failure) {
        let message = format!("shrinking: {}", failure.violation.property);
        if !self.shrinking.replace(true) {
            match &self.bar {
                Some(bar) => bar.println(format!("failed: {failure}")),
                None if self.enabled => progress_line(format_args!("failed: {failure}; shrinking")),
                None => {}
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A progress line on stderr. Progress is a courtesy: a closed or full
/// stderr (`genconform fuzz 2>&1 | head`) must not fail the case being run,
/// as `eprintln!`'s panic would inside proptest's runner.
fn progress_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};

    use super::*;

    /// The oracles only bite on what the generator reaches: enough valid
    /// streams with each usage mode, plain requests, and each script ending.
    #[test]
    fn the_generator_reaches_every_mode() {
        let mut runner = TestRunner::new_with_rng(Config::default(), rng(3));
        let mut count = std::collections::BTreeMap::<&str, u32>::new();
        let n = 2000;
        for _ in 0..n {
            let case = cases::case(Scope::default())
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let e = Expected::new(&case.request_spec("tiny"), "tiny", case.script.as_ref());
            let mut tag = |t: &'static str, on: bool| *count.entry(t).or_default() += u32::from(on);
            let valid = e.validity == oracle::Validity::Valid;
            tag("valid", valid);
            tag("invalid", !valid);
            tag("valid stream", valid && e.stream);
            tag("valid plain", valid && !e.stream);
            tag("valid usage", valid && e.include_usage);
            tag("valid continuous", valid && e.continuous_usage);
            tag("valid logprobs", valid && e.logprobs.is_some());
            tag("valid return_token_ids", valid && e.return_token_ids);
            let end = e.script.as_ref().map(|s| s.end);
            tag(
                "error finish",
                valid && end == Some(oracle::ScriptEnd::ErrorFinish),
            );
            tag("fail", valid && end == Some(oracle::ScriptEnd::Fail));
            tag(
                "late prompt",
                valid && e.script.as_ref().is_some_and(|s| s.late_prompt_info),
            );
            tag("generator", valid && case.script.is_none());
            tag(
                "404",
                e.validity == oracle::Validity::Invalid { status: 404 },
            );
        }
        for (tag, c) in &count {
            assert!(
                *c >= n / 100,
                "only {c} of {n} cases are `{tag}`: {count:?}"
            );
        }
    }
}
